//! `leadscore-bench pipeline`: the whole rules-only worker pipeline measured against the database's own cost of
//! the same work, in one invocation, so that every ratio compares figures taken minutes apart on the same machine
//! (its speed drifts by as much as the changes we want to see; BENCHMARKS.md, issue 4).
//!
//! Each round measures, in this order:
//! - A. the minimal `FOR UPDATE SKIP LOCKED` claim/complete loop of no-op jobs (`queue.rs`), 1 and 2 loops;
//! - B. the database-only cycle: the `crates/bench/pgbench` scripts (claim 64 jobs, rewrite them as succeeded,
//!   insert constant results, one PL/pgSQL call and one commit per cycle) run by `pgbench` on a throwaway
//!   database, next to the no-op cycle of the same scripts as that row's own baseline. The schema is recreated
//!   before each of the two, as `run.sh` does;
//! - C. the real pipeline on PostgreSQL: 1 and 2 `leadscore-worker` release processes (started fresh for the
//!   measurement, given a second to connect) working a run of N leads, timed from `create_run` to `completed`;
//! - D. the same pipeline on SQLite embedded: a `leadscore serve` child on a temp file (started fresh each round),
//!   a run created with `POST /v1/leads/score`, timed from just before that request to the run's `finished_at`
//!   (one process: SQLite has one writer).
//!
//! The rounds alternate (A, B, C, D, then A, B, C, D again...) so that a slow minute of the machine hits every row
//! rather than one. The report gives each row's median over the rounds and ratios computed within each round,
//! then medianed: a ratio of two medians would pair figures from different rounds.
//!
//! Then the `Prefer: wait` latency (see [`wait_latency`]).
//!
//! `leadscore_store` calls are limited to [`pg_setup`] (offer, seeded upload) and the shared `queue::timed_run`
//! (`create_run`, run reads), so a signature change is adapted in one place; the no-op loop uses a plain sqlx pool
//! on its own table, and everything else goes through the binaries' CLIs and the public HTTP API.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use leadscore_store::sqlx::{self, PgPool};
use leadscore_store::{DEFAULT_WORKSPACE as WS, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::process::{Child, Command};

use crate::llm::median;

/// The pgbench scripts, carried in the binary so that the bench runs from any directory; written to a temp dir
/// for `psql -f` / `pgbench -f`. The same files `run.sh` uses.
const PGBENCH_SCRIPTS: [(&str, &str); 4] = [
    ("schema.sql", include_str!("../pgbench/schema.sql")),
    ("cycles.sql", include_str!("../pgbench/cycles.sql")),
    ("update.sql", include_str!("../pgbench/update.sql")),
    ("noop.sql", include_str!("../pgbench/noop.sql")),
];
/// Jobs per cycle (`limit 64` in `cycles.sql`).
const CYCLE_JOBS: u64 = 64;
/// Queued jobs `schema.sql` makes for `update.sql` / `noop.sql`: a measurement that used them all ran dry and
/// under-reports.
const CYCLE_QUEUES: [(&str, u64); 2] = [("update.sql", 600_000), ("noop.sql", 1_500_000)];

#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub pg: crate::PgServer,
    /// Where the release `leadscore` and `leadscore-worker` binaries are.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Leads of each pipeline run (PostgreSQL and SQLite), and jobs of the no-op loop.
    #[arg(long, default_value_t = 100_000)]
    pub leads: u64,
    /// Rounds of A, B, C, D; medians and per-round ratios are reported. 0 skips to the `Prefer: wait` part.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds of each pgbench measurement.
    #[arg(long, default_value_t = 10)]
    pub pgbench_secs: u64,
    /// pgbench clients (and threads).
    #[arg(long, default_value_t = 2)]
    pub pgbench_clients: usize,
    /// Loop counts of the no-op SKIP LOCKED loop.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub noop_loops: Vec<usize>,
    /// Worker process counts of the PostgreSQL pipeline.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub processes: Vec<usize>,
    /// `LEADSCORE_CONCURRENCY` of the worker processes and of `leadscore serve`.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Repetitions of the `Prefer: wait` latency per backend; 0 skips it.
    #[arg(long, default_value_t = 20)]
    pub wait_reps: usize,
    /// Leads of each `Prefer: wait` run.
    #[arg(long, default_value_t = 200)]
    pub wait_leads: u64,
    /// Backends of the `Prefer: wait` latency: `sqlite`, `postgres`.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub wait_backends: Vec<String>,
}

