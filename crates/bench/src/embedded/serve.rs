//! The `serve` part: a fresh `leadscore serve` child on a fresh SQLite file (rules only: `upload::spawn_server`
//! passes no provider variables on), driven through HTTP as a client would:
//! - `POST /v1/offers` with the offer JSON;
//! - upload: `POST /v1/leads/upload`, the file streamed from disk as a `text/csv` body, timed to the answer
//!   (every row must be accepted);
//! - score: `POST /v1/leads/score`, timed from just before the request to the run's own `finished_at`, as the
//!   `pipeline` bench's row D (the same machine clock; the polling interval adds nothing);
//! - export: `GET /v1/runs/{id}/results.csv`, streamed and counted (leads + the header), timed to the last byte;
//! - total: from the upload's request to the export's last byte, as the client sees it (it includes the offer,
//!   and up to one polling interval between `finished_at` and a poller seeing it);
//! - the server's peak RSS (VmHWM) before it is stopped.
//!
//! While the run is scored, `--pollers` tasks each `GET /v1/runs/{id}` every 100 ms (staggered; one of them
//! seeing `finished_at` ends the wait), and one task opens the run's event stream (`GET /v1/runs/{id}/events`,
//! whose first event is the run's current `status`) every 100 ms and times request to that first event, then
//! drops the stream. Both record request latencies; the report gives p50 / p99 / max per round.
//!
//! `LEADSCORE_KEY_RATE_PER_SEC=0`: without API keys every request shares one bucket (50/s by default), which
//! ten pollers alone exceed; ten real clients would hold ten keys.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::watch;

use super::{EmbeddedArgs, LeadsFile, RecordCounter, Row, Unit, percentile, table};
use crate::pipeline::{Server, finished_at};

/// How often each poller and the event-stream client send a request.
const EVERY: Duration = Duration::from_millis(100);
/// Longest wait for a run to finish.
const RUN_DEADLINE: Duration = Duration::from_secs(3600);

pub(super) struct Sample {
    upload_secs: f64,
    score_secs: f64,
    export_secs: f64,
    total_secs: f64,
    peak_rss_mb: f64,
    polls: Latencies,
    events: Latencies,
}

/// Request latencies in ms (sorted once collected) and failed requests.
#[derive(Debug, Default)]
struct Latencies {
    ms: Vec<f64>,
    errors: u64,
}

impl Latencies {
    fn merge(&mut self, other: Latencies) {
        self.ms.extend(other.ms);
        self.errors += other.errors;
    }

    fn p(&self, p: f64) -> f64 {
        percentile(&self.ms, p)
    }
}

pub(super) async fn once(
    args: &EmbeddedArgs,
    bin: &Path,
    offer: &Value,
    file: &LeadsFile,
    dir: &Path,
) -> Result<Sample> {
    let url = format!("sqlite://{}", dir.join("serve.db").display());
    let concurrency = args.concurrency.to_string();
    let (child, base) = crate::upload::spawn_server(
        bin,
        &url,
        &[("LEADSCORE_CONCURRENCY", &concurrency), ("LEADSCORE_KEY_RATE_PER_SEC", "0")],
    )
    .await?;
    let server = Server { child, http: reqwest::Client::new(), base };
    let measured = measure(args, &server, offer, file).await;
    let rss = crate::upload::peak_rss_mb(&server.child);
    server.stop().await;
    let mut s = measured?;
    s.peak_rss_mb = rss?;
    eprintln!(
        "  serve {}: upload {:.2} s, score {:.2} s = {:.0} leads/s, export {:.2} s, total {:.2} s, peak RSS {:.0} MB; \
         GET run p50 {:.1} / p99 {:.1} ms ({} requests, {} failed), first event p50 {:.1} / p99 {:.1} ms ({}, {} failed)",
        file.name,
        s.upload_secs,
        s.score_secs,
        file.rows as f64 / s.score_secs,
        s.export_secs,
        s.total_secs,
        s.peak_rss_mb,
        s.polls.p(50.0),
        s.polls.p(99.0),
        s.polls.ms.len(),
        s.polls.errors,
        s.events.p(50.0),
        s.events.p(99.0),
        s.events.ms.len(),
        s.events.errors
    );
    Ok(s)
}

