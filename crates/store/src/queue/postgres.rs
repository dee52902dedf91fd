//! The queue's statements on PostgreSQL: every operation is one statement (one round trip), set-based over the
//! batch (`unnest` of arrays), with `FOR UPDATE SKIP LOCKED` where workers compete for rows.
//!
//! Guards on running jobs are written `coalesce(status, '') = 'running'` on purpose: a plain `status =
//! 'running'` matches the predicate of the partial index `jobs_leased`, and since statistics are taken while a
//! run's jobs are queued the planner believes almost no job is running, scans every running job of the table
//! and compares each with every row of the batch (measured: 170 ms for 256 completions with 1,464 jobs
//! running). The wrapped form leaves the primary key as the only way in.

use std::sync::LazyLock;

use leadscore_core::{JobEvent, JobStatus, RunEvent};
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgPool};

use super::result_row::{self, Kind, ResultRow, VALUES, Value};
use super::{ClaimedJob, ClaimedWork, Completion, FAIR_RUNS, finish_set, finishable};
use crate::states::{CLAIMABLE_JOBS, CLAIMABLE_RUNS, job_guard, lit_job, run_guard, run_target};
use crate::{Result, RunUsage, StoreError};

/// Positional arguments numbered as they are added, so a statement names each where it uses it.
#[derive(Default)]
struct Args {
    args: PgArguments,
}

impl Args {
    /// Adds `value` and returns its placeholder with a cast (`$7::text[]`).
    fn push<T>(&mut self, value: T, cast: &str) -> Result<String>
    where
        T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.args.add(value).map_err(|e| StoreError::Corrupt(format!("cannot encode an argument: {e}")))?;
        Ok(format!("${}::{cast}", self.args.len()))
    }
}

/// `coalesce(status, '') = 'running'` (see the module docs).
static RUNNING: LazyLock<String> = LazyLock::new(|| lit_job(JobStatus::Running));

/// Picks the active runs, claims about `limit / runs` due jobs of each, marks newly started runs and reads the
/// leads: one round trip per batch.
pub(super) async fn claim(
    pool: &PgPool,
    worker: &str,
    limit: usize,
    now: i64,
    expires: i64,
) -> Result<Vec<ClaimedWork>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let lead_columns: Vec<String> =
            crate::leads::LEAD_COLUMNS.split(',').map(|c| format!("l.{}", c.trim())).collect();
        format!(
            "with active as (select id from runs where status in ({runs}) order by id limit $1), \
             quota as (select greatest($2 / greatest(count(*), 1), 1) as per_run from active), \
             picked as ( \
               select j.run_id, j.lead_id from active a cross join lateral ( \
                 select run_id, lead_id from jobs \
                 where jobs.run_id = a.id and status in ({jobs}) and run_at <= $3 \
                 order by run_at limit (select per_run from quota) for update skip locked) j \
               limit $2), \
             claimed as ( \
               update jobs set status = {running}, attempts = jobs.attempts + 1, lease_owner = $4, \
                 lease_expires_at = $5 \
               from picked where jobs.run_id = picked.run_id and jobs.lead_id = picked.lead_id \
               returning jobs.run_id, jobs.lead_id, jobs.attempts, jobs.max_attempts), \
             started as ( \
               update runs set status = {started}, started_at = $6 \
               where id in (select run_id from claimed) and {guard}) \
             select c.run_id as job_run_id, c.lead_id as job_lead_id, c.attempts as job_attempts, \
               c.max_attempts as job_max_attempts, {leads} \
             from claimed c join runs r on r.id = c.run_id \
             left join leads l on l.workspace_id = r.workspace_id and l.id = c.lead_id",
            runs = *CLAIMABLE_RUNS,
            jobs = *CLAIMABLE_JOBS,
            running = lit_job(JobEvent::Claim.target()),
            started = run_target(RunEvent::Claimed),
            guard = run_guard("status", RunEvent::Claimed),
            leads = lead_columns.join(", "),
        )
    });
    let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(FAIR_RUNS)
        .bind(limit as i64)
        .bind(now)
        .bind(worker)
        .bind(expires)
        .bind(crate::now())
        .fetch_all(pool)
        .await?;
    rows.iter().map(work_from_row).collect()
}

fn work_from_row(r: &sqlx::postgres::PgRow) -> Result<ClaimedWork> {
    use crate::row::DbRow;
    let job = ClaimedJob {
        run_id: r.text("job_run_id")?,
        lead_id: r.text("job_lead_id")?,
        attempts: r.int("job_attempts")?,
        max_attempts: r.int("job_max_attempts")?,
    };
    let lead = match r.opt_text("id")? {
        Some(_) => Some(crate::leads::from_row(r)?),
        None => None,
    };
    Ok(ClaimedWork { job, lead })
}

