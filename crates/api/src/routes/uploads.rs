//! `/v1/uploads/{id}`: an upload's report and all its rejected rows.

use axum::extract::{Path, State};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::AppState;
use crate::extract::{ApiQuery, PageParams, Workspace};
use crate::problem::{ApiError, Problem, ProblemItem};

/// An upload's report.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadReport {
    pub id: String,
    pub filename: Option<String>,
    pub rows_total: i64,
    pub rows_accepted: i64,
    pub rows_rejected: i64,
    /// Columns of the file that are not lead fields, kept as attributes.
    pub extra_columns: Vec<String>,
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
