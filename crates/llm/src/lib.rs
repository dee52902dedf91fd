//! The AI layer's IO: an OpenAI-compatible chat client ([`Client`]) that retries transient failures within one
//! job attempt, and the [`Gate`] every request passes first: the global requests/tokens-per-minute budget and
//! the circuit breaker, in-process (embedded) or shared through Redis (cluster). Verdict caching keys come from
//! [`cache_key`]; where they are stored is the caller's choice ([`RedisCache`] or the database).

mod cache;
mod client;
mod config;
mod gate;
mod retry;

pub use cache::{RedisCache, cache_key};
pub use client::{Attempt, Client, LlmError, Usage};
pub use config::{ConfigError, DEFAULT_BASE_URL, DEFAULT_MODEL, LlmConfig, ModelKind, Prices};
pub use gate::{Blocked, COOL_DOWN, FAILURES_TO_OPEN, Gate, GateError};
pub use retry::{parse_go_duration, retry_hint};

/// Installs the TLS crypto provider (ring) for reqwest's rustls once per process; later calls do nothing.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
