//! `/v1/leads`: upload a CSV, list, read and delete leads.

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures_util::StreamExt;
use leadscore_core::Attribute;
use leadscore_core::csv::Mapping;
use leadscore_store::{IngestOptions, Ingested, LeadRecord, Preview, ingest, preview};
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

/// A lead's attributes as the API writes them.
fn attributes(attributes: Vec<Attribute>) -> Vec<AttributeResponse> {
    attributes.into_iter().map(|Attribute { name, value }| AttributeResponse { name, value }).collect()
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
            attributes: attributes(l.attributes),
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
            errors: i.errors.iter().map(problem_item).collect(),
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
    /// Which columns feed which fields, as JSON: `{"name": ["First Name", "Last Name"], "role": "Job Title",
    /// "external_id": "Record ID"}` (a list is joined in order). Fields it does not name are found from the
    /// headers as usual; a column it names that the file lacks is a 422 naming it.
    #[param(max_length = 2048, example = json!(r#"{"name": ["First Name", "Last Name"], "role": "Job Title"}"#))]
    pub mapping: Option<String>,
    /// For an Excel workbook (`.xlsx`): the sheet to read (default: the first).
    #[param(max_length = 100)]
    pub sheet: Option<String>,
    /// Only on `/v1/leads/upload`: read the whole file and answer what would be stored (encoding, delimiter,
    /// the columns of each field, counts, the first 20 leads and the rejected rows), storing nothing.
    #[param(ignore)]
    pub dry_run: Option<bool>,
}

/// Longest sheet name accepted (Excel's own limit is 31; the document says 100).
const MAX_SHEET_NAME: usize = 100;

/// What to do with a received upload.
#[derive(Debug, Clone, Copy)]
pub enum UploadAction {
    /// Store it; keep this many of its leads for the answer.
    Store { keep_leads: usize },
    /// Store it, unless the query asks for a dry run.
    StoreOrPreview,
}

/// What was done with an upload.
#[derive(Debug)]
pub enum Received {
    Stored(Ingested),
    Previewed(Preview),
}

impl UploadQuery {
    /// The options the query gives, checked, and whether it asks for a dry run.
    fn options(uri: &axum::http::Uri, keep_leads: usize) -> Result<(IngestOptions, bool), ApiError> {
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
        let mapping = match query.mapping.as_deref() {
            None | Some("") => None,
            Some(json) => {
                Some(Mapping::parse(json).map_err(|e| ApiError::invalid_param("mapping", e.to_string()))?)
            }
        };
        let sheet = query.sheet.filter(|s| !s.is_empty());
        if sheet.as_ref().is_some_and(|s| s.chars().count() > MAX_SHEET_NAME) {
            return Err(ApiError::invalid_param("sheet", format!("longer than {MAX_SHEET_NAME} characters")));
        }
        Ok((IngestOptions { keep_leads, encoding, mapping, sheet }, query.dry_run.unwrap_or(false)))
    }
}

/// Body types read as the upload itself (the file's first bytes decide between CSV text and a workbook).
const CSV_TYPES: [&str; 6] = [
    "text/csv",
    "application/csv",
    "text/plain",
    "application/vnd.ms-excel",
    "text/x-csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
];

/// Stores or previews one upload's body.
struct Handle<'a> {
    state: &'a AppState,
    ws: &'a str,
    limits: leadscore_store::UploadLimits,
    options: IngestOptions,
    dry_run: bool,
}

impl Handle<'_> {
    async fn run(
        self,
        filename: Option<String>,
        body: futures_util::stream::BoxStream<'_, Result<bytes::Bytes, String>>,
    ) -> Result<Received, ApiError> {
        if self.dry_run {
            Ok(Received::Previewed(preview(body, self.limits, self.options).await?))
        } else {
            let store = &self.state.store;
            Ok(Received::Stored(
                ingest(store, self.ws, filename.as_deref(), body, self.limits, self.options).await?,
            ))
        }
    }
}

