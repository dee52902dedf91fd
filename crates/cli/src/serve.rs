//! `leadscore serve` and `leadscore migrate`: the embedded server and its housekeeping (`keys` is in keys.rs).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use leadscore_api::guard::{Access, Auth};
use leadscore_api::{AiSettings, AppState, KeyLimiter, KeyLimits, ServerLimits};
use leadscore_store::{ConnectOptions, Store, UploadLimits};
use leadscore_worker::WorkerConfig;

#[derive(Debug, clap::Args)]
pub struct DbArgs {
    /// Database URL: `sqlite://FILE` (embedded) or `postgres://...` (cluster).
    // The value of DATABASE_URL may hold a password: `--help` must not print it.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://leadscore.db", hide_env_values = true)]
    pub database_url: String,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Address to listen on. Without an API key only a loopback address is allowed (keyless mode).
    #[arg(long, env = "LEADSCORE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Names (`host` or `host:port`, comma-separated) browsers may reach the API by besides localhost,
    /// 127.0.0.1 and [::1]; with keys, setting this also makes other `Host` headers refused.
    #[arg(long = "public-host", env = "LEADSCORE_PUBLIC_HOSTS", value_delimiter = ',')]
    pub public_hosts: Vec<String>,
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
    /// Directory upload bodies are received into before anything is stored (each file at most
    /// --max-upload-bytes, deleted at once); default: the system's temporary directory.
    #[arg(long, env = "LEADSCORE_UPLOAD_SPOOL_DIR")]
    pub upload_spool_dir: Option<std::path::PathBuf>,
    /// Hours the succeeded and cancelled jobs of a finished run are kept (its counts and results stay).
    #[arg(long, env = "LEADSCORE_JOB_RETENTION_HOURS", default_value_t = 168)]
    pub job_retention_hours: u64,
    /// Seconds a client has to send a complete request head (from connecting, or from the previous response).
    #[arg(long, env = "LEADSCORE_HEADER_TIMEOUT_SECS", default_value_t = secs(ServerLimits::default().header_timeout), value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_secs: u64,
    /// Seconds a request body may send nothing before the request fails (408); per chunk, not per body. A
    /// client that reads nothing of a response for as long is disconnected.
    #[arg(long, env = "LEADSCORE_BODY_IDLE_TIMEOUT_SECS", default_value_t = secs(ServerLimits::default().body_idle_timeout), value_parser = clap::value_parser!(u64).range(1..))]
    pub body_idle_timeout_secs: u64,
    /// Seconds a non-streaming request may take in all (503 past it); event streams, CSV exports and uploads
    /// are exempt.
    #[arg(long, env = "LEADSCORE_REQUEST_DEADLINE_SECS", default_value_t = secs(ServerLimits::default().request_deadline), value_parser = clap::value_parser!(u64).range(1..))]
    pub request_deadline_secs: u64,
    /// Seconds an idle keep-alive connection is kept after a response (at most the header timeout).
    #[arg(long, env = "LEADSCORE_KEEP_ALIVE_SECS", default_value_t = secs(ServerLimits::default().keep_alive_idle), value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_alive_secs: u64,
    /// Most open connections; when full, those that have not sent a request are closed first. Default:
    /// derived from the open-file limit (`ulimit -n`), with headroom for the database and files.
    #[arg(long, env = "LEADSCORE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Seconds in-flight requests and open streams get to finish on shutdown.
    #[arg(long, env = "LEADSCORE_DRAIN_SECS", default_value_t = secs(ServerLimits::default().drain_timeout))]
    pub drain_secs: u64,
    #[command(flatten)]
    pub key_limits: KeyLimitArgs,
    /// Public base URL of this server (e.g. `https://leads.example.com`) for the absolute `next` / `previous`
    /// links of the seed-compatible routes; without it those links are relative.
    #[arg(long, env = "LEADSCORE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Most unscored leads `POST /api/leads/score/` scores while the client waits.
    #[arg(long, env = "LEADSCORE_COMPAT_WAIT_MAX_LEADS", default_value_t = leadscore_api::compat::COMPAT_WAIT_MAX_LEADS)]
    pub compat_wait_max_leads: i64,
}

