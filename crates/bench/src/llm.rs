//! The AI layer under load, against the fake OpenAI-compatible server on this machine:
//! - LLM-bound throughput of an in-process worker pool at concurrency C with a 200 ms provider, next to the
//!   rules-only rate of the same pool on the same database in the same run;
//! - the cache-hit path (a second run over the same leads and offer);
//! - rate-limit utilisation of 1, 2 and 4 `leadscore-worker` processes sharing one Redis budget;
//! - tokens and cost per 1,000 leads of the shipped prompt and of the original service's prompt.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use leadscore_core::prompt::build_prompt;
use leadscore_core::{Lead, Offer};
use leadscore_fake_llm::{FakeConfig, FakeLlm};
use leadscore_llm::{LlmConfig, Prices};
use leadscore_store::{DEFAULT_WORKSPACE, NewRun, Selection, Store};
use leadscore_worker::{Ai, WorkerConfig};

#[derive(Debug, clap::Args)]
pub struct LlmArgs {
    #[command(flatten)]
    pub pg: crate::PgServer,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: String,
    /// The `leadscore-worker` binary (for the rate-limit part).
    #[arg(long, default_value = "target/release/leadscore-worker")]
    pub worker: PathBuf,
    /// Repetitions of each throughput measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Requests/min of the rate-limit part (enforced by the fake and configured as LEADSCORE_RPM).
    #[arg(long, default_value_t = 1200)]
    pub rpm: u32,
    /// Seconds of load per rate-limit measurement.
    #[arg(long, default_value_t = 30)]
    pub rate_secs: u64,
    /// Skip the rate-limit part (it needs the release `leadscore-worker` and takes a few minutes).
    #[arg(long)]
    pub no_rate: bool,
}

const WS: &str = DEFAULT_WORKSPACE;

pub(crate) fn offer() -> Offer {
    Offer {
        name: "AI Outreach Automation".into(),
        value_props: vec!["24/7 outreach".into(), "6x more meetings".into()],
        ideal_use_cases: vec!["B2B SaaS mid-market".into()],
    }
}

pub async fn run(args: &LlmArgs) -> Result<()> {
    leadscore_llm::install_crypto();
    let (url, name, store) = crate::upload::throwaway_database(&args.pg.database_url, "llm").await?;
    let offer_id = store.create_offer(WS, &offer()).await?.id;
    let result = async {
        throughput(args, &store, &offer_id).await?;
        if !args.no_rate {
            rate_limit(args, &url, &store, &offer_id).await?;
        }
        tokens_per_1000()
    }
    .await;
    store.close().await;
    crate::upload::psql(&args.pg.database_url, &format!("drop database {name} with (force)")).await?;
    result
}

/// Uploads `n` fresh leads (tagged, so no verdict is cached yet) and returns the upload id. Generated and written
/// 50,000 at a time, so a million leads never sit in memory at once.
pub(crate) async fn seed(store: &Store, n: u64, tag: &str) -> Result<String> {
    const CHUNK: u64 = 50_000;
    let mut w = store.begin_upload(WS, None).await?;
    let mut line = 2;
    for (i, start) in (0..n).step_by(CHUNK as usize).enumerate() {
        let leads = crate::generate::leads(CHUNK.min(n - start), 7 + i as u64, tag);
        let rows: Vec<(u64, Lead)> = leads
            .into_iter()
            .map(|l| {
                line += 1;
                (line - 1, l)
            })
            .collect();
        for chunk in rows.chunks(5000) {
            w.write_batch(chunk, &[]).await?;
        }
    }
    Ok(w.commit(&[]).await?.id)
}

/// Scores `upload` with a fresh in-process pool; returns leads/s from run creation to completion.
async fn timed_run(store: &Store, offer_id: &str, upload: &str, config: WorkerConfig) -> Result<f64> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let pool = tokio::spawn(leadscore_worker::run(store.clone(), config, stopped));
    let started = Instant::now();
    let run = store
        .create_run(&NewRun::new(WS, offer_id, &Selection::Upload(upload.to_owned())))
        .await
        .map(|c| c.run)?;
    wait_completed(store, &run.id, Duration::from_secs(600)).await?;
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    pool.await?;
    Ok(run.total as f64 / secs)
}

