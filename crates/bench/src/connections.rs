//! Hostile connections (issue 13): a `leadscore serve` child under a descriptor limit (`prlimit --nofile`),
//! `--idle` connections that never speak and `--slow` clients that send a header line a second, all reconnecting
//! when closed; `/healthz` and an authenticated `GET /v1/runs` are timed from a fresh connection each, without
//! and then with the hostile load, in the same run.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

#[derive(Debug, clap::Args)]
pub struct ConnectionsArgs {
    /// The `leadscore` binary to run as the server.
    #[arg(long, default_value = "target/release/leadscore")]
    pub server: PathBuf,
    /// The server's open-file limit (soft and hard).
    #[arg(long, default_value_t = 1024)]
    pub nofile: u64,
    /// Connections that never send a byte.
    #[arg(long, default_value_t = 3000)]
    pub idle: usize,
    /// Clients that send a request head one header line a second and never finish it.
    #[arg(long, default_value_t = 200)]
    pub slow: usize,
    /// How long a closed hostile connection waits before it reconnects (0: it does not).
    #[arg(long, default_value_t = 1000)]
    pub reconnect_ms: u64,
    /// Timed requests per route and phase.
    #[arg(long, default_value_t = 300)]
    pub requests: usize,
}

pub async fn run(args: &ConnectionsArgs) -> Result<()> {
    leadscore_llm::install_crypto();
    let dir = std::env::temp_dir().join(format!("leadscore-bench-conns-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("leadscore.db").display());
    let key = create_key(args, &url).await?;
    let (mut server, base) = spawn_limited(args, &url).await?;
    let pid = server.id().context("server exited")?;
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(10)).build()?;
    let baseline = measure(&http, &base, &key, args.requests).await;
    let stats = Arc::new(Hostile::default());
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse()?;
    let attack = tokio::spawn(hostile(addr, args.idle, args.slow, args.reconnect_ms, stats.clone()));
    ramp_up(&stats, args.idle + args.slow).await;
    let fds_before = open_fds(pid);
    let loaded = measure(&http, &base, &key, args.requests).await;
    let fds_after = open_fds(pid);
    attack.abort();
    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    report(args, &baseline, &loaded, &stats, [fds_before, fds_after]);
    Ok(())
}

async fn create_key(args: &ConnectionsArgs, url: &str) -> Result<String> {
    let out = Command::new(&args.server)
        .env("LEADSCORE_OPS_LISTEN", "127.0.0.1:0")
        .args(["keys", "create", "--database-url", url, "--name", "bench"])
        .stderr(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {} keys create", args.server.display()))?;
    if !out.status.success() {
        bail!("keys create failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// `prlimit --nofile=N:N leadscore serve` on a free loopback port; waits until it is ready.
async fn spawn_limited(args: &ConnectionsArgs, url: &str) -> Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("prlimit")
        .arg(format!("--nofile={0}:{0}", args.nofile))
        .arg("--")
        .arg(&args.server)
        .args(["serve", "--database-url", url, "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .env("LEADSCORE_OPS_LISTEN", "127.0.0.1:0")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        // The per-key rate limit would answer the timed requests 429: this measures connections alone.
        .env("LEADSCORE_KEY_RATE_PER_SEC", "0")
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting prlimit (util-linux)")?;
    let base = format!("http://127.0.0.1:{port}");
    crate::upload::wait_ready(&base).await?;
    Ok((child, base))
}

/// Latencies (ms) of each route, and how many requests failed.
struct Timings {
    healthz: Vec<f64>,
    runs: Vec<f64>,
    failed: usize,
    /// Why requests failed: a status code or the error's kind, with counts.
    failures: std::collections::BTreeMap<String, usize>,
}

async fn measure(http: &reqwest::Client, base: &str, key: &str, n: usize) -> Timings {
    let mut t = Timings { healthz: Vec::new(), runs: Vec::new(), failed: 0, failures: Default::default() };
    for _ in 0..n {
        for runs in [false, true] {
            let request = if runs {
                http.get(format!("{base}/v1/runs")).bearer_auth(key)
            } else {
                http.get(format!("{base}/healthz"))
            };
            let start = Instant::now();
            let outcome = match request.send().await {
                Ok(r) if r.status().is_success() => {
                    r.bytes().await.map(|_| ()).map_err(|e| format!("body: {e}"))
                }
                Ok(r) => Err(r.status().as_u16().to_string()),
                Err(e) if e.is_timeout() => Err("timeout".to_owned()),
                Err(e) if e.is_connect() => Err("connect".to_owned()),
                Err(e) => Err(format!("{e}")),
            };
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            match (outcome, runs) {
                (Err(why), _) => {
                    t.failed += 1;
                    *t.failures.entry(why).or_default() += 1;
                }
                (Ok(()), true) => t.runs.push(ms),
                (Ok(()), false) => t.healthz.push(ms),
            }
        }
    }
    t
}

#[derive(Default)]
struct Hostile {
    connected: AtomicU64,
    closed_by_server: AtomicU64,
    connect_failed: AtomicU64,
}

/// Starts every hostile client and keeps them going until aborted.
async fn hostile(
    addr: std::net::SocketAddr,
    idle: usize,
    slow: usize,
    reconnect_ms: u64,
    stats: Arc<Hostile>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..idle + slow {
        tasks.spawn(one_hostile(addr, i >= idle, reconnect_ms, stats.clone()));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn one_hostile(addr: std::net::SocketAddr, slow: bool, reconnect_ms: u64, stats: Arc<Hostile>) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                stats.connected.fetch_add(1, Ordering::Relaxed);
                hold(stream, slow).await;
                stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                stats.connect_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if reconnect_ms == 0 {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(reconnect_ms)).await;
    }
}

/// Keeps the connection open until the server closes it; a slow client trickles an endless request head.
async fn hold(mut stream: TcpStream, slow: bool) {
    let mut buf = [0u8; 512];
    if slow && stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.is_err() {
        return;
    }
    loop {
        let tick = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            read = stream.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { return },
            () = tick, if slow => {
                if stream.write_all(b"x-slow: 1\r\n").await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Waits until every hostile client has connected once (at most 30 s), then 2 s more.
async fn ramp_up(stats: &Hostile, clients: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while (stats.connected.load(Ordering::Relaxed) as usize) < clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(args: &ConnectionsArgs, baseline: &Timings, loaded: &Timings, stats: &Hostile, fds: [usize; 2]) {
    println!(
        "server: `leadscore serve` under `prlimit --nofile={}`; hostile: {} idle + {} slow-header clients, \
         reconnecting {} ms after being closed",
        args.nofile, args.idle, args.slow, args.reconnect_ms
    );
    println!("| phase | /healthz p50 | /healthz p99 | GET /v1/runs p50 | GET /v1/runs p99 | failed |");
    println!("|---|---|---|---|---|---|");
    for (name, t) in [("baseline (no hostile connections)", baseline), ("hostile", loaded)] {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} of {} |",
            percentile(&t.healthz, 0.5),
            percentile(&t.healthz, 0.99),
            percentile(&t.runs, 0.5),
            percentile(&t.runs, 0.99),
            t.failed,
            2 * args.requests
        );
    }
    for (name, t) in [("baseline", baseline), ("hostile", loaded)] {
        if !t.failures.is_empty() {
            println!("{name} failures: {:?}", t.failures);
        }
    }
    println!(
        "hostile connections made: {}, closed by the server: {}, connect attempts failed: {}; server descriptors \
         open (before / after the timed requests): {} / {}",
        stats.connected.load(Ordering::Relaxed),
        stats.closed_by_server.load(Ordering::Relaxed),
        stats.connect_failed.load(Ordering::Relaxed),
        fds[0],
        fds[1]
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_pick_the_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&v, 0.5), 51.0);
        assert_eq!(super::percentile(&v, 0.99), 99.0);
    }
}
