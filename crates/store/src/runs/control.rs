//! Control actions on a run (`cancel`, `pause`, `resume`, `retry`): each is an event of the core's table of
//! run moves, checked there first (a refused move is a conflict the API answers with 409) and written under a
//! guard on the status it was checked against, so an action racing a worker or another action never forces a
//! move the table does not allow: it sees the new status and is checked again.

use leadscore_core::{JobEvent, JobStatus, RunEvent, RunStatus, StopReason};

use crate::states::{job_guard, lit_job, run_set};
use crate::{Result, Store, now_millis, on_pool};

/// A control action on a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Jobs not started are cancelled; running ones finish (`cancelling` -> `cancelled`).
    Cancel,
    /// Stop claiming this run's jobs.
    Pause,
    /// Claim them again (also lifts `blocked`, and the cost cap of a run it paused).
    Resume,
    /// Re-queue failed jobs and jobs whose result is `rules_only`.
    Retry,
}

impl Control {
    pub fn event(self) -> RunEvent {
        match self {
            Control::Cancel => RunEvent::Cancel,
            Control::Pause => RunEvent::Pause,
            Control::Resume => RunEvent::Resume,
            Control::Retry => RunEvent::Retry,
        }
    }
}

/// What a control action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOutcome {
    /// Applied; the number of jobs it moved.
    Applied(u64),
    /// Not possible in the run's current status (the table's refusal, e.g. "cannot pause a run that is
    /// completed").
    Conflict(String),
}

/// Times an action re-reads a run that changed under it before giving up with a conflict.
const RACES: usize = 3;

impl Store {
    /// Applies a control action. Returns `None` when the run does not exist in the workspace.
    pub async fn control_run(
        &self,
        workspace: &str,
        run_id: &str,
        action: Control,
    ) -> Result<Option<ControlOutcome>> {
        let event = action.event();
        for _ in 0..RACES {
            let Some(run) = self.get_run(workspace, run_id).await? else { return Ok(None) };
            if let Err(refused) = run.status.on(event, run.started_at.is_some()) {
                return Ok(Some(ControlOutcome::Conflict(refused.to_string())));
            }
            if let Some(moved) = self.apply(run_id, run.status, run.stop_reason, action).await? {
                // A resumed run's jobs are claimable again; a retry queued some (or none).
                if action == Control::Resume || (action == Control::Retry && moved > 0) {
                    self.notify_jobs().await;
                }
                self.finish_idle_runs().await?;
                self.announce_progress(&[run_id]).await;
                return Ok(Some(ControlOutcome::Applied(moved)));
            }
        }
        let now = self.get_run(workspace, run_id).await?.map_or(RunStatus::Completed, |r| r.status);
        Ok(Some(ControlOutcome::Conflict(format!("the run changed while this action ran; it is {now} now"))))
    }

    /// Writes `action` on a run read in status `from`, in one transaction. `None`: the run is no longer in
    /// `from` for the same reason (nothing was written). Otherwise the jobs moved.
    async fn apply(
        &self,
        run_id: &str,
        from: RunStatus,
        stopped_by: Option<StopReason>,
        action: Control,
    ) -> Result<Option<u64>> {
        let now = now_millis();
        let event = action.event();
        let run_update = format!(
            "update runs set {}{} where id = $1 and status = $2 and stop_reason is not distinct from $3",
            run_set(event, "null"),
            extra_set(action, stopped_by)
        );
        on_pool!(self, pool => {
            let mut tx = crate::WritePool::begin_write(pool).await?;
            let jobs = match action {
                Control::Cancel => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "update jobs set status = {} where run_id = $1 and {}",
                    lit_job(JobEvent::Cancel.target()), job_guard("status", JobEvent::Cancel))))
                    .bind(run_id).execute(&mut *tx).await?.rows_affected(),
                Control::Pause => 0,
                // Jobs put off while the run was blocked are due now, not after their deferral.
                Control::Resume => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "update jobs set run_at = $2 where run_id = $1 and {} and run_at > $2",
                    job_guard("status", JobEvent::Claim))))
                    .bind(run_id).bind(now).execute(&mut *tx).await?.rows_affected(),
                // The sources of the requeue move; a succeeded job only when its result is rules-only.
                Control::Retry => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "update jobs set status = {}, attempts = 0, run_at = $2, last_error = null \
                     where run_id = $1 and (status = {} or (status = {} and exists (select 1 from results r \
                       where r.run_id = jobs.run_id and r.lead_id = jobs.lead_id and r.score_basis = 'rules_only')))",
                    lit_job(JobEvent::Requeue.target()),
                    lit_job(JobStatus::Failed),
                    lit_job(JobStatus::Succeeded))))
                    .bind(run_id).bind(now).execute(&mut *tx).await?.rows_affected(),
            };
            // A retry that found nothing to re-queue leaves the run as it is.
            if action != Control::Retry || jobs > 0 {
                let moved = sqlx::query(sqlx::AssertSqlSafe(run_update.as_str()))
                    .bind(run_id).bind(from.as_str()).bind(stopped_by.map(StopReason::as_str))
                    .execute(&mut *tx).await?.rows_affected();
                if moved == 0 {
                    return Ok(None); // the transaction rolls back
                }
            }
            tx.commit().await?;
            Ok(Some(jobs))
        })
    }
}

/// Columns an action sets besides the move itself.
fn extra_set(action: Control, stopped_by: Option<StopReason>) -> &'static str {
    match (action, stopped_by) {
        // Paused by its cost cap: resuming means "spend more", so the cap is lifted (it would pause the run
        // again at the next completed batch otherwise).
        (Control::Resume, Some(StopReason::CostCap)) => ", max_cost_usd = null",
        (Control::Retry, _) => ", finished_at = null",
        _ => "",
    }
}
