//! Scoring runs: create one (`POST /v1/leads/score`), follow it, page its jobs and results, export them.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use leadscore_core::results_csv::ResultsCsv;
use leadscore_core::{Intent, RuleReason, ScoreBasis};
use leadscore_store::{Page, ResultFilter, ResultRecord, RunRecord, RunTallies, Selection, StoreError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::extract::{ApiJson, ApiQuery, PageParams, Workspace};
use crate::problem::{ApiError, Problem};

/// What to score.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"offer_id": "019abc12-3456-7def-8901-23456789abcd", "upload_id": "019abc12-0000-7def-8901-23456789abcd"}))]
pub struct ScoreRequest {
    pub offer_id: String,
    /// Score the leads of this upload...
    pub upload_id: Option<String>,
    /// ... or these leads ...
    pub lead_ids: Option<Vec<String>>,
    /// ... or every lead with no result for this offer and no job of it waiting or running.
    pub all_unscored: Option<bool>,
    /// Pause the run when its AI cost reaches this (USD).
    pub max_cost_usd: Option<f64>,
}

impl ScoreRequest {
    fn selection(&self) -> Result<Selection, ApiError> {
        let chosen = [self.upload_id.is_some(), self.lead_ids.is_some(), self.all_unscored == Some(true)];
        if chosen.iter().filter(|c| **c).count() != 1 {
            return Err(ApiError::invalid_param(
                "upload_id",
                "give exactly one of upload_id, lead_ids or all_unscored: true",
            ));
        }
        if let Some(max) = self.max_cost_usd
            && !(max.is_finite() && max > 0.0)
        {
            return Err(ApiError::invalid_param("max_cost_usd", "must be a positive number"));
        }
        Ok(match (&self.upload_id, &self.lead_ids) {
            (Some(u), _) => Selection::Upload(u.clone()),
            (_, Some(ids)) if ids.is_empty() => {
                return Err(ApiError::invalid_param("lead_ids", "must not be empty"));
            }
            (_, Some(ids)) => Selection::Leads(ids.clone()),
            _ => Selection::AllUnscored,
        })
    }
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
    "blocked_reason": null, "max_cost_usd": null, "created_at": "2026-11-25T10:40:00Z", "started_at": "2026-11-25T10:40:00Z",
    "finished_at": null, "eta_seconds": 1
}))]
pub struct RunResponse {
    pub id: String,
    pub offer_id: String,
    /// queued, running, paused, blocked, cancelling, cancelled or completed.
    pub status: String,
    pub job_counts: JobCountsBody,
    pub result_counts: ResultCountsBody,
    pub usage: Usage,
    /// Why the run is `blocked` (the provider's message: bad key, unknown model) or `paused` by its cost cap.
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

fn run_response(run: RunRecord, tallies: RunTallies) -> RunResponse {
    let RunTallies { jobs, results, usage } = tallies;
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
        status: run.status,
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
        blocked_reason: run.blocked_reason,
        max_cost_usd: run.max_cost_usd,
        created_at: run.created_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
        eta_seconds,
    }
}

pub async fn load_run(state: &AppState, ws: &str, id: &str) -> Result<RunResponse, ApiError> {
    let run = state.store.get_run(ws, id).await?.ok_or_else(|| ApiError::not_found("run", id))?;
    let tallies = state.store.run_tallies(&run.id).await?;
    Ok(run_response(run, tallies))
}

/// Creates a run, mapping the store's selection errors to 404 / 422.
pub async fn create_run(
    state: &AppState,
    ws: &str,
    offer_id: &str,
    selection: &Selection,
    max_cost: Option<f64>,
) -> Result<RunRecord, ApiError> {
    match state.store.create_run(ws, offer_id, selection, max_cost).await {
        Ok(mut run) => {
            let estimate = state
                .ai
                .as_ref()
                .map_or(0.0, |ai| leadscore_llm::estimated_cost(&ai.config, &run.offer, run.total));
            state.store.set_estimated_cost(&run.id, estimate).await?;
            run.estimated_cost_usd = Some(estimate);
            Ok(run)
        }
        Err(StoreError::OfferNotFound) => Err(ApiError::not_found("offer", offer_id)),
        Err(StoreError::EmptySelection) => Err(ApiError::Invalid {
            detail: "the selection holds no lead to score".into(),
            errors: vec![crate::problem::ProblemItem::field(
                match selection {
                    Selection::Upload(_) => "upload_id",
                    Selection::Leads(_) => "lead_ids",
                    Selection::AllUnscored => "all_unscored",
                },
                "no lead to score (unknown ids, or everything is already scored or queued)",
            )],
        }),
        Err(e) => Err(e.into()),
    }
}

