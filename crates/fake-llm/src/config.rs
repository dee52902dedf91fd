//! What the server is told to do: [`FakeConfig`] (latency, fault rates, limits, what it rejects), set at start
//! or by `PUT /config`, and the [`Fault`]s `POST /script` forces on the next requests.
//!
//! Separate from the server so that the knobs a test or a benchmark turns are listed in one place.

use serde::{Deserialize, Serialize};

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