/// The whole batch in one statement: the guarded `UPDATE` runs over the batch as arrays, results are inserted
/// only for the jobs it changed, and what was billed without a result written is added to the run's tallies.
pub(super) async fn complete(pool: &PgPool, worker: &str, done: &[Completion], now: i64) -> Result<u64> {
    let mut jobs = JobArrays::default();
    let mut results: Vec<ResultRow<'_>> = Vec::new();
    let mut spent = SpendArrays::default();
    for c in done {
        jobs.push(c, now);
        match c {
            Completion::Succeeded { job, result } => results.push(ResultRow { job, result }),
            _ => spent.push(c.job(), c.spent()),
        }
    }
    let mut a = Args::default();
    let job_input = format!(
        "unnest({}, {}, {}, {}, {}, {}) as u(run_id, lead_id, status, error, run_at, refund)",
        a.push(jobs.run_id, "text[]")?,
        a.push(jobs.lead_id, "text[]")?,
        a.push(jobs.status, "text[]")?,
        a.push(jobs.error, "text[]")?,
        a.push(jobs.run_at, "bigint[]")?,
        a.push(jobs.refund, "bigint[]")?,
    );
    let worker = a.push(worker, "text")?;
    let (result_input, result_values) = result_arrays(&mut a, &results)?;
    let spent_input = format!(
        "unnest({}, {}, {}, {})",
        a.push(spent.run_id, "text[]")?,
        a.push(spent.prompt_tokens, "bigint[]")?,
        a.push(spent.completion_tokens, "bigint[]")?,
        a.push(spent.cost_usd, "float8[]")?,
    );
    let sql = format!(
        "with input as (select * from {job_input}), \
         updated as ( \
           update jobs set status = input.status, last_error = coalesce(input.error, jobs.last_error), \
             attempts = jobs.attempts - input.refund, \
             run_at = coalesce(input.run_at, jobs.run_at), lease_owner = null, lease_expires_at = null \
           from input where jobs.run_id = input.run_id and jobs.lead_id = input.lead_id \
             and coalesce(jobs.status, '') = {running} and jobs.lease_owner = {worker} \
           returning jobs.run_id, jobs.lead_id), \
         res as (select * from {result_input}), \
         inserted as ( \
           insert into results ({columns}) \
           select v.run_id, v.lead_id, r.workspace_id, r.offer_id, 1, {result_values}, now() \
           from res v join updated u on u.run_id = v.run_id and u.lead_id = v.lead_id \
             join runs r on r.id = v.run_id \
           {upsert} returning 1), \
         spent as ( \
           insert into run_tallies (run_id, counter, n) \
           select s.run_id, t.counter, sum(t.n) from ( \
             select * from {spent_input} \
             union all \
             select v.run_id, coalesce(v.prompt_tokens, 0), coalesce(v.completion_tokens, 0), \
               coalesce(v.cost_usd, 0) from res v \
             where not exists (select 1 from updated u where u.run_id = v.run_id and u.lead_id = v.lead_id)) \
             as s(run_id, prompt_tokens, completion_tokens, cost_usd) \
           cross join lateral (values ('prompt_tokens', s.prompt_tokens), \
             ('completion_tokens', s.completion_tokens), ('cost_nusd', round(s.cost_usd * 1e9)::bigint)) \
             as t(counter, n) \
           where exists (select 1 from runs where runs.id = s.run_id) \
           group by s.run_id, t.counter having sum(t.n) <> 0) \
         select count(*) from updated",
        running = *RUNNING,
        columns = result_row::insert_columns(),
        upsert = result_row::upsert(),
    );
    let applied: i64 = sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql), a.args).fetch_one(pool).await?;
    Ok(applied as u64)
}

