//! Creating a run: the one path for `POST /v1/leads/score`, the seed-compatible `/api/leads/score/` and
//! `leadscore score`. In ONE transaction: the `Idempotency-Key` record (a unique key, so two identical
//! requests racing each other create one run), the run with its offer snapshot and cost estimate, and all its
//! jobs (set-based `INSERT ... SELECT`), and the workers' wake-up (`NOTIFY` is delivered at commit).

use leadscore_core::{JobStatus, Offer, RunStatus};
use sqlx::types::Json;

use super::active::ActiveRunCap;
use super::{DEFAULT_MAX_ATTEMPTS, RunRecord, Selection};
use crate::states::{OPEN_JOBS, lit_job, lit_run};
use crate::{Result, Store, StoreError, new_id, now, now_millis, on_pool};

/// How long an `Idempotency-Key` stands for the run it created.
const IDEMPOTENCY_TTL: time::Duration = time::Duration::hours(24);

/// An `Idempotency-Key` with what it is scoped to and the request it came with.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyKey<'a> {
    /// The route (the key's scope within the workspace).
    pub route: &'a str,
    pub key: &'a str,
    /// A hash of the request body: the same key with another body is refused.
    pub body_hash: &'a str,
}

/// The AI layer's cost estimate for an offer and a number of leads (USD).
pub type Estimate<'a> = &'a (dyn Fn(&Offer, i64) -> f64 + Sync);

/// An offer as its row holds it: name, value propositions, ideal use cases.
type OfferRow = (String, Json<Vec<String>>, Json<Vec<String>>);

/// What to create.
pub struct NewRun<'a> {
    pub workspace: &'a str,
    pub offer_id: &'a str,
    pub selection: &'a Selection,
    pub max_cost_usd: Option<f64>,
    /// The AI layer's cost estimate for this offer and this many leads (`usage.estimated_cost_usd`); `None`
    /// when the AI layer is off, which estimates 0.
    pub estimate: Option<Estimate<'a>>,
    pub idempotency: Option<IdempotencyKey<'a>>,
    /// Refuse the run ([`StoreError::TooManyActiveRuns`]) when the workspace already has this many unfinished
    /// runs; checked after the idempotency key, so a replay is answered whatever the count.
    pub max_active_runs: Option<u32>,
    /// The W3C trace context of the request creating the run (see [`RunSnapshot`](crate::RunSnapshot)).
    pub traceparent: Option<&'a str>,
}

impl<'a> NewRun<'a> {
    /// A run of `selection` against the offer, without a cost cap, estimate or idempotency key.
    pub fn new(workspace: &'a str, offer_id: &'a str, selection: &'a Selection) -> NewRun<'a> {
        NewRun {
            workspace,
            offer_id,
            selection,
            max_cost_usd: None,
            estimate: None,
            idempotency: None,
            max_active_runs: None,
            traceparent: None,
        }
    }

    pub fn max_cost(self, max_cost_usd: Option<f64>) -> NewRun<'a> {
        NewRun { max_cost_usd, ..self }
    }
}

/// The run a request stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// As created (or, on a replay, as it is now).
    pub run: RunRecord,
    /// The `Idempotency-Key` was used before with the same body: `run` is the run it created then.
    pub replayed: bool,
}

/// The condition on leads `l` of workspace `ws` with no result for offer `offer` and no job of it waiting or
/// running in a run other than `run` (each argument is a SQL placeholder or literal).
fn unscored(run: &str, ws: &str, offer: &str) -> String {
    format!(
        "not exists (select 1 from results r where r.workspace_id = {ws} and r.offer_id = {offer} \
           and r.lead_id = l.id) \
         and not exists (select 1 from jobs j join runs r on r.id = j.run_id where r.workspace_id = {ws} \
           and r.offer_id = {offer} and j.lead_id = l.id and j.status in ({open}) and j.run_id <> {run})",
        open = *OPEN_JOBS
    )
}

