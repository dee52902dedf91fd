//! Runs: one request to score a set of leads against a snapshot of one offer, with one job per lead.
//!
//! [`create`] makes them (the one path for the API, the seed-compatible routes and the CLI), [`control`] moves
//! them through the core's table of run moves, [`watch`] wakes whoever waits for one to change.

mod active;
mod control;
mod create;
mod watch;

use leadscore_core::{JobStatus, Offer, RunStatus, StopReason};
use time::OffsetDateTime;

use crate::row::DbRow;
use crate::states::{job_status, run_status, stop_reason};
use crate::{Page, Paged, Result, Store, on_pool};

pub use control::{Control, ControlOutcome};
pub use create::{Created, Estimate, IdempotencyKey, NewRun};
pub use watch::RunWatch;

/// Which leads a run scores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Upload(String),
    Leads(Vec<String>),
    /// The workspace's leads with no result for this offer and no job of this offer waiting or running.
    AllUnscored,
}

/// A stored run (counts are read separately: they change while it runs).
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub offer_id: String,
    pub offer: Offer,
    pub status: RunStatus,
    /// Why the run is `paused` or `blocked`; set in exactly those states.
    pub stop_reason: Option<StopReason>,
    pub total: i64,
    pub max_cost_usd: Option<f64>,
    pub estimated_cost_usd: Option<f64>,
    /// The message behind `stop_reason`: the provider's words when `blocked`, the cap when paused by it.
    pub blocked_reason: Option<String>,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
}

/// How many of a run's jobs are in each state; always adds up to `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub total: i64,
    pub queued: i64,
    pub running: i64,
    pub retrying: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl JobCounts {
    /// No job can make progress any more.
    pub fn is_idle(&self) -> bool {
        JobStatus::OPEN.iter().all(|s| self.get(*s) == 0)
    }

    pub fn get(&self, status: JobStatus) -> i64 {
        match status {
            JobStatus::Queued => self.queued,
            JobStatus::Running => self.running,
            JobStatus::Retrying => self.retrying,
            JobStatus::Succeeded => self.succeeded,
            JobStatus::Failed => self.failed,
            JobStatus::Cancelled => self.cancelled,
        }
    }

    fn slot(&mut self, status: JobStatus) -> &mut i64 {
        match status {
            JobStatus::Queued => &mut self.queued,
            JobStatus::Running => &mut self.running,
            JobStatus::Retrying => &mut self.retrying,
            JobStatus::Succeeded => &mut self.succeeded,
            JobStatus::Failed => &mut self.failed,
            JobStatus::Cancelled => &mut self.cancelled,
        }
    }
}

/// What a status poll shows of a run's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunTallies {
    pub jobs: JobCounts,
    pub results: ResultCounts,
    pub usage: crate::RunUsage,
}

impl RunTallies {
    /// Adds one counter of `run_tallies` (a job status, a score basis, tokens or nano-USD).
    fn add(&mut self, counter: &str, n: i64) {
        match counter {
            "hybrid" => self.results.hybrid += n,
            "prompt_tokens" => self.usage.prompt_tokens += n,
            "completion_tokens" => self.usage.completion_tokens += n,
            "cost_nusd" => self.usage.cost_usd += n as f64 / 1e9,
            other => match JobStatus::parse(other) {
                Some(status) => {
                    *self.jobs.slot(status) += n;
                    self.jobs.total += n;
                }
                None => self.results.rules_only += n, // every other basis is a rules-only one
            },
        }
    }
}

/// Results of a run by basis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResultCounts {
    pub hybrid: i64,
    pub rules_only: i64,
}

/// A run with its tallies, as a status poll or a listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStatusView {
    pub run: RunRecord,
    pub tallies: RunTallies,
}

const RUN_COLUMNS: &str = "id, offer_id, offer_snapshot, status, stop_reason, total, max_cost_usd, \
     estimated_cost_usd, blocked_reason, created_at, started_at, finished_at";

fn run_from_row(r: &impl DbRow) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.text("id")?,
        offer_id: r.text("offer_id")?,
        offer: r.json("offer_snapshot")?,
        status: run_status(&r.text("status")?)?,
        stop_reason: stop_reason(r.opt_text("stop_reason")?)?,
        total: r.int("total")?,
        max_cost_usd: r.opt_float("max_cost_usd")?,
        estimated_cost_usd: r.opt_float("estimated_cost_usd")?,
        blocked_reason: r.opt_text("blocked_reason")?,
        created_at: r.time("created_at")?,
        started_at: r.opt_time("started_at")?,
        finished_at: r.opt_time("finished_at")?,
    })
}

