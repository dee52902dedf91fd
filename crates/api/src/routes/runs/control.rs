//! Controls: cancel, pause, resume and retry a run. Each is an event of the core's table of run moves; a move
//! the table refuses in the run's status is a 409.

use axum::extract::{Path, State};
use leadscore_core::RunStatus;

use super::{RunResponse, load_run};
use crate::AppState;
use crate::extract::Workspace;
use crate::problem::{ApiError, Problem};

async fn control(
    state: &AppState,
    ws: &str,
    id: &str,
    action: leadscore_store::Control,
) -> Result<axum::Json<RunResponse>, ApiError> {
    match state.store.control_run(ws, id, action).await? {
        None => Err(ApiError::not_found("run", id)),
        Some(leadscore_store::ControlOutcome::Conflict(why)) => Err(ApiError::Conflict(why)),
        Some(leadscore_store::ControlOutcome::Applied(_)) => Ok(axum::Json(load_run(state, ws, id).await?)),
    }
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "Jobs not started are cancelled; running ones finish (`cancelling` -> `cancelled`)", body = RunResponse),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already finished or cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_run(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
) -> Result<axum::Json<RunResponse>, ApiError> {
    control(&state, &ws, &id, leadscore_store::Control::Cancel).await
}

#[utoipa::path(post, path = "/v1/runs/{id}/pause", tag = "runs", params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "No more jobs of this run are claimed until it is resumed", body = RunResponse),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not queued or running", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn pause_run(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
) -> Result<axum::Json<RunResponse>, ApiError> {
    control(&state, &ws, &id, leadscore_store::Control::Pause).await
}

#[utoipa::path(post, path = "/v1/runs/{id}/resume", tag = "runs", params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "Claiming again (also lifts `blocked`)", body = RunResponse),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not paused or blocked", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn resume_run(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
) -> Result<axum::Json<RunResponse>, ApiError> {
    if let Some(ai) = &state.ai
        && let Some(run) = state.store.get_run(&ws, &id).await?
        && run.status == RunStatus::Blocked
    {
        // The operator says the provider problem is fixed: close the breaker for every worker.
        ai.gate.reset().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    }
    control(&state, &ws, &id, leadscore_store::Control::Resume).await
}

#[utoipa::path(post, path = "/v1/runs/{id}/retry", tag = "runs", params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "Failed jobs and `rules_only` results are queued again; new results replace old ones with `version + 1`", body = RunResponse),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run is cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry_run(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
) -> Result<axum::Json<RunResponse>, ApiError> {
    control(&state, &ws, &id, leadscore_store::Control::Retry).await
}
