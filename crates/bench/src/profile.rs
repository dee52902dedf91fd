//! `leadscore-bench profile`: where a `leadscore score --no-ai` run spends its time, phase by phase, in this
//! process (issue 17). The phases are those of the command, called through the same library functions: the
//! upload (`ingest`), the run's creation (offer, `create_run`), the scoring (a worker pool from the run's creation
//! to `completed`) and the export (every result page written as `results.csv` rows to a sink).
//!
//! Per phase: wall time and CPU time by thread kind (the SQLite connection threads, the tokio workers, the
//! rest), read from `/proc/self/task`, so that "waiting" is what is neither; the SQLite write transactions' waits
//! for a connection and the write lock (the store's [`WRITE_LOCK`] trace event); and per statement, the time
//! SQLite spent running it (sqlx's statement log, which times each statement on its connection thread).
//!
//! Logging every statement costs time of its own, so the phase times here are a little slower than the
//! command's; `leadscore-bench embedded` measures the command itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use leadscore_core::Offer;
use leadscore_core::results_csv::ResultsCsv;
use leadscore_store::{
    ConnectOptions, DEFAULT_WORKSPACE as WS, IngestOptions, NewRun, ResultFilter, ResultScope, Selection,
    Store, UploadLimits, WRITE_LOCK,
};
use leadscore_worker::WorkerConfig;
use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};

#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// The leads CSV (`leadscore-bench gen`).
    #[arg(long)]
    pub leads: PathBuf,
    /// The offer JSON.
    #[arg(long, default_value = "examples/offer.json")]
    pub offer: PathBuf,
    /// The worker pool's concurrency (`leadscore score --concurrency`).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Statements listed per phase (the most expensive first).
    #[arg(long, default_value_t = 8)]
    pub top: usize,
}

pub async fn run(args: &ProfileArgs) -> Result<()> {
    let stats = Stats::default();
    let subscriber = tracing_subscriber::registry().with(Collector(stats.clone()));
    tracing::subscriber::set_global_default(subscriber).context("installing the statement collector")?;
    let offer = Offer::from_json(&std::fs::read_to_string(&args.offer)?).context("the offer")?;
    let dir = std::env::temp_dir().join(format!("ls_bench_profile_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("profile.db").display());
    let store = Store::open(&url, &ConnectOptions::default()).await?;
    let outcome = phases(args, &store, offer, &stats).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    let phases = outcome?;
    report(args, &phases);
    Ok(())
}

/// One phase's figures.
struct Phase {
    name: &'static str,
    wall: Duration,
    cpu: Cpu,
    statements: Vec<(String, Tally)>,
    lock_waits: Tally,
    rows: u64,
}

async fn phases(args: &ProfileArgs, store: &Store, offer: Offer, stats: &Stats) -> Result<Vec<Phase>> {
    let mut done = Vec::new();
    let t = Timer::start(stats);
    let file = tokio::fs::File::open(&args.leads).await?;
    let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    let limits = UploadLimits { max_bytes: u64::MAX, max_rows: u64::MAX, ..UploadLimits::default() };
    let name = args.leads.file_name().and_then(|n| n.to_str());
    let ingested = leadscore_store::ingest(store, WS, name, body, limits, IngestOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("upload: {e}"))?;
    let leads = ingested.upload.rows_accepted as u64;
    done.push(t.stop("upload", leads));

    let t = Timer::start(stats);
    let offer = store.create_offer(WS, &offer).await?;
    let selection = Selection::Upload(ingested.upload.id.clone());
    let run = store.create_run(&NewRun::new(WS, &offer.id, &selection)).await?.run;
    done.push(t.stop("job creation (offer, create_run)", leads));

    let t = Timer::start(stats);
    let (stop, stopped) = watch::channel(false);
    let config = WorkerConfig { concurrency: args.concurrency, ..WorkerConfig::default() };
    let pool = tokio::spawn(leadscore_worker::run(store.clone(), config, stopped));
    let mut watch = store.watch_run(WS, &run.id);
    loop {
        let current = watch.read().await?.context("the run vanished")?;
        if current.status == leadscore_core::RunStatus::Completed {
            break;
        }
        if current.finished_at.is_some() {
            bail!("the run finished as {:?}", current.status);
        }
        watch.changed(None).await;
    }
    done.push(t.stop("scoring (claim, score, write, complete)", leads));
    let _ = stop.send(true);
    let _ = pool.await;

    let t = Timer::start(stats);
    let mut out = ResultsCsv::new(std::io::sink(), ingested.upload.extra_columns.clone())?;
    let scope = ResultScope::Run(run.id.clone());
    let mut pages = std::pin::pin!(store.result_pages(WS.to_owned(), scope, ResultFilter::default(), 1000));
    let mut exported = 0;
    while let Some(page) = futures_util::StreamExt::next(&mut pages).await {
        for r in &page? {
            r.write_csv(&mut out)?;
            exported += 1;
        }
    }
    if exported != leads {
        bail!("exported {exported} of {leads} results");
    }
    done.push(t.stop("export (results.csv)", leads));
    Ok(done)
}

/// The start of a phase: the clock, the CPU counters and the statement tallies are reset.
struct Timer<'a> {
    stats: &'a Stats,
    started: Instant,
    cpu: Cpu,
}

impl<'a> Timer<'a> {
    fn start(stats: &'a Stats) -> Self {
        stats.take();
        Timer { stats, started: Instant::now(), cpu: Cpu::now() }
    }

    fn stop(self, name: &'static str, rows: u64) -> Phase {
        let wall = self.started.elapsed();
        let cpu = Cpu::now().minus(&self.cpu);
        let (statements, lock_waits) = self.stats.take();
        let mut statements: Vec<(String, Tally)> = statements.into_iter().collect();
        statements.sort_by(|a, b| b.1.secs.total_cmp(&a.1.secs));
        eprintln!("{name}: {:.2} s", wall.as_secs_f64());
        Phase { name, wall, cpu, statements, lock_waits, rows }
    }
}

/// CPU seconds of this process's threads, by kind.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    sqlite: f64,
    tokio: f64,
    other: f64,
}

