//! `leadscore serve` and `leadscore migrate`: the embedded server and its housekeeping (`keys` is in keys.rs).

use std::process::ExitCode;

use anyhow::{Context, Result};
use leadscore_api::guard::{Access, Auth};
use leadscore_api::{AiSettings, AppState};
use leadscore_ops::config::{LlmArgs, ServeArgs};
use leadscore_ops::ready::{self, Readiness};
use leadscore_ops::{listener, shutdown};
use leadscore_store::{ConnectOptions, Store};
use leadscore_worker::WorkerConfig;

#[derive(Debug, clap::Args)]
pub struct DbArgs {
    /// Database URL: `sqlite://FILE` (embedded) or `postgres://...` (cluster).
    // The value of DATABASE_URL may hold a password: `--help` must not print it.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://leadscore.db", hide_env_values = true)]
    pub database_url: String,
}

/// Opens the store, turning a malformed URL into one clear line (exit 2 via the caller).
pub(crate) fn open_store(db: &DbArgs) -> Result<Store> {
    Store::connect_lazy(&db.database_url, &ConnectOptions::default()).context("DATABASE_URL / --database-url")
}

pub fn run_serve(args: ServeArgs) -> ExitCode {
    let telemetry = args.telemetry.clone();
    leadscore_ops::run("leadscore", &telemetry, serve(args))
}

pub fn run_migrate(db: &DbArgs) -> ExitCode {
    block_on(async {
        let store = open_store(db)?;
        store.migrate().await.context("applying migrations")?;
        eprintln!("migrations applied to {}", redact(&db.database_url));
        Ok(())
    })
}

async fn serve(args: ServeArgs) -> Result<()> {
    let url = &args.db.database_url;
    let store =
        Store::connect_lazy(url, &args.db.connect_options(false)).context("DATABASE_URL (--database-url)")?;
    let (settings, ai) = ai_from_args(&args.llm)?;
    let mut stop = shutdown::on_signal();
    let mut readiness = Readiness::new(store.clone());
    if let Some(s) = &settings {
        readiness = readiness.with_probe("ai", ready::gate_probe(s.gate.clone()));
    }
    let ops = leadscore_ops::ops_router(readiness.clone());
    let (ops_addr, _ops) = listener::serve(args.telemetry.ops_listen, ops, stop.clone())
        .await
        .with_context(|| format!("cannot listen on {} (LEADSCORE_OPS_LISTEN)", args.telemetry.ops_listen))?;
    if ready::wait_for_database(&store, args.db.migrate, &readiness, &mut stop).await.is_err() {
        return Ok(());
    }
    let access = Access::decide(&store, args.http.listen, &args.http.public_hosts).await?;
    match access.auth() {
        Auth::Keys => tracing::info!("auth is on: requests need `Authorization: Bearer <API key>`"),
        Auth::Keyless => tracing::warn!(
            "KEYLESS: no API key exists, so requests without one act in the `default` workspace. Only this \
             machine can connect ({}), browsers only from localhost pages; creating a key \
             (`leadscore keys create`) makes keys required at once",
            args.http.listen
        ),
    }
    let listener = tokio::net::TcpListener::bind(args.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (LEADSCORE_LISTEN)", args.http.listen))?;
    tracing::info!(
        database = %redact(url),
        "leadscore is up: API at http://{0}/v1, docs at http://{0}/docs; metrics at http://{ops_addr}/metrics",
        listener.local_addr()?
    );
    let state = AppState::new(store.clone(), &args.http, settings, access)
        .context("LEADSCORE_PUBLIC_URL (--public-url)")?;
    let config = WorkerConfig::from_args(&args.worker, &args.drain, ai);
    let workers = tokio::spawn(leadscore_worker::run(store.clone(), config, stop.clone()));
    let limits = leadscore_api::config::server_limits(&args.http, &args.drain);
    leadscore_api::serve_with_limits(
        listener,
        state,
        limits,
        async move { shutdown::stopped(&mut stop).await },
    )
    .await
    .context("serving")?;
    let _ = workers.await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The AI layer from its settings: what the API needs and the workers' client, sharing one gate. Off (with a
/// loud warning) when no provider is configured.
pub fn ai_from_args(
    llm: &LlmArgs,
) -> Result<(Option<AiSettings>, Option<std::sync::Arc<leadscore_worker::Ai>>)> {
    let Some(config) = llm.config()? else {
        tracing::warn!(
            "AI layer OFF: neither OPENAI_API_KEY nor OPENAI_BASE_URL is set. Leads get rule scores only \
             (ai_status: skipped, score = 2 x rule score). Set OPENAI_API_KEY (and LEADSCORE_MODEL) to turn it on."
        );
        return Ok((None, None));
    };
    let gate = leadscore_llm::Gate::for_config(&config).context("REDIS_URL (--redis-url)")?;
    let ai = leadscore_worker::Ai::new(config.clone(), gate.clone())?;
    tracing::info!(
        model = %config.model,
        base_url = %redact(&config.base_url),
        rpm = config.rpm,
        tpm = config.tpm,
        limiter = if config.redis_url.is_some() { "redis" } else { "in-process" },
        "AI layer on"
    );
    Ok((Some(AiSettings { config, gate }), Some(ai)))
}

/// Passwords hidden, for logs and errors (one function for every binary).
pub use leadscore_core::redact::redact;

pub(crate) fn block_on(f: impl Future<Output = Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs `f` on a runtime and returns its result (an `Err` when the runtime cannot start).
pub(crate) fn block_on_result<T>(f: impl Future<Output = T>) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    Ok(runtime.block_on(f))
}
