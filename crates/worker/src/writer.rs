//! The pool's completion writer: batches what finished while the previous batch was written, stores fresh
//! verdicts in the cache, writes the batch (retrying until the database takes it) and pauses runs over budget.

use std::time::{Duration, Instant};

use leadscore_core::{AiVerdict, JobEvent};
use leadscore_store::{Completion, Store};
use tokio::sync::mpsc;

use crate::inputs::Done;
use crate::{Held, RunCache, WRITE_BATCH, WorkerConfig, key, lock};

/// Completion statements a pool has in flight at most.
const MAX_WRITES: usize = 2;

/// Writes completions in batches: everything that arrived while the previous batch was written. A second write
/// goes out alongside the first only for a backlog (a full batch waiting): measured, parallel writers of part
/// batches made the database spend more per job (BENCHMARKS.md, issue 4), but once claims grew past the pool
/// (issue 12) a backlog could build up behind the one writer, whose statement holds one database core.
pub(crate) async fn write_completions(
    store: Store,
    config: WorkerConfig,
    mut rx: mpsc::Receiver<Done>,
    contexts: RunCache,
    held: Held,
) {
    let mut received = Vec::with_capacity(WRITE_BATCH);
    let mut writes = tokio::task::JoinSet::new();
    while rx.recv_many(&mut received, WRITE_BATCH).await > 0 {
        while !writes.is_empty() && (writes.len() >= MAX_WRITES || received.len() < WRITE_BATCH) {
            log_panic(writes.join_next().await);
            while received.len() < WRITE_BATCH {
                let Ok(done) = rx.try_recv() else { break };
                received.push(done);
            }
        }
        let mut batch = Vec::with_capacity(received.len());
        let mut claimed = Vec::with_capacity(received.len());
        let mut spans = Vec::with_capacity(received.len());
        let mut entries = Vec::new();
        for done in received.drain(..) {
            batch.push(done.completion);
            claimed.push(done.claimed);
            spans.push(done.span);
            entries.extend(done.cache);
        }
        // One entry per key, in key order: concurrent writers lock cache rows in the same order (no deadlock),
        // and an upsert may not touch a row twice.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        let (store, config, contexts, held) = (store.clone(), config.clone(), contexts.clone(), held.clone());
        let done = Written { batch, claimed, spans };
        writes.spawn(async move { write_batch(&store, &config, done, entries, &contexts, &held).await });
    }
    while let Some(write) = writes.join_next().await {
        log_panic(Some(write));
    }
}

/// A write that panicked lost its batch: its jobs stay leased until this process stops, then are rescued.
fn log_panic(write: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = write {
        tracing::error!(error = %e, "a completion write panicked; its jobs return to the queue when this process stops");
    }
}

/// A batch of completions, when each one's job was claimed, and each job's span (ended once it is written).
struct Written {
    batch: Vec<Completion>,
    claimed: Vec<Instant>,
    spans: Vec<tracing::Span>,
}

/// Stores one batch's fresh verdicts, then writes its completions, retrying until the database takes them.
async fn write_batch(
    store: &Store,
    config: &WorkerConfig,
    Written { batch, claimed, spans }: Written,
    entries: Vec<(String, AiVerdict)>,
    contexts: &RunCache,
    held: &Held,
) {
    if let Some(ai) = &config.ai {
        ai.remember(store, &entries).await;
    }
    // Each job's last step: the one transaction that writes its whole batch (with its retries, if it fails).
    let size = batch.len();
    let steps: Vec<tracing::Span> =
        spans.iter().map(|job| tracing::info_span!(parent: job, "result_write", batch = size, retried = tracing::field::Empty)).collect();
    let mut delay = Duration::from_millis(100);
    loop {
        match store.complete_jobs(&config.id, &batch).await {
            Ok(applied) => {
                let mut held = lock(held);
                for c in &batch {
                    held.remove(&key(c.job()));
                }
                drop(held);
                record_outcomes(&batch, &claimed);
                if applied < batch.len() as u64 {
                    tracing::info!(
                        stale = batch.len() as u64 - applied,
                        "ignored completions of jobs no longer leased"
                    );
                }
                break;
            }
            Err(e) => {
                for step in &steps {
                    step.record("retried", true);
                }
                // Keep the batch: the leases still hold for a while, and losing it would re-score leads.
                tracing::warn!(error = %e, "writing completions failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    // A span ends when it is last exited: enter each job's span and write step once more now, so that both end
    // after the write rather than when the job's task returned.
    for (job, step) in spans.iter().zip(&steps) {
        job.in_scope(|| step.in_scope(|| {}));
    }
    drop((steps, spans));
    pause_over_budget(store, contexts, &batch).await;
}

/// Counts each completion of a written batch by its outcome, and the duration of each attempt that ran. A
/// completion the store ignored (its lease was lost meanwhile, which is rare) is counted too: the batch's
/// statement does not say which ones it applied.
fn record_outcomes(batch: &[Completion], claimed: &[Instant]) {
    let mut counts = [0u64; 3];
    for (c, at) in batch.iter().zip(claimed) {
        let slot = match c.event() {
            JobEvent::Succeed => 0,
            JobEvent::FailFinal => 1,
            JobEvent::FailRetryable => 2,
            // Deferred or released: the job did not run, and spent no attempt.
            _ => continue,
        };
        counts[slot] += 1;
        metrics::histogram!("leadscore_job_duration_seconds").record(at.elapsed().as_secs_f64());
    }
    let [succeeded, failed, retried] = counts;
    metrics::counter!("leadscore_jobs_succeeded_total").increment(succeeded);
    metrics::counter!("leadscore_jobs_failed_total").increment(failed);
    metrics::counter!("leadscore_jobs_retried_total").increment(retried);
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
