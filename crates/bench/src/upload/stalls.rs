//! Uploads under stalls (issue 13, ADR 0003): clients that send half an upload and stop, against a
//! `leadscore serve` child, while another workspace's writes are timed; the same writes without the stalled
//! clients, before and after them in the same run, are the baseline (the database grows from phase to phase:
//! the phase after tells that apart from the stalls).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use leadscore_store::{ConnectOptions, DEFAULT_WORKSPACE, Store};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{UploadArgs, psql, spawn_server, stop};

const HEADER: &str = "name,role,company,industry,location,linkedin_bio\n";

/// The writes timed in each phase, in the order they run.
const KINDS: [&str; 3] =
    ["offer create", "upload (10 rows)", "run of 10 leads, results written (Prefer: wait)"];

pub async fn run(args: &UploadArgs, stalls: usize) -> Result<()> {
    let (url, cleanup) = database(args).await?;
    let store = Store::open(&url, &ConnectOptions::default()).await?;
    let stalling = store.create_api_key("stalling", Some(DEFAULT_WORKSPACE)).await?.key;
    let other = store.create_api_key("other", None).await?.key;
    store.close().await;
    let (mut child, base) = spawn_server(&args.server, &url, &[]).await?;
    let addr = base.trim_start_matches("http://").to_owned();
    leadscore_llm::install_crypto();
    let http = reqwest::Client::new();
    let phase = Duration::from_secs(args.stall_secs);

    let baseline = timed_writes(&http, &base, &other, phase).await?;
    let mut clients = Vec::new();
    for i in 0..stalls {
        clients.push(stalled_client(&addr, &stalling, i).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stalled = timed_writes(&http, &base, &other, phase).await?;
    let still_open = clients.iter().filter(|c| is_open(c)).count();
    drop(clients);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = timed_writes(&http, &base, &other, phase).await?;
    stop(&mut child).await;
    cleanup_database(args, cleanup).await?;

    println!(
        "{} backend, {stalls} clients stalled mid-upload ({still_open} still connected at the end), {} s per phase",
        args.backend, args.stall_secs
    );
    println!("| write | n: before / stalled / after | median | p99 | max | errors |");
    println!("|---|---|---|---|---|---|");
    for (k, kind) in KINDS.iter().enumerate() {
        let phases = [&baseline[k], &stalled[k], &after[k]];
        let show = |q: f64| phases.map(|t| format!("{:.1}", quantile(&t.ms, q))).join(" / ");
        println!(
            "| {kind} | {} | {} ms | {} ms | {} ms | {} |",
            phases.map(|t| t.ms.len().to_string()).join(" / "),
            show(0.5),
            show(0.99),
            show(1.0),
            phases.map(|t| t.errors.to_string()).join(" / "),
        );
    }
    Ok(())
}

enum Cleanup {
    Postgres(String),
    Sqlite(std::path::PathBuf),
}

async fn database(args: &UploadArgs) -> Result<(String, Cleanup)> {
    match args.backend.as_str() {
        "postgres" => {
            let name = format!("ls_bench_stalls_{}", std::process::id());
            let base =
                args.pg.database_url.rsplit_once('/').map(|(b, _)| b.to_owned()).context("database URL")?;
            psql(&args.pg.database_url, &format!("drop database if exists {name}")).await?;
            psql(&args.pg.database_url, &format!("create database {name}")).await?;
            Ok((format!("{base}/{name}"), Cleanup::Postgres(name)))
        }
        "sqlite" => {
            let dir = std::env::temp_dir().join(format!("ls_bench_stalls_{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            Ok((format!("sqlite://{}", dir.join("api.db").display()), Cleanup::Sqlite(dir)))
        }
        other => bail!("unknown backend {other:?}"),
    }
}

async fn cleanup_database(args: &UploadArgs, cleanup: Cleanup) -> Result<()> {
    match cleanup {
        Cleanup::Postgres(name) => {
            psql(&args.pg.database_url, &format!("drop database {name} with (force)")).await
        }
        Cleanup::Sqlite(dir) => Ok(std::fs::remove_dir_all(dir)?),
    }
}

#[derive(Default)]
struct Timings {
    ms: Vec<f64>,
    errors: usize,
}

/// Runs offer create, a small upload and a run to completion, one after the other, for `phase`.
async fn timed_writes(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    phase: Duration,
) -> Result<Vec<Timings>> {
    let mut out: Vec<Timings> = KINDS.iter().map(|_| Timings::default()).collect();
    let csv: String = std::iter::once(HEADER.to_owned())
        .chain((0..10).map(|i| format!("Lead {i},CEO,Acme,B2B SaaS,Oslo,bio\n")))
        .collect();
    let deadline = Instant::now() + phase;
    while Instant::now() < deadline {
        let post = |path: &str| http.post(format!("{base}{path}")).bearer_auth(key);
        let offer = timed(
            &mut out[0],
            201,
            post("/v1/offers").json(&json!({"name": "x", "ideal_use_cases": ["B2B SaaS"]})),
        )
        .await;
        let upload = timed(
            &mut out[1],
            201,
            post("/v1/leads/upload").header("content-type", "text/csv").body(csv.clone()),
        )
        .await;
        if let (Some(offer), Some(upload)) = (offer, upload) {
            let body = json!({"offer_id": offer["id"], "upload_id": upload["upload_id"]});
            timed(&mut out[2], 200, post("/v1/leads/score").header("prefer", "wait=30").json(&body)).await;
        }
    }
    Ok(out)
}

/// Sends `req`; records its latency when it answers `expect`, an error otherwise.
async fn timed(t: &mut Timings, expect: u16, req: reqwest::RequestBuilder) -> Option<Value> {
    let started = Instant::now();
    let answer = match req.send().await {
        Ok(r) if r.status().as_u16() == expect => r.json::<Value>().await.ok(),
        Ok(r) => {
            eprintln!("unexpected {}: {}", r.status(), r.text().await.unwrap_or_default());
            None
        }
        Err(e) => {
            eprintln!("request failed: {e}");
            None
        }
    };
    match answer {
        Some(v) => {
            t.ms.push(started.elapsed().as_secs_f64() * 1000.0);
            Some(v)
        }
        None => {
            t.errors += 1;
            None
        }
    }
}

/// A client that sends the head of an upload and half its body (about 1 MB), then nothing.
async fn stalled_client(addr: &str, key: &str, i: usize) -> Result<TcpStream> {
    let mut body = HEADER.to_owned();
    let mut row = 0;
    while body.len() < 1_000_000 {
        body.push_str(&format!("Stalled {i}-{row},CEO,Acme,B2B SaaS,Oslo,bio\n"));
        row += 1;
    }
    let head = format!(
        "POST /v1/leads/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: text/csv\r\n\
         Content-Length: {}\r\n\r\n",
        body.len() * 2
    );
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body.as_bytes()).await?;
    Ok(tcp)
}

/// Whether the server still keeps the connection (no answer, no close).
fn is_open(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(tcp.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The `q` quantile (nearest rank) in ms; 0 when nothing was measured.
fn quantile(ms: &[f64], q: f64) -> f64 {
    if ms.is_empty() {
        return 0.0;
    }
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
