//! Runs: one request to score a set of leads against a snapshot of one offer, with one job per lead.

use leadscore_core::Offer;
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::row::DbRow;
use crate::{Page, Paged, Pool, Result, Store, StoreError, new_id, now, now_millis, on_pool};

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
    pub status: String,
    pub total: i64,
    pub max_cost_usd: Option<f64>,
    pub estimated_cost_usd: Option<f64>,
    /// Why the run is `blocked` (the provider's message) or `paused` by its cost cap.
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
        self.queued + self.running + self.retrying == 0
    }

    /// The count of one job status.
    fn slot(&mut self, status: &str) -> Option<&mut i64> {
        Some(match status {
            "queued" => &mut self.queued,
            "running" => &mut self.running,
            "retrying" => &mut self.retrying,
            "succeeded" => &mut self.succeeded,
            "failed" => &mut self.failed,
            "cancelled" => &mut self.cancelled,
            _ => return None,
        })
    }
}

/// What a status poll shows of a run's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunTallies {
    pub jobs: JobCounts,
    pub results: ResultCounts,
    pub usage: crate::RunUsage,
}

/// Results of a run by basis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResultCounts {
    pub hybrid: i64,
    pub rules_only: i64,
}

const RUN_COLUMNS: &str = "id, offer_id, offer_snapshot, status, total, max_cost_usd, estimated_cost_usd, blocked_reason, created_at, \
     started_at, finished_at";

fn run_from_row(r: &impl DbRow) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.text("id")?,
        offer_id: r.text("offer_id")?,
        offer: r.json("offer_snapshot")?,
        status: r.text("status")?,
        total: r.int("total")?,
        max_cost_usd: r.opt_float("max_cost_usd")?,
        estimated_cost_usd: r.opt_float("estimated_cost_usd")?,
        blocked_reason: r.opt_text("blocked_reason")?,
        created_at: r.time("created_at")?,
        started_at: r.opt_time("started_at")?,
        finished_at: r.opt_time("finished_at")?,
    })
}

/// The condition on leads `l` of workspace `ws` with no result for offer `offer` and no job of it waiting or
/// running in a run other than `run` (each argument is a SQL placeholder or literal).
fn unscored(run: &str, ws: &str, offer: &str) -> String {
    format!(
        "not exists (select 1 from results r where r.workspace_id = {ws} and r.offer_id = {offer} \
           and r.lead_id = l.id) \
         and not exists (select 1 from jobs j join runs r on r.id = j.run_id where r.workspace_id = {ws} \
           and r.offer_id = {offer} and j.lead_id = l.id and j.status in ('queued', 'running', 'retrying') \
           and j.run_id <> {run})"
    )
}

/// Default attempts per job before it fails.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;

