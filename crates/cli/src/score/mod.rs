//! `leadscore score`: a one-shot run through the embedded queue, the same pipeline as `leadscore serve`. The
//! CSV is stored as an upload (same reader and checks as `POST /v1/leads/upload`), a run is created for it, an
//! in-process worker pool scores it (rule layer, and the AI layer when a provider is configured) while the
//! progress bar follows the run's counts, and the results are written in the layout of `results.csv`.
//!
//! The database is a throwaway SQLite file unless `--database-url` names one to keep the run in.
//!
//! This module holds the command's flow (offer, database, upload, run, results) and the worker pool it drives;
//! getting the leads in is in [`input`], writing results, rejected rows and the summary in [`output`].

mod input;
mod output;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use indicatif::ProgressBar;
use leadscore_core::csv::RejectedRow;
use leadscore_core::results_csv::ResultsCsv;
use leadscore_core::{Intent, Offer, RunStatus};
use leadscore_store::{ConnectOptions, DEFAULT_WORKSPACE as WS, NewRun, RunRecord, Selection, Store};
use leadscore_worker::{Ai, WorkerConfig};
use tokio::sync::watch;

use crate::ScoreArgs;

use self::input::{bar, display, open_input, upload};
use self::output::{open_output, write_rejects, write_results};

pub fn run(args: &ScoreArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if args.dry_run {
        return runtime.block_on(input::dry_run(args)).map_or_else(Failure::exit, |()| ExitCode::SUCCESS);
    }
    match runtime.block_on(score(args)) {
        Ok(summary) => {
            summary.print(args);
            if args.strict && summary.rejected_total > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS }
        }
        Err(failure) => failure.exit(),
    }
}

/// A failure that makes the input unusable (exit 2) as opposed to one while working (exit 1).
enum Failure {
    Unusable(anyhow::Error),
    Failed(anyhow::Error),
}

impl Failure {
    /// Says why on standard error; exits 2 for unusable input, 1 for a failure while working.
    fn exit(self) -> ExitCode {
        let (e, code) = match self {
            Failure::Unusable(e) => (e, 2),
            Failure::Failed(e) => (e, 1),
        };
        eprintln!("error: {e:#}");
        ExitCode::from(code)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Failed(e)
    }
}

fn unusable(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Unusable(e.into())
}

#[derive(Default)]
struct Summary {
    source: String,
    output: Option<PathBuf>,
    scored: u64,
    failed: i64,
    by_intent: BTreeMap<Intent, u64>,
    by_basis: BTreeMap<&'static str, u64>,
    rejected: Vec<RejectedRow>,
    rejected_total: u64,
    seconds: f64,
    ai_off_reason: Option<&'static str>,
    kept_in: Option<String>,
}

