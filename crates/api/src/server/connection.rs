//! One connection: hyper's HTTP/1 server with a header read timeout, a service that tracks requests and
//! wraps their bodies, and the three ways it ends early (shed, keep-alive idle, shutdown).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use super::ServerLimits;
use super::body::{IdleBody, TrackedBody};
use super::conns::{ConnState, Registered};
use super::stall::WriteStall;
use crate::problem::PROBLEM_JSON;

/// Serves `stream` until the client leaves, a timeout closes it, it is shed, or shutdown drains it.
pub async fn run(
    stream: TcpStream,
    app: Router,
    limits: ServerLimits,
    registered: Registered,
    mut stopping: watch::Receiver<bool>,
) {
    let state = registered.state.clone();
    let service = ConnService { app, state: state.clone(), body_idle: limits.body_idle_timeout };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header timer runs whenever hyper waits for a request head: from accept, and again after each
    // response, so it also bounds a keep-alive connection's idle time.
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let io = TokioIo::new(WriteStall::new(stream, limits.body_idle_timeout));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let keep_alive_check = state
            .keep_alive_deadline(limits.keep_alive_idle)
            .unwrap_or_else(|| Instant::now() + limits.keep_alive_idle);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopping.wait_for(|s| *s), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = state.shed.notified() => {
                if state.is_idle() {
                    tracing::debug!("idle connection shed to make room");
                    return;
                }
                registered.keep();
            }
            () = tokio::time::sleep_until(keep_alive_check), if !draining => {
                if state.keep_alive_deadline(limits.keep_alive_idle).is_some_and(|d| d <= Instant::now()) {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The per-connection service: marks the request in flight until its response body is written, bounds the
/// request body's idle time, and answers 408 when that bound ended the request.
#[derive(Clone)]
struct ConnService {
    app: Router,
    state: Arc<ConnState>,
    body_idle: std::time::Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.state.begin_request();
        let timed_out = Arc::new(AtomicBool::new(false));
        let req = req.map(|b| axum::body::Body::new(IdleBody::new(b, self.body_idle, timed_out.clone())));
        let app = self.app.clone();
        let idle = self.body_idle;
        Box::pin(async move {
            let Ok(mut response) = app.oneshot(req).await;
            if timed_out.load(Ordering::Relaxed) {
                response = body_timeout_response(idle);
            }
            Ok(response.map(|b| TrackedBody::new(b, in_flight)))
        })
    }
}

/// 408: the request body stalled (whatever the handler made of the read error).
fn body_timeout_response(idle: std::time::Duration) -> axum::response::Response {
    let problem = serde_json::json!({
        "type": "https://leadscore.dev/problems/request-timeout",
        "title": "The request body stalled",
        "status": StatusCode::REQUEST_TIMEOUT.as_u16(),
        "detail": format!("no part of the request body arrived for {} s", idle.as_secs_f64()),
    });
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    (StatusCode::REQUEST_TIMEOUT, [(axum::http::header::CONTENT_TYPE, PROBLEM_JSON)], body).into_response()
}