impl Store {
    /// Creates a run and all its jobs in ONE transaction with set-based SQL (`INSERT ... SELECT`): a run exists
    /// with all its jobs or not at all. Errors: the offer does not exist, or the selection holds no lead.
    pub async fn create_run(
        &self,
        workspace: &str,
        offer_id: &str,
        selection: &Selection,
        max_cost_usd: Option<f64>,
    ) -> Result<RunRecord> {
        let offer = self.get_offer(workspace, offer_id).await?.ok_or(StoreError::OfferNotFound)?;
        let run = RunRecord {
            id: new_id(),
            offer_id: offer_id.to_owned(),
            offer: offer.offer,
            status: "queued".to_owned(),
            total: 0,
            max_cost_usd,
            estimated_cost_usd: None,
            blocked_reason: None,
            created_at: now(),
            started_at: None,
            finished_at: None,
        };
        let insert_run = "insert into runs (id, workspace_id, offer_id, offer_snapshot, status, max_cost_usd, created_at) \
                          values ($1, $2, $3, $4, 'queued', $5, $6)";
        let now_ms = now_millis();
        let ids_subquery = match self.backend() {
            // Collated like the column (see `leads_by_ids`): the primary key is probed per id.
            crate::Backend::Postgres => "select jsonb_array_elements_text($5) collate \"C\"",
            crate::Backend::Sqlite => "select value from json_each($5)",
        };
        let total = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(insert_run)
                .bind(&run.id)
                .bind(workspace)
                .bind(offer_id)
                .bind(Json(&run.offer))
                .bind(max_cost_usd)
                .bind(run.created_at)
                .execute(&mut *tx)
                .await?;
            let jobs = "insert into jobs (run_id, lead_id, status, max_attempts, run_at) \
                        select $1, l.id, 'queued', $2, $3 from leads l where l.workspace_id = $4";
            let inserted = match selection {
                Selection::Upload(upload) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{jobs} and l.upload_id = $5 \
                     and l.id >= (select min_lead_id from uploads where id = $5 and workspace_id = $4) \
                     and l.id <= (select max_lead_id from uploads where id = $5 and workspace_id = $4)")))
                    .bind(&run.id).bind(DEFAULT_MAX_ATTEMPTS).bind(now_ms).bind(workspace).bind(upload)
                    .execute(&mut *tx).await?.rows_affected(),
                Selection::Leads(ids) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{jobs} and l.id in ({ids_subquery})")))
                    .bind(&run.id).bind(DEFAULT_MAX_ATTEMPTS).bind(now_ms).bind(workspace).bind(Json(ids))
                    .execute(&mut *tx).await?.rows_affected(),
                Selection::AllUnscored => sqlx::query(sqlx::AssertSqlSafe(format!("{jobs} and {}", unscored("$1", "$4", "$5"))))
                    .bind(&run.id).bind(DEFAULT_MAX_ATTEMPTS).bind(now_ms).bind(workspace).bind(offer_id)
                    .execute(&mut *tx).await?.rows_affected(),
            };
            if inserted == 0 {
                return Err(StoreError::EmptySelection);
            }
            sqlx::query("update runs set total = $1 where id = $2")
                .bind(inserted as i64)
                .bind(&run.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            inserted as i64
        });
        self.analyze_after_bulk_write("jobs", total).await;
        self.notify_jobs().await;
        Ok(RunRecord { total, ..run })
    }

    /// How many leads [`Selection::AllUnscored`] would select now.
    pub async fn count_unscored(&self, workspace: &str, offer_id: &str) -> Result<i64> {
        let n = on_pool!(self, pool => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
            "select count(*) from leads l where l.workspace_id = $1 and {}", unscored("''", "$1", "$2"))))
            .bind(workspace)
            .bind(offer_id)
            .fetch_one(pool)
            .await?);
        Ok(n)
    }

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

    pub async fn list_runs(&self, workspace: &str, page: &Page) -> Result<Paged<RunRecord>> {
        let rows = on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {RUN_COLUMNS} from runs where workspace_id = $1 and id > $2 order by id limit $3")))
                .bind(workspace)
                .bind(page.after.as_deref().unwrap_or(""))
                .bind(page.fetch_limit())
                .fetch_all(pool)
                .await?;
            rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?
        });
        Ok(page.finish(rows, |r| r.id.clone()))
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
            let slot = match counter.as_str() {
                "hybrid" => &mut t.results.hybrid,
                "prompt_tokens" => &mut t.usage.prompt_tokens,
                "completion_tokens" => &mut t.usage.completion_tokens,
                "cost_nusd" => {
                    t.usage.cost_usd = n as f64 / 1e9;
                    continue;
                }
                status => match t.jobs.slot(status) {
                    Some(slot) => slot,
                    None => &mut t.results.rules_only, // every other basis is a rules-only one
                },
            };
            *slot += n;
        }
        t.jobs.total = t.jobs.queued
            + t.jobs.running
            + t.jobs.retrying
            + t.jobs.succeeded
            + t.jobs.failed
            + t.jobs.cancelled;
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
            *c.slot(&status).ok_or_else(|| StoreError::Corrupt(format!("job status {status:?}")))? = n;
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
        if let Pool::Pg(pool) = &self.pool
            && let Err(e) = sqlx::query("select pg_notify('leadscore_jobs', '')").execute(pool).await
        {
            tracing::warn!(error = %e, "NOTIFY failed; workers will find the jobs on their next poll");
        }
    }
}

/// A control action on a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Jobs not started are cancelled; running ones finish (`cancelling` -> `cancelled`).
    Cancel,
    /// Stop claiming this run's jobs.
    Pause,
    /// Claim them again (also lifts `blocked`).
    Resume,
    /// Re-queue failed jobs and jobs whose result is `rules_only`.
    Retry,
}

/// Why a control action does not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOutcome {
    /// Applied; the number of jobs it moved.
    Applied(u64),
    /// Not possible in the run's current status.
    Conflict(String),
}

