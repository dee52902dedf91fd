//! The worker pool: claims jobs in batches up to its free slots, scores each lead (rule layer, then the AI
//! layer when a provider is configured), and writes completions in batches. Runs inside `leadscore serve`
//! (embedded) and as `leadscore-worker` processes (cluster); any number of pools can share one database.
//!
//! A job's AI outcomes: a verdict (fresh or cached) gives a `hybrid` result; an open circuit breaker defers the
//! job without spending an attempt (and marks the runs `blocked` when the key or model was rejected); a failed
//! attempt is retried later by the queue; the last failed attempt, or a request the provider will never
//! accept, gives a `rules_only` result with `ai_status: failed`.

mod ai;

pub use ai::{Ai, AiSetupError};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadscore_core::prompt::injection_suspected;
use leadscore_core::{AiOutcome, AiVerdict, Flag, Lead, Offer, Rules, Scoring};
use leadscore_store::{ClaimedJob, ClaimedWork, Completion, Leadership, NewResult, RunUsage, Store};
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

/// Finished jobs are kept a week by default.
pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a pool with only a few free slots waits for more before claiming.
const CLAIM_COOLDOWN: Duration = Duration::from_millis(10);

/// Free slots worth a claim without waiting: half the pool, 1 to 64. With fast jobs, a claim sent as soon as the
/// previous one returned found about half the slots free (the jobs just claimed still held theirs), so it took
/// twice the claims for the same jobs; waiting up to [`CLAIM_COOLDOWN`] for half the pool keeps claims full.
/// With slow (AI-bound) jobs the cooldown caps the wait as before.
fn claim_batch(concurrency: usize) -> usize {
    (concurrency / 2).clamp(1, 64)
}

/// Completions written per transaction at most.
const WRITE_BATCH: usize = 256;

