//! Results: a run's, or the current one per (lead, offer); as JSON pages or a streamed CSV. Every listing and
//! export reads through the store's one pager ([`Store::list_results`](leadscore_store::Store::list_results)).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use leadscore_core::results_csv::ResultsCsv;
use leadscore_core::{Intent, RuleReason, ScoreBasis};
use leadscore_store::{ResultFilter, ResultRecord, ResultScope};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::extract::{ApiQuery, PageParams, Workspace};
use crate::problem::{ApiError, Problem};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultQuery {
    /// Only results of this intent.
    #[param(value_type = Option<crate::doc::IntentName>)]
    intent: Option<String>,
    /// Only results scoring at least this.
    #[param(value_type = Option<i32>, minimum = 0, maximum = 100)]
    min_score: Option<String>,
    /// Only results scored this way.
    #[param(value_type = Option<crate::doc::ScoreBasisName>)]
    score_basis: Option<String>,
    /// Items per page, 1 to 1000 (default 50).
    #[param(value_type = Option<i32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    cursor: Option<String>,
    /// CSV exports only (documented on them): which source columns to write.
    #[param(ignore)]
    include: Option<String>,
}

impl ResultQuery {
    fn filter(&self) -> Result<ResultFilter, ApiError> {
        let intent = match &self.intent {
            None => None,
            Some(i) => Some(
                Intent::parse(i)
                    .ok_or_else(|| ApiError::bad_param("intent", "must be High, Medium or Low"))?,
            ),
        };
        let min_score = match &self.min_score {
            None => None,
            Some(m) => Some(
                m.parse::<u8>()
                    .ok()
                    .filter(|m| *m <= 100)
                    .ok_or_else(|| ApiError::bad_param("min_score", "must be 0 to 100"))?,
            ),
        };
        let score_basis = match &self.score_basis {
            None => None,
            Some(b) => Some(
                ScoreBasis::parse(b)
                    .ok_or_else(|| ApiError::bad_param("score_basis", "must be hybrid or rules_only"))?,
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
    // A doc comment here would make utoipa wrap the enum's reference in an `allOf` with `type: object`.
    // High >= 70, Medium >= 40, else Low.
    #[schema(value_type = crate::doc::IntentName)]
    pub intent: String,
    /// 0-100.
    pub score: u8,
    pub rule_score: u8,
    #[schema(value_type = Vec<crate::doc::RuleReasonDoc>)]
    pub rule_reasons: Vec<RuleReason>,
    #[schema(value_type = Option<crate::doc::IntentName>)]
    pub ai_intent: Option<String>,
    pub ai_score: Option<u8>,
    pub ai_reasoning: Option<String>,
    #[schema(value_type = crate::doc::AiStatusName)]
    pub ai_status: String,
    #[schema(value_type = crate::doc::ScoreBasisName)]
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

#[utoipa::path(get, path = "/v1/runs/{id}/results", operation_id = "list_run_results", tag = "runs", params(("id" = String, Path, description = "Run id"), ResultQuery),
    responses(
        (status = 200, description = "The run's results in lead order", body = ResultPage),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Bad filter (the parameter is named)", body = Problem, content_type = "application/problem+json"),
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
    let results = state.store.list_results(&ws, &ResultScope::Run(id.clone()), &filter, &page).await?;
    Ok(axum::Json(ResultPage {
        items: results.items.into_iter().map(Into::into).collect(),
        next_cursor: results.next_cursor,
    }))
}

/// Rows fetched per database round trip while exporting.
const EXPORT_PAGE: u32 = 1000;

/// The parameters of the CSV exports: the listings' filters without paging (an export is every row).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documentation only: the exports read `ResultQuery` / `CurrentQuery` and ignore paging.
pub struct ExportFilter {
    /// The leads' own columns to write after the result columns, comma-separated, under their headers (e.g.
    /// `Email,Record ID`: what a CRM import matches on); `all_source_columns` (the default) writes every column
    /// of every upload the results come from; empty writes none.
    #[param(max_length = 2048, example = "Email,Record ID")] // MAX_INCLUDE_CHARS
    include: Option<String>,
    /// Only results of this intent.
    #[param(value_type = Option<crate::doc::IntentName>)]
    intent: Option<String>,
    /// Only results scoring at least this.
    #[param(value_type = Option<i32>, minimum = 0, maximum = 100)]
    min_score: Option<String>,
    /// Only results scored this way.
    #[param(value_type = Option<crate::doc::ScoreBasisName>)]
    score_basis: Option<String>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/results.csv", operation_id = "export_run_results", tag = "runs", params(("id" = String, Path, description = "Run id"), ExportFilter),
    responses(
        (status = 200, description = "The results CSV (layout in the README), streamed", content_type = "text/csv", body = String),
        (status = 400, description = "Bad filter (the parameter is named)", body = Problem, content_type = "application/problem+json"),
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
    let include = Include::parse(q.include.as_deref())?;
    export(state, ws, ResultScope::Run(id.clone()), filter, include, format!("leadscore-{id}")).await
}

/// Which of the leads' own columns an export writes.
#[derive(Debug, PartialEq, Eq)]
enum Include {
    /// Every column of every upload the results come from.
    AllSourceColumns,
    /// These, in this order.
    Columns(Vec<String>),
}

/// Longest `include` accepted, in characters (the document's `maxLength`).
const MAX_INCLUDE_CHARS: usize = 2048;

/// Most columns `include` may list.
const MAX_INCLUDE: usize = 200;

impl Include {
    fn parse(raw: Option<&str>) -> Result<Include, ApiError> {
        let Some(raw) = raw else { return Ok(Include::AllSourceColumns) };
        if raw.chars().count() > MAX_INCLUDE_CHARS {
            return Err(ApiError::bad_param(
                "include",
                format!("longer than {MAX_INCLUDE_CHARS} characters"),
            ));
        }
        if raw.trim() == "all_source_columns" {
            return Ok(Include::AllSourceColumns);
        }
        let mut columns: Vec<String> = Vec::new();
        for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !columns.iter().any(|c| c == name) {
                columns.push(name.to_owned());
            }
        }
        if columns.len() > MAX_INCLUDE {
            return Err(ApiError::bad_param("include", format!("at most {MAX_INCLUDE} columns")));
        }
        Ok(Include::Columns(columns))
    }
}

/// Streams a results CSV: the header, then one chunk per page of results (memory stays flat however many).
async fn export(
    state: AppState,
    ws: String,
    scope: ResultScope,
    filter: ResultFilter,
    include: Include,
    name: String,
) -> Result<Response, ApiError> {
    let extra = match include {
        Include::AllSourceColumns => state.store.source_columns(&ws, &scope).await?,
        Include::Columns(columns) => columns,
    };
    let mut header = Some(extra.clone());
    let chunks = state.store.result_pages(ws, scope, filter, EXPORT_PAGE).map(move |page| {
        let page = page.map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut buf = Vec::with_capacity(256 * page.len() + 512);
        let mut w = match header.take() {
            Some(extra) => ResultsCsv::new(&mut buf, extra)?,
            None => ResultsCsv::without_header(&mut buf, extra.clone()),
        };
        for r in &page {
            r.write_csv(&mut w)?;
        }
        drop(w);
        Ok::<_, std::io::Error>(bytes::Bytes::from(buf))
    });
    let disposition = format!("attachment; filename=\"{name}.csv\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CurrentQuery {
    /// Only results for this offer.
    offer_id: Option<String>,
    /// Only results of this intent.
    #[param(value_type = Option<crate::doc::IntentName>)]
    intent: Option<String>,
    /// Only results scoring at least this.
    #[param(value_type = Option<i32>, minimum = 0, maximum = 100)]
    min_score: Option<String>,
    /// Only results scored this way.
    #[param(value_type = Option<crate::doc::ScoreBasisName>)]
    score_basis: Option<String>,
    /// Items per page, 1 to 1000 (default 50).
    #[param(value_type = Option<i32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page (`<lead id>~<offer id>`).
    #[param(
        max_length = 256,
        pattern = r"^([^\u0000-\u001f\u007f-\u009f]*~[^\u0000-\u001f\u007f-\u009f]*)?$"
    )]
    cursor: Option<String>,
    /// CSV exports only (documented on them): which source columns to write.
    #[param(ignore)]
    include: Option<String>,
}

impl CurrentQuery {
    fn split(self) -> (Option<String>, ResultQuery) {
        let q = ResultQuery {
            intent: self.intent,
            min_score: self.min_score,
            score_basis: self.score_basis,
            limit: self.limit,
            cursor: self.cursor,
            include: self.include,
        };
        (self.offer_id, q)
    }
}

#[utoipa::path(get, path = "/v1/results", operation_id = "list_current_results", tag = "runs", params(CurrentQuery),
    responses(
        (status = 200, description = "The current result per (lead, offer): the one from the most recently created run", body = ResultPage),
        (status = 400, description = "Bad filter or cursor (the parameter is named)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_current(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiQuery(q): ApiQuery<CurrentQuery>,
) -> Result<axum::Json<ResultPage>, ApiError> {
    let (offer, q) = q.split();
    let filter = q.filter()?;
    let page = PageParams::new(q.limit, q.cursor).page()?;
    let results =
        state.store.list_results(&ws, &ResultScope::Current { offer_id: offer }, &filter, &page).await?;
    Ok(axum::Json(ResultPage {
        items: results.items.into_iter().map(Into::into).collect(),
        next_cursor: results.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/results.csv", operation_id = "export_current_results", tag = "runs",
    params(("offer_id" = Option<String>, Query, description = "Only results for this offer"), ExportFilter),
    responses(
        (status = 200, description = "The current results as the results CSV, streamed", content_type = "text/csv", body = String),
        (status = 400, description = "Bad filter (the parameter is named)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_current(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiQuery(q): ApiQuery<CurrentQuery>,
) -> Result<Response, ApiError> {
    let (offer, q) = q.split();
    let filter = q.filter()?;
    let include = Include::parse(q.include.as_deref())?;
    export(
        state,
        ws,
        ResultScope::Current { offer_id: offer },
        filter,
        include,
        "leadscore-results".to_owned(),
    )
    .await
}