/// A finished run with its results, answered when `Prefer: wait=N` was honoured.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunWithResults {
    pub run: RunResponse,
    /// The first 1,000 results; page the rest at `/v1/runs/{id}/results`.
    pub results: Vec<ResultResponse>,
}

/// Longest `Prefer: wait` honoured, in seconds.
const MAX_WAIT_SECS: u64 = 60;

/// `wait=N` of an RFC 7240 `Prefer` header, capped.
fn prefer_wait(headers: &HeaderMap) -> Option<u64> {
    let prefer =
        headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    prefer
        .split([',', ';'])
        .find_map(|p| p.trim().strip_prefix("wait=")?.trim().parse::<u64>().ok())
        .map(|n| n.min(MAX_WAIT_SECS))
}

#[utoipa::path(post, path = "/v1/leads/score", tag = "runs", request_body = ScoreRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Retrying with the same key (per workspace, kept 24 h) returns the same run instead of a new one; the same key with another body is a 422"),
        ("Prefer" = Option<String>, Header, description = "`wait=N` (RFC 7240): wait up to N seconds (at most 60) and answer 200 with the results if the run finished"),
    ),
    responses(
        (status = 202, description = "The run and all its jobs exist; poll `Location`", body = RunResponse,
            headers(("Location" = String, description = "URL of the run"))),
        (status = 200, description = "`Prefer: wait` honoured: the finished run and its first 1,000 results", body = RunWithResults),
        (status = 404, description = "No such offer", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad selection, no lead to score, or an Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn score_leads(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ScoreRequest>,
) -> Result<Response, ApiError> {
    const ROUTE: &str = "POST /v1/leads/score";
    let selection = body.selection()?;
    let key = headers.get("idempotency-key").map(|k| k.to_str().unwrap_or("").trim().to_owned());
    if key.as_deref().is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err(ApiError::invalid_param("Idempotency-Key", "must be 1 to 255 visible ASCII characters"));
    }
    let body_hash =
        format!("{:016x}", fnv1a(&serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))?));
    let replayed = match &key {
        None => None,
        Some(k) => match state.store.check_idempotency_key(&ws, ROUTE, k, &body_hash).await? {
            leadscore_store::Idempotent::Replay(run_id) => Some(run_id),
            leadscore_store::Idempotent::Mismatch => {
                return Err(ApiError::invalid_param(
                    "Idempotency-Key",
                    "was already used with a different request body",
                ));
            }
            leadscore_store::Idempotent::New => None,
        },
    };
    let run_id = match replayed {
        Some(run_id) => run_id,
        None => {
            let run = create_run(&state, &ws, &body.offer_id, &selection, body.max_cost_usd).await?;
            if let Some(k) = &key {
                state.store.remember_idempotency_key(&ws, ROUTE, k, &body_hash, &run.id).await?;
            }
            run.id
        }
    };
    let location = format!("/v1/runs/{run_id}");
    if let Some(wait) = prefer_wait(&headers) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
        while tokio::time::Instant::now() < deadline {
            let run = load_run(&state, &ws, &run_id).await?;
            if run.finished_at.is_some() {
                let page = Page { limit: Page::MAX_LIMIT, after: None };
                let results =
                    state.store.list_run_results(&ws, &run_id, &ResultFilter::default(), &page).await?;
                let body =
                    RunWithResults { run, results: results.items.into_iter().map(Into::into).collect() };
                let mut response = (StatusCode::OK, axum::Json(body)).into_response();
                response.headers_mut().extend(crate::location(&location));
                set_header(
                    &mut response,
                    header::HeaderName::from_static("preference-applied"),
                    &format!("wait={wait}"),
                );
                return Ok(response);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
    let run = load_run(&state, &ws, &run_id).await?;
    let mut response = (StatusCode::ACCEPTED, axum::Json(run)).into_response();
    response.headers_mut().extend(crate::location(&location));
    Ok(response)
}

fn set_header(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run's status; `ETag` for cheap polling", body = RunResponse),
        (status = 304, description = "Unchanged since `If-None-Match`"),
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
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// One page of runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    pub items: Vec<RunResponse>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(PageParams),
    responses((status = 200, description = "Runs, oldest first", body = RunPage)))]
