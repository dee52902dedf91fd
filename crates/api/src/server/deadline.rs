//! The whole-request deadline for routes that answer at once. Routes that stream or wait by design carry
//! their own bounds and are left alone: run events (SSE), CSV exports, uploads (body idle timeout and byte
//! limit) and the original service's `/api/leads/score/` (waits up to 5 minutes for its run).

use std::time::Duration;

use axum::extract::Request;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;

/// Longest `Prefer: wait` honoured by `POST /v1/leads/score`: such a request may take that much longer.
const PREFER_WAIT_MAX: Duration = Duration::from_secs(60);

/// Answers 503 problem+json when the handler has not answered within `deadline`. 503, not 408: the client
/// sent its request in time (a stalled body is the body idle timeout's 408), the server was too slow.
pub async fn enforce(deadline: Duration, req: Request, next: Next) -> Response {
    let Some(deadline) = deadline_for(&req, deadline) else {
        return next.run(req).await;
    };
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable(format!(
            "the request was not answered within its deadline of {} s; retry later",
            deadline.as_secs_f64()
        ))
        .into_response(),
    }
}

/// The deadline of `req`, or `None` for the streaming and waiting routes.
fn deadline_for(req: &Request, deadline: Duration) -> Option<Duration> {
    let path = req.uri().path();
    let streams = path.ends_with(".csv")
        || path.starts_with("/api/leads/export_csv")
        || (path.starts_with("/v1/runs/") && path.ends_with("/events"));
    let uploads = *req.method() == Method::POST
        && matches!(path, "/v1/leads/upload" | "/api/leads/upload/" | "/api/leads/upload");
    let waits = *req.method() == Method::POST && path.starts_with("/api/leads/score");
    if streams || uploads || waits {
        return None;
    }
    let prefers_wait = req
        .headers()
        .get_all(header::HeaderName::from_static("prefer"))
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("wait")));
    Some(if prefers_wait { deadline + PREFER_WAIT_MAX } else { deadline })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str) -> Request {
        Request::builder().method(method).uri(path).body(axum::body::Body::empty()).expect("request")
    }

    #[test]
    fn streaming_and_waiting_routes_have_no_deadline() {
        let d = Duration::from_secs(30);
        for (m, p) in [
            (Method::GET, "/v1/runs/r1/events"),
            (Method::GET, "/v1/runs/r1/results.csv"),
            (Method::GET, "/v1/results.csv"),
            (Method::GET, "/api/leads/export_csv/"),
            (Method::POST, "/v1/leads/upload"),
            (Method::POST, "/api/leads/upload/"),
            (Method::POST, "/api/leads/score/"),
        ] {
            assert_eq!(deadline_for(&req(m, p), d), None, "{p}");
        }
        assert_eq!(deadline_for(&req(Method::GET, "/v1/runs"), d), Some(d));
        assert_eq!(deadline_for(&req(Method::GET, "/v1/leads/upload"), d), Some(d));
        let mut waiting = req(Method::POST, "/v1/leads/score");
        waiting.headers_mut().insert("prefer", header::HeaderValue::from_static("wait=30"));
        assert_eq!(deadline_for(&waiting, d), Some(d + PREFER_WAIT_MAX));
    }
}
