//! The cluster gate: the Lua scripts (breaker check, pause mark and two GCRA buckets in one round trip) and
//! the shared breaker, all kept in Redis under one key prefix.
//!
//! Separate from the [`Gate`](super::Gate) API so that the scripts, key names and connection handling live
//! together; only cluster mode (`REDIS_URL` set) uses it.

use std::sync::Arc;
use std::time::Duration;

use super::{Blocked, COOL_DOWN, FAILURES_TO_OPEN, GateError, request_burst, token_burst};

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
    // Redis errors may quote REDIS_URL, password included.
    GateError::Unavailable(leadscore_core::redact::redact(&e.to_string()))
}

impl RedisGate {
    pub(super) fn new(url: &str, prefix: &str, rpm: u32, tpm: u32) -> Result<RedisGate, GateError> {
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

    pub(super) fn log(&self, r: Result<(), GateError>) {
        if let Err(e) = r {
            tracing::warn!(error = %e, "updating the shared breaker/limiter failed");
        }
    }

    pub(super) async fn try_acquire(&self, tokens: u32) -> Result<Option<Duration>, GateError> {
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

    pub(super) async fn penalize(&self, wait: Duration) -> Result<(), GateError> {
        let mut conn = self.conn().await?;
        redis::Script::new(PENALIZE)
            .key(self.key("rl:pause"))
            .arg(wait.as_millis() as u64)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn trip(&self, reason: &str) -> Result<(), GateError> {
        let mut conn = self.conn().await?;
        redis::cmd("SET")
            .arg(self.key("breaker:fatal"))
            .arg(reason)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    pub(super) async fn failure(&self, what: &str) -> Result<(), GateError> {
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
            super::breaker_open(true);
        }
        Ok(())
    }

    pub(super) async fn success(&self) -> Result<(), GateError> {
        let mut conn = self.conn().await?;
        redis::cmd("DEL")
            .arg(self.key("breaker:failures"))
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    pub(super) async fn reset(&self) -> Result<(), GateError> {
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

    pub(super) async fn blocked(&self) -> Result<Option<Blocked>, GateError> {
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
