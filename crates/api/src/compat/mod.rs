//! Seed compatibility: the original service's routes as thin aliases, with its response shapes and its
//! `{"error": "..."}` errors. Ids are our ids (strings); that is the one documented difference.

mod scoring;

pub use scoring::*;

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use leadscore_store::{LeadRecord, OfferRecord, Page};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::extract::{ApiJson, Workspace};
use crate::problem::ApiError;
use crate::routes::leads::{Received, UploadAction, receive_upload};
use crate::routes::offers::OfferBody;

/// Leads returned by the upload alias (the original returned every created lead).
pub const COMPAT_UPLOAD_LEADS: usize = 1000;
/// The original's page size.
pub(crate) const PAGE_SIZE: i64 = 10;

/// Settings of the seed-compatible routes, read once at start (`leadscore serve` flags, or the environment of
/// `leadscore-api`), never per request.
#[derive(Debug, Clone)]
pub struct CompatConfig {
    /// What `next` / `previous` links start with: a configured public URL (`LEADSCORE_PUBLIC_URL`, e.g.
    /// `https://leads.example.com`), or nothing (links relative to this server). Never the request's `Host` or
    /// `X-Forwarded-Proto`, which a client chooses.
    public_url: String,
    /// Most unscored leads `/api/leads/score/` scores while the client waits (`LEADSCORE_COMPAT_WAIT_MAX_LEADS`).
    pub wait_max_leads: i64,
}

/// Default of [`CompatConfig::wait_max_leads`].
pub const COMPAT_WAIT_MAX_LEADS: i64 = 1000;

impl Default for CompatConfig {
    fn default() -> Self {
        CompatConfig { public_url: String::new(), wait_max_leads: COMPAT_WAIT_MAX_LEADS }
    }
}

/// A public URL that is not an absolute `http(s)://host[/prefix]` URL.
#[derive(Debug, thiserror::Error)]
#[error("the public URL must look like https://host[:port][/prefix] (no query, no fragment), got {0:?}")]
pub struct BadPublicUrl(String);

impl CompatConfig {
    /// Checks `public_url` (empty or `None`: relative links) and keeps it without a trailing `/`.
    pub fn new(public_url: Option<&str>, wait_max_leads: i64) -> Result<Self, BadPublicUrl> {
        let url = public_url.map(str::trim).unwrap_or("").trim_end_matches('/');
        if !url.is_empty() {
            let bad = || BadPublicUrl(url.to_owned());
            let uri: axum::http::Uri = url.parse().map_err(|_| bad())?;
            let http = matches!(uri.scheme_str(), Some("http" | "https"));
            if !http || uri.authority().is_none() || uri.query().is_some() || url.contains('#') {
                return Err(bad());
            }
        }
        Ok(CompatConfig { public_url: url.to_owned(), wait_max_leads })
    }

    /// The link to `path` (which starts with `/`).
    pub(crate) fn link(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }
}

/// The original's error body.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "Offer not found."}))]
pub struct CompatErrorBody {
    pub error: String,
}

