//! `leadscore-api`: the HTTP API alone (cluster mode; workers run as `leadscore-worker`).

use std::process::ExitCode;

use anyhow::Context;
use leadscore_api::{AiSettings, AppState, ServerLimits, UploadLimits};
use leadscore_store::{ConnectOptions, Store};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(env_filter()).with_writer(std::io::stderr).init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into())
}

async fn run() -> anyhow::Result<()> {
    let url =
        std::env::var("DATABASE_URL").context("DATABASE_URL is not set (postgres://... or sqlite://...)")?;
    let listen = std::env::var("LEADSCORE_LISTEN").unwrap_or_else(|_| "0.0.0.0:8080".to_owned());
    let store = Store::connect_lazy(&url, &ConnectOptions::default()).context("DATABASE_URL")?;
    store.migrate().await.context("migrating the database")?;
    // The cluster API always requires keys (keyless is for `leadscore serve` on loopback).
    if !store.auth_enabled().await? {
        anyhow::bail!(
            "no API key exists: create one with `leadscore keys create --name NAME` before exposing the API"
        );
    }
    let public_hosts = leadscore_api::guard::split_public_hosts(
        &std::env::var("LEADSCORE_PUBLIC_HOSTS").unwrap_or_default(),
    );
    let access = leadscore_api::guard::Access::new(leadscore_api::guard::Auth::Keys, &public_hosts)
        .context("LEADSCORE_PUBLIC_HOSTS")?;
    let listener =
        tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    // The API never calls the provider; it needs the prices (estimates) and the breaker (`resume`).
    let ai = match leadscore_llm::LlmConfig::from_env()? {
        Some(config) => {
            let gate = leadscore_llm::Gate::for_config(&config).context("REDIS_URL")?;
            Some(AiSettings { config, gate })
        }
        None => None,
    };
    let mut upload_limits = UploadLimits::default();
    // Where upload bodies wait until their last byte arrived (default: the system's temporary directory).
    if let Some(dir) = std::env::var_os("LEADSCORE_UPLOAD_SPOOL_DIR") {
        upload_limits.spool_dir = dir.into();
    }
    let key_limits = leadscore_api::KeyLimiter::new(key_limits_from_env()?);
    let compat = leadscore_api::compat::CompatConfig::new(
        std::env::var("LEADSCORE_PUBLIC_URL").ok().as_deref(),
        match std::env::var("LEADSCORE_COMPAT_WAIT_MAX_LEADS") {
            Ok(v) => v.parse().context("LEADSCORE_COMPAT_WAIT_MAX_LEADS must be a whole number")?,
            Err(_) => leadscore_api::compat::COMPAT_WAIT_MAX_LEADS,
        },
    )
    .context("LEADSCORE_PUBLIC_URL")?;
    let state = AppState { store, upload_limits, ai, key_limits, access, compat };
    leadscore_api::serve_with_limits(listener, state, server_limits_from_env()?, shutdown_signal())
        .await
        .context("serving")
}

/// The server's client bounds from `LEADSCORE_HEADER_TIMEOUT_SECS`, `LEADSCORE_BODY_IDLE_TIMEOUT_SECS`,
/// `LEADSCORE_REQUEST_DEADLINE_SECS`, `LEADSCORE_KEEP_ALIVE_SECS`, `LEADSCORE_DRAIN_SECS` and
/// `LEADSCORE_MAX_CONNECTIONS` (default: derived from the open-file limit); unset ones keep their default.
fn server_limits_from_env() -> anyhow::Result<ServerLimits> {
    let d = ServerLimits::default();
    let secs = |name: &str, default: std::time::Duration| -> anyhow::Result<std::time::Duration> {
        match std::env::var(name) {
            Ok(v) => {
                let s: u64 = v.parse().with_context(|| format!("{name}={v:?} is not a number of seconds"))?;
                anyhow::ensure!(s > 0, "{name} must be at least 1");
                Ok(std::time::Duration::from_secs(s))
            }
            Err(_) => Ok(default),
        }
    };
    let max_connections = match std::env::var("LEADSCORE_MAX_CONNECTIONS") {
        Ok(v) => Some(
            v.parse()
                .ok()
                .filter(|n: &usize| *n > 0)
                .with_context(|| format!("LEADSCORE_MAX_CONNECTIONS={v:?} is not a positive number"))?,
        ),
        Err(_) => None,
    };
    Ok(ServerLimits {
        header_timeout: secs("LEADSCORE_HEADER_TIMEOUT_SECS", d.header_timeout)?,
        body_idle_timeout: secs("LEADSCORE_BODY_IDLE_TIMEOUT_SECS", d.body_idle_timeout)?,
        request_deadline: secs("LEADSCORE_REQUEST_DEADLINE_SECS", d.request_deadline)?,
        keep_alive_idle: secs("LEADSCORE_KEEP_ALIVE_SECS", d.keep_alive_idle)?,
        drain_timeout: secs("LEADSCORE_DRAIN_SECS", d.drain_timeout)?,
        max_connections,
    })
}

/// Per-key limits from `LEADSCORE_KEY_RATE_PER_SEC`, `LEADSCORE_KEY_BURST`, `LEADSCORE_KEY_MAX_UPLOADS` and
/// `LEADSCORE_KEY_MAX_ACTIVE_RUNS` (0 turns one off); unset ones keep their default.
fn key_limits_from_env() -> anyhow::Result<leadscore_api::KeyLimits> {
    let d = leadscore_api::KeyLimits::default();
    let number = |name: &str, default: u32| -> anyhow::Result<u32> {
        match std::env::var(name) {
            Ok(v) => {
                v.parse().with_context(|| format!("{name}={v:?} is not a whole number (0 turns it off)"))
            }
            Err(_) => Ok(default),
        }
    };
    Ok(leadscore_api::KeyLimits {
        rate_per_sec: number("LEADSCORE_KEY_RATE_PER_SEC", d.rate_per_sec)?,
        burst: number("LEADSCORE_KEY_BURST", d.burst)?,
        max_uploads: number("LEADSCORE_KEY_MAX_UPLOADS", d.max_uploads)?,
        max_active_runs: number("LEADSCORE_KEY_MAX_ACTIVE_RUNS", d.max_active_runs)?,
    })
}

/// Resolves on SIGINT or SIGTERM (what orchestrators send): the server then drains.
async fn shutdown_signal() {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
