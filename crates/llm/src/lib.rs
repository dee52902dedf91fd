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
pub use client::{Attempt, Client, LlmError, MAX_RESPONSE_BYTES, Usage};
pub use config::{ConfigError, DEFAULT_BASE_URL, DEFAULT_MODEL, LlmConfig, ModelKind, Prices};
pub use gate::{Blocked, COOL_DOWN, FAILURES_TO_OPEN, Gate, GateError, REDIS_PREFIX};
pub use retry::{parse_go_duration, retry_hint};

/// Installs the TLS crypto provider (ring) for reqwest's rustls once per process; later calls do nothing.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The expected cost of scoring `leads` leads against `offer`: the prompt of a typical lead (role, company,
/// industry, location and a 600-character bio) and a 60-token reply, at the configured prices.
pub fn estimated_cost(config: &LlmConfig, offer: &leadscore_core::Offer, leads: i64) -> f64 {
    let typical = leadscore_core::Lead {
        external_id: None,
        name: String::new(),
        role: "x".repeat(24),
        company: "x".repeat(20),
        industry: "x".repeat(16),
        location: "x".repeat(16),
        linkedin_bio: "x".repeat(600),
        attributes: Vec::new(),
    };
    let prompt = leadscore_core::prompt::build_prompt(offer, &typical);
    let prompt_tokens = (prompt.system.len() + prompt.user.len()).div_ceil(4) as u64 + 8;
    config.prices.cost(prompt_tokens, 60) * leads.max(0) as f64
}
