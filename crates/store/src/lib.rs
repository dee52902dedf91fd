//! leadscore's persistence: one interface, [`Store`], over PostgreSQL (cluster) and SQLite (embedded). The
//! backend is picked from the URL scheme at run time, never at compile time.
//!
//! Both backends run the same code wherever their SQL is the same ([`on_pool!`] expands one body for each);
//! where it differs (bulk loading: `COPY` against multi-row `INSERT`) each has its own function next to the
//! other. The contract tests in `tests/` run every operation against both.
//!
//! [`ingest`] streams a CSV into one upload (reader on a blocking thread, one transaction): the pipeline
//! behind the API's upload routes and `leadscore score`.

mod ai;
mod ingest;
mod keys;
mod leads;
mod maintenance;
mod offers;
mod queue;
mod results;
mod row;
mod runs;
mod states;
#[cfg(feature = "test-support")]
pub mod test_support;
mod uploads;
pub mod workbook;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use ai::RunUsage;
pub use ingest::{
    INLINE_ERRORS, IngestError, IngestOptions, Ingested, PREVIEW_LEADS, Preview, UploadLimits, ingest,
    preview,
};
pub use keys::{ApiKeyInfo, LAST_USED_EVERY, NewApiKey, Revoked};
pub use leads::LeadRecord;
pub use maintenance::Leadership;
pub use offers::OfferRecord;
pub use queue::{ClaimedJob, ClaimedWork, Completion, JobRecord, NewResult, QueueDepth, RunSnapshot};
pub use results::{ResultFilter, ResultRecord, ResultScope};
pub use runs::{
    Control, ControlOutcome, Created, DEFAULT_MAX_ATTEMPTS, Estimate, IdempotencyKey, JobCounts, NewRun,
    ResultCounts, RunRecord, RunStatusView, RunTallies, RunWatch, Selection,
};
pub use sqlx;
pub use uploads::{UploadError, UploadRecord, UploadWriter};

/// The workspace used while no API key exists (auth off).
pub const DEFAULT_WORKSPACE: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use postgres://... or sqlite://...")]
    UnsupportedUrl(String),
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    // sqlx texts may quote the database URL: passwords are redacted wherever a store error is shown. Not a
    // `#[source]` (nor `#[from]`, which implies it): `{:#}` would print the unredacted text after ours.
    #[error("database error: {}", leadscore_core::redact::redact(&.0.to_string()))]
    Db(sqlx::Error),
    #[error("migration failed: {}", leadscore_core::redact::redact(&.0.to_string()))]
    Migrate(sqlx::migrate::MigrateError),
    #[error("unknown workspace {0:?}")]
    UnknownWorkspace(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the offer does not exist")]
    OfferNotFound,
    #[error("the selection holds no lead to score")]
    EmptySelection,
    #[error("the Idempotency-Key was already used with a different request body")]
    IdempotencyMismatch,
    #[error("not a cursor of this list")]
    BadCursor,
    #[error("the workspace has {active} unfinished runs, the most allowed at once is {cap}")]
    TooManyActiveRuns { active: i64, cap: u32 },
    #[error("{count} API keys match {which:?}: name the key by its prefix")]
    AmbiguousKey { which: String, count: usize },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the backend's pool: one source, compiled once per backend.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::Pool::Pg($pool) => $body,
            $crate::Pool::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Opens a transaction that will write. On SQLite it first waits for this process's turn at the database file's
/// write lock (a FIFO queue in the process), then takes the lock up front (`BEGIN IMMEDIATE`), since a
/// transaction that reads first and writes later fails at once with `SQLITE_BUSY` when another connection wrote
/// in between. The turn is what keeps the process's writers from waiting on SQLite's own busy handler, which
/// polls the lock with sleeps of up to 100 ms: with the claim and the completion writes contending that way, a
/// rules-only run spent more time asleep than working (BENCHMARKS.md, issue 17). Another process on the same
/// file still waits on `busy_timeout`.
pub(crate) trait WritePool {
    type Db: sqlx::Database;
    fn begin_write(&self) -> impl Future<Output = sqlx::Result<WriteTx<Self::Db>>> + Send;
}

impl WritePool for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> sqlx::Result<WriteTx<Self::Db>> {
        Ok(WriteTx { tx: self.begin().await?, _turn: None })
    }
}

