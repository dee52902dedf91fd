//! The original's scoring and results routes: `/api/leads/score/` (creates a run through the one creation path
//! and waits for it on its events), `/api/leads/results/` (page numbers) and `/api/leads/export_csv/` (its 8
//! columns, streamed), all reading results through the store's one pager.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use leadscore_store::{Page, ResultScope};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{
    CompatError, CompatErrorBody, CompatQuery, CompatWorkspace, PAGE_SIZE, PageNumber, page_links,
    page_number,
};
use crate::AppState;
use crate::problem::ApiError;

/// How long `/api/leads/score/` waits for its run at most.
const COMPAT_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug, Serialize, ToSchema)]
pub struct ScoreBreakdown {
    pub rule_score: u8,
    pub ai_score: u8,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompatScored {
    pub name: String,
    pub role: String,
    pub company: String,
    pub intent: String,
    pub score: u8,
    pub reasoning: String,
    pub score_breakdown: ScoreBreakdown,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompatScoreResponse {
    pub results: Vec<CompatScored>,
    pub total_scored: usize,
    pub scoring_method: String,
}

impl From<&leadscore_store::ResultRecord> for CompatScored {
    fn from(r: &leadscore_store::ResultRecord) -> Self {
        let s = &r.scoring;
        CompatScored {
            name: r.lead.lead.name.clone(),
            role: r.lead.lead.role.clone(),
            company: r.lead.lead.company.clone(),
            intent: s.intent.as_str().to_owned(),
            score: s.final_score,
            reasoning: s.reasoning(),
            // rules_only results have no AI points: the original reported 0 there too.
            score_breakdown: ScoreBreakdown { rule_score: s.rule.score, ai_score: s.ai_score.unwrap_or(0) },
        }
    }
}

#[utoipa::path(post, path = "/api/leads/score/", tag = "compat",
    responses(
        (status = 200, description = "Every unscored lead scored against the most recent offer (waits for the run)", body = CompatScoreResponse),
        (status = 400, description = "No offer, no unscored lead, or too many leads to wait for (use /v1/leads/score)", body = CompatErrorBody),
        (status = 409, description = "The run ended cancelled or failed", body = CompatErrorBody),
    ))]
pub async fn score_leads(
    State(state): State<AppState>,
    CompatWorkspace(ws): CompatWorkspace,
) -> Result<axum::Json<CompatScoreResponse>, CompatError> {
    let offer = state.store.latest_offer(&ws).await.map_err(ApiError::from)?.ok_or(CompatError::Plain(
        StatusCode::BAD_REQUEST,
        "Please create an offer first using POST /api/offer/",
    ))?;
    let pending = state.store.count_unscored(&ws, &offer.id).await.map_err(ApiError::from)?;
    if pending == 0 {
        return Err(CompatError::Plain(
            StatusCode::BAD_REQUEST,
            "No unscored leads found. Please upload leads first.",
        ));
    }
    let max = state.compat.wait_max_leads;
    if pending > max {
        return Err(CompatError::Api(ApiError::Malformed(format!(
            "{pending} unscored leads are more than this route scores while you wait ({max}); \
             use POST /v1/leads/score and poll the run instead"
        ))));
    }
    let created = crate::routes::runs::create::create_run(
        &state,
        &ws,
        &offer.id,
        &leadscore_store::Selection::AllUnscored,
        None,
        None,
    )
    .await?;
    let run_id = created.run.id;
    wait_for_run(&state, &ws, &run_id).await?;
    let scope = ResultScope::Run(run_id.clone());
    let mut results = Vec::new();
    let mut pages =
        std::pin::pin!(state.store.result_pages(ws.clone(), scope, Default::default(), Page::MAX_LIMIT));
    while let Some(page) = pages.next().await {
        results.extend(page.map_err(ApiError::from)?.iter().map(CompatScored::from));
    }
    let hybrid = state.store.result_counts(&run_id).await.map_err(ApiError::from)?.hybrid > 0;
    Ok(axum::Json(CompatScoreResponse {
        total_scored: results.len(),
        results,
        scoring_method: if hybrid { "hybrid (rule + AI)".into() } else { "rules only (AI layer off)".into() },
    }))
}

/// Waits until the run completes; answers at once, with the reason, when it stops any other way (cancelled,
/// paused by its cost cap, blocked by the provider, deleted) instead of waiting out [`COMPAT_WAIT`].
async fn wait_for_run(state: &AppState, ws: &str, run_id: &str) -> Result<(), CompatError> {
    use leadscore_core::RunStatus as S;
    let deadline = tokio::time::Instant::now() + COMPAT_WAIT;
    let mut watch = state.store.watch_run(ws, run_id);
    loop {
        let run = watch.read().await.map_err(ApiError::from)?;
        let stopped =
            |why: String| Err(CompatError::Api(ApiError::Conflict(format!("the run {run_id} {why}"))));
        match run {
            None => return stopped("was deleted".into()),
            Some(r) if r.status == S::Completed => return Ok(()),
            Some(r) if matches!(r.status, S::Cancelling | S::Cancelled) => {
                return stopped("was cancelled".into());
            }
            Some(r) if r.status == S::Paused => {
                return stopped(format!("is paused: resume it with POST /v1/runs/{run_id}/resume"));
            }
            Some(r) if r.status == S::Blocked => {
                let reason = r.blocked_reason.unwrap_or_default();
                return Err(CompatError::Api(ApiError::NotNow(format!(
                    "the run {run_id} is blocked: the AI provider refuses this server's configuration ({reason})"
                ))));
            }
            Some(_) if tokio::time::Instant::now() >= deadline => {
                return Err(CompatError::Api(ApiError::NotNow(format!(
                    "the run {run_id} is still going: follow /v1/runs/{run_id}"
                ))));
            }
            Some(_) => watch.changed(Some(deadline)).await,
        }
    }
}