pub async fn run(args: &PipelineArgs) -> Result<()> {
    leadscore_llm::install_crypto();
    for bin in ["leadscore", "leadscore-worker"] {
        let path = args.bin_dir.join(bin);
        if !path.is_file() {
            bail!("{} not found: build the release binaries or pass --bin-dir", path.display());
        }
    }
    if args.rounds > 0 {
        rounds(args).await?;
    }
    if args.wait_reps > 0 {
        let mut rows = Vec::new();
        for backend in &args.wait_backends {
            rows.push(wait_latency(args, backend).await?);
        }
        println!();
        println!(
            "| `Prefer: wait=30`, {} leads, rules only | repetitions | response - `finished_at`: median | max | \
             whole request (send to 200): median |",
            args.wait_leads
        );
        println!("|---|---|---|---|---|");
        for r in rows {
            println!(
                "| `leadscore serve` on {} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
                r.backend, r.reps, r.median_ms, r.max_ms, r.request_median_ms
            );
        }
    }
    Ok(())
}

/// One round's measurements, in the order taken.
struct Round {
    /// A: jobs/s per entry of `--noop-loops`.
    noop_loop: Vec<f64>,
    /// B: jobs/s of pgbench's claim/complete/result cycle and of its no-op cycle.
    cycle: f64,
    noop_cycle: f64,
    /// C: leads/s per entry of `--processes`.
    pg: Vec<f64>,
    /// D: leads/s.
    sqlite: f64,
}

/// What the PostgreSQL rows work on: the pipeline's database (A and C) and pgbench's (B).
struct PgSide {
    url: String,
    store: Store,
    pool: PgPool,
    offer: String,
    upload: String,
    pgbench_url: String,
    scripts: PathBuf,
}

/// What the SQLite row works on: a database file holding the offer and an upload of `--leads` leads.
struct SqliteSide {
    url: String,
    offer: String,
    upload: String,
}

async fn rounds(args: &PipelineArgs) -> Result<()> {
    let pid = std::process::id();
    let (url, name, store) = crate::upload::throwaway_database(&args.pg.database_url, "pipeline").await?;
    let pgbench_name = format!("ls_bench_pgbench_{pid}");
    let scripts = std::env::temp_dir().join(format!("ls_bench_pgbench_{pid}"));
    let sqlite_dir = std::env::temp_dir().join(format!("ls_bench_pipeline_{pid}"));
    let result = async {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&url).await?;
        let (offer, upload) = pg_setup(&store, args.leads).await?;
        crate::upload::psql(&args.pg.database_url, &format!("drop database if exists {pgbench_name}"))
            .await?;
        crate::upload::psql(&args.pg.database_url, &format!("create database {pgbench_name}")).await?;
        let pgbench_url = format!("{}/{pgbench_name}", url.rsplit_once('/').context("database URL")?.0);
        std::fs::create_dir_all(&scripts)?;
        for (file, text) in PGBENCH_SCRIPTS {
            std::fs::write(scripts.join(file), text)?;
        }
        crate::queue::create_noop_table(&pool).await?;
        let pg = PgSide {
            url: url.clone(),
            store: store.clone(),
            pool,
            offer,
            upload,
            pgbench_url,
            scripts: scripts.clone(),
        };
        let sqlite = sqlite_setup(args, &sqlite_dir).await?;
        let mut done = Vec::new();
        for r in 1..=args.rounds {
            eprintln!("round {r} of {}", args.rounds);
            done.push(round(args, &pg, &sqlite).await?);
        }
        pg.pool.close().await;
        report(args, &done);
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&scripts);
    let _ = std::fs::remove_dir_all(&sqlite_dir);
    crate::upload::psql(
        &args.pg.database_url,
        &format!("drop database if exists {pgbench_name} with (force)"),
    )
    .await?;
    crate::upload::psql(&args.pg.database_url, &format!("drop database {name} with (force)")).await?;
    result
}