impl WritePool for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> sqlx::Result<WriteTx<Self::Db>> {
        let asked = std::time::Instant::now();
        // Bounded like the wait for a connection: a writer stuck behind a transaction that never ends fails
        // (and is retried by its caller) instead of queueing for ever.
        let turn = tokio::time::timeout(WRITE_TURN_TIMEOUT, write_turns(self).acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .ok();
        let tx = self.begin_with("BEGIN IMMEDIATE").await;
        // What `leadscore-bench profile` sums as lock waits: the turn, a connection and the lock.
        tracing::trace!(target: WRITE_LOCK, wait_secs = asked.elapsed().as_secs_f64());
        Ok(WriteTx { tx: tx?, _turn: turn })
    }
}

/// The longest a write transaction waits for its turn: longer than the largest upload allowed takes to write
/// (5,000,000 rows at about 150,000 rows/s), which holds the turn from its first row to its commit.
const WRITE_TURN_TIMEOUT: Duration = Duration::from_secs(60);

/// The turns of this process's writers at each SQLite file's write lock (the lock is the file's, so two
/// stores on one file share the queue).
fn write_turns(pool: &SqlitePool) -> std::sync::Arc<tokio::sync::Semaphore> {
    use std::sync::{Arc, LazyLock, Mutex};
    type Turns = Mutex<std::collections::HashMap<std::path::PathBuf, Arc<tokio::sync::Semaphore>>>;
    static TURNS: LazyLock<Turns> = LazyLock::new(Default::default);
    let file = pool.connect_options().get_filename().to_owned();
    let mut turns = TURNS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    turns.entry(file).or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(1))).clone()
}

/// A write transaction ([`WritePool::begin_write`]); on SQLite it holds the process's turn until it ends. It
/// derefs to the connection, as a `Transaction` does.
pub(crate) struct WriteTx<DB: sqlx::Database> {
    // Dropped first: an abandoned transaction's rollback is queued before the turn passes on.
    tx: sqlx::Transaction<'static, DB>,
    _turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<DB: sqlx::Database> WriteTx<DB> {
    pub(crate) async fn commit(self) -> sqlx::Result<()> {
        self.tx.commit().await
    }

    pub(crate) async fn rollback(self) -> sqlx::Result<()> {
        self.tx.rollback().await
    }
}

impl<DB: sqlx::Database> std::ops::Deref for WriteTx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

/// The target of the trace event that gives each SQLite write transaction's wait for its turn, a connection and
/// the write lock (`wait_secs`).
pub const WRITE_LOCK: &str = "leadscore_store::write_lock";

/// A page request for cursor pagination: items after `after` (an id from the previous page), in id order.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: u32,
    pub after: Option<String>,
}

impl Page {
    pub const MAX_LIMIT: u32 = 1000;

    /// The limit to ask the database for: one more than requested, to know whether a next page exists.
    pub(crate) fn fetch_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, Self::MAX_LIMIT)) + 1
    }

    /// Splits `rows` (fetched with [`fetch_limit`](Self::fetch_limit)) into the page and the next cursor.
    pub(crate) fn finish<T>(&self, mut rows: Vec<T>, cursor: impl Fn(&T) -> String) -> Paged<T> {
        let limit = self.limit.clamp(1, Self::MAX_LIMIT) as usize;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(cursor)
        } else {
            None
        };
        Paged { items: rows, next_cursor: next }
    }
}

/// One page of items and the cursor of the next page, if any.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The persistence interface. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    /// Wakes this process's idle worker pools when jobs are enqueued here (or, on Postgres, announced by
    /// another process through `LISTEN leadscore_jobs`).
    pub(crate) jobs_enqueued: std::sync::Arc<tokio::sync::Notify>,
    /// Ids of runs whose counts or status changed (written here, or on Postgres announced by another process
    /// through `LISTEN leadscore_progress`): what feeds `GET /v1/runs/{id}/events`.
    pub(crate) progress: tokio::sync::broadcast::Sender<String>,
    /// API keys whose use this process recorded recently (id -> when): `last_used_at` is written at most once a
    /// minute per key. Never consulted to accept a key (see [`Store::workspace_for_key`]).
    pub(crate) key_uses:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Postgres: plan each statement once per connection (`plan_cache_mode = force_generic_plan`). For worker
    /// processes: their queue statements are the same few, run hundreds of times a second, and their custom
    /// plans took longer to make than to run (the claim: 0.8 ms of planning next to 2.2 ms of execution). Their
    /// shapes come from the statements (key lookups, `LIMIT`ed index scans), not from parameter values. Not for
    /// the API, whose filters do depend on their values.
    pub generic_plans: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions { max_connections: 16, acquire_timeout: Duration::from_secs(10), generic_plans: false }
    }
}

