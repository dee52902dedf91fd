//! The queue: claim jobs in batches (fairly across runs), complete them in batches, retry with backoff by
//! moving `run_at`, and rescue expired leases. Every write to a running job is guarded by its state (rendered
//! from the core's table of job moves) and `lease_owner = me`, so a worker whose lease was rescued changes
//! nothing.
//!
//! This module holds the types and the interface; each backend's statements are in a file of its own
//! ([`postgres`], [`sqlite`]) with the same function names, and [`Store`] picks one per call. What the two
//! share (finishing idle runs, reading jobs) is written once here.

mod depth;
mod postgres;
mod result_row;
mod sqlite;

use std::time::Duration;

use leadscore_core::{JobEvent, JobStatus, RunEvent, Scoring};
use sqlx::types::Json;

pub use depth::QueueDepth;

use crate::states::{OPEN_JOBS, job_status, run_guard, run_target};
use crate::{Backend, Pool, Result, RunUsage, Store, now_millis, on_pool};

/// A job a worker now holds a lease on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub run_id: String,
    pub lead_id: String,
    /// Including this one.
    pub attempts: i64,
    pub max_attempts: i64,
}

/// A claimed job with what a worker needs to score it besides the run's snapshot.
#[derive(Debug, Clone)]
pub struct ClaimedWork {
    pub job: ClaimedJob,
    /// `None`: the lead no longer exists.
    pub lead: Option<crate::LeadRecord>,
}

/// A result to store, with what produced it.
#[derive(Debug, Clone)]
pub struct NewResult {
    pub scoring: Scoring,
    pub model: Option<String>,
    pub prompt_version: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    pub latency_ms: Option<i64>,
}

impl NewResult {
    /// A result that no model produced (the rule layer alone): no model, tokens, cost or latency.
    pub fn without_model(scoring: Scoring) -> NewResult {
        NewResult {
            scoring,
            model: None,
            prompt_version: None,
            prompt_tokens: None,
            completion_tokens: None,
            cost_usd: None,
            latency_ms: None,
        }
    }
}

/// A finished attempt of one job.
#[derive(Debug, Clone)]
pub enum Completion {
    Succeeded {
        job: ClaimedJob,
        result: Box<NewResult>,
    },
    /// The attempt failed: retry at `retry_in` (if attempts remain and the error is retryable), else fail.
    Failed {
        job: ClaimedJob,
        error: String,
        retry_in: Option<Duration>,
        spent: RunUsage,
    },
    /// The job could not be worked on for a reason that is not its own (the AI provider is blocked or cooling
    /// down): back to the queue at `retry_in` without spending the attempt.
    Deferred {
        job: ClaimedJob,
        reason: String,
        retry_in: Duration,
        spent: RunUsage,
    },
}

impl Completion {
    pub fn job(&self) -> &ClaimedJob {
        match self {
            Completion::Succeeded { job, .. }
            | Completion::Failed { job, .. }
            | Completion::Deferred { job, .. } => job,
        }
    }

    /// The move this completion makes in the table of job moves. Every one leaves `running` (tested), which
    /// is why the completion statements guard on that state alone.
    pub fn event(&self) -> JobEvent {
        match self {
            Completion::Succeeded { .. } => JobEvent::Succeed,
            Completion::Failed { job, retry_in: Some(_), .. } if job.attempts < job.max_attempts => {
                JobEvent::FailRetryable
            }
            Completion::Failed { .. } => JobEvent::FailFinal,
            Completion::Deferred { .. } => JobEvent::Defer,
        }
    }

    /// What the job row becomes: its status, error, next `run_at` (for a retry) and the attempts given back.
    fn write(&self, now: i64) -> JobWrite<'_> {
        let at = |after: &Duration| Some(now + after.as_millis() as i64);
        let (error, run_at, refund) = match self {
            Completion::Succeeded { .. } => (None, None, 0),
            Completion::Failed { error, retry_in, .. } => {
                let run_at = if self.event() == JobEvent::FailRetryable {
                    retry_in.as_ref().and_then(at)
                } else {
                    None
                };
                (Some(error.as_str()), run_at, 0)
            }
            Completion::Deferred { reason, retry_in, .. } => (Some(reason.as_str()), at(retry_in), 1),
        };
        JobWrite { job: self.job(), status: self.event().target(), error, run_at, refund }
    }

    /// What the attempt was billed for. A result written counts its own through the tallies' triggers; this is
    /// added for every other completion, and for a result that a stale writer could not write.
    fn spent(&self) -> RunUsage {
        match self {
            Completion::Succeeded { result, .. } => RunUsage {
                prompt_tokens: result.prompt_tokens.unwrap_or(0),
                completion_tokens: result.completion_tokens.unwrap_or(0),
                cost_usd: result.cost_usd.unwrap_or(0.0),
            },
            Completion::Failed { spent, .. } | Completion::Deferred { spent, .. } => *spent,
        }
    }
}

