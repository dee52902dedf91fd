//! What a pool does besides jobs: closing the breaker at start, listening for notifications, renewing its
//! leases, and (in the one process that leads) the maintenance shared by every process.

use std::time::Duration;

use leadscore_store::{Leadership, QueueDepth, Store};
use tracing::Instrument;

use crate::{Ai, Held, WorkerConfig, lock};

/// A (re)started pool may run with a fixed configuration: close the breaker and put blocked runs back to work.
/// If the configuration is still wrong, the first request trips the breaker again.
pub(crate) async fn resume_after_restart(store: &Store, ai: &Ai) {
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
pub(crate) async fn listen(store: Store) {
    loop {
        if let Err(e) = store.listen().await {
            tracing::debug!(error = %e, "job notifications interrupted; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How often the maintenance leader compacts tallies, rescues leases and finishes runs.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// The queue gauges are refreshed every this many upkeep ticks (and on the first).
const QUEUE_GAUGES_EVERY: u64 = 5;

/// Renews this pool's leases (every third of the lease) and, while this process leads maintenance, does the
/// upkeep shared by all processes (see [`shared_upkeep`]). Runs until the pool aborts it after draining: leases
/// must be renewed while in-flight jobs finish.
pub(crate) async fn maintain(store: Store, config: WorkerConfig, held: Held) {
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
        // Another process leads now (or may): it exports the queue gauges; this one must not keep an old reading.
        if was_leader && !leadership.is_leader() {
            QueueDepth::record_none();
        }
    }
}

/// Rescues expired leases, finishes idle runs and compacts run tallies every tick; every few seconds reads the
/// queue's depth into its gauges (for the whole cluster: only the leader does); every minute also prunes finished
/// jobs past their retention and expired cached verdicts.
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
        if ticks.is_multiple_of(QUEUE_GAUGES_EVERY) {
            match store.queue_depth().await {
                Ok(depth) => depth.record(),
                Err(e) => tracing::warn!(error = %e, "reading the queue depth failed"),
            }
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
