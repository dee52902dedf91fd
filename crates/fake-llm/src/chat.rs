//! The `/v1/chat/completions` handler: parses the request, checks key, model and parameters as a real provider
//! does, and writes the answer or the injected failure (429 with rate-limit headers, 5xx, hang, malformed,
//! truncated, refusal, no choices) in OpenAI's shapes.
//!
//! Separate from the server's state and control routes: this is the provider imitation itself.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::verdict::{fnv, verdict_for};
use crate::{FakeConfig, FakeLlm, Fault};

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    temperature: Option<f64>,
    max_tokens: Option<u64>,
    response_format: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: String,
}

fn is_reasoning_model(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    m.starts_with("gpt-5") || (m.starts_with('o') && m[1..].starts_with(|c: char| c.is_ascii_digit()))
}

fn error(status: StatusCode, message: &str, param: Option<&str>, code: &str) -> Response {
    let body =
        json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}});
    (status, Json(body)).into_response()
}

pub(crate) async fn chat(
    State(fake): State<FakeLlm>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req: Result<ChatRequest, _> = serde_json::from_slice(&body);
    let user = req
        .as_ref()
        .ok()
        .and_then(|r| r.messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.clone()))
        .unwrap_or_default();
    let token =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let expected = fake.config().api_key;
    let auth_ok = expected.as_deref().is_none_or(|k| token == Some(k));
    let (fault, wait, config) = fake.admit(fnv(&user), auth_ok);
    let (response, status, usage) = answer(req, &user, fault, wait, &config, &fake).await;
    fake.finish(status, usage.0, usage.1);
    response
}

type Answer = (Response, Option<StatusCode>, (u64, u64));

async fn answer(
    req: Result<ChatRequest, serde_json::Error>,
    user: &str,
    fault: Fault,
    wait: Option<Duration>,
    config: &FakeConfig,
    fake: &FakeLlm,
) -> Answer {
    let plain = |r: Response| {
        let s = r.status();
        (r, Some(s), (0, 0))
    };
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            return plain(error(
                StatusCode::BAD_REQUEST,
                &format!("invalid body: {e}"),
                None,
                "invalid_body",
            ));
        }
    };
    let format = req
        .response_format
        .as_ref()
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("none")
        .to_owned();
    *fake.lock().stats.response_formats.entry(format.clone()).or_default() += 1;
    if fault == Fault::Unauthorized {
        return plain(error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            None,
            "invalid_api_key",
        ));
    }
    if config.model.as_deref().is_some_and(|m| m != req.model) {
        let msg = format!("The model `{}` does not exist or you do not have access to it.", req.model);
        return plain(error(StatusCode::NOT_FOUND, &msg, None, "model_not_found"));
    }
    if is_reasoning_model(&req.model) {
        if req.temperature.is_some_and(|t| t != 1.0) {
            let msg = "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is supported.";
            return plain(error(StatusCode::BAD_REQUEST, msg, Some("temperature"), "unsupported_value"));
        }
        if req.max_tokens.is_some() {
            let msg = "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.";
            return plain(error(StatusCode::BAD_REQUEST, msg, Some("max_tokens"), "unsupported_parameter"));
        }
    }
    if (format == "json_schema" && config.no_json_schema)
        || (format == "json_object" && config.no_json_object)
    {
        let msg = format!(
            "Invalid parameter: 'response_format' of type '{format}' is not supported with this model."
        );
        return plain(error(StatusCode::BAD_REQUEST, &msg, Some("response_format"), "invalid_parameter"));
    }
    let delay =
        config.latency_ms + if config.jitter_ms > 0 { fastrand::u64(0..=config.jitter_ms) } else { 0 };
    match fault {
        Fault::RateLimited => {
            let wait = wait.unwrap_or(Duration::from_millis(config.retry_after_ms));
            return plain(rate_limited(wait, config.rpm));
        }
        Fault::ServerError => {
            return plain(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error.",
                None,
                "server_error",
            ));
        }
        Fault::Unavailable => {
            return plain(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The engine is currently overloaded.",
                None,
                "overloaded",
            ));
        }
        Fault::Timeout => {
            tokio::time::sleep(Duration::from_millis(config.hang_ms)).await;
            return (StatusCode::GATEWAY_TIMEOUT.into_response(), None, (0, 0));
        }
        _ => {}
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (intent, reasoning) = verdict_for(user);
    let verdict = json!({"intent": intent, "reasoning": reasoning}).to_string();
    let (content, finish, refusal) = match fault {
        Fault::Malformed => {
            fake.lock().stats.malformed += 1;
            (Some(format!("I would say this lead is {intent} intent.")), "stop", None)
        }
        Fault::Truncated => (Some(verdict[..verdict.len() / 2].to_owned()), "length", None),
        Fault::Refusal => (None, "stop", Some("I'm sorry, I can't help with that.")),
        _ if format == "none" => {
            (Some(format!("Here is my assessment:\n```json\n{verdict}\n```")), "stop", None)
        }
        _ => (Some(verdict), "stop", None),
    };
    let prompt_chars: usize = req.messages.iter().map(|m| m.content.chars().count()).sum();
    let prompt_tokens = (prompt_chars as u64).div_ceil(4) + 4 * req.messages.len() as u64;
    let completion_tokens = content.as_deref().map_or(8, |c| (c.chars().count() as u64).div_ceil(4));
    let choices = if fault == Fault::NoChoices {
        json!([])
    } else {
        json!([{"index": 0, "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish}])
    };
    let body = json!({
        "id": format!("chatcmpl-fake-{:x}", fastrand::u64(..)),
        "object": "chat.completion",
        "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "model": req.model,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    });
    (Json(body).into_response(), Some(StatusCode::OK), (prompt_tokens, completion_tokens))
}

/// A 429 with the headers OpenAI sends: `retry-after` (seconds), `retry-after-ms` and `x-ratelimit-*`.
fn rate_limited(wait: Duration, rpm: Option<u32>) -> Response {
    let mut r =
        error(StatusCode::TOO_MANY_REQUESTS, "Rate limit reached for requests.", None, "rate_limit_exceeded");
    let h = r.headers_mut();
    let ms = wait.as_millis().max(1);
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("retry-after", ms.div_ceil(1000).to_string());
    put("retry-after-ms", ms.to_string());
    put("x-ratelimit-limit-requests", rpm.unwrap_or(0).to_string());
    put("x-ratelimit-remaining-requests", "0".into());
    put("x-ratelimit-reset-requests", format!("{:.3}s", wait.as_secs_f64()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_models_are_recognised() {
        assert!(
            is_reasoning_model("o3-mini") && is_reasoning_model("gpt-5-mini") && is_reasoning_model("o1")
        );
        assert!(!is_reasoning_model("gpt-4o-mini") && !is_reasoning_model("ollama"));
    }
}