/// Receives the upload body (multipart field `file`, or a CSV body) and stores it, or previews it (a dry run).
pub async fn receive_upload(
    state: &AppState,
    ws: &str,
    req: Request,
    action: UploadAction,
) -> Result<Received, ApiError> {
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let limits = state.upload_limits.clone();
    let keep_leads = match action {
        UploadAction::Store { keep_leads } => keep_leads,
        UploadAction::StoreOrPreview => 0,
    };
    let (options, dry_run) = UploadQuery::options(req.uri(), keep_leads)?;
    let dry_run = match (action, dry_run) {
        (UploadAction::StoreOrPreview, dry_run) => dry_run,
        (UploadAction::Store { .. }, false) => false,
        (UploadAction::Store { .. }, true) => {
            return Err(ApiError::bad_param("dry_run", "a dry run is only offered by POST /v1/leads/upload"));
        }
    };
    let handle = Handle { state, ws, limits, options, dry_run };
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
                return handle.run(filename, field.map(|c| c.map_err(|e| e.to_string())).boxed()).await;
            }
        }
    } else if CSV_TYPES.contains(&mime.as_str()) {
        let body = req.into_body().into_data_stream();
        handle.run(None, body.map(|c| c.map_err(|e| e.to_string())).boxed()).await
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "send the CSV or workbook as multipart/form-data with a `file` field, or as a text/csv (or workbook) body \
             (got {:?})",
            if content_type.is_empty() { "no Content-Type" } else { &content_type }
        )))
    }
}

#[utoipa::path(post, path = "/v1/leads/upload", tag = "leads",
    params(UploadQuery, ("dry_run" = Option<bool>, Query, description = "Read the whole file and answer `200` with what would be stored (encoding, delimiter, the columns of each field, counts, the first 20 leads and the rejected rows), storing nothing")),
    request_body(
        description = "The CSV (or an Excel `.xlsx` workbook, whose first sheet or `sheet` is read): a multipart/form-data field `file`, or the body itself. A name column \
            (or first and last name columns) and a role or company column are required; industry, location \
            (or city, state and country columns), linkedin_bio and external_id are read when present (aliases of \
            the common CRM exports accepted); other columns are kept as attributes.",
        content(
            (CsvText = "text/csv", example = json!(CSV_EXAMPLE)),
            (UploadForm = "multipart/form-data"),
        )),
    responses(
        (status = 201, description = "Stored; rejected rows are listed with their line and reason", body = UploadResponse),
        (status = 200, description = "A dry run (`dry_run=true`): what would be stored; nothing was", body = UploadPreview),
        (status = 413, description = "Over the byte or row limit; nothing stored", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither CSV nor an .xlsx workbook (a wrong content type; an .xls, .xlsb or .ods file; a PDF, an archive or an image): the message says what it is", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The file cannot be read as leads (e.g. missing columns, listed); nothing stored", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn upload_leads(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    match receive_upload(&state, &ws, req, UploadAction::StoreOrPreview).await? {
        Received::Stored(ingested) => {
            let headers = crate::location(&format!("/v1/uploads/{}", ingested.upload.id));
            Ok((StatusCode::CREATED, headers, axum::Json(UploadResponse::from(&ingested))).into_response())
        }
        Received::Previewed(preview) => Ok(axum::Json(UploadPreview::from(preview)).into_response()),
    }
}

/// A rejected row as an error item: its line, column and reason.
fn problem_item(e: &leadscore_core::csv::RejectedRow) -> ProblemItem {
    ProblemItem { field: None, line: Some(e.line), column: e.column.clone(), message: e.message.clone() }
}

/// What an upload would store (a dry run): nothing was stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadPreview {
    pub source: crate::routes::uploads::SourceBody,
    /// Columns that would be kept as attributes.
    pub extra_columns: Vec<String>,
    pub rows_total: u64,
    pub rows_accepted: u64,
    pub rows_rejected: u64,
    /// The first 20 leads as they would be stored.
    pub leads: Vec<PreviewLead>,
    /// The first 100 rejected rows of the whole file.
    pub errors: Vec<ProblemItem>,
}

/// A lead of a dry run, with the line it comes from.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewLead {
    pub line: u64,
    pub external_id: Option<String>,
    pub name: String,
    pub role: String,
    pub company: String,
    pub industry: String,
    pub location: String,
    pub linkedin_bio: String,
    pub attributes: Vec<AttributeResponse>,
}

impl From<Preview> for UploadPreview {
    fn from(p: Preview) -> Self {
        UploadPreview {
            source: p.source.into(),
            extra_columns: p.extra_columns,
            rows_total: p.rows_total,
            rows_accepted: p.rows_accepted,
            rows_rejected: p.rows_rejected,
            leads: p
                .leads
                .into_iter()
                .map(|(line, l)| PreviewLead {
                    line,
                    external_id: l.external_id,
                    name: l.name,
                    role: l.role,
                    company: l.company,
                    industry: l.industry,
                    location: l.location,
                    linkedin_bio: l.linkedin_bio,
                    attributes: attributes(l.attributes),
                })
                .collect(),
            errors: p.errors.iter().map(problem_item).collect(),
        }
    }
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
