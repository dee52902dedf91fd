//! The cap on a workspace's unfinished runs (`leadscore serve --key-max-active-runs`): counted inside the
//! transaction that creates a run, after its `Idempotency-Key` is claimed, so a replay is still answered at the
//! cap and two creates racing each other cannot both slip under it.

use std::sync::LazyLock;

use leadscore_core::RunEvent;

use crate::states::run_guard;
use crate::{Result, Store, StoreError, on_pool};

/// The runs that hold a place under the cap: those a cancel can still stop (queued, running, paused, blocked;
/// a cancelling run only winds down). The runs_workspace index narrows the count to one workspace.
static COUNT_ACTIVE: LazyLock<String> = LazyLock::new(|| {
    format!("select count(*) from runs where workspace_id = $1 and {}", run_guard("status", RunEvent::Cancel))
});

impl Store {
    /// How many of the workspace's runs hold a place under the active-run cap.
    pub async fn count_active_runs(&self, workspace: &str) -> Result<i64> {
        Ok(on_pool!(self, pool => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(COUNT_ACTIVE.as_str()))
            .bind(workspace)
            .fetch_one(pool)
            .await?))
    }
}

/// Refuses a run that would take the workspace past `cap` active runs, inside the creating transaction.
pub(super) trait ActiveRunCap {
    async fn within_cap(&mut self, workspace: &str, cap: u32) -> Result<()>;
}

fn check(active: i64, cap: u32) -> Result<()> {
    if active >= i64::from(cap) { Err(StoreError::TooManyActiveRuns { active, cap }) } else { Ok(()) }
}

impl ActiveRunCap for crate::WriteTx<sqlx::Postgres> {
    async fn within_cap(&mut self, workspace: &str, cap: u32) -> Result<()> {
        // Creates in one workspace take turns from here to commit: under READ COMMITTED two of them would each
        // count without the other's run. `no key update` does not block the foreign-key checks of other writes.
        sqlx::query("select 1 from workspaces where id = $1 for no key update")
            .bind(workspace)
            .execute(&mut **self)
            .await?;
        let active: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(COUNT_ACTIVE.as_str()))
            .bind(workspace)
            .fetch_one(&mut **self)
            .await?;
        check(active, cap)
    }
}

impl ActiveRunCap for crate::WriteTx<sqlx::Sqlite> {
    async fn within_cap(&mut self, workspace: &str, cap: u32) -> Result<()> {
        // `BEGIN IMMEDIATE` already makes writers take turns.
        let active: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(COUNT_ACTIVE.as_str()))
            .bind(workspace)
            .fetch_one(&mut **self)
            .await?;
        check(active, cap)
    }
}
