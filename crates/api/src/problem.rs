//! Errors as RFC 9457 `application/problem+json`, naming the field or line at fault.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use leadscore_core::FieldError;
use leadscore_core::csv::HeaderError;
use leadscore_store::IngestError;
use leadscore_store::workbook::WorkbookError;
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "https://leadscore.dev/problems/validation",
    "title": "The request body is invalid",
    "status": 422,
    "detail": "ideal_use_cases: must list at least one ideal use case",
    "errors": [{"field": "ideal_use_cases", "message": "must list at least one ideal use case"}]
}))]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// What exactly is wrong, one entry per field or row: the first 100 (`total` counts them all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemItem>,
    /// How many things are wrong in all (`errors` may list fewer); present with `errors`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
}

/// Most entries a problem's `errors` lists: the answer to a hostile body stays small.
pub const MAX_PROBLEM_ERRORS: usize = 100;

/// The `Retry-After` of a `503`.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 2;

/// Most field errors spelled out in a problem's `detail` (all of them are counted).
const MAX_DETAIL_ERRORS: usize = 5;

/// One thing wrong with the input.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemItem {
    /// The JSON field at fault, e.g. `ideal_use_cases[2]`, or the query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The CSV line at fault (the header is line 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The CSV column at fault, as named in the file's header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub message: String,
}

impl ProblemItem {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ProblemItem { field: Some(field.into()), line: None, column: None, message: message.into() }
    }
}

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{what} {id:?} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("no route {0}")]
    NoRoute(String),
    #[error("{detail}")]
    Invalid { detail: String, errors: Vec<ProblemItem> },
    /// A query parameter (cursor, limit, filter) that cannot be read: 400, naming it.
    #[error("{detail}")]
    BadParam { detail: String, errors: Vec<ProblemItem> },
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Conflict(String),
    /// A dependency is down, or the request ran out of time: `503` with `Retry-After`.
    #[error("{0}")]
    Unavailable(String),
    /// `503` without `Retry-After`: sending the same request again would not help by itself (a run that is
    /// blocked on its configuration, a waiting route whose run is still going, which a retry would score again).
    #[error("{0}")]
    NotNow(String),
    /// A per-key limit (`crate::limits`): answered 429 with `Retry-After: retry_after` (seconds).
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn not_found(what: &'static str, id: &str) -> Self {
        ApiError::NotFound { what, id: id.to_owned() }
    }

    pub fn invalid_fields(errors: &[FieldError]) -> Self {
        let mut detail =
            errors.iter().take(MAX_DETAIL_ERRORS).map(ToString::to_string).collect::<Vec<_>>().join("; ");
        if errors.len() > MAX_DETAIL_ERRORS {
            detail.push_str(&format!("; and {} more", errors.len() - MAX_DETAIL_ERRORS));
        }
        ApiError::Invalid {
            detail,
            errors: errors.iter().map(|e| ProblemItem::field(&e.field, &e.message)).collect(),
        }
    }

    /// A query parameter that cannot be read (400).
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::BadParam {
            detail: format!("{param}: {message}"),
            errors: vec![ProblemItem::field(param, message)],
        }
    }

    pub fn invalid_param(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::Invalid {
            detail: format!("{field}: {message}"),
            errors: vec![ProblemItem::field(field, message)],
        }
    }

    /// The `Retry-After` (seconds) the answer carries: a 429 says when its limit frees; a 503 asks for a short
    /// pause (the database or Redis coming back, a request that ran past its deadline), so clients that follow
    /// `Retry-After` neither hammer the server nor give up.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            ApiError::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Malformed(_) | ApiError::BadParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) | ApiError::NotNow(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::NotFound { .. } => ("not-found", "Not found"),
            ApiError::NoRoute(_) => ("no-route", "No such route"),
            ApiError::Invalid { .. } => ("validation", "The request is invalid"),
            ApiError::Malformed(_) => ("malformed", "The request is malformed"),
            ApiError::BadParam { .. } => ("bad-parameter", "A query parameter is invalid"),
            ApiError::TooLarge(_) => ("too-large", "The request is too large"),
            ApiError::UnsupportedMediaType(_) => ("unsupported-media-type", "Unsupported content type"),
            ApiError::Unauthorized(_) => ("unauthorized", "Missing or unknown API key"),
            ApiError::Conflict(_) => ("conflict", "Not possible in the current state"),
            ApiError::Unavailable(_) | ApiError::NotNow(_) => ("unavailable", "Temporarily unavailable"),
            ApiError::TooManyRequests { .. } => ("too-many-requests", "Too many requests with this API key"),
            ApiError::Internal(_) => ("internal", "Internal error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (kind, title) = self.kind_and_title();
        let detail = match self {
            // Internal details go to the log, not to the client.
            ApiError::Internal(_) => "an internal error occurred; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let (errors, total) = match self {
            ApiError::Invalid { errors, .. } | ApiError::BadParam { errors, .. } if !errors.is_empty() => {
                (errors.iter().take(MAX_PROBLEM_ERRORS).cloned().collect(), Some(errors.len()))
            }
            _ => (Vec::new(), None),
        };
        Problem {
            kind: format!("https://leadscore.dev/problems/{kind}"),
            title: title.to_owned(),
            status: self.status().as_u16(),
            detail,
            errors,
            total,
        }
    }
}

