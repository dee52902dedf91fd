//! Prometheus metrics: the process-wide recorder behind the `metrics` facade, the one table that describes every
//! metric leadscore records (name, type, unit, help, histogram buckets), and the `/metrics` route.
//!
//! The libraries (store, llm, worker, api) record through the `metrics` macros where the events happen and know
//! nothing of Prometheus; until [`Metrics::install`] runs, their macros do nothing. The exporter has no HTTP
//! listener of its own: [`router`] is merged into the operations listener (`--ops-listen`), never the public port,
//! because the totals cover every workspace.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use metrics::{KeyName, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What kind of metric a name is, with a histogram's bucket bounds (in the metric's unit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Counter,
    /// A total of fractions (dollars): the facade's counters hold whole numbers, so it is recorded as a gauge
    /// that only grows and exported with `# TYPE ... gauge`; `rate()` and `increase()` work on it all the same.
    FractionalCounter,
    Gauge,
    Histogram(&'static [f64]),
}

/// One metric as it is exported.
#[derive(Debug, Clone, Copy)]
pub struct Described {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
}

/// A job runs from microseconds (rules only) to minutes (an AI attempt that waits on the limiter and retries
/// within its deadline).
const JOB_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// One provider request: about a second for a chat model, tens of seconds for a reasoning model or a slow one.
const LLM_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0];
/// Waiting on the rate limiter: nothing while under budget, up to a minute when the budget or a 429 pause holds.
const WAIT_BUCKETS: &[f64] = &[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// An API request: a millisecond for a status poll, seconds for a large upload or export.
const HTTP_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Every metric leadscore records. The names are the ones the dashboards, alerts and the KEDA query use.
pub const METRICS: &[Described] = &[
    Described {
        name: "leadscore_queue_jobs",
        kind: Kind::Gauge,
        unit: Some(Unit::Count),
        help: "Jobs of unfinished runs by status (queued, running, retrying, failed), read from the runs' tallies \
               every few seconds. The same value on every process that exports it: aggregate with max().",
    },
    Described {
        name: "leadscore_queue_oldest_job_age_seconds",
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        help: "How long the oldest claimable job has been due (0 when none), refreshed every few seconds. The same \
               value on every process that exports it: aggregate with max().",
    },
    Described {
        name: "leadscore_jobs_claimed_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Jobs claimed by this process's worker pool.",
    },
    Described {
        name: "leadscore_jobs_succeeded_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Jobs that ended with a result written (a rules-only result after failed AI attempts included).",
    },
    Described {
        name: "leadscore_jobs_failed_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Jobs that ended without a result after their last attempt.",
    },
    Described {
        name: "leadscore_jobs_retried_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Failed attempts put back on the queue for a later try.",
    },
    Described {
        name: "leadscore_jobs_rescued_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Jobs whose lease expired (their worker stopped) returned to the queue, or failed on their last \
               attempt, by this process's maintenance.",
    },
    Described {
        name: "leadscore_job_duration_seconds",
        kind: Kind::Histogram(JOB_BUCKETS),
        unit: Some(Unit::Seconds),
        help: "From a job's claim to its completion written, for attempts that ran (deferred jobs excluded).",
    },
    Described {
        name: "leadscore_llm_requests_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Requests to the AI provider by outcome: the HTTP status, or timeout / error when none came back.",
    },
    Described {
        name: "leadscore_llm_request_duration_seconds",
        kind: Kind::Histogram(LLM_BUCKETS),
        unit: Some(Unit::Seconds),
        help: "One request to the AI provider, from sending it to the end of its answer.",
    },
    Described {
        name: "leadscore_llm_tokens_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Tokens the AI provider billed, by kind (prompt, completion); estimated when it reports none.",
    },
    Described {
        name: "leadscore_llm_cost_usd_total",
        kind: Kind::FractionalCounter,
        unit: None,
        help: "What the AI provider's answers cost in US dollars, at the configured prices.",
    },
    Described {
        name: "leadscore_llm_limiter_wait_seconds",
        kind: Kind::Histogram(WAIT_BUCKETS),
        unit: Some(Unit::Seconds),
        help: "Time a request waited on the requests/tokens-per-minute limiter (and any 429 pause) before sending.",
    },
    Described {
        name: "leadscore_llm_breaker_open",
        kind: Kind::Gauge,
        unit: None,
        help: "1 while the circuit breaker is open (AI calls paused), as this process last saw it; else 0.",
    },
    Described {
        name: "leadscore_llm_cache_requests_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Verdict cache lookups by result (hit, miss).",
    },
    Described {
        name: "leadscore_upload_rows_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "Rows of stored uploads by outcome (accepted, rejected).",
    },
    Described {
        name: "leadscore_http_requests_total",
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help: "API requests by method, matched route template (unmatched when none) and status.",
    },
    Described {
        name: "leadscore_http_request_duration_seconds",
        kind: Kind::Histogram(HTTP_BUCKETS),
        unit: Some(Unit::Seconds),
        help: "API requests from routing to the response head (a streamed body may take longer), by method and \
               route.",
    },
];

/// How often histogram samples are folded into their buckets when nobody scrapes: without it they pile up.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    #[error("invalid metrics setup: {0}")]
    Setup(String),
    #[error("another metrics recorder is already installed in this process")]
    OtherRecorder,
}

