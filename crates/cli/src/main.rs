//! The `leadscore` command.

mod healthcheck;
mod keys;
mod score;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "leadscore", version, about = "Score B2B sales leads for buying intent: rules + AI.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API and a worker pool in one process, on an embedded SQLite file (or any DATABASE_URL).
    Serve(Box<leadscore_ops::config::ServeArgs>),
    /// Score a leads CSV against an offer and write the results CSV (one-shot, no server).
    Score(Box<ScoreArgs>),
    /// Apply database migrations (serve does this at start too).
    Migrate(serve::DbArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Exit 0 when a leadscore process answers ready, 1 otherwise (for container health checks).
    Healthcheck(healthcheck::HealthcheckArgs),
}

#[derive(Debug, clap::Args)]
struct ScoreArgs {
    /// The leads CSV (`name,role,company,industry,location,linkedin_bio`, or a CRM export) or an Excel workbook
    /// (`.xlsx`); `-` reads standard input.
    leads: PathBuf,
    /// The offer JSON: `{"name": ..., "value_props": [...], "ideal_use_cases": [...]}` (not needed with
    /// `--dry-run`).
    #[arg(long, required_unless_present = "dry_run")]
    offer: Option<PathBuf>,
    /// Where to write the results CSV; standard output when omitted.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Score with the rule layer only (every result is `rules_only`).
    #[arg(long)]
    no_ai: bool,
    /// Exit 2 when any row was rejected.
    #[arg(long)]
    strict: bool,
    /// Also write every rejected row (`line,column,message`) to this CSV file.
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Longest accepted field, in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    max_field_bytes: usize,
    /// The file's text encoding (`windows-1252`, `utf-16le`, `shift_jis`, ...); found from the file when omitted
    /// (UTF-8, UTF-16 with a byte order mark, or windows-1252).
    #[arg(long, value_parser = encoding)]
    encoding: Option<&'static leadscore_core::csv::encoding::Encoding>,
    /// For an Excel workbook (`.xlsx`): the sheet to read (default: the first).
    #[arg(long)]
    sheet: Option<String>,
    /// Which columns feed which fields, as JSON: `{"name": ["First Name", "Last Name"], "role": "Job Title"}`;
    /// the fields it does not name are found from the headers.
    #[arg(long = "map", value_name = "JSON", value_parser = mapping)]
    mapping: Option<leadscore_core::csv::Mapping>,
    /// Read the file and print how it would be read (encoding, delimiter, the columns of each field, counts,
    /// the first leads and the rejected rows), then stop: nothing is stored or scored.
    #[arg(long)]
    dry_run: bool,
    /// Keep the upload, run and results in this database (`sqlite://FILE` or `postgres://...`, e.g. the one
    /// `leadscore serve` uses) instead of a throwaway SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Leads scored at once (the worker pool's concurrency).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    #[command(flatten)]
    llm: leadscore_ops::config::LlmArgs,
}

fn mapping(json: &str) -> Result<leadscore_core::csv::Mapping, String> {
    leadscore_core::csv::Mapping::parse(json).map_err(|e| e.to_string())
}

fn encoding(label: &str) -> Result<&'static leadscore_core::csv::encoding::Encoding, String> {
    leadscore_core::csv::encoding::encoding_for_label(label).map_err(|e| e.to_string())
}

/// Exit codes: 0 scored, 1 failed while working, 2 the input cannot be used (or `--strict` and a row was
/// rejected). Clap's own usage errors also exit 2.
fn main() -> ExitCode {
    let cli: Cli = leadscore_ops::config::parse();
    match cli.command {
        Command::Serve(args) => serve::run_serve(*args),
        Command::Score(args) => score::run(&args),
        Command::Migrate(db) => serve::run_migrate(&db),
        Command::Keys(cmd) => keys::run(&cmd),
        Command::Healthcheck(args) => healthcheck::run(&args),
    }
}