/// One job row's new values after a completion.
struct JobWrite<'a> {
    job: &'a ClaimedJob,
    status: JobStatus,
    error: Option<&'a str>,
    run_at: Option<i64>,
    refund: i64,
}

/// What every job of a run needs: its workspace, the offer as it was when the run was created, its cost cap.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSnapshot {
    pub workspace: String,
    pub offer: leadscore_core::Offer,
    pub max_cost_usd: Option<f64>,
    /// The creating request's W3C trace context, which the run's job spans continue.
    pub traceparent: Option<String>,
}

/// One job as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub lead_id: String,
    pub status: JobStatus,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
}

/// Active runs considered per claim; a claim takes about `limit / runs` jobs from each, so a small run queued
/// behind a large one is served in the very next claims.
const FAIR_RUNS: i64 = 64;

/// `set ...` of a run that has no open job left (the [`RunEvent::Drained`] move; `$1`: now).
fn finish_set() -> String {
    format!("set status = {}, finished_at = $1", run_target(RunEvent::Drained))
}

/// The runs (`runs` in the statement) that may be finished: the drained move's sources, without open jobs.
/// PostgreSQL probes the partial index `jobs_open` once. SQLite reads the run's tallies (exact: kept by triggers
/// in the same transaction): its planner, without statistics, walked the run's jobs by primary key instead,
/// past every finished one, which made each completion batch cost as much as the jobs done so far (11 ms per
/// batch, a third of a 100,000-lead run; BENCHMARKS.md, issue 17).
fn finishable(backend: Backend) -> String {
    let open = match backend {
        Backend::Postgres => {
            format!("select 1 from jobs where jobs.run_id = runs.id and jobs.status in ({})", *OPEN_JOBS)
        }
        Backend::Sqlite => format!(
            "select 1 from run_tallies t where t.run_id = runs.id and t.counter in ({}) and t.n > 0",
            *OPEN_JOBS
        ),
    };
    format!("{} and not exists ({open})", run_guard("status", RunEvent::Drained))
}

/// `set ...` of a job whose lease expired (`$1`: now): back to the queue, or failed on its last attempt.
fn rescue_set() -> String {
    format!(
        "set status = case when attempts >= max_attempts then {} else {} end, \
         last_error = 'lease expired: the worker stopped while scoring this lead', \
         lease_owner = null, lease_expires_at = null, run_at = $1",
        crate::states::lit_job(JobEvent::LeaseExpiredLast.target()),
        crate::states::lit_job(JobEvent::LeaseExpired.target()),
    )
}

impl Store {
    /// Claims up to `limit` due jobs for `worker`, spread over the active runs, with a lease of `lease`.
    pub async fn claim_jobs(&self, worker: &str, limit: usize, lease: Duration) -> Result<Vec<ClaimedJob>> {
        Ok(self.claim_work(worker, limit, lease).await?.into_iter().map(|w| w.job).collect())
    }