/// Runs the pool until `shutdown` turns true, then drains: stops claiming, lets in-flight jobs finish within
/// `config.drain`, writes their completions; jobs still running after that keep their lease and return to the
/// queue when it expires.
pub async fn run(store: Store, config: WorkerConfig, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(config.concurrency));
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
        if slots.available_permits() == 0 {
            tokio::select! { p = slots.acquire() => drop(p), _ = shutdown.changed() => continue }
        }
        let batch = claim_batch(config.concurrency);
        if !idle && slots.available_permits() < batch {
            // Claim a few slots at a time rather than one per finished job: each claim is a round trip, and
            // with slow (AI-bound) jobs slots free up one by one. Waits at most CLAIM_COOLDOWN for the batch.
            tokio::select! {
                p = slots.acquire_many(batch as u32) => drop(p),
                () = tokio::time::sleep(CLAIM_COOLDOWN) => {},
                _ = shutdown.changed() => {},
            }
        }
        let free = slots.available_permits();
        if free == 0 {
            continue;
        }
        let jobs = match store.claim_work(&config.id, free, config.lease).await {
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
        lock(&held).extend(jobs.iter().map(|w| key(&w.job)));
        if jobs.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {},
                () = store.jobs_enqueued() => {},
                _ = shutdown.changed() => {},
            }
            continue;
        }
        let inputs = load_inputs(&store, &contexts, jobs).await;
        let mut prepared = prepare_ai(&store, config.ai.as_deref(), &inputs).await;
        for (i, (job, input)) in inputs.into_iter().enumerate() {
            let Ok(permit) = slots.clone().acquire_owned().await else { break };
            let done = done_tx.clone();
            let (store, ai, ai_input) =
                (store.clone(), config.ai.clone(), prepared.get_mut(i).and_then(Option::take));
            let span =
                tracing::info_span!("job", run = %job.run_id, lead = %job.lead_id, attempt = job.attempts);
            tokio::spawn(
                async move {
                    let done_job = match (input, ai.as_deref(), ai_input) {
                        (Ok((ctx, lead)), Some(ai), Some((prep, cached))) => {
                            let rule = ctx.rules.score(&lead);
                            let (completion, cache) = ai.score(&store, job, prep, cached, rule).await;
                            Done { completion, cache }
                        }
                        (Ok((ctx, lead)), _, _) => {
                            Done { completion: score_rules_only(job, &ctx, &lead), cache: None }
                        }
                        (Err(completion), _, _) => Done { completion, cache: None },
                    };
                    let _ = done.send(done_job).await;
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

/// What every job of a run shares: its offer snapshot with the rule layer prepared for it, and
/// its cost cap.
struct RunContext {
    offer: Offer,
    rules: Rules,
    max_cost_usd: Option<f64>,
}

type RunCache = Arc<Mutex<HashMap<String, Arc<RunContext>>>>;

/// The jobs this pool holds a lease on and has not written yet (run id, lead id): the ones it renews.
type Held = Arc<Mutex<HashSet<(String, String)>>>;

fn key(job: &ClaimedJob) -> (String, String) {
    (job.run_id.clone(), job.lead_id.clone())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type JobInput = Result<(Arc<RunContext>, Lead), Completion>;

/// Pairs each claimed job with its run context (cached per run; the lead came with the claim). A job whose
/// inputs cannot be had becomes a completion right away.
async fn load_inputs(store: &Store, cache: &RunCache, work: Vec<ClaimedWork>) -> Vec<(ClaimedJob, JobInput)> {
    let mut out = Vec::with_capacity(work.len());
    for ClaimedWork { job, lead, .. } in work {
        let input = match (run_context(store, cache, &job.run_id).await, lead) {
            (Ok(Some(ctx)), Some(lead)) => Ok((ctx, lead.lead)),
            (Ok(_), _) => Err(gone(&job)),
            (Err(e), _) => Err(Completion::Failed {
                job: job.clone(),
                error: e.to_string(),
                retry_in: Some(retry_delay(job.attempts)),
                spent: RunUsage::default(),
            }),
        };
        out.push((job, input));
    }
    out
}

fn gone(job: &ClaimedJob) -> Completion {
    Completion::Failed {
        job: job.clone(),
        error: "the lead or its run no longer exists".into(),
        retry_in: None,
        spent: RunUsage::default(),
    }
}

async fn run_context(
    store: &Store,
    cache: &RunCache,
    run_id: &str,
) -> leadscore_store::Result<Option<Arc<RunContext>>> {
    if let Some(ctx) = lock(cache).get(run_id) {
        return Ok(Some(ctx.clone()));
    }
    let Some(snap) = store.run_snapshot(run_id).await? else { return Ok(None) };
    let ctx = Arc::new(RunContext {
        rules: Rules::for_offer(&snap.offer),
        offer: snap.offer,
        max_cost_usd: snap.max_cost_usd,
    });
    lock(cache).insert(run_id.to_owned(), ctx.clone());
    Ok(Some(ctx))
}

/// A finished job: its completion and, for a fresh AI verdict, the cache entry to store with it.
struct Done {
    completion: Completion,
    cache: Option<(String, AiVerdict)>,
}

type AiInput = Option<(ai::Prepared, Option<AiVerdict>)>;

/// With an AI layer: each loadable job's prompt and cache key, and the cached verdicts of the whole claimed
/// batch looked up in one round trip.
async fn prepare_ai(store: &Store, ai: Option<&Ai>, inputs: &[(ClaimedJob, JobInput)]) -> Vec<AiInput> {
    let Some(ai) = ai else { return Vec::new() };
    let prepared: Vec<Option<ai::Prepared>> = inputs
        .iter()
        .map(|(_, input)| input.as_ref().ok().map(|(ctx, lead)| ai.prepare(&ctx.offer, lead)))
        .collect();
    let keys: Vec<String> = prepared.iter().flatten().map(|p| p.key.clone()).collect();
    let mut cached = ai.cached(store, &keys).await;
    prepared
        .into_iter()
        .map(|p| {
            p.map(|p| {
                let hit = cached.remove(&p.key);
                (p, hit)
            })
        })
        .collect()
}

/// Scores one lead on the rule layer alone (no AI layer configured): `ai_status: skipped`.
fn score_rules_only(job: ClaimedJob, ctx: &RunContext, lead: &Lead) -> Completion {
    let flags = if injection_suspected(lead) { vec![Flag::PromptInjection] } else { vec![] };
    let scoring = Scoring::compose(ctx.rules.score(lead), AiOutcome::Skipped, flags);
    let result = NewResult::without_model(scoring);
    Completion::Succeeded { job, result: Box::new(result) }
}

/// Exponential backoff with full jitter: up to 2^attempts seconds, capped at 5 minutes.
pub fn retry_delay(attempts: i64) -> Duration {
    let cap_ms = 1000u64.saturating_mul(1 << attempts.clamp(0, 8)).min(300_000);
    let jitter = uuid::Uuid::new_v4().as_u128() as u64 % cap_ms.max(1);
    Duration::from_millis(jitter.max(100))
}

/// Writes completions in batches: everything that arrived while the previous batch was written. One writer:
/// measured against two and four in parallel, it wrote bigger batches, and per job the database spent less on
/// them (BENCHMARKS.md, issue 4, "Where the time goes").
async fn write_completions(
    store: Store,
    config: WorkerConfig,
    mut rx: mpsc::Receiver<Done>,
    contexts: RunCache,
    held: Held,
) {
    let mut received = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut received, WRITE_BATCH).await > 0 {
        let mut batch = Vec::with_capacity(received.len());
        let mut entries = Vec::new();
        for done in received.drain(..) {
            batch.push(done.completion);
            entries.extend(done.cache);
        }
        write_batch(&store, &config, batch, entries, &contexts, &held).await;
    }
}

/// Stores one batch's fresh verdicts, then writes its completions, retrying until the database takes them.
async fn write_batch(
    store: &Store,
    config: &WorkerConfig,
    batch: Vec<Completion>,
    entries: Vec<(String, AiVerdict)>,
    contexts: &RunCache,
    held: &Held,
) {
    if let Some(ai) = &config.ai {
        ai.remember(store, &entries).await;
    }
    let mut delay = Duration::from_millis(100);
    loop {
        match store.complete_jobs(&config.id, &batch).await {
            Ok(applied) => {
                let mut held = lock(held);
                for c in &batch {
                    held.remove(&key(c.job()));
                }
                drop(held);
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
    pause_over_budget(store, contexts, &batch).await;
}

/// Pauses the runs of `batch` that have a cost cap and reached it (only capped runs are summed).
async fn pause_over_budget(store: &Store, contexts: &RunCache, batch: &[Completion]) {
    let capped: Vec<&str> = {
        let cache = lock(contexts);
        let mut runs: Vec<&str> = batch
            .iter()
            .map(|c| c.job().run_id.as_str())
            .filter(|r| cache.get(*r).is_some_and(|ctx| ctx.max_cost_usd.is_some()))
            .collect();
        runs.sort_unstable();
        runs.dedup();
        runs
    };
    if capped.is_empty() {
        return;
    }
    match store.pause_runs_over_budget(&capped).await {
        Ok(paused) if !paused.is_empty() => tracing::warn!(runs = ?paused, "paused: max_cost_usd reached"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "checking cost caps failed"),
    }
}

/// A (re)started pool may run with a fixed configuration: close the breaker and put blocked runs back to work.
/// If the configuration is still wrong, the first request trips the breaker again.
async fn resume_after_restart(store: &Store, ai: &Ai) {
    if let Ok(Some(blocked)) = ai.gate().blocked().await
        && blocked.retry_in.is_none()
    {
        tracing::info!(reason = %blocked.reason, "closing the circuit breaker at start (configuration may be fixed)");
        if let Err(e) = ai.gate().reset().await {
            tracing::warn!(error = %e, "closing the circuit breaker failed");
        }
    }
    match store.unblock_runs().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(runs = n, "blocked runs put back to work"),
        Err(e) => tracing::warn!(error = %e, "unblocking runs failed"),
    }
}

/// Keeps a `LISTEN` connection open (Postgres), reconnecting after failures; polling covers the gaps.
async fn listen(store: Store) {
    loop {
        if let Err(e) = store.listen().await {
            tracing::debug!(error = %e, "job notifications interrupted; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How often the maintenance leader compacts tallies, rescues leases and finishes runs.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Renews this pool's leases (every third of the lease) and, while this process leads maintenance, does the
/// upkeep shared by all processes (see [`shared_upkeep`]). Runs until the pool aborts it after draining: leases
/// must be renewed while in-flight jobs finish.
async fn maintain(store: Store, config: WorkerConfig, held: Held) {
    let renew_every = config.lease / 3;
    let mut tick = tokio::time::interval(UPKEEP_EVERY.min(renew_every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed = tokio::time::Instant::now();
    let mut leadership = Leadership::default();
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        if renewed.elapsed() >= renew_every {
            renewed = tokio::time::Instant::now();
            let jobs: Vec<(String, String)> = lock(&held).iter().cloned().collect();
            if let Err(e) = store.renew_leases(&config.id, &jobs, config.lease).await {
                tracing::warn!(error = %e, "renewing leases failed");
            }
        }
        let was_leader = leadership.is_leader();
        match store.lead_maintenance(&mut leadership).await {
            Ok(true) => {
                if !was_leader {
                    tracing::info!(worker = %config.id, "leading maintenance");
                }
                shared_upkeep(&store, &config, ticks).await;
                ticks += 1;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "maintenance leadership check failed"),
        }
    }
}

/// Rescues expired leases, finishes idle runs and compacts run tallies every tick; every minute also prunes
/// finished jobs past their retention and expired cached verdicts.
async fn shared_upkeep(store: &Store, config: &WorkerConfig, ticks: u64) {
    let span = tracing::debug_span!("upkeep", tick = ticks);
    async {
        match store.rescue_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "rescued jobs whose worker stopped"),
            Err(e) => tracing::warn!(error = %e, "rescuing expired leases failed"),
        }
        if let Err(e) = store.finish_idle_runs().await {
            tracing::warn!(error = %e, "finishing runs failed");
        }
        if let Err(e) = store.compact_tallies().await {
            tracing::warn!(error = %e, "compacting run tallies failed");
        }
        if !ticks.is_multiple_of(60) {
            return;
        }
        match store.prune_finished_jobs(config.job_retention).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
        }
        if config.ai.is_some() {
            match store.prune_verdict_cache().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(entries = n, "expired cached verdicts removed"),
                Err(e) => tracing::warn!(error = %e, "pruning the verdict cache failed"),
            }
        }
    }
    .instrument(span)
    .await;
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
