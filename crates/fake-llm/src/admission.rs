//! Each arrival's bookkeeping and fate: counting it into [`Stats`](crate::Stats), the `rpm` token bucket, the
//! scripted faults and the random fault roll; and, when it is answered, its status and tokens.
//!
//! Separate from the HTTP handler so that what decides an answer (and what the stats count) is readable apart
//! from how the answer is written.

use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::{FakeConfig, FakeLlm, Fault};

impl FakeLlm {
    /// Registers an arrival and decides how to answer it.
    pub(crate) fn admit(&self, prompt: u64, auth_ok: bool) -> (Fault, Option<Duration>, FakeConfig) {
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

    pub(crate) fn finish(&self, status: Option<StatusCode>, prompt_tokens: u64, completion_tokens: u64) {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn bucket_allows_one_seconds_worth_then_refuses() {
        let mut bucket = (0.0, Instant::now() - Duration::from_secs(10));
        let granted = (0..20).filter(|_| take_token(&mut bucket, Some(600)).is_none()).count();
        assert_eq!(granted, 10);
        let wait = take_token(&mut bucket, Some(600)).expect("empty");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(take_token(&mut bucket, None).is_none());
    }
}
