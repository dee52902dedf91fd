//! Upload throughput: a CSV through `POST /v1/leads/upload` of a `leadscore serve` child process, next to the
//! database's own bulk loader (`psql \copy`, `sqlite3 .import`) on the same file, in the same run; with
//! `--stalls N`, other writes while N clients stall mid-upload ([`stalls`]).

mod stalls;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::llm::median;

#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// The CSV to upload (make one with `leadscore-bench gen`).
    #[arg(long, required_unless_present = "stalls")]
    pub file: Option<PathBuf>,
    /// Instead of timing an upload: this many clients send half an upload and stall while another workspace's
    /// writes are timed, against the same writes without them.
    #[arg(long)]
    pub stalls: Option<usize>,
    /// Only the API upload (for files the baseline's six-column table cannot load, such as wide rows).
    #[arg(long)]
    pub no_baseline: bool,
    /// Seconds of each phase of `--stalls` (without, then with the stalled clients).
    #[arg(long, default_value_t = 60)]
    pub stall_secs: u64,
    /// `postgres` or `sqlite`.
    #[arg(long)]
    pub backend: String,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The `leadscore` binary to run as the server.
    #[arg(long, default_value = "target/release/leadscore")]
    pub server: PathBuf,
    #[command(flatten)]
    pub pg: crate::PgServer,
}

struct Sample {
    api_secs: f64,
    api_rows: u64,
    peak_rss_mb: f64,
    baseline_secs: f64,
}

pub async fn run(args: &UploadArgs) -> Result<()> {
    leadscore_llm::install_crypto(); // before the first request (`wait_ready`)
    if let Some(n) = args.stalls {
        return stalls::run(args, n).await;
    }
    let file = args.file.as_deref().context("--file")?;
    let file = std::fs::canonicalize(file).with_context(|| format!("{}", file.display()))?;
    let size_mb = std::fs::metadata(&file)?.len() as f64 / 1e6;
    let mut samples = Vec::new();
    for run in 0..args.runs {
        let s = match args.backend.as_str() {
            "postgres" => postgres_run(args, &file, run).await?,
            "sqlite" => sqlite_run(args, &file, run).await?,
            other => bail!("unknown backend {other:?}"),
        };
        eprintln!(
            "run {run}: API {} rows in {:.2} s ({:.0} rows/s, peak RSS {:.0} MB); baseline {:.2} s",
            s.api_rows,
            s.api_secs,
            s.api_rows as f64 / s.api_secs,
            s.peak_rss_mb,
            s.baseline_secs
        );
        samples.push(s);
    }
    let rows = samples[0].api_rows as f64;
    let api = median(samples.iter().map(|s| s.api_secs).collect());
    let base = median(samples.iter().map(|s| s.baseline_secs).collect());
    let rss = samples.iter().map(|s| s.peak_rss_mb).fold(0.0, f64::max);
    let baseline = if args.backend == "postgres" { "psql \\copy" } else { "sqlite3 .import" };
    println!(
        "| backend | file | API upload (median of {}) | {baseline} (median) | API / baseline | server peak RSS (max) |",
        args.runs
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {:.0} MB, {} rows | {:.2} s = {:.0} rows/s | {:.2} s = {:.0} rows/s | {:.0}% | {:.0} MB |",
        args.backend,
        size_mb,
        rows,
        api,
        rows / api,
        base,
        rows / base,
        100.0 * base / api,
        rss
    );
    Ok(())
}

async fn postgres_run(args: &UploadArgs, file: &Path, run: usize) -> Result<Sample> {
    let name = format!("ls_bench_{}_{run}", std::process::id());
    let base = args.pg.database_url.rsplit_once('/').map(|(b, _)| b.to_owned()).context("database URL")?;
    psql(&args.pg.database_url, &format!("drop database if exists {name}")).await?;
    psql(&args.pg.database_url, &format!("create database {name}")).await?;
    let url = format!("{base}/{name}");
    let (api_secs, api_rows, peak_rss_mb) = api_upload(&args.server, &url, file).await?;
    if args.no_baseline {
        psql(&args.pg.database_url, &format!("drop database {name} with (force)")).await?;
        return Ok(Sample { api_secs, api_rows, peak_rss_mb, baseline_secs: f64::NAN });
    }
    psql(
        &url,
        "create table bench_copy (id bigserial primary key, name text not null, role text not null, \
         company text not null, industry text not null, location text not null, linkedin_bio text not null)",
    )
    .await?;
    let started = Instant::now();
    psql(
        &url,
        &format!(
            "\\copy bench_copy (name, role, company, industry, location, linkedin_bio) from '{}' csv header",
            file.display()
        ),
    )
    .await?;
    let baseline_secs = started.elapsed().as_secs_f64();
    psql(&args.pg.database_url, &format!("drop database {name} with (force)")).await?;
    Ok(Sample { api_secs, api_rows, peak_rss_mb, baseline_secs })
}