impl Store {
    /// Applies a control action. Returns `None` when the run does not exist in the workspace.
    pub async fn control_run(
        &self,
        workspace: &str,
        run_id: &str,
        action: Control,
    ) -> Result<Option<ControlOutcome>> {
        let Some(run) = self.get_run(workspace, run_id).await? else {
            return Ok(None);
        };
        let status = run.status.as_str();
        let conflict =
            |what: &str| Ok(Some(ControlOutcome::Conflict(format!("cannot {what} a run that is {status}"))));
        let now = now_millis();
        let moved = match action {
            Control::Cancel => {
                if matches!(status, "cancelling" | "cancelled" | "completed") {
                    return conflict("cancel");
                }
                on_pool!(self, pool => {
                    let mut tx = pool.begin().await?;
                    let n = sqlx::query("update jobs set status = 'cancelled', lease_owner = null \
                                         where run_id = $1 and status in ('queued', 'retrying')")
                        .bind(run_id).execute(&mut *tx).await?.rows_affected();
                    sqlx::query("update runs set status = 'cancelling' where id = $1")
                        .bind(run_id).execute(&mut *tx).await?;
                    tx.commit().await?;
                    n
                })
            }
            Control::Pause => {
                if !matches!(status, "queued" | "running") {
                    return conflict("pause");
                }
                self.set_run_status(run_id, "paused").await?;
                0
            }
            Control::Resume => {
                if !matches!(status, "paused" | "blocked") {
                    return conflict("resume");
                }
                if run.blocked_reason.as_deref().is_some_and(|r| r.starts_with("max_cost_usd reached")) {
                    // Paused by its cost cap: resuming means "spend more", so the cap is lifted (it would
                    // pause the run again at the next completed batch otherwise).
                    on_pool!(self, pool => {
                        sqlx::query("update runs set max_cost_usd = null where id = $1")
                            .bind(run_id).execute(pool).await?;
                    });
                }
                self.set_run_status(run_id, if run.started_at.is_some() { "running" } else { "queued" })
                    .await?;
                // Jobs put off while the run was blocked are due now, not after their deferral.
                let n = on_pool!(self, pool => sqlx::query(
                    "update jobs set run_at = $2 where run_id = $1 and status = 'retrying' and run_at > $2")
                    .bind(run_id).bind(now).execute(pool).await?.rows_affected());
                self.notify_jobs().await;
                n
            }
            Control::Retry => {
                if matches!(status, "cancelling" | "cancelled") {
                    return conflict("retry");
                }
                on_pool!(self, pool => {
                    let mut tx = pool.begin().await?;
                    let n = sqlx::query(
                        "update jobs set status = 'queued', attempts = 0, run_at = $2, last_error = null \
                         where run_id = $1 and (status = 'failed' or (status = 'succeeded' and exists ( \
                           select 1 from results r where r.run_id = jobs.run_id and r.lead_id = jobs.lead_id \
                           and r.score_basis = 'rules_only')))")
                        .bind(run_id).bind(now).execute(&mut *tx).await?.rows_affected();
                    if n > 0 {
                        let next = if status == "paused" { "paused" } else if run.started_at.is_some() { "running" } else { "queued" };
                        sqlx::query("update runs set status = $1, finished_at = null where id = $2")
                            .bind(next).bind(run_id).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    n
                })
            }
        };
        if moved > 0 && action == Control::Retry {
            self.notify_jobs().await;
        }
        self.finish_idle_runs().await?;
        self.announce_progress(&[run_id]).await;
        Ok(Some(ControlOutcome::Applied(moved)))
    }

    async fn set_run_status(&self, run_id: &str, status: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("update runs set status = $1, blocked_reason = null where id = $2")
            .bind(status).bind(run_id).execute(pool).await?;
        });
        Ok(())
    }
}

/// What an `Idempotency-Key` already stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idempotent {
    /// Not seen (or older than 24 h): go ahead, then [`Store::remember_idempotency_key`].
    New,
    /// Seen with the same body: this run.
    Replay(String),
    /// Seen with a different body.
    Mismatch,
}

const IDEMPOTENCY_TTL: time::Duration = time::Duration::hours(24);

impl Store {
    pub async fn check_idempotency_key(
        &self,
        workspace: &str,
        route: &str,
        key: &str,
        body_hash: &str,
    ) -> Result<Idempotent> {
        let row: Option<(String, String, OffsetDateTime)> = on_pool!(self, pool => sqlx::query_as(
            "select body_hash, run_id, created_at from idempotency_keys where workspace_id = $1 and route = $2 and key = $3")
            .bind(workspace)
            .bind(route)
            .bind(key)
            .fetch_optional(pool)
            .await?);
        Ok(match row {
            Some((_, _, created)) if now() - created > IDEMPOTENCY_TTL => Idempotent::New,
            Some((hash, run, _)) if hash == body_hash => Idempotent::Replay(run),
            Some(_) => Idempotent::Mismatch,
            None => Idempotent::New,
        })
    }

    /// Records the run a key created (replacing an expired entry).
    pub async fn remember_idempotency_key(
        &self,
        workspace: &str,
        route: &str,
        key: &str,
        body_hash: &str,
        run_id: &str,
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "insert into idempotency_keys (workspace_id, route, key, body_hash, run_id, created_at) \
                 values ($1, $2, $3, $4, $5, $6) on conflict (workspace_id, route, key) do update \
                 set body_hash = excluded.body_hash, run_id = excluded.run_id, created_at = excluded.created_at")
                .bind(workspace)
                .bind(route)
                .bind(key)
                .bind(body_hash)
                .bind(run_id)
                .bind(now())
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
