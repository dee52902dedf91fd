//! An OpenAI-compatible `/v1/chat/completions` server that answers like a model would, without one: verdicts
//! are derived from the lead text (deterministic, so tests can predict them), and every failure a real provider
//! shows can be injected at a configured rate or scripted for the next requests: 429 with `retry-after` and
//! `x-ratelimit-*` headers, 500, 503, hung requests, malformed replies, refusals, truncated replies, bad keys,
//! unknown models, servers without `json_schema`, reasoning models that refuse `temperature`.
//!
//! Control and inspection over HTTP: `GET /stats`, `POST /reset`, `PUT /config`, `POST /script`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How the server behaves. Rates are probabilities per request (0.0 to 1.0).
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct FakeConfig {
    /// Base latency of every answer, in milliseconds.
    #[arg(long, env = "FAKE_LLM_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Up to this many milliseconds are added at random to each answer.
    #[arg(long, env = "FAKE_LLM_JITTER_MS", default_value_t = 0)]
    pub jitter_ms: u64,
    /// Share of requests answered 429 (with `retry-after` and `x-ratelimit-*` headers).
    #[arg(long, default_value_t = 0.0)]
    pub p429: f64,
    /// Share of requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    pub p500: f64,
    /// Share of requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    pub p503: f64,
    /// Share of requests that hang for `hang_ms` (the client's timeout should fire first).
    #[arg(long, default_value_t = 0.0)]
    pub p_timeout: f64,
    /// Share of requests answered 200 with a reply that is not a valid verdict.
    #[arg(long, default_value_t = 0.0)]
    pub p_malformed: f64,
    /// Requests per minute enforced as a token bucket holding one second's worth; beyond it: 429.
    #[arg(long, env = "FAKE_LLM_RPM")]
    pub rpm: Option<u32>,
    /// The `retry-after` a random or scripted 429 advertises, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub retry_after_ms: u64,
    /// How long a hung request is held, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub hang_ms: u64,
    /// When set, requests with another bearer token get 401.
    #[arg(long, env = "FAKE_LLM_API_KEY")]
    pub api_key: Option<String>,
    /// When set, requests for another model get 404.
    #[arg(long)]
    pub model: Option<String>,
    /// Rejects `response_format: json_schema` with 400, as servers without structured outputs do.
    #[arg(long)]
    pub no_json_schema: bool,
    /// Rejects `response_format: json_object` with 400 too (plain-text servers).
    #[arg(long)]
    pub no_json_object: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            latency_ms: 0,
            jitter_ms: 0,
            p429: 0.0,
            p500: 0.0,
            p503: 0.0,
            p_timeout: 0.0,
            p_malformed: 0.0,
            rpm: None,
            retry_after_ms: 1000,
            hang_ms: 60_000,
            api_key: None,
            model: None,
            no_json_schema: false,
            no_json_object: false,
        }
    }
}

/// A forced answer for the next request (`POST /script` takes a list of them, used in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answer normally.
    Ok,
    RateLimited,
    ServerError,
    Unavailable,
    Timeout,
    Malformed,
    Unauthorized,
    /// `finish_reason: length` with a cut-off reply.
    Truncated,
    /// A `refusal` instead of content.
    Refusal,
    /// `choices: []`.
    NoChoices,
}

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
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
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

    /// Registers an arrival and decides how to answer it.
    fn admit(&self, prompt: u64, auth_ok: bool) -> (Fault, Option<Duration>, FakeConfig) {
        let mut s = self.lock();
        let since = s.since;
        let stats = &mut s.stats;
        stats.requests += 1;
        if let Some(n) = stats.after_first_401.as_mut() {
            *n += 1;
        }
        if stats.arrivals_ms.len() < 100_000 {
            stats.arrivals_ms.push(since.elapsed().as_millis() as u64);
        }
        stats.in_flight += 1;
        stats.max_in_flight = stats.max_in_flight.max(stats.in_flight);
        let calls = s.calls.entry(prompt).or_insert(0);
        *calls += 1;
        let calls = *calls;
        s.stats.max_calls_per_prompt = s.stats.max_calls_per_prompt.max(calls);
        s.stats.prompts = s.calls.len() as u64;
        let config = s.config.clone();
        if !auth_ok {
            return (Fault::Unauthorized, None, config);
        }
        if let Some(fault) = s.script.pop_front() {
            return (fault, None, config);
        }
        if let Some(wait) = take_token(&mut s.bucket, config.rpm) {
            return (Fault::RateLimited, Some(wait), config);
        }
        let roll = fastrand::f64();
        let mut edge = 0.0;
        for (p, fault) in [
            (config.p429, Fault::RateLimited),
            (config.p500, Fault::ServerError),
            (config.p503, Fault::Unavailable),
            (config.p_timeout, Fault::Timeout),
            (config.p_malformed, Fault::Malformed),
        ] {
            edge += p;
            if roll < edge {
                return (fault, None, config);
            }
        }
        (Fault::Ok, None, config)
    }

    fn finish(&self, status: Option<StatusCode>, prompt_tokens: u64, completion_tokens: u64) {
        let mut s = self.lock();
        let stats = &mut s.stats;
        stats.in_flight -= 1;
        stats.prompt_tokens += prompt_tokens;
        stats.completion_tokens += completion_tokens;
        match status {
            Some(code) => {
                *stats.statuses.entry(code.as_u16().to_string()).or_default() += 1;
                if code == StatusCode::UNAUTHORIZED && stats.after_first_401.is_none() {
                    stats.after_first_401 = Some(0);
                }
            }
            None => stats.timeouts += 1,
        }
    }
}