/// The installed recorder; cheap to clone. Render it for a scrape.
#[derive(Clone, Debug)]
pub struct Metrics {
    handle: PrometheusHandle,
}

static INSTALLED: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();

impl Metrics {
    /// Installs the process-wide recorder and describes every metric of [`METRICS`]. Idempotent: later calls
    /// return the same recorder (or the same error).
    pub fn install() -> Result<Metrics, MetricsError> {
        INSTALLED.get_or_init(install_once).clone().map(|handle| Metrics { handle })
    }

    /// Everything recorded so far, in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

fn install_once() -> Result<PrometheusHandle, MetricsError> {
    let mut builder = PrometheusBuilder::new();
    for m in METRICS {
        if let Kind::Histogram(buckets) = m.kind {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(m.name.to_owned()), buckets)
                .map_err(|e| MetricsError::Setup(e.to_string()))?;
        }
    }
    let handle = builder.install_recorder().map_err(|_| MetricsError::OtherRecorder)?;
    describe_all();
    let upkeep = handle.clone();
    // A thread rather than a task: it outlives any one runtime (tests start many).
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| MetricsError::Setup(format!("cannot start the upkeep thread: {e}")))?;
    Ok(handle)
}

fn describe_all() {
    metrics::with_recorder(|r| {
        for m in METRICS {
            let name = KeyName::from_const_str(m.name);
            match m.kind {
                Kind::Counter => r.describe_counter(name, m.unit, m.help.into()),
                Kind::Gauge | Kind::FractionalCounter => r.describe_gauge(name, m.unit, m.help.into()),
                Kind::Histogram(_) => r.describe_histogram(name, m.unit, m.help.into()),
            }
        }
    });
}

/// `GET /metrics` on the operations listener.
pub fn router(metrics: Metrics) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let body = metrics.render();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], body) }
        }),
    )
}

/// Keeps the queue gauges fresh from a process that does not lead maintenance (the maintenance holder refreshes
/// them itself, see the worker's upkeep): one read of the unfinished runs' tallies and one index probe per
/// claimable run every `every`, whatever the number of jobs or scrapes. Runs until aborted.
pub async fn refresh_queue_gauges(store: leadscore_store::Store, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.queue_depth().await {
            Ok(depth) => depth.record(),
            Err(e) => tracing::debug!(error = %e, "reading the queue depth failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of the rendered text for `name`: its `# TYPE` and the first sample.
    fn type_of(text: &str, name: &str) -> Option<String> {
        text.lines().find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")).map(str::to_owned))
    }

    #[test]
    fn every_metric_is_described_with_its_type_and_renders() {
        let metrics = Metrics::install().expect("installs");
        assert!(Metrics::install().is_ok(), "a second install returns the same recorder");
        for m in METRICS {
            match m.kind {
                Kind::Counter => metrics::counter!(m.name, "probe" => "x").increment(2),
                Kind::Gauge => metrics::gauge!(m.name, "probe" => "x").set(3.0),
                Kind::FractionalCounter => metrics::gauge!(m.name, "probe" => "x").increment(0.25),
                Kind::Histogram(_) => metrics::histogram!(m.name, "probe" => "x").record(0.3),
            }
        }
        let text = metrics.render();
        for m in METRICS {
            assert!(
                text.contains(&format!("# HELP {} {}", m.name, m.help)),
                "{}: no help line in\n{text}",
                m.name
            );
            let (kind, sample) = match m.kind {
                Kind::Counter => ("counter", format!("{}{{probe=\"x\"}} 2", m.name)),
                Kind::Gauge => ("gauge", format!("{}{{probe=\"x\"}} 3", m.name)),
                Kind::FractionalCounter => ("gauge", format!("{}{{probe=\"x\"}} 0.25", m.name)),
                // 0.3 s falls in the first bucket at or above it and in every one after.
                Kind::Histogram(b) => {
                    let le = b.iter().find(|le| **le >= 0.3).expect("a bucket above 0.3");
                    ("histogram", format!("{}_bucket{{probe=\"x\",le=\"{le}\"}} 1", m.name))
                }
            };
            assert_eq!(type_of(&text, m.name).as_deref(), Some(kind), "{}", m.name);
            assert!(text.contains(&sample), "{}: no `{sample}` in\n{text}", m.name);
        }
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len(), "a name is described twice");
        for m in METRICS {
            assert!(m.name.starts_with("leadscore_"), "{}", m.name);
            assert_eq!(
                matches!(m.kind, Kind::Counter | Kind::FractionalCounter),
                m.name.ends_with("_total"),
                "{}: counters end in _total",
                m.name
            );
            if m.unit == Some(Unit::Seconds) {
                assert!(m.name.ends_with("_seconds"), "{}: base unit in the name", m.name);
            }
            if let Kind::Histogram(b) = m.kind {
                assert!(b.windows(2).all(|w| w[0] < w[1]), "{}: buckets ascend", m.name);
            }
        }
    }

    #[tokio::test]
    async fn the_route_serves_the_text_format() {
        use tower::ServiceExt;
        let metrics = Metrics::install().expect("installs");
        metrics::counter!("leadscore_jobs_claimed_total").increment(1);
        let request = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).expect("request");
        let response = router(metrics).oneshot(request).await.expect("answers");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(text.contains("# TYPE leadscore_jobs_claimed_total counter"), "{text}");
    }
}
