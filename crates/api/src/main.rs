//! `leadscore-api`: the HTTP API alone (cluster mode; workers run as `leadscore-worker`).

use std::process::ExitCode;

use anyhow::Context;
use leadscore_api::{AiSettings, AppState, UploadLimits};
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
    if !store.auth_enabled().await? {
        anyhow::bail!(
            "no API key exists: create one with `leadscore keys create --name NAME` before exposing the API"
        );
    }
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
    let state = AppState { store, upload_limits: UploadLimits::default(), ai };
    leadscore_api::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("serving")
}