pub async fn list_runs(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<axum::Json<RunPage>, ApiError> {
    let page = state.store.list_runs(&ws, &params.page()?).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for run in page.items {
        let tallies = state.store.run_tallies(&run.id).await?;
        items.push(run_response(run, tallies));
    }
    Ok(axum::Json(RunPage { items, next_cursor: page.next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobFilter {
    /// queued, running, retrying, succeeded, failed or cancelled.
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobResponse {
    pub lead_id: String,
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

const JOB_STATUSES: [&str; 6] = ["queued", "running", "retrying", "succeeded", "failed", "cancelled"];

#[utoipa::path(get, path = "/v1/runs/{id}/jobs", tag = "runs", params(("id" = String, Path, description = "Run id"), JobFilter),
    responses(
        (status = 200, description = "The run's jobs with attempts and last error", body = JobPage),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad filter", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
    ApiQuery(f): ApiQuery<JobFilter>,
) -> Result<axum::Json<JobPage>, ApiError> {
    if let Some(s) = &f.status
        && !JOB_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::invalid_param("status", format!("must be one of {}", JOB_STATUSES.join(", "))));
    }
    let page = PageParams::new(f.limit, f.cursor).page()?;
    state.store.get_run(&ws, &id).await?.ok_or_else(|| ApiError::not_found("run", &id))?;
    let jobs = state.store.list_jobs(&id, f.status.as_deref(), &page).await?;
    Ok(axum::Json(JobPage {
        items: jobs
            .items
            .into_iter()
            .map(|j| JobResponse {
                lead_id: j.lead_id,
                status: j.status,
                attempts: j.attempts,
                max_attempts: j.max_attempts,
                last_error: j.last_error,
            })
            .collect(),
        next_cursor: jobs.next_cursor,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultQuery {
    /// High, Medium or Low.
    intent: Option<String>,
    /// Only results scoring at least this (0-100).
    min_score: Option<String>,
    /// hybrid or rules_only.
    score_basis: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl ResultQuery {
    fn filter(&self) -> Result<ResultFilter, ApiError> {
        let intent = match &self.intent {
            None => None,
            Some(i) => Some(
                Intent::parse(i)
                    .ok_or_else(|| ApiError::invalid_param("intent", "must be High, Medium or Low"))?,
            ),
        };
        let min_score = match &self.min_score {
            None => None,
            Some(m) => Some(
                m.parse::<u8>()
                    .ok()
                    .filter(|m| *m <= 100)
                    .ok_or_else(|| ApiError::invalid_param("min_score", "must be 0 to 100"))?,
            ),
        };
        let score_basis = match &self.score_basis {
            None => None,
            Some(b) => Some(
                ScoreBasis::parse(b)
                    .ok_or_else(|| ApiError::invalid_param("score_basis", "must be hybrid or rules_only"))?,
            ),
        };
        Ok(ResultFilter { intent, min_score, score_basis })
    }
}

/// A scored lead.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultResponse {
    pub lead_id: String,
    pub external_id: Option<String>,
    pub name: String,
    pub role: String,
    pub company: String,
    pub industry: String,
    pub location: String,
    /// High >= 70, Medium >= 40, else Low.
    pub intent: String,
    /// 0-100.
    pub score: u8,
    pub rule_score: u8,
    #[schema(value_type = Vec<Object>)]
    pub rule_reasons: Vec<RuleReason>,
    pub ai_intent: Option<String>,
    pub ai_score: Option<u8>,
    pub ai_reasoning: Option<String>,
    /// ok, cached, skipped or failed.
    pub ai_status: String,
    /// hybrid or rules_only.
    pub score_basis: String,
    pub flags: Vec<String>,
    /// Rule reasons and the AI's reason in one line.
    pub reasoning: String,
    pub model: Option<String>,
    pub prompt_version: Option<String>,
    pub version: i64,
    pub run_id: String,
    pub offer_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub scored_at: OffsetDateTime,
}

impl From<ResultRecord> for ResultResponse {
    fn from(r: ResultRecord) -> Self {
        let s = r.scoring;
        let l = r.lead.lead;
        ResultResponse {
            reasoning: s.reasoning(),
            lead_id: r.lead.id,
            external_id: l.external_id,
            name: l.name,
            role: l.role,
            company: l.company,
            industry: l.industry,
            location: l.location,
            intent: s.intent.as_str().to_owned(),
            score: s.final_score,
            rule_score: s.rule.score,
            rule_reasons: s.rule.reasons,
            ai_intent: s.ai_intent.map(|i| i.as_str().to_owned()),
            ai_score: s.ai_score,
            ai_reasoning: s.ai_reasoning,
            ai_status: s.ai_status.as_str().to_owned(),
            score_basis: s.score_basis.as_str().to_owned(),
            flags: s.flags.iter().map(|f| f.as_str().to_owned()).collect(),
            model: r.model,
            prompt_version: r.prompt_version,
            version: r.version,
            run_id: r.run_id,
            offer_id: r.offer_id,
            scored_at: r.scored_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResultPage {
    pub items: Vec<ResultResponse>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/results", tag = "runs", params(("id" = String, Path, description = "Run id"), ResultQuery),
    responses(
        (status = 200, description = "The run's results in lead order", body = ResultPage),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad filter", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_results(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ResultQuery>,
) -> Result<axum::Json<ResultPage>, ApiError> {
    let filter = q.filter()?;
    let page = PageParams::new(q.limit.clone(), q.cursor.clone()).page()?;
    state.store.get_run(&ws, &id).await?.ok_or_else(|| ApiError::not_found("run", &id))?;
    let results = state.store.list_run_results(&ws, &id, &filter, &page).await?;
    Ok(axum::Json(ResultPage {
        items: results.items.into_iter().map(Into::into).collect(),
        next_cursor: results.next_cursor,
    }))
}

/// Rows fetched per database round trip while exporting.
const EXPORT_PAGE: u32 = 1000;

#[utoipa::path(get, path = "/v1/runs/{id}/results.csv", tag = "runs", params(("id" = String, Path, description = "Run id"), ResultQuery),
    responses(
        (status = 200, description = "The results CSV (layout in the README), streamed", content_type = "text/csv", body = String),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_results(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ResultQuery>,
) -> Result<Response, ApiError> {
    let filter = q.filter()?;
    state.store.get_run(&ws, &id).await?.ok_or_else(|| ApiError::not_found("run", &id))?;
    export(state, ws, Source::Run(id.clone()), filter, format!("leadscore-{id}")).await
}

/// Pages through the results, one CSV chunk per page: memory stays flat however large the run.
/// Which results an export or listing reads.
#[derive(Debug, Clone)]
enum Source {
    Run(String),
    /// The current result per (lead, offer), optionally of one offer.
    Current(Option<String>),
}

impl Source {
    async fn page(
        &self,
        state: &AppState,
        ws: &str,
        filter: &ResultFilter,
        page: &Page,
    ) -> leadscore_store::Result<leadscore_store::Paged<ResultRecord>> {
        match self {
            Source::Run(run_id) => state.store.list_run_results(ws, run_id, filter, page).await,
            Source::Current(offer) => {
                state.store.list_current_results(ws, offer.as_deref(), filter, page).await
            }
        }
    }
}

/// Streams a results CSV: the header, then one chunk per page of results.
async fn export(
    state: AppState,
    ws: String,
    source: Source,
    filter: ResultFilter,
    name: String,
) -> Result<Response, ApiError> {
    let first = source.page(&state, &ws, &filter, &Page { limit: 1, after: None }).await?;
    // The extra columns of the upload the leads came from (a run over one upload, the common case).
    let extra = match first.items.first() {
        Some(r) => {
            state.store.get_upload(&ws, &r.lead.upload_id).await?.map(|u| u.extra_columns).unwrap_or_default()
        }
        None => Vec::new(),
    };
    let stream = export_stream(state, ws, source, filter, extra);
    let disposition = format!("attachment; filename=\"{name}.csv\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

fn export_stream(
    state: AppState,
    ws: String,
    source: Source,
    filter: ResultFilter,
    extra: Vec<String>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some((None::<String>, true)), move |cursor| {
        let (state, ws, source, filter, extra) =
            (state.clone(), ws.clone(), source.clone(), filter.clone(), extra.clone());
        async move {
            let (after, first) = cursor?;
            let page = source.page(&state, &ws, &filter, &Page { limit: EXPORT_PAGE, after }).await;
            let page = match page {
                Ok(p) => p,
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), None)),
            };
            let mut buf = Vec::with_capacity(256 * page.items.len() + 512);
            let chunk = (|| -> std::io::Result<()> {
                let mut w = if first {
                    ResultsCsv::new(&mut buf, extra.clone())?
                } else {
                    ResultsCsv::without_header(&mut buf, extra.clone())
                };
                for r in &page.items {
                    r.write_csv(&mut w)?;
                }
                Ok(())
            })();
            let next = page.next_cursor.map(|c| (Some(c), false));
            Some((chunk.map(|()| bytes::Bytes::from(buf)), next))
        }
    })
}

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
        && run.status == "blocked"
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

/// How often an events stream re-reads the run when no notification arrives (a lost NOTIFY costs this much).
const EVENTS_FALLBACK: std::time::Duration = std::time::Duration::from_secs(2);

#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "Server-Sent Events: `status` events carrying the run (as `GET /v1/runs/{id}`) \
            whenever it changes, the last one when it finishes; then the stream ends", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn run_events(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let first = load_run(&state, &ws, &id).await?;
    let changes = state.store.subscribe_progress();
    let stream = futures_util::stream::unfold(
        (Some(first), changes, None::<Vec<u8>>, false),
        move |(pending, mut changes, last, done)| {
            let (state, ws, id) = (state.clone(), ws.clone(), id.clone());
            async move {
                if done {
                    return None;
                }
                let mut next = pending;
                while next.is_none() {
                    // Wait for a change of this run (or the fallback tick), then re-read it.
                    let woke = tokio::time::timeout(EVENTS_FALLBACK, async {
                        loop {
                            match changes.recv().await {
                                Ok(run) if run == id => return,
                                Ok(_) => {}
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                    std::future::pending().await
                                }
                            }
                        }
                    })
                    .await;
                    let _ = woke;
                    match load_run(&state, &ws, &id).await {
                        Ok(run) => {
                            let body = serde_json::to_vec(&run).unwrap_or_default();
                            if last.as_ref() != Some(&body) {
                                next = Some(run);
                            }
                        }
                        Err(e) => {
                            let event = Event::default().event("error").data(e.to_string());
                            return Some((
                                Ok::<_, std::convert::Infallible>(event),
                                (None, changes, last, true),
                            ));
                        }
                    }
                }
                let run = next?;
                let body = serde_json::to_vec(&run).unwrap_or_default();
                let finished = run.finished_at.is_some();
                let event = Event::default().event("status").data(String::from_utf8_lossy(&body));
                Some((Ok(event), (None, changes, Some(body), finished)))
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CurrentQuery {
    /// Only results for this offer.
    offer_id: Option<String>,
    /// High, Medium or Low.
    intent: Option<String>,
    /// Only results scoring at least this (0-100).
    min_score: Option<String>,
    /// hybrid or rules_only.
    score_basis: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl CurrentQuery {
    fn split(self) -> (Option<String>, ResultQuery) {
        let q = ResultQuery {
            intent: self.intent,
            min_score: self.min_score,
            score_basis: self.score_basis,
            limit: self.limit,
            cursor: self.cursor,
        };
        (self.offer_id, q)
    }
}

#[utoipa::path(get, path = "/v1/results", tag = "runs", params(CurrentQuery),
    responses(
        (status = 200, description = "The current result per (lead, offer): the one from the most recently created run", body = ResultPage),
        (status = 422, description = "Bad filter or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_current(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiQuery(q): ApiQuery<CurrentQuery>,
) -> Result<axum::Json<ResultPage>, ApiError> {
    let (offer, q) = q.split();
    let filter = q.filter()?;
    let page = PageParams::new(q.limit, q.cursor).page()?;
    if page.after.as_deref().is_some_and(|c| !c.contains('~')) {
        return Err(ApiError::invalid_param("cursor", "not a cursor of this list"));
    }
    let results = Source::Current(offer).page(&state, &ws, &filter, &page).await?;
    Ok(axum::Json(ResultPage {
        items: results.items.into_iter().map(Into::into).collect(),
        next_cursor: results.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/results.csv", tag = "runs", params(CurrentQuery),
    responses((status = 200, description = "The current results as the results CSV, streamed", content_type = "text/csv", body = String)))]
pub async fn export_current(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiQuery(q): ApiQuery<CurrentQuery>,
) -> Result<Response, ApiError> {
    let (offer, q) = q.split();
    let filter = q.filter()?;
    export(state, ws, Source::Current(offer), filter, "leadscore-results".to_owned()).await
}
