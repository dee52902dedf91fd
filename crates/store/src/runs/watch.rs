//! The one way to wait for a run: woken by its progress events (`LISTEN leadscore_progress` on PostgreSQL,
//! the in-process channel in embedded mode), with a slow fallback tick for an event that was lost. Used by
//! `Prefer: wait`, the seed-compatible scoring route, the events stream and `leadscore score`.

use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use super::RunRecord;
use crate::{Result, Store};

/// How long a watcher sleeps without an event before it looks again (a lost `NOTIFY` costs this much).
pub const FALLBACK: Duration = Duration::from_secs(2);

/// Follows one run. Subscribed when made, so no change after that is missed.
pub struct RunWatch {
    store: Store,
    workspace: String,
    run_id: String,
    changes: broadcast::Receiver<String>,
}

impl RunWatch {
    /// Resolves when the run may have changed: an event for it, a burst of events the receiver could not keep up
    /// with, or [`FALLBACK`] / `until` (whichever comes first) without one.
    pub async fn changed(&mut self, until: Option<Instant>) {
        let tick = Instant::now() + FALLBACK;
        let until = until.map_or(tick, |u| u.min(tick));
        let _ = tokio::time::timeout_at(until, async {
            loop {
                match self.changes.recv().await {
                    Ok(run) if run == self.run_id => return,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => std::future::pending().await,
                }
            }
        })
        .await;
    }

    /// The run as it is now (`None`: deleted, or not in the workspace).
    pub async fn read(&self) -> Result<Option<RunRecord>> {
        self.store.get_run(&self.workspace, &self.run_id).await
    }

    /// Waits until the run has finished or `deadline` passes; returns it as last read.
    pub async fn finished(&mut self, deadline: Instant) -> Result<Option<RunRecord>> {
        loop {
            let run = self.read().await?;
            if run.as_ref().is_none_or(|r| r.finished_at.is_some()) || Instant::now() >= deadline {
                return Ok(run);
            }
            self.changed(Some(deadline)).await;
        }
    }
}

impl Store {
    /// Starts following a run (see [`RunWatch`]).
    pub fn watch_run(&self, workspace: &str, run_id: &str) -> RunWatch {
        RunWatch {
            store: self.clone(),
            workspace: workspace.to_owned(),
            run_id: run_id.to_owned(),
            changes: self.subscribe_progress(),
        }
    }
}