async fn measure(args: &EmbeddedArgs, server: &Server, offer: &Value, file: &LeadsFile) -> Result<Sample> {
    let base = &server.base;
    let http = &server.http;
    let offer_id = {
        let offer =
            server.json(http.post(format!("{base}/v1/offers")).json(offer), "POST /v1/offers").await?;
        offer["id"].as_str().context("offer id")?.to_owned()
    };

    let started = Instant::now();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        tokio::fs::File::open(&file.path).await?,
        256 * 1024,
    ));
    let request = http.post(format!("{base}/v1/leads/upload")).header("content-type", "text/csv").body(body);
    let upload = server.json(request, "POST /v1/leads/upload").await?;
    let upload_secs = started.elapsed().as_secs_f64();
    if upload["rows_accepted"].as_u64() != Some(file.rows) {
        bail!("upload of {} accepted {} of {} rows: {upload}", file.name, upload["rows_accepted"], file.rows);
    }
    let upload_id = upload["upload_id"].as_str().context("upload_id")?;

    let scored = server.score(&offer_id, upload_id, None).await?;
    if scored.status != StatusCode::ACCEPTED {
        bail!("POST /v1/leads/score answered {}: {}", scored.status, scored.body);
    }
    let id = scored.body["id"].as_str().context("run id")?.to_owned();
    let run_url = format!("{base}/v1/runs/{id}");
    let (stop, stopped) = watch::channel(false);
    let (seen, mut finished) = watch::channel(None::<Value>);
    let mut pollers = Vec::new();
    for k in 0..args.pollers {
        let offset = EVERY.mul_f64(k as f64 / args.pollers as f64);
        pollers.push(tokio::spawn(poll(
            http.clone(),
            run_url.clone(),
            offset,
            stopped.clone(),
            seen.clone(),
        )));
    }
    drop(seen);
    let events = tokio::spawn(first_events(http.clone(), format!("{run_url}/events"), stopped));
    let run = if args.pollers > 0 {
        let waited = tokio::time::timeout(RUN_DEADLINE, finished.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(run)) => run.clone().context("finished run")?,
            Ok(Err(_)) => bail!("every poller stopped before run {id} finished"),
            Err(_) => bail!("run {id} not finished in {RUN_DEADLINE:?}"),
        }
    } else {
        server.wait_finished(&id, RUN_DEADLINE).await?
    };
    let _ = stop.send(true);
    let mut polls = Latencies::default();
    for p in pollers {
        polls.merge(p.await?);
    }
    let mut events = events.await?;
    polls.ms.sort_by(f64::total_cmp);
    events.ms.sort_by(f64::total_cmp);
    if run["status"] != "completed" {
        bail!("run {id} finished as {}: {run}", run["status"]);
    }
    let score_secs = (finished_at(&run)?.0 - scored.sent).as_seconds_f64();

    let exported = Instant::now();
    let mut r = http.get(format!("{run_url}/results.csv")).send().await?;
    if !r.status().is_success() {
        bail!("GET /v1/runs/{{id}}/results.csv answered {}: {}", r.status(), r.text().await?);
    }
    let mut counter = RecordCounter::default();
    while let Some(chunk) = r.chunk().await? {
        counter.feed(&chunk);
    }
    let export_secs = exported.elapsed().as_secs_f64();
    let total_secs = started.elapsed().as_secs_f64();
    if counter.records() != file.rows + 1 {
        bail!(
            "results.csv of run {id} has {} records, expected {} leads + the header",
            counter.records(),
            file.rows
        );
    }
    Ok(Sample { upload_secs, score_secs, export_secs, total_secs, peak_rss_mb: f64::NAN, polls, events })
}

/// One poller: `GET url` every [`EVERY`] from `offset` on until `stop`; publishes the run on `seen` once it has
/// a `finished_at`.
async fn poll(
    http: reqwest::Client,
    url: String,
    offset: Duration,
    mut stop: watch::Receiver<bool>,
    seen: watch::Sender<Option<Value>>,
) -> Latencies {
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lat = Latencies::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // The sender gone: the measurement failed.
            changed = stop.changed() => if changed.is_err() { return lat; },
        }
        if *stop.borrow() {
            return lat;
        }
        let sent = Instant::now();
        let run = match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            _ => None,
        };
        match run {
            Some(run) => {
                lat.ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                if !run["finished_at"].is_null() {
                    seen.send_replace(Some(run));
                }
            }
            None => lat.errors += 1,
        }
    }
}

/// The event-stream client: opens `url` every [`EVERY`] until `stop`, timing each to its first complete event
/// (which must be a `status`), then drops it.
async fn first_events(http: reqwest::Client, url: String, mut stop: watch::Receiver<bool>) -> Latencies {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lat = Latencies::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // The sender gone: the measurement failed.
            changed = stop.changed() => if changed.is_err() { return lat; },
        }
        if *stop.borrow() {
            return lat;
        }
        let sent = Instant::now();
        match tokio::time::timeout(Duration::from_secs(10), first_event(&http, &url)).await {
            Ok(Ok(event)) if event == "status" => lat.ms.push(sent.elapsed().as_secs_f64() * 1000.0),
            _ => lat.errors += 1,
        }
    }
}

