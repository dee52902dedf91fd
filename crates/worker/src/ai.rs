//! The AI layer inside a job: cache, then the provider through the gate, then the outcome as a completion.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use leadscore_core::prompt::{PROMPT_VERSION, Prompt, build_prompt};
use leadscore_core::{AiOutcome, AiVerdict, Lead, Offer, RuleScore, Scoring};
use leadscore_llm::{Client, Gate, LlmConfig, LlmError, RedisCache, cache_key};
use leadscore_store::{ClaimedJob, Completion, NewResult, RunUsage, Store};

/// A lead's prompt and its verdict-cache key.
pub struct Prepared {
    prompt: Prompt,
    pub key: String,
}

/// How long a job waits when the breaker is open without a known end (the key or model was rejected). Short on
/// purpose: what holds the work back is the run's `blocked` status (claims skip blocked runs), and a job that was
/// in flight while an operator resumed the run must not sit out a long deferral after the resume.
const BLOCKED_RETRY: Duration = Duration::from_secs(2);

/// Where verdicts are cached.
enum Cache {
    /// Embedded mode: the `verdict_cache` table.
    Database,
    /// Cluster mode: Redis, shared by every worker.
    Redis(Box<RedisCache>),
}

/// The AI layer of a worker pool. Built once per process from the environment (see [`Ai::from_config`]).
pub struct Ai {
    client: Client,
    cache: Cache,
    /// When runs were last marked blocked (epoch ms), so a burst of blocked jobs marks them once.
    last_block_ms: AtomicI64,
}