/// Default attempts per job before it fails.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;

impl Store {
    pub async fn get_run(&self, workspace: &str, id: &str) -> Result<Option<RunRecord>> {
        on_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {RUN_COLUMNS} from runs where id = $1 and workspace_id = $2")))
                .bind(id)
                .bind(workspace)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(run_from_row).transpose()
        })
    }

    /// A run with its tallies (what `GET /v1/runs/{id}` shows).
    pub async fn run_status(&self, workspace: &str, id: &str) -> Result<Option<RunStatusView>> {
        let Some(run) = self.get_run(workspace, id).await? else { return Ok(None) };
        let tallies = self.run_tallies(&run.id).await?;
        Ok(Some(RunStatusView { run, tallies }))
    }

    /// A page of runs with their tallies, in one query (one row per run and counter, folded here).
    pub async fn list_runs(&self, workspace: &str, page: &Page) -> Result<Paged<RunStatusView>> {
        let sql = format!(
            "with page as (select {RUN_COLUMNS} from runs where workspace_id = $1 and id > $2 order by id limit $3) \
             select page.*, t.counter, t.n from page left join ( \
               select run_id, counter, cast(sum(n) as bigint) as n from run_tallies \
               where run_id in (select id from page) group by run_id, counter) t on t.run_id = page.id \
             order by page.id"
        );
        let views = on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(workspace)
                .bind(page.after.as_deref().unwrap_or(""))
                .bind(page.fetch_limit())
                .fetch_all(pool)
                .await?;
            let mut views: Vec<RunStatusView> = Vec::new();
            for row in &rows {
                let id = row.text("id")?;
                if views.last().is_none_or(|v| v.run.id != id) {
                    views.push(RunStatusView { run: run_from_row(row)?, tallies: RunTallies::default() });
                }
                if let (Some(counter), Some(n), Some(view)) = (row.opt_text("counter")?, row.opt_int("n")?, views.last_mut()) {
                    view.tallies.add(&counter, n);
                }
            }
            views
        });
        Ok(page.finish(views, |v| v.run.id.clone()))
    }

    /// The run's job counts, result counts and usage, read from its tallies: a few rows however large the run
    /// (the triggers of migration 0005 keep them; one consistent snapshot, so the job counts add up).
    pub async fn run_tallies(&self, run_id: &str) -> Result<RunTallies> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "select counter, cast(sum(n) as bigint) from run_tallies where run_id = $1 group by counter")
            .bind(run_id)
            .fetch_all(pool)
            .await?);
        let mut t = RunTallies::default();
        for (counter, n) in rows {
            t.add(&counter, n);
        }
        Ok(t)
    }

    /// The run's jobs by state.
    pub async fn job_counts(&self, run_id: &str) -> Result<JobCounts> {
        Ok(self.run_tallies(run_id).await?.jobs)
    }

    /// The run's jobs by state counted row by row (one `GROUP BY` over its jobs): what the tallies must equal
    /// once the run is idle. Linear in the run's size; for tests and benchmarks.
    pub async fn job_counts_by_scan(&self, run_id: &str) -> Result<JobCounts> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "select status, count(*) from jobs where run_id = $1 group by status")
            .bind(run_id)
            .fetch_all(pool)
            .await?);
        let mut c = JobCounts::default();
        for (status, n) in rows {
            *c.slot(job_status(&status)?) = n;
            c.total += n;
        }
        Ok(c)
    }

    pub async fn result_counts(&self, run_id: &str) -> Result<ResultCounts> {
        Ok(self.run_tallies(run_id).await?.results)
    }

    /// Tells idle workers that jobs arrived: this process's directly, other processes through one Postgres
    /// `NOTIFY` per enqueue (they also poll, so a lost notification only costs a poll interval).
    pub(crate) async fn notify_jobs(&self) {
        self.jobs_enqueued.notify_one();
        if let crate::Pool::Pg(pool) = &self.pool
            && let Err(e) = sqlx::query("select pg_notify('leadscore_jobs', '')").execute(pool).await
        {
            tracing::warn!(error = %e, "NOTIFY failed; workers will find the jobs on their next poll");
        }
    }
}