impl Cpu {
    /// Sums `utime + stime` of every thread of this process. A thread that ended since the last reading is
    /// lost from it: the phases' threads (SQLite connections, tokio workers) live as long as the process.
    fn now() -> Cpu {
        let mut cpu = Cpu::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return cpu };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            let Some((name, secs)) = thread_cpu(&stat) else { continue };
            if name.starts_with("sqlx-sqlite") {
                cpu.sqlite += secs;
            } else if name.starts_with("tokio") {
                cpu.tokio += secs;
            } else {
                cpu.other += secs;
            }
        }
        cpu
    }

    fn minus(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            sqlite: self.sqlite - earlier.sqlite,
            tokio: self.tokio - earlier.tokio,
            other: self.other - earlier.other,
        }
    }

    fn total(&self) -> f64 {
        self.sqlite + self.tokio + self.other
    }
}

/// A thread's name and CPU seconds from its `stat` line (`pid (comm) state ... utime stime ...`; clock ticks of
/// 1/100 s, as on every Linux we run on).
fn thread_cpu(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / 100.0))
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    count: u64,
    secs: f64,
}

impl Tally {
    fn add(&mut self, secs: f64) {
        self.count += 1;
        self.secs += secs;
    }
}

/// Statement and lock-wait tallies since the last [`take`](Stats::take).
#[derive(Clone, Default)]
struct Stats(Arc<Mutex<(HashMap<String, Tally>, Tally)>>);

impl Stats {
    fn take(&self) -> (HashMap<String, Tally>, Tally) {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Collects sqlx's statement events (`sqlx::query`: the statement and `elapsed_secs`) and the store's lock waits.
struct Collector(Stats);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collector {
    fn register_callsite(&self, meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if meta.target() == "sqlx::query" || meta.target() == WRITE_LOCK {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut stats = self.0.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if event.metadata().target() == WRITE_LOCK {
            stats.1.add(fields.wait);
            return;
        }
        let statement = if fields.statement.trim().is_empty() { fields.summary } else { fields.statement };
        stats.0.entry(shorten(&statement)).or_default().add(fields.elapsed);
    }
}

#[derive(Default)]
struct Fields {
    summary: String,
    statement: String,
    elapsed: f64,
    wait: f64,
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        match field.name() {
            "elapsed_secs" => self.elapsed = value,
            "wait_secs" => self.wait = value,
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" {
            self.summary = format!("{value:?}").trim_matches('"').to_owned();
        }
    }
}

/// A statement's first words, whitespace folded: enough to tell the queue's statements apart in a table.
fn shorten(sql: &str) -> String {
    let folded: Vec<&str> = sql.split_whitespace().collect();
    let mut s = folded.join(" ");
    if s.len() > 90 {
        let mut end = 90;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s.replace('|', "\\|")
}

fn report(args: &ProfileArgs, phases: &[Phase]) {
    println!(
        "| phase | wall | leads/s | CPU: SQLite threads | CPU: tokio workers | CPU: other | idle (of 2 cores) | write-lock waits |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for p in phases {
        let wall = p.wall.as_secs_f64();
        let idle = (2.0 * wall - p.cpu.total()).max(0.0) / (2.0 * wall) * 100.0;
        println!(
            "| {} | {wall:.2} s | {} | {:.2} s | {:.2} s | {:.2} s | {idle:.0}% | {} in {:.2} s |",
            p.name,
            crate::pipeline::thousands(p.rows as f64 / wall),
            p.cpu.sqlite,
            p.cpu.tokio,
            p.cpu.other,
            p.lock_waits.count,
            p.lock_waits.secs,
        );
    }
    for p in phases {
        println!("\n{} (statements by SQLite time, top {}):\n", p.name, args.top);
        println!("| statement | calls | total | per call | per lead |");
        println!("|---|---|---|---|---|");
        for (sql, t) in p.statements.iter().take(args.top) {
            println!(
                "| `{sql}` | {} | {:.2} s | {:.0} µs | {:.1} µs |",
                t.count,
                t.secs,
                t.secs / t.count.max(1) as f64 * 1e6,
                t.secs / p.rows.max(1) as f64 * 1e6,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_threads_cpu_from_its_stat_line() {
        let stat = "4242 (sqlx-sqlite-wor) S 1 2 3 0 -1 4194368 100 0 0 0 250 50 0 0 20 0 1 0 5 6 7";
        let (name, secs) = thread_cpu(stat).expect("parsed");
        assert_eq!(name, "sqlx-sqlite-wor");
        assert!((secs - 3.0).abs() < 1e-9, "{secs}");
    }

    #[test]
    fn statements_are_folded_and_cut() {
        assert_eq!(shorten("select a,\n   b from t"), "select a, b from t");
        assert!(shorten(&"x ".repeat(100)).ends_with('…'));
    }
}