/// Token bucket of one second's worth of `rpm`; `Some(wait)` when empty.
fn take_token(bucket: &mut (f64, Instant), rpm: Option<u32>) -> Option<Duration> {
    let rpm = f64::from(rpm?.max(1));
    let per_sec = rpm / 60.0;
    let capacity = per_sec.max(1.0);
    let now = Instant::now();
    let (tokens, at) = bucket;
    *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(capacity);
    *at = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        None
    } else {
        Some(Duration::from_secs_f64((1.0 - *tokens) / per_sec))
    }
}

/// FNV-1a: stable across runs and platforms, so verdicts are reproducible.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The lead part of a user message: between `<lead>` and `</lead>`, or all of it.
fn lead_text(user: &str) -> &str {
    match (user.find("<lead>"), user.find("</lead>")) {
        (Some(a), Some(b)) if a < b => &user[a + 6..b],
        _ => user,
    }
}

/// The verdict this server gives for a user message: decided by the lead's text alone, so the same lead gets
/// the same verdict under any offer wording, and tests can compute what to expect.
pub fn verdict_for(user_message: &str) -> (&'static str, String) {
    let lead = lead_text(user_message);
    let h = fnv(lead);
    let intent = ["High", "Medium", "Low"][(h % 3) as usize];
    (intent, format!("Fake assessment {:08x}: {intent} fit from the lead's role and bio.", h as u32))
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    temperature: Option<f64>,
    max_tokens: Option<u64>,
    response_format: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: String,
}

fn is_reasoning_model(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    m.starts_with("gpt-5") || (m.starts_with('o') && m[1..].starts_with(|c: char| c.is_ascii_digit()))
}

fn error(status: StatusCode, message: &str, param: Option<&str>, code: &str) -> Response {
    let body =
        json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}});
    (status, Json(body)).into_response()
}

async fn chat(State(fake): State<FakeLlm>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let req: Result<ChatRequest, _> = serde_json::from_slice(&body);
    let user = req
        .as_ref()
        .ok()
        .and_then(|r| r.messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.clone()))
        .unwrap_or_default();
    let token =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let expected = fake.config().api_key;
    let auth_ok = expected.as_deref().is_none_or(|k| token == Some(k));
    let (fault, wait, config) = fake.admit(fnv(&user), auth_ok);
    let (response, status, usage) = answer(req, &user, fault, wait, &config, &fake).await;
    fake.finish(status, usage.0, usage.1);
    response
}

type Answer = (Response, Option<StatusCode>, (u64, u64));

