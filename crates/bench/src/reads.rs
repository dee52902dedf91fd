//! Reading current results (issue 13): `--leads` leads each scored `--scores` times for one offer (seeded
//! directly with SQL), then through a `leadscore serve` child: the first byte and the whole of
//! `GET /v1/results.csv`, paging `GET /v1/results` to the end, the first byte and the whole of the seed-compatible
//! `/api/leads/export_csv/`. The baseline, in the same run: the query shape before issue 13 (a correlated
//! `max(run_id)` per row, then a sort of the whole set for every page), paged to the end with the bindings the
//! server used, stopped at a timeout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use leadscore_store::sqlx;
use leadscore_store::{ConnectOptions, DEFAULT_WORKSPACE as WS, Store};

use crate::llm::median;
use crate::upload::{spawn_server, throwaway_database};

#[derive(Debug, clap::Args)]
pub struct ReadsArgs {
    /// `postgres` or `sqlite`.
    #[arg(long)]
    pub backend: String,
    /// Leads of the one offer.
    #[arg(long, default_value_t = 200_000)]
    pub leads: u64,
    /// Runs that scored every lead (the current result is the last one's).
    #[arg(long, default_value_t = 3)]
    pub scores: u32,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// How long the baseline's first page may take before it is stopped.
    #[arg(long, default_value_t = 60)]
    pub baseline_timeout_secs: u64,
    /// The `leadscore` binary to run as the server.
    #[arg(long, default_value = "target/release/leadscore")]
    pub server: PathBuf,
    #[command(flatten)]
    pub pg: crate::PgServer,
}

/// Rows of one seeding statement: the results of one run are written in slices of this many leads.
const SEED_SLICE: u64 = 50_000;

pub async fn run(args: &ReadsArgs) -> Result<()> {
    leadscore_llm::install_crypto();
    let (url, store, cleanup) = database(args).await?;
    let offer = leadscore_core::Offer { name: "bench".into(), value_props: vec![], ideal_use_cases: vec![] };
    let offer = store.create_offer(WS, &offer).await?.id;
    let key = store.create_api_key("reads", Some(WS)).await?.key;
    let started = Instant::now();
    seed(args, &url, &offer).await?;
    eprintln!(
        "seeded {} leads x {} results in {:.1} s",
        args.leads,
        args.scores,
        started.elapsed().as_secs_f64()
    );
    let baseline = baseline(args, &url).await?;
    let (mut child, base) = spawn_server(&args.server, &url, &[("LEADSCORE_KEY_RATE_PER_SEC", "0")]).await?;
    let http = reqwest::Client::new();
    let mut samples: Vec<[f64; 5]> = Vec::new();
    for run in 0..args.runs {
        let (csv_first, csv_total, csv_rows) =
            download(&http, &key, &format!("{base}/v1/results.csv")).await?;
        let (pages_total, page_rows) = page_through(&http, &key, &base).await?;
        let (compat_first, compat_total, compat_rows) =
            download(&http, &key, &format!("{base}/api/leads/export_csv/")).await?;
        if [csv_rows, page_rows, compat_rows] != [args.leads; 3] {
            bail!(
                "rows read: CSV {csv_rows}, pages {page_rows}, compat {compat_rows}; {} expected",
                args.leads
            );
        }
        eprintln!(
            "run {run}: CSV first byte {csv_first:.3} s, all {csv_total:.2} s; pages {pages_total:.2} s; \
             compat first byte {compat_first:.3} s, all {compat_total:.2} s"
        );
        samples.push([csv_first, csv_total, pages_total, compat_first, compat_total]);
    }
    let idle_cpu = cpu_after_drop(&http, &key, &base, &child).await?;
    let exit = sigterm_mid_export(&http, &key, &base, &mut child).await?;
    eprintln!("after a dropped export the server used {idle_cpu:.0}% of a core; SIGTERM mid-export: {exit}");
    let _ = child.kill().await;
    cleanup.await?;
    let m = |i: usize| median(samples.iter().map(|s| s[i]).collect());
    let baseline = match baseline {
        (first, Some(all)) => format!("{first:.3} s / {all:.2} s"),
        (first, None) => format!("{first:.3} s / > {} s (stopped)", args.baseline_timeout_secs),
    };
    println!(
        "| backend | current results | `/v1/results.csv` first byte / all | `/v1/results` pages of 1000 | \
         `/api/leads/export_csv/` first byte / all | baseline: the old query, first page / all pages | \
         CPU after a dropped export | SIGTERM mid-export |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} leads x {} results | {:.3} s / {:.2} s | {:.2} s | {:.3} s / {:.2} s | {baseline} | \
         {idle_cpu:.0}% | {exit} |",
        args.backend,
        args.leads,
        args.scores,
        m(0),
        m(1),
        m(2),
        m(3),
        m(4)
    );
    Ok(())
}