/// An error in the original's shape; validation errors are 400 as in the original.
#[derive(Debug)]
pub enum CompatError {
    Api(ApiError),
    /// A message of the original's own, e.g. "Invalid page.".
    Plain(StatusCode, &'static str),
}

impl From<ApiError> for CompatError {
    fn from(e: ApiError) -> Self {
        CompatError::Api(e)
    }
}

impl IntoResponse for CompatError {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            CompatError::Api(e) => e.retry_after(),
            CompatError::Plain(..) => None,
        };
        let (status, error) = match self {
            CompatError::Plain(status, msg) => (status, msg.to_owned()),
            CompatError::Api(ApiError::Invalid { detail, .. }) => (StatusCode::BAD_REQUEST, detail),
            CompatError::Api(ApiError::NotFound { what: "offer", .. }) => {
                (StatusCode::NOT_FOUND, "Offer not found.".to_owned())
            }
            CompatError::Api(ApiError::NotFound { what: "lead", .. }) => {
                (StatusCode::NOT_FOUND, "Lead not found.".to_owned())
            }
            CompatError::Api(other) => {
                if let ApiError::Internal(msg) | ApiError::Unavailable(msg) = &other {
                    tracing::error!(error = %msg, "request failed");
                }
                (other.status(), other.problem().detail)
            }
        };
        let mut response = (status, axum::Json(CompatErrorBody { error })).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(status, StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

pub struct CompatWorkspace(String);

impl FromRequestParts<AppState> for CompatWorkspace {
    type Rejection = CompatError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, CompatError> {
        Ok(CompatWorkspace(Workspace::from_request_parts(parts, state).await?.0))
    }
}

pub struct CompatJson<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for CompatJson<T> {
    type Rejection = CompatError;

    async fn from_request(req: Request, state: &S) -> Result<Self, CompatError> {
        Ok(CompatJson(ApiJson::<T>::from_request(req, state).await?.0))
    }
}

/// Query parameters whose parse errors are in the original's shape (a 400 naming the parameter).
pub struct CompatQuery<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for CompatQuery<T> {
    type Rejection = CompatError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, CompatError> {
        Ok(CompatQuery(crate::extract::ApiQuery::<T>::from_request_parts(parts, state).await?.0))
    }
}

/// An offer in the original's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompatOffer {
    pub id: String,
    pub name: String,
    pub value_props: Vec<String>,
    pub ideal_use_cases: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<OfferRecord> for CompatOffer {
    fn from(r: OfferRecord) -> Self {
        CompatOffer {
            id: r.id,
            name: r.offer.name,
            value_props: r.offer.value_props,
            ideal_use_cases: r.offer.ideal_use_cases,
            created_at: r.created_at,
        }
    }
}

/// A lead in the original's shape; `intent`, `score` and `reasoning` are null until it is scored.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompatLead {
    pub id: String,
    pub name: String,
    pub role: String,
    pub company: String,
    pub industry: String,
    pub location: String,
    pub linkedin_bio: String,
    pub intent: Option<String>,
    pub score: Option<u8>,
    pub reasoning: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl CompatLead {
    fn new(id: String, lead: leadscore_core::Lead, created_at: OffsetDateTime) -> Self {
        CompatLead {
            id,
            name: lead.name,
            role: lead.role,
            company: lead.company,
            industry: lead.industry,
            location: lead.location,
            linkedin_bio: lead.linkedin_bio,
            intent: None,
            score: None,
            reasoning: None,
            created_at,
        }
    }
}

impl From<LeadRecord> for CompatLead {
    fn from(r: LeadRecord) -> Self {
        CompatLead::new(r.id, r.lead, r.created_at)
    }
}

/// Page-number pagination, as the original.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompatLeadPage {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<CompatLead>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageNumber {
    /// Page number, from 1; 10 leads a page.
    #[param(value_type = Option<i64>, minimum = 1)]
    page: Option<String>,
}

#[utoipa::path(post, path = "/api/offer/", tag = "compat", request_body = OfferBody,
    responses(
        (status = 201, description = "Created", body = CompatOffer),
        (status = 400, description = "Malformed JSON or an invalid offer (the fields at fault are named)", body = CompatErrorBody),
    ))]
pub async fn create_offer(
    State(state): State<AppState>,
    CompatWorkspace(ws): CompatWorkspace,
    CompatJson(body): CompatJson<OfferBody>,
) -> Result<impl IntoResponse, CompatError> {
    let record = state.store.create_offer(&ws, &body.validate()?).await.map_err(ApiError::from)?;
    Ok((StatusCode::CREATED, axum::Json(CompatOffer::from(record))))
}

#[utoipa::path(get, path = "/api/offer/", tag = "compat", responses((status = 200, description = "All offers (at most 1000), oldest first", body = Vec<CompatOffer>)))]
pub async fn list_offers(
    State(state): State<AppState>,
    CompatWorkspace(ws): CompatWorkspace,
) -> Result<axum::Json<Vec<CompatOffer>>, CompatError> {
    let page = state
        .store
        .list_offers(&ws, &Page { limit: Page::MAX_LIMIT, after: None })
        .await
        .map_err(ApiError::from)?;
    Ok(axum::Json(page.items.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/api/offer/{id}/", tag = "compat", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The offer", body = CompatOffer),
        (status = 404, description = "No such offer", body = CompatErrorBody),
    ))]
pub async fn get_offer(
    State(state): State<AppState>,
    CompatWorkspace(ws): CompatWorkspace,
    Path(id): Path<String>,
) -> Result<axum::Json<CompatOffer>, CompatError> {
    let record = state
        .store
        .get_offer(&ws, &id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("offer", &id))?;
    Ok(axum::Json(record.into()))
}

#[utoipa::path(put, path = "/api/offer/{id}/", tag = "compat", params(("id" = String, Path)), request_body = OfferBody,
    responses(
        (status = 200, description = "The replaced offer", body = CompatOffer),
        (status = 400, description = "Malformed JSON or an invalid offer (the fields at fault are named)", body = CompatErrorBody),
        (status = 404, description = "No such offer", body = CompatErrorBody),
    ))]
pub async fn update_offer(
    State(state): State<AppState>,
    CompatWorkspace(ws): CompatWorkspace,
    Path(id): Path<String>,
    CompatJson(body): CompatJson<OfferBody>,
) -> Result<axum::Json<CompatOffer>, CompatError> {
    let offer = body.validate()?;
    let record = state
        .store
        .update_offer(&ws, &id, &offer)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("offer", &id))?;
    Ok(axum::Json(record.into()))
}

