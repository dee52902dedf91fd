//! Scoring runs: create one (`POST /v1/leads/score`, [`create`]), follow it ([`get_run`], [`events`]),
//! control it ([`control`]), page its jobs ([`jobs`]) and its results or export them ([`results`]).

pub mod control;
pub mod create;
pub mod events;
pub mod jobs;
pub mod results;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use leadscore_store::{RunStatusView, RunTallies};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::extract::{ApiQuery, PageParams, Workspace};
use crate::problem::{ApiError, Problem};

/// The routes of runs and results.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create::score_leads))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(events::run_events))
        .routes(routes!(control::cancel_run))
        .routes(routes!(control::pause_run))
        .routes(routes!(control::resume_run))
        .routes(routes!(control::retry_run))
        .routes(routes!(results::list_results))
        .routes(routes!(results::export_results))
        .routes(routes!(results::list_current))
        .routes(routes!(results::export_current))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobCountsBody {
    pub total: i64,
    pub queued: i64,
    pub running: i64,
    pub retrying: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResultCountsBody {
    pub hybrid: i64,
    pub rules_only: i64,
}

/// Tokens and cost the AI provider billed so far (every call: also invalid replies, failed attempts and results
/// since replaced or deleted), and the estimate made when the run was created.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: f64,
    /// Expected cost of the whole run at the configured prices; 0 with the AI layer off.
    pub estimated_cost_usd: Option<f64>,
}

/// A run's status.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "019abc12-9999-7def-8901-23456789abcd", "offer_id": "019abc12-3456-7def-8901-23456789abcd",
    "status": "running",
    "job_counts": {"total": 16, "queued": 4, "running": 2, "retrying": 0, "succeeded": 10, "failed": 0, "cancelled": 0},
    "result_counts": {"hybrid": 0, "rules_only": 10},
    "usage": {"prompt_tokens": 4120, "completion_tokens": 410, "cost_usd": 0.0023, "estimated_cost_usd": 0.0037},
    "stop_reason": null, "blocked_reason": null, "max_cost_usd": null, "created_at": "2026-11-25T10:40:00Z", "started_at": "2026-11-25T10:40:00Z",
    "finished_at": null, "eta_seconds": 1
}))]
pub struct RunResponse {
    pub id: String,
    pub offer_id: String,
    #[schema(value_type = crate::doc::RunStatusName)]
    pub status: String,
    pub job_counts: JobCountsBody,
    pub result_counts: ResultCountsBody,
    pub usage: Usage,
    /// Why the run is `paused` or `blocked`: requested, cost_cap (resuming lifts the cap) or provider_rejected;
    /// null in every other status.
    #[schema(example = json!(null))]
    pub stop_reason: Option<String>,
    /// The message behind `stop_reason`: the provider's words (bad key, unknown model) or the cap reached.
    pub blocked_reason: Option<String>,
    pub max_cost_usd: Option<f64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Seconds until the remaining jobs are done at the rate so far; null before there is a rate.
    pub eta_seconds: Option<i64>,
}

/// A run as the API shows it: its record and tallies, and the time left at the rate so far.
pub fn run_response(view: RunStatusView) -> RunResponse {
    let RunStatusView { run, tallies: RunTallies { jobs, results, usage } } = view;
    let done = jobs.succeeded + jobs.failed + jobs.cancelled;
    let left = jobs.total - done;
    let eta_seconds = match (run.started_at, run.finished_at) {
        (Some(start), None) if done > 0 && left > 0 => {
            let elapsed = (OffsetDateTime::now_utc() - start).as_seconds_f64();
            Some((elapsed / done as f64 * left as f64).ceil() as i64)
        }
        (_, Some(_)) => Some(0),
        _ => None,
    };
    RunResponse {
        id: run.id,
        offer_id: run.offer_id,
        status: run.status.as_str().to_owned(),
        job_counts: JobCountsBody {
            total: jobs.total,
            queued: jobs.queued,
            running: jobs.running,
            retrying: jobs.retrying,
            succeeded: jobs.succeeded,
            failed: jobs.failed,
            cancelled: jobs.cancelled,
        },
        result_counts: ResultCountsBody { hybrid: results.hybrid, rules_only: results.rules_only },
        usage: Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost_usd: usage.cost_usd,
            estimated_cost_usd: run.estimated_cost_usd,
        },
        stop_reason: run.stop_reason.map(|r| r.as_str().to_owned()),
        blocked_reason: run.blocked_reason,
        max_cost_usd: run.max_cost_usd,
        created_at: run.created_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
        eta_seconds,
    }
}

pub async fn load_run(state: &AppState, ws: &str, id: &str) -> Result<RunResponse, ApiError> {
    let view = state.store.run_status(ws, id).await?.ok_or_else(|| ApiError::not_found("run", id))?;
    Ok(run_response(view))
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(
        ("id" = String, Path, description = "Run id"),
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of the status you have: a `304` with no body if it is unchanged"),
    ),
    responses(
        (status = 200, description = "The run's status; `ETag` for cheap polling", body = RunResponse,
            headers(("ETag" = String, description = "Changes whenever the status does; send it back as `If-None-Match`"))),
        (status = 304, description = "Unchanged since `If-None-Match`",
            headers(("ETag" = String, description = "The unchanged status's tag"))),
        (status = 404, description = "No such run in this workspace", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_run(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = load_run(&state, &ws, &id).await?;
    let body = serde_json::to_vec(&run).map_err(|e| ApiError::Internal(e.to_string()))?;
    let etag = format!("\"{:016x}\"", fnv1a(&body));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(([(header::CONTENT_TYPE, "application/json".to_owned()), (header::ETAG, etag)], body).into_response())
}

/// A tiny stable hash for ETags (not security-relevant).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// One page of runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    pub items: Vec<RunResponse>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(PageParams),
    responses(
        (status = 200, description = "Runs, oldest first", body = RunPage),
        (status = 400, description = "Bad cursor or limit (the parameter is named)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_runs(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<axum::Json<RunPage>, ApiError> {
    let page = state.store.list_runs(&ws, &params.page()?).await?;
    Ok(axum::Json(RunPage {
        items: page.items.into_iter().map(run_response).collect(),
        next_cursor: page.next_cursor,
    }))
}