/// What removes the bench's database.
type Cleanup = std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// A fresh, migrated database: its URL, a store on it, and what removes it.
async fn database(args: &ReadsArgs) -> Result<(String, Store, Cleanup)> {
    match args.backend.as_str() {
        "postgres" => {
            let (url, name, store) = throwaway_database(&args.pg.database_url, "reads").await?;
            let admin = args.pg.database_url.clone();
            let cleanup: Cleanup = Box::pin(async move {
                crate::upload::psql(&admin, &format!("drop database {name} with (force)")).await
            });
            Ok((url, store, cleanup))
        }
        "sqlite" => {
            let dir = std::env::temp_dir().join(format!("ls_bench_reads_{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let url = format!("sqlite://{}", dir.join("reads.db").display());
            let store = Store::connect_lazy(&url, &ConnectOptions::default())?;
            store.migrate().await?;
            let cleanup: Cleanup = Box::pin(async move {
                std::fs::remove_dir_all(&dir)?;
                Ok(())
            });
            Ok((url, store, cleanup))
        }
        other => bail!("unknown backend {other:?}"),
    }
}

/// The leads, `--scores` completed runs of the offer, and every run's result for every lead, written with SQL
/// (the triggers keep `current_results` as a completion would).
async fn seed(args: &ReadsArgs, url: &str, offer: &str) -> Result<()> {
    let postgres = args.backend == "postgres";
    let (now, series, lead_id) = if postgres {
        ("now()", "generate_series($1::bigint, $2::bigint) as n(i)", "'lead-' || lpad(i::text, 10, '0')")
    } else {
        (
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            "(with recursive s(i) as (select $1 union all select i + 1 from s where i < $2) select i from s) as n",
            "'lead-' || substr('0000000000' || i, -10)",
        )
    };
    let mut statements = vec![format!(
        "insert into uploads (id, workspace_id, created_at) values ('bench-upload', '{WS}', {now})"
    )];
    for run in 1..=args.scores {
        statements.push(format!(
            "insert into runs (id, workspace_id, offer_id, offer_snapshot, status, total, created_at) \
             values ('bench-run-{run}', '{WS}', '{offer}', '{{}}', 'completed', {}, {now})",
            args.leads
        ));
    }
    let leads = format!(
        "insert into leads (id, workspace_id, upload_id, line, name, role, company, industry, location, \
         linkedin_bio, created_at) \
         select {lead_id}, '{WS}', 'bench-upload', i + 1, 'Lead ' || i, \
           case when i % 2 = 0 then 'CEO' else 'Analyst' end, 'Acme ' || (i % 977), 'B2B SaaS', 'Berlin', \
           'Builds revenue teams for mid-market SaaS companies, ' || i, {now} from {series}"
    );
    let results = format!(
        "insert into results (run_id, lead_id, workspace_id, offer_id, version, rule_score, rule_reasons, \
           ai_status, score_basis, final_score, intent, flags, created_at) \
         select $3, {lead_id}, '{WS}', '{offer}', 1, 50, \
           '[]', 'skipped', 'rules_only', i % 101, \
           case when i % 101 >= 70 then 'High' when i % 101 >= 40 then 'Medium' else 'Low' end, '[]', {now} \
         from {series}"
    );
    let slices: Vec<(i64, i64)> = (0..args.leads.div_ceil(SEED_SLICE))
        .map(|k| (k * SEED_SLICE, ((k + 1) * SEED_SLICE).min(args.leads) - 1))
        .map(|(a, b)| (a as i64, b as i64))
        .collect();
    macro_rules! write_all {
        ($pool:expr) => {{
            let pool = $pool;
            for s in &statements {
                sqlx::query(sqlx::AssertSqlSafe(s.clone())).execute(&pool).await?;
            }
            for (a, b) in &slices {
                sqlx::query(sqlx::AssertSqlSafe(leads.clone())).bind(a).bind(b).execute(&pool).await?;
            }
            for run in 1..=args.scores {
                for (a, b) in &slices {
                    sqlx::query(sqlx::AssertSqlSafe(results.clone()))
                        .bind(a)
                        .bind(b)
                        .bind(format!("bench-run-{run}"))
                        .execute(&pool)
                        .await?;
                }
            }
            // What a real upload leaves: statistics on `leads` (SQLite: the upload writer's `analyze leads`;
            // PostgreSQL: autovacuum's, here at once).
            let analyze = if postgres { "analyze" } else { "analyze leads" };
            sqlx::query(analyze).execute(&pool).await?;
            pool.close().await;
        }};
    }
    if postgres {
        write_all!(sqlx::PgPool::connect(url).await?);
    } else {
        write_all!(sqlx::SqlitePool::connect(url).await?);
    }
    Ok(())
}

/// The query shape before issue 13 (pages of 1000 of the current results of every offer, as the export read
/// them), bound as the server bound it: seconds for the first page and, unless stopped at
/// `--baseline-timeout-secs`, for every page.
async fn baseline(args: &ReadsArgs, url: &str) -> Result<(f64, Option<f64>)> {
    let sql = "select l.id as lead_id, r.offer_id, l.name, r.run_id, r.final_score, r.rule_reasons from results r \
         join leads l on l.workspace_id = r.workspace_id and l.id = r.lead_id \
         where r.workspace_id = $1 and ($2 is null or r.offer_id = $2) and r.run_id = (select max(r2.run_id) \
           from results r2 where r2.workspace_id = r.workspace_id and r2.offer_id = r.offer_id \
           and r2.lead_id = r.lead_id) \
           and (r.lead_id > $3 or (r.lead_id = $3 and r.offer_id > $4)) \
           and ($5 is null or r.intent = $5) and r.final_score >= $6 and ($7 is null or r.score_basis = $7) \
         order by r.lead_id, r.offer_id limit $8 offset $9";
    macro_rules! pages {
        ($pool:expr) => {{
            use leadscore_store::sqlx::Row;
            let pool = $pool;
            let started = Instant::now();
            let mut first = None;
            let all = tokio::time::timeout(Duration::from_secs(args.baseline_timeout_secs), async {
                let (mut lead, mut offer) = (String::new(), String::new());
                loop {
                    let rows = sqlx::query(sql)
                        .bind(WS)
                        .bind(None::<String>)
                        .bind(&lead)
                        .bind(&offer)
                        .bind(None::<String>)
                        .bind(0_i64)
                        .bind(None::<String>)
                        .bind(1000_i64)
                        .bind(0_i64)
                        .fetch_all(&pool)
                        .await?;
                    first.get_or_insert_with(|| started.elapsed().as_secs_f64());
                    let Some(last) = rows.last() else { return anyhow::Ok(started.elapsed().as_secs_f64()) };
                    (lead, offer) = (last.try_get("lead_id")?, last.try_get("offer_id")?);
                }
            })
            .await;
            // A stopped SQLite statement runs on in its thread until its connection closes.
            pool.close().await;
            let all = all.ok().transpose()?;
            (first.unwrap_or(f64::INFINITY), all)
        }};
    }
    Ok(if args.backend == "postgres" {
        pages!(sqlx::PgPool::connect(url).await?)
    } else {
        pages!(sqlx::SqlitePool::connect(url).await?)
    })
}

/// Seconds to the first body byte, seconds for the whole body, and its data rows (lines after the header).
async fn download(http: &reqwest::Client, key: &str, url: &str) -> Result<(f64, f64, u64)> {
    let started = Instant::now();
    let mut response = http.get(url).bearer_auth(key).send().await?.error_for_status()?;
    let mut first = None;
    let mut lines = 0_u64;
    while let Some(chunk) = response.chunk().await? {
        first.get_or_insert_with(|| started.elapsed().as_secs_f64());
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let first = first.context("empty body")?;
    Ok((first, started.elapsed().as_secs_f64(), lines.saturating_sub(1)))
}

/// Seconds to read every page of `/v1/results?limit=1000`, and the items read.
async fn page_through(http: &reqwest::Client, key: &str, base: &str) -> Result<(f64, u64)> {
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    let mut items = 0_u64;
    loop {
        // Cursors are `<lead id>~<offer id>`: nothing in them needs escaping in a query string.
        let url = match &cursor {
            Some(c) => format!("{base}/v1/results?limit=1000&cursor={c}"),
            None => format!("{base}/v1/results?limit=1000"),
        };
        let page: serde_json::Value =
            http.get(url).bearer_auth(key).send().await?.error_for_status()?.json().await?;
        items += page["items"].as_array().map_or(0, |a| a.len() as u64);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok((started.elapsed().as_secs_f64(), items)),
        }
    }
}

/// The server's CPU time (user + system, in clock ticks of 10 ms).
fn cpu_ticks(child: &tokio::process::Child) -> Result<u64> {
    let pid = child.id().context("server exited")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which ends with the last ')': state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')').context("stat")?.1.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Starts `/v1/results.csv`, reads its first chunk and hangs up; then the server's CPU use over 2 s, in % of a
/// core (0 when the export's reads stopped with its client).
async fn cpu_after_drop(
    http: &reqwest::Client,
    key: &str,
    base: &str,
    child: &tokio::process::Child,
) -> Result<f64> {
    let mut response = http.get(format!("{base}/v1/results.csv")).bearer_auth(key).send().await?;
    response.chunk().await?;
    drop(response);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cpu_ticks(child)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((cpu_ticks(child)? - before) as f64 / 2.0)
}

/// Starts `/v1/results.csv`, reads its first chunk and keeps the connection open without reading; sends the
/// server SIGTERM and times its exit (at most 60 s).
async fn sigterm_mid_export(
    http: &reqwest::Client,
    key: &str,
    base: &str,
    child: &mut tokio::process::Child,
) -> Result<String> {
    let mut response = http.get(format!("{base}/v1/results.csv")).bearer_auth(key).send().await?;
    response.chunk().await?;
    let pid = child.id().context("server exited")?;
    let started = Instant::now();
    tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
    let exited = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    drop(response);
    Ok(match exited {
        Ok(_) => format!("exits in {:.2} s", started.elapsed().as_secs_f64()),
        Err(_) => "still running after 60 s".to_owned(),
    })
}
