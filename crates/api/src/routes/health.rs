//! Liveness and readiness.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
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
    pub database: &'static str,
    pub backend: &'static str,
    /// `off` (no provider configured), `ok`, or `blocked: <reason>` while the circuit breaker is open (AI calls
    /// wait; `POST /v1/runs/{id}/resume` on a blocked run closes it).
    pub ai: String,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready to serve: the database answers", body = Readiness),
    (status = 503, description = "Not ready: the database, or the Redis holding the shared rate limiter, cannot be reached; `detail` says which", body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Readiness>, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("the database is unavailable: {e}")))?;
    let ai = match &state.ai {
        None => "off".to_owned(),
        Some(ai) => match ai.gate.blocked().await {
            Ok(None) => "ok".to_owned(),
            Ok(Some(b)) => format!("blocked: {}", b.reason),
            // The limiter fails closed: workers wait, and readiness says why.
            Err(e) => return Err(ApiError::Unavailable(format!("{e}; AI calls wait until it is back"))),
        },
    };
    let backend = match state.store.backend() {
        leadscore_store::Backend::Postgres => "postgres",
        leadscore_store::Backend::Sqlite => "sqlite",
    };
    Ok(axum::Json(Readiness { status: "ready", database: "ok", backend, ai }))
}