/// A scored lead in the original's results shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompatResult {
    pub id: String,
    pub name: String,
    pub role: String,
    pub company: String,
    pub industry: String,
    pub location: String,
    pub linkedin_bio: String,
    pub intent: String,
    pub score: u8,
    pub reasoning: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompatResultPage {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<CompatResult>,
}

#[utoipa::path(get, path = "/api/leads/results/", tag = "compat", params(PageNumber),
    responses(
        (status = 200, description = "Scored leads (current result per lead for the most recent offer), 10 a page", body = CompatResultPage),
        (status = 404, description = "Invalid page", body = CompatErrorBody),
    ))]
pub async fn list_results(
    State(state): State<AppState>,
    CompatWorkspace(ws): CompatWorkspace,
    CompatQuery(q): CompatQuery<PageNumber>,
) -> Result<axum::Json<CompatResultPage>, CompatError> {
    let Some(offer) = state.store.latest_offer(&ws).await.map_err(ApiError::from)? else {
        return Ok(axum::Json(CompatResultPage { count: 0, next: None, previous: None, results: vec![] }));
    };
    let scope = ResultScope::Current { offer_id: Some(offer.id) };
    let count = state.store.count_results(&ws, &scope).await.map_err(ApiError::from)?;
    let page = page_number(q.page.as_deref(), count)?;
    let rows = state
        .store
        .list_results_at(&ws, &scope, (page - 1) * PAGE_SIZE, PAGE_SIZE)
        .await
        .map_err(ApiError::from)?;
    let base = state.compat.link("/api/leads/results/");
    let (next, previous) = page_links(&base, page, count);
    Ok(axum::Json(CompatResultPage {
        count,
        next,
        previous,
        results: rows
            .into_iter()
            .map(|r| CompatResult {
                reasoning: r.scoring.reasoning(),
                intent: r.scoring.intent.as_str().to_owned(),
                score: r.scoring.final_score,
                id: r.lead.id,
                name: r.lead.lead.name,
                role: r.lead.lead.role,
                company: r.lead.lead.company,
                industry: r.lead.lead.industry,
                location: r.lead.lead.location,
                linkedin_bio: r.lead.lead.linkedin_bio,
                created_at: r.lead.created_at,
            })
            .collect(),
    }))
}

#[utoipa::path(get, path = "/api/leads/export_csv/", tag = "compat",
    responses((status = 200, description = "The original's 8 columns: Name,Role,Company,Industry,Location,Intent,Score,Reasoning", content_type = "text/csv", body = String)))]
pub async fn export_csv(
    State(state): State<AppState>,
    CompatWorkspace(ws): CompatWorkspace,
) -> Result<Response, CompatError> {
    let offer = state.store.latest_offer(&ws).await.map_err(ApiError::from)?;
    let mut header = Some("Name,Role,Company,Industry,Location,Intent,Score,Reasoning\r\n");
    // No offer, no results: a scope of no offer's current results would list every offer's.
    let pages = offer.map(|offer| {
        let scope = ResultScope::Current { offer_id: Some(offer.id) };
        state.store.result_pages(ws, scope, Default::default(), Page::MAX_LIMIT)
    });
    let pages = futures_util::stream::iter(pages).flatten().map(|page| page.map_err(std::io::Error::other));
    let chunks = futures_util::stream::once(async { Ok::<_, std::io::Error>(Vec::new()) }).chain(pages).map(
        move |page: Result<Vec<leadscore_store::ResultRecord>, std::io::Error>| {
            let mut out = header.take().unwrap_or_default().to_owned();
            for r in &page? {
                push_original_row(&mut out, r);
            }
            Ok::<_, std::io::Error>(bytes::Bytes::from(out))
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"leads_export.csv\""),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

/// One row of the original's 8-column export.
fn push_original_row(out: &mut String, r: &leadscore_store::ResultRecord) {
    use leadscore_core::results_csv::push_cell;
    let l = &r.lead.lead;
    let score = r.scoring.final_score.to_string();
    let cells = [
        &l.name,
        &l.role,
        &l.company,
        &l.industry,
        &l.location,
        r.scoring.intent.as_str(),
        &score,
        &r.scoring.reasoning(),
    ];
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_cell(out, c);
    }
    out.push_str("\r\n");
}
