//! Errors as RFC 9457 `application/problem+json`, naming the field or line at fault.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use leadscore_core::FieldError;
use leadscore_core::csv::HeaderError;
use leadscore_store::IngestError;
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
    /// What exactly is wrong, one entry per field or row.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemItem>,
}

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
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn not_found(what: &'static str, id: &str) -> Self {
        ApiError::NotFound { what, id: id.to_owned() }
    }

    pub fn invalid_fields(errors: &[FieldError]) -> Self {
        ApiError::Invalid {
            detail: errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            errors: errors.iter().map(|e| ProblemItem::field(&e.field, &e.message)).collect(),
        }
    }

    pub fn invalid_param(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::Invalid {
            detail: format!("{field}: {message}"),
            errors: vec![ProblemItem::field(field, message)],
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::NotFound { .. } => ("not-found", "Not found"),
            ApiError::NoRoute(_) => ("no-route", "No such route"),
            ApiError::Invalid { .. } => ("validation", "The request is invalid"),
            ApiError::Malformed(_) => ("malformed", "The request is malformed"),
            ApiError::TooLarge(_) => ("too-large", "The request is too large"),
            ApiError::UnsupportedMediaType(_) => ("unsupported-media-type", "Unsupported content type"),
            ApiError::Unauthorized(_) => ("unauthorized", "Missing or unknown API key"),
            ApiError::Conflict(_) => ("conflict", "Not possible in the current state"),
            ApiError::Unavailable(_) => ("unavailable", "Temporarily unavailable"),
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
        let errors = match self {
            ApiError::Invalid { errors, .. } => errors.clone(),
            _ => Vec::new(),
        };
        Problem {
            kind: format!("https://leadscore.dev/problems/{kind}"),
            title: title.to_owned(),
            status: self.status().as_u16(),
            detail,
            errors,
        }
    }
}

impl From<leadscore_store::StoreError> for ApiError {
    fn from(e: leadscore_store::StoreError) -> Self {
        use leadscore_store::StoreError;
        match e {
            StoreError::Db(sqlx_err) if is_unavailable(&sqlx_err) => {
                ApiError::Unavailable(format!("the database is unavailable: {sqlx_err}"))
            }
            StoreError::IdempotencyMismatch => {
                ApiError::invalid_param("Idempotency-Key", "was already used with a different request body")
            }
            StoreError::BadCursor => ApiError::invalid_param("cursor", "not a cursor of this list"),
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
            IngestError::Store(e) => ApiError::from(e),
            IngestError::ReaderPanicked(_) => ApiError::Internal(e.to_string()),
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
        if matches!(self, ApiError::TooLarge(_) | ApiError::UnsupportedMediaType(_)) {
            // The body may be unread: tell the client not to reuse this connection.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
