//! `leadscore-bench`: generates realistic lead files and measures leadscore against baselines run on the same
//! machine in the same run (results go to BENCHMARKS.md). Never a timed test: run by hand or in a bench job.

mod connections;
mod embedded;
mod generate;
mod injection;
mod llm;
mod pipeline;
mod profile;
mod queue;
mod reads;
mod telemetry;
mod upload;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "leadscore-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a leads CSV of realistic shape (deterministic for a seed).
    Gen(generate::GenArgs),
    /// The injection screen: false positives on ordinary bios, detection per class, throughput vs the phrase list.
    Injection(injection::InjectionArgs),
    /// Upload a CSV through the API (a `leadscore serve` child) and compare with `psql \copy` / `sqlite3 .import`.
    Upload(upload::UploadArgs),
    /// The AI layer against the fake LLM server: throughput at 200 ms, cache hits, shared rate limit, tokens.
    Llm(llm::LlmArgs),
    /// The queue on PostgreSQL: throughput vs a no-op SKIP LOCKED loop, 1M-run creation, pollers, fairness, crash.
    Queue(queue::QueueArgs),
    /// The rules-only pipeline (PostgreSQL workers, SQLite serve) against the database-only pgbench cycle and the
    /// no-op loop, in alternating rounds; then the `Prefer: wait` latency.
    Pipeline(pipeline::PipelineArgs),
    /// Where a `leadscore score --no-ai` run spends its time: per phase (wall, CPU by thread kind, write-lock
    /// waits) and per statement, in this process on a throwaway SQLite file.
    Profile(profile::ProfileArgs),
    /// Hostile connections: idle and slow-header clients against a `leadscore serve` under a descriptor limit;
    /// `/healthz` and `GET /v1/runs` latency with and without them.
    Connections(connections::ConnectionsArgs),
    /// Reading current results: `/v1/results.csv`, `/v1/results` pages and `/api/leads/export_csv/` over leads
    /// scored several times, against one page of the query shape before issue 13.
    Reads(reads::ReadsArgs),
    /// What the job spans cost: the rules-only pipeline with spans off, recorded, and exported over OTLP.
    Telemetry(telemetry::TelemetryArgs),
    /// The embedded (SQLite) pipeline from outside, with the release binary: `leadscore score` against
    /// `sqlite3 .import`, `leadscore serve` through HTTP (with pollers and SSE), and a run from the verdict cache.
    Embedded(embedded::EmbeddedArgs),
}

/// The PostgreSQL server a bench creates its throwaway databases on.
#[derive(Debug, clap::Args)]
pub struct PgServer {
    /// Connection URL of a database on that server (the throwaway ones are created beside it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test",
        hide_env_values = true
    )]
    pub database_url: String,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Gen(args) => generate::run(&args),
        Command::Injection(args) => injection::run(&args),
        Command::Upload(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(upload::run(&args))
        }
        Command::Llm(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(llm::run(&args))
        }
        Command::Queue(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(queue::run(&args))
        }
        Command::Pipeline(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(pipeline::run(&args))
        }
        Command::Profile(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(profile::run(&args))
        }
        Command::Connections(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(connections::run(&args)),
        Command::Reads(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(reads::run(&args))
        }
        Command::Telemetry(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(telemetry::run(&args))
        }
        Command::Embedded(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(embedded::run(&args))
        }
    }
}
