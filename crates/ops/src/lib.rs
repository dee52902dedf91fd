//! What `leadscore serve`, `leadscore-api` and `leadscore-worker` share to run as a service: one typed
//! configuration ([`config`]), telemetry (logs, metrics, traces) and the operations listener (`/metrics`,
//! `/healthz`, `/readyz`). The libraries below it (store, llm) know nothing of flags or environment variables.

pub mod config;
pub mod listener;
pub mod ready;
pub mod shutdown;
pub mod telemetry;

use std::future::Future;
use std::process::ExitCode;

use crate::config::TelemetryArgs;
use crate::ready::Readiness;

/// Runs a binary's main future on a multi-threaded runtime with logs and traces set up (spans still queued are
/// exported before it returns). An error ends the process with exit status 2 and one line (`error: ...`); the
/// future itself exits cleanly on SIGTERM.
pub fn run<E: std::fmt::Display>(
    binary: &'static str,
    telemetry: &TelemetryArgs,
    main: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let guard = match telemetry::init(telemetry, binary) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::debug!(binary, "starting");
    let result = runtime.block_on(main);
    // The runtime first: its tasks' spans end as they are dropped, and the guard exports them.
    drop(runtime);
    drop(guard);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// What the operations listener serves: `/healthz`, `/readyz` and `/metrics` (installing the process's
/// metrics recorder; without it, logged, the rest is served).
pub fn ops_router(readiness: Readiness) -> axum::Router {
    match metrics::Metrics::install() {
        Ok(m) => listener::router(readiness).merge(metrics::router(m)),
        Err(e) => {
            tracing::error!(error = %e, "no /metrics: the metrics recorder could not be installed");
            listener::router(readiness)
        }
    }
}
pub mod metrics;
