//! The queue: claim jobs in batches (fairly across runs), complete them in batches, retry with backoff by
//! moving `run_at`, and rescue expired leases. Every write to a running job is guarded by
//! `status = 'running' AND lease_owner = me`, so a worker whose lease was rescued changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use leadscore_core::Scoring;
use sqlx::types::Json;

use crate::{Pool, Result, RunUsage, Store, now_millis, on_pool};

/// A job a worker now holds a lease on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub run_id: String,
    pub lead_id: String,
    /// Including this one.
    pub attempts: i64,
    pub max_attempts: i64,
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

    /// The job, the status it moves to, its error, its next `run_at` (for a retry) and the attempts given back.
    fn transition(&self, now: i64) -> Transition<'_> {
        let at = |after: &Duration| Some(now + after.as_millis() as i64);
        match self {
            Completion::Succeeded { job, .. } => (job, "succeeded", None, None, 0),
            Completion::Failed { job, error, retry_in: Some(after), .. }
                if job.attempts < job.max_attempts =>
            {
                (job, "retrying", Some(error.as_str()), at(after), 0)
            }
            Completion::Failed { job, error, .. } => (job, "failed", Some(error.as_str()), None, 0),
            Completion::Deferred { job, reason, retry_in, .. } => {
                (job, "retrying", Some(reason.as_str()), at(retry_in), 1)
            }
        }
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

type Transition<'a> = (&'a ClaimedJob, &'static str, Option<&'a str>, Option<i64>, i64);

