//! `leadscore-worker`: a worker pool process (cluster mode). Scale by running more of them.

use std::process::ExitCode;

use leadscore_store::{ConnectOptions, Store};
use leadscore_worker::WorkerConfig;

#[tokio::main]
async fn main() -> ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("error: DATABASE_URL is not set (postgres://...)");
        return ExitCode::from(2);
    };
    let mut config = WorkerConfig::default();
    if let Ok(c) = std::env::var("LEADSCORE_CONCURRENCY") {
        match c.parse() {
            Ok(n) if n > 0 => config.concurrency = n,
            _ => {
                eprintln!("error: LEADSCORE_CONCURRENCY must be a positive number, got {c:?}");
                return ExitCode::from(2);
            }
        }
    }
    if let Ok(l) = std::env::var("LEADSCORE_LEASE_SECS") {
        match l.parse::<u64>() {
            Ok(n) if n > 0 => config.lease = std::time::Duration::from_secs(n),
            _ => {
                eprintln!("error: LEADSCORE_LEASE_SECS must be a positive number of seconds, got {l:?}");
                return ExitCode::from(2);
            }
        }
    }
    if let Ok(h) = std::env::var("LEADSCORE_JOB_RETENTION_HOURS") {
        match h.parse::<u64>() {
            Ok(n) => config.job_retention = std::time::Duration::from_secs(n * 3600),
            _ => {
                eprintln!("error: LEADSCORE_JOB_RETENTION_HOURS must be a number of hours, got {h:?}");
                return ExitCode::from(2);
            }
        }
    }
    match leadscore_llm::LlmConfig::from_env() {
        Ok(Some(llm)) => match leadscore_worker::Ai::from_config(llm) {
            Ok(ai) => config.ai = Some(ai),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        Ok(None) => tracing::warn!(
            "AI layer OFF: neither OPENAI_API_KEY nor OPENAI_BASE_URL is set; results are rules-only \
             (ai_status: skipped, score = 2 x rule score)"
        ),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let options = ConnectOptions { max_connections: 8, generic_plans: true, ..Default::default() };
    let store = match Store::connect_lazy(&url, &options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: DATABASE_URL: {e}");
            return ExitCode::from(2);
        }
    };
    let mut delay = std::time::Duration::from_millis(500);
    while let Err(e) = store.migrate().await {
        tracing::warn!(error = %e, "database not ready; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(10));
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    leadscore_worker::run(store, config, stopped).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, () = term => {} }
}
