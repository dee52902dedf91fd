//! Request extractors whose failures are problem documents: JSON bodies, pagination and the workspace.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use leadscore_store::{DEFAULT_WORKSPACE, Page};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use crate::AppState;
use crate::problem::ApiError;

/// Largest JSON body accepted (uploads have their own, much larger limit).
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

/// A JSON body: `application/json` required, size-capped, with precise errors for bad syntax (400) and for
/// valid JSON of the wrong shape (422, naming the field).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected Content-Type: application/json, got {:?}",
                if content_type.is_empty() { "nothing" } else { content_type }
            )));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_JSON_BYTES).await.map_err(|_| {
            ApiError::TooLarge(format!("the JSON body is larger than {MAX_JSON_BYTES} bytes"))
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::Malformed(format!("malformed JSON: {e}"))
            }
            Category::Data => {
                let message = e.to_string();
                let field = backticked(&message).unwrap_or("(body)").to_owned();
                ApiError::Invalid {
                    detail: message.clone(),
                    errors: vec![crate::problem::ProblemItem::field(field, message)],
                }
            }
        }
    })
}

/// The first `name` in a serde message such as "unknown field `name`, expected ...".
fn backticked(message: &str) -> Option<&str> {
    let rest = message.split_once('`')?.1;
    Some(rest.split_once('`')?.0)
}

/// Longest cursor accepted, in characters (what the OpenAPI document's `maxLength` counts): every cursor this API
/// hands out (an id, a line number, `lead~offer`) is far shorter.
pub const MAX_CURSOR_CHARS: usize = 256;

/// Cursor pagination parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 1000 (default 50).
    #[param(value_type = Option<i32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    cursor: Option<String>,
}

impl PageParams {
    pub fn new(limit: Option<String>, cursor: Option<String>) -> Self {
        PageParams { limit, cursor }
    }

    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = match &self.limit {
            None => 50,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=Page::MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_param(
                        "limit",
                        format!("must be a whole number from 1 to {}", Page::MAX_LIMIT),
                    ));
                }
            },
        };
        let after = self.cursor.clone().filter(|c| !c.is_empty());
        if after
            .as_deref()
            .is_some_and(|c| c.chars().count() > MAX_CURSOR_CHARS || c.contains(char::is_control))
        {
            // Never a cursor this API made; a NUL would even be refused by PostgreSQL as a 500.
            return Err(ApiError::bad_param("cursor", "not a cursor of this list"));
        }
        Ok(Page { limit, after })
    }
}

/// Parses the query string into `T`, answering a problem naming the parameter on failure.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad_param(&query_param(&e.body_text()), e.body_text()))
    }
}

/// The parameter a query-string error names (serde's "... field `name` ..."), or `(query)`.
fn query_param(message: &str) -> String {
    backticked(message).unwrap_or("(query)").to_owned()
}

/// The workspace a request acts in: the one of its API key, or `default` without a key on a keyless server
/// (see [`crate::guard`]). A revoked key is refused like an unknown one.
#[derive(Debug, Clone)]
pub struct Workspace(pub String);

impl FromRequestParts<AppState> for Workspace {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Already resolved by the limits layer (`crate::limits::admit`): one key lookup per request.
        if let Some(ws) = parts.extensions.get::<Workspace>() {
            return Ok(ws.clone());
        }
        let header = parts.headers.get(AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
        match header {
            Some(value) => {
                let key = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| ApiError::Unauthorized("use `Authorization: Bearer <API key>`".into()))?;
                let ws = state.store.workspace_for_key(key).await?;
                ws.map(Workspace)
                    .ok_or_else(|| ApiError::Unauthorized("the API key is not known or was revoked".into()))
            }
            None if !state.access.allows_no_key(&state.store).await? => {
                Err(ApiError::Unauthorized("this server requires `Authorization: Bearer <API key>`".into()))
            }
            None => Ok(Workspace(DEFAULT_WORKSPACE.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_of_serde_errors() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u8,
        }
        match parse_json::<T>(br#"{"a": 1, "b": 2}"#) {
            Err(ApiError::Invalid { errors, .. }) => assert_eq!(errors[0].field.as_deref(), Some("b")),
            other => panic!("{other:?}"),
        }
        match parse_json::<T>(br#"{}"#) {
            Err(ApiError::Invalid { errors, .. }) => assert_eq!(errors[0].field.as_deref(), Some("a")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_json::<T>(br#"{"a": "#), Err(ApiError::Malformed(_))));
    }
}
