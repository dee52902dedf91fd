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
#[schema(example = json!({"status": "ready", "database": "ok", "backend": "sqlite"}))]
pub struct Readiness {
    pub status: &'static str,
    pub database: &'static str,
    pub backend: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready to serve: the database answers", body = Readiness),
    (status = 503, description = "Not ready; `detail` says why", body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Readiness>, ApiError> {
    state.store.ping().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let backend = match state.store.backend() {
        leadscore_store::Backend::Postgres => "postgres",
        leadscore_store::Backend::Sqlite => "sqlite",
    };
    Ok(axum::Json(Readiness { status: "ready", database: "ok", backend }))
}