/// The only store calls of this bench besides `queue::timed_run`: the offer and `leads` generated leads, written
/// straight into the pipeline's database (the upload path has its own bench).
pub(crate) async fn pg_setup(store: &Store, leads: u64) -> Result<(String, String)> {
    let offer = store.create_offer(WS, &crate::llm::offer()).await?.id;
    let upload = crate::llm::seed(store, leads, "pipeline").await?;
    Ok((offer, upload))
}

/// Creates the SQLite database through the API: the offer and an upload of `--leads` generated leads.
async fn sqlite_setup(args: &PipelineArgs, dir: &Path) -> Result<SqliteSide> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let url = format!("sqlite://{}", dir.join("pipeline.db").display());
    let server = Server::start(args, &url).await?;
    let offer = server.create_offer().await?;
    let upload = server.upload(args.leads).await?;
    server.stop().await;
    Ok(SqliteSide { url, offer, upload })
}

async fn round(args: &PipelineArgs, pg: &PgSide, sqlite: &SqliteSide) -> Result<Round> {
    let mut noop_loop = Vec::new();
    for &loops in &args.noop_loops {
        let rate = crate::queue::noop_once(&pg.pool, args.leads, loops).await?;
        eprintln!("  A. no-op SKIP LOCKED loop x{loops}: {rate:.0} jobs/s");
        noop_loop.push(rate);
    }
    let noop_cycle = pgbench(args, pg, "noop.sql").await?;
    eprintln!("  B. pgbench no-op cycle: {noop_cycle:.0} jobs/s");
    let cycle = pgbench(args, pg, "update.sql").await?;
    eprintln!("  B. pgbench claim/complete/result cycle: {cycle:.0} jobs/s");
    let mut rates = Vec::new();
    for &processes in &args.processes {
        let rate = pg_pipeline(args, pg, processes).await?;
        eprintln!("  C. PostgreSQL, {processes} leadscore-worker: {rate:.0} leads/s");
        rates.push(rate);
    }
    let sqlite_rate = sqlite_pipeline(args, sqlite).await?;
    eprintln!("  D. SQLite, leadscore serve: {sqlite_rate:.0} leads/s");
    Ok(Round { noop_loop, cycle, noop_cycle, pg: rates, sqlite: sqlite_rate })
}

/// One pgbench measurement of `script` (`update.sql` or `noop.sql`) on a freshly loaded schema, after a
/// checkpoint (so that no checkpoint of the load lands in the measurement): jobs/s = cycles x 64 / seconds,
/// as `run.sh` computes it.
async fn pgbench(args: &PipelineArgs, pg: &PgSide, script: &str) -> Result<f64> {
    for file in ["schema.sql", "cycles.sql"] {
        crate::upload::psql(&pg.pgbench_url, &format!("\\i {}", pg.scripts.join(file).display())).await?;
    }
    crate::upload::psql(&pg.pgbench_url, "checkpoint").await?;
    let (clients, secs) = (args.pgbench_clients.to_string(), args.pgbench_secs.to_string());
    let out = Command::new("pgbench")
        .args(["-n", "-c", &clients, "-j", &clients, "-T", &secs, "-f"])
        .arg(pg.scripts.join(script))
        .arg(&pg.pgbench_url)
        .output()
        .await
        .context("running pgbench (apt-get install postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("pgbench -f {script} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    }
    let cycles = processed_cycles(&stdout).with_context(|| format!("pgbench output: {stdout}"))?;
    let jobs = cycles * CYCLE_JOBS;
    if let Some((_, queued)) = CYCLE_QUEUES.iter().find(|(s, _)| *s == script)
        && jobs >= *queued
    {
        eprintln!("  warning: pgbench -f {script} used all {queued} queued jobs; shorten --pgbench-secs");
    }
    Ok(jobs as f64 / args.pgbench_secs as f64)
}

