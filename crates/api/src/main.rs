//! `leadscore-api`: the HTTP API alone (cluster mode; workers run as `leadscore-worker`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use leadscore_api::guard::{Access, Auth};
use leadscore_api::{AiSettings, AppState};
use leadscore_ops::config::ApiCli;
use leadscore_ops::ready::{self, Readiness};
use leadscore_ops::{listener, shutdown};
use leadscore_store::Store;

/// How often the API reads the queue depth for `/metrics` (a read per unfinished run, not per job).
const QUEUE_GAUGES_EVERY: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli: ApiCli = leadscore_ops::config::parse();
    let telemetry = cli.telemetry.clone();
    leadscore_ops::run("leadscore-api", &telemetry, run(cli))
}

async fn run(cli: ApiCli) -> anyhow::Result<()> {
    let store = Store::connect_lazy(&cli.db.database_url, &cli.db.connect_options(false))
        .context("DATABASE_URL (--database-url)")?;
    // The API never calls the provider; it needs the prices (estimates) and the breaker (`resume`).
    let ai = match cli.llm.config()? {
        Some(config) => {
            let gate = leadscore_llm::Gate::for_config(&config).context("REDIS_URL (--redis-url)")?;
            Some(AiSettings { config, gate })
        }
        None => None,
    };
    let mut stop = shutdown::on_signal();
    let mut readiness = Readiness::new(store.clone());
    if let Some(ai) = &ai {
        readiness = readiness.with_probe("ai", ready::gate_probe(ai.gate.clone()));
    }
    let ops = leadscore_ops::ops_router(readiness.clone());
    let (ops_addr, _ops) = listener::serve(cli.telemetry.ops_listen, ops, stop.clone())
        .await
        .with_context(|| format!("cannot listen on {} (LEADSCORE_OPS_LISTEN)", cli.telemetry.ops_listen))?;
    tracing::info!("operations listener on http://{ops_addr} (/metrics, /healthz, /readyz)");
    if ready::wait_for_database(&store, cli.db.migrate, &readiness, &mut stop).await.is_err() {
        return Ok(());
    }
    if let Some(key) = &cli.bootstrap_key {
        store.ensure_api_key("bootstrap", key).await.context("storing LEADSCORE_BOOTSTRAP_KEY")?;
    }
    // Workers refresh the queue gauges where maintenance runs; the API reads them too so that a deployment
    // without a worker still shows its backlog.
    tokio::spawn(leadscore_ops::metrics::refresh_queue_gauges(store.clone(), QUEUE_GAUGES_EVERY));
    if !wait_for_a_key(&store, &readiness, &mut stop).await {
        return Ok(());
    }
    let access =
        Access::new(Auth::Keys, &cli.http.public_hosts).context("LEADSCORE_PUBLIC_HOSTS (--public-host)")?;
    let listener = tokio::net::TcpListener::bind(cli.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (LEADSCORE_LISTEN)", cli.http.listen))?;
    let state = AppState::new(store, &cli.http, ai, access).context("LEADSCORE_PUBLIC_URL (--public-url)")?;
    let limits = leadscore_api::config::server_limits(&cli.http, &cli.drain);
    leadscore_api::serve_with_limits(
        listener,
        state,
        limits,
        async move { shutdown::stopped(&mut stop).await },
    )
    .await
    .context("serving")
}

/// The cluster API always requires keys (keyless is for `leadscore serve` on loopback). Without one it waits,
/// not ready, rather than exiting: an orchestrator would restart it in a loop while the operator creates one.
async fn wait_for_a_key(
    store: &Store,
    readiness: &Readiness,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let mut warned = false;
    loop {
        match store.auth_enabled().await {
            Ok(true) => {
                readiness.started();
                return true;
            }
            Ok(false) => {
                let why = "no API key exists: set LEADSCORE_BOOTSTRAP_KEY or run `leadscore keys create --name NAME`";
                if !warned {
                    tracing::error!("{why}; waiting for one");
                    warned = true;
                }
                readiness.waiting(why.to_owned());
            }
            Err(e) => readiness.waiting(format!("waiting for the database: {e}")),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = shutdown::stopped(stop) => return false,
        }
    }
}