/// Postgres: the whole batch in one statement. The guarded `UPDATE` runs over the batch as arrays
/// (`unnest`), and results are inserted only for the jobs it changed.
///
/// The guard is written `coalesce(status, '') = 'running'` on purpose: a plain `status = 'running'` matches the
/// predicate of the partial index `jobs_leased`, and since statistics are taken while a run's jobs are queued the
/// planner believes almost no job is running, scans every running job of the table and compares each with every
/// row of the batch (measured: 170 ms for 256 completions with 1,464 jobs running). The wrapped form leaves the
/// primary key as the only way in.
async fn complete_set_based(pool: &sqlx::PgPool, worker: &str, done: &[Completion], now: i64) -> Result<u64> {
    let mut runs = Vec::with_capacity(done.len());
    let mut leads = Vec::with_capacity(done.len());
    let mut statuses = Vec::with_capacity(done.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(done.len());
    let mut run_ats: Vec<Option<i64>> = Vec::with_capacity(done.len());
    let mut refunds: Vec<i64> = Vec::with_capacity(done.len());
    let mut r = ResultArrays::default();
    let mut spent = SpendArrays::default();
    for c in done {
        let (job, status, error, run_at, refund) = c.transition(now);
        if !matches!(c, Completion::Succeeded { .. }) {
            spent.push(job, c.spent());
        }
        refunds.push(refund);
        runs.push(job.run_id.clone());
        leads.push(job.lead_id.clone());
        statuses.push(status);
        errors.push(error.map(str::to_owned));
        run_ats.push(run_at);
        if let Completion::Succeeded { job, result } = c {
            r.push(job, result)?;
        }
    }
    let applied: i64 = sqlx::query_scalar(
        "with input as ( \
           select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $25::bigint[]) \
             as u(run_id, lead_id, status, error, run_at, refund)), \
         updated as ( \
           update jobs set status = input.status, last_error = coalesce(input.error, jobs.last_error), \
             attempts = jobs.attempts - input.refund, \
             run_at = coalesce(input.run_at, jobs.run_at), lease_owner = null, lease_expires_at = null \
           from input where jobs.run_id = input.run_id and jobs.lead_id = input.lead_id \
             and coalesce(jobs.status, '') = 'running' and jobs.lease_owner = $6 \
           returning jobs.run_id, jobs.lead_id), \
         res as ( \
           select * from unnest($7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::bigint[], \
             $13::text[], $14::text[], $15::text[], $16::bigint[], $17::text[], $18::text[], $19::text[], \
             $20::text[], $21::bigint[], $22::bigint[], $23::float8[], $24::bigint[]) \
             as v(run_id, lead_id, rule_score, rule_reasons, ai_intent, ai_score, ai_reasoning, ai_status, \
               score_basis, final_score, intent, flags, model, prompt_version, prompt_tokens, completion_tokens, \
               cost_usd, latency_ms)), \
         inserted as ( \
           insert into results (run_id, lead_id, workspace_id, offer_id, version, rule_score, rule_reasons, \
             ai_intent, ai_score, ai_reasoning, ai_status, score_basis, final_score, intent, flags, model, \
             prompt_version, prompt_tokens, completion_tokens, cost_usd, latency_ms, created_at) \
           select v.run_id, v.lead_id, r.workspace_id, r.offer_id, 1, v.rule_score, v.rule_reasons::jsonb, \
             v.ai_intent, v.ai_score, v.ai_reasoning, v.ai_status, v.score_basis, v.final_score, v.intent, \
             v.flags::jsonb, v.model, v.prompt_version, v.prompt_tokens, v.completion_tokens, v.cost_usd, \
             v.latency_ms, now() \
           from res v join updated u on u.run_id = v.run_id and u.lead_id = v.lead_id \
             join runs r on r.id = v.run_id \
           on conflict (run_id, lead_id) do update set version = results.version + 1, \
             rule_score = excluded.rule_score, rule_reasons = excluded.rule_reasons, ai_intent = excluded.ai_intent, \
             ai_score = excluded.ai_score, ai_reasoning = excluded.ai_reasoning, ai_status = excluded.ai_status, \
             score_basis = excluded.score_basis, final_score = excluded.final_score, intent = excluded.intent, \
             flags = excluded.flags, model = excluded.model, prompt_version = excluded.prompt_version, \
             prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens, \
             cost_usd = excluded.cost_usd, latency_ms = excluded.latency_ms, created_at = excluded.created_at \
           returning 1), \
         spent as ( \
           insert into run_tallies (run_id, counter, n) \
           select s.run_id, t.counter, sum(t.n) from ( \
             select * from unnest($26::text[], $27::bigint[], $28::bigint[], $29::float8[]) \
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
    )
    .bind(&runs)
    .bind(&leads)
    .bind(&statuses)
    .bind(&errors)
    .bind(&run_ats)
    .bind(worker)
    .bind(&r.run_id)
    .bind(&r.lead_id)
    .bind(&r.rule_score)
    .bind(&r.rule_reasons)
    .bind(&r.ai_intent)
    .bind(&r.ai_score)
    .bind(&r.ai_reasoning)
    .bind(&r.ai_status)
    .bind(&r.score_basis)
    .bind(&r.final_score)
    .bind(&r.intent)
    .bind(&r.flags)
    .bind(&r.model)
    .bind(&r.prompt_version)
    .bind(&r.prompt_tokens)
    .bind(&r.completion_tokens)
    .bind(&r.cost_usd)
    .bind(&r.latency_ms)
    .bind(&refunds)
    .bind(&spent.run_id)
    .bind(&spent.prompt_tokens)
    .bind(&spent.completion_tokens)
    .bind(&spent.cost_usd)
    .fetch_one(pool)
    .await?;
    Ok(applied as u64)
}

/// A batch of results as columns, for `unnest`.
#[derive(Default)]
struct ResultArrays {
    run_id: Vec<String>,
    lead_id: Vec<String>,
    rule_score: Vec<i64>,
    rule_reasons: Vec<String>,
    ai_intent: Vec<Option<&'static str>>,
    ai_score: Vec<Option<i64>>,
    ai_reasoning: Vec<Option<String>>,
    ai_status: Vec<&'static str>,
    score_basis: Vec<&'static str>,
    final_score: Vec<i64>,
    intent: Vec<&'static str>,
    flags: Vec<String>,
    model: Vec<Option<String>>,
    prompt_version: Vec<Option<String>>,
    prompt_tokens: Vec<Option<i64>>,
    completion_tokens: Vec<Option<i64>>,
    cost_usd: Vec<Option<f64>>,
    latency_ms: Vec<Option<i64>>,
}

impl ResultArrays {
    fn push(&mut self, job: &ClaimedJob, result: &NewResult) -> Result<()> {
        let s = &result.scoring;
        self.run_id.push(job.run_id.clone());
        self.lead_id.push(job.lead_id.clone());
        self.rule_score.push(i64::from(s.rule.score));
        self.rule_reasons.push(to_json(&s.rule.reasons)?);
        self.ai_intent.push(s.ai_intent.map(|i| i.as_str()));
        self.ai_score.push(s.ai_score.map(i64::from));
        self.ai_reasoning.push(s.ai_reasoning.clone());
        self.ai_status.push(s.ai_status.as_str());
        self.score_basis.push(s.score_basis.as_str());
        self.final_score.push(i64::from(s.final_score));
        self.intent.push(s.intent.as_str());
        self.flags.push(to_json(&s.flags)?);
        self.model.push(result.model.clone());
        self.prompt_version.push(result.prompt_version.clone());
        self.prompt_tokens.push(result.prompt_tokens);
        self.completion_tokens.push(result.completion_tokens);
        self.cost_usd.push(result.cost_usd);
        self.latency_ms.push(result.latency_ms);
        Ok(())
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

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| crate::StoreError::Corrupt(e.to_string()))
}

/// Moves a run without open jobs to its end state (`$1`: now).
const FINISH: &str = "set status = case when status = 'cancelling' then 'cancelled' else 'completed' end, \
                      finished_at = $1";

/// A run (`runs` in the statement) has no job left to work on (one probe of the partial index `jobs_open`).
const NO_OPEN_JOBS: &str = "not exists (select 1 from jobs where jobs.run_id = runs.id \
                            and jobs.status in ('queued', 'running', 'retrying'))";

/// Active runs considered per claim; a claim takes about `limit / runs` jobs from each, so a small run queued
/// behind a large one is served in the very next claims.
const FAIR_RUNS: i64 = 64;

/// A claimed job with what a worker needs to score it besides the run's snapshot.
#[derive(Debug, Clone)]
pub struct ClaimedWork {
    pub job: ClaimedJob,
    /// `None`: the lead no longer exists.
    pub lead: Option<crate::LeadRecord>,
}

impl Store {
    /// Claims up to `limit` due jobs for `worker`, spread over the active runs, with a lease of `lease`.
    pub async fn claim_jobs(&self, worker: &str, limit: usize, lease: Duration) -> Result<Vec<ClaimedJob>> {
        Ok(self.claim_work(worker, limit, lease).await?.into_iter().map(|w| w.job).collect())
    }

    /// [`claim_jobs`](Self::claim_jobs), returning the claimed jobs' leads too. On Postgres one statement picks
    /// the active runs, claims about `limit / runs` due jobs of each, marks newly started runs and reads the
    /// leads: one round trip per batch.
    pub async fn claim_work(&self, worker: &str, limit: usize, lease: Duration) -> Result<Vec<ClaimedWork>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = now_millis();
        let expires = now + lease.as_millis() as i64;
        match &self.pool {
            Pool::Pg(pool) => {
                let lead_columns: Vec<String> =
                    crate::leads::LEAD_COLUMNS.split(',').map(|c| format!("l.{}", c.trim())).collect();
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "with active as (select id from runs where status in ('queued', 'running') order by id limit $1), \
                     quota as (select greatest($2 / greatest(count(*), 1), 1) as per_run from active), \
                     picked as ( \
                       select j.run_id, j.lead_id from active a cross join lateral ( \
                         select run_id, lead_id from jobs \
                         where jobs.run_id = a.id and status in ('queued', 'retrying') and run_at <= $3 \
                         order by run_at limit (select per_run from quota) for update skip locked) j \
                       limit $2), \
                     claimed as ( \
                       update jobs set status = 'running', attempts = jobs.attempts + 1, lease_owner = $4, \
                         lease_expires_at = $5 \
                       from picked where jobs.run_id = picked.run_id and jobs.lead_id = picked.lead_id \
                       returning jobs.run_id, jobs.lead_id, jobs.attempts, jobs.max_attempts), \
                     started as ( \
                       update runs set status = 'running', started_at = $6 \
                       where id in (select run_id from claimed) and status = 'queued') \
                     select c.run_id as job_run_id, c.lead_id as job_lead_id, c.attempts as job_attempts, \
                       c.max_attempts as job_max_attempts, {} \
                     from claimed c join runs r on r.id = c.run_id \
                     left join leads l on l.workspace_id = r.workspace_id and l.id = c.lead_id",
                    lead_columns.join(", ")
                )))
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
            Pool::Sqlite(_) => {
                let jobs = self.claim_sqlite(worker, limit, now, expires).await?;
                let mut by_run: HashMap<String, Vec<ClaimedJob>> = HashMap::new();
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
                    let mut leads: HashMap<String, crate::LeadRecord> = self
                        .leads_by_ids(&workspace, &ids)
                        .await?
                        .into_iter()
                        .map(|l| (l.id.clone(), l))
                        .collect();
                    work.extend(jobs.into_iter().map(|job| {
                        let lead = leads.remove(&job.lead_id);
                        ClaimedWork { job, lead }
                    }));
                }
                Ok(work)
            }
        }
    }

    /// SQLite: one process writes, and each UPDATE is atomic, so no SKIP LOCKED is needed. One transaction over
    /// the runs: a failure claims nothing rather than jobs the caller never hears of.
    async fn claim_sqlite(
        &self,
        worker: &str,
        limit: usize,
        now: i64,
        expires: i64,
    ) -> Result<Vec<ClaimedJob>> {
        let Pool::Sqlite(pool) = &self.pool else { return Ok(Vec::new()) };
        // IMMEDIATE: the write lock now, waited for on busy_timeout; a read-then-write transaction would fail at
        // once with SQLITE_BUSY if another connection wrote in between.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let runs: Vec<String> = sqlx::query_scalar(
            "select id from runs where status in ('queued', 'running') order by id limit $1",
        )
        .bind(FAIR_RUNS)
        .fetch_all(&mut *tx)
        .await?;
        let per_run = (limit / runs.len().max(1)).max(1) as i64;
        let mut rows: Vec<(String, String, i64, i64)> = Vec::new();
        for run in &runs {
            let room = limit.saturating_sub(rows.len()) as i64;
            if room == 0 {
                break;
            }
            let mut got: Vec<(String, String, i64, i64)> = sqlx::query_as(
                "update jobs set status = 'running', attempts = attempts + 1, lease_owner = $1, \
                   lease_expires_at = $2 \
                 where run_id = $3 and lead_id in (select lead_id from jobs where run_id = $3 \
                   and status in ('queued', 'retrying') and run_at <= $4 order by run_at limit $5) \
                 returning run_id, lead_id, attempts, max_attempts",
            )
            .bind(worker)
            .bind(expires)
            .bind(run)
            .bind(now)
            .bind(per_run.min(room))
            .fetch_all(&mut *tx)
            .await?;
            if !got.is_empty() {
                sqlx::query(
                    "update runs set status = 'running', started_at = $1 where id = $2 and status = 'queued'",
                )
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

    /// Writes a batch of finished attempts in one transaction, then settles the batch's runs (finishes those
    /// without open jobs, announces progress). Returns how many were applied: a completion of a job this worker
    /// no longer leases (rescued, cancelled) is ignored.
    pub async fn complete_jobs(&self, worker: &str, done: &[Completion]) -> Result<u64> {
        let now = now_millis();
        let mut runs: Vec<&str> = done.iter().map(|c| c.job().run_id.as_str()).collect();
        runs.sort_unstable();
        runs.dedup();
        if let Pool::Pg(pool) = &self.pool {
            let applied = complete_set_based(pool, worker, done, now).await?;
            self.settle_after_write(&runs).await;
            return Ok(applied);
        }
        let mut applied = 0;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for c in done {
                let (job, status, error, run_at, refund) = c.transition(now);
                let updated = sqlx::query(
                    "update jobs set status = $1, last_error = coalesce($2, last_error), \
                       run_at = coalesce($3, run_at), lease_owner = null, lease_expires_at = null, \
                       attempts = attempts - $7 \
                     where run_id = $4 and lead_id = $5 and status = 'running' and lease_owner = $6")
                    .bind(status)
                    .bind(error)
                    .bind(run_at)
                    .bind(&job.run_id)
                    .bind(&job.lead_id)
                    .bind(worker)
                    .bind(refund)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                // A result written counts its spend by trigger; anything else counts it here.
                let spent = c.spent();
                let written = matches!(c, Completion::Succeeded { .. }) && updated > 0;
                if !written && !spent.is_zero() {
                    sqlx::query(
                        "insert into run_tallies (run_id, counter, n) \
                         select r.id, t.column1, t.column2 from runs r join (values ('prompt_tokens', $2), \
                           ('completion_tokens', $3), ('cost_nusd', cast(round($4 * 1e9) as integer))) t \
                         where r.id = $1 and t.column2 <> 0 \
                         on conflict (run_id, counter) do update set n = n + excluded.n")
                        .bind(&job.run_id)
                        .bind(spent.prompt_tokens)
                        .bind(spent.completion_tokens)
                        .bind(spent.cost_usd)
                        .execute(&mut *tx)
                        .await?;
                }
                if updated == 0 {
                    continue;
                }
                applied += 1;
                if let Completion::Succeeded { job, result } = c {
                    let s = &result.scoring;
                    sqlx::query(
                        "insert into results (run_id, lead_id, workspace_id, offer_id, version, rule_score, \
                           rule_reasons, ai_intent, ai_score, ai_reasoning, ai_status, score_basis, final_score, \
                           intent, flags, model, prompt_version, prompt_tokens, completion_tokens, cost_usd, \
                           latency_ms, created_at) \
                         select $1, $2, r.workspace_id, r.offer_id, 1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                           $13, $14, $15, $16, $17, $18, $19 from runs r where r.id = $1 \
                         on conflict (run_id, lead_id) do update set version = results.version + 1, \
                           rule_score = excluded.rule_score, rule_reasons = excluded.rule_reasons, \
                           ai_intent = excluded.ai_intent, ai_score = excluded.ai_score, \
                           ai_reasoning = excluded.ai_reasoning, ai_status = excluded.ai_status, \
                           score_basis = excluded.score_basis, final_score = excluded.final_score, \
                           intent = excluded.intent, flags = excluded.flags, model = excluded.model, \
                           prompt_version = excluded.prompt_version, prompt_tokens = excluded.prompt_tokens, \
                           completion_tokens = excluded.completion_tokens, cost_usd = excluded.cost_usd, \
                           latency_ms = excluded.latency_ms, created_at = excluded.created_at")
                        .bind(&job.run_id)
                        .bind(&job.lead_id)
                        .bind(i64::from(s.rule.score))
                        .bind(Json(&s.rule.reasons))
                        .bind(s.ai_intent.map(|i| i.as_str()))
                        .bind(s.ai_score.map(i64::from))
                        .bind(s.ai_reasoning.as_deref())
                        .bind(s.ai_status.as_str())
                        .bind(s.score_basis.as_str())
                        .bind(i64::from(s.final_score))
                        .bind(s.intent.as_str())
                        .bind(Json(&s.flags))
                        .bind(result.model.as_deref())
                        .bind(result.prompt_version.as_deref())
                        .bind(result.prompt_tokens)
                        .bind(result.completion_tokens)
                        .bind(result.cost_usd)
                        .bind(result.latency_ms)
                        .bind(crate::now())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
        });
        self.settle_after_write(&runs).await;
        Ok(applied)
    }

    /// Extends the leases of `jobs` (run id, lead id) that `worker` still holds: only the jobs the pool is
    /// working on or has yet to write, so a job whose claim answer was lost, or whose completion was lost with
    /// a database crash, is not kept alive by its pool but expires and is rescued. On Postgres rows locked by a
    /// completion in flight are skipped rather than waited for: lease upkeep and completions never deadlock.
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
        let (runs, leads): (Vec<&str>, Vec<&str>) =
            jobs.iter().map(|(r, l)| (r.as_str(), l.as_str())).unzip();
        let n = match &self.pool {
            // `coalesce(status, '')`: see `complete_set_based` (keeps the planner on the primary key).
            Pool::Pg(pool) => sqlx::query(
                "update jobs set lease_expires_at = $1 where (run_id, lead_id) in ( \
                   select j.run_id, j.lead_id from unnest($3::text[], $4::text[]) as k(run_id, lead_id) \
                   join jobs j on j.run_id = k.run_id and j.lead_id = k.lead_id \
                   where j.lease_owner = $2 and coalesce(j.status, '') = 'running' for update of j skip locked)")
                .bind(expires)
                .bind(worker)
                .bind(&runs)
                .bind(&leads)
                .execute(pool)
                .await?
                .rows_affected(),
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut n = 0;
                for (run, lead) in runs.iter().zip(&leads) {
                    n += sqlx::query(
                        "update jobs set lease_expires_at = $1 where run_id = $3 and lead_id = $4 \
                         and lease_owner = $2 and status = 'running'")
                        .bind(expires)
                        .bind(worker)
                        .bind(run)
                        .bind(lead)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
                n
            }
        };
        Ok(n)
    }

    /// Returns jobs whose lease expired (their worker died) to the queue, or fails them when they have used
    /// all their attempts. Safe to run from any worker at any time (on Postgres it skips rows being written).
    pub async fn rescue_expired(&self) -> Result<u64> {
        let now = now_millis();
        let set = "set status = case when attempts >= max_attempts then 'failed' else 'retrying' end, \
                   last_error = 'lease expired: the worker stopped while scoring this lead', \
                   lease_owner = null, lease_expires_at = null, run_at = $1";
        let n = match &self.pool {
            Pool::Pg(pool) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "update jobs {set} where (run_id, lead_id) in (select run_id, lead_id from jobs \
                   where status = 'running' and lease_expires_at < $1 for update skip locked)"
            )))
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
            Pool::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "update jobs {set} where status = 'running' and lease_expires_at < $1"
            )))
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
        };
        Ok(n)
    }

    /// Marks runs whose jobs are all finished as completed, and cancelling runs whose last job finished as
    /// cancelled. Completion batches settle their own runs (`settle_runs`); this sweep over every
    /// active run is for the maintenance leader and for control actions.
    pub async fn finish_idle_runs(&self) -> Result<u64> {
        let finished: Vec<String> = on_pool!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "update runs {FINISH} where status in ('queued', 'running', 'cancelling') and {NO_OPEN_JOBS} returning id")))
            .bind(crate::now())
            .fetch_all(pool)
            .await?);
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
    /// progress on all of them. On Postgres one statement does both (one round trip per completion batch); it
    /// locks the runs it finishes in id order, so concurrent batches never deadlock on them.
    async fn settle_runs(&self, runs: &[&str]) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        match &self.pool {
            Pool::Pg(pool) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "with finished as (update runs {FINISH} where id in (select id from runs \
                       where id = any($2) and status in ('queued', 'running', 'cancelling') and {NO_OPEN_JOBS} \
                       order by id for update) returning id) \
                     select pg_notify('leadscore_progress', r) from unnest($2::text[]) as r"
                )))
                .bind(crate::now())
                .bind(runs)
                .execute(pool)
                .await?;
                for run in runs {
                    let _ = self.progress.send((*run).to_owned());
                }
            }
            Pool::Sqlite(pool) => {
                for run in runs {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "update runs {FINISH} where id = $2 and status in ('queued', 'running', 'cancelling') \
                         and {NO_OPEN_JOBS}"
                    )))
                    .bind(crate::now())
                    .bind(run)
                    .execute(pool)
                    .await?;
                }
                self.announce_progress(runs).await;
            }
        }
        Ok(())
    }

    /// A run's workspace and offer snapshot (what a worker needs besides the leads).
    pub async fn run_snapshot(&self, run_id: &str) -> Result<Option<RunSnapshot>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, (String, Json<leadscore_core::Offer>, Option<f64>)>(
            "select workspace_id, offer_snapshot, max_cost_usd from runs where id = $1")
            .bind(run_id)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(|(workspace, offer, max_cost_usd)| RunSnapshot {
            workspace,
            offer: offer.0,
            max_cost_usd,
        }))
    }
}

