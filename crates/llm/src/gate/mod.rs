//! The gate every provider request passes: the circuit breaker and the global requests/tokens-per-minute budget.
//!
//! Embedded mode keeps both in the process (`governor` for the budget). Cluster mode keeps them in Redis, so
//! every worker process shares one budget and one breaker: a single Lua script checks the breaker, the
//! "everybody pause" mark set after a provider 429 and two GCRA buckets (requests, tokens) in one round trip.
//! When Redis cannot be reached the gate stays closed (requests wait) rather than letting a fleet stampede.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

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
        loop {
            let wait = match self {
                Gate::Local(g) => g.try_acquire(tokens),
                Gate::Redis(g) => g.try_acquire(tokens).await,
            };
            let wait = match wait {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => wait,
                Err(GateError::Unavailable(e)) => {
                    if Instant::now() >= give_up_at {
                        return Err(GateError::Unavailable(e));
                    }
                    tracing::warn!(error = %e, "rate limiter unreachable; AI calls wait (fail closed)");
                    Duration::from_secs(1)
                }
                Err(e) => return Err(e),
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
            Gate::Local(g) => {
                *g.breaker() = Breaker::default();
                Ok(())
            }
            Gate::Redis(g) => g.reset().await,
        }
    }

    /// The breaker's state: `Some` when open.
    pub async fn blocked(&self) -> Result<Option<Blocked>, GateError> {
        match self {
            Gate::Local(g) => Ok(g.blocked()),
            Gate::Redis(g) => g.blocked().await,
        }
    }
}

#[derive(Debug, Default)]
struct Breaker {
    fatal: Option<String>,
    failures: u32,
    open_until: Option<(Instant, String)>,
}

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    governor::middleware::NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

/// The embedded gate: `governor` buckets, a pause mark and the breaker, all in this process.
pub struct LocalGate {
    requests: Limiter,
    tokens: Limiter,
    token_burst: u32,
    clock: DefaultClock,
    paused_until: Mutex<Option<Instant>>,
    breaker: Mutex<Breaker>,
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

impl LocalGate {
    fn new(rpm: u32, tpm: u32) -> LocalGate {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        let token_burst = token_burst(tpm);
        LocalGate {
            requests: RateLimiter::direct(Quota::per_minute(nz(rpm)).allow_burst(nz(request_burst(rpm)))),
            tokens: RateLimiter::direct(Quota::per_minute(nz(tpm)).allow_burst(nz(token_burst))),
            token_burst,
            clock: DefaultClock::default(),
            paused_until: Mutex::new(None),
            breaker: Mutex::new(Breaker::default()),
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn blocked(&self) -> Option<Blocked> {
        let mut b = self.breaker();
        if let Some(reason) = &b.fatal {
            return Some(Blocked { reason: reason.clone(), retry_in: None });
        }
        match &b.open_until {
            Some((until, reason)) if *until > Instant::now() => {
                Some(Blocked { reason: reason.clone(), retry_in: Some(*until - Instant::now()) })
            }
            Some(_) => {
                b.open_until = None;
                None
            }
            None => None,
        }
    }

    fn try_acquire(&self, tokens: u32) -> Result<Option<Duration>, GateError> {
        if let Some(blocked) = self.blocked() {
            return Err(GateError::Blocked(blocked));
        }
        if let Some(until) = *self.paused_until.lock().unwrap_or_else(PoisonError::into_inner)
            && until > Instant::now()
        {
            return Ok(Some(until - Instant::now()));
        }
        if let Err(not_until) = self.requests.check() {
            return Ok(Some(not_until.wait_time_from(self.clock.now())));
        }
        let n = NonZeroU32::new(tokens.clamp(1, self.token_burst)).unwrap_or(NonZeroU32::MIN);
        match self.tokens.check_n(n) {
            Ok(Ok(())) => Ok(None),
            // The request permit is spent; waiting for tokens costs at most one extra request of budget.
            Ok(Err(not_until)) => Ok(Some(not_until.wait_time_from(self.clock.now()))),
            Err(_) => Ok(None),
        }
    }

    fn penalize(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut p = self.paused_until.lock().unwrap_or_else(PoisonError::into_inner);
        if p.is_none_or(|cur| cur < until) {
            *p = Some(until);
        }
    }

    fn failure(&self, what: &str) {
        let mut b = self.breaker();
        b.failures += 1;
        if b.failures >= FAILURES_TO_OPEN {
            b.failures = 0;
            let reason = format!("{FAILURES_TO_OPEN} provider failures in a row, the last: {what}");
            tracing::warn!(cool_down = ?COOL_DOWN, "{reason}; pausing AI calls");
            b.open_until = Some((Instant::now() + COOL_DOWN, reason));
        }
    }
}

const ACQUIRE: &str = r"
-- KEYS: requests TAT, tokens TAT, pause-until, fatal breaker, cool-down breaker
-- ARGV: us per request, request burst, us per token, token burst, tokens
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fatal = redis.call('GET', KEYS[4])
if fatal then return {-1, 0, fatal} end
local cool = redis.call('PTTL', KEYS[5])
if cool > 0 then return {-2, cool, redis.call('GET', KEYS[5]) or ''} end
local pause = tonumber(redis.call('GET', KEYS[3]) or '0')
if pause > now then return {1, math.ceil((pause - now) / 1000), ''} end
local function gcra(key, interval, burst, cost)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval * cost
  local allow_at = new_tat - interval * burst
  return allow_at - now, new_tat
end
local wait_r, tat_r = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), 1)
local wait_t, tat_t = gcra(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
local wait = math.max(wait_r, wait_t)
if wait > 0 then return {1, math.ceil(wait / 1000), ''} end
redis.call('SET', KEYS[1], string.format('%.0f', tat_r), 'PX', math.ceil((tat_r - now) / 1000) + 1000)
redis.call('SET', KEYS[2], string.format('%.0f', tat_t), 'PX', math.ceil((tat_t - now) / 1000) + 1000)
return {0, 0, ''}
";

const PENALIZE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1]) * 1000
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > cur then
  redis.call('SET', KEYS[1], string.format('%.0f', untl), 'PX', tonumber(ARGV[1]) + 1000)
