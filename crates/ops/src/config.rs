//! The typed configuration of the three long-running binaries: every option has a flag and an environment
//! variable, `--help` lists them with their defaults, and it is read once, at start.
//!
//! Groups ([`DbArgs`], [`LlmArgs`], [`HttpArgs`], [`WorkerArgs`], [`TelemetryArgs`]) are shared; [`ApiCli`],
//! [`WorkerCli`] and [`ServeArgs`] put them together per binary. The libraries turn a group into their own
//! settings (`leadscore_api::server_limits`, `WorkerConfig::from_args`, ...); nothing below this module reads the
//! environment. The README's configuration table is checked against these definitions by a test.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser};
use leadscore_llm::{ConfigError, LlmConfig};
use leadscore_store::{ConnectOptions, UploadLimits};

/// Where the database is and how many connections this process may hold.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Database URL: `sqlite://FILE` (embedded) or `postgres://USER:PASSWORD@HOST/DB` (cluster).
    // The value may hold a password: neither `--help` nor an error prints it.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Most database connections this process holds (size it against PostgreSQL's `max_connections`:
    /// docs/operations.md).
    #[arg(long, env = "LEADSCORE_DB_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: u32,
    /// Apply pending migrations at start. Turn off where a separate `leadscore migrate` step (a Kubernetes Job,
    /// a compose service) owns them; the process then waits until the schema is at least the version it needs.
    #[arg(long, env = "LEADSCORE_MIGRATE", default_value_t = true, action = ArgAction::Set)]
    pub migrate: bool,
}

impl DbArgs {
    /// The pool settings; `generic_plans` is for worker processes (see [`ConnectOptions`]).
    pub fn connect_options(&self, generic_plans: bool) -> ConnectOptions {
        ConnectOptions {
            max_connections: self.db_max_connections,
            generic_plans,
            ..ConnectOptions::default()
        }
    }
}

/// The AI layer: an OpenAI-compatible provider, its budgets and prices, and the Redis that shares the rate
/// limiter, breaker and verdict cache between processes. Off while neither a key nor a base URL is set.
#[derive(Debug, Clone, Args)]
pub struct LlmArgs {
    /// The provider's API key, sent as `Authorization: Bearer`.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// Any OpenAI-compatible endpoint (`https://api.openai.com/v1` when only a key is set).
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,
    /// Model name.
    #[arg(long, env = "LEADSCORE_MODEL", default_value = leadscore_llm::DEFAULT_MODEL)]
    pub model: String,
    /// `chat`, `reasoning` (no temperature, `max_completion_tokens`) or `auto` (guessed from the model name and
    /// corrected by the provider's 400).
    #[arg(long, env = "LEADSCORE_MODEL_KIND", default_value = "auto", value_parser = ["auto", "chat", "reasoning"])]
    pub model_kind: String,
    /// Requests per minute for all workers together.
    #[arg(long, env = "LEADSCORE_RPM", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub rpm: u32,
    /// Tokens per minute for all workers together.
    #[arg(long, env = "LEADSCORE_TPM", default_value_t = 200_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub tpm: u32,
    /// Seconds one HTTP request to the provider may take.
    #[arg(long, env = "LEADSCORE_REQUEST_TIMEOUT_SECS", default_value_t = 30.0, value_parser = positive_f64)]
    pub request_timeout_secs: f64,
    /// Requests per job attempt at most (transient failures are retried within the attempt).
    #[arg(long, env = "LEADSCORE_LLM_MAX_TRIES", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub llm_max_tries: u32,
    /// Seconds all tries of one job attempt may take, waits included.
    #[arg(long, env = "LEADSCORE_LLM_DEADLINE_SECS", default_value_t = 120.0, value_parser = positive_f64)]
    pub llm_deadline_secs: f64,
    /// USD per million input tokens, for `cost_usd` (default: the list price of known OpenAI models, else 0).
    #[arg(long, env = "LEADSCORE_PRICE_INPUT_PER_MTOK", value_parser = non_negative_f64)]
    pub price_input_per_mtok: Option<f64>,
    /// USD per million output tokens (default: as for input).
    #[arg(long, env = "LEADSCORE_PRICE_OUTPUT_PER_MTOK", value_parser = non_negative_f64)]
    pub price_output_per_mtok: Option<f64>,
    /// Seconds a verdict is reused for the same lead and offer.
    #[arg(long, env = "LEADSCORE_CACHE_TTL_SECS", default_value_t = 604_800.0, value_parser = positive_f64)]
    pub cache_ttl_secs: f64,
    /// `redis://...`: the rate limiter, circuit breaker and verdict cache shared by every process (cluster
    /// mode). Without it they are per process.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (deployments sharing one Redis but not one provider account differ here).
    #[arg(long, env = "LEADSCORE_REDIS_PREFIX", default_value = leadscore_llm::REDIS_PREFIX)]
    pub redis_prefix: String,
}