#[utoipa::path(delete, path = "/api/offer/{id}/", tag = "compat", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such offer", body = CompatErrorBody)))]
pub async fn delete_offer(
    State(state): State<AppState>,
    CompatWorkspace(ws): CompatWorkspace,
    Path(id): Path<String>,
) -> Result<StatusCode, CompatError> {
    if state.store.delete_offer(&ws, &id).await.map_err(ApiError::from)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("offer", &id).into())
    }
}

#[utoipa::path(get, path = "/api/leads/", tag = "compat", params(PageNumber),
    responses(
        (status = 200, description = "Leads in upload order, 10 a page", body = CompatLeadPage),
        (status = 404, description = "Invalid page", body = CompatErrorBody),
    ))]
pub async fn list_leads(
    State(state): State<AppState>,
    CompatWorkspace(ws): CompatWorkspace,
    CompatQuery(q): CompatQuery<PageNumber>,
) -> Result<axum::Json<CompatLeadPage>, CompatError> {
    let count = state.store.count_leads(&ws).await.map_err(ApiError::from)?;
    let page = page_number(q.page.as_deref(), count)?;
    let leads =
        state.store.leads_at_offset(&ws, (page - 1) * PAGE_SIZE, PAGE_SIZE).await.map_err(ApiError::from)?;
    let base = state.compat.link("/api/leads/");
    let (next, previous) = page_links(&base, page, count);
    Ok(axum::Json(CompatLeadPage {
        count,
        next,
        previous,
        results: leads.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(get, path = "/api/leads/{id}/", tag = "compat", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The lead (`intent`, `score` and `reasoning` are null: scores are in the results)", body = CompatLead),
        (status = 404, description = "No such lead", body = CompatErrorBody),
    ))]
pub async fn get_lead(
    State(state): State<AppState>,
    CompatWorkspace(ws): CompatWorkspace,
    Path(id): Path<String>,
) -> Result<axum::Json<CompatLead>, CompatError> {
    let lead = state
        .store
        .get_lead(&ws, &id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("lead", &id))?;
    Ok(axum::Json(lead.into()))
}

#[utoipa::path(delete, path = "/api/leads/{id}/", tag = "compat", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such lead", body = CompatErrorBody)))]
pub async fn delete_lead(
    State(state): State<AppState>,
    CompatWorkspace(ws): CompatWorkspace,
    Path(id): Path<String>,
) -> Result<StatusCode, CompatError> {
    if state.store.delete_lead(&ws, &id).await.map_err(ApiError::from)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("lead", &id).into())
    }
}

#[utoipa::path(post, path = "/api/leads/upload/", tag = "compat", params(crate::routes::leads::UploadQuery),
    request_body(description = "multipart/form-data with a `file` field, or a text/csv body",
        content((crate::routes::leads::UploadForm = "multipart/form-data"), (crate::routes::leads::CsvText = "text/csv", example = json!(crate::routes::leads::CSV_EXAMPLE)))),
    responses(
        (status = 201, description = "The created leads (at most the first 1000). `X-Rows-Rejected` counts rejected rows; \
            `Location` points to the upload report with every rejected row.", body = Vec<CompatLead>),
        (status = 400, description = "The file cannot be read as leads", body = CompatErrorBody),
    ))]
pub async fn upload_leads(
    State(state): State<AppState>,
    CompatWorkspace(ws): CompatWorkspace,
    req: Request,
) -> Result<impl IntoResponse, CompatError> {
    let Received::Stored(ingested) =
        receive_upload(&state, &ws, req, UploadAction::Store { keep_leads: COMPAT_UPLOAD_LEADS }).await?
    else {
        unreachable!("a compat upload is always stored");
    };
    let mut headers = crate::location(&format!("/v1/uploads/{}", ingested.upload.id));
    headers.insert("x-rows-rejected", HeaderValue::from(ingested.upload.rows_rejected));
    let created_at = ingested.upload.created_at;
    let leads: Vec<CompatLead> =
        ingested.leads.into_iter().map(|(id, _, lead)| CompatLead::new(id, lead, created_at)).collect();
    Ok((StatusCode::CREATED, headers, axum::Json(leads)))
}

pub(crate) fn page_number(raw: Option<&str>, count: i64) -> Result<i64, CompatError> {
    let pages = ((count + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    match raw {
        None => Ok(1),
        Some(p) => p
            .parse::<i64>()
            .ok()
            .filter(|p| (1..=pages).contains(p))
            .ok_or(CompatError::Plain(StatusCode::NOT_FOUND, "Invalid page.")),
    }
}

pub(crate) fn page_links(base: &str, page: i64, count: i64) -> (Option<String>, Option<String>) {
    let pages = ((count + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let link = |p: i64| if p == 1 { base.to_owned() } else { format!("{base}?page={p}") };
    ((page < pages).then(|| link(page + 1)), (page > 1).then(|| link(page - 1)))
}