/// What every job of a run needs: its workspace, the offer as it was when the run was created, its cost cap.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSnapshot {
    pub workspace: String,
    pub offer: leadscore_core::Offer,
    pub max_cost_usd: Option<f64>,
}

/// One job as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub lead_id: String,
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
}

impl Store {
    /// A run's jobs in lead order, optionally of one status (cursor = lead id).
    pub async fn list_jobs(
        &self,
        run_id: &str,
        status: Option<&str>,
        page: &crate::Page,
    ) -> Result<crate::Paged<JobRecord>> {
        let rows: Vec<(String, String, i64, i64, Option<String>)> = on_pool!(self, pool => sqlx::query_as(
            "select lead_id, status, attempts, max_attempts, last_error from jobs \
             where run_id = $1 and lead_id > $2 and ($3 is null or status = $3) order by lead_id limit $4")
            .bind(run_id)
            .bind(page.after.as_deref().unwrap_or(""))
            .bind(status)
            .bind(page.fetch_limit())
            .fetch_all(pool)
            .await?);
        let jobs = rows
            .into_iter()
            .map(|(lead_id, status, attempts, max_attempts, last_error)| JobRecord {
                lead_id,
                status,
                attempts,
                max_attempts,
                last_error,
            })
            .collect();
        Ok(page.finish(jobs, |j| j.lead_id.clone()))
    }
}