/// The batch's results as one array per column of [`VALUES`]: the `unnest(...) as v(...)` source and the
/// select list that stores them.
fn result_arrays(a: &mut Args, results: &[ResultRow<'_>]) -> Result<(String, String)> {
    let mut columns: Vec<Vec<Value>> = vec![Vec::with_capacity(results.len()); VALUES.len()];
    for row in results {
        for (column, value) in columns.iter_mut().zip(row.values()?) {
            column.push(value);
        }
    }
    let mut arrays = vec![
        a.push(results.iter().map(|r| r.job.run_id.clone()).collect::<Vec<_>>(), "text[]")?,
        a.push(results.iter().map(|r| r.job.lead_id.clone()).collect::<Vec<_>>(), "text[]")?,
    ];
    for ((_, kind), column) in VALUES.iter().zip(columns) {
        arrays.push(push_column(a, column, *kind)?);
    }
    let names: Vec<&str> = VALUES.iter().map(|(name, _)| *name).collect();
    let select: Vec<String> =
        VALUES.iter().map(|(name, kind)| result_row::pg_cast(&format!("v.{name}"), *kind)).collect();
    Ok((
        format!("unnest({}) as v(run_id, lead_id, {})", arrays.join(", "), names.join(", ")),
        select.join(", "),
    ))
}

/// Binds one column of values as a typed array.
fn push_column(a: &mut Args, column: Vec<Value>, kind: Kind) -> Result<String> {
    let (mut texts, mut ints, mut floats) = (Vec::new(), Vec::new(), Vec::new());
    for value in column {
        match value {
            Value::Text(v) => texts.push(v),
            Value::Int(v) => ints.push(v),
            Value::Float(v) => floats.push(v),
        }
    }
    match kind {
        Kind::Int => a.push(ints, kind.pg_array()),
        Kind::Float => a.push(floats, kind.pg_array()),
        Kind::Text | Kind::Json => a.push(texts, kind.pg_array()),
    }
}

/// The batch's job rows as columns, for `unnest`.
#[derive(Default)]
struct JobArrays {
    run_id: Vec<String>,
    lead_id: Vec<String>,
    status: Vec<&'static str>,
    error: Vec<Option<String>>,
    run_at: Vec<Option<i64>>,
    refund: Vec<i64>,
}

impl JobArrays {
    fn push(&mut self, c: &Completion, now: i64) {
        let w = c.write(now);
        self.run_id.push(w.job.run_id.clone());
        self.lead_id.push(w.job.lead_id.clone());
        self.status.push(w.status.as_str());
        self.error.push(w.error.map(str::to_owned));
        self.run_at.push(w.run_at);
        self.refund.push(w.refund);
    }
}

/// What the completions of a batch that carry no result were billed for, as columns (only those that spent
/// something). A result's own spend is in its columns: its trigger counts it when it is written, and the
/// completion statement when a stale writer's result is not.
#[derive(Default)]
struct SpendArrays {
    run_id: Vec<String>,
    prompt_tokens: Vec<i64>,
    completion_tokens: Vec<i64>,
    cost_usd: Vec<f64>,
}

impl SpendArrays {
    fn push(&mut self, job: &ClaimedJob, spent: RunUsage) {
        if spent.is_zero() {
            return;
        }
        self.run_id.push(job.run_id.clone());
        self.prompt_tokens.push(spent.prompt_tokens);
        self.completion_tokens.push(spent.completion_tokens);
        self.cost_usd.push(spent.cost_usd);
    }
}

/// Extends the leases `worker` still holds; rows locked by a completion in flight are skipped rather than
/// waited for, so lease upkeep and completions never deadlock.
pub(super) async fn renew(
    pool: &PgPool,
    worker: &str,
    jobs: &[(String, String)],
    expires: i64,
) -> Result<u64> {
    let (runs, leads): (Vec<&str>, Vec<&str>) = jobs.iter().map(|(r, l)| (r.as_str(), l.as_str())).unzip();
    let sql = format!(
        "update jobs set lease_expires_at = $1 where (run_id, lead_id) in ( \
           select j.run_id, j.lead_id from unnest($3::text[], $4::text[]) as k(run_id, lead_id) \
           join jobs j on j.run_id = k.run_id and j.lead_id = k.lead_id \
           where j.lease_owner = $2 and coalesce(j.status, '') = {} for update of j skip locked)",
        *RUNNING
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(expires)
        .bind(worker)
        .bind(&runs)
        .bind(&leads)
        .execute(pool)
        .await?
        .rows_affected())
}

/// Returns expired leases to the queue (or fails their jobs on the last attempt), skipping rows being written.
pub(super) async fn rescue(pool: &PgPool, now: i64) -> Result<u64> {
    let sql = format!(
        "update jobs {} where (run_id, lead_id) in (select run_id, lead_id from jobs \
           where {} and lease_expires_at < $1 for update skip locked)",
        super::rescue_set(),
        job_guard("status", JobEvent::LeaseExpired)
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).execute(pool).await?.rows_affected())
}

/// Finishes those of `runs` without open jobs and sends the progress `NOTIFY` for all of them, in one
/// statement. It locks the runs it finishes in id order, so concurrent batches never deadlock on them.
pub(super) async fn settle(pool: &PgPool, runs: &[&str]) -> Result<()> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "with finished as (update runs {} where id in (select id from runs \
               where id = any($2) and {} order by id for update) returning id) \
             select pg_notify('leadscore_progress', r) from unnest($2::text[]) as r",
            finish_set(),
            finishable(crate::Backend::Postgres)
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(SQL.as_str())).bind(crate::now()).bind(runs).execute(pool).await?;
    Ok(())
}
