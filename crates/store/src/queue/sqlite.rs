//! The queue's statements on SQLite: one process writes, each transaction takes the write lock up front
//! (`BEGIN IMMEDIATE`), so no `SKIP LOCKED` is needed and a read-then-write never fails half-way with
//! `SQLITE_BUSY`. Per-row statements inside one transaction: a commit, not a statement, is what costs here.

use std::collections::HashSet;
use std::sync::LazyLock;

use leadscore_core::{JobEvent, JobStatus, RunEvent};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::result_row::{self, ResultRow, Value};
use super::{ClaimedJob, Completion, FAIR_RUNS, JobWrite, finish_set, finishable};
use crate::states::{CLAIMABLE_JOBS, CLAIMABLE_RUNS, job_guard, lit_job, run_guard, run_target};
use crate::{Result, WritePool};

/// Claims about `limit / runs` due jobs of each active run in one transaction: a failure claims nothing rather
/// than jobs the caller never hears of. Runs whose first job is claimed start.
pub(super) async fn claim(
    pool: &SqlitePool,
    worker: &str,
    limit: usize,
    now: i64,
    expires: i64,
) -> Result<Vec<ClaimedJob>> {
    let mut tx = pool.begin_write().await?;
    let runs: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select id from runs where status in ({}) order by id limit $1",
        *CLAIMABLE_RUNS
    )))
    .bind(FAIR_RUNS)
    .fetch_all(&mut *tx)
    .await?;
    let per_run = (limit / runs.len().max(1)).max(1) as i64;
    let claim = format!(
        "update jobs set status = {}, attempts = attempts + 1, lease_owner = $1, lease_expires_at = $2 \
         where run_id = $3 and lead_id in (select lead_id from jobs where run_id = $3 \
           and status in ({}) and run_at <= $4 order by run_at limit $5) \
         returning run_id, lead_id, attempts, max_attempts",
        lit_job(JobEvent::Claim.target()),
        *CLAIMABLE_JOBS
    );
    let start = format!(
        "update runs set status = {}, started_at = $1 where id = $2 and {}",
        run_target(RunEvent::Claimed),
        run_guard("status", RunEvent::Claimed)
    );
    let mut rows: Vec<(String, String, i64, i64)> = Vec::new();
    for run in &runs {
        let room = limit.saturating_sub(rows.len()) as i64;
        if room == 0 {
            break;
        }
        let mut got: Vec<(String, String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(claim.as_str()))
            .bind(worker)
            .bind(expires)
            .bind(run)
            .bind(now)
            .bind(per_run.min(room))
            .fetch_all(&mut *tx)
            .await?;
        if !got.is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(start.as_str()))
                .bind(crate::now())
                .bind(run)
                .execute(&mut *tx)
                .await?;
        }
        rows.append(&mut got);
    }
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, lead_id, attempts, max_attempts)| ClaimedJob {
            run_id,
            lead_id,
            attempts,
            max_attempts,
        })
        .collect())
}

/// Rows per statement of a completion batch: within SQLite's default limit of 32,766 bound values (a result row
/// binds 19), and large enough that a worker's batch of completions is a few statements.
const ROWS_PER_STATEMENT: usize = 128;

