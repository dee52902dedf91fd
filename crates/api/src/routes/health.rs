//! Liveness and readiness.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::guard::Auth;
use crate::problem::{ApiError, Problem};

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ready", "database": "ok", "backend": "sqlite", "ai": "ok"}))]
pub struct Readiness {
    pub status: &'static str,
    /// The rest is shown only to a request with a valid API key (or on a keyless server): `{"status":
    /// "ready"}` alone otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    /// `off` (no provider configured), `ok`, or `blocked: <reason>` while the circuit breaker is open (AI calls
    /// wait; `POST /v1/runs/{id}/resume` on a blocked run closes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ai: Option<String>,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Said without a key when the database or the rate limiter cannot be reached: what failed is detail.
const NOT_READY: &str = "not ready: the database or the AI rate limiter cannot be reached";

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses(
    (status = 200, description = "Ready to serve: the database answers. Without a valid API key (unless the server is keyless) only `status` is given", body = Readiness),
    (status = 503, description = "Not ready: the database, or the Redis holding the shared rate limiter, cannot be reached; `detail` says which to a request with a valid API key", body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<Readiness>, ApiError> {
    if let Err(e) = state.store.ping().await {
        // The key cannot be checked without the database: only a keyless server says more.
        let keyless = state.access.auth() == Auth::Keyless;
        tracing::warn!(error = %e, "not ready: the database is unavailable");
        return Err(ApiError::Unavailable(if keyless {
            format!("the database is unavailable: {e}")
        } else {
            NOT_READY.to_owned()
        }));
    }
    let detail = may_see_detail(&state, &headers).await;
    let ai = match &state.ai {
        None => "off".to_owned(),
        Some(ai) => match ai.gate.blocked().await {
            Ok(None) => "ok".to_owned(),
            Ok(Some(b)) => format!("blocked: {}", b.reason),
            // The limiter fails closed: workers wait, and readiness says why.
            Err(e) if detail => {
                return Err(ApiError::Unavailable(format!("{e}; AI calls wait until it is back")));
            }
            Err(_) => return Err(ApiError::Unavailable(NOT_READY.to_owned())),
        },
    };
    if !detail {
        return Ok(axum::Json(Readiness { status: "ready", database: None, backend: None, ai: None }));
    }
    let backend = match state.store.backend() {
        leadscore_store::Backend::Postgres => "postgres",
        leadscore_store::Backend::Sqlite => "sqlite",
    };
    Ok(axum::Json(Readiness { status: "ready", database: Some("ok"), backend: Some(backend), ai: Some(ai) }))
}

/// Whether this request may see what readiness depends on: a valid key, or no key on a keyless server.
async fn may_see_detail(state: &AppState, headers: &HeaderMap) -> bool {
    let key = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match key {
        Some(key) => matches!(state.store.workspace_for_key(key).await, Ok(Some(_))),
        None => state.access.allows_no_key(&state.store).await.unwrap_or(false),
    }
}