impl LlmArgs {
    /// The AI layer's configuration, `None` when no provider is configured. The llm crate normalises and
    /// checks it (one set of rules for every binary); an error names the variable.
    pub fn config(&self) -> Result<Option<LlmConfig>, ConfigError> {
        let set = |v: &Option<String>| v.as_ref().filter(|s| !s.trim().is_empty()).cloned();
        LlmConfig::from_lookup(|var| match var {
            "OPENAI_API_KEY" => set(&self.openai_api_key),
            "OPENAI_BASE_URL" => set(&self.openai_base_url),
            "LEADSCORE_MODEL" => Some(self.model.clone()),
            "LEADSCORE_MODEL_KIND" => Some(self.model_kind.clone()),
            "LEADSCORE_RPM" => Some(self.rpm.to_string()),
            "LEADSCORE_TPM" => Some(self.tpm.to_string()),
            "LEADSCORE_REQUEST_TIMEOUT_SECS" => Some(self.request_timeout_secs.to_string()),
            "LEADSCORE_LLM_MAX_TRIES" => Some(self.llm_max_tries.to_string()),
            "LEADSCORE_LLM_DEADLINE_SECS" => Some(self.llm_deadline_secs.to_string()),
            "LEADSCORE_PRICE_INPUT_PER_MTOK" => self.price_input_per_mtok.map(|p| p.to_string()),
            "LEADSCORE_PRICE_OUTPUT_PER_MTOK" => self.price_output_per_mtok.map(|p| p.to_string()),
            "LEADSCORE_CACHE_TTL_SECS" => Some(self.cache_ttl_secs.to_string()),
            "REDIS_URL" => set(&self.redis_url),
            "LEADSCORE_REDIS_PREFIX" => Some(self.redis_prefix.clone()),
            _ => None,
        })
    }
}

/// The public HTTP API: where it listens, what it accepts and how long it waits on clients.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address the API listens on. Without an API key only a loopback address is allowed (keyless mode).
    #[arg(long, env = "LEADSCORE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Names (`host` or `host:port`, comma-separated) browsers may reach the API by besides localhost,
    /// 127.0.0.1 and [::1]; with keys, setting this also makes other `Host` headers refused.
    #[arg(long = "public-host", env = "LEADSCORE_PUBLIC_HOSTS", value_delimiter = ',')]
    pub public_hosts: Vec<String>,
    /// Public base URL (e.g. `https://leads.example.com`) for the absolute `next` / `previous` links of the
    /// seed-compatible routes; without it those links are relative.
    #[arg(long, env = "LEADSCORE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest accepted upload, in bytes.
    #[arg(long, env = "LEADSCORE_MAX_UPLOAD_BYTES", default_value_t = UploadLimits::default().max_bytes)]
    pub max_upload_bytes: u64,
    /// Most data rows accepted in one upload.
    #[arg(long, env = "LEADSCORE_MAX_UPLOAD_ROWS", default_value_t = UploadLimits::default().max_rows)]
    pub max_upload_rows: u64,
    /// Longest accepted CSV field, in bytes; a longer one rejects its row.
    #[arg(long, env = "LEADSCORE_MAX_FIELD_BYTES", default_value_t = UploadLimits::default().max_field_bytes)]
    pub max_field_bytes: usize,
    /// Directory upload bodies are received into before anything is stored (each file at most
    /// --max-upload-bytes, deleted at once); default: the system's temporary directory.
    #[arg(long, env = "LEADSCORE_UPLOAD_SPOOL_DIR")]
    pub upload_spool_dir: Option<PathBuf>,
    /// Seconds a client has to send a complete request head (from connecting, or from the previous response).
    #[arg(long, env = "LEADSCORE_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_secs: u64,
    /// Seconds a request body may send nothing before the request fails (408); per chunk, not per body. A
    /// client that reads nothing of a response for as long is disconnected.
    #[arg(long, env = "LEADSCORE_BODY_IDLE_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_idle_timeout_secs: u64,
    /// Seconds a non-streaming request may take in all (503 past it); event streams, CSV exports and uploads
    /// are exempt.
    #[arg(long, env = "LEADSCORE_REQUEST_DEADLINE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_deadline_secs: u64,
    /// Seconds an idle keep-alive connection is kept after a response (at most the header timeout).
    #[arg(long, env = "LEADSCORE_KEEP_ALIVE_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_alive_secs: u64,
    /// Most open connections; when full, those that have not sent a request are closed first. Default:
    /// derived from the open-file limit (`ulimit -n`), with headroom for the database and files.
    #[arg(long, env = "LEADSCORE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Requests per second each API key may send, sustained (without keys: all requests together; 0: off).
    #[arg(long, env = "LEADSCORE_KEY_RATE_PER_SEC", default_value_t = 50)]
    pub key_rate_per_sec: u32,
    /// Requests each API key may send at once above that rate.
    #[arg(long, env = "LEADSCORE_KEY_BURST", default_value_t = 100)]
    pub key_burst: u32,
    /// Uploads each API key may have in progress at once (0: no limit).
    #[arg(long, env = "LEADSCORE_KEY_MAX_UPLOADS", default_value_t = 4)]
    pub key_max_uploads: u32,
    /// Unfinished (queued, running, paused, blocked) runs a workspace may have; creating another is refused
    /// (0: no limit).
    #[arg(long, env = "LEADSCORE_KEY_MAX_ACTIVE_RUNS", default_value_t = 32)]
    pub key_max_active_runs: u32,
    /// Most unscored leads `POST /api/leads/score/` (seed-compatible) scores while the client waits.
    #[arg(long, env = "LEADSCORE_COMPAT_WAIT_MAX_LEADS", default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
    pub compat_wait_max_leads: i64,
}

