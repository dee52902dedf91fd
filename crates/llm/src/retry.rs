//! When to try again: the provider's own hints (`retry-after`, `retry-after-ms`, `x-ratelimit-reset-*`) and
//! exponential backoff with full jitter otherwise.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::HeaderMap;

/// The longest wait a provider hint can impose on one try; longer hints end the attempt instead (the queue
/// re-schedules the job without holding a slot).
pub const MAX_HINT: Duration = Duration::from_secs(60);

/// Delays between tries: exponential caps (0.5 s, 1 s, 2 s, ... up to 20 s) from `backon`, each drawn with full
/// jitter (uniform between 0 and the cap) so that workers hit by the same outage do not retry in step.
pub struct Backoff {
    caps: backon::ExponentialBackoff,
}

impl Backoff {
    pub fn new() -> Backoff {
        let caps = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(20))
            .with_factor(2.0)
            .without_max_times()
            .build();
        Backoff { caps }
    }

    /// The next delay; with a provider hint, the hint (the exponential cap still advances).
    pub fn next(&mut self, hint: Option<Duration>) -> Duration {
        let cap = self.caps.next().unwrap_or(Duration::from_secs(20));
        let jittered = cap.mul_f64(fastrand::f64());
        // A hint is waited in full, plus up to 10% so that the workers it was sent to do not return in step.
        hint.map_or(jittered, |h| h + h.mul_f64(fastrand::f64() * 0.1))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// The provider's hint of when to try again, from the first of `retry-after-ms`, `retry-after` (seconds or an
/// HTTP date, which we do not parse and treat as absent) and `x-ratelimit-reset-requests/tokens` (the later of
/// the two, as Go-style durations such as `1s`, `6m0s`, `250ms`).
pub fn retry_hint(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()).filter(|n| *n >= 0.0) {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    if let Some(s) = text("retry-after").and_then(|v| v.parse::<f64>().ok()).filter(|n| *n >= 0.0) {
        return Some(Duration::from_secs_f64(s));
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .into_iter()
        .filter_map(|h| text(h).and_then(parse_go_duration))
        .max()
}

/// `1s`, `6m0s`, `1h2m3.5s`, `250ms`, `20us`: a sequence of number + unit.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn go_durations() {
        for (text, ms) in
            [("1s", 1000), ("6m0s", 360_000), ("250ms", 250), ("1h2m3.5s", 3_723_500), ("0.5s", 500)]
        {
            assert_eq!(parse_go_duration(text), Some(Duration::from_millis(ms)), "{text}");
        }
        for bad in ["", "s", "5", "5 parsecs", "1x"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn hints_in_order_of_precision() {
        let h = headers(&[("retry-after", "2"), ("retry-after-ms", "1500")]);
        assert_eq!(retry_hint(&h), Some(Duration::from_millis(1500)));
        assert_eq!(retry_hint(&headers(&[("retry-after", "3")])), Some(Duration::from_secs(3)));
        let h = headers(&[("x-ratelimit-reset-requests", "1s"), ("x-ratelimit-reset-tokens", "6m0s")]);
        assert_eq!(retry_hint(&h), Some(Duration::from_secs(360)));
        assert_eq!(retry_hint(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])), None);
        assert_eq!(retry_hint(&HeaderMap::new()), None);
    }

    #[test]
    fn backoff_grows_with_full_jitter_and_respects_hints() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..8).map(|_| b.next(None)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(20)), "{delays:?}");
        let mut samples = Backoff::new();
        let first: Vec<Duration> = (0..50).map(|_| Backoff::new().next(None)).collect();
        assert!(first.iter().all(|d| *d <= Duration::from_millis(500)), "first cap is 0.5 s");
        assert!(first.iter().any(|d| *d < Duration::from_millis(250)), "full jitter reaches low");
        assert!(samples.next(Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }
}