async fn score(args: &ScoreArgs) -> Result<Summary, Failure> {
    let started = Instant::now();
    let offer_path = args.offer.as_deref().context("--offer is required").map_err(unusable)?;
    let offer_text = std::fs::read_to_string(offer_path)
        .with_context(|| format!("cannot read the offer file {}", offer_path.display()))
        .map_err(unusable)?;
    let offer = Offer::from_json(&offer_text)
        .with_context(|| format!("the offer file {} is not a valid offer", offer_path.display()))
        .map_err(unusable)?;
    let (input, size) = open_input(&args.leads).map_err(unusable)?;
    let (ai_off_reason, ai) = if args.no_ai {
        (Some("--no-ai"), None)
    } else {
        match crate::serve::ai_from_args(&args.llm).map_err(unusable)? {
            (_, Some(ai)) => (None, Some(ai)),
            (_, None) => (Some("neither OPENAI_API_KEY nor OPENAI_BASE_URL is set"), None),
        }
    };
    let db = Database::open(args.database_url.as_deref()).await?;
    let outcome = score_in(args, &db.store, input, size, offer, ai).await;
    db.close().await;
    let mut summary = outcome?;
    summary.ai_off_reason = ai_off_reason;
    summary.kept_in = args.database_url.clone();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn score_in(
    args: &ScoreArgs,
    store: &Store,
    input: Box<dyn Read + Send>,
    size: Option<u64>,
    offer: Offer,
    ai: Option<Arc<Ai>>,
) -> Result<Summary, Failure> {
    let (upload, listed) = upload(args, store, input, size).await?;
    let (out, partial) = open_output(args.output.as_deref())?;
    let mut summary = Summary {
        source: display(&args.leads),
        output: args.output.clone(),
        rejected: listed,
        rejected_total: upload.rows_rejected as u64,
        ..Summary::default()
    };
    if let Some(path) = &args.rejects {
        write_rejects(store, &upload.id, path).await?;
    }
    let mut results =
        ResultsCsv::new(out, upload.extra_columns.clone()).context("writing the results header")?;
    if upload.rows_accepted > 0 {
        let offer = store.create_offer(WS, &offer).await.context("storing the offer")?;
        let selection = Selection::Upload(upload.id.clone());
        let config = ai.as_ref().map(|ai| ai.config().clone());
        let estimate = config.map(|config| {
            move |offer: &Offer, leads: i64| leadscore_llm::estimated_cost(&config, offer, leads)
        });
        let new = NewRun {
            estimate: estimate.as_ref().map(|e| e as leadscore_store::Estimate<'_>),
            ..NewRun::new(WS, &offer.id, &selection)
        };
        let run = store.create_run(&new).await.context("creating the run")?.run;
        work_off(store, &run, args.concurrency, ai).await?;
        summary.failed = store.run_tallies(&run.id).await.context("reading the run's counts")?.jobs.failed;
        write_results(store, &run.id, &mut results, &mut summary).await?;
    }
    results.flush().context("writing results")?;
    drop(results);
    if let (Some(partial), Some(path)) = (partial, &args.output) {
        std::fs::rename(&partial, path)
            .with_context(|| format!("moving the results to {}", path.display()))?;
    }
    Ok(summary)
}

/// The store the run goes to: the one named, or a throwaway SQLite file removed afterwards.
struct Database {
    store: Store,
    scratch: Option<PathBuf>,
}

impl Database {
    async fn open(url: Option<&str>) -> Result<Database, Failure> {
        let (url, scratch) = match url {
            Some(url) => (url.to_owned(), None),
            None => {
                let dir =
                    std::env::temp_dir().join(format!("leadscore-score-{}", uuid::Uuid::now_v7().simple()));
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                (format!("sqlite://{}", dir.join("leadscore.db").display()), Some(dir))
            }
        };
        let store = Store::open(&url, &ConnectOptions::default())
            .await
            .context("--database-url")
            .map_err(unusable)?;
        Ok(Database { store, scratch })
    }

    async fn close(self) {
        self.store.close().await;
        if let Some(dir) = self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs an in-process worker pool until the run is finished, with a progress bar on the run's counts.
async fn work_off(
    store: &Store,
    run: &RunRecord,
    concurrency: u16,
    ai: Option<Arc<Ai>>,
) -> Result<(), Failure> {
    let (stop, stopped) = watch::channel(false);
    let config = WorkerConfig { concurrency: usize::from(concurrency), ai, ..WorkerConfig::default() };
    let pool = tokio::spawn(leadscore_worker::run(store.clone(), config, stopped));
    let bar = bar(u64::try_from(run.total).ok(), "scoring {bar:40} {pos}/{len} leads ({eta} left)");
    let outcome = follow(store, run, bar.as_ref()).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let _ = stop.send(true);
    let _ = pool.await;
    outcome
}

/// Waits for the run to finish, moving the bar with its counts, woken by the run's progress events. A
/// blocked run (the provider refuses the key or the model) ends the command with the provider's message
/// instead of waiting for ever.
async fn follow(store: &Store, run: &RunRecord, bar: Option<&ProgressBar>) -> Result<(), Failure> {
    let mut watch = store.watch_run(WS, &run.id);
    loop {
        let current = watch.read().await.context("reading the run")?.context("the run vanished")?;
        let jobs = store.run_tallies(&run.id).await.context("reading the run's counts")?.jobs;
        if let Some(bar) = bar {
            bar.set_position(u64::try_from(jobs.succeeded + jobs.failed + jobs.cancelled).unwrap_or(0));
        }
        match current.status {
            RunStatus::Completed => return Ok(()),
            RunStatus::Blocked => {
                let why =
                    current.blocked_reason.unwrap_or_else(|| "the AI provider refused the requests".into());
                return Err(Failure::Failed(anyhow!("the AI provider blocks the run: {why}")));
            }
            _ => {}
        }
        watch.changed(None).await;
    }
}
