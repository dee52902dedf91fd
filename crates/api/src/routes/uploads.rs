//! `/v1/uploads/{id}`: an upload's report and all its rejected rows.

use axum::extract::{Path, State};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::AppState;
use crate::extract::{ApiQuery, PageParams, Workspace};
use crate::problem::{ApiError, Problem, ProblemItem};

/// How the file was read: the encoding and delimiter found (or declared), and which of its columns fed each
/// lead field (`name` from `First Name` + `Last Name`, `location` from `City` + `State/Region` +
/// `Country/Region`, ...). A field with no columns is empty for every lead.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"format": "csv", "encoding": "windows-1252", "delimiter": ",", "fields": [
    {"field": "name", "columns": ["First Name", "Last Name"]}, {"field": "role", "columns": ["Job Title"]},
    {"field": "company", "columns": ["Company Name"]}, {"field": "industry", "columns": ["Industry"]},
    {"field": "location", "columns": ["City", "Country/Region"]}, {"field": "linkedin_bio", "columns": []},
    {"field": "external_id", "columns": ["Record ID"]}
]}))]
pub struct SourceBody {
    /// `csv`, or `xlsx` for an Excel workbook; empty for uploads stored before it was recorded.
    pub format: String,
    /// The sheet read, for a workbook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// The text encoding's name (`UTF-8`, `UTF-16LE`, `windows-1252`, ...); empty for uploads stored before it
    /// was recorded.
    pub encoding: String,
    /// `,`, `;` or a tab.
    pub delimiter: String,
    /// Every lead field with the columns it was read from, in a fixed order.
    pub fields: Vec<FieldSourceBody>,
}

/// The columns one lead field was read from.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldSourceBody {
    pub field: String,
    pub columns: Vec<String>,
}

impl From<leadscore_core::csv::SourceReport> for SourceBody {
    fn from(s: leadscore_core::csv::SourceReport) -> Self {
        SourceBody {
            format: s.format,
            sheet: s.sheet,
            encoding: s.encoding,
            delimiter: s.delimiter,
            fields: s
                .fields
                .into_iter()
                .map(|f| FieldSourceBody { field: f.field, columns: f.columns })
                .collect(),
        }
    }
}

/// An upload's report.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadReport {
    pub id: String,
    pub filename: Option<String>,
    pub rows_total: i64,
    pub rows_accepted: i64,
    pub rows_rejected: i64,
    /// Columns of the file kept as attributes: the ones that are not lead fields, the parts of a composed field
    /// (`First Name`, `City`, ...), and a CRM's record id column.
    pub extra_columns: Vec<String>,
    pub source: SourceBody,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub errors_url: String,
    pub leads_url: String,
}

/// One page of an upload's rejected rows, in line order.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadErrorPage {
    pub items: Vec<ProblemItem>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path, description = "Upload id")),
    responses(
        (status = 200, description = "The upload's report", body = UploadReport),
        (status = 404, description = "No such upload in this workspace", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_upload(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
) -> Result<axum::Json<UploadReport>, ApiError> {
    let u = state.store.get_upload(&ws, &id).await?.ok_or_else(|| ApiError::not_found("upload", &id))?;
    Ok(axum::Json(UploadReport {
        errors_url: format!("/v1/uploads/{}/errors", u.id),
        leads_url: format!("/v1/leads?upload_id={}", u.id),
        id: u.id,
        filename: u.filename,
        rows_total: u.rows_total,
        rows_accepted: u.rows_accepted,
        rows_rejected: u.rows_rejected,
        extra_columns: u.extra_columns,
        source: u.source.into(),
        created_at: u.created_at,
    }))
}

#[utoipa::path(get, path = "/v1/uploads/{id}/errors", tag = "uploads",
    params(
        ("id" = String, Path, description = "Upload id"),
        ("limit" = Option<i32>, Query, minimum = 1, maximum = 1000, description = "Items per page, 1 to 1000 (default 50)"),
        ("cursor" = Option<String>, Query, pattern = "^([0-9]{1,18})?$", description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "Rejected rows with line, column and reason", body = UploadErrorPage),
        (status = 400, description = "Bad cursor or limit (the parameter is named)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such upload in this workspace", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_upload_errors(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<axum::Json<UploadErrorPage>, ApiError> {
    let page = params.page()?;
    // The cursor is a line number: a non-negative i64.
    if page.after.as_deref().is_some_and(|c| !c.parse::<i64>().is_ok_and(|n| n >= 0)) {
        return Err(ApiError::bad_param("cursor", "not a cursor of this list"));
    }
    let errors = state
        .store
        .list_upload_errors(&ws, &id, &page)
        .await?
        .ok_or_else(|| ApiError::not_found("upload", &id))?;
    Ok(axum::Json(UploadErrorPage {
        items: errors
            .items
            .into_iter()
            .map(|e| ProblemItem {
                field: None,
                line: Some(e.line as u64),
                column: e.column,
                message: e.message,
            })
            .collect(),
        next_cursor: errors.next_cursor,
    }))
}