/// The name of the first event of the stream at `url`.
async fn first_event(http: &reqwest::Client, url: &str) -> Result<String> {
    let mut r = http.get(url).header("accept", "text/event-stream").send().await?;
    if !r.status().is_success() {
        bail!("{url} answered {}", r.status());
    }
    let mut buf = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        buf.extend_from_slice(&chunk);
        if let Some(name) = sse_first_event(&buf) {
            return Ok(name);
        }
    }
    bail!("{url} ended before its first event")
}

/// The name of the first complete event in the start of an event stream (`message` when it names none), or
/// `None` while there is none yet. Blocks of comments only (keep-alives) are not events.
fn sse_first_event(buf: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(buf).replace("\r\n", "\n");
    let complete = text.rsplit_once("\n\n")?.0;
    for block in complete.split("\n\n") {
        let mut name = None;
        let mut is_event = false;
        for line in block.lines().filter(|l| !l.starts_with(':') && !l.is_empty()) {
            is_event = true;
            if let Some(v) = line.strip_prefix("event:") {
                name = Some(v.trim().to_owned());
            }
        }
        if is_event {
            return Some(name.unwrap_or_else(|| "message".into()));
        }
    }
    None
}

pub(super) fn report(args: &EmbeddedArgs, files: &[LeadsFile], samples: &[Vec<Sample>]) -> String {
    let mut rows = Vec::new();
    for (f, s) in files.iter().zip(samples) {
        let label = f.label();
        let n = f.rows as f64;
        let each = |v: &dyn Fn(&Sample) -> f64| s.iter().map(v).collect::<Vec<f64>>();
        let rate = Unit::Rate("leads/s");
        rows.push(Row::new(
            &label,
            "upload (`POST /v1/leads/upload`, streamed file)",
            Unit::Secs,
            each(&|s| s.upload_secs),
        ));
        rows.push(Row::new(&label, "upload", Unit::Rate("rows/s"), each(&|s| n / s.upload_secs)));
        rows.push(Row::new(
            &label,
            "score (`POST /v1/leads/score` to `finished_at`)",
            Unit::Secs,
            each(&|s| s.score_secs),
        ));
        rows.push(Row::new(&label, "score", rate, each(&|s| n / s.score_secs)));
        rows.push(Row::new(
            &label,
            "export (`GET /v1/runs/{id}/results.csv`, to the last byte)",
            Unit::Secs,
            each(&|s| s.export_secs),
        ));
        rows.push(Row::new(&label, "export", Unit::Rate("rows/s"), each(&|s| n / s.export_secs)));
        rows.push(Row::new(
            &label,
            "total (upload request to the export's last byte)",
            Unit::Secs,
            each(&|s| s.total_secs),
        ));
        rows.push(Row::new(&label, "total", rate, each(&|s| n / s.total_secs)));
        rows.push(Row::new(&label, "server peak RSS (VmHWM)", Unit::Mb, each(&|s| s.peak_rss_mb)));
        let polls: fn(&Sample) -> &Latencies = |s| &s.polls;
        let events: fn(&Sample) -> &Latencies = |s| &s.events;
        for (what, pick) in [
            (
                format!("`GET /v1/runs/{{id}}` by {} pollers every 100 ms during the score", args.pollers),
                polls,
            ),
            (
                "`GET /v1/runs/{id}/events`: request to first event, every 100 ms during the score"
                    .to_owned(),
                events,
            ),
        ] {
            rows.push(Row::new(&label, format!("{what}: p50"), Unit::Ms, each(&|s| pick(s).p(50.0))));
            rows.push(Row::new(&label, format!("{what}: p99"), Unit::Ms, each(&|s| pick(s).p(99.0))));
            rows.push(Row::new(&label, format!("{what}: max"), Unit::Ms, each(&|s| pick(s).p(100.0))));
            rows.push(Row::new(
                &label,
                format!("{what}: requests"),
                Unit::Count,
                each(&|s| pick(s).ms.len() as f64),
            ));
            rows.push(Row::new(
                &label,
                format!("{what}: failed"),
                Unit::Count,
                each(&|s| pick(s).errors as f64),
            ));
        }
    }
    table(
        &format!(
            "### serve: `leadscore serve` on SQLite, rules only (`LEADSCORE_CONCURRENCY={}`), through HTTP",
            args.concurrency
        ),
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_sse_event() {
        assert_eq!(sse_first_event(b""), None);
        assert_eq!(sse_first_event(b"event: status\ndata: {\"id\""), None);
        assert_eq!(sse_first_event(b"event: status\ndata: {}\n\n").as_deref(), Some("status"));
        assert_eq!(sse_first_event(b":\n\nevent: error\r\ndata: gone\r\n\r\n").as_deref(), Some("error"));
        assert_eq!(sse_first_event(b"data: x\n\nevent: status\n").as_deref(), Some("message"));
        assert_eq!(sse_first_event(b": keep-alive\n\n"), None);
    }
}
