//! The worker pool: claims jobs in batches up to its free slots, scores each lead (rule layer, then the AI
//! layer when a provider is configured), and writes completions in batches. Runs inside `leadscore serve`
//! (embedded) and as `leadscore-worker` processes (cluster); any number of pools can share one database.
//!
//! A job's AI outcomes: a verdict (fresh or cached) gives a `hybrid` result; an open circuit breaker defers the
//! job without spending an attempt (and marks the runs `blocked` when the key or model was rejected); a failed
//! attempt is retried later by the queue; the last failed attempt, or a request the provider will never
//! accept, gives a `rules_only` result with `ai_status: failed`.

mod ai;
mod inputs;
mod upkeep;
mod writer;

pub use ai::{Ai, AiSetupError};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadscore_core::{Offer, Rules};
use leadscore_store::{ClaimedJob, Completion, Store};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::Instrument;

use crate::inputs::{Done, job_span, load_inputs, prepare_ai, score_rules_only};
use crate::upkeep::{listen, maintain, resume_after_restart};
use crate::writer::write_completions;

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
    /// The AI layer; `None`: rules only (`ai_status: skipped`).
    pub ai: Option<Arc<Ai>>,
    /// How long the succeeded and cancelled jobs of a finished run are kept (counts and results stay).
    pub job_retention: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            concurrency: 64,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(250),
            drain: Duration::from_secs(20),
            ai: None,
            job_retention: DEFAULT_JOB_RETENTION,
        }
    }
}

impl WorkerConfig {
    /// The pool's settings from the typed configuration, with the AI layer (`None`: rules only).
    pub fn from_args(
        worker: &leadscore_ops::config::WorkerArgs,
        drain: &leadscore_ops::config::DrainArgs,
        ai: Option<Arc<Ai>>,
    ) -> WorkerConfig {
        WorkerConfig {
            concurrency: usize::from(worker.concurrency),
            lease: Duration::from_secs(worker.lease_secs),
            drain: drain.drain(),
            ai,
            job_retention: Duration::from_secs(worker.job_retention_hours.saturating_mul(3600)),
            ..WorkerConfig::default()
        }
    }
}

/// Finished jobs are kept a week by default.
pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a pool with only a few free leases waits for more before claiming.
const CLAIM_COOLDOWN: Duration = Duration::from_millis(10);

/// Free leases worth a claim without waiting: half the pool, 1 to 64. With fast jobs, a claim sent as soon as the
/// previous one returned found about half the slots free (the jobs just claimed still held theirs), so it took
/// twice the claims for the same jobs; waiting up to [`CLAIM_COOLDOWN`] for half the pool keeps claims full.
/// With slow (AI-bound) jobs the cooldown caps the wait as before.
fn claim_batch(concurrency: usize) -> usize {
    (concurrency / 2).clamp(1, 64)
}

/// Jobs a pool may hold leased beyond those running, so that a claim can be larger than the pool's free slots:
/// each claim is a round trip and a commit, and with jobs that take microseconds the pool waited on those with
/// nothing else to do. Measured on the rules-only pipeline (BENCHMARKS.md, issue 12): with claims capped at the
/// 64 running jobs, 37% of the machine sat idle; claims of up to 256 took that to 31% and the rate up by a fifth.
///
/// Only for pools without an AI layer, whose jobs take microseconds and cost nothing: a job leased ahead still
/// runs after its run is paused or cancelled (only waiting jobs are stopped), and with a provider that would be
/// spend the user asked to stop. An AI pool's jobs wait on the provider, not on claims.
fn prefetch(config: &WorkerConfig) -> usize {
    if config.ai.is_some() { 0 } else { config.concurrency.max(MIN_PREFETCH) }
}

const MIN_PREFETCH: usize = 192;

/// Completions written per transaction at most.
pub(crate) const WRITE_BATCH: usize = 256;