/// What each API key may do (0 turns a limit off); answered 429 with `Retry-After` past it.
#[derive(Debug, clap::Args)]
pub struct KeyLimitArgs {
    /// Requests per second each API key may send, sustained (without keys: all requests together).
    #[arg(long, env = "LEADSCORE_KEY_RATE_PER_SEC", default_value_t = KeyLimits::default().rate_per_sec)]
    pub key_rate_per_sec: u32,
    /// Requests each API key may send at once above that rate.
    #[arg(long, env = "LEADSCORE_KEY_BURST", default_value_t = KeyLimits::default().burst)]
    pub key_burst: u32,
    /// Uploads each API key may have in progress at once.
    #[arg(long, env = "LEADSCORE_KEY_MAX_UPLOADS", default_value_t = KeyLimits::default().max_uploads)]
    pub key_max_uploads: u32,
    /// Unfinished (queued, running, paused, blocked) runs a workspace may have; creating another is refused.
    #[arg(long, env = "LEADSCORE_KEY_MAX_ACTIVE_RUNS", default_value_t = KeyLimits::default().max_active_runs)]
    pub key_max_active_runs: u32,
}

impl KeyLimitArgs {
    fn limits(&self) -> KeyLimits {
        KeyLimits {
            rate_per_sec: self.key_rate_per_sec,
            burst: self.key_burst,
            max_uploads: self.key_max_uploads,
            max_active_runs: self.key_max_active_runs,
        }
    }
}

const fn secs(d: std::time::Duration) -> u64 {
    d.as_secs()
}

impl ServeArgs {
    /// The server's client bounds from the flags.
    fn server_limits(&self) -> ServerLimits {
        use std::time::Duration;
        ServerLimits {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout_secs),
            request_deadline: Duration::from_secs(self.request_deadline_secs),
            keep_alive_idle: Duration::from_secs(self.keep_alive_secs),
            max_connections: self.max_connections.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            drain_timeout: Duration::from_secs(self.drain_secs),
        }
    }
}

/// Opens the store, turning a malformed URL into one clear line (exit 2 via the caller).
pub(crate) fn open_store(db: &DbArgs) -> Result<Store> {
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

async fn serve(args: &ServeArgs) -> Result<()> {
    let store = open_store(&args.db)?;
    store.migrate().await.with_context(|| format!("opening {}", redact(&args.db.database_url)))?;
    let access = Access::decide(&store, args.listen, &args.public_hosts).await?;
    match access.auth() {
        Auth::Keys => tracing::info!("auth is on: requests need `Authorization: Bearer <API key>`"),
        Auth::Keyless => tracing::warn!(
            "KEYLESS: no API key exists, so requests without one act in the `default` workspace. Only this \
             machine can connect ({}), browsers only from localhost pages; creating a key \
             (`leadscore keys create`) makes keys required at once",
            args.listen
        ),
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let limits = UploadLimits {
        max_bytes: args.max_upload_bytes,
        max_rows: args.max_upload_rows,
        max_field_bytes: args.max_field_bytes,
        spool_dir: args.upload_spool_dir.clone().unwrap_or_else(std::env::temp_dir),
    };
    tracing::info!(
        database = %redact(&args.db.database_url),
        "leadscore is up: API at http://{0}/v1, docs at http://{0}/docs",
        listener.local_addr()?
    );
    let (settings, ai) = ai_from_env()?;
    let state = AppState {
        store: store.clone(),
        upload_limits: limits,
        ai: settings,
        key_limits: KeyLimiter::new(args.key_limits.limits()),
        access,
        compat: leadscore_api::compat::CompatConfig::new(
            args.public_url.as_deref(),
            args.compat_wait_max_leads,
        )
        .context("--public-url")?,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = WorkerConfig {
        concurrency: usize::from(args.concurrency),
        ai,
        job_retention: std::time::Duration::from_secs(args.job_retention_hours.saturating_mul(3600)),
        ..WorkerConfig::default()
    };
    let workers = tokio::spawn(leadscore_worker::run(store.clone(), config, stopped));
    leadscore_api::serve_with_limits(listener, state, args.server_limits(), shutdown_signal())
        .await
        .context("serving")?;
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
        base_url = %redact(&config.base_url),
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

/// Passwords hidden, for logs and errors (one function for every binary).
pub use leadscore_core::redact::redact;

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

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
