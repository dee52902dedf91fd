//! `/v1/leads`: upload a CSV, list, read and delete leads.

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures_util::StreamExt;
use leadscore_core::Attribute;
use leadscore_store::{IngestOptions, Ingested, LeadRecord, ingest};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::extract::{ApiQuery, PageParams, Workspace};
use crate::problem::{ApiError, Problem, ProblemItem};

/// A lead as stored.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "019abc12-3456-7def-8901-23456789abcd", "upload_id": "019abc12-0000-7def-8901-23456789abcd", "line": 2,
    "external_id": "crm-17", "name": "John Doe", "role": "CEO", "company": "TechCorp", "industry": "B2B SaaS",
    "location": "New York", "linkedin_bio": "15 years building enterprise SaaS platforms",
    "attributes": [{"name": "Deal Size", "value": "50k"}], "created_at": "2026-11-25T10:35:00Z"
}))]
pub struct LeadResponse {
    pub id: String,
    pub upload_id: String,
    /// Line of the upload the lead came from (the header is line 1).
    pub line: i64,
    pub external_id: Option<String>,
    pub name: String,
    pub role: String,
    pub company: String,
    pub industry: String,
    pub location: String,
    pub linkedin_bio: String,
    /// The upload's extra columns, in file order.
    pub attributes: Vec<AttributeResponse>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttributeResponse {
    pub name: String,
    pub value: String,
}

impl From<LeadRecord> for LeadResponse {
    fn from(r: LeadRecord) -> Self {
        let l = r.lead;
        LeadResponse {
            id: r.id,
            upload_id: r.upload_id,
            line: r.line,
            external_id: l.external_id,
            name: l.name,
            role: l.role,
            company: l.company,
            industry: l.industry,
            location: l.location,
            linkedin_bio: l.linkedin_bio,
            attributes: l
                .attributes
                .into_iter()
                .map(|Attribute { name, value }| AttributeResponse { name, value })
                .collect(),
            created_at: r.created_at,
        }
    }
}

/// One page of leads.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeadPage {
    pub items: Vec<LeadResponse>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeadFilter {
    /// Only the leads of this upload.
    upload_id: Option<String>,
    /// Items per page, 1 to 1000 (default 50).
    #[param(value_type = Option<i32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    cursor: Option<String>,
}

/// The upload's outcome.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "upload_id": "019abc12-0000-7def-8901-23456789abcd", "filename": "leads.csv",
    "rows_total": 3, "rows_accepted": 2, "rows_rejected": 1,
    "errors": [{"line": 3, "column": "name", "message": "name is required"}],
    "errors_url": "/v1/uploads/019abc12-0000-7def-8901-23456789abcd/errors"
}))]
pub struct UploadResponse {
    pub upload_id: String,
    pub filename: Option<String>,
    /// Data rows read (blank lines not counted).
    pub rows_total: i64,
    pub rows_accepted: i64,
    pub rows_rejected: i64,
    /// The first 100 rejected rows; all of them are at `errors_url`.
    pub errors: Vec<ProblemItem>,
    pub errors_url: String,
    pub source: crate::routes::uploads::SourceBody,
}

impl From<&Ingested> for UploadResponse {
    fn from(i: &Ingested) -> Self {
        let u = &i.upload;
        UploadResponse {
            upload_id: u.id.clone(),
            filename: u.filename.clone(),
            rows_total: u.rows_total,
            rows_accepted: u.rows_accepted,
            rows_rejected: u.rows_rejected,
            errors: i
                .errors
                .iter()
                .map(|e| ProblemItem {
                    field: None,
                    line: Some(e.line),
                    column: e.column.clone(),
                    message: e.message.clone(),
                })
                .collect(),
            errors_url: format!("/v1/uploads/{}/errors", u.id),
            source: u.source.clone().into(),
        }
    }
}

/// The upload's example body.
pub const CSV_EXAMPLE: &str = "name,role,company,industry,location,linkedin_bio\nJohn Doe,CEO,TechCorp,B2B SaaS,New York,15 years building enterprise SaaS platforms\n";

/// A leads CSV: a file (`format: binary`, so generated clients take bytes or a file object, not text they would
/// have to hold whole). The document promises acceptance for files that start with the canonical header; the
/// reader also takes the aliases, any column order and extra columns (see the upload's description).
pub struct CsvText;

impl utoipa::PartialSchema for CsvText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, SchemaFormat};
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .content_media_type("text/csv")
            .pattern(Some(r"^name,role,company,industry,location,linkedin_bio\r?\n"))
            .into()
    }
}

impl ToSchema for CsvText {}

/// An upload as a multipart/form-data form: the CSV in `file`; other fields are ignored, but their names must
/// be ones a multipart header can carry (no control characters).
pub struct UploadForm;

impl utoipa::PartialSchema for UploadForm {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{ObjectBuilder, Type};
        let header_safe =
            ObjectBuilder::new().schema_type(Type::String).pattern(Some(r"^[^\u0000-\u001f\u007f]*$"));
        ObjectBuilder::new()
            .property("file", CsvText::schema())
            .required("file")
            .property_names(Some(header_safe))
            .into()
    }
}

impl ToSchema for UploadForm {}

