//! Readiness: whether this process can do its work now, and if not, why. `/readyz` on the operations listener
//! answers from here; the start-up loop ([`wait_for_database`]) keeps it informed while it waits.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadscore_store::Store;
use serde::Serialize;
use tokio::sync::watch;

/// Longest wait of one check: a dependency that hangs counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A named check beyond the database (e.g. the Redis behind the rate limiter): `Ok(detail)` when fine.
pub type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// Shared by the start-up code and the `/readyz` handlers of this process.
#[derive(Clone)]
pub struct Readiness {
    store: Store,
    /// Why the process is not serving yet (`None` once start-up finished).
    starting: Arc<Mutex<Option<String>>>,
    probes: Vec<(&'static str, Probe)>,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// `ready` or `not ready`.
    pub status: &'static str,
    /// What is wrong, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each dependency: `ok ...` or what failed.
    pub checks: std::collections::BTreeMap<String, String>,
}

impl Report {
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

impl Readiness {
    pub fn new(store: Store) -> Readiness {
        Readiness { store, starting: Arc::new(Mutex::new(Some("starting".to_owned()))), probes: Vec::new() }
    }

    /// Adds a check run on every `/readyz`.
    #[must_use]
    pub fn with_probe(mut self, name: &'static str, probe: Probe) -> Readiness {
        self.probes.push((name, probe));
        self
    }

    /// Start-up is waiting on something (said by `/readyz` until [`Readiness::started`]).
    pub fn waiting(&self, why: String) {
        *self.starting.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
    }

    pub fn started(&self) {
        *self.starting.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn start_up_reason(&self) -> Option<String> {
        self.starting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Checks every dependency now: the database answers, its schema is at least the version this binary
    /// needs, and each probe passes.
    pub async fn check(&self) -> Report {
        let mut checks = std::collections::BTreeMap::new();
        let mut failed = self.start_up_reason();
        let mut record = |name: &str, result: Result<String, String>| {
            let line = result.unwrap_or_else(|e| {
                failed.get_or_insert_with(|| format!("{name}: {e}"));
                format!("failed: {e}")
            });
            checks.insert(name.to_owned(), line);
        };
        record("database", timed(self.schema()).await);
        for (name, probe) in &self.probes {
            record(name, timed(probe()).await);
        }
        Report { status: if failed.is_none() { "ready" } else { "not ready" }, reason: failed, checks }
    }

    async fn schema(&self) -> Result<String, String> {
        let need = self.store.expected_schema_version();
        match self.store.schema_version().await {
            Ok(v) if v >= need => Ok(format!("ok (schema version {v}, needs {need})")),
            Ok(v) => Err(format!("schema version {v}, this binary needs {need}: run `leadscore migrate`")),
            Err(e) => Err(e.to_string()),
        }
    }
}

async fn timed(f: impl Future<Output = Result<String, String>>) -> Result<String, String> {
    tokio::time::timeout(CHECK_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())))
}

/// The start-up wait ended because the process is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("stopped while waiting for the database")]
pub struct Stopped;

/// Makes the database usable, however long that takes: applies the migrations (`migrate`) or waits until
/// another process has, retrying with backoff (0.5 s doubling to 10 s) while the database is down. `/readyz`
/// says what it waits for meanwhile; the process never exits for it, except on shutdown.
pub async fn wait_for_database(
    store: &Store,
    migrate: bool,
    ready: &Readiness,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), Stopped> {
    let mut delay = Duration::from_millis(500);
    loop {
        match prepare(store, migrate).await {
            Ok(()) => {
                ready.started();
                return Ok(());
            }
            Err(why) => {
                tracing::warn!(retry_in_ms = delay.as_millis() as u64, "database not ready: {why}");
                ready.waiting(format!("waiting for the database: {why}"));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = crate::shutdown::stopped(shutdown) => return Err(Stopped),
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn prepare(store: &Store, migrate: bool) -> Result<(), String> {
    if migrate {
        return store.migrate().await.map_err(|e| format!("applying migrations: {e}"));
    }
    let need = store.expected_schema_version();
    match store.schema_version().await {
        Ok(v) if v >= need => Ok(()),
        Ok(v) => Err(format!(
            "schema version {v}, this binary needs {need} (migrations are off: run `leadscore migrate`)"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The AI layer's gate as a readiness check: with Redis behind it, Redis must answer (the limiter fails closed,
/// so without it no job gets an AI verdict). An open breaker is reported but does not make the process unready:
/// restarting would not close it.
pub fn gate_probe(gate: leadscore_llm::Gate) -> Probe {
    Arc::new(move || {
        let gate = gate.clone();
        Box::pin(async move {
            match gate.blocked().await {
                Ok(None) => Ok("ok".to_owned()),
                Ok(Some(b)) => Ok(format!("ok, but AI calls are blocked: {}", b.reason)),
                Err(e) => Err(e.to_string()),
            }
        })
    })
}