end
return 0
";

const FAILURE: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  redis.call('DEL', KEYS[1])
end
return n
";

/// The cluster gate: state in Redis under `prefix`, shared by every process using the same prefix.
#[derive(Clone)]
pub struct RedisGate {
    client: redis::Client,
    conn: Arc<tokio::sync::OnceCell<redis::aio::ConnectionManager>>,
    prefix: String,
    rpm: u32,
    tpm: u32,
}

fn unavailable(e: impl std::fmt::Display) -> GateError {
    GateError::Unavailable(e.to_string())
}

impl RedisGate {
    fn new(url: &str, prefix: &str, rpm: u32, tpm: u32) -> Result<RedisGate, GateError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        Ok(RedisGate { client, conn: Arc::default(), prefix: prefix.to_owned(), rpm, tpm })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The shared connection; (re)connects lazily and reconnects by itself after failures.
    async fn conn(&self) -> Result<redis::aio::ConnectionManager, GateError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(2)));
                self.client.get_connection_manager_with_config(config).await
            })
            .await
            .map_err(unavailable)?;
        Ok(conn.clone())
    }

    fn log(&self, r: Result<(), GateError>) {
        if let Err(e) = r {
            tracing::warn!(error = %e, "updating the shared breaker/limiter failed");
        }
    }

    async fn try_acquire(&self, tokens: u32) -> Result<Option<Duration>, GateError> {
        let mut conn = self.conn().await?;
        let burst = token_burst(self.tpm);
        let (code, wait_ms, message): (i64, i64, String) = redis::Script::new(ACQUIRE)
            .key(self.key("rl:requests"))
            .key(self.key("rl:tokens"))
            .key(self.key("rl:pause"))
            .key(self.key("breaker:fatal"))
            .key(self.key("breaker:cool"))
            .arg(60_000_000 / u64::from(self.rpm.max(1)))
            .arg(request_burst(self.rpm))
            .arg(60_000_000.0 / f64::from(self.tpm.max(1)))
            .arg(burst)
            .arg(tokens.clamp(1, burst))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let wait = Duration::from_millis(wait_ms.max(0) as u64);
        match code {
            0 => Ok(None),
            1 => Ok(Some(wait)),
            -1 => Err(GateError::Blocked(Blocked { reason: message, retry_in: None })),
            _ => Err(GateError::Blocked(Blocked { reason: message, retry_in: Some(wait) })),
        }
    }

    async fn penalize(&self, wait: Duration) -> Result<(), GateError> {
        let mut conn = self.conn().await?;
        redis::Script::new(PENALIZE)
            .key(self.key("rl:pause"))
            .arg(wait.as_millis() as u64)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn trip(&self, reason: &str) -> Result<(), GateError> {
        let mut conn = self.conn().await?;
        redis::cmd("SET")
            .arg(self.key("breaker:fatal"))
            .arg(reason)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn failure(&self, what: &str) -> Result<(), GateError> {
        let mut conn = self.conn().await?;
        let reason = format!("{FAILURES_TO_OPEN} provider failures in a row, the last: {what}");
        let n: i64 = redis::Script::new(FAILURE)
            .key(self.key("breaker:failures"))
            .key(self.key("breaker:cool"))
            .arg(COOL_DOWN.as_millis() as u64)
            .arg(FAILURES_TO_OPEN)
            .arg(&reason)
            .arg(COOL_DOWN.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if n >= i64::from(FAILURES_TO_OPEN) {
            tracing::warn!(cool_down = ?COOL_DOWN, "{reason}; pausing AI calls in every worker");
        }
        Ok(())
    }

    async fn success(&self) -> Result<(), GateError> {
        let mut conn = self.conn().await?;
        redis::cmd("DEL")
            .arg(self.key("breaker:failures"))
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn reset(&self) -> Result<(), GateError> {
        let mut conn = self.conn().await?;
        redis::cmd("DEL")
            .arg(self.key("breaker:fatal"))
            .arg(self.key("breaker:cool"))
            .arg(self.key("breaker:failures"))
            .arg(self.key("rl:pause"))
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn blocked(&self) -> Result<Option<Blocked>, GateError> {
        let mut conn = self.conn().await?;
        let (fatal, cool, ttl): (Option<String>, Option<String>, i64) = redis::pipe()
            .get(self.key("breaker:fatal"))
            .get(self.key("breaker:cool"))
            .pttl(self.key("breaker:cool"))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(match (fatal, cool) {
            (Some(reason), _) => Some(Blocked { reason, retry_in: None }),
            (None, Some(reason)) => {
                Some(Blocked { reason, retry_in: Some(Duration::from_millis(ttl.max(0) as u64)) })
            }
            (None, None) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_budget_spaces_requests() {
        let gate = Gate::local(600, 1_000_000);
        let start = Instant::now();
        let far = start + Duration::from_secs(60);
        for _ in 0..6 {
            gate.acquire(100, far).await.expect("granted");
        }
        // One back to back, then one per 100 ms.
        assert!(start.elapsed() >= Duration::from_millis(450), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn local_breaker_trips_resets_and_cools_down() {
        let gate = Gate::local(60_000, 1_000_000);
        let far = Instant::now() + Duration::from_secs(5);
        gate.trip("401 Incorrect API key provided").await;
        match gate.acquire(1, far).await {
            Err(GateError::Blocked(b)) => {
                assert_eq!((b.reason.as_str(), b.retry_in), ("401 Incorrect API key provided", None))
            }
            other => panic!("{other:?}"),
        }
        gate.reset().await.expect("reset");
        gate.acquire(1, far).await.expect("closed again");
        for _ in 0..FAILURES_TO_OPEN - 1 {
            gate.failure("500").await;
        }
        gate.success().await;
        gate.failure("500").await;
        assert_eq!(gate.blocked().await, Ok(None), "a success ends the run of failures");
        for _ in 0..FAILURES_TO_OPEN {
            gate.failure("503").await;
        }
        let b = gate.blocked().await.expect("local").expect("open");
        assert!(b.retry_in.is_some_and(|d| d <= COOL_DOWN) && b.reason.contains("503"), "{b:?}");
    }

    #[tokio::test]
    async fn local_penalty_holds_everyone() {
        let gate = Gate::local(60_000, 1_000_000);
        gate.penalize(Duration::from_millis(300)).await;
        let start = Instant::now();
        gate.acquire(1, start + Duration::from_secs(5)).await.expect("granted");
        assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());
    }
}