impl std::fmt::Debug for Ai {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ai").field("model", &self.client.config().model).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AiSetupError {
    #[error("REDIS_URL: {0}")]
    Redis(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl Ai {
    /// The AI layer for `config`, with `gate` (share one gate between the API and the workers of a process).
    pub fn new(config: LlmConfig, gate: Gate) -> Result<Arc<Ai>, AiSetupError> {
        let cache = match &config.redis_url {
            Some(url) => Cache::Redis(
                RedisCache::new(url, &config.redis_prefix, config.cache_ttl)
                    .map(Box::new)
                    .map_err(|e| AiSetupError::Redis(e.to_string()))?,
            ),
            None => Cache::Database,
        };
        Ok(Arc::new(Ai { client: Client::new(config, gate)?, cache, last_block_ms: AtomicI64::new(0) }))
    }

    pub fn from_config(config: LlmConfig) -> Result<Arc<Ai>, AiSetupError> {
        let gate = Gate::for_config(&config).map_err(|e| AiSetupError::Redis(e.to_string()))?;
        Ai::new(config, gate)
    }

    pub fn config(&self) -> &LlmConfig {
        self.client.config()
    }

    pub fn gate(&self) -> &Gate {
        self.client.gate()
    }

    /// The prompt for a lead and its cache key (verdicts are cached per workspace).
    pub fn prepare(&self, workspace: &str, offer: &Offer, lead: &Lead) -> Prepared {
        let prompt = build_prompt(offer, lead);
        let key = cache_key(workspace, &self.config().model, &prompt);
        Prepared { prompt, key }
    }

    /// The cached verdicts among `keys`, in one round trip; a failed lookup is a miss (the cache saves money,
    /// it is not needed for correctness).
    pub async fn cached(&self, store: &Store, keys: &[String]) -> HashMap<String, AiVerdict> {
        match &self.cache {
            Cache::Database => store.cached_verdicts(keys).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "reading the verdict cache failed");
                HashMap::new()
            }),
            Cache::Redis(r) => r.get_many(keys).await,
        }
    }

    /// Stores fresh verdicts, a batch at a time (one commit, or one Redis pipeline).
    pub async fn remember(&self, store: &Store, entries: &[(String, AiVerdict)]) {
        match &self.cache {
            Cache::Database => {
                if let Err(e) = store.cache_verdicts(entries, self.config().cache_ttl).await {
                    tracing::debug!(error = %e, "caching verdicts failed");
                }
            }
            Cache::Redis(r) => r.put_many(entries).await,
        }
    }

    /// Marks the active runs blocked (at most once a second, however many jobs find the breaker open).
    async fn block_runs(&self, store: &Store, reason: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let last = self.last_block_ms.load(Ordering::Relaxed);
        if now - last < 1000
            || self.last_block_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        match store.block_active_runs(reason).await {
            Ok(runs) if !runs.is_empty() => {
                tracing::error!(runs = runs.len(), %reason, "runs blocked until resumed")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "marking runs blocked failed"),
        }
    }

    /// Scores one lead with both layers; see the crate documentation for the outcomes. Returns the completion
    /// and, for a fresh verdict, the cache entry to store.
    pub async fn score(
        &self,
        store: &Store,
        job: ClaimedJob,
        prepared: Prepared,
        cached: Option<AiVerdict>,
        rule: RuleScore,
    ) -> (Completion, Option<(String, AiVerdict)>) {
        let Prepared { prompt, key } = prepared;
        let model = self.config().model.clone();
        let result = |outcome: AiOutcome, tokens: Option<(u64, u64)>, latency: Option<Duration>| NewResult {
            scoring: Scoring::compose(rule.clone(), outcome, prompt.flags.clone()),
            model: Some(model.clone()),
            prompt_version: Some(PROMPT_VERSION.to_owned()),
            prompt_tokens: tokens.map(|t| t.0 as i64),
            completion_tokens: tokens.map(|t| t.1 as i64),
            cost_usd: tokens.map(|(p, c)| self.config().prices.cost(p, c)),
            latency_ms: latency.map(|l| l.as_millis() as i64),
        };
        if let Some(verdict) = cached {
            let r = result(AiOutcome::Verdict { verdict, cached: true }, Some((0, 0)), None);
            return (Completion::Succeeded { job, result: Box::new(r) }, None);
        }
        let attempt = self.client.classify(&prompt).await;
        let tokens = Some((attempt.usage.prompt_tokens, attempt.usage.completion_tokens));
        let latency = Some(attempt.latency);
        // What the attempt was billed for if it ends without a result (an invalid reply costs as much as a good one).
        let spent = RunUsage {
            prompt_tokens: attempt.usage.prompt_tokens as i64,
            completion_tokens: attempt.usage.completion_tokens as i64,
            cost_usd: self.config().prices.cost(attempt.usage.prompt_tokens, attempt.usage.completion_tokens),
        };
        let completion = match attempt.result {
            Ok(verdict) => {
                let entry = (key, verdict.clone());
                let r = result(AiOutcome::Verdict { verdict, cached: false }, tokens, latency);
                return (Completion::Succeeded { job, result: Box::new(r) }, Some(entry));
            }
            Err(LlmError::Blocked(b)) => {
                if b.retry_in.is_none() {
                    self.block_runs(store, &b.reason).await;
                }
                let retry_in =
                    b.retry_in.unwrap_or(BLOCKED_RETRY) + Duration::from_millis(fastrand::u64(0..1000));
                Completion::Deferred {
                    job,
                    reason: format!("waiting: AI calls are paused: {}", b.reason),
                    retry_in,
                    spent,
                }
            }
            Err(e @ LlmError::Fatal { .. }) => {
                let reason = e.to_string();
                self.block_runs(store, &reason).await;
                Completion::Deferred { job, reason, retry_in: BLOCKED_RETRY, spent }
            }
            Err(e) if e.retryable() && job.attempts < job.max_attempts => {
                let hint = match &e {
                    LlmError::Transient { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let retry_in = crate::retry_delay(job.attempts).max(hint.unwrap_or_default());
                Completion::Failed { job, error: e.to_string(), retry_in: Some(retry_in), spent }
            }
            // Out of attempts, or a request the provider will never accept: the lead is scored on its rules and
            // says so; `POST /v1/runs/{id}/retry` tries the AI layer again later.
            Err(e) => {
                let r = result(AiOutcome::Failed { error: e.to_string() }, tokens, latency);
                Completion::Succeeded { job, result: Box::new(r) }
            }
        };
        (completion, None)
    }
}