impl Store {
    /// Opens a pool for `url` (`postgres://...` or `sqlite://path`; `sqlite::memory:` for tests). Connects
    /// lazily: an unreachable database surfaces on first use (and in `/readyz`), not here. A malformed URL is an
    /// error here.
    pub fn connect_lazy(url: &str, opts: &ConnectOptions) -> Result<Store> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut options = PgConnectOptions::from_str(url).map_err(invalid_url)?;
            if opts.generic_plans {
                options = options.options([("plan_cache_mode", "force_generic_plan")]);
            }
            Pool::Pg(
                PgPoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(opts.acquire_timeout)
                    .connect_lazy_with(options),
            )
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(invalid_url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(opts.acquire_timeout)
                    .connect_lazy_with(options),
            )
        } else {
            return Err(StoreError::UnsupportedUrl(leadscore_core::redact::redact(url)));
        };
        Ok(Store {
            pool,
            jobs_enqueued: Default::default(),
            progress: tokio::sync::broadcast::channel(1024).0,
            key_uses: Default::default(),
        })
    }

    /// [`connect_lazy`](Self::connect_lazy), then waits until the database answers and applies migrations.
    pub async fn open(url: &str, opts: &ConnectOptions) -> Result<Store> {
        let store = Store::connect_lazy(url, opts)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Resolves when jobs may have been enqueued since the last call (a hint: claim to find out). A signal sent
    /// while nobody waits is kept for the next waiter, so a busy pool does not miss it.
    pub async fn jobs_enqueued(&self) {
        self.jobs_enqueued.notified().await;
    }

    /// Run ids whose progress changed, as they happen (lagging receivers skip ahead).
    pub fn subscribe_progress(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.progress.subscribe()
    }

    /// Forwards Postgres notifications from other processes (`leadscore_jobs`: jobs enqueued;
    /// `leadscore_progress`: a run changed) to [`jobs_enqueued`](Self::jobs_enqueued) and
    /// [`subscribe_progress`](Self::subscribe_progress) until the connection fails; the caller reconnects. Never
    /// returns on SQLite, where everything happens in this process.
    pub async fn listen(&self) -> Result<()> {
        let Pool::Pg(pool) = &self.pool else {
            return std::future::pending().await;
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen_all(["leadscore_jobs", "leadscore_progress"]).await?;
        loop {
            let n = listener.recv().await?;
            if n.channel() == "leadscore_jobs" {
                self.jobs_enqueued.notify_one();
            } else {
                let _ = self.progress.send(n.payload().to_owned());
            }
        }
    }

    /// Announces that these runs changed: to this process's subscribers, and through one `NOTIFY` per run on
    /// Postgres. Best effort: pollers see the change anyway.
    pub(crate) async fn announce_progress(&self, runs: &[&str]) {
        for run in runs {
            let _ = self.progress.send((*run).to_owned());
        }
        if let Pool::Pg(pool) = &self.pool
            && !runs.is_empty()
        {
            let runs: Vec<&str> = runs.to_vec();
            if let Err(e) =
                sqlx::query("select pg_notify('leadscore_progress', r) from unnest($1::text[]) as r")
                    .bind(&runs)
                    .execute(pool)
                    .await
            {
                tracing::debug!(error = %e, "progress NOTIFY failed");
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Pg(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies the embedded migrations of this backend (idempotent; safe with several processes starting at
    /// once: sqlx takes an advisory lock on Postgres).
    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Pg(pool) => migrator(POSTGRES_MIGRATIONS).run(pool).await?,
            Pool::Sqlite(pool) => migrator(SQLITE_MIGRATIONS).run(pool).await?,
        }
        Ok(())
    }

    /// The newest migration this binary carries: the schema version it needs.
    pub fn expected_schema_version(&self) -> i64 {
        let migrations = match &self.pool {
            Pool::Pg(_) => POSTGRES_MIGRATIONS,
            Pool::Sqlite(_) => SQLITE_MIGRATIONS,
        };
        migrations.iter().map(|(v, _, _)| *v).max().unwrap_or(0)
    }

    /// The newest migration applied to the database (0 for an empty one). A newer binary may have applied
    /// migrations this one does not know: it still runs (each migration keeps older code working), which is
    /// what lets a rolling deploy migrate first and keep old processes ready.
    pub async fn schema_version(&self) -> Result<i64> {
        let sql = "select coalesce(max(version), 0) from _sqlx_migrations where success";
        let version: Option<i64> = on_pool!(self, pool => {
            match sqlx::query_scalar(sql).fetch_one(pool).await {
                Ok(v) => Some(v),
                // No migration table yet: nothing applied.
                Err(sqlx::Error::Database(e)) if e.message().contains("_sqlx_migrations") => None,
                Err(e) => return Err(e.into()),
            }
        });
        Ok(version.unwrap_or(0))
    }

    /// Round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, pool => { sqlx::query("select 1").execute(pool).await?; });
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }
}

type Migrations = &'static [(i64, &'static str, &'static str)];

const POSTGRES_MIGRATIONS: Migrations = &[
    (1, "init", include_str!("../../../migrations/postgres/0001_init.sql")),
    (2, "runs", include_str!("../../../migrations/postgres/0002_runs.sql")),
    (3, "idempotency", include_str!("../../../migrations/postgres/0003_idempotency.sql")),
    (4, "ai", include_str!("../../../migrations/postgres/0004_ai.sql")),
    (5, "tallies", include_str!("../../../migrations/postgres/0005_tallies.sql")),
    (6, "spend", include_str!("../../../migrations/postgres/0006_spend.sql")),
    (7, "states", include_str!("../../../migrations/postgres/0007_states.sql")),
    (8, "key_revocation", include_str!("../../../migrations/postgres/0008_key_revocation.sql")),
    (9, "current_results", include_str!("../../../migrations/postgres/0009_current_results.sql")),
    (11, "unfinished_runs", include_str!("../../../migrations/postgres/0011_unfinished_runs.sql")),
    (12, "run_trace", include_str!("../../../migrations/postgres/0012_run_trace.sql")),
    (13, "upload_source", include_str!("../../../migrations/postgres/0013_upload_source.sql")),
];
const SQLITE_MIGRATIONS: Migrations = &[
    (1, "init", include_str!("../../../migrations/sqlite/0001_init.sql")),
    (2, "runs", include_str!("../../../migrations/sqlite/0002_runs.sql")),
    (3, "idempotency", include_str!("../../../migrations/sqlite/0003_idempotency.sql")),
    (4, "ai", include_str!("../../../migrations/sqlite/0004_ai.sql")),
    (5, "tallies", include_str!("../../../migrations/sqlite/0005_tallies.sql")),
    (6, "spend", include_str!("../../../migrations/sqlite/0006_spend.sql")),
    (7, "states", include_str!("../../../migrations/sqlite/0007_states.sql")),
    (8, "key_revocation", include_str!("../../../migrations/sqlite/0008_key_revocation.sql")),
    (9, "current_results", include_str!("../../../migrations/sqlite/0009_current_results.sql")),
    (11, "unfinished_runs", include_str!("../../../migrations/sqlite/0011_unfinished_runs.sql")),
    (12, "run_trace", include_str!("../../../migrations/sqlite/0012_run_trace.sql")),
    (13, "upload_source", include_str!("../../../migrations/sqlite/0013_upload_source.sql")),
    (14, "no_open_index", include_str!("../../../migrations/sqlite/0014_no_open_index.sql")),
];

fn migrator(migrations: Migrations) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let mut migrator = Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(*version, (*name).into(), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect(),
    );
    // Migrations a newer binary applied are not an error: during a rolling deploy the old processes restart
    // against the new schema, which keeps working for them (see `schema_version`).
    migrator.set_ignore_missing(true);
    migrator
}

/// A new time-ordered id in UUIDv7 layout: 48-bit Unix milliseconds, then a per-process random prefix and a
/// counter that starts at a random value. Ids of one process sort in creation order (cursor pagination relies
/// on it) and cost no system call: a million-row upload creates a million ids.
pub(crate) fn new_id() -> String {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: LazyLock<(u64, AtomicU64)> = LazyLock::new(|| {
        let r = uuid::Uuid::new_v4().as_u128();
        ((r >> 64) as u64 & 0xFFF, AtomicU64::new(r as u64 & ((1 << 60) - 1)))
    });
    let millis = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u128;
    let seq = SEED.1.fetch_add(1, Ordering::Relaxed) & ((1 << 62) - 1);
    let bits = ((millis & 0xFFFF_FFFF_FFFF) << 80)
        | (0x7 << 76)
        | (u128::from(SEED.0) << 64)
        | (0b10 << 62)
        | u128::from(seq);
    uuid::Uuid::from_u128(bits).hyphenated().to_string()
}

/// Milliseconds since the Unix epoch: how the queue stores times in both backends.
pub(crate) fn now_millis() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn invalid_url(e: sqlx::Error) -> StoreError {
    StoreError::InvalidUrl(leadscore_core::redact::redact(&e.to_string()))
}

pub(crate) fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_uuid_v7_and_increase() {
        let ids: Vec<String> = (0..10_000).map(|_| super::new_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "monotonic");
        let u = uuid::Uuid::parse_str(&ids[0]).expect("a UUID");
        assert_eq!(u.get_version_num(), 7);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
    }
}
