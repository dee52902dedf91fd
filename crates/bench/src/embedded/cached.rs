//! The `cached` part: the embedded pipeline with the AI layer on, when every verdict comes from the cache.
//!
//! A fresh `leadscore serve` child on a fresh SQLite file, pointed at the fake OpenAI-compatible server running
//! in this process (no latency), with provider limits no run here can reach (`LEADSCORE_RPM` 10,000,000,
//! `LEADSCORE_TPM` 1,000,000,000: the defaults, 500 requests/min, would make run 1 take hours), a Redis prefix of
//! its own (should `REDIS_URL` be set, its cache starts empty too) and the keyless request limit off. It gets the
//! offer and an upload of `--cached-leads` generated leads; run 1 fills the verdict cache (its rate is reported
//! for information), run 2 over the same upload and offer takes every verdict from it. Each run is timed from
//! just before `POST /v1/leads/score` to the run's `finished_at`; the fake's request counter is read after each,
//! and run 2 may have sent at most 1% of its leads to it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use leadscore_fake_llm::{FakeConfig, FakeLlm};
use reqwest::StatusCode;
use serde_json::Value;

use super::{EmbeddedArgs, Row, Unit, table};
use crate::pipeline::{Server, finished_at};

const RUN_DEADLINE: Duration = Duration::from_secs(3600);

/// The fake provider (one for every round; its counters are reset before each run) and the upload's body.
pub(super) struct Setup {
    fake: FakeLlm,
    base_url: String,
    csv: Vec<u8>,
    leads: u64,
}

impl Setup {
    pub(super) async fn new(leads: u64) -> Result<Setup> {
        let fake = FakeLlm::new(FakeConfig::default());
        let addr = fake.spawn("127.0.0.1:0".parse()?).await?;
        let mut csv = Vec::new();
        crate::generate::write_csv(&mut csv, leads, 42)?;
        Ok(Setup { fake, base_url: format!("http://{addr}/v1"), csv, leads })
    }
}

pub(super) struct Sample {
    fill_per_sec: f64,
    fill_requests: u64,
    cached_per_sec: f64,
    cached_requests: u64,
    /// Results of run 2 with an AI verdict (`result_counts.hybrid`), and of run 1.
    cached_hybrid: i64,
    fill_hybrid: i64,
}

pub(super) async fn once(
    args: &EmbeddedArgs,
    bin: &Path,
    offer: &Value,
    setup: &Setup,
    dir: &Path,
) -> Result<Sample> {
    let url = format!("sqlite://{}", dir.join("cached.db").display());
    let concurrency = args.concurrency.to_string();
    let prefix = format!("leadscore-bench:embedded:{}:{}:", std::process::id(), dir.display());
    let (child, base) = crate::upload::spawn_server(
        bin,
        &url,
        &[
            ("LEADSCORE_CONCURRENCY", &concurrency),
            ("OPENAI_BASE_URL", &setup.base_url),
            ("OPENAI_API_KEY", "sk-bench"),
            ("LEADSCORE_RPM", "10000000"),
            ("LEADSCORE_TPM", "1000000000"),
            ("LEADSCORE_REDIS_PREFIX", &prefix),
            ("LEADSCORE_KEY_RATE_PER_SEC", "0"),
        ],
    )
    .await?;
    let server = Server { child, http: reqwest::Client::new(), base };
    let measured = measure(&server, offer, setup).await;
    server.stop().await;
    let s = measured?;
    eprintln!(
        "  cached: run 1 (fills the cache) {:.0} leads/s, {} provider requests, {} hybrid; \
         run 2 (from the cache) {:.0} leads/s, {} provider requests, {} hybrid",
        s.fill_per_sec, s.fill_requests, s.fill_hybrid, s.cached_per_sec, s.cached_requests, s.cached_hybrid
    );
    Ok(s)
}

