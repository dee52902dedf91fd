//! `leadscore-bench telemetry`: what the job spans cost the rules-only pipeline, the path where they weigh most
//! (a job takes tens of microseconds there; with the AI layer it waits hundreds of milliseconds on the model).
//!
//! Each round runs the same PostgreSQL pipeline as `pipeline`'s row C (one fresh `leadscore-worker` release
//! process working a run of N leads, timed from `create_run` to `completed`) once per variant, in turn:
//! - `off`: `RUST_LOG=warn`, so no span is recorded (the baseline);
//! - `spans`: `RUST_LOG=info` (the default), JSON log lines: every job's spans are recorded, none exported;
//! - `otlp`: as `spans`, with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an HTTP server in this process that
//!   reads each export and answers 404, so every span is encoded and sent;
//! - `unsampled`: as `otlp` with `LEADSCORE_TRACE_SAMPLE_RATIO=0`: spans recorded, none exported.
//!
//! The report gives each variant's median over the rounds and its ratio to `off` within each round, medianed.

use std::time::Duration;

use anyhow::Result;
use leadscore_fake_llm::{FakeConfig, FakeLlm};

use crate::llm::median;

#[derive(Debug, clap::Args)]
pub struct TelemetryArgs {
    #[command(flatten)]
    pub pg: crate::PgServer,
    /// Where the release `leadscore-worker` binary is.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: std::path::PathBuf,
    /// Leads of each run.
    #[arg(long, default_value_t = 50_000)]
    pub leads: u64,
    /// Rounds of every variant.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// `LEADSCORE_CONCURRENCY` of the worker.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

const VARIANTS: [&str; 4] = ["off", "spans", "otlp", "unsampled"];

pub async fn run(args: &TelemetryArgs) -> Result<()> {
    leadscore_llm::install_crypto();
    let sink = FakeLlm::new(FakeConfig::default()).spawn("127.0.0.1:0".parse()?).await?;
    let endpoint = format!("http://{sink}");
    let (url, name, store) = crate::upload::throwaway_database(&args.pg.database_url, "telemetry").await?;
    let measured = async {
        let (offer, upload) = crate::pipeline::pg_setup(&store, args.leads).await?;
        let mut rounds: Vec<[f64; 4]> = Vec::new();
        for r in 1..=args.rounds {
            let mut rates = [0.0; 4];
            for (i, variant) in VARIANTS.iter().enumerate() {
                let mut envs = vec![("LEADSCORE_LOG_FORMAT", "json")];
                envs.push(("RUST_LOG", if *variant == "off" { "warn" } else { "info,sqlx=warn" }));
                if *variant == "otlp" || *variant == "unsampled" {
                    envs.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()));
                }
                if *variant == "unsampled" {
                    envs.push(("LEADSCORE_TRACE_SAMPLE_RATIO", "0"));
                }
                let mut worker = crate::queue::worker_process(&args.bin_dir, args.concurrency, &url, &envs)?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let timed = crate::queue::timed_run(&store, &offer, &upload).await;
                let _ = worker.kill().await;
                let (secs, total) = timed?;
                rates[i] = total as f64 / secs;
                eprintln!("round {r}: {variant}: {:.0} leads/s", rates[i]);
            }
            rounds.push(rates);
        }
        report(args, &rounds);
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    crate::upload::psql(&args.pg.database_url, &format!("drop database {name} with (force)")).await?;
    measured
}

fn report(args: &TelemetryArgs, rounds: &[[f64; 4]]) {
    println!(
        "| rules-only pipeline on PostgreSQL, 1 `leadscore-worker` (concurrency {}), {} leads | median of {} rounds | / `off` (per round, medianed) | rounds |",
        args.concurrency,
        args.leads,
        rounds.len()
    );
    println!("|---|---|---|---|");
    for (i, variant) in VARIANTS.iter().enumerate() {
        let rates: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
        let ratio = median(rounds.iter().map(|r| r[i] / r[0]).collect());
        let each: Vec<String> = rates.iter().map(|v| format!("{v:.0}")).collect();
        println!(
            "| `{variant}` | {:.0} leads/s | {:.0}% | {} |",
            median(rates),
            ratio * 100.0,
            each.join(", ")
        );
    }
}
