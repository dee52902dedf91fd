//! The queue on PostgreSQL (issue 4), each figure next to a baseline measured in the same run:
//! - a minimal `FOR UPDATE SKIP LOCKED` claim/complete loop of no-op jobs (the ceiling the queue is held to);
//! - rules-only end to end with 1 and 2 `leadscore-worker` processes;
//! - creating a 1,000,000-job run;
//! - `GET /v1/runs/{id}` latency with 100 concurrent pollers on a `leadscore-api` while the 1M run is worked,
//!   and the status read itself at 10k and 1M jobs next to the `GROUP BY` it replaced;
//! - fairness: a 10-lead run submitted behind the big one;
//! - a worker SIGKILLed in the middle of a run and restarted.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use leadscore_store::sqlx::{self, PgPool};
use leadscore_store::{Completion, DEFAULT_WORKSPACE as WS, NewResult, NewRun, Selection, Store};
use tokio::process::{Child, Command};

use crate::llm::{median, seed, wait_completed};

#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    #[command(flatten)]
    pub pg: crate::PgServer,
    /// Where the release `leadscore-worker` and `leadscore-api` binaries are.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Leads of the throughput and crash runs.
    #[arg(long, default_value_t = 100_000)]
    pub leads: u64,
    /// Only the big run (skip the no-op loop, the end-to-end throughput and the crash run).
    #[arg(long)]
    pub big_only: bool,
    /// Jobs of the big run (creation time, pollers, fairness); 0 skips that part.
    #[arg(long, default_value_t = 1_000_000)]
    pub big: u64,
    /// Repetitions of each throughput measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Concurrent pollers of `GET /v1/runs/{id}`.
    #[arg(long, default_value_t = 100)]
    pub pollers: usize,
    /// `LEADSCORE_CONCURRENCY` of the worker processes.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Worker process counts of the end-to-end measurement.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub processes: Vec<usize>,
    /// Pause of each poller between its requests in milliseconds (0: back to back, the worst case).
    #[arg(long, default_value_t = 0)]
    pub poll_interval_ms: u64,
    /// Seconds of polling.
    #[arg(long, default_value_t = 20)]
    pub poll_secs: u64,
}

pub async fn run(args: &QueueArgs) -> Result<()> {
    leadscore_llm::install_crypto();
    let (url, name, store) = crate::upload::throwaway_database(&args.pg.database_url, "queue").await?;
    let pg = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&url).await?;
    let result = async {
        let offer = store.create_offer(WS, &crate::llm::offer()).await?.id;
        if !args.big_only {
            let noop = [noop_loop(&pg, args, 1).await?, noop_loop(&pg, args, 4).await?];
            let upload = seed(&store, args.leads, "queue").await?;
            let statements = [
                statements_loop(args, &url, &store, &offer, &upload, 1).await?,
                statements_loop(args, &url, &store, &offer, &upload, 4).await?,
            ];
            end_to_end(args, &url, &store, &offer, &upload, noop, statements).await?;
            crash(args, &url, &store, &pg, &offer, &upload).await?;
        }
        if args.big > 0 {
            big_run(args, &url, &store, &pg, &offer).await?;
        }
        anyhow::Ok(())
    }
    .await;
    pg.close().await;
    store.close().await;
    crate::upload::psql(&args.pg.database_url, &format!("drop database {name} with (force)")).await?;
    result
}

/// The baseline: `args.leads` no-op jobs in a minimal table, claimed 64 at a time with `FOR UPDATE SKIP LOCKED`
/// by `loops` concurrent loops and completed in one statement per batch. Returns jobs/s (median).
async fn noop_loop(pool: &PgPool, args: &QueueArgs, loops: usize) -> Result<f64> {
    create_noop_table(pool).await?;
    let mut rates = Vec::new();
    for _ in 0..args.runs {
        rates.push(noop_once(pool, args.leads, loops).await?);
    }
    eprintln!("no-op SKIP LOCKED loop x{loops}: {rates:.0?} jobs/s");
    Ok(median(rates))
}

/// (Re)creates the no-op loop's table `bench_noop`: an integer key, a status, a lease owner, a due time.
pub(crate) async fn create_noop_table(pool: &PgPool) -> Result<()> {
    sqlx::query("drop table if exists bench_noop").execute(pool).await?;
    sqlx::query(
        "create table bench_noop (id bigint primary key, status smallint not null, lease_owner text, \
         run_at bigint not null)",
    )
    .execute(pool)
    .await?;
    sqlx::query("create index bench_noop_claimable on bench_noop (run_at) where status = 0")
        .execute(pool)
        .await?;
    Ok(())
}