async fn sqlite_run(args: &UploadArgs, file: &Path, run: usize) -> Result<Sample> {
    let dir = std::env::temp_dir().join(format!("ls_bench_{}_{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("api.db").display());
    let (api_secs, api_rows, peak_rss_mb) = api_upload(&args.server, &url, file).await?;
    if args.no_baseline {
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(Sample { api_secs, api_rows, peak_rss_mb, baseline_secs: f64::NAN });
    }
    let baseline_secs = sqlite_import(&dir.join("baseline.db"), file).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Sample { api_secs, api_rows, peak_rss_mb, baseline_secs })
}

/// The SQLite baseline: `sqlite3 .import` of `file` (a six-column leads CSV with a header) into a table of
/// database file `db` (created if missing). Returns the seconds it took.
pub(crate) async fn sqlite_import(db: &Path, file: &Path) -> Result<f64> {
    let started = Instant::now();
    let status = Command::new("sqlite3")
        .arg(db)
        // No id column: .import fills columns by position; the rowid is SQLite's integer key.
        .arg(
            "create table bench_copy (name text not null, role text not null, company text not null, \
              industry text not null, location text not null, linkedin_bio text not null);",
        )
        .arg(format!(".import --csv --skip 1 {} bench_copy", file.display()))
        .status()
        .await
        .context("running sqlite3 (apt-get install sqlite3)")?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("sqlite3 .import failed");
    }
    Ok(secs)
}

/// A fresh, migrated database `ls_bench_<tag>_<pid>` on the server of `admin_url`: its URL, name and store.
pub async fn throwaway_database(
    admin_url: &str,
    tag: &str,
) -> Result<(String, String, leadscore_store::Store)> {
    let name = format!("ls_bench_{tag}_{}", std::process::id());
    let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_owned()).context("database URL")?;
    psql(admin_url, &format!("drop database if exists {name}")).await?;
    psql(admin_url, &format!("create database {name}")).await?;
    let url = format!("{base}/{name}");
    let store = leadscore_store::Store::connect_lazy(&url, &leadscore_store::ConnectOptions::default())?;
    store.migrate().await?;
    Ok((url, name, store))
}

pub async fn psql(url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .await?;
    if !out.status.success() {
        bail!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Starts a server on `url`, uploads `file` as a streamed text/csv body, and returns (seconds, rows accepted,
/// the server's peak RSS in MB).
async fn api_upload(server: &Path, url: &str, file: &Path) -> Result<(f64, u64, f64)> {
    let (mut child, base) = spawn_server(server, url, &[]).await?;
    leadscore_llm::install_crypto();
    let http = reqwest::Client::new();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        tokio::fs::File::open(file).await?,
        256 * 1024,
    ));
    let started = Instant::now();
    let r = http
        .post(format!("{base}/v1/leads/upload"))
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let json: serde_json::Value = r.json().await?;
    let secs = started.elapsed().as_secs_f64();
    if !status.is_success() {
        bail!("upload failed: {status} {json}");
    }
    let rss = peak_rss_mb(&child)?;
    stop(&mut child).await;
    Ok((secs, json["rows_accepted"].as_u64().unwrap_or(0), rss))
}

/// Starts `server serve` on `url` (rules only: no provider variables passed on) on a free loopback port with
/// `envs` set, and waits until it is ready; returns the child (killed when dropped) and the base URL.
pub(crate) async fn spawn_server(server: &Path, url: &str, envs: &[(&str, &str)]) -> Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(server)
        .env("LEADSCORE_OPS_LISTEN", "127.0.0.1:0")
        .args(["serve", "--database-url", url, "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .envs(envs.iter().copied())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", server.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await?;
    Ok((child, base))
}

pub(crate) async fn wait_ready(base: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if reqwest::get(format!("{base}/readyz")).await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("server did not become ready")
}

/// VmHWM: the process's peak resident set size.
pub(crate) fn peak_rss_mb(child: &Child) -> Result<f64> {
    let pid = child.id().context("server exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmHWM")?;
    Ok(kb / 1024.0)
}

async fn stop(child: &mut Child) {
    let _ = child.kill().await;
}
