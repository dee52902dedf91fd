//! Request metrics: `leadscore_http_requests_total{method,route,status}` and
//! `leadscore_http_request_duration_seconds{method,route}`, recorded by one middleware around every route.
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

/// The middleware; add it with `Router::layer` so that it runs after routing and sees the matched route.
pub async fn track(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
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
