//! The chat-completions client. One [`Client::classify`] is one job attempt's worth of work: it may send several
//! requests (transient failures, one retry of an invalid reply, adapting to what the server supports), each
//! through the [`Gate`], and stops at the attempt's deadline; the queue re-schedules what is left.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument;

use leadscore_core::AiVerdict;
use leadscore_core::prompt::{Prompt, reply_schema};
use leadscore_core::reply::parse_reply;
use serde_json::{Value, json};

use crate::config::{LlmConfig, ModelKind};
use crate::gate::{Blocked, Gate, GateError};
use crate::retry::{Backoff, MAX_HINT, retry_hint};

/// Tokens the provider billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Why an attempt produced no verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The breaker is open: the job should wait, not spend an attempt.
    #[error("AI calls are paused: {}", .0.reason)]
    Blocked(Blocked),
    /// The key or the model was rejected (401/403/404); the breaker is now open.
    #[error("the provider rejected the configuration ({status}): {message}")]
    Fatal { status: u16, message: String },
    /// The provider rejected this request (a 4xx other than the above); trying again will not help.
    #[error("the provider rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// The model answered twice without a valid verdict.
    #[error("no valid verdict in the reply: {0}")]
    InvalidReply(String),
    /// Transient failures until the tries or the deadline ran out.
    #[error("{message}")]
    Transient { message: String, retry_after: Option<Duration> },
    /// The shared rate limiter could not be reached until the deadline.
    #[error("the rate limiter is unavailable: {0}")]
    Unavailable(String),
}

impl LlmError {
    /// Whether another attempt later could succeed.
    pub fn retryable(&self) -> bool {
        !matches!(self, LlmError::Rejected { .. })
    }
}

/// What one attempt produced, with everything it cost.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub result: Result<AiVerdict, LlmError>,
    pub usage: Usage,
    /// HTTP requests sent.
    pub calls: u32,
    pub latency: Duration,
}

/// Largest response body read from the provider. A verdict reply is a few kilobytes (at most 4,000 completion
/// tokens); a body past this is cut off and the request counts as failed, so a broken or hostile server cannot
/// make a worker buffer without bound.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

const JSON_SCHEMA: u8 = 0;
const JSON_OBJECT: u8 = 1;
const PLAIN: u8 = 2;

/// See the module documentation. Cheap to share: clone the `Arc` it usually sits in.
pub struct Client {
    http: reqwest::Client,
    config: LlmConfig,
    gate: Gate,
    /// `response_format` in use: stepped down when the server rejects the stronger one.
    format: AtomicU8,
    /// 0 chat, 1 reasoning: corrected when the server rejects `temperature` / `max_tokens`.
    kind: AtomicU8,
}

/// One failed request.
enum CallError {
    Status {
        status: u16,
        message: String,
        param: Option<String>,
        hint: Option<Duration>,
    },
    /// No usable answer; `timed_out`: none within the request timeout.
    Transport {
        message: String,
        timed_out: bool,
    },
}

impl CallError {
    /// The `status` label of `leadscore_llm_requests_total`.
    fn label(&self) -> String {
        match self {
            CallError::Status { status, .. } => status.to_string(),
            CallError::Transport { timed_out: true, .. } => "timeout".into(),
            CallError::Transport { .. } => "error".into(),
        }
    }
}