/// Writes the batch in one transaction: the job rows under their guard, the results of those whose guard held,
/// and what was billed without a result written; then finishes those of `runs` left without open jobs.
///
/// Set-based: one statement per [`ROWS_PER_STATEMENT`] jobs, not one per job. Each statement is a hand-over to
/// the connection's thread and back, which cost the process more CPU per job than SQLite's own work
/// (BENCHMARKS.md, issue 17).
pub(super) async fn complete(
    pool: &SqlitePool,
    worker: &str,
    done: &[Completion],
    now: i64,
    runs: &[&str],
) -> Result<u64> {
    let writes: Vec<JobWrite<'_>> = done.iter().map(|c| c.write(now)).collect();
    let mut tx = pool.begin_write().await?;
    let mut applied: HashSet<(String, String)> = HashSet::new();
    // Successes all write the same values: a plain `update ... where (run_id, lead_id) in (...)` probes the
    // primary key per job, where the joined update of the others costs twice as much per row.
    let (succeeded, others): (Vec<_>, Vec<_>) =
        writes.into_iter().partition(|w| w.status == JobStatus::Succeeded);
    for chunk in succeeded.chunks(ROWS_PER_STATEMENT) {
        applied.extend(succeed_jobs(&mut tx, worker, chunk).await?);
    }
    for chunk in others.chunks(ROWS_PER_STATEMENT) {
        applied.extend(update_jobs(&mut tx, worker, chunk).await?);
    }
    let mut results = Vec::new();
    let mut held = 0;
    for c in done {
        let job = c.job();
        let holds = applied.contains(&(job.run_id.clone(), job.lead_id.clone()));
        held += u64::from(holds);
        match c {
            // A result written counts its spend by trigger; anything else counts it here.
            Completion::Succeeded { job, result } if holds => results.push(ResultRow { job, result }),
            _ => add_spent(&mut tx, c).await?,
        }
    }
    for chunk in results.chunks(ROWS_PER_STATEMENT) {
        insert_results(&mut tx, chunk).await?;
    }
    finish_drained(&mut tx, runs).await?;
    tx.commit().await?;
    Ok(held)
}

/// Marks jobs succeeded under their guard (`running`, leased by `worker`); returns the keys it changed.
async fn succeed_jobs(
    tx: &mut sqlx::SqliteConnection,
    worker: &str,
    writes: &[JobWrite<'_>],
) -> Result<Vec<(String, String)>> {
    let statement = |head: &str, tail: &str| {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(head);
        q.push(" where (run_id, lead_id) in (");
        q.push_values(writes, |mut row, w| {
            row.push_bind(w.job.run_id.as_str()).push_bind(w.job.lead_id.as_str());
        });
        q.push(format!(") and {} and lease_owner = ", job_guard("status", JobEvent::Succeed)));
        q.push_bind(worker);
        q.push(tail);
        q
    };
    let set = format!(
        "update jobs set status = {}, lease_owner = null, lease_expires_at = null",
        lit_job(JobStatus::Succeeded)
    );
    // Each row a statement returns crosses from the connection's thread on its own; counting first (the write
    // lock is held: nothing changes in between) returns one row when every guard holds, as it nearly always does.
    let mut count = statement("select count(*) from jobs", "");
    let holding: i64 = count.build_query_scalar().persistent(false).fetch_one(&mut *tx).await?;
    if holding == writes.len() as i64 {
        statement(&set, "").build().persistent(false).execute(&mut *tx).await?;
        return Ok(writes.iter().map(|w| (w.job.run_id.clone(), w.job.lead_id.clone())).collect());
    }
    let mut update = statement(&set, " returning run_id, lead_id");
    Ok(update.build_query_as().persistent(false).fetch_all(&mut *tx).await?)
}

/// Writes each job's new values under its guard (`running`, leased by `worker`); returns the keys it changed.
async fn update_jobs(
    tx: &mut sqlx::SqliteConnection,
    worker: &str,
    writes: &[JobWrite<'_>],
) -> Result<Vec<(String, String)>> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
        "update jobs set status = c.column3, last_error = coalesce(c.column4, jobs.last_error), \
           run_at = coalesce(c.column5, jobs.run_at), lease_owner = null, lease_expires_at = null, \
           attempts = jobs.attempts - c.column6 from (",
    );
    q.push_values(writes, |mut row, w| {
        row.push_bind(w.job.run_id.as_str())
            .push_bind(w.job.lead_id.as_str())
            .push_bind(w.status.as_str())
            .push_bind(w.error)
            .push_bind(w.run_at)
            .push_bind(w.refund);
    });
    q.push(format!(
        ") as c where jobs.run_id = c.column1 and jobs.lead_id = c.column2 and {} and jobs.lease_owner = ",
        job_guard("jobs.status", JobEvent::Succeed)
    ));
    q.push_bind(worker);
    q.push(" returning jobs.run_id, jobs.lead_id");
    // Not kept in the connection's statement cache: the batch's size picks the statement's text.
    Ok(q.build_query_as().persistent(false).fetch_all(&mut *tx).await?)
}

