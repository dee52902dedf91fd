//! `GET /v1/runs/{id}/jobs`: a run's jobs with their attempts and last error.

use axum::extract::{Path, State};
use leadscore_core::JobStatus;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::extract::{ApiQuery, PageParams, Workspace};
use crate::problem::{ApiError, Problem};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobFilter {
    /// Only the jobs in this status.
    #[param(value_type = Option<crate::doc::JobStatusName>)]
    status: Option<String>,
    /// Items per page, 1 to 1000 (default 50).
    #[param(value_type = Option<i32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobResponse {
    pub lead_id: String,
    #[schema(value_type = crate::doc::JobStatusName)]
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    pub items: Vec<JobResponse>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/jobs", operation_id = "list_run_jobs", tag = "runs", params(("id" = String, Path, description = "Run id"), JobFilter),
    responses(
        (status = 200, description = "The run's jobs with attempts and last error", body = JobPage),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Bad filter (the parameter is named)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
    ApiQuery(f): ApiQuery<JobFilter>,
) -> Result<axum::Json<JobPage>, ApiError> {
    let status = match f.status.as_deref() {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_param("status", format!("must be one of {}", all.join(", ")))
        })?),
    };
    let page = PageParams::new(f.limit, f.cursor).page()?;
    state.store.get_run(&ws, &id).await?.ok_or_else(|| ApiError::not_found("run", &id))?;
    let jobs = state.store.list_jobs(&id, status, &page).await?;
    Ok(axum::Json(JobPage {
        items: jobs
            .items
            .into_iter()
            .map(|j| JobResponse {
                lead_id: j.lead_id,
                status: j.status.as_str().to_owned(),
                attempts: j.attempts,
                max_attempts: j.max_attempts,
                last_error: j.last_error,
            })
            .collect(),
        next_cursor: jobs.next_cursor,
    }))
}
