//! Logs and traces. Log lines go to standard error, as JSON (one object per line, with the fields of the spans
//! they happen in) or as text for a terminal. With an OTLP endpoint, spans are also exported over OTLP/HTTP
//! (protobuf) in batches from a thread of their own, so a slow or absent collector never holds up a request or a
//! job: when its queue is full, spans are dropped; a failed export is logged as a warning (at most once a minute).
//!
//! `RUST_LOG` picks log lines only: spans are exported by a filter of their own ([`TRACE_FILTER`]), so quieting
//! the log never turns traces off (nor the trace context a run stores).
//!
//! The trace context crosses process boundaries as a W3C `traceparent`: [`traceparent`] writes one for a span
//! (the API stores the creating request's with the run), [`set_parent`] continues one (a worker's job span).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryArgs};

/// How long an export may take before it is abandoned (and its spans dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which spans are exported: ours at `info` (every span in the trace table of docs/operations.md), whatever
/// `RUST_LOG` says.
pub const TRACE_FILTER: &str = "info,sqlx=warn";

/// How often a failing exporter may say so.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Keeps the span exporter alive; dropping it exports what is still queued (within [`EXPORT_TIMEOUT`]).
#[must_use = "spans are exported only while the guard lives"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every span ended so far (tests read them right after).
    pub fn flush(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.force_flush()
        {
            tracing::warn!(error = %e, "exporting spans failed");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown_with_timeout(EXPORT_TIMEOUT)
        {
            eprintln!("warning: exporting the last spans failed: {e}");
        }
    }
}

/// Why telemetry could not be set up as configured.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT (--otlp-endpoint): {0}")]
    Endpoint(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

impl TelemetryError {
    /// What is wrong, without the setting's name.
    pub fn reason(&self) -> &str {
        match self {
            TelemetryError::Endpoint(why) => why,
            TelemetryError::AlreadyInstalled => "a global tracing subscriber is already installed",
        }
    }
}

/// Installs the process's log and trace output. `binary` names the service when `OTEL_SERVICE_NAME` does not.
/// Call it outside the async runtime: the exporter's HTTP client runs on a thread of its own.
pub fn init(args: &TelemetryArgs, binary: &str) -> Result<TelemetryGuard, TelemetryError> {
    // A malformed filter is a configuration error caught by clap's value parser; this is the last resort.
    let filter = || EnvFilter::try_new(&args.log_filter).unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let logs = match resolve(args.log_format) {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
        _ => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
    };
    let provider = match &args.otlp_endpoint {
        Some(endpoint) => {
            Some(provider(endpoint, args.service_name.as_deref().unwrap_or(binary), args.trace_sample_ratio)?)
        }
        None => None,
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("leadscore"))
            .with_filter(EnvFilter::new(TRACE_FILTER))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { provider })
}

/// `auto` is JSON unless standard error is a terminal (a person reading).
fn resolve(format: LogFormat) -> LogFormat {
    match format {
        LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Text,
        LogFormat::Auto => LogFormat::Json,
        f => f,
    }
}

fn provider(endpoint: &str, service: &str, ratio: f64) -> Result<SdkTracerProvider, TelemetryError> {
    let url = traces_url(endpoint)?;
    // The exporter's client is the reqwest we build, which has no TLS crypto of its own until this.
    leadscore_llm::install_crypto();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        // Fixed words: the builder's message can quote the URL, and a URL can hold credentials.
        .map_err(|_| TelemetryError::Endpoint("the OTLP exporter could not be built for this URL".into()))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.to_owned()).build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(Reporting { inner: exporter, last_warning: Mutex::new(None) })
        .with_resource(resource)
        .with_sampler(sampler(ratio))
        .build())
}

/// Set here, so the SDK's own reading of OTEL_TRACES_SAMPLER (which falls back silently) never applies. A local
/// parent is followed; a remote one (a caller's `traceparent`, or the one a run stored) is not trusted with the
/// decision: the trace id decides, as for a new trace. The ratio sampler is a pure function of the trace id, so
/// the API and every worker take the same decision for one trace, and a caller cannot force a run of a million
/// jobs to be exported by sending a sampled flag.
fn sampler(ratio: f64) -> impl opentelemetry_sdk::trace::ShouldSample + 'static {
    let by_trace_id = || Sampler::TraceIdRatioBased(ratio);
    Sampler::parent_based(by_trace_id())
        .with_remote_parent_sampled(by_trace_id())
        .with_remote_parent_not_sampled(by_trace_id())
}

