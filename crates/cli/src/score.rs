//! `leadscore score`: a one-shot run through the embedded queue, the same pipeline as `leadscore serve`. The
//! CSV is stored as an upload (same reader and checks as `POST /v1/leads/upload`), a run is created for it, an
//! in-process worker pool scores it (rule layer, and the AI layer when a provider is configured) while the
//! progress bar follows the run's counts, and the results are written in the layout of `results.csv`.
//!
//! The database is a throwaway SQLite file unless `--database-url` names one to keep the run in.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use leadscore_core::csv::RejectedRow;
use leadscore_core::results_csv::{ResultsCsv, push_cell};
use leadscore_core::{Intent, Offer, RunStatus, ScoreBasis};
use leadscore_store::{
    ConnectOptions, DEFAULT_WORKSPACE as WS, IngestError, NewRun, Page, ResultFilter, ResultScope, RunRecord,
    Selection, Store, UploadLimits, UploadRecord, ingest,
};
use leadscore_worker::{Ai, WorkerConfig};
use tokio::sync::{mpsc, watch};

use crate::ScoreArgs;

/// Rejected rows listed on the terminal; the rest are counted (and all go to `--rejects`).
const LISTED_REJECTS: usize = 20;

/// Bytes per chunk handed from the reading thread to the upload pipeline.
const CHUNK: usize = 256 * 1024;

/// Results read back per page for the output file.
const EXPORT_PAGE: u32 = 1000;