pub(crate) async fn wait_completed(store: &Store, run_id: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let run = store.get_run(WS, run_id).await?.context("run vanished")?;
        if run.status == leadscore_core::RunStatus::Completed {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("run {run_id} not completed in {within:?}: {:?}", store.job_counts(run_id).await?);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pool(concurrency: usize, ai: Option<std::sync::Arc<Ai>>) -> WorkerConfig {
    WorkerConfig { concurrency, ai, poll: Duration::from_millis(20), ..WorkerConfig::default() }
}

/// The median; of an even number of values, the mean of the middle two (with 2 repetitions, not the larger).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] }
}

async fn throughput(args: &LlmArgs, store: &Store, offer_id: &str) -> Result<()> {
    let fake = FakeLlm::new(FakeConfig { latency_ms: 200, ..FakeConfig::default() });
    let addr = fake.spawn("127.0.0.1:0".parse()?).await?;
    let mut llm = LlmConfig::for_base_url(&format!("http://{addr}/v1"), "gpt-4.1-mini");
    (llm.rpm, llm.tpm) = (10_000_000, 1_000_000_000);
    let ai = Ai::from_config(llm)?;

    let mut rules = Vec::new();
    for r in 0..args.runs {
        let upload = seed(store, 20_000, &format!("rules-{r}")).await?;
        rules.push(timed_run(store, offer_id, &upload, pool(1024, None)).await?);
    }
    let rules_rate = median(rules.clone());
    eprintln!("rules-only, concurrency 1024: {rules:.0?} leads/s");
    println!("| pool | leads per run | leads/s (median of {}) | ideal | achieved / ideal |", args.runs);
    println!("|---|---|---|---|---|");
    println!("| rules only, C = 1024 | 20,000 | {rules_rate:.0} | - | - |");
    for (c, n) in [(64usize, 3_000u64), (256, 10_000), (1024, 20_000)] {
        let mut rates = Vec::new();
        let mut last_upload = String::new();
        for r in 0..args.runs {
            last_upload = seed(store, n, &format!("c{c}-{r}")).await?;
            rates.push(timed_run(store, offer_id, &last_upload, pool(c, Some(ai.clone()))).await?);
        }
        let rate = median(rates.clone());
        let by_latency = c as f64 / 0.2;
        let ideal = if c >= 1024 { by_latency.min(rules_rate) } else { by_latency };
        eprintln!("AI, concurrency {c}: {rates:.0?} leads/s");
        println!("| AI at 200 ms, C = {c} | {n} | {rate:.0} | {ideal:.0} | {:.0}% |", 100.0 * rate / ideal);
        if c == 256 {
            let cached = timed_run(store, offer_id, &last_upload, pool(c, Some(ai.clone()))).await?;
            println!("| cache hits (same leads again), C = {c} | {n} | {cached:.0} | - | - |");
        }
    }
    let stats = fake.stats();
    eprintln!("fake: {} requests, max in flight {}", stats.requests, stats.max_in_flight);
    Ok(())
}

async fn rate_limit(args: &LlmArgs, url: &str, store: &Store, offer_id: &str) -> Result<()> {
    println!();
    println!(
        "| worker processes | limit (req/min) | achieved (req/min) | utilisation | 429 answers | requests |"
    );
    println!("|---|---|---|---|---|---|");
    for processes in [1usize, 2, 4] {
        let fake = FakeLlm::new(FakeConfig { latency_ms: 50, rpm: Some(args.rpm), ..FakeConfig::default() });
        let addr = fake.spawn("127.0.0.1:0".parse()?).await?;
        let prefix = format!("leadscore-bench:{}:{processes}:", std::process::id());
        let n = u64::from(args.rpm) * args.rate_secs / 60;
        let upload = seed(store, n, &format!("rate-{processes}")).await?;
        let mut children = Vec::new();
        for _ in 0..processes {
            children.push(
                tokio::process::Command::new(&args.worker)
                    .env("LEADSCORE_OPS_LISTEN", "127.0.0.1:0")
                    .env("DATABASE_URL", url)
                    .env("OPENAI_BASE_URL", format!("http://{addr}/v1"))
                    .env("OPENAI_API_KEY", "sk-bench")
                    .env("REDIS_URL", &args.redis_url)
                    .env("LEADSCORE_REDIS_PREFIX", &prefix)
                    .env("LEADSCORE_RPM", args.rpm.to_string())
                    .env("LEADSCORE_TPM", "100000000")
                    .env("LEADSCORE_CONCURRENCY", "64")
                    .env("RUST_LOG", "error")
                    .stdout(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("starting {}", args.worker.display()))?,
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        fake.reset();
        let run =
            store.create_run(&NewRun::new(WS, offer_id, &Selection::Upload(upload))).await.map(|c| c.run)?;
        wait_completed(store, &run.id, Duration::from_secs(args.rate_secs * 4 + 60)).await?;
        for mut c in children {
            let _ = c.kill().await;
        }
        let stats = fake.stats();
        let arrivals = &stats.arrivals_ms;
        let span_min = (arrivals.last().copied().unwrap_or(0) - arrivals.first().copied().unwrap_or(0))
            as f64
            / 60_000.0;
        // Requests the provider accepted, per minute of the run's span.
        let accepted = stats.statuses.get("200").copied().unwrap_or(0) as f64;
        let achieved = if span_min > 0.0 { (accepted - 1.0) / span_min } else { 0.0 };
        let limited = stats.statuses.get("429").copied().unwrap_or(0);
        println!(
            "| {processes} | {} | {achieved:.0} | {:.0}% | {limited} | {} |",
            args.rpm,
            100.0 * achieved / f64::from(args.rpm),
            stats.requests
        );
    }
    Ok(())
}

/// The original service's prompt, rebuilt from its README for the same lead and offer (free-text reply).
fn original_prompt(offer: &Offer, lead: &Lead) -> String {
    format!(
        "Analyze this lead's buying intent for our product:\n\nLEAD PROFILE:\n- Name: {}\n- Role: {}\n- Company: {}\n\
         - Industry: {}\n- Location: {}\n- Bio: {}\n\nOUR PRODUCT/OFFER:\n- Product: {}\n- Value Props: {}\n- ICP: {}\n\n\
         Evaluate:\n1. Decision-making authority?\n2. Industry/company match our ICP?\n3. Bio shows relevant pain points?\n\
         4. Overall likelihood of interest\n\nClassify: High, Medium, or Low\nFormat: Intent|Reasoning",
        lead.name,
        lead.role,
        lead.company,
        lead.industry,
        lead.location,
        lead.linkedin_bio,
        offer.name,
        offer.value_props.join(", "),
        offer.ideal_use_cases.join(", ")
    )
}

/// Prompt tokens at about 4 characters per token (what the fake server bills), per 1,000 generated leads.
fn tokens_per_1000() -> Result<()> {
    let offer = offer();
    let leads = crate::generate::leads(1000, 11, "");
    let tokens = |chars: usize, messages: u64| (chars as u64).div_ceil(4) + 4 * messages;
    let ours: u64 = leads
        .iter()
        .map(|l| {
            let p = build_prompt(&offer, l);
            tokens(p.system.chars().count() + p.user.chars().count(), 2)
        })
        .sum();
    let theirs: u64 = leads.iter().map(|l| tokens(original_prompt(&offer, l).chars().count(), 1)).sum();
    // Replies: ours is a JSON verdict with a one- or two-sentence reason (about 40 tokens); the original asks
    // for "Intent|Reasoning" without a length bound (gpt-3.5 typically wrote 60-120 tokens; 80 assumed).
    let (our_reply, their_reply) = (40u64 * 1000, 80u64 * 1000);
    let price = Prices::for_model("gpt-4.1-mini");
    println!();
    println!(
        "| prompt | prompt tokens / 1,000 leads | reply tokens / 1,000 leads (assumed) | cost / 1,000 leads at gpt-4.1-mini |"
    );
    println!("|---|---|---|---|");
    println!(
        "| leadscore {} | {ours} | {our_reply} | ${:.3} |",
        leadscore_core::prompt::PROMPT_VERSION,
        price.cost(ours, our_reply)
    );
    println!("| original service | {theirs} | {their_reply} | ${:.3} |", price.cost(theirs, their_reply));
    Ok(())
}
