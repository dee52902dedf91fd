//! The embedded gate: the requests/tokens budget in `governor` buckets, the "everybody pause" mark and the
//! circuit breaker, all in this process.
//!
//! Separate from the [`Gate`](super::Gate) API so that the in-process bookkeeping (locks, `governor` types)
//! sits apart from the Redis-backed variant in [`super::redis`]; only embedded mode uses it.

use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

use super::{Blocked, COOL_DOWN, FAILURES_TO_OPEN, GateError, request_burst, token_burst};

#[derive(Debug, Default)]
pub(super) struct Breaker {
    pub(super) fatal: Option<String>,
    pub(super) failures: u32,
    pub(super) open_until: Option<(Instant, String)>,
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

impl LocalGate {
    pub(super) fn new(rpm: u32, tpm: u32) -> LocalGate {
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

    pub(super) fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn blocked(&self) -> Option<Blocked> {
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

    pub(super) fn try_acquire(&self, tokens: u32) -> Result<Option<Duration>, GateError> {
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

    pub(super) fn penalize(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut p = self.paused_until.lock().unwrap_or_else(PoisonError::into_inner);
        if p.is_none_or(|cur| cur < until) {
            *p = Some(until);
        }
    }

    pub(super) fn failure(&self, what: &str) {
        let mut b = self.breaker();
        b.failures += 1;
        if b.failures >= FAILURES_TO_OPEN {
            b.failures = 0;
            let reason = format!("{FAILURES_TO_OPEN} provider failures in a row, the last: {what}");
            tracing::warn!(cool_down = ?COOL_DOWN, "{reason}; pausing AI calls");
            b.open_until = Some((Instant::now() + COOL_DOWN, reason));
            super::breaker_open(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::{COOL_DOWN, FAILURES_TO_OPEN, Gate, GateError};

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
