//! What every request leaves behind, recorded by one middleware around every route: its span (`request`, named
//! `METHOD /route` when exported, continuing the caller's W3C `traceparent` when there is one) and its metrics,
//! `leadscore_http_requests_total{method,route,status}` and
//! `leadscore_http_request_duration_seconds{method,route}`.
//!
//! `route` is the matched route template (`/v1/runs/{id}`), never the raw path, and `method` is one of the
//! standard methods or `other`: a client choosing paths or methods must not create a series per request. A
//! request no route matched counts as `unmatched`. Requests the server itself refuses before routing (header or
//! body timeouts, too many connections) are not counted here.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The middleware; add it with `Router::layer` so that it runs after routing and sees the matched route.
pub async fn track(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route.as_str(),
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if let Some(parent) = request.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
        leadscore_ops::telemetry::set_parent(&span, parent);
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(parent: &span, status, elapsed_ms = start.elapsed().as_millis() as u64, "request answered");
    let status = status.to_string();
    metrics::counter!("leadscore_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("leadscore_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").expect("a method")), "other");
        assert_eq!(method_label(&Method::TRACE), "other");
    }
}
