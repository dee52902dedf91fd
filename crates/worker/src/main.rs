//! `leadscore-worker`: a worker pool process (cluster mode). Scale by running more of them.

use std::process::ExitCode;

use anyhow::Context;
use leadscore_ops::config::WorkerCli;
use leadscore_ops::ready::{self, Readiness};
use leadscore_ops::{listener, shutdown};
use leadscore_store::Store;
use leadscore_worker::{Ai, WorkerConfig};

fn main() -> ExitCode {
    let cli: WorkerCli = leadscore_ops::config::parse();
    let telemetry = cli.telemetry.clone();
    leadscore_ops::run("leadscore-worker", &telemetry, run(cli))
}

async fn run(cli: WorkerCli) -> anyhow::Result<()> {
    // Workers run the same few queue statements all day: generic plans (see ConnectOptions).
    let store = Store::connect_lazy(&cli.db.database_url, &cli.db.connect_options(true))
        .context("DATABASE_URL (--database-url)")?;
    let ai = match cli.llm.config()? {
        Some(config) => Some(Ai::from_config(config)?),
        None => {
            tracing::warn!(
                "AI layer OFF: neither OPENAI_API_KEY nor OPENAI_BASE_URL is set; results are rules-only \
                 (ai_status: skipped, score = 2 x rule score)"
            );
            None
        }
    };
    let mut stop = shutdown::on_signal();
    let mut readiness = Readiness::new(store.clone());
    if let Some(ai) = &ai {
        readiness = readiness.with_probe("ai", ready::gate_probe(ai.gate().clone()));
    }
    let (ops_addr, _ops) =
        listener::serve(cli.telemetry.ops_listen, leadscore_ops::ops_router(readiness.clone()), stop.clone())
            .await
            .with_context(|| {
                format!("cannot listen on {} (LEADSCORE_OPS_LISTEN)", cli.telemetry.ops_listen)
            })?;
    tracing::info!("operations listener on http://{ops_addr} (/metrics, /healthz, /readyz)");
    if ready::wait_for_database(&store, cli.db.migrate, &readiness, &mut stop).await.is_err() {
        return Ok(());
    }
    leadscore_worker::run(store, WorkerConfig::from_args(&cli.worker, &cli.drain, ai), stop).await;
    Ok(())
}