impl HttpArgs {
    /// The upload bounds.
    pub fn upload_limits(&self) -> UploadLimits {
        UploadLimits {
            max_bytes: self.max_upload_bytes,
            max_rows: self.max_upload_rows,
            max_field_bytes: self.max_field_bytes,
            spool_dir: self.upload_spool_dir.clone().unwrap_or_else(std::env::temp_dir),
        }
    }
}

/// The worker pool.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Jobs scored at once by this process.
    #[arg(long, env = "LEADSCORE_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Seconds a claimed job's lease lasts without renewal; a crashed worker's jobs return after it.
    #[arg(long, env = "LEADSCORE_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_secs: u64,
    /// Hours the succeeded and cancelled jobs of a finished run are kept (its counts and results stay).
    #[arg(long, env = "LEADSCORE_JOB_RETENTION_HOURS", default_value_t = 168)]
    pub job_retention_hours: u64,
}

/// Shutdown.
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// Seconds in-flight requests, open streams and running jobs get to finish after SIGTERM (keep the
    /// orchestrator's grace period above it); unfinished jobs are given back to the queue.
    #[arg(long, env = "LEADSCORE_DRAIN_SECS", default_value_t = 20)]
    pub drain_secs: u64,
}

impl DrainArgs {
    pub fn drain(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.drain_secs)
    }
}

/// How a process reports on itself: logs, traces and the operations listener (`/metrics`, `/healthz`,
/// `/readyz`).
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Address of the operations listener: `/metrics` (Prometheus), `/healthz`, `/readyz`. Keep it off the
    /// public network: the metrics cover every workspace.
    #[arg(long, env = "LEADSCORE_OPS_LISTEN", default_value = "0.0.0.0:9464")]
    pub ops_listen: SocketAddr,
    /// `json`, `text`, or `auto`: JSON lines when standard error is not a terminal.
    #[arg(long, env = "LEADSCORE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Which log lines to write (`tracing` filter syntax); exported spans do not depend on it.
    #[arg(long, env = "RUST_LOG", default_value = "info,sqlx=warn", value_parser = log_filter)]
    pub log_filter: String,
    /// OTLP/HTTP endpoint spans are exported to (e.g. `http://otel-collector:4318`); no export without it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", hide_env_values = true, value_parser = otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of exported spans (default: the binary's name).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,
    /// Share of traces exported, 0 to 1, decided by the trace id: a run created through the API is traced whole
    /// or not at all; a caller's `traceparent` joins its trace, but its sampled flag is not obeyed.
    #[arg(long, env = "LEADSCORE_TRACE_SAMPLE_RATIO", default_value_t = 1.0, value_parser = ratio)]
    pub trace_sample_ratio: f64,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

