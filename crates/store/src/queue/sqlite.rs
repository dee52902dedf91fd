//! The queue's statements on SQLite: one process writes, each transaction takes the write lock up front
//! (`BEGIN IMMEDIATE`), so no `SKIP LOCKED` is needed and a read-then-write never fails half-way with
//! `SQLITE_BUSY`. Per-row statements inside one transaction: a commit, not a statement, is what costs here.

use leadscore_core::{JobEvent, RunEvent};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::result_row::{self, ResultRow, Value};
use super::{ClaimedJob, Completion, FAIR_RUNS, finish_set, finishable};
use crate::Result;
use crate::states::{CLAIMABLE_JOBS, CLAIMABLE_RUNS, job_guard, lit_job, run_guard, run_target};

/// Claims about `limit / runs` due jobs of each active run in one transaction: a failure claims nothing rather
/// than jobs the caller never hears of. Runs whose first job is claimed start.
pub(super) async fn claim(
    pool: &SqlitePool,
    worker: &str,
    limit: usize,
    now: i64,
    expires: i64,
) -> Result<Vec<ClaimedJob>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
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

/// Writes the batch in one transaction: each job row under its guard, its result when the guard held, and what
/// was billed without a result written.
pub(super) async fn complete(pool: &SqlitePool, worker: &str, done: &[Completion], now: i64) -> Result<u64> {
    let update = format!(
        "update jobs set status = $1, last_error = coalesce($2, last_error), run_at = coalesce($3, run_at), \
           lease_owner = null, lease_expires_at = null, attempts = attempts - $7 \
         where run_id = $4 and lead_id = $5 and {} and lease_owner = $6",
        job_guard("status", JobEvent::Succeed)
    );
    let mut applied = 0;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for c in done {
        let w = c.write(now);
        let updated = sqlx::query(sqlx::AssertSqlSafe(update.as_str()))
            .bind(w.status.as_str())
            .bind(w.error)
            .bind(w.run_at)
            .bind(&w.job.run_id)
            .bind(&w.job.lead_id)
            .bind(worker)
            .bind(w.refund)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // A result written counts its spend by trigger; anything else counts it here.
        let written = matches!(c, Completion::Succeeded { .. }) && updated > 0;
        if !written {
            add_spent(&mut tx, c).await?;
        }
        if updated == 0 {
            continue;
        }
        applied += 1;
        if let Completion::Succeeded { job, result } = c {
            insert_result(&mut tx, &ResultRow { job, result }).await?;
        }
    }
    tx.commit().await?;
    Ok(applied)
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

/// Inserts (or replaces, `version + 1`) one result, its values bound in the order of the column list.
async fn insert_result(tx: &mut sqlx::SqliteConnection, row: &ResultRow<'_>) -> Result<()> {
    let mut q: QueryBuilder<Sqlite> =
        QueryBuilder::new(format!("insert into results ({}) select ", result_row::insert_columns()));
    let mut values = q.separated(", ");
    values.push_bind(row.job.run_id.clone());
    values.push_bind(row.job.lead_id.clone());
    values.push("r.workspace_id");
    values.push("r.offer_id");
    values.push("1");
    for value in row.values()? {
        match value {
            Value::Text(v) => values.push_bind(v),
            Value::Int(v) => values.push_bind(v),
            Value::Float(v) => values.push_bind(v),
        };
    }
    values.push_bind(crate::now());
    q.push(" from runs r where r.id = ").push_bind(row.job.run_id.clone());
    q.push(" ").push(result_row::upsert());
    q.build().execute(&mut *tx).await?;
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
    let mut tx = pool.begin().await?;
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
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).execute(pool).await?.rows_affected())
}

/// Finishes those of `runs` without open jobs.
pub(super) async fn settle(pool: &SqlitePool, runs: &[&str]) -> Result<()> {
    let sql = format!("update runs {} where id = $2 and {}", finish_set(), finishable());
    for run in runs {
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(crate::now()).bind(run).execute(pool).await?;
    }
    Ok(())
}