/// How to read an upload, besides its body.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The file's text encoding (`windows-1252`, `iso-8859-1`, `utf-16le`, `shift_jis`, ...). Omitted, it is
    /// found from the file: UTF-8 (with or without a byte order mark), UTF-16 with a byte order mark, or
    /// windows-1252; a file that is none of these with confidence is refused (422) with a hint.
    #[param(max_length = 40, pattern = r"^[A-Za-z0-9_:.-]*$")]
    pub encoding: Option<String>,
}

impl UploadQuery {
    /// The options the query gives, checked.
    fn options(uri: &axum::http::Uri, keep_leads: usize) -> Result<IngestOptions, ApiError> {
        let query: UploadQuery = axum::extract::Query::try_from_uri(uri)
            .map_err(|e| ApiError::bad_param("query", e.body_text()))?
            .0;
        let encoding = match query.encoding.as_deref() {
            None | Some("") => None,
            Some(label) => Some(
                leadscore_core::csv::encoding::encoding_for_label(label)
                    .map_err(|e| ApiError::invalid_param("encoding", e.to_string()))?,
            ),
        };
        Ok(IngestOptions { keep_leads, encoding })
    }
}

const CSV_TYPES: [&str; 5] =
    ["text/csv", "application/csv", "text/plain", "application/vnd.ms-excel", "text/x-csv"];

/// Receives the upload body (multipart field `file`, or a CSV body) and stores it.
pub async fn receive_upload(
    state: &AppState,
    ws: &str,
    req: Request,
    keep_leads: usize,
) -> Result<Ingested, ApiError> {
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let limits = state.upload_limits.clone();
    let options = UploadQuery::options(req.uri(), keep_leads)?;
    if mime == "multipart/form-data" {
        let mut multipart = Multipart::from_request(req, state)
            .await
            .map_err(|e| ApiError::Malformed(format!("malformed multipart body: {}", e.body_text())))?;
        loop {
            let field = multipart
                .next_field()
                .await
                .map_err(|e| ApiError::Malformed(format!("malformed multipart body: {e}")))?
                .ok_or_else(|| ApiError::invalid_param("file", "the multipart body has no `file` field"))?;
            if field.name() == Some("file") {
                let filename = field.file_name().map(str::to_owned);
                return Ok(
                    ingest(&state.store, ws, filename.as_deref(), field.boxed(), limits, options).await?
                );
            }
        }
    } else if CSV_TYPES.contains(&mime.as_str()) {
        let body = req.into_body().into_data_stream();
        Ok(ingest(&state.store, ws, None, body.boxed(), limits, options).await?)
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "send the CSV as multipart/form-data with a `file` field, or as a text/csv body (got {:?})",
            if content_type.is_empty() { "no Content-Type" } else { &content_type }
        )))
    }
}

#[utoipa::path(post, path = "/v1/leads/upload", tag = "leads", params(UploadQuery),
    request_body(
        description = "The CSV: a multipart/form-data field `file`, or the body itself as text/csv. Columns \
            `name, role, company, industry, location, linkedin_bio` (aliases accepted), optional `external_id`, \
            other columns kept as attributes.",
        content(
            (CsvText = "text/csv", example = json!(CSV_EXAMPLE)),
            (UploadForm = "multipart/form-data"),
        )),
    responses(
        (status = 201, description = "Stored; rejected rows are listed with their line and reason", body = UploadResponse),
        (status = 413, description = "Over the byte or row limit; nothing stored", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not CSV (wrong content type, or a spreadsheet/ZIP/PDF file)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The file cannot be read as leads (e.g. missing columns, listed); nothing stored", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn upload_leads(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    let ingested = receive_upload(&state, &ws, req, 0).await?;
    let headers = crate::location(&format!("/v1/uploads/{}", ingested.upload.id));
    Ok((StatusCode::CREATED, headers, axum::Json(UploadResponse::from(&ingested))))
}

#[utoipa::path(get, path = "/v1/leads", tag = "leads", params(LeadFilter),
    responses(
        (status = 200, description = "Leads in upload order", body = LeadPage),
        (status = 400, description = "Bad query parameter (the parameter is named)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_leads(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    ApiQuery(filter): ApiQuery<LeadFilter>,
) -> Result<axum::Json<LeadPage>, ApiError> {
    let page = PageParams::new(filter.limit, filter.cursor).page()?;
    let leads = state.store.list_leads(&ws, filter.upload_id.as_deref(), &page).await?;
    Ok(axum::Json(LeadPage {
        items: leads.items.into_iter().map(Into::into).collect(),
        next_cursor: leads.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/leads/{id}", tag = "leads", params(("id" = String, Path, description = "Lead id")),
    responses(
        (status = 200, description = "The lead", body = LeadResponse),
        (status = 404, description = "No such lead in this workspace", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_lead(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
) -> Result<axum::Json<LeadResponse>, ApiError> {
    let lead = state.store.get_lead(&ws, &id).await?.ok_or_else(|| ApiError::not_found("lead", &id))?;
    Ok(axum::Json(lead.into()))
}

#[utoipa::path(delete, path = "/v1/leads/{id}", tag = "leads", params(("id" = String, Path, description = "Lead id")),
    responses(
        (status = 204, description = "Deleted, with its jobs and results; the runs that had a job for it count one lead less"),
        (status = 404, description = "No such lead in this workspace", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_lead(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_lead(&ws, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("lead", &id))
    }
}
