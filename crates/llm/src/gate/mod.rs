//! The gate every provider request passes: the circuit breaker and the global requests/tokens-per-minute budget.
//!
//! Embedded mode keeps both in the process (`governor` for the budget). Cluster mode keeps them in Redis, so
//! every worker process shares one budget and one breaker: a single Lua script checks the breaker, the
//! "everybody pause" mark set after a provider 429 and two GCRA buckets (requests, tokens) in one round trip.
//! When Redis cannot be reached the gate stays closed (requests wait) rather than letting a fleet stampede.
//!
//! This module holds the types and the [`Gate`] API; each backend is in a file of its own ([`local`],
//! [`redis`]). The burst sizes both derive from the limits are computed once here.

mod local;
mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

use self::local::Breaker;
pub use self::local::LocalGate;
pub use self::redis::RedisGate;

/// Consecutive transient failures (5xx, timeouts) across the pool that open the breaker for a cool-down.
pub const FAILURES_TO_OPEN: u32 = 10;
/// How long a breaker opened by transient failures stays open.
pub const COOL_DOWN: Duration = Duration::from_secs(30);

/// Redis keys of the limiter, breaker and cache start with this unless `LEADSCORE_REDIS_PREFIX` says otherwise.
pub const REDIS_PREFIX: &str = "leadscore:";

/// The breaker is open: no request may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The provider's message (bad key, unknown model) or the failures that opened it.
    pub reason: String,
    /// When it closes by itself (cool-down); `None`: only a restart with a fixed configuration or an operator's
    /// `resume` closes it.
    pub retry_in: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("AI calls are paused: {}", .0.reason)]
    Blocked(Blocked),
    #[error("the rate limiter is unavailable (Redis): {0}")]
    Unavailable(String),
}

/// See the module documentation.
#[derive(Clone)]
pub enum Gate {
    Local(Arc<LocalGate>),
    Redis(RedisGate),
}

impl Gate {
    /// An in-process gate for `rpm` requests and `tpm` tokens per minute.
    pub fn local(rpm: u32, tpm: u32) -> Gate {
        Gate::Local(Arc::new(LocalGate::new(rpm, tpm)))
    }

    /// The gate for `config`: shared through Redis when `REDIS_URL` is set (keys under its `redis_prefix`),
    /// else in this process.
    pub fn for_config(config: &crate::LlmConfig) -> Result<Gate, GateError> {
        match &config.redis_url {
            Some(url) => Gate::redis(url, &config.redis_prefix, config.rpm, config.tpm),
            None => Ok(Gate::local(config.rpm, config.tpm)),
        }
    }

    /// A gate shared through Redis at `url`; keys start with `prefix` (one prefix per provider account).
    pub fn redis(url: &str, prefix: &str, rpm: u32, tpm: u32) -> Result<Gate, GateError> {
        RedisGate::new(url, prefix, rpm, tpm).map(Gate::Redis)
    }

    /// Waits until one request of about `tokens` tokens fits the budget. Errors at once when the breaker is
    /// open; when Redis is unreachable it keeps waiting (fail closed) until `give_up_at`.
    pub async fn acquire(&self, tokens: u32, give_up_at: Instant) -> Result<(), GateError> {
        let start = Instant::now();
        loop {
            let wait = match self {
                Gate::Local(g) => g.try_acquire(tokens),
                Gate::Redis(g) => g.try_acquire(tokens).await,
            };
            let wait = match wait {
                Ok(None) => {
                    breaker_open(false);
                    metrics::histogram!("leadscore_llm_limiter_wait_seconds")
                        .record(start.elapsed().as_secs_f64());
                    return Ok(());
                }
                Ok(Some(wait)) => wait,
                Err(GateError::Unavailable(e)) => {
                    if Instant::now() >= give_up_at {
                        return Err(GateError::Unavailable(e));
                    }
                    tracing::warn!(error = %e, "rate limiter unreachable; AI calls wait (fail closed)");
                    Duration::from_secs(1)
                }
                Err(e) => {
                    breaker_open(matches!(e, GateError::Blocked(_)));
                    return Err(e);
                }
            };
            // Short naps, so that a breaker opened meanwhile is seen before sending.
            tokio::time::sleep(wait.min(Duration::from_millis(250))).await;
        }
    }

    /// The provider answered 429: every worker holds off for `wait`.
    pub async fn penalize(&self, wait: Duration) {
        match self {
            Gate::Local(g) => g.penalize(wait),
            Gate::Redis(g) => g.log(g.penalize(wait).await),
        }
    }

    /// Opens the breaker until a restart or [`Gate::reset`]: the key or the model was rejected.
    pub async fn trip(&self, reason: &str) {
        breaker_open(true);
        match self {
            Gate::Local(g) => g.breaker().fatal = Some(reason.to_owned()),
            Gate::Redis(g) => g.log(g.trip(reason).await),
        }
    }

    /// A transient failure (5xx, timeout); enough of them in a row open the breaker for [`COOL_DOWN`].
    pub async fn failure(&self, what: &str) {
        match self {
            Gate::Local(g) => g.failure(what),
            Gate::Redis(g) => g.log(g.failure(what).await),
        }
    }

    /// A request succeeded: the run of failures is over.
    pub async fn success(&self) {
        match self {
            Gate::Local(g) => g.breaker().failures = 0,
            Gate::Redis(g) => g.log(g.success().await),
        }
    }

    /// Closes the breaker (configuration fixed, or an operator resumed).
    pub async fn reset(&self) -> Result<(), GateError> {
        match self {
            Gate::Local(g) => *g.breaker() = Breaker::default(),
            Gate::Redis(g) => g.reset().await?,
        }
        breaker_open(false);
        Ok(())
    }

    /// The breaker's state: `Some` when open.
    pub async fn blocked(&self) -> Result<Option<Blocked>, GateError> {
        let blocked = match self {
            Gate::Local(g) => g.blocked(),
            Gate::Redis(g) => g.blocked().await?,
        };
        breaker_open(blocked.is_some());
        Ok(blocked)
    }
}

/// The breaker state as this process last saw it (`leadscore_llm_breaker_open`). With Redis the breaker is
/// shared, so a process learns it opened elsewhere at its next request or readiness check.
pub(crate) fn breaker_open(open: bool) {
    metrics::gauge!("leadscore_llm_breaker_open").set(if open { 1.0 } else { 0.0 });
}

/// Requests allowed back to back: a tenth of a second's worth, so a limit enforced by the provider over any
/// window is not exceeded by bursts.
fn request_burst(rpm: u32) -> u32 {
    (rpm / 600).max(1)
}

/// Tokens allowed back to back: ten seconds' worth, at least one large request.
fn token_burst(tpm: u32) -> u32 {
    (tpm / 6).max(4096).min(tpm.max(1))
}