    /// [`claim_jobs`](Self::claim_jobs), returning the claimed jobs' leads too; runs whose first job is claimed
    /// start (`queued -> running`).
    pub async fn claim_work(&self, worker: &str, limit: usize, lease: Duration) -> Result<Vec<ClaimedWork>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = now_millis();
        let expires = now + lease.as_millis() as i64;
        match &self.pool {
            Pool::Pg(pool) => postgres::claim(pool, worker, limit, now, expires).await,
            Pool::Sqlite(pool) => {
                let jobs = sqlite::claim(pool, worker, limit, now, expires).await?;
                self.with_leads(jobs).await
            }
        }
    }

    /// Writes a batch of finished attempts in one transaction, then settles the batch's runs (finishes those
    /// without open jobs, announces progress). Returns how many were applied: a completion of a job this worker
    /// no longer leases (rescued, cancelled) is ignored.
    pub async fn complete_jobs(&self, worker: &str, done: &[Completion]) -> Result<u64> {
        // A job twice in one batch: its lease was rescued while this pool still worked on it, and the pool claimed
        // it again. Its first completion is written first; each later one goes in a batch of its own, finds its
        // guard taken (the job left `running`) and adds only its spend. The batch statements assume one
        // completion per job.
        let mut seen = std::collections::HashSet::new();
        if !done.iter().all(|c| seen.insert((c.job().run_id.as_str(), c.job().lead_id.as_str()))) {
            let mut seen = std::collections::HashSet::new();
            let (first, later): (Vec<Completion>, Vec<Completion>) = done
                .iter()
                .cloned()
                .partition(|c| seen.insert((c.job().run_id.clone(), c.job().lead_id.clone())));
            let applied = Box::pin(self.complete_jobs(worker, &first)).await?;
            return Ok(applied + Box::pin(self.complete_jobs(worker, &later)).await?);
        }
        let now = now_millis();
        let mut runs: Vec<&str> = done.iter().map(|c| c.job().run_id.as_str()).collect();
        runs.sort_unstable();
        runs.dedup();
        match &self.pool {
            Pool::Pg(pool) => {
                let applied = postgres::complete(pool, worker, done, now).await?;
                self.settle_after_write(&runs).await;
                Ok(applied)
            }
            // The batch's runs are settled in its own transaction: one write lock, not two.
            Pool::Sqlite(pool) => {
                let applied = sqlite::complete(pool, worker, done, now, &runs).await?;
                self.announce_progress(&runs).await;
                Ok(applied)
            }
        }
    }

    /// Extends the leases of `jobs` (run id, lead id) that `worker` still holds: only the jobs the pool is
    /// working on or has yet to write, so a job whose claim answer was lost, or whose completion was lost with
    /// a database crash, is not kept alive by its pool but expires and is rescued.
    pub async fn renew_leases(
        &self,
        worker: &str,
        jobs: &[(String, String)],
        lease: Duration,
    ) -> Result<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let expires = now_millis() + lease.as_millis() as i64;
        match &self.pool {
            Pool::Pg(pool) => postgres::renew(pool, worker, jobs, expires).await,
            Pool::Sqlite(pool) => sqlite::renew(pool, worker, jobs, expires).await,
        }
    }

    /// Returns jobs whose lease expired (their worker died) to the queue, or fails them when they have used
    /// all their attempts. Safe to run from any worker at any time.
    pub async fn rescue_expired(&self) -> Result<u64> {
        let now = now_millis();
        let rescued = match &self.pool {
            Pool::Pg(pool) => postgres::rescue(pool, now).await?,
            Pool::Sqlite(pool) => sqlite::rescue(pool, now).await?,
        };
        metrics::counter!("leadscore_jobs_rescued_total").increment(rescued);
        Ok(rescued)
    }

    /// Marks runs whose jobs are all finished as completed, and cancelling runs whose last job finished as
    /// cancelled. Completion batches settle their own runs; this sweep over every active run is for the
    /// maintenance leader and for control actions.
    ///
    /// First it cancels the waiting jobs of cancelling runs: a job that was running when its run was cancelled
    /// and came back to wait (a retryable failure, a deferral, a rescued lease, a release at shutdown) would
    /// never be claimed again, since a cancelling run is not claimable, and the run would never finish.
    pub async fn finish_idle_runs(&self) -> Result<u64> {
        let stray = format!(
            "update jobs set status = {} where {} and run_id in (select id from runs where status = {})",
            crate::states::lit_job(JobEvent::Cancel.target()),
            crate::states::job_guard("status", JobEvent::Cancel),
            crate::states::lit_run(leadscore_core::RunStatus::Cancelling)
        );
        let sql = format!("update runs {} where {} returning id", finish_set(), finishable(self.backend()));
        let finished: Vec<String> = on_pool!(self, pool => {
            let mut tx = crate::WritePool::begin_write(pool).await?;
            sqlx::query(sqlx::AssertSqlSafe(stray)).execute(&mut *tx).await?;
            let finished = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(crate::now()).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            finished
        });
        let ids: Vec<&str> = finished.iter().map(String::as_str).collect();
        self.announce_progress(&ids).await;
        Ok(finished.len() as u64)
    }

    /// [`settle_runs`](Self::settle_runs) after a committed change to the jobs of `runs` (a completion batch, a
    /// deleted lead): a failure is only logged (the maintenance leader's sweep finishes the runs within a
    /// second), never reported as a failed write that would be written again.
    pub(crate) async fn settle_after_write(&self, runs: &[&str]) {
        if let Err(e) = self.settle_runs(runs).await {
            tracing::warn!(error = %e, "finishing runs after a write to their jobs failed");
        }
    }

    /// After completions of `runs` were written: finishes those of them left without open jobs and announces
    /// progress on all of them.
    async fn settle_runs(&self, runs: &[&str]) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        match &self.pool {
            Pool::Pg(pool) => {
                postgres::settle(pool, runs).await?;
                for run in runs {
                    let _ = self.progress.send((*run).to_owned());
                }
            }
            Pool::Sqlite(pool) => {
                sqlite::settle(pool, runs).await?;
                self.announce_progress(runs).await;
            }
        }
        Ok(())
    }

    /// Adds the claimed jobs' leads (SQLite; Postgres reads them in the claim statement).
    async fn with_leads(&self, jobs: Vec<ClaimedJob>) -> Result<Vec<ClaimedWork>> {
        let mut by_run: std::collections::HashMap<String, Vec<ClaimedJob>> = Default::default();
        for job in jobs {
            by_run.entry(job.run_id.clone()).or_default().push(job);
        }
        let mut work = Vec::new();
        for (run, jobs) in by_run {
            // The workspace only: the worker caches the run's snapshot itself.
            let workspace: Option<String> = on_pool!(self, pool =>
                sqlx::query_scalar("select workspace_id from runs where id = $1")
                    .bind(&run)
                    .fetch_optional(pool)
                    .await?);
            let Some(workspace) = workspace else {
                work.extend(jobs.into_iter().map(|job| ClaimedWork { job, lead: None }));
                continue;
            };
            let ids: Vec<String> = jobs.iter().map(|j| j.lead_id.clone()).collect();
            let mut leads: std::collections::HashMap<String, crate::LeadRecord> =
                self.leads_by_ids(&workspace, &ids).await?.into_iter().map(|l| (l.id.clone(), l)).collect();
            work.extend(jobs.into_iter().map(|job| {
                let lead = leads.remove(&job.lead_id);
                ClaimedWork { job, lead }
            }));
        }
        Ok(work)
    }

    /// A run's workspace and offer snapshot (what a worker needs besides the leads).
    pub async fn run_snapshot(&self, run_id: &str) -> Result<Option<RunSnapshot>> {
        type Row = (String, Json<leadscore_core::Offer>, Option<f64>, Option<String>);
        let row = on_pool!(self, pool => sqlx::query_as::<_, Row>(
            "select workspace_id, offer_snapshot, max_cost_usd, traceparent from runs where id = $1")
            .bind(run_id)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(|(workspace, offer, max_cost_usd, traceparent)| RunSnapshot {
            workspace,
            offer: offer.0,
            max_cost_usd,
            traceparent,
        }))
    }

    /// A run's jobs in lead order, optionally of one status (cursor = lead id).
    pub async fn list_jobs(
        &self,
        run_id: &str,
        status: Option<JobStatus>,
        page: &crate::Page,
    ) -> Result<crate::Paged<JobRecord>> {
        let rows: Vec<(String, String, i64, i64, Option<String>)> = on_pool!(self, pool => sqlx::query_as(
            "select lead_id, status, attempts, max_attempts, last_error from jobs \
             where run_id = $1 and lead_id > $2 and ($3 is null or status = $3) order by lead_id limit $4")
            .bind(run_id)
            .bind(page.after.as_deref().unwrap_or(""))
            .bind(status.map(JobStatus::as_str))
            .bind(page.fetch_limit())
            .fetch_all(pool)
            .await?);
        let jobs = rows
            .into_iter()
            .map(|(lead_id, status, attempts, max_attempts, last_error)| {
                Ok(JobRecord { lead_id, status: job_status(&status)?, attempts, max_attempts, last_error })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(page.finish(jobs, |j| j.lead_id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use leadscore_core::{JobEvent, JobStatus};

    #[test]
    fn every_completion_leaves_running() {
        for event in [JobEvent::Succeed, JobEvent::FailRetryable, JobEvent::FailFinal, JobEvent::Defer] {
            assert_eq!(JobStatus::sources(event), [JobStatus::Running], "{event:?}");
        }
    }
}