impl Client {
    pub fn new(config: LlmConfig, gate: Gate) -> Result<Client, reqwest::Error> {
        crate::install_crypto();
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(10).min(config.request_timeout))
            .pool_idle_timeout(Duration::from_secs(60))
            // The prompt holds lead data: it goes to the configured host only, never where a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let kind = AtomicU8::new(u8::from(config.kind == ModelKind::Reasoning));
        Ok(Client { http, config, gate, format: AtomicU8::new(JSON_SCHEMA), kind })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Asks the model for a verdict on `prompt`. See the module documentation.
    pub async fn classify(&self, prompt: &Prompt) -> Attempt {
        let start = Instant::now();
        let give_up_at = start + self.config.deadline;
        let mut attempt = Attempt {
            result: Err(LlmError::InvalidReply(String::new())),
            usage: Usage::default(),
            calls: 0,
            latency: Duration::ZERO,
        };
        let span = tracing::info_span!(
            "llm_call",
            model = %self.config.model,
            requests = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        attempt.result = self
            .tries(prompt, give_up_at, &mut attempt.usage, &mut attempt.calls)
            .instrument(span.clone())
            .await;
        attempt.latency = start.elapsed();
        span.record("requests", attempt.calls);
        span.record("outcome", if attempt.result.is_ok() { "verdict" } else { "error" });
        attempt
    }

    async fn tries(
        &self,
        prompt: &Prompt,
        give_up_at: Instant,
        usage: &mut Usage,
        calls: &mut u32,
    ) -> Result<AiVerdict, LlmError> {
        let tokens = estimate_tokens(prompt);
        let mut backoff = Backoff::new();
        let (mut tries, mut invalid_seen, mut adaptations) = (0u32, false, 0u32);
        loop {
            let wait = tracing::info_span!("rate_limit_wait", tokens);
            self.gate.acquire(tokens, give_up_at).instrument(wait).await.map_err(|e| match e {
                GateError::Blocked(b) => LlmError::Blocked(b),
                GateError::Unavailable(e) => LlmError::Unavailable(e),
            })?;
            tries += 1;
            *calls += 1;
            let failure = match self.call(prompt).await {
                Ok(reply) => {
                    self.gate.success().await;
                    usage.prompt_tokens += reply.usage.prompt_tokens;
                    usage.completion_tokens += reply.usage.completion_tokens;
                    match reply.verdict() {
                        Ok(v) => return Ok(v),
                        // One more try with the same prompt; a second invalid reply ends the attempt.
                        Err(why) if !invalid_seen => {
                            tracing::debug!(reason = %why, "invalid reply; asking once more");
                            invalid_seen = true;
                            continue;
                        }
                        Err(why) => return Err(LlmError::InvalidReply(why)),
                    }
                }
                Err(e) => e,
            };
            let (message, hint) = match failure {
                CallError::Status { status: status @ (300..=399 | 401 | 403 | 404), message, .. } => {
                    let reason =
                        format!("{status} from the provider for model {}: {message}", self.config.model);
                    tracing::error!(
                        "{reason}; AI calls stop until the configuration is fixed or a run is resumed"
                    );
                    self.gate.trip(&reason).await;
                    return Err(LlmError::Fatal { status, message });
                }
                CallError::Status { status: 400 | 422, message, param, .. }
                    if adaptations < 3 && self.adapt(param.as_deref(), &message) =>
                {
                    adaptations += 1;
                    tries -= 1;
                    continue;
                }
                CallError::Status { status, message, hint, .. } if is_transient(status) => {
                    let message = format!("{status} from the provider: {message}");
                    if status == 429 {
                        self.gate.penalize(hint.unwrap_or(Duration::from_secs(1)).min(MAX_HINT)).await;
                    } else {
                        self.gate.failure(&message).await;
                    }
                    (message, hint)
                }
                CallError::Status { status, message, .. } => {
                    return Err(LlmError::Rejected { status, message });
                }
                CallError::Transport { message, .. } => {
                    self.gate.failure(&message).await;
                    (message, None)
                }
            };
            let delay = backoff.next(hint);
            if tries >= self.config.max_tries || Instant::now() + delay > give_up_at || delay > MAX_HINT {
                return Err(LlmError::Transient {
                    message: format!("{message} (after {tries} tries)"),
                    retry_after: hint,
                });
            }
            tracing::debug!(error = %message, ?delay, "transient provider failure; trying again");
            tokio::time::sleep(delay).await;
        }
    }

    /// Adjusts the request to what the server said it does not support. True when something changed.
    fn adapt(&self, param: Option<&str>, message: &str) -> bool {
        let said = |word: &str| param == Some(word) || message.contains(word);
        if said("response_format") || said("json_schema") {
            let from = self.format.load(Ordering::Relaxed);
            if from < PLAIN {
                self.format.store(from + 1, Ordering::Relaxed);
                tracing::warn!(
                    "the server rejected response_format {}; using {} from now on",
                    format_name(from),
                    format_name(from + 1)
                );
                return true;
            }
        }
        if (said("temperature") || said("max_tokens")) && self.kind.swap(1, Ordering::Relaxed) == 0 {
            tracing::warn!(model = %self.config.model, "the model takes no temperature/max_tokens; treating it as a reasoning model");
            return true;
        }
        false
    }

    fn body(&self, prompt: &Prompt) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
        });
        if self.kind.load(Ordering::Relaxed) == 0 {
            body["temperature"] = json!(0);
            body["max_tokens"] = json!(300);
        } else {
            // Reasoning tokens count against this limit too.
            body["max_completion_tokens"] = json!(4000);
        }
        match self.format.load(Ordering::Relaxed) {
            JSON_SCHEMA => {
                body["response_format"] = json!({"type": "json_schema", "json_schema": {
                    "name": "lead_intent", "strict": true, "schema": reply_schema()}});
            }
            JSON_OBJECT => body["response_format"] = json!({"type": "json_object"}),
            _ => {}
        }
        body
    }

    /// Sends one request and records it: its outcome, its duration, and for an answer the tokens and cost billed.
    async fn call(&self, prompt: &Prompt) -> Result<Reply, CallError> {
        let start = Instant::now();
        let span = tracing::info_span!(
            "llm_request",
            otel.kind = "client",
            http.request.method = "POST",
            http.response.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let reply = self.send(prompt).instrument(span.clone()).await;
        metrics::histogram!("leadscore_llm_request_duration_seconds").record(start.elapsed().as_secs_f64());
        let status = match &reply {
            Ok(_) => "200".to_owned(),
            Err(e) => e.label(),
        };
        match &reply {
            Ok(_) => span.record("http.response.status_code", 200),
            Err(CallError::Status { status, .. }) => span.record("http.response.status_code", *status),
            Err(_) => span.record("error", status.as_str()),
        };
        metrics::counter!("leadscore_llm_requests_total", "status" => status).increment(1);
        if let Ok(reply) = &reply {
            let Usage { prompt_tokens, completion_tokens } = reply.usage;
            metrics::counter!("leadscore_llm_tokens_total", "kind" => "prompt").increment(prompt_tokens);
            metrics::counter!("leadscore_llm_tokens_total", "kind" => "completion")
                .increment(completion_tokens);
            // A gauge that only grows: the facade's counters hold whole numbers, and a cost is a fraction of a dollar.
            metrics::gauge!("leadscore_llm_cost_usd_total")
                .increment(self.config.prices.cost(prompt_tokens, completion_tokens));
        }
        reply
    }

    async fn send(&self, prompt: &Prompt) -> Result<Reply, CallError> {
        let mut req =
            self.http.post(format!("{}/chat/completions", self.config.base_url)).json(&self.body(prompt));
        if let Some(key) = &self.config.api_key {
            req = req.bearer_auth(key);
        }
        let response = req.send().await.map_err(|e| transport(&e, self.config.request_timeout))?;
        let status = response.status().as_u16();
        let hint = retry_hint(response.headers());
        if response.status().is_redirection() {
            let to = response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok());
            let message = format!(
                "the provider answered {status} (a redirect to {}), which is not followed: set the base URL to the \
                 address that answers",
                leadscore_core::text::truncate_chars(to.unwrap_or("nowhere"), 200)
            );
            return Err(CallError::Status { status, message, param: None, hint: None });
        }
        let body = read_capped(response, self.config.request_timeout).await?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status != 200 {
            let error = &value["error"];
            let message = error["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
            let param = error["param"].as_str().map(str::to_owned);
            return Err(CallError::Status { status, message, param, hint });
        }
        Ok(Reply::from_json(&value, prompt))
    }
}