async fn measure(server: &Server, offer: &Value, setup: &Setup) -> Result<Sample> {
    let (base, http) = (&server.base, &server.http);
    let offer = server.json(http.post(format!("{base}/v1/offers")).json(offer), "POST /v1/offers").await?;
    let offer_id = offer["id"].as_str().context("offer id")?;
    let request = http
        .post(format!("{base}/v1/leads/upload"))
        .header("content-type", "text/csv")
        .body(setup.csv.clone());
    let upload = server.json(request, "POST /v1/leads/upload").await?;
    if upload["rows_accepted"].as_u64() != Some(setup.leads) {
        bail!("upload accepted {} of {} rows", upload["rows_accepted"], setup.leads);
    }
    let upload_id = upload["upload_id"].as_str().context("upload_id")?;

    setup.fake.reset();
    let (fill_per_sec, fill_hybrid) = timed_run(server, offer_id, upload_id).await?;
    let fill_requests = setup.fake.stats().requests;
    if fill_hybrid == 0 || fill_requests == 0 {
        bail!(
            "run 1 made {fill_requests} provider requests and {fill_hybrid} hybrid results: is the AI layer on?"
        );
    }
    setup.fake.reset();
    let (cached_per_sec, cached_hybrid) = timed_run(server, offer_id, upload_id).await?;
    let cached_requests = setup.fake.stats().requests;
    if cached_requests > setup.leads / 100 {
        bail!(
            "run 2 sent {cached_requests} of {} leads to the provider: the verdict cache was not used",
            setup.leads
        );
    }
    Ok(Sample { fill_per_sec, fill_requests, cached_per_sec, cached_requests, cached_hybrid, fill_hybrid })
}

/// One run over the upload, from just before `POST /v1/leads/score` to its `finished_at`: (leads/s, hybrid
/// results).
async fn timed_run(server: &Server, offer_id: &str, upload_id: &str) -> Result<(f64, i64)> {
    let scored = server.score(offer_id, upload_id, None).await?;
    if scored.status != StatusCode::ACCEPTED {
        bail!("POST /v1/leads/score answered {}: {}", scored.status, scored.body);
    }
    let id = scored.body["id"].as_str().context("run id")?;
    let total = scored.body["job_counts"]["total"].as_i64().context("job_counts.total")?;
    let run = server.wait_finished(id, RUN_DEADLINE).await?;
    let secs = (finished_at(&run)?.0 - scored.sent).as_seconds_f64();
    let hybrid = run["result_counts"]["hybrid"].as_i64().context("result_counts.hybrid")?;
    Ok((total as f64 / secs, hybrid))
}

pub(super) fn report(args: &EmbeddedArgs, samples: &[Sample]) -> String {
    let each = |v: fn(&Sample) -> f64| samples.iter().map(v).collect::<Vec<f64>>();
    let label = format!("{} generated leads", crate::pipeline::thousands(args.cached_leads as f64));
    let rows = [
        Row::new(
            &label,
            "run 1, fills the cache (information)",
            Unit::Rate("leads/s"),
            each(|s| s.fill_per_sec),
        ),
        Row::new(&label, "run 1: provider requests", Unit::Count, each(|s| s.fill_requests as f64)),
        Row::new(&label, "run 1: hybrid results", Unit::Count, each(|s| s.fill_hybrid as f64)),
        Row::new(
            &label,
            "**run 2, every verdict from the cache**",
            Unit::Rate("leads/s"),
            each(|s| s.cached_per_sec),
        ),
        Row::new(&label, "run 2: provider requests", Unit::Count, each(|s| s.cached_requests as f64)),
        Row::new(&label, "run 2: hybrid results", Unit::Count, each(|s| s.cached_hybrid as f64)),
    ];
    table(
        &format!(
            "### cached: `leadscore serve` on SQLite with the AI layer on (fake provider in this process, \
             `LEADSCORE_CONCURRENCY={}`), `POST /v1/leads/score` to `finished_at`",
            args.concurrency
        ),
        &rows,
    )
}