async fn add_spent(tx: &mut sqlx::SqliteConnection, c: &Completion) -> Result<()> {
    let spent = c.spent();
    if spent.is_zero() {
        return Ok(());
    }
    sqlx::query(
        "insert into run_tallies (run_id, counter, n) \
         select r.id, t.column1, t.column2 from runs r join (values ('prompt_tokens', $2), \
           ('completion_tokens', $3), ('cost_nusd', cast(round($4 * 1e9) as integer))) t \
         where r.id = $1 and t.column2 <> 0 \
         on conflict (run_id, counter) do update set n = n + excluded.n",
    )
    .bind(&c.job().run_id)
    .bind(spent.prompt_tokens)
    .bind(spent.completion_tokens)
    .bind(spent.cost_usd)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Inserts (or replaces, `version + 1`) results: each row's values bound in the order of the column list, with
/// its run's workspace and offer.
async fn insert_results(tx: &mut sqlx::SqliteConnection, rows: &[ResultRow<'_>]) -> Result<()> {
    let values = rows.iter().map(ResultRow::values).collect::<Result<Vec<_>>>()?;
    let created_at = crate::now();
    let n = result_row::VALUES.len();
    let columns: Vec<String> = (3..3 + n).map(|i| format!("c.column{i}")).collect();
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
        "insert into results ({}) select c.column1, c.column2, r.workspace_id, r.offer_id, 1, {}, c.column{} \
         from (",
        result_row::insert_columns(),
        columns.join(", "),
        3 + n,
    ));
    q.push_values(rows.iter().zip(values), |mut b, (row, values)| {
        b.push_bind(row.job.run_id.as_str()).push_bind(row.job.lead_id.as_str());
        for value in values {
            match value {
                Value::Text(v) => b.push_bind(v),
                Value::Int(v) => b.push_bind(v),
                Value::Float(v) => b.push_bind(v),
            };
        }
        b.push_bind(created_at);
    });
    q.push(") as c join runs r on r.id = c.column1 where true ").push(result_row::upsert());
    q.build().persistent(false).execute(&mut *tx).await?;
    Ok(())
}

/// Extends the leases `worker` still holds, in one transaction.
pub(super) async fn renew(
    pool: &SqlitePool,
    worker: &str,
    jobs: &[(String, String)],
    expires: i64,
) -> Result<u64> {
    let sql = format!(
        "update jobs set lease_expires_at = $1 where run_id = $3 and lead_id = $4 and lease_owner = $2 \
         and status = {}",
        lit_job(leadscore_core::JobStatus::Running)
    );
    let mut tx = pool.begin_write().await?;
    let mut n = 0;
    for (run, lead) in jobs {
        n += sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(expires)
            .bind(worker)
            .bind(run)
            .bind(lead)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    Ok(n)
}

/// Returns expired leases to the queue (or fails their jobs on the last attempt).
pub(super) async fn rescue(pool: &SqlitePool, now: i64) -> Result<u64> {
    let sql = format!(
        "update jobs {} where {} and lease_expires_at < $1",
        super::rescue_set(),
        job_guard("status", JobEvent::LeaseExpired)
    );
    let mut tx = pool.begin_write().await?;
    let rescued = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok(rescued)
}

/// Finishes those of `runs` without open jobs.
pub(super) async fn settle(pool: &SqlitePool, runs: &[&str]) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    finish_drained(&mut tx, runs).await?;
    tx.commit().await?;
    Ok(())
}

async fn finish_drained(tx: &mut sqlx::SqliteConnection, runs: &[&str]) -> Result<()> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!("update runs {} where id = $2 and {}", finish_set(), finishable(crate::Backend::Sqlite))
    });
    for run in runs {
        sqlx::query(sqlx::AssertSqlSafe(SQL.as_str())).bind(crate::now()).bind(run).execute(&mut *tx).await?;
    }
    Ok(())
}