pub fn run(args: &ScoreArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(score(args)) {
        Ok(summary) => {
            summary.print(args);
            if args.strict && summary.rejected_total > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS }
        }
        Err(Failure::Unusable(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A failure that makes the input unusable (exit 2) as opposed to one while working (exit 1).
enum Failure {
    Unusable(anyhow::Error),
    Failed(anyhow::Error),
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
    let offer_text = std::fs::read_to_string(&args.offer)
        .with_context(|| format!("cannot read the offer file {}", args.offer.display()))
        .map_err(unusable)?;
    let offer = Offer::from_json(&offer_text)
        .with_context(|| format!("the offer file {} is not a valid offer", args.offer.display()))
        .map_err(unusable)?;
    let (input, size) = open_input(&args.leads).map_err(unusable)?;
    let (ai_off_reason, ai) = if args.no_ai {
        (Some("--no-ai"), None)
    } else {
        match crate::serve::ai_from_env().map_err(unusable)? {
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

/// Stores the CSV as one upload through the store's ingest (as the API's upload routes do). Returns it with
/// the first rejected rows.
async fn upload(
    args: &ScoreArgs,
    store: &Store,
    input: Box<dyn Read + Send>,
    size: Option<u64>,
) -> Result<(UploadRecord, Vec<RejectedRow>), Failure> {
    let bar = bar(size, "reading {bar:40} {bytes}/{total_bytes} ({eta} left)");
    let chunks = read_chunks(input, bar.clone());
    let limits =
        UploadLimits { max_bytes: u64::MAX, max_rows: u64::MAX, max_field_bytes: args.max_field_bytes };
    let name = args.leads.file_name().and_then(|n| n.to_str()).filter(|_| args.leads.as_os_str() != "-");
    let ingested = ingest(store, WS, name, chunks, limits, 0).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let source = display(&args.leads);
    let ingested = ingested.map_err(|e| match e {
        // Keeping the leads failed, not the file: exit 1. Worded as when these were API internal errors.
        IngestError::Store(_) | IngestError::ReaderPanicked(_) => {
            Failure::Failed(anyhow!("storing the leads of {source}: internal error: {e}"))
        }
        // Listed one by one so that a new kind of failure has to be placed on one side or the other.
        IngestError::Interrupted(_)
        | IngestError::Unreadable(_)
        | IngestError::NotCsv { .. }
        | IngestError::TooManyBytes { .. }
        | IngestError::TooManyRows { .. }
        | IngestError::Header(_)
        | IngestError::Csv(_) => unusable(anyhow!("{source} cannot be read as leads: {e}")),
    })?;
    let mut listed = ingested.errors;
    listed.truncate(LISTED_REJECTS);
    Ok((ingested.upload, listed))
}

/// Reads `input` on a thread of its own (standard input blocks) and hands the chunks to the upload pipeline.
fn read_chunks(
    mut input: Box<dyn Read + Send>,
    bar: Option<ProgressBar>,
) -> impl futures_util::Stream<Item = Result<Bytes, io::Error>> + Send + Unpin {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    std::thread::spawn(move || {
        loop {
            let mut buf = vec![0; CHUNK];
            let chunk = match input.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if let Some(bar) = &bar {
                        bar.inc(n as u64);
                    }
                    Ok(Bytes::from(buf))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }))
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

/// Writes the run's results in lead (= input) order and counts them for the summary.
async fn write_results<W: Write>(
    store: &Store,
    run_id: &str,
    out: &mut ResultsCsv<W>,
    summary: &mut Summary,
) -> Result<(), Failure> {
    let scope = ResultScope::Run(run_id.to_owned());
    let mut pages =
        std::pin::pin!(store.result_pages(WS.to_owned(), scope, ResultFilter::default(), EXPORT_PAGE));
    while let Some(page) = pages.next().await {
        for r in &page.context("reading results")? {
            r.write_csv(out).context("writing results")?;
            summary.scored += 1;
            *summary.by_intent.entry(r.scoring.intent).or_default() += 1;
            *summary.by_basis.entry(r.scoring.score_basis.as_str()).or_default() += 1;
        }
    }
    Ok(())
}

/// Writes every rejected row of the upload to `path` (`line,column,message`).
async fn write_rejects(store: &Store, upload: &str, path: &Path) -> Result<(), Failure> {
    let mut out = RejectsCsv::create(path)?;
    let mut page = Page { limit: EXPORT_PAGE, after: None };
    loop {
        let chunk = store
            .list_upload_errors(WS, upload, &page)
            .await
            .context("reading rejected rows")?
            .context("the upload vanished")?;
        for e in &chunk.items {
            out.write(e.line, e.column.as_deref(), &e.message)?;
        }
        match chunk.next_cursor {
            Some(c) => page.after = Some(c),
            None => break,
        }
    }
    out.finish()?;
    Ok(())
}

fn display(path: &Path) -> String {
    if path.as_os_str() == "-" { "standard input".to_owned() } else { path.display().to_string() }
}

fn open_input(path: &Path) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
    if path.as_os_str() == "-" {
        return Ok((Box::new(io::stdin()), None));
    }
    let file = File::open(path).with_context(|| format!("cannot open the leads file {}", path.display()))?;
    let size = file.metadata().ok().map(|m| m.len());
    Ok((Box::new(file), size))
}

/// Results go to `<output>.partial` first and are renamed at the end, so a failed run never leaves a
/// truncated file that looks finished.
fn open_output(path: Option<&Path>) -> Result<(Box<dyn Write + Send>, Option<PathBuf>)> {
    match path {
        None => Ok((Box::new(BufWriter::with_capacity(256 * 1024, io::stdout())), None)),
        Some(path) => {
            let mut partial = path.as_os_str().to_owned();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let file =
                File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
            Ok((Box::new(BufWriter::with_capacity(256 * 1024, file)), Some(partial)))
        }
    }
}

/// A progress bar on standard error when it is a terminal.
fn bar(len: Option<u64>, template: &str) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len?);
    let style = ProgressStyle::with_template(&format!("{{spinner}} {template}"))
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

struct RejectsCsv {
    out: BufWriter<File>,
    path: PathBuf,
}

impl RejectsCsv {
    fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::new(file);
        out.write_all(b"line,column,message\r\n")?;
        Ok(RejectsCsv { out, path: path.to_owned() })
    }

    fn write(&mut self, line_no: i64, column: Option<&str>, message: &str) -> Result<()> {
        let mut line = line_no.to_string();
        line.push(',');
        push_cell(&mut line, column.unwrap_or(""));
        line.push(',');
        push_cell(&mut line, message);
        line.push_str("\r\n");
        self.out.write_all(line.as_bytes()).with_context(|| format!("writing {}", self.path.display()))
    }

    fn finish(mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("writing {}", self.path.display()))
    }
}

impl Summary {
    fn print(&self, args: &ScoreArgs) {
        let target =
            self.output.as_ref().map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
        let rate = if self.seconds > 0.0 { self.scored as f64 / self.seconds } else { 0.0 };
        eprintln!(
            "Scored {} leads from {} in {:.2} s ({:.0} leads/s) -> {target}",
            self.scored, self.source, self.seconds, rate
        );
        let intents: Vec<String> = Intent::ALL
            .iter()
            .map(|i| format!("{} {}", i.as_str(), self.by_intent.get(i).unwrap_or(&0)))
            .collect();
        eprintln!("  intent:      {}", intents.join(" | "));
        let bases: Vec<String> = ScoreBasis::ALL
            .iter()
            .map(|b| format!("{} {}", b.as_str(), self.by_basis.get(b.as_str()).unwrap_or(&0)))
            .collect();
        eprintln!("  score_basis: {}", bases.join(" | "));
        if self.by_basis.contains_key(ScoreBasis::RulesOnly.as_str()) {
            match self.ai_off_reason {
                Some(why) => eprintln!("               rules_only: AI off ({why}); score = 2 x rule score"),
                None => eprintln!(
                    "               rules_only: the AI layer failed for these leads (see ai_status and ai_reasoning)"
                ),
            }
        }
        if self.failed > 0 {
            eprintln!("  failed:      {} leads have no result (see the run's jobs)", self.failed);
        }
        eprintln!("  rejected:    {} rows", self.rejected_total);
        if let Some(url) = &self.kept_in {
            eprintln!("  stored in:   {} (upload, run and results)", crate::serve::redact(url));
        }
        for r in &self.rejected {
            let column = r.column.as_ref().map(|c| format!(" [{c}]")).unwrap_or_default();
            eprintln!("    line {}{column}: {}", r.line, r.message);
        }
        let unlisted = self.rejected_total.saturating_sub(self.rejected.len() as u64);
        if unlisted > 0 {
            match &args.rejects {
                Some(p) => eprintln!("    ... and {unlisted} more (all in {})", p.display()),
                None => eprintln!("    ... and {unlisted} more (--rejects FILE writes them all)"),
            }
        }
    }
}
