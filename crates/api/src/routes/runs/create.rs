//! `POST /v1/leads/score`: a run through the store's one creation path (run, jobs, estimate and idempotency
//! record in one transaction), optionally waiting for it (`Prefer: wait`) on the run's events.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use leadscore_store::{
    Created, Estimate, IdempotencyKey, NewRun, Page, ResultFilter, ResultScope, Selection, StoreError,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::ToSchema;

use super::results::ResultResponse;
use super::{RunResponse, fnv1a, load_run};
use crate::AppState;
use crate::extract::{ApiJson, Workspace};
use crate::problem::{ApiError, Problem};

/// What to score (its schema is written by hand below: the field docs here are for Rust readers).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    pub offer_id: String,
    /// Score the leads of this upload...
    pub upload_id: Option<String>,
    /// ... or these leads (at most 10,000) ...
    #[serde(default, deserialize_with = "lead_ids_list")]
    pub lead_ids: Option<Vec<String>>,
    /// ... or every lead with no result for this offer and no job of it waiting or running.
    pub all_unscored: Option<bool>,
    /// Pause the run when its AI cost reaches this (USD).
    pub max_cost_usd: Option<f64>,
}

/// Most leads a run names one by one (`lead_ids`); larger selections go by upload or `all_unscored`.
pub const MAX_LEAD_IDS: usize = 10_000;

/// Reads `lead_ids`, refusing more than [`MAX_LEAD_IDS`] while reading (`null` is no list).
fn lead_ids_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct Ids(Vec<String>);
    impl<'de> Deserialize<'de> for Ids {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            leadscore_core::offer::capped_list(d, "lead_ids", MAX_LEAD_IDS).map(Ids)
        }
    }
    Ok(Option::<Ids>::deserialize(d)?.map(|ids| ids.0))
}

/// The document's `ScoreRequest`: its fields, and a `oneOf` saying that exactly one of `upload_id`, `lead_ids` or
/// `all_unscored: true` chooses the leads, as [`ScoreRequest::selection`] enforces (`null` is a field left out).
impl utoipa::PartialSchema for ScoreRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type,
        };
        let or_null = |t: Type| SchemaType::from_iter([t, Type::Null]);
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let fields = ObjectBuilder::new()
            .property("offer_id", text())
            .required("offer_id")
            .property(
                "upload_id",
                ObjectBuilder::new()
                    .schema_type(or_null(Type::String))
                    .description(Some("Score the leads of this upload...")),
            )
            .property(
                "lead_ids",
                ArrayBuilder::new()
                    .schema_type(or_null(Type::Array))
                    .items(text())
                    .min_items(Some(1))
                    .max_items(Some(MAX_LEAD_IDS))
                    .description(Some("... or these leads ...")),
            )
            .property(
                "all_unscored",
                ObjectBuilder::new().schema_type(or_null(Type::Boolean)).description(Some(
                    "... or every lead with no result for this offer and no job of it waiting or running.",
                )),
            )
            .property(
                "max_cost_usd",
                ObjectBuilder::new()
                    .schema_type(or_null(Type::Number))
                    .exclusive_minimum(Some(0.0))
                    .description(Some("Pause the run when its AI cost reaches this (USD).")),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let chosen =
            |field: &str, schema: ObjectBuilder| ObjectBuilder::new().property(field, schema).required(field);
        let selection = OneOfBuilder::new()
            .item(chosen("upload_id", text()))
            .item(chosen("lead_ids", ObjectBuilder::new().schema_type(Type::Array)))
            .item(chosen(
                "all_unscored",
                ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([true])),
            ));
        AllOfBuilder::new()
            .item(fields)
            .item(selection)
            .description(Some("What to score: an offer and exactly one of `upload_id`, `lead_ids` or `all_unscored: true`."))
            .examples([serde_json::json!({"offer_id": "019abc12-3456-7def-8901-23456789abcd", "upload_id": "019abc12-0000-7def-8901-23456789abcd"})])
            .into()
    }
}

impl utoipa::ToSchema for ScoreRequest {}

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