/// The OTLP exporter, saying when an export fails (the SDK's own diagnostics are compiled out).
#[derive(Debug)]
struct Reporting<E> {
    inner: E,
    last_warning: Mutex<Option<Instant>>,
}

impl<E> Reporting<E> {
    /// Whether a failure now may be said (the first, or the first a minute after the last said).
    fn may_warn(&self) -> bool {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        let may = last.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if may {
            *last = Some(Instant::now());
        }
        may
    }

    fn warn(&self, error: &dyn std::fmt::Display) {
        if self.may_warn() {
            let error = leadscore_core::redact::redact(&error.to_string());
            tracing::warn!(%error, "exporting spans failed; they are dropped (said at most once a minute)");
        }
    }
}

impl<E: SpanExporter> SpanExporter for Reporting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.warn(e);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The traces URL of an OTLP/HTTP endpoint, as the OpenTelemetry specification derives it from
/// `OTEL_EXPORTER_OTLP_ENDPOINT`: the base URL plus `/v1/traces`.
pub(crate) fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let base = endpoint.trim().trim_end_matches('/');
    let scheme_ok = base.starts_with("http://") || base.starts_with("https://");
    if !scheme_ok || base.len() <= "https://".len() || base.contains(char::is_whitespace) {
        return Err(TelemetryError::Endpoint("expected an http:// or https:// URL".into()));
    }
    Ok(format!("{base}/v1/traces"))
}

/// The W3C `traceparent` of `span` (`None` when spans are not exported: there is no trace to continue).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the span a `traceparent` names (a malformed one is ignored: the span starts a trace).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_is_the_endpoint_plus_v1_traces() {
        assert_eq!(traces_url("http://collector:4318").expect("url"), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("https://c.example/otlp/").expect("url"), "https://c.example/otlp/v1/traces");
        for bad in ["collector:4318", "http://", "ftp://c", "http://a b"] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }

    fn decision(ratio: f64, parent: Option<(bool, bool)>) -> opentelemetry_sdk::trace::SamplingDecision {
        use opentelemetry::trace::{
            SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        use opentelemetry_sdk::trace::ShouldSample;
        let trace_id = TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128);
        let cx = parent.map(|(remote, sampled)| {
            let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
            let span = SpanContext::new(trace_id, SpanId::from(7_u64), flags, remote, TraceState::default());
            // The context's span is remote or local as its `SpanContext` says.
            opentelemetry::Context::new().with_remote_span_context(span)
        });
        sampler(ratio).should_sample(cx.as_ref(), trace_id, "job", &SpanKind::Internal, &[], &[]).decision
    }

    #[test]
    fn a_remote_sampled_flag_does_not_override_the_ratio() {
        use opentelemetry_sdk::trace::SamplingDecision::{Drop, RecordAndSample};
        // Remote parents (a caller's header, a run's stored context): the trace id decides, both ways.
        assert_eq!(decision(0.0, Some((true, true))), Drop);
        assert_eq!(decision(1.0, Some((true, false))), RecordAndSample);
        // Local parents (a job's own spans): followed.
        assert_eq!(decision(0.0, Some((false, true))), RecordAndSample);
        assert_eq!(decision(1.0, Some((false, false))), Drop);
        // New traces: the ratio.
        assert_eq!(decision(0.0, None), Drop);
        assert_eq!(decision(1.0, None), RecordAndSample);
    }

    #[test]
    fn a_failing_exporter_says_so_once_a_minute() {
        let r = Reporting { inner: (), last_warning: Mutex::new(None) };
        assert!(r.may_warn());
        assert!(!r.may_warn());
        *r.last_warning.lock().expect("lock") = Instant::now().checked_sub(WARN_EVERY);
        assert!(r.may_warn());
    }

    #[test]
    fn explicit_formats_are_kept() {
        assert_eq!(resolve(LogFormat::Json), LogFormat::Json);
        assert_eq!(resolve(LogFormat::Text), LogFormat::Text);
    }
}