impl From<leadscore_store::StoreError> for ApiError {
    fn from(e: leadscore_store::StoreError) -> Self {
        use leadscore_store::StoreError;
        match e {
            StoreError::Db(sqlx_err) if is_unavailable(&sqlx_err) => {
                // A connection error may quote the database URL: its password is redacted.
                ApiError::Unavailable(leadscore_core::redact::redact(&format!(
                    "the database is unavailable: {sqlx_err}"
                )))
            }
            StoreError::Db(sqlx_err) if is_bad_value(&sqlx_err) => ApiError::Malformed(format!(
                "the request holds a value that cannot be stored or looked up: {sqlx_err}"
            )),
            StoreError::IdempotencyMismatch => {
                ApiError::invalid_param("Idempotency-Key", "was already used with a different request body")
            }
            StoreError::BadCursor => ApiError::bad_param("cursor", "not a cursor of this list"),
            StoreError::TooManyActiveRuns { active, cap } => ApiError::TooManyRequests {
                detail: format!(
                    "the workspace has {active} unfinished runs and at most {cap} are allowed: wait for one to \
                     finish, or cancel one"
                ),
                retry_after: crate::limits::BUSY_RETRY_AFTER_SECS,
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// How a failed upload is answered: the reader's message as `detail`, with the status of its kind.
impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Interrupted(_) | IngestError::Unreadable(_) | IngestError::Csv(_) => {
                ApiError::Malformed(e.to_string())
            }
            IngestError::NotCsv { .. } => ApiError::UnsupportedMediaType(e.to_string()),
            IngestError::TooManyBytes { .. } | IngestError::TooManyRows { .. } => {
                ApiError::TooLarge(e.to_string())
            }
            IngestError::Header(h) => header_problem(&h),
            IngestError::Workbook(WorkbookError::TooLarge) => ApiError::TooLarge(e.to_string()),
            IngestError::Workbook(WorkbookError::Unsupported(_)) => {
                ApiError::UnsupportedMediaType(e.to_string())
            }
            IngestError::Workbook(WorkbookError::NoSuchSheet { .. }) => {
                ApiError::invalid_param("sheet", e.to_string())
            }
            IngestError::Workbook(_) => ApiError::Invalid { detail: e.to_string(), errors: Vec::new() },
            IngestError::Store(e) => ApiError::from(e),
            IngestError::Spool(_) | IngestError::ReaderPanicked(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// A header that makes the file unusable: 422 with the reason (missing columns are listed one by one).
fn header_problem(e: &HeaderError) -> ApiError {
    let errors = match e {
        HeaderError::MissingColumns { missing, .. } => missing
            .iter()
            .map(|c| ProblemItem {
                field: None,
                line: Some(1),
                column: Some((*c).to_owned()),
                message: "required column is missing".into(),
            })
            .collect(),
        _ => vec![ProblemItem { field: None, line: Some(1), column: None, message: e.to_string() }],
    };
    ApiError::Invalid { detail: e.to_string(), errors }
}

/// A PostgreSQL "data exception" (SQLSTATE class 22, e.g. a NUL character in a text value): the client's input,
/// not a fault of the server.
fn is_bad_value(e: &leadscore_store::sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|code| code.starts_with("22"))
}

fn is_unavailable(e: &leadscore_store::sqlx::Error) -> bool {
    use leadscore_store::sqlx::Error;
    matches!(e, Error::Io(_) | Error::PoolTimedOut | Error::PoolClosed | Error::Tls(_))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(msg) | ApiError::Unavailable(msg) = &self {
            tracing::error!(error = %msg, "request failed");
        }
        let status = self.status();
        let mut response = (status, axum::Json(self.problem())).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(
            self,
            ApiError::TooLarge(_) | ApiError::UnsupportedMediaType(_) | ApiError::TooManyRequests { .. }
        ) {
            // The body may be unread: tell the client not to reuse this connection.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