/// `number of transactions actually processed: N` (or `N/M` with `-t`) of pgbench's report.
fn processed_cycles(report: &str) -> Option<u64> {
    let after = report.lines().find_map(|l| l.split_once("actually processed:"))?.1;
    after.trim().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// C: `processes` fresh `leadscore-worker` processes, a second to connect, then one run of `--leads` leads timed
/// from `create_run` to `completed`. Returns leads/s.
async fn pg_pipeline(args: &PipelineArgs, pg: &PgSide, processes: usize) -> Result<f64> {
    let mut workers = Vec::new();
    for _ in 0..processes {
        workers.push(crate::queue::worker_process(&args.bin_dir, args.concurrency, &pg.url, &[])?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let timed = crate::queue::timed_run(&pg.store, &pg.offer, &pg.upload).await;
    for w in &mut workers {
        let _ = w.kill().await;
    }
    let (secs, total) = timed?;
    Ok(total as f64 / secs)
}

/// D: a fresh `leadscore serve` on the SQLite file, one run created over HTTP, timed from just before the
/// request to the run's own `finished_at` (so the polling interval adds nothing). Returns leads/s.
async fn sqlite_pipeline(args: &PipelineArgs, sqlite: &SqliteSide) -> Result<f64> {
    let server = Server::start(args, &sqlite.url).await?;
    let measured = async {
        let scored = server.score(&sqlite.offer, &sqlite.upload, None).await?;
        if scored.status != StatusCode::ACCEPTED {
            bail!("POST /v1/leads/score answered {}: {}", scored.status, scored.body);
        }
        let id = scored.body["id"].as_str().context("run id")?;
        let total = scored.body["job_counts"]["total"].as_i64().context("job_counts.total")?;
        let run = server.wait_finished(id, Duration::from_secs(1800)).await?;
        let finished = finished_at(&run)?.0;
        Ok(total as f64 / (finished - scored.sent).as_seconds_f64())
    }
    .await;
    server.stop().await;
    measured
}

/// The run's `finished_at` and whether it carries sub-second digits.
pub(crate) fn finished_at(run: &Value) -> Result<(OffsetDateTime, bool)> {
    let text = run["finished_at"].as_str().context("finished_at")?;
    let at = OffsetDateTime::parse(text, &Rfc3339).with_context(|| format!("finished_at {text:?}"))?;
    Ok((at, text.contains('.')))
}

/// Row label, unit and, for rows that have one, the target (a lower bound), with how to read the row off a round.
type RowSpec = (String, &'static str, Option<f64>, Box<dyn Fn(&Round) -> f64>);

fn report(args: &PipelineArgs, done: &[Round]) {
    let leads = thousands(args.leads as f64);
    let c = args.concurrency;
    let secs = args.pgbench_secs;
    let clients = args.pgbench_clients;
    let mut rows: Vec<RowSpec> = Vec::new();
    for (i, loops) in args.noop_loops.iter().enumerate() {
        rows.push((
            format!(
                "A. no-op SKIP LOCKED claim/complete loop, batch 64, {}, {leads} jobs",
                plural(*loops, "loop")
            ),
            "jobs/s",
            None,
            Box::new(move |r: &Round| r.noop_loop[i]),
        ));
    }
    rows.push((
        format!(
            "B. database-only claim/complete/result cycle (pgbench `update.sql`, {clients} clients, {secs} s)"
        ),
        "jobs/s",
        None,
        Box::new(|r: &Round| r.cycle),
    ));
    rows.push((
        format!("B0. pgbench no-op cycle (`noop.sql`, {clients} clients, {secs} s)"),
        "jobs/s",
        None,
        Box::new(|r: &Round| r.noop_cycle),
    ));
    for (i, p) in args.processes.iter().enumerate() {
        rows.push((
            format!("C. pipeline on PostgreSQL, rules only, {p} `leadscore-worker` (concurrency {c}), {leads} leads"),
            "leads/s",
            Some(5000.0),
            Box::new(move |r: &Round| r.pg[i]),
        ));
    }
    rows.push((
        format!(
            "D. pipeline on SQLite, rules only, `leadscore serve` (concurrency {c}), {leads} leads, \
             `POST /v1/leads/score` to `finished_at`"
        ),
        "leads/s",
        None,
        Box::new(|r: &Round| r.sqlite),
    ));
    rows.push((
        "B / B0 (database-only cycle / pgbench no-op cycle)".into(),
        "%",
        None,
        pct(|r| r.cycle / r.noop_cycle),
    ));
    for (i, p) in args.processes.iter().enumerate() {
        rows.push((
            format!("pipeline PG {} / DB-only cycle (C / B)", plural(*p, "proc")),
            "%",
            Some(70.0),
            pct(move |r| r.pg[i] / r.cycle),
        ));
    }
    if let Some(one) = args.noop_loops.iter().position(|&l| l == 1) {
        for (i, p) in args.processes.iter().enumerate() {
            rows.push((
                format!("pipeline PG {} / no-op loop x1 (C / A)", plural(*p, "proc")),
                "%",
                None,
                pct(move |r| r.pg[i] / r.noop_loop[one]),
            ));
        }
    }

    let n = done.len();
    let mut main = String::new();
    let mut per_round = String::new();
    let _ = writeln!(main, "| what | median of {n} rounds | target |");
    let _ = writeln!(main, "|---|---|---|");
    let _ = write!(per_round, "| what |");
    for r in 1..=n {
        let _ = write!(per_round, " round {r} |");
    }
    let _ = writeln!(per_round, "\n|---|{}", "---|".repeat(n));
    for (label, unit, target, value) in &rows {
        let values: Vec<f64> = done.iter().map(value).collect();
        let m = median(values.clone());
        let target = match target {
            Some(t) => format!("≥ {}: {}", show(*t, unit), if m >= *t { "met" } else { "**not met**" }),
            None => String::new(),
        };
        let _ = writeln!(main, "| {label} | {} | {target} |", show(m, unit));
        let _ = write!(per_round, "| {label} |");
        for v in values {
            let _ = write!(per_round, " {} |", show(v, unit));
        }
        let _ = writeln!(per_round);
    }
    println!("{main}");
    println!("Per round (ratios are taken within a round; the medians above are of these):");
    println!();
    print!("{per_round}");
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

/// A ratio row in percent.
fn pct(f: impl Fn(&Round) -> f64 + 'static) -> Box<dyn Fn(&Round) -> f64> {
    Box::new(move |r| 100.0 * f(r))
}

fn show(v: f64, unit: &str) -> String {
    if unit == "%" { format!("{v:.0}%") } else { format!("{} {unit}", thousands(v)) }
}

/// `12345.6` -> `12,346`, as BENCHMARKS.md writes numbers.
pub(crate) fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if v < -0.5 { format!("-{out}") } else { out }
}

struct WaitRow {
    backend: String,
    reps: usize,
    median_ms: f64,
    max_ms: f64,
    request_median_ms: f64,
}

/// How long after a run finishes does a client waiting with `Prefer: wait` get its answer?
///
/// A `leadscore serve` child on a fresh database (a temp SQLite file, or a throwaway PostgreSQL database via
/// `--database-url`; rules only: no provider variables are passed on) gets an offer and an upload of
/// `--wait-leads` leads once; then, `--wait-reps` times, `POST /v1/leads/score` over that upload with
/// `Prefer: wait=30`. For each 200 answer the latency is (wall-clock time the response headers arrived) minus
/// (the run's `finished_at` in the body). The run is finished by the server process itself, which takes
/// `finished_at` from the same machine clock just before the statement that finishes the run, so the difference
/// is what a waiting client loses between the last job's completion and its answer: the statement's commit, the
/// wait loop noticing it, reading the run and its results, serialising and sending them. No poller of our own
/// takes part, so the measurement adds no load.
///
/// This needs `finished_at` with sub-second digits: it is serialised as RFC 3339 from the stored timestamp
/// (`timestamptz`: microseconds on PostgreSQL; RFC 3339 text with nanoseconds on SQLite, as sqlx encodes it),
/// checked on every answer. Were it ever whole seconds, the bench stops and says so rather than report a number
/// that is mostly rounding; the alternative then is a second task polling `GET /v1/runs/{id}` every 2 ms and
/// comparing its first sight of `finished_at` with the response time.
///
/// A pause of 100 ms before each request lets the server settle back to idle, as between independent clients.
async fn wait_latency(args: &PipelineArgs, backend: &str) -> Result<WaitRow> {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("ls_bench_wait_{pid}"));
    let (url, pg) = match backend {
        "sqlite" => {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            (format!("sqlite://{}", dir.join("wait.db").display()), None)
        }
        "postgres" => {
            let (url, name, store) = crate::upload::throwaway_database(&args.pg.database_url, "wait").await?;
            store.close().await;
            (url, Some(name))
        }
        other => bail!("unknown backend {other:?} (sqlite, postgres)"),
    };
    let measured = async {
        let server = Server::start(args, &url).await?;
        let measured = wait_reps(args, &server).await;
        server.stop().await;
        measured
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(name) = pg {
        crate::upload::psql(&args.pg.database_url, &format!("drop database {name} with (force)")).await?;
    }
    let (mut latencies, requests) = measured?;
    latencies.sort_by(f64::total_cmp);
    eprintln!("Prefer: wait on {backend}: latencies {latencies:.1?} ms");
    Ok(WaitRow {
        backend: backend.to_owned(),
        reps: latencies.len(),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        median_ms: median(latencies),
        request_median_ms: median(requests),
    })
}

/// The repetitions of [`wait_latency`] on a running server: (latencies, whole requests), in ms.
async fn wait_reps(args: &PipelineArgs, server: &Server) -> Result<(Vec<f64>, Vec<f64>)> {
    let offer = server.create_offer().await?;
    let upload = server.upload(args.wait_leads).await?;
    let (mut latencies, mut requests) = (Vec::new(), Vec::new());
    for _ in 0..args.wait_reps {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let scored = server.score(&offer, &upload, Some(30)).await?;
        if scored.status != StatusCode::OK {
            bail!("Prefer: wait=30 answered {} (not finished within 30 s?): {}", scored.status, scored.body);
        }
        let (finished, precise) = finished_at(&scored.body["run"])?;
        if !precise {
            bail!(
                "finished_at {} has no sub-second digits: response - finished_at would be mostly rounding; \
                 measure against a 2 ms poller instead (see wait_latency)",
                scored.body["run"]["finished_at"]
            );
        }
        if latencies.is_empty() {
            eprintln!("finished_at as served, for example: {}", scored.body["run"]["finished_at"]);
        }
        latencies.push((scored.arrived - finished).as_seconds_f64() * 1000.0);
        requests.push((scored.arrived - scored.sent).as_seconds_f64() * 1000.0);
    }
    Ok((latencies, requests))
}

/// A `leadscore serve` child and an HTTP client for it (auth is off: no API key exists in a fresh database).
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
}

/// A `POST /v1/leads/score` answer with the wall-clock times the request was sent and the headers arrived.
pub(crate) struct Scored {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
    pub(crate) sent: OffsetDateTime,
    pub(crate) arrived: OffsetDateTime,
}

impl Server {
    async fn start(args: &PipelineArgs, url: &str) -> Result<Self> {
        let concurrency = args.concurrency.to_string();
        let (child, base) = crate::upload::spawn_server(
            &args.bin_dir.join("leadscore"),
            url,
            &[("LEADSCORE_CONCURRENCY", &concurrency)],
        )
        .await?;
        Ok(Server { child, http: reqwest::Client::new(), base })
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    pub(crate) async fn json(&self, request: reqwest::RequestBuilder, what: &str) -> Result<Value> {
        let r = request.send().await?;
        let status = r.status();
        let body: Value = r.json().await?;
        if !status.is_success() {
            bail!("{what} answered {status}: {body}");
        }
        Ok(body)
    }

    async fn create_offer(&self) -> Result<String> {
        let request = self.http.post(format!("{}/v1/offers", self.base)).json(&crate::llm::offer());
        let offer = self.json(request, "POST /v1/offers").await?;
        Ok(offer["id"].as_str().context("offer id")?.to_owned())
    }

    /// Uploads `rows` generated leads as a `text/csv` body; returns the upload id.
    async fn upload(&self, rows: u64) -> Result<String> {
        let mut csv = Vec::new();
        crate::generate::write_csv(&mut csv, rows, 42)?;
        let request = self
            .http
            .post(format!("{}/v1/leads/upload", self.base))
            .header("content-type", "text/csv")
            .body(csv);
        let upload = self.json(request, "POST /v1/leads/upload").await?;
        if upload["rows_accepted"].as_u64() != Some(rows) {
            bail!("upload accepted {} of {rows} rows", upload["rows_accepted"]);
        }
        Ok(upload["upload_id"].as_str().context("upload_id")?.to_owned())
    }

    /// `POST /v1/leads/score` over `upload`, with `Prefer: wait=N` when given.
    pub(crate) async fn score(&self, offer: &str, upload: &str, wait: Option<u64>) -> Result<Scored> {
        let mut request = self
            .http
            .post(format!("{}/v1/leads/score", self.base))
            .json(&json!({"offer_id": offer, "upload_id": upload}));
        if let Some(n) = wait {
            request = request.header("prefer", format!("wait={n}"));
        }
        let sent = OffsetDateTime::now_utc();
        let r = request.send().await?;
        let arrived = OffsetDateTime::now_utc();
        let status = r.status();
        Ok(Scored { status, body: r.json().await?, sent, arrived })
    }

    /// Polls `GET /v1/runs/{id}` every 20 ms until the run has a `finished_at`; it must be `completed`.
    pub(crate) async fn wait_finished(&self, id: &str, within: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let run =
                self.json(self.http.get(format!("{}/v1/runs/{id}", self.base)), "GET /v1/runs/{id}").await?;
            if !run["finished_at"].is_null() {
                if run["status"] != "completed" {
                    bail!("run {id} finished as {}: {run}", run["status"]);
                }
                return Ok(run);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("run {id} not finished in {within:?}: {run}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_report() {
        let report = "transaction type: update.sql\nnumber of clients: 2\nduration: 10 s\n\
                      number of transactions actually processed: 2958\nnumber of failed transactions: 0 (0.000%)\n\
                      tps = 295.8 (without initial connection time)\n";
        assert_eq!(processed_cycles(report), Some(2958));
        assert_eq!(processed_cycles("number of transactions actually processed: 10/10\n"), Some(10));
        assert_eq!(processed_cycles("pgbench: error: connection failed\n"), None);
    }

    #[test]
    fn writes_numbers_as_benchmarks_md_does() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(12_345.6), "12,346");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
        assert_eq!(show(49.6, "%"), "50%");
        assert_eq!(show(5076.0, "leads/s"), "5,076 leads/s");
    }

    #[test]
    fn finished_at_precision_is_checked() -> Result<()> {
        let (at, precise) = finished_at(&json!({"finished_at": "2026-12-04T10:00:00.123456Z"}))?;
        assert!(precise);
        assert_eq!(at.microsecond(), 123_456);
        assert!(!finished_at(&json!({"finished_at": "2026-12-04T10:00:00Z"}))?.1);
        assert!(finished_at(&json!({"finished_at": null})).is_err());
        Ok(())
    }
}
