//! `/v1/offers`: create, list, read, replace and delete offers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use leadscore_core::{Offer, OfferInput, offer};
use leadscore_store::OfferRecord;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::AppState;
use crate::extract::{ApiJson, ApiQuery, PageParams, Workspace};
use crate::problem::{ApiError, Problem};

/// An offer as clients send it.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "AI Outreach Automation",
    "value_props": ["24/7 automated outreach", "6x more qualified meetings"],
    "ideal_use_cases": ["B2B SaaS", "Sales teams", "Marketing agencies"]
}))]
pub struct OfferBody {
    /// Product name, 1 to 200 characters (surrounding whitespace is trimmed).
    #[schema(schema_with = offer_name_schema)]
    pub name: String,
    /// Value propositions, at most 50.
    #[serde(default, deserialize_with = "offer::value_props_list")]
    #[schema(schema_with = value_props_schema)]
    pub value_props: Vec<String>,
    /// The ideal customer profile as industries or use cases; at least one. Leads are matched against these.
    #[serde(deserialize_with = "offer::ideal_use_cases_list")]
    #[schema(schema_with = ideal_use_cases_schema)]
    pub ideal_use_cases: Vec<String>,
}

/// A string that is not all whitespace (Rust's `char::is_whitespace`, which `trim` uses) of at most `max` chars.
fn text_schema(max: usize) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(crate::doc::NOT_BLANK))
        .build()
}

fn offer_name_schema() -> utoipa::openapi::Object {
    text_schema(offer::MAX_NAME_CHARS)
}

fn text_list_schema(min: usize) -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(text_schema(offer::MAX_ITEM_CHARS))
        .min_items(Some(min))
        .max_items(Some(offer::MAX_LIST_ITEMS))
        .build()
}

fn value_props_schema() -> utoipa::openapi::Array {
    text_list_schema(0)
}

fn ideal_use_cases_schema() -> utoipa::openapi::Array {
    text_list_schema(1)
}

impl OfferBody {
    pub fn validate(self) -> Result<Offer, ApiError> {
        Offer::parse(OfferInput {
            name: self.name,
            value_props: self.value_props,
            ideal_use_cases: self.ideal_use_cases,
        })
        .map_err(|e| ApiError::invalid_fields(&e.0))
    }
}

/// A stored offer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "019abc12-3456-7def-8901-23456789abcd",
    "name": "AI Outreach Automation",
    "value_props": ["24/7 automated outreach"],
    "ideal_use_cases": ["B2B SaaS", "Sales teams"],
    "created_at": "2026-11-25T10:30:00Z",
    "updated_at": "2026-11-25T10:30:00Z"
}))]
pub struct OfferResponse {
    pub id: String,
    pub name: String,
    pub value_props: Vec<String>,
    pub ideal_use_cases: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<OfferRecord> for OfferResponse {
    fn from(r: OfferRecord) -> Self {
        OfferResponse {
            id: r.id,
            name: r.offer.name,
            value_props: r.offer.value_props,
            ideal_use_cases: r.offer.ideal_use_cases,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// One page of offers.
#[derive(Debug, Serialize, ToSchema)]
pub struct OfferPage {
    pub items: Vec<OfferResponse>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(post, path = "/v1/offers", tag = "offers", request_body = OfferBody,
    responses(
        (status = 201, description = "Created", body = OfferResponse, headers(("Location" = String, description = "URL of the offer"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid offer (the fields at fault are listed)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_offer(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiJson(body): ApiJson<OfferBody>,
) -> Result<impl IntoResponse, ApiError> {
    let record = state.store.create_offer(&ws, &body.validate()?).await?;
    let headers = crate::location(&format!("/v1/offers/{}", record.id));
    Ok((StatusCode::CREATED, headers, axum::Json(OfferResponse::from(record))))
}

#[utoipa::path(get, path = "/v1/offers", tag = "offers", params(PageParams),
    responses(
        (status = 200, description = "Offers, oldest first", body = OfferPage),
        (status = 400, description = "Bad pagination parameter (the parameter is named)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_offers(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<axum::Json<OfferPage>, ApiError> {
    let page = state.store.list_offers(&ws, &params.page()?).await?;
    Ok(axum::Json(OfferPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/offers/{id}", tag = "offers", params(("id" = String, Path, description = "Offer id")),
    responses(
        (status = 200, description = "The offer", body = OfferResponse),
        (status = 404, description = "No such offer in this workspace", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_offer(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
) -> Result<axum::Json<OfferResponse>, ApiError> {
    let record = state.store.get_offer(&ws, &id).await?.ok_or_else(|| ApiError::not_found("offer", &id))?;
    Ok(axum::Json(record.into()))
}

#[utoipa::path(put, path = "/v1/offers/{id}", tag = "offers", request_body = OfferBody,
    params(("id" = String, Path, description = "Offer id")),
    responses(
        (status = 200, description = "The replaced offer", body = OfferResponse),
        (status = 404, description = "No such offer in this workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid offer", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_offer(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<OfferBody>,
) -> Result<axum::Json<OfferResponse>, ApiError> {
    let offer = body.validate()?;
    let record =
        state.store.update_offer(&ws, &id, &offer).await?.ok_or_else(|| ApiError::not_found("offer", &id))?;
    Ok(axum::Json(record.into()))
}

#[utoipa::path(delete, path = "/v1/offers/{id}", tag = "offers", params(("id" = String, Path, description = "Offer id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such offer in this workspace", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_offer(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_offer(&ws, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("offer", &id))
    }
}
