//! Upkeep shared by every worker process: rescuing expired leases, finishing runs, compacting run tallies and
//! pruning old finished jobs. One process does it at a time: the one holding a session-level advisory lock on
//! Postgres (it passes to another process when the holder's connection ends); the only process on SQLite.

use std::time::Duration;

use crate::states::{CLAIMABLE_RUNS, FINISHED_RUNS, PRUNABLE_JOBS};
use crate::{Pool, Result, Store, now, on_pool};

/// A bulk write of at least this many rows refreshes the planner's statistics of its table right away.
const ANALYZE_AFTER_ROWS: i64 = 10_000;

/// The advisory lock key of the maintenance leader ("leadscor" in ASCII).
const MAINTENANCE_LOCK: i64 = 0x6c65_6164_7363_6f72;

/// Whether this process leads maintenance: on Postgres, a connection of its own outside the pool that holds
/// (or keeps asking for) the advisory lock. Dropping it closes the connection, which releases the lock.
#[derive(Default)]
pub struct Leadership {
    conn: Option<sqlx::PgConnection>,
    leader: bool,
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        self.leader
    }
}

impl Store {
    /// Refreshes the planner's statistics of `table` after a bulk write of `rows` rows (Postgres). Until autovacuum
    /// gets to a fresh or much grown table (a minute or more), it is planned from stale numbers: measured, the
    /// batched completion and the lead lookup of a new 20,000-lead run scanned whole tables instead of probing
    /// the primary key (1,000 instead of 5,000+ leads/s). Sampling keeps `ANALYZE` well under a second.
    pub(crate) async fn analyze_after_bulk_write(&self, table: &'static str, rows: i64) {
        if rows < ANALYZE_AFTER_ROWS {
            return;
        }
        if let Pool::Pg(pool) = &self.pool
            && let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!("analyze {table}"))).execute(pool).await
        {
            tracing::warn!(table, error = %e, "ANALYZE failed; plans may be poor until autovacuum runs");
        }
    }

    /// Keeps or takes maintenance leadership; true when this process leads now. A lost connection loses it
    /// (another process may take the lock meanwhile); the next call reconnects and asks again.
    pub async fn lead_maintenance(&self, held: &mut Leadership) -> Result<bool> {
        let Pool::Pg(pool) = &self.pool else {
            // The only process: it leads from the first call on (kept, so "leading maintenance" is said once).
            held.leader = true;
            return Ok(true);
        };
        let conn = match held.conn.as_mut() {
            Some(conn) => conn,
            None => {
                held.leader = false;
                held.conn.insert(pool.acquire().await?.detach())
            }
        };
        // Asking again while holding the lock would stack it (session locks count); a ping is enough then.
        let asked = if held.leader {
            sqlx::query_scalar::<_, bool>("select true").fetch_one(&mut *conn).await
        } else {
            sqlx::query_scalar("select pg_try_advisory_lock($1)")
                .bind(MAINTENANCE_LOCK)
                .fetch_one(&mut *conn)
                .await
        };
        match asked {
            Ok(lead) => {
                held.leader = lead;
                Ok(lead)
            }
            Err(e) => {
                *held = Leadership::default();
                Err(e.into())
            }
        }
    }

    /// Folds the tally deltas of active runs that gathered many into one row per counter (Postgres appends a
    /// delta per statement; SQLite keeps one row per counter already). Only active runs are looked at, so the
    /// cost does not grow with the number of runs ever made; a finished run keeps the few deltas of its last
    /// second. Safe next to writers and other compactions: a
    /// delta is either deleted and summed by this statement or left as it is. Returns the rows removed.
    pub async fn compact_tallies(&self) -> Result<u64> {
        let Pool::Pg(pool) = &self.pool else { return Ok(0) };
        let removed: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "with crowded as (select run_id from run_tallies \
               where run_id in (select id from runs where status in ({})) \
               group by run_id having count(*) > 16), \
             gone as (delete from run_tallies t using crowded c where t.run_id = c.run_id \
               returning t.run_id, t.counter, t.n), \
             folded as (insert into run_tallies (run_id, counter, n) select run_id, counter, sum(n) from gone \
               group by run_id, counter having sum(n) <> 0 returning 1) \
             select (select count(*) from gone) - (select count(*) from folded)",
            *CLAIMABLE_RUNS
        )))
            .fetch_one(pool)
            .await?;
        Ok(removed.max(0) as u64)
    }

    /// Deletes the succeeded and cancelled jobs of runs that finished more than `retention` ago, one run per
    /// call, keeping the run's counts (its tallies are credited with what is deleted) and its results. Failed jobs
    /// stay: they hold the last error and `retry` re-queues them. Returns the jobs deleted.
    pub async fn prune_finished_jobs(&self, retention: Duration) -> Result<u64> {
        let cutoff = now() - retention;
        let prunable = PRUNABLE_JOBS.as_str();
        let run: Option<String> = on_pool!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select id from runs r where status in ({}) and finished_at < $1 \
               and exists (select 1 from jobs j where j.run_id = r.id and j.status in ({prunable})) \
             limit 1", *FINISHED_RUNS)))
            .bind(cutoff)
            .fetch_optional(pool)
            .await?);
        let Some(run) = run else { return Ok(0) };
        let deleted = match &self.pool {
            // One statement: what is credited is exactly what was deleted, whatever runs concurrently.
            Pool::Pg(pool) => {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                    "with gone as (delete from jobs where run_id = $1 and status in ({prunable}) \
                   returning run_id, status), \
                 credit as (insert into run_tallies (run_id, counter, n) \
                   select run_id, status, count(*) from gone group by run_id, status) \
                 select count(*) from gone",
                )))
                .bind(&run)
                .fetch_one(pool)
                .await? as u64
            }
            // One writer: the two statements of the transaction see the same jobs.
            Pool::Sqlite(pool) => {
                let mut tx = crate::WritePool::begin_write(pool).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "insert into run_tallies (run_id, counter, n) select run_id, status, count(*) from jobs \
                     where run_id = $1 and status in ({prunable}) group by run_id, status \
                     on conflict (run_id, counter) do update set n = n + excluded.n",
                )))
                .bind(&run)
                .execute(&mut *tx)
                .await?;
                let n = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "delete from jobs where run_id = $1 and status in ({prunable})",
                )))
                .bind(&run)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                n
            }
        };
        tracing::info!(run = %run, jobs = deleted, "pruned finished jobs");
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use crate::Backend;
    use crate::test_support::TestDb;

    /// The upkeep loop says "leading maintenance" when leadership is new: on SQLite it must stay held, or the
    /// line is logged every tick.
    #[tokio::test]
    async fn sqlite_leadership_is_kept_once_taken() {
        let db = TestDb::new(Backend::Sqlite).await;
        let mut held = super::Leadership::default();
        assert!(db.store.lead_maintenance(&mut held).await.expect("asks"));
        assert!(held.is_leader(), "leadership is remembered");
    }
}
