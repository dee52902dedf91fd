//! What the AI layer keeps in the database: run costs, blocked runs, and the verdict cache of embedded mode.

use leadscore_core::{AiVerdict, Intent};

use std::collections::HashMap;

use sqlx::types::Json;

use leadscore_core::RunEvent;

use crate::states::{run_guard, run_set};
use crate::{Pool, Result, Store, now_millis, on_pool};

/// Tokens and cost the AI provider billed: for a run (everything its attempts were billed for, including
/// results since replaced or deleted), or for one attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: f64,
}

impl RunUsage {
    pub fn is_zero(&self) -> bool {
        self.prompt_tokens == 0 && self.completion_tokens == 0 && self.cost_usd == 0.0
    }
}

impl Store {
    /// What a run's AI calls were billed for (from its tallies).
    pub async fn run_usage(&self, run_id: &str) -> Result<RunUsage> {
        Ok(self.run_tallies(run_id).await?.usage)
    }

    /// Marks every queued or running run `blocked` with `reason` (the provider rejected the key or the model):
    /// claims skip them until they are resumed. Returns the runs blocked.
    pub async fn block_active_runs(&self, reason: &str) -> Result<Vec<String>> {
        let sql = format!(
            "update runs set {} where {} returning id",
            run_set(RunEvent::ProviderRejected, "$1"),
            run_guard("status", RunEvent::ProviderRejected)
        );
        let ids: Vec<String> = on_pool!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(reason)
            .fetch_all(pool)
            .await?);
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.announce_progress(&refs).await;
        Ok(ids)
    }

    /// Puts every run blocked by the provider back to work (a worker started with a possibly fixed
    /// configuration). Runs paused by their cost cap stay paused.
    pub async fn unblock_runs(&self) -> Result<u64> {
        let sql = format!(
            "update runs set {} where {}",
            run_set(RunEvent::ProviderRestored, "null"),
            run_guard("status", RunEvent::ProviderRestored)
        );
        let n = on_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await?
            .rows_affected());
        if n > 0 {
            self.notify_jobs().await;
        }
        Ok(n)
    }

    /// Pauses those of `runs` whose results cost at least their `max_cost_usd`. Returns the runs paused.
    pub async fn pause_runs_over_budget(&self, runs: &[&str]) -> Result<Vec<String>> {
        let mut paused = Vec::new();
        let sql = format!(
            "update runs set {} where id = $1 and max_cost_usd is not null and {} \
               and (select coalesce(sum(n), 0) from run_tallies where run_id = $1 and counter = 'cost_nusd') \
                 >= max_cost_usd * 1e9 \
             returning id",
            run_set(
                RunEvent::CostCapReached,
                "'max_cost_usd reached: ' || cast(max_cost_usd as text) || ' USD'"
            ),
            run_guard("status", RunEvent::CostCapReached)
        );
        for run in runs {
            let hit: Option<String> = on_pool!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(run)
                .fetch_optional(pool)
                .await?);
            paused.extend(hit);
        }
        let refs: Vec<&str> = paused.iter().map(String::as_str).collect();
        self.announce_progress(&refs).await;
        Ok(paused)
    }

    /// The cached verdicts among `keys` that have not expired, in one query.
    pub async fn cached_verdicts(&self, keys: &[String]) -> Result<HashMap<String, AiVerdict>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let now = now_millis();
        let rows: Vec<(String, String, String)> = match &self.pool {
            Pool::Pg(pool) => sqlx::query_as(
                "select key, intent, reasoning from verdict_cache where key = any($1) and expires_at > $2",
            )
            .bind(keys)
            .bind(now)
            .fetch_all(pool)
            .await?,
            Pool::Sqlite(pool) => {
                sqlx::query_as(
                    "select key, intent, reasoning from verdict_cache \
                 where key in (select value from json_each(?)) and expires_at > ?",
                )
                .bind(Json(keys))
                .bind(now)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(key, intent, reasoning)| {
                Some((key, AiVerdict { intent: Intent::parse(&intent)?, reasoning }))
            })
            .collect())
    }

    /// Stores verdicts for `ttl`, all in one statement (one commit, whatever the batch size).
    pub async fn cache_verdicts(
        &self,
        entries: &[(String, AiVerdict)],
        ttl: std::time::Duration,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let expires = now_millis() + ttl.as_millis() as i64;
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        let intents: Vec<&str> = entries.iter().map(|(_, v)| v.intent.as_str()).collect();
        let reasons: Vec<&str> = entries.iter().map(|(_, v)| v.reasoning.as_str()).collect();
        let upsert = "on conflict (key) do update set intent = excluded.intent, reasoning = excluded.reasoning, \
                      expires_at = excluded.expires_at";
        match &self.pool {
            Pool::Pg(pool) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "insert into verdict_cache (key, intent, reasoning, expires_at) \
                     select k, i, r, $4 from unnest($1::text[], $2::text[], $3::text[]) as u(k, i, r) {upsert}"
                )))
                .bind(&keys)
                .bind(&intents)
                .bind(&reasons)
                .bind(expires)
                .execute(pool)
                .await?;
            }
            Pool::Sqlite(pool) => {
                let mut tx = crate::WritePool::begin_write(pool).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "insert into verdict_cache (key, intent, reasoning, expires_at) \
                     select k.value, i.value, r.value, ? from json_each(?) k \
                       join json_each(?) i on i.key = k.key join json_each(?) r on r.key = k.key where true {upsert}"
                )))
                .bind(expires)
                .bind(Json(&keys))
                .bind(Json(&intents))
                .bind(Json(&reasons))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Deletes expired cache entries.
    pub async fn prune_verdict_cache(&self) -> Result<u64> {
        Ok(on_pool!(self, pool => sqlx::query("delete from verdict_cache where expires_at <= $1")
            .bind(now_millis())
            .execute(pool)
            .await?
            .rows_affected()))
    }
}