/// The response body, at most [`MAX_RESPONSE_BYTES`] of it: a longer one fails the request without being read.
async fn read_capped(mut response: reqwest::Response, timeout: Duration) -> Result<Vec<u8>, CallError> {
    if response.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(&e, timeout))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large() -> CallError {
    CallError::Transport {
        message: format!("the provider's answer is larger than {MAX_RESPONSE_BYTES} bytes"),
        timed_out: false,
    }
}

fn format_name(format: u8) -> &'static str {
    match format {
        JSON_SCHEMA => "json_schema",
        JSON_OBJECT => "json_object",
        _ => "none (free text, tolerant parsing)",
    }
}

fn is_transient(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

fn transport(e: &reqwest::Error, timeout: Duration) -> CallError {
    CallError::Transport { message: describe(e, timeout), timed_out: e.is_timeout() }
}

/// What went wrong, for job errors and logs: reqwest's text names the URL, whose user info (a proxy's
/// password in OPENAI_BASE_URL) is redacted.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("the provider did not answer within {} s", timeout.as_secs_f64())
    } else if e.is_connect() {
        leadscore_core::redact::redact(&format!("cannot connect to the provider: {e}"))
    } else {
        leadscore_core::redact::redact(&format!("request to the provider failed: {e}"))
    }
}

/// Tokens a request will use, for the tokens-per-minute budget: about 4 characters per token plus the reply.
fn estimate_tokens(prompt: &Prompt) -> u32 {
    let chars = prompt.system.len() + prompt.user.len();
    u32::try_from(chars / 4 + 100).unwrap_or(u32::MAX)
}

/// The parts of a 200 reply that matter.
struct Reply {
    content: Option<String>,
    refusal: Option<String>,
    finish_reason: Option<String>,
    has_choice: bool,
    usage: Usage,
}

impl Reply {
    fn from_json(v: &Value, prompt: &Prompt) -> Reply {
        let choice = &v["choices"][0];
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let content = text(&choice["message"]["content"]);
        // Without `usage` (some servers omit it) tokens are estimated, so costs are never silently zero.
        let estimate = || Usage {
            prompt_tokens: u64::from(estimate_tokens(prompt)) - 100,
            completion_tokens: content.as_deref().map_or(0, |c| c.len() as u64 / 4),
        };
        let usage = match (v["usage"]["prompt_tokens"].as_u64(), v["usage"]["completion_tokens"].as_u64()) {
            (Some(p), Some(c)) => Usage { prompt_tokens: p, completion_tokens: c },
            _ => estimate(),
        };
        Reply {
            refusal: text(&choice["message"]["refusal"]),
            finish_reason: text(&choice["finish_reason"]),
            has_choice: choice.is_object(),
            content,
            usage,
        }
    }

    fn verdict(&self) -> Result<AiVerdict, String> {
        if !self.has_choice {
            return Err("the reply has no choices".into());
        }
        if let Some(r) = &self.refusal {
            return Err(format!("the model refused: {r}"));
        }
        match self.finish_reason.as_deref() {
            Some("length") => return Err("the reply was cut off at the token limit".into()),
            Some("content_filter") => return Err("the provider's content filter withheld the reply".into()),
            _ => {}
        }
        parse_reply(self.content.as_deref().unwrap_or_default()).map_err(|e| e.to_string())
    }
}
