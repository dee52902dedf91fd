//! How deep the queue is, for the operations gauges (`leadscore_queue_jobs`, `leadscore_queue_oldest_job_age_seconds`).
//!
//! Read without counting jobs, so that it stays cheap on a table of a million: the job counts come from the
//! tallies of the unfinished runs (kept by the triggers of migration 0005; the runs found through the partial index
//! `runs_unfinished`), the oldest due job from the first entry of `jobs_claimable` of each claimable run. Both cost
//! per run, not per job.

use std::time::Duration;

use leadscore_core::JobStatus;

use crate::states::{CLAIMABLE_JOBS, CLAIMABLE_RUNS, UNFINISHED_RUNS};
use crate::{Result, Store, now_millis, on_pool};

/// Jobs of unfinished runs by status, and how long the oldest claimable job has been due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// One entry per status of [`QueueDepth::STATUSES`], in that order (0 when none).
    pub jobs: Vec<(JobStatus, i64)>,
    /// Zero when no job is due.
    pub oldest_due: Duration,
}

impl QueueDepth {
    /// The statuses the gauge shows: the open ones, and failed jobs a `retry` may bring back.
    pub const STATUSES: [JobStatus; 4] =
        [JobStatus::Queued, JobStatus::Running, JobStatus::Retrying, JobStatus::Failed];

    /// Jobs in `status` (0 for a status the gauge does not show).
    pub fn get(&self, status: JobStatus) -> i64 {
        self.jobs.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n)
    }

    /// Sets the queue gauges to this reading.
    pub fn record(&self) {
        for (status, n) in &self.jobs {
            metrics::gauge!("leadscore_queue_jobs", "status" => status.as_str()).set(*n as f64);
        }
        metrics::gauge!("leadscore_queue_oldest_job_age_seconds").set(self.oldest_due.as_secs_f64());
    }

    /// Zeroes the queue gauges: a process that stops refreshing them (it no longer leads maintenance) must not
    /// keep exporting an old reading. Zero is neutral whether the processes' values are added or maxed.
    pub fn record_none() {
        QueueDepth { jobs: QueueDepth::STATUSES.map(|s| (s, 0)).to_vec(), oldest_due: Duration::ZERO }
            .record();
    }
}

impl Store {
    /// The queue's depth; see the module documentation for why it is cheap.
    pub async fn queue_depth(&self) -> Result<QueueDepth> {
        let statuses = QueueDepth::STATUSES.map(|s| format!("'{}'", s.as_str())).join(", ");
        let tallies = format!(
            "select t.counter, cast(sum(t.n) as bigint) from runs r join run_tallies t on t.run_id = r.id \
             where r.status in ({}) and t.counter in ({statuses}) group by t.counter",
            *UNFINISHED_RUNS
        );
        // Per claimable run, the first entry of `jobs_claimable` (ordered by `run_at` within the run).
        let oldest = format!(
            "select min(due) from (select (select j.run_at from jobs j where j.run_id = r.id and j.status in ({}) \
               order by j.run_at limit 1) as due from runs r where r.status in ({})) d",
            *CLAIMABLE_JOBS, *CLAIMABLE_RUNS
        );
        let (counts, due): (Vec<(String, i64)>, Option<i64>) = on_pool!(self, pool => (
            sqlx::query_as(sqlx::AssertSqlSafe(tallies)).fetch_all(pool).await?,
            sqlx::query_scalar(sqlx::AssertSqlSafe(oldest)).fetch_one(pool).await?,
        ));
        let jobs = QueueDepth::STATUSES
            .map(|s| (s, counts.iter().find(|(c, _)| c == s.as_str()).map_or(0, |(_, n)| *n)))
            .to_vec();
        let waited_ms = due.map_or(0, |at| (now_millis() - at).max(0));
        Ok(QueueDepth { jobs, oldest_due: Duration::from_millis(waited_ms as u64) })
    }
}