async fn answer(
    req: Result<ChatRequest, serde_json::Error>,
    user: &str,
    fault: Fault,
    wait: Option<Duration>,
    config: &FakeConfig,
    fake: &FakeLlm,
) -> Answer {
    let plain = |r: Response| {
        let s = r.status();
        (r, Some(s), (0, 0))
    };
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            return plain(error(
                StatusCode::BAD_REQUEST,
                &format!("invalid body: {e}"),
                None,
                "invalid_body",
            ));
        }
    };
    let format = req
        .response_format
        .as_ref()
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("none")
        .to_owned();
    *fake.lock().stats.response_formats.entry(format.clone()).or_default() += 1;
    if fault == Fault::Unauthorized {
        return plain(error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            None,
            "invalid_api_key",
        ));
    }
    if config.model.as_deref().is_some_and(|m| m != req.model) {
        let msg = format!("The model `{}` does not exist or you do not have access to it.", req.model);
        return plain(error(StatusCode::NOT_FOUND, &msg, None, "model_not_found"));
    }
    if is_reasoning_model(&req.model) {
        if req.temperature.is_some_and(|t| t != 1.0) {
            let msg = "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is supported.";
            return plain(error(StatusCode::BAD_REQUEST, msg, Some("temperature"), "unsupported_value"));
        }
        if req.max_tokens.is_some() {
            let msg = "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.";
            return plain(error(StatusCode::BAD_REQUEST, msg, Some("max_tokens"), "unsupported_parameter"));
        }
    }
    if (format == "json_schema" && config.no_json_schema)
        || (format == "json_object" && config.no_json_object)
    {
        let msg = format!(
            "Invalid parameter: 'response_format' of type '{format}' is not supported with this model."
        );
        return plain(error(StatusCode::BAD_REQUEST, &msg, Some("response_format"), "invalid_parameter"));
    }
    let delay =
        config.latency_ms + if config.jitter_ms > 0 { fastrand::u64(0..=config.jitter_ms) } else { 0 };
    match fault {
        Fault::RateLimited => {
            let wait = wait.unwrap_or(Duration::from_millis(config.retry_after_ms));
            return plain(rate_limited(wait, config.rpm));
        }
        Fault::ServerError => {
            return plain(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error.",
                None,
                "server_error",
            ));
        }
        Fault::Unavailable => {
            return plain(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The engine is currently overloaded.",
                None,
                "overloaded",
            ));
        }
        Fault::Timeout => {
            tokio::time::sleep(Duration::from_millis(config.hang_ms)).await;
            return (StatusCode::GATEWAY_TIMEOUT.into_response(), None, (0, 0));
        }
        _ => {}
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (intent, reasoning) = verdict_for(user);
    let verdict = json!({"intent": intent, "reasoning": reasoning}).to_string();
    let (content, finish, refusal) = match fault {
        Fault::Malformed => {
            fake.lock().stats.malformed += 1;
            (Some(format!("I would say this lead is {intent} intent.")), "stop", None)
        }
        Fault::Truncated => (Some(verdict[..verdict.len() / 2].to_owned()), "length", None),
        Fault::Refusal => (None, "stop", Some("I'm sorry, I can't help with that.")),
        _ if format == "none" => {
            (Some(format!("Here is my assessment:\n```json\n{verdict}\n```")), "stop", None)
        }
        _ => (Some(verdict), "stop", None),
    };
    let prompt_chars: usize = req.messages.iter().map(|m| m.content.chars().count()).sum();
    let prompt_tokens = (prompt_chars as u64).div_ceil(4) + 4 * req.messages.len() as u64;
    let completion_tokens = content.as_deref().map_or(8, |c| (c.chars().count() as u64).div_ceil(4));
    let choices = if fault == Fault::NoChoices {
        json!([])
    } else {
        json!([{"index": 0, "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish}])
    };
    let body = json!({
        "id": format!("chatcmpl-fake-{:x}", fastrand::u64(..)),
        "object": "chat.completion",
        "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "model": req.model,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    });
    (Json(body).into_response(), Some(StatusCode::OK), (prompt_tokens, completion_tokens))
}

/// A 429 with the headers OpenAI sends: `retry-after` (seconds), `retry-after-ms` and `x-ratelimit-*`.
fn rate_limited(wait: Duration, rpm: Option<u32>) -> Response {
    let mut r =
        error(StatusCode::TOO_MANY_REQUESTS, "Rate limit reached for requests.", None, "rate_limit_exceeded");
    let h = r.headers_mut();
    let ms = wait.as_millis().max(1);
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("retry-after", ms.div_ceil(1000).to_string());
    put("retry-after-ms", ms.to_string());
    put("x-ratelimit-limit-requests", rpm.unwrap_or(0).to_string());
    put("x-ratelimit-remaining-requests", "0".into());
    put("x-ratelimit-reset-requests", format!("{:.3}s", wait.as_secs_f64()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_stable_and_use_only_the_lead() {
        let a = verdict_for("<offer>\n{\"product\":\"A\"}\n</offer>\n<lead>\n{\"role\":\"CEO\"}\n</lead>");
        let b = verdict_for("<offer>\n{\"product\":\"B\"}\n</offer>\n<lead>\n{\"role\":\"CEO\"}\n</lead>");
        assert_eq!(a, b);
        let intents: std::collections::HashSet<_> =
            (0..60).map(|i| verdict_for(&format!("<lead>{i}</lead>")).0).collect();
        assert_eq!(intents.len(), 3, "all three verdicts occur");
    }

    #[test]
    fn bucket_allows_one_seconds_worth_then_refuses() {
        let mut bucket = (0.0, Instant::now() - Duration::from_secs(10));
        let granted = (0..20).filter(|_| take_token(&mut bucket, Some(600)).is_none()).count();
        assert_eq!(granted, 10);
        let wait = take_token(&mut bucket, Some(600)).expect("empty");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(take_token(&mut bucket, None).is_none());
    }

    #[test]
    fn reasoning_models_are_recognised() {
        assert!(
            is_reasoning_model("o3-mini") && is_reasoning_model("gpt-5-mini") && is_reasoning_model("o1")
        );
        assert!(!is_reasoning_model("gpt-4o-mini") && !is_reasoning_model("ollama"));
    }
}