impl Store {
    /// Creates a run (see the module docs). Errors: the offer does not exist, the selection holds no lead, or
    /// the idempotency key was used with another body.
    pub async fn create_run(&self, new: &NewRun<'_>) -> Result<Created> {
        let id = new_id();
        let now_ms = now_millis();
        let ids_subquery = match self.backend() {
            // Collated like the column (see `leads_by_ids`): the primary key is probed per id.
            crate::Backend::Postgres => "select jsonb_array_elements_text($5) collate \"C\"",
            crate::Backend::Sqlite => "select value from json_each($5)",
        };
        let jobs = format!(
            "insert into jobs (run_id, lead_id, status, max_attempts, run_at) \
             select $1, l.id, {}, $2, $3 from leads l where l.workspace_id = $4",
            lit_job(JobStatus::Queued)
        );
        let created = on_pool!(self, pool => {
            let mut tx = crate::WritePool::begin_write(pool).await?;
            if let Some(key) = &new.idempotency
                && let Some(existing) = tx.claim_key(new.workspace, key, &id).await?
            {
                drop(tx);
                let run = self.get_run(new.workspace, &existing).await?.ok_or_else(|| {
                    StoreError::Corrupt(format!("the run {existing} of an Idempotency-Key no longer exists"))
                })?;
                return Ok(Created { run, replayed: true });
            }
            if let Some(cap) = new.max_active_runs {
                tx.within_cap(new.workspace, cap).await?;
            }
            let offer: Option<OfferRow> = sqlx::query_as(
                "select name, value_props, ideal_use_cases from offers where id = $1 and workspace_id = $2")
                .bind(new.offer_id)
                .bind(new.workspace)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((name, value_props, ideal_use_cases)) = offer else { return Err(StoreError::OfferNotFound) };
            let offer = Offer { name, value_props: value_props.0, ideal_use_cases: ideal_use_cases.0 };
            let created_at = now();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "insert into runs (id, workspace_id, offer_id, offer_snapshot, status, max_cost_usd, created_at, \
                   traceparent) values ($1, $2, $3, $4, {}, $5, $6, $7)", lit_run(RunStatus::Queued))))
                .bind(&id)
                .bind(new.workspace)
                .bind(new.offer_id)
                .bind(Json(&offer))
                .bind(new.max_cost_usd)
                .bind(created_at)
                .bind(new.traceparent)
                .execute(&mut *tx)
                .await?;
            let insert = match new.selection {
                Selection::Upload(upload) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{jobs} and l.upload_id = $5 \
                     and l.id >= (select min_lead_id from uploads where id = $5 and workspace_id = $4) \
                     and l.id <= (select max_lead_id from uploads where id = $5 and workspace_id = $4)")))
                    .bind(&id).bind(DEFAULT_MAX_ATTEMPTS).bind(now_ms).bind(new.workspace).bind(upload),
                Selection::Leads(ids) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{jobs} and l.id in ({ids_subquery})")))
                    .bind(&id).bind(DEFAULT_MAX_ATTEMPTS).bind(now_ms).bind(new.workspace).bind(Json(ids)),
                Selection::AllUnscored => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{jobs} and {}", unscored("$1", "$4", "$5"))))
                    .bind(&id).bind(DEFAULT_MAX_ATTEMPTS).bind(now_ms).bind(new.workspace).bind(new.offer_id),
            };
            let total = insert.execute(&mut *tx).await?.rows_affected() as i64;
            if total == 0 {
                return Err(StoreError::EmptySelection);
            }
            let estimate = new.estimate.map_or(0.0, |estimate| estimate(&offer, total));
            sqlx::query("update runs set total = $1, estimated_cost_usd = $2 where id = $3")
                .bind(total)
                .bind(estimate)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            if self.backend() == crate::Backend::Postgres {
                // Delivered at commit, to every worker process listening.
                sqlx::query("select pg_notify('leadscore_jobs', '')").execute(&mut *tx).await?;
            }
            tx.commit().await?;
            RunRecord {
                id,
                offer_id: new.offer_id.to_owned(),
                offer,
                status: RunStatus::Queued,
                stop_reason: None,
                total,
                max_cost_usd: new.max_cost_usd,
                estimated_cost_usd: Some(estimate),
                blocked_reason: None,
                created_at,
                started_at: None,
                finished_at: None,
            }
        });
        self.analyze_after_bulk_write("jobs", created.total).await;
        self.jobs_enqueued.notify_one();
        Ok(Created { run: created, replayed: false })
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
}

/// Takes an `Idempotency-Key` inside the transaction that creates its run (both backends, one body).
trait ClaimKey {
    /// Takes `key` for the run `run_id` about to be created in this transaction, or answers what it already
    /// stands for. The insert is the lock: a concurrent request with the same key waits on the unique index
    /// (PostgreSQL) or the write lock (SQLite) until this transaction ends, then finds the committed record and
    /// replays it; if this transaction rolls back, the other one takes the key. An expired record is taken over.
    /// `Some(run id)`: the key stands for that run already.
    async fn claim_key(
        &mut self,
        workspace: &str,
        key: &IdempotencyKey<'_>,
        run_id: &str,
    ) -> Result<Option<String>>;
}

macro_rules! impl_claim_key {
    ($db:ty) => {
        impl ClaimKey for crate::WriteTx<$db> {
            async fn claim_key(
                &mut self,
                workspace: &str,
                key: &IdempotencyKey<'_>,
                run_id: &str,
            ) -> Result<Option<String>> {
                let now = now();
                let taken: Option<String> = sqlx::query_scalar(
                    "insert into idempotency_keys (workspace_id, route, key, body_hash, run_id, created_at) \
                     values ($1, $2, $3, $4, $5, $6) on conflict (workspace_id, route, key) do update \
                     set body_hash = excluded.body_hash, run_id = excluded.run_id, created_at = excluded.created_at \
                     where idempotency_keys.created_at < $7 returning run_id",
                )
                .bind(workspace)
                .bind(key.route)
                .bind(key.key)
                .bind(key.body_hash)
                .bind(run_id)
                .bind(now)
                .bind(now - IDEMPOTENCY_TTL)
                .fetch_optional(&mut **self)
                .await?;
                if taken.is_some() {
                    return Ok(None);
                }
                let (hash, run): (String, String) = sqlx::query_as(
                    "select body_hash, run_id from idempotency_keys \
                     where workspace_id = $1 and route = $2 and key = $3",
                )
                .bind(workspace)
                .bind(key.route)
                .bind(key.key)
                .fetch_one(&mut **self)
                .await?;
                if hash == key.body_hash {
                    Ok(Some(run))
                } else {
                    Err(StoreError::IdempotencyMismatch)
                }
            }
        }
    };
}
impl_claim_key!(sqlx::Postgres);
impl_claim_key!(sqlx::Sqlite);