/// Creates a run through the store's one creation path, mapping its errors to 404 / 422. The cost estimate
/// comes from the AI layer's settings (0 with it off).
pub async fn create_run(
    state: &AppState,
    ws: &str,
    offer_id: &str,
    selection: &Selection,
    max_cost_usd: Option<f64>,
    idempotency: Option<IdempotencyKey<'_>>,
) -> Result<Created, ApiError> {
    let estimate = state.ai.as_ref().map(|ai| {
        let config = ai.config.clone();
        move |offer: &leadscore_core::Offer, leads: i64| leadscore_llm::estimated_cost(&config, offer, leads)
    });
    // The run's jobs continue this span's trace, wherever and whenever a worker picks them up.
    let span = tracing::info_span!(
        "enqueue",
        workspace = ws,
        run_id = tracing::field::Empty,
        jobs = tracing::field::Empty
    );
    let traceparent = leadscore_ops::telemetry::traceparent(&span);
    let new = NewRun {
        workspace: ws,
        offer_id,
        selection,
        max_cost_usd,
        estimate: estimate.as_ref().map(|e| e as Estimate<'_>),
        idempotency,
        max_active_runs: state.key_limits.max_active_runs(),
        traceparent: traceparent.as_deref(),
    };
    let created = state.store.create_run(&new).instrument(span.clone()).await;
    if let Ok(c) = &created {
        span.record("run_id", c.run.id.as_str());
        span.record("jobs", c.run.total);
    }
    created.map_err(|e| match e {
        StoreError::OfferNotFound => ApiError::not_found("offer", offer_id),
        // A well-formed request that the data at hand leaves nothing to do: a conflict with the current state.
        StoreError::EmptySelection => ApiError::Conflict(format!(
            "{}: no lead to score (unknown ids, or everything is already scored or queued for this offer)",
            match selection {
                Selection::Upload(_) => "upload_id",
                Selection::Leads(_) => "lead_ids",
                Selection::AllUnscored => "all_unscored",
            }
        )),
        e => e.into(),
    })
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
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]([\t -~]{0,253}[!-~])?$", description = "Retrying with the same key (per workspace, kept 24 h) returns the same run instead of a new one; the same key with another body is a 422"),
        ("Prefer" = Option<String>, Header, description = "`wait=N` (RFC 7240): wait up to N seconds (at most 60) and answer 200 with the results if the run finished"),
    ),
    responses(
        (status = 202, description = "The run and all its jobs exist; poll `Location`", body = RunResponse,
            headers(("Location" = String, description = "URL of the run"))),
        (status = 200, description = "`Prefer: wait` honoured: the finished run and its first 1,000 results", body = RunWithResults),
        (status = 404, description = "No such offer", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The selection holds no lead to score (unknown ids, or everything is already scored or queued for this offer)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad selection, or an Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn score_leads(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ScoreRequest>,
) -> Result<Response, ApiError> {
    let selection = body.selection()?;
    let key = headers.get("idempotency-key").map(|k| k.to_str().unwrap_or("").trim().to_owned());
    if key.as_deref().is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err(ApiError::invalid_param("Idempotency-Key", "must be 1 to 255 visible ASCII characters"));
    }
    let body_hash =
        format!("{:016x}", fnv1a(&serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))?));
    let idempotency = key.as_deref().map(|key| IdempotencyKey {
        route: "POST /v1/leads/score",
        key,
        body_hash: &body_hash,
    });
    let created = create_run(&state, &ws, &body.offer_id, &selection, body.max_cost_usd, idempotency).await?;
    let run_id = created.run.id.as_str();
    let location = format!("/v1/runs/{run_id}");
    if let Some(wait) = prefer_wait(&headers) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
        let finished = state.store.watch_run(&ws, run_id).finished(deadline).await?;
        if finished.is_some_and(|run| run.finished_at.is_some()) {
            let run = load_run(&state, &ws, run_id).await?;
            let page = Page { limit: Page::MAX_LIMIT, after: None };
            let scope = ResultScope::Run(run_id.to_owned());
            let results = state.store.list_results(&ws, &scope, &ResultFilter::default(), &page).await?;
            let body = RunWithResults { run, results: results.items.into_iter().map(Into::into).collect() };
            let mut response = (StatusCode::OK, axum::Json(body)).into_response();
            response.headers_mut().extend(crate::location(&location));
            set_header(
                &mut response,
                header::HeaderName::from_static("preference-applied"),
                &format!("wait={wait}"),
            );
            return Ok(response);
        }
    }
    let run = load_run(&state, &ws, run_id).await?;
    let mut response = (StatusCode::ACCEPTED, axum::Json(run)).into_response();
    response.headers_mut().extend(crate::location(&location));
    Ok(response)
}

fn set_header(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}
