//! `leadscore serve`, `leadscore migrate` and `leadscore keys`: the embedded server and its housekeeping.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use leadscore_api::{AiSettings, AppState};
use leadscore_store::{ConnectOptions, Store, UploadLimits};
use leadscore_worker::WorkerConfig;

#[derive(Debug, clap::Args)]
pub struct DbArgs {
    /// Database URL: `sqlite://FILE` (embedded) or `postgres://...` (cluster).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://leadscore.db")]
    pub database_url: String,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Address to listen on. Without API keys only a loopback address is allowed (see --insecure-no-auth).
    #[arg(long, env = "LEADSCORE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Listen on a non-loopback address although no API key exists (anyone who can reach it can use it).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Largest accepted upload, in bytes.
    #[arg(long, env = "LEADSCORE_MAX_UPLOAD_BYTES", default_value_t = UploadLimits::default().max_bytes)]
    pub max_upload_bytes: u64,
    /// Most data rows accepted in one upload.
    #[arg(long, env = "LEADSCORE_MAX_UPLOAD_ROWS", default_value_t = UploadLimits::default().max_rows)]
    pub max_upload_rows: u64,
    /// Jobs scored at once by the embedded worker pool.
    #[arg(long, env = "LEADSCORE_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Longest accepted CSV field, in bytes; a longer one rejects its row.
    #[arg(long, env = "LEADSCORE_MAX_FIELD_BYTES", default_value_t = UploadLimits::default().max_field_bytes)]
    pub max_field_bytes: usize,
    /// Hours the succeeded and cancelled jobs of a finished run are kept (its counts and results stay).
    #[arg(long, env = "LEADSCORE_JOB_RETENTION_HOURS", default_value_t = 168)]
    pub job_retention_hours: u64,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create an API key; it is printed once and only its hash is stored.
    Create {
        #[command(flatten)]
        db: DbArgs,
        /// A name for the key (and for its new workspace).
        #[arg(long)]
        name: String,
        /// Attach the key to an existing workspace (`default` keeps the data created while auth was off)
        /// instead of creating a new one.
        #[arg(long)]
        workspace: Option<String>,
    },
}

/// Opens the store, turning a malformed URL into one clear line (exit 2 via the caller).
fn open_store(db: &DbArgs) -> Result<Store> {
    Store::connect_lazy(&db.database_url, &ConnectOptions::default()).context("DATABASE_URL / --database-url")
}

pub fn run_serve(args: &ServeArgs) -> ExitCode {
    init_tracing();
    block_on(serve(args))
}

pub fn run_migrate(db: &DbArgs) -> ExitCode {
    block_on(async {
        let store = open_store(db)?;
        store.migrate().await.context("applying migrations")?;
        eprintln!("migrations applied to {}", redact(&db.database_url));
        Ok(())
    })
}

pub fn run_keys(cmd: &KeysCommand) -> ExitCode {
    match cmd {
        KeysCommand::Create { db, name, workspace } => block_on(async {
            let store = open_store(db)?;
            store.migrate().await.context("applying migrations")?;
            let key = store.create_api_key(name, workspace.as_deref()).await?;
            eprintln!(
                "Created API key {:?} for workspace {}. It is shown once; store it now:",
                name, key.workspace_id
            );
            println!("{}", key.key);
            Ok(())
        }),
    }
}

async fn serve(args: &ServeArgs) -> Result<()> {
    let store = open_store(&args.db)?;
    store.migrate().await.with_context(|| format!("opening {}", redact(&args.db.database_url)))?;
    if store.auth_enabled().await? {
        tracing::info!("auth is on: requests need `Authorization: Bearer <API key>`");
    } else if args.listen.ip().is_loopback() {
        tracing::warn!("auth is off: no API key exists, so only this machine may connect ({})", args.listen);
    } else if args.insecure_no_auth {
        tracing::warn!("auth is OFF on {}: anyone who can reach this address can use the API", args.listen);
    } else {
        bail!(
            "refusing to listen on {} without API keys: create one with `leadscore keys create --name NAME`, \
             or pass --insecure-no-auth",
            args.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let limits = UploadLimits {
        max_bytes: args.max_upload_bytes,
        max_rows: args.max_upload_rows,
        max_field_bytes: args.max_field_bytes,
    };
    tracing::info!(
        database = %redact(&args.db.database_url),
        "leadscore is up: API at http://{0}/v1, docs at http://{0}/docs",
        listener.local_addr()?
    );
    let (settings, ai) = ai_from_env()?;
    let state = AppState { store: store.clone(), upload_limits: limits, ai: settings };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = WorkerConfig {
        concurrency: usize::from(args.concurrency),
        ai,
        job_retention: std::time::Duration::from_secs(args.job_retention_hours.saturating_mul(3600)),
        ..WorkerConfig::default()
    };
    let workers = tokio::spawn(leadscore_worker::run(store.clone(), config, stopped));
    leadscore_api::serve(listener, state, shutdown_signal()).await.context("serving")?;
    let _ = stop.send(true);
    let _ = workers.await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The AI layer from `OPENAI_API_KEY` / `OPENAI_BASE_URL` / `LEADSCORE_*`: its settings for the API and the
/// workers' client, sharing one gate. Off (with a loud warning) when no provider is configured.
pub fn ai_from_env() -> Result<(Option<AiSettings>, Option<std::sync::Arc<leadscore_worker::Ai>>)> {
    let Some(config) = leadscore_llm::LlmConfig::from_env()? else {
        tracing::warn!(
            "AI layer OFF: neither OPENAI_API_KEY nor OPENAI_BASE_URL is set. Leads get rule scores only \
             (ai_status: skipped, score = 2 x rule score). Set OPENAI_API_KEY (and LEADSCORE_MODEL) to turn it on."
        );
        return Ok((None, None));
    };
    let gate = leadscore_llm::Gate::for_config(&config).context("REDIS_URL")?;
    let ai = leadscore_worker::Ai::new(config.clone(), gate.clone())?;
    tracing::info!(
        model = %config.model,
        base_url = %config.base_url,
        rpm = config.rpm,
        tpm = config.tpm,
        limiter = if config.redis_url.is_some() { "redis" } else { "in-process" },
        "AI layer on"
    );
    Ok((Some(AiSettings { config, gate }), Some(ai)))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
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
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn block_on(f: impl Future<Output = Result<()>>) -> ExitCode {
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

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
