//! The worker pool: claims jobs in batches up to its free slots, scores each lead (rule layer; the AI layer
//! joins here), and writes completions in batches. Runs inside `leadscore serve` (embedded) and as
//! `leadscore-worker` processes (cluster); any number of pools can share one database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadscore_core::prompt::injection_suspected;
use leadscore_core::{AiOutcome, Flag, Rules, Scoring};
use leadscore_store::{ClaimedJob, Completion, NewResult, Store};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::Instrument;

/// How a pool works.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Identifies this pool's leases; unique per process.
    pub id: String,
    /// Jobs in flight at once.
    pub concurrency: usize,
    /// How long a claimed job stays ours without renewal; renewed every third of it.
    pub lease: Duration,
    /// How long an idle pool waits before looking for jobs again.
    pub poll: Duration,
    /// How long to wait for in-flight jobs on shutdown before releasing them.
    pub drain: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            concurrency: 64,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(250),
            drain: Duration::from_secs(20),
        }
    }
}

/// Completions written per transaction at most.
const WRITE_BATCH: usize = 256;

/// Runs the pool until `shutdown` turns true, then drains: stops claiming, lets in-flight jobs finish within
/// `config.drain`, writes their completions; jobs still running after that keep their lease and return to the
/// queue when it expires.
pub async fn run(store: Store, config: WorkerConfig, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let (done_tx, done_rx) = mpsc::channel::<Completion>(config.concurrency * 2);
    let writer = tokio::spawn(write_completions(store.clone(), config.id.clone(), done_rx));
    let upkeep = tokio::spawn(maintain(store.clone(), config.clone(), shutdown.clone()));
    let listener = tokio::spawn(listen(store.clone()));
    let rules: RulesCache = Arc::default();
    tracing::info!(worker = %config.id, concurrency = config.concurrency, "worker pool started");
    let mut backoff = config.poll;
    while !*shutdown.borrow() {
        let free = slots.available_permits();
        if free == 0 {
            let permit =
                tokio::select! { p = slots.clone().acquire_owned() => p, _ = shutdown.changed() => continue };
            drop(permit);
            continue;
        }
        let jobs = match store.claim_jobs(&config.id, free, config.lease).await {
            Ok(jobs) => {
                backoff = config.poll;
                jobs
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming jobs failed; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(10));
                Vec::new()
            }
        };
        if jobs.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {},
                () = store.jobs_enqueued() => {},
                _ = shutdown.changed() => {},
            }
            continue;
        }
        for job in jobs {
            let Ok(permit) = slots.clone().acquire_owned().await else { break };
            let (store, done, rules) = (store.clone(), done_tx.clone(), rules.clone());
            let span =
                tracing::info_span!("job", run = %job.run_id, lead = %job.lead_id, attempt = job.attempts);
            tokio::spawn(
                async move {
                    let completion = process(&store, &rules, job).await;
                    let _ = done.send(completion).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
    tracing::info!(worker = %config.id, "draining: no new claims");
    let all = u32::try_from(config.concurrency).unwrap_or(u32::MAX);
    if tokio::time::timeout(config.drain, slots.acquire_many(all)).await.is_err() {
        tracing::warn!("drain deadline passed; unfinished jobs return to the queue when their lease expires");
    }
    drop(done_tx);
    let _ = writer.await;
    upkeep.abort();
    listener.abort();
    tracing::info!(worker = %config.id, "worker pool stopped");
}

type RulesCache = Arc<Mutex<HashMap<String, Arc<Rules>>>>;

/// Scores one job. Never panics the pool: every failure becomes a completion.
async fn process(store: &Store, rules: &RulesCache, job: ClaimedJob) -> Completion {
    let inputs = match store.job_inputs(&job.run_id, &job.lead_id).await {
        Ok(Some(inputs)) => inputs,
        Ok(None) => {
            return Completion::Failed {
                job,
                error: "the lead or its run no longer exists".into(),
                retry_in: None,
            };
        }
        Err(e) => {
            return Completion::Failed {
                retry_in: Some(retry_delay(job.attempts)),
                job,
                error: e.to_string(),
            };
        }
    };
    let (_, offer, lead) = inputs;
    let run_rules = {
        let mut cache = rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.entry(job.run_id.clone()).or_insert_with(|| Arc::new(Rules::for_offer(&offer))).clone()
    };
    let flags = if injection_suspected(&lead) { vec![Flag::PromptInjection] } else { vec![] };
    // The AI layer is not wired in yet: results are rules-only and say so.
    let scoring = Scoring::compose(run_rules.score(&lead), AiOutcome::Skipped, flags);
    let result = NewResult {
        scoring,
        model: None,
        prompt_version: None,
        prompt_tokens: None,
        completion_tokens: None,
        cost_usd: None,
        latency_ms: None,
    };
    Completion::Succeeded { job, result: Box::new(result) }
}

/// Exponential backoff with full jitter: up to 2^attempts seconds, capped at 5 minutes.
pub fn retry_delay(attempts: i64) -> Duration {
    let cap_ms = 1000u64.saturating_mul(1 << attempts.clamp(0, 8)).min(300_000);
    let jitter = uuid::Uuid::new_v4().as_u128() as u64 % cap_ms.max(1);
    Duration::from_millis(jitter.max(100))
}

/// Writes completions in batches: everything that arrived while the previous batch was written.
async fn write_completions(store: Store, worker: String, mut rx: mpsc::Receiver<Completion>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let mut delay = Duration::from_millis(100);
        loop {
            match store.complete_jobs(&worker, &batch).await {
                Ok(applied) => {
                    if applied < batch.len() as u64 {
                        tracing::info!(
                            stale = batch.len() as u64 - applied,
                            "ignored completions of jobs no longer leased"
                        );
                    }
                    break;
                }
                Err(e) => {
                    // Keep the batch: the leases still hold for a while, and losing it would re-score leads.
                    tracing::warn!(error = %e, "writing completions failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
        if let Err(e) = store.finish_idle_runs().await {
            tracing::warn!(error = %e, "finishing runs failed");
        }
    }
}

/// Keeps a `LISTEN` connection open (Postgres), reconnecting after failures; polling covers the gaps.
async fn listen(store: Store) {
    loop {
        if let Err(e) = store.listen_for_jobs().await {
            tracing::debug!(error = %e, "job notifications interrupted; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Renews this pool's leases, rescues expired ones (any pool may) and finishes idle runs.
async fn maintain(store: Store, config: WorkerConfig, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(config.lease / 3);
    loop {
        tokio::select! { _ = tick.tick() => {}, _ = shutdown.changed() => {} }
        if let Err(e) = store.renew_leases(&config.id, config.lease).await {
            tracing::warn!(error = %e, "renewing leases failed");
        }
        match store.rescue_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "rescued jobs whose worker stopped"),
            Err(e) => tracing::warn!(error = %e, "rescuing expired leases failed"),
        }
        if let Err(e) = store.finish_idle_runs().await {
            tracing::warn!(error = %e, "finishing runs failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_are_capped() {
        for attempts in 0..20 {
            let d = retry_delay(attempts);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_secs(300), "{attempts}: {d:?}");
        }
        let late: Duration = (0..50).map(|_| retry_delay(6)).max().expect("samples");
        assert!(late > Duration::from_secs(2), "attempt 6 can wait up to a minute: {late:?}");
    }
}
