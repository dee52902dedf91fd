//! Logs and traces. Log lines go to standard error, as JSON (one object per line, with the fields of the spans
//! they happen in) or as text for a terminal. With an OTLP endpoint, spans are also exported over OTLP/HTTP
//! (protobuf) in batches from a thread of their own, so a slow or absent collector never holds up a request or a
//! job: when its queue is full, spans are dropped, and the exporter says so.
//!
//! The trace context crosses process boundaries as a W3C `traceparent`: [`traceparent`] writes one for a span
//! (the API stores the creating request's with the run), [`set_parent`] continues one (a worker's job span).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryArgs};

/// How long an export may take before it is abandoned (and its spans dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

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
            && let Err(e) = p.shutdown()
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
            .with_current_span(true)
            .with_span_list(false)
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
    let traces = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("leadscore")).with_filter(filter()));
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
        .map_err(|e| TelemetryError::Endpoint(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.to_owned()).build();
    // Set here, so the SDK's own reading of OTEL_TRACES_SAMPLER (which falls back silently) never applies.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .with_sampler(sampler)
        .build())
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

    #[test]
    fn explicit_formats_are_kept() {
        assert_eq!(resolve(LogFormat::Json), LogFormat::Json);
        assert_eq!(resolve(LogFormat::Text), LogFormat::Text);
    }
}