/// One measurement of the no-op loop (the table from [`create_noop_table`], refilled with `jobs` fresh jobs):
/// `loops` concurrent loops claim 64 at a time and complete each batch in one statement until none is left.
/// Returns jobs/s.
pub(crate) async fn noop_once(pool: &PgPool, jobs: u64, loops: usize) -> Result<f64> {
    sqlx::query("truncate bench_noop").execute(pool).await?;
    sqlx::query("insert into bench_noop select g, 0, null, 0 from generate_series(1, $1) g")
        .bind(jobs as i64)
        .execute(pool)
        .await?;
    sqlx::query("analyze bench_noop").execute(pool).await?;
    let started = Instant::now();
    let loops: Vec<_> = (0..loops)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                loop {
                    let ids: Vec<i64> = sqlx::query_scalar(
                        "with c as (select id from bench_noop where status = 0 and run_at <= 1 \
                           order by run_at limit 64 for update skip locked) \
                         update bench_noop b set status = 1, lease_owner = $1 from c where b.id = c.id \
                         returning b.id",
                    )
                    .bind(format!("w{w}"))
                    .fetch_all(&pool)
                    .await?;
                    if ids.is_empty() {
                        return anyhow::Ok(());
                    }
                    sqlx::query(
                        "update bench_noop set status = 2, lease_owner = null \
                         where id = any($1) and status = 1 and lease_owner = $2",
                    )
                    .bind(&ids)
                    .bind(format!("w{w}"))
                    .execute(&pool)
                    .await?;
                }
            })
        })
        .collect();
    for l in loops {
        l.await??;
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// Between the baseline and a worker: the queue's own statements (`claim_work` of 64, rule layer inline,
/// `complete_jobs` of the batch) in `loops` plain loops, without a worker pool around them. Shows how much of
/// the gap to the no-op loop is database work and how much is the pool. Returns leads/s (median).
async fn statements_loop(
    args: &QueueArgs,
    url: &str,
    store: &Store,
    offer: &str,
    upload: &str,
    loops: usize,
) -> Result<f64> {
    let options =
        leadscore_store::ConnectOptions { max_connections: 8, generic_plans: true, ..Default::default() };
    let queue = Store::connect_lazy(url, &options)?;
    let rules = leadscore_core::Rules::for_offer(&crate::llm::offer());
    let mut rates = Vec::new();
    for _ in 0..args.runs {
        let started = Instant::now();
        let run = store
            .create_run(&NewRun::new(WS, offer, &Selection::Upload(upload.to_owned())))
            .await
            .map(|c| c.run)?;
        let tasks: Vec<_> = (0..loops)
            .map(|i| {
                let (queue, rules) = (queue.clone(), rules.clone());
                tokio::spawn(async move {
                    let me = format!("statements-{i}");
                    loop {
                        let work = queue.claim_work(&me, 64, Duration::from_secs(30)).await?;
                        if work.is_empty() {
                            return anyhow::Ok(());
                        }
                        let done: Vec<Completion> =
                            work.into_iter().map(|w| score_inline(&rules, w)).collect();
                        queue.complete_jobs(&me, &done).await?;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        wait_completed(store, &run.id, Duration::from_secs(60)).await?;
        rates.push(run.total as f64 / started.elapsed().as_secs_f64());
    }
    queue.close().await;
    eprintln!("queue statements x{loops}: {rates:.0?} leads/s");
    Ok(median(rates))
}

fn score_inline(rules: &leadscore_core::Rules, work: leadscore_store::ClaimedWork) -> Completion {
    use leadscore_core::{AiOutcome, Scoring};
    let Some(lead) = work.lead else {
        return Completion::Failed {
            job: work.job,
            error: "lead gone".into(),
            retry_in: None,
            spent: Default::default(),
        };
    };
    let scoring = Scoring::compose(rules.score(&lead.lead), AiOutcome::Skipped, Vec::new());
    let result = NewResult::without_model(scoring);
    Completion::Succeeded { job: work.job, result: Box::new(result) }
}

/// A `leadscore-worker` process on `url` (rules only: no provider configured).
fn worker(args: &QueueArgs, url: &str, envs: &[(&str, &str)]) -> Result<Child> {
    worker_process(&args.bin_dir, args.concurrency, url, envs)
}

/// The `leadscore-worker` of `bin_dir` on `url` at `concurrency`, rules only (no provider variables passed on),
/// killed when dropped.
pub(crate) fn worker_process(
    bin_dir: &std::path::Path,
    concurrency: usize,
    url: &str,
    envs: &[(&str, &str)],
) -> Result<Child> {
    let bin = bin_dir.join("leadscore-worker");
    let mut cmd = Command::new(&bin);
    cmd.env("LEADSCORE_OPS_LISTEN", "127.0.0.1:0");
    cmd.env("DATABASE_URL", url)
        .env("LEADSCORE_CONCURRENCY", concurrency.to_string())
        .env("RUST_LOG", "warn")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().with_context(|| format!("starting {}", bin.display()))
}

/// Creates a run over `upload` and waits until it is completed; returns (seconds, jobs).
pub(crate) async fn timed_run(store: &Store, offer: &str, upload: &str) -> Result<(f64, i64)> {
    let started = Instant::now();
    let run = store
        .create_run(&NewRun::new(WS, offer, &Selection::Upload(upload.to_owned())))
        .await
        .map(|c| c.run)?;
    wait_completed(store, &run.id, Duration::from_secs(1800)).await?;
    Ok((started.elapsed().as_secs_f64(), run.total))
}

async fn end_to_end(
    args: &QueueArgs,
    url: &str,
    store: &Store,
    offer: &str,
    upload: &str,
    noop: [f64; 2],
    statements: [f64; 2],
) -> Result<()> {
    let [one, four] = noop;
    println!(
        "| what | leads/s (median of {}) | / 1 no-op loop ({one:.0} jobs/s) | / 4 no-op loops ({four:.0} jobs/s) |",
        args.runs
    );
    println!("|---|---|---|---|");
    println!("| minimal SKIP LOCKED claim/complete loop, no-op jobs, batch 64, 1 loop | {one:.0} | 100% | |");
    println!("| the same, 4 loops at once | {four:.0} | | 100% |");
    let ratios = |rate: f64| format!("{:.0}% | {:.0}%", 100.0 * rate / one, 100.0 * rate / four);
    println!(
        "| the queue's own statements (claim_work, rules inline, complete_jobs), batch 64, 1 loop | {:.0} | {} |",
        statements[0],
        ratios(statements[0])
    );
    println!("| the same, 4 loops at once | {:.0} | {} |", statements[1], ratios(statements[1]));
    for processes in args.processes.clone() {
        let mut children = Vec::new();
        for _ in 0..processes {
            children.push(worker(args, url, &[])?);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut rates = Vec::new();
        for _ in 0..args.runs {
            let (secs, total) = timed_run(store, offer, upload).await?;
            rates.push(total as f64 / secs);
        }
        eprintln!("{processes} worker process(es): {rates:.0?} leads/s");
        let rate = median(rates);
        println!(
            "| rules only, {} leads, {processes} `leadscore-worker` (concurrency {}) | {rate:.0} | {} |",
            args.leads,
            args.concurrency,
            ratios(rate)
        );
        for mut c in children {
            let _ = c.kill().await;
        }
    }
    Ok(())
}

/// Two workers with a 5 s lease; one is SIGKILLed a third of the way through and restarted a second later.
async fn crash(
    args: &QueueArgs,
    url: &str,
    store: &Store,
    pool: &PgPool,
    offer: &str,
    upload: &str,
) -> Result<()> {
    let lease = [("LEADSCORE_LEASE_SECS", "5")];
    let mut steady = worker(args, url, &lease)?;
    let mut victim = worker(args, url, &lease)?;
    let started = Instant::now();
    let run = store
        .create_run(&NewRun::new(WS, offer, &Selection::Upload(upload.to_owned())))
        .await
        .map(|c| c.run)?;
    loop {
        let c = store.job_counts(&run.id).await?;
        if c.succeeded >= run.total / 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let running_at_kill = store.job_counts(&run.id).await?.running;
    victim.start_kill()?;
    let _ = victim.wait().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut restarted = worker(args, url, &lease)?;
    wait_completed(store, &run.id, Duration::from_secs(1800)).await?;
    let secs = started.elapsed().as_secs_f64();
    let (distinct, rows): (i64, i64) =
        sqlx::query_as("select count(distinct lead_id), count(*) from results where run_id = $1")
            .bind(&run.id)
            .fetch_one(pool)
            .await?;
    let left_running: i64 =
        sqlx::query_scalar("select count(*) from jobs where run_id = $1 and status = 'running'")
            .bind(&run.id)
            .fetch_one(pool)
            .await?;
    println!();
    println!("| crash run | result |");
    println!("|---|---|");
    println!(
        "| {} leads, 2 workers (lease 5 s), one SIGKILLed with {running_at_kill} jobs running (all workers) at 1/3 \
         and restarted 1 s later | completed in {secs:.1} s; {distinct} leads with a result, {rows} result rows, \
         {left_running} jobs left running |",
        run.total
    );
    if distinct != run.total || rows != run.total || left_running != 0 {
        bail!("the crash run lost or duplicated work");
    }
    for c in [&mut steady, &mut restarted] {
        let _ = c.kill().await;
    }
    Ok(())
}

async fn big_run(args: &QueueArgs, url: &str, store: &Store, pool: &PgPool, offer: &str) -> Result<()> {
    let upload = seed(store, args.big, "big").await?;
    // Creation, with no worker running (the first runs are deleted again, jobs and all).
    let mut secs = Vec::new();
    let mut run = None;
    for i in 0..args.runs {
        let started = Instant::now();
        let r = store
            .create_run(&NewRun::new(WS, offer, &Selection::Upload(upload.clone())))
            .await
            .map(|c| c.run)?;
        secs.push(started.elapsed().as_secs_f64());
        if i + 1 < args.runs {
            sqlx::query("delete from jobs where run_id = $1").bind(&r.id).execute(pool).await?;
            sqlx::query("delete from runs where id = $1").bind(&r.id).execute(pool).await?;
            sqlx::query("delete from run_tallies where run_id = $1").bind(&r.id).execute(pool).await?;
        }
        run = Some(r);
    }
    let run = run.context("at least one run")?;
    eprintln!("create a {}-job run: {secs:.2?} s", args.big);
    let small_upload = seed(store, 10_000, "small").await?;
    let small = store
        .create_run(&NewRun::new(WS, offer, &Selection::Upload(small_upload.clone())))
        .await
        .map(|c| c.run)?;
    println!();
    println!("| big run | result |");
    println!("|---|---|");
    println!(
        "| create a {}-job run (`create_run`: run + `INSERT ... SELECT` of the jobs, one transaction) | {:.2} s (median of {}) |",
        args.big,
        median(secs),
        args.runs
    );
    status_reads(store, &small.id, &run.id).await?;

    // Work it off with 2 workers while 100 clients poll it over HTTP; submit a 10-lead run after 5 s.
    let key = store.create_api_key("bench", Some(WS)).await?.key;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let api_bin = args.bin_dir.join("leadscore-api");
    let mut api = Command::new(&api_bin)
        .env("LEADSCORE_OPS_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", url)
        .env("LEADSCORE_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", api_bin.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    crate::upload::wait_ready(&base).await?;
    let workers = [worker(args, url, &[])?, worker(args, url, &[])?];
    let fair_upload = seed(store, 10, "fair").await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.pollers).build()?;
    let until = Instant::now() + Duration::from_secs(args.poll_secs);
    let pause = Duration::from_millis(args.poll_interval_ms);
    let pollers: Vec<_> = (0..args.pollers)
        .map(|i| {
            let (http, key, target) = (http.clone(), key.clone(), format!("{base}/v1/runs/{}", run.id));
            // Clients that pause between polls are spread over the interval, as independent clients are.
            let offset = pause.mul_f64(i as f64 / args.pollers as f64);
            tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let r = http.get(&target).bearer_auth(&key).send().await?;
                    if !r.status().is_success() {
                        bail!("poll answered {}", r.status());
                    }
                    r.bytes().await?;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    tokio::time::sleep(pause).await;
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let fair_started = Instant::now();
    let fair =
        store.create_run(&NewRun::new(WS, offer, &Selection::Upload(fair_upload))).await.map(|c| c.run)?;
    wait_completed(store, &fair.id, Duration::from_secs(600)).await?;
    let fair_secs = fair_started.elapsed().as_secs_f64();
    let big_at_fair = store.job_counts(&run.id).await?.succeeded;
    let mut lat = Vec::new();
    for p in pollers {
        lat.extend(p.await??);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    println!(
        "| `GET /v1/runs/{{id}}` on `leadscore-api`, {} concurrent pollers ({}) for {} s while 2 workers work the \
         {}-job run | {} requests: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms |",
        args.pollers,
        if args.poll_interval_ms == 0 {
            "back to back".to_owned()
        } else {
            format!("each every {} ms", args.poll_interval_ms)
        },
        args.poll_secs,
        args.big,
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    );
    println!(
        "| fairness: a 10-lead run created 5 s into the {}-job run ({} of its jobs done when it completed) | \
         completed in {:.2} s |",
        args.big, big_at_fair, fair_secs
    );
    let _ = api.kill().await;
    for mut w in workers {
        let _ = w.kill().await;
    }
    Ok(())
}

/// The status read of a 10k-job and a 1M-job run: the tallies (what `GET /v1/runs/{id}` reads) and the
/// `GROUP BY` over the jobs it replaced; medians of 20 reads each.
async fn status_reads(store: &Store, small: &str, big: &str) -> Result<()> {
    async fn ms<F, Fut, T>(f: F) -> Result<f64>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = leadscore_store::Result<T>>,
    {
        let mut v = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            f().await?;
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(median(v))
    }
    for (label, id) in [("10,000", small), ("1,000,000", big)] {
        let tallies = ms(|| store.run_tallies(id)).await?;
        let scan = ms(|| store.job_counts_by_scan(id)).await?;
        println!(
            "| status read of a {label}-job run: tallies / `GROUP BY` over its jobs | {tallies:.2} ms / {scan:.1} ms |"
        );
    }
    Ok(())
}
