//! An OpenAI-compatible `/v1/chat/completions` server that answers like a model would, without one: verdicts
//! are derived from the lead text (deterministic, so tests can predict them), and every failure a real provider
//! shows can be injected at a configured rate or scripted for the next requests: 429 with `retry-after` and
//! `x-ratelimit-*` headers, 500, 503, hung requests, malformed replies, refusals, truncated replies, bad keys,
//! unknown models, servers without `json_schema`, reasoning models that refuse `temperature`.
//!
//! Control and inspection over HTTP: `GET /stats`, `POST /reset`, `PUT /config`, `POST /script`.
//!
//! This file holds the server's state, its public API and the control routes; the chat handler
//! (`chat.rs`), each arrival's bookkeeping (`admission.rs`), the configuration (`config.rs`) and the verdicts
//! (`verdict.rs`) are in modules of their own.

mod admission;
mod chat;
mod config;
mod verdict;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub use config::{FakeConfig, Fault};
pub use verdict::verdict_for;

/// What the server has seen since start or the last `POST /reset`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    /// Answers by HTTP status ("200", "429", ...); hung requests are not counted here.
    pub statuses: HashMap<String, u64>,
    pub timeouts: u64,
    pub malformed: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Requests received after the first 401 was answered (`None`: no 401 yet).
    pub after_first_401: Option<u64>,
    /// The most calls any one prompt received.
    pub max_calls_per_prompt: u64,
    /// Distinct prompts seen.
    pub prompts: u64,
    /// Arrival times in milliseconds since the reset, first 100,000.
    pub arrivals_ms: Vec<u64>,
    /// `response_format.type` of each request by count ("none" when absent).
    pub response_formats: HashMap<String, u64>,
}

struct Shared {
    config: FakeConfig,
    script: VecDeque<Fault>,
    stats: Stats,
    calls: HashMap<u64, u64>,
    since: Instant,
    bucket: (f64, Instant),
}

#[derive(Clone)]
pub struct FakeLlm {
    inner: Arc<Mutex<Shared>>,
}

impl FakeLlm {
    pub fn new(config: FakeConfig) -> Self {
        let now = Instant::now();
        FakeLlm {
            inner: Arc::new(Mutex::new(Shared {
                config,
                script: VecDeque::new(),
                stats: Stats::default(),
                calls: HashMap::new(),
                since: now,
                // Starts full: a fresh provider account has its whole first second to give.
                bucket: (f64::MAX, now),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    pub fn reset(&self) {
        let mut s = self.lock();
        s.stats = Stats::default();
        s.calls.clear();
        s.since = Instant::now();
        s.script.clear();
        s.bucket = (f64::MAX, Instant::now());
    }

    pub fn set_config(&self, config: FakeConfig) {
        self.lock().config = config;
    }

    pub fn config(&self) -> FakeConfig {
        self.lock().config.clone()
    }

    /// Forces the answers of the next requests, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().script.extend(faults);
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat::chat))
            .route("/chat/completions", post(chat::chat))
            .route("/stats", get(|State(f): State<FakeLlm>| async move { Json(f.stats()) }))
            .route(
                "/reset",
                post(|State(f): State<FakeLlm>| async move {
                    f.reset();
                    StatusCode::NO_CONTENT
                }),
            )
            .route(
                "/config",
                put(|State(f): State<FakeLlm>, Json(c): Json<FakeConfig>| async move {
                    f.set_config(c);
                    StatusCode::NO_CONTENT
                })
                .get(|State(f): State<FakeLlm>| async move { Json(f.config()) }),
            )
            .route(
                "/script",
                post(|State(f): State<FakeLlm>, Json(faults): Json<Vec<Fault>>| async move {
                    f.script(faults);
                    StatusCode::NO_CONTENT
                }),
            )
            .with_state(self.clone())
    }

    /// Serves on `addr` (port 0 picks a free one) in a background task; returns the bound address.
    pub async fn spawn(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(bound)
    }
}