/// Runs the pool until `shutdown` turns true, then drains: stops claiming, gives back the jobs it leased but had
/// not started, lets in-flight jobs finish within `config.drain`, writes their completions; jobs still running
/// after that keep their lease and return to the queue when it expires.
pub async fn run(store: Store, config: WorkerConfig, mut shutdown: watch::Receiver<bool>) {
    // `slots`: jobs running (the pool's concurrency); `leases`: jobs leased and not finished, running or next.
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let leases = Arc::new(Semaphore::new(config.concurrency + prefetch(&config)));
    let (done_tx, done_rx) = mpsc::channel::<Done>(config.concurrency * 2);
    let contexts: RunCache = Arc::default();
    let held: Held = Arc::default();
    let writer = tokio::spawn(write_completions(
        store.clone(),
        config.clone(),
        done_rx,
        contexts.clone(),
        held.clone(),
    ));
    let upkeep = tokio::spawn(maintain(store.clone(), config.clone(), held.clone()));
    let listener = tokio::spawn(listen(store.clone()));
    if let Some(ai) = &config.ai {
        resume_after_restart(&store, ai).await;
    }
    tracing::info!(
        worker = %config.id,
        concurrency = config.concurrency,
        ai = config.ai.as_ref().map_or("off", |a| a.config().model.as_str()),
        "worker pool started"
    );
    let mut backoff = config.poll;
    // After an empty claim the next one goes out at once when woken: new work should start without delay.
    let mut idle = true;
    while !*shutdown.borrow() {
        let Some(mut reserved) = reserve_leases(&leases, &config, idle, &mut shutdown).await else {
            continue;
        };
        let jobs = match store.claim_work(&config.id, reserved.num_permits(), config.lease).await {
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
        idle = jobs.is_empty();
        let claimed = std::time::Instant::now();
        metrics::counter!("leadscore_jobs_claimed_total").increment(jobs.len() as u64);
        lock(&held).extend(jobs.iter().map(|w| key(&w.job)));
        if jobs.is_empty() {
            drop(reserved);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {},
                () = store.jobs_enqueued() => {},
                _ = shutdown.changed() => {},
            }
            continue;
        }
        let inputs = load_inputs(&store, &contexts, jobs).await;
        // Each job's span starts here; its `claim` step lasts until it starts running (cache lookups and the wait
        // for a free slot of a job leased ahead).
        let batch = inputs.len();
        let spans: Vec<(tracing::Span, tracing::Span)> = inputs
            .iter()
            .map(|(job, input)| {
                let span = job_span(&config.id, job, input);
                let claim = tracing::info_span!(parent: &span, "claim", batch);
                (span, claim)
            })
            .collect();
        let mut prepared = prepare_ai(&store, config.ai.as_deref(), &inputs).await;
        let mut inputs = inputs.into_iter().zip(spans).enumerate();
        for (i, ((job, input), (span, claim))) in inputs.by_ref() {
            let lease = reserved.split(1);
            // A job leased ahead waits here for a running one to finish; shutdown gives it back instead.
            let slot = tokio::select! {
                biased;
                _ = wait_true(&mut shutdown) => None,
                slot = slots.clone().acquire_owned() => slot.ok(),
            };
            drop(claim);
            let Some(slot) = slot else {
                let _ = done_tx.send(release(job, input, claimed, span)).await;
                break;
            };
            let done = done_tx.clone();
            let (store, ai, ai_input) =
                (store.clone(), config.ai.clone(), prepared.get_mut(i).and_then(Option::take));
            let job_span = span.clone();
            tokio::spawn(
                async move {
                    let completion = match (input, ai.as_deref(), ai_input) {
                        (Ok((ctx, lead)), Some(ai), Some((prep, cached))) => {
                            let rule = ctx.rules.score(&lead);
                            let (completion, cache) = ai.score(&store, job, prep, cached, rule).await;
                            Done { completion, cache, claimed, span }
                        }
                        (Ok((ctx, lead)), _, _) => {
                            let completion = score_rules_only(job, &ctx, &lead);
                            Done { completion, cache: None, claimed, span }
                        }
                        (Err(completion), _, _) => Done { completion, cache: None, claimed, span },
                    };
                    let _ = done.send(completion).await;
                    drop((slot, lease));
                }
                .instrument(job_span),
            );
        }
        for (_, ((job, input), (span, _))) in inputs {
            let _ = done_tx.send(release(job, input, claimed, span)).await;
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

/// Waits for leases worth a claim and takes all that are free (`None`: shutdown, or none free after all).
/// Claims a few at a time rather than one per finished job: each claim is a round trip, and with slow
/// (AI-bound) jobs leases free up one by one, so it waits at most [`CLAIM_COOLDOWN`] for a batch.
async fn reserve_leases(
    leases: &Arc<Semaphore>,
    config: &WorkerConfig,
    idle: bool,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if leases.available_permits() == 0 {
        tokio::select! { p = leases.acquire() => drop(p), _ = shutdown.changed() => return None }
    }
    let batch = claim_batch(config.concurrency);
    if !idle && leases.available_permits() < batch {
        tokio::select! {
            p = leases.acquire_many(batch as u32) => drop(p),
            () = tokio::time::sleep(CLAIM_COOLDOWN) => {},
            _ = shutdown.changed() => return None,
        }
    }
    let free = u32::try_from(leases.available_permits()).ok().filter(|n| *n > 0)?;
    leases.clone().try_acquire_many_owned(free).ok()
}

/// Resolves once `shutdown` is true.
async fn wait_true(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A job leased ahead that will not be started (the pool is shutting down): back to the queue now, its attempt
/// given back, rather than when its lease expires.
fn release(
    job: ClaimedJob,
    input: inputs::JobInput,
    claimed: std::time::Instant,
    span: tracing::Span,
) -> Done {
    let completion = match input {
        Err(completion) => completion,
        Ok(_) => Completion::Deferred {
            job,
            reason: "released: the worker shut down before starting it".into(),
            retry_in: Duration::ZERO,
            spent: leadscore_store::RunUsage::default(),
        },
    };
    Done { completion, cache: None, claimed, span }
}

/// What every job of a run shares: its workspace (verdicts are cached per workspace), its offer snapshot with
/// the rule layer prepared for it, and its cost cap.
pub(crate) struct RunContext {
    pub(crate) workspace: String,
    pub(crate) offer: Offer,
    pub(crate) rules: Rules,
    pub(crate) max_cost_usd: Option<f64>,
    /// The creating request's trace context: the run's job spans continue it.
    pub(crate) traceparent: Option<String>,
}

pub(crate) type RunCache = Arc<Mutex<HashMap<String, Arc<RunContext>>>>;

/// The jobs this pool holds a lease on and has not written yet (run id, lead id): the ones it renews.
pub(crate) type Held = Arc<Mutex<HashSet<(String, String)>>>;

pub(crate) fn key(job: &ClaimedJob) -> (String, String) {
    (job.run_id.clone(), job.lead_id.clone())
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Exponential backoff with full jitter: up to 2^attempts seconds, capped at 5 minutes.
pub fn retry_delay(attempts: i64) -> Duration {
    let cap_ms = 1000u64.saturating_mul(1 << attempts.clamp(0, 8)).min(300_000);
    let jitter = uuid::Uuid::new_v4().as_u128() as u64 % cap_ms.max(1);
    Duration::from_millis(jitter.max(100))
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