/// `leadscore-api`: the HTTP API alone (cluster mode); workers run as `leadscore-worker`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "leadscore-api",
    version,
    about = "leadscore's HTTP API (cluster mode; scale workers separately)."
)]
pub struct ApiCli {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    /// An API key the operator chose (at least 32 characters), stored hashed at start so that a new
    /// deployment has a key without a manual step. Never logged; revoking it (`leadscore keys revoke`) is
    /// final: a restart does not bring it back.
    #[arg(long, env = "LEADSCORE_BOOTSTRAP_KEY", hide_env_values = true, value_parser = bootstrap_key)]
    pub bootstrap_key: Option<String>,
    #[command(flatten)]
    pub llm: LlmArgs,
    #[command(flatten)]
    pub drain: DrainArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// `leadscore-worker`: a worker pool process (cluster mode). Scale by running more of them.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "leadscore-worker",
    version,
    about = "leadscore's worker pool (cluster mode): claims jobs, scores leads, writes results."
)]
#[command(mut_arg("db_max_connections", |a| a.default_value("8")))]
pub struct WorkerCli {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    #[command(flatten)]
    pub drain: DrainArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// `leadscore serve`: API and worker pool in one process, by default on a SQLite file on loopback.
#[derive(Debug, Clone, Args)]
#[command(mut_arg("database_url", |a| a.default_value("sqlite://leadscore.db")))]
#[command(mut_arg("listen", |a| a.default_value("127.0.0.1:8080")))]
#[command(mut_arg("ops_listen", |a| a.default_value("127.0.0.1:9464")))]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    #[command(flatten)]
    pub drain: DrainArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err("must be a number above 0".to_owned()),
    }
}

fn non_negative_f64(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err("must be a number, 0 or more".to_owned()),
    }
}

/// Shortest accepted bootstrap key: keys are stored as a plain SHA-256, which is sound only for high-entropy
/// secrets.
pub const BOOTSTRAP_KEY_MIN_CHARS: usize = 32;

fn bootstrap_key(s: &str) -> Result<String, String> {
    let key = s.trim();
    if key.chars().count() < BOOTSTRAP_KEY_MIN_CHARS
        || key.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "must be at least {BOOTSTRAP_KEY_MIN_CHARS} characters without spaces (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(key.to_owned())
}

fn ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("expected a number from 0 to 1".into()),
    }
}

fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s).map(|_| s.to_owned()).map_err(|e| e.to_string())
}

fn otlp_endpoint(s: &str) -> Result<String, String> {
    crate::telemetry::traces_url(s).map(|_| s.trim().to_owned()).map_err(|e| e.reason().to_owned())
}

/// Parses the command line and environment of binary `C`. A usage error, `--help` or `--version` exits here;
/// a malformed value exits 2 with one line naming the flag and its variable and never printing a value whose
/// variable is secret.
pub fn parse<C: Parser>() -> C {
    match C::try_parse() {
        Ok(c) => c,
        Err(e) => exit_with(&C::command(), e),
    }
}

/// Like [`parse`], for a subcommand's arguments already parsed by the caller's clap error.
pub fn exit_with(command: &clap::Command, e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::MissingRequiredArgument
        && let Some(ContextValue::Strings(missing)) = e.get(ContextKind::InvalidArg)
    {
        let names: Vec<String> =
            missing.iter().map(|m| named(command, m.split_whitespace().next().unwrap_or(m))).collect();
        eprintln!("error: {} must be set", names.join(", "));
        std::process::exit(2)
    }
    if !matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        e.exit();
    }
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.split_whitespace().next().unwrap_or_default().to_owned(),
        _ => String::new(),
    };
    let arg = find_arg(command, flag.trim_start_matches("--"));
    let name = named(command, &flag);
    let secret = arg.is_some_and(clap::Arg::is_hide_env_values_set);
    let why = e.source().map(ToString::to_string).unwrap_or_default();
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) if !secret => format!(" {v:?}"),
        _ => String::new(),
    };
    let why = if why.is_empty() { "not a valid value".to_owned() } else { why };
    eprintln!("error: {name}: invalid value{value}: {why}");
    std::process::exit(2)
}

/// `VARIABLE (--flag)`, or the flag alone when it has no variable.
fn named(command: &clap::Command, flag: &str) -> String {
    match find_arg(command, flag.trim_start_matches("--")).and_then(|a| a.get_env()) {
        Some(var) => format!("{} ({flag})", var.to_string_lossy()),
        None => flag.to_owned(),
    }
}

/// The argument with this long name, in `command` or any of its subcommands.
fn find_arg<'a>(command: &'a clap::Command, long: &str) -> Option<&'a clap::Arg> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .or_else(|| command.get_subcommands().find_map(|s| find_arg(s, long)))
}

use std::error::Error as _;

#[cfg(test)]
mod tests;

/// Variables whose values are secrets: hidden from `--help` and from error messages.
pub const SECRET_VARIABLES: [&str; 5] =
    ["DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "LEADSCORE_BOOTSTRAP_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// The command `leadscore serve` parses its arguments with.
pub fn serve_command() -> clap::Command {
    <ServeArgs as Args>::augment_args(clap::Command::new("leadscore serve"))
}

/// Each long-running binary's command, for documentation and checks.
pub fn commands() -> Vec<(&'static str, clap::Command)> {
    use clap::CommandFactory;
    // The cluster binaries first: their options keep the order of the definitions.
    vec![("api", ApiCli::command()), ("worker", WorkerCli::command()), ("serve", serve_command())]
}

pub mod table;
