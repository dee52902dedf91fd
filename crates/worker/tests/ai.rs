//! Whole runs through the AI layer: worker pools (in-process and as `leadscore-worker` processes) against the fake
//! OpenAI-compatible server over HTTP, real databases and real Redis.

use leadscore_core::RunStatus;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leadscore_core::prompt::build_prompt;
use leadscore_core::{AiStatus, Intent, Lead, Offer, ScoreBasis};
use leadscore_fake_llm::{FakeConfig, FakeLlm, verdict_for};
use leadscore_llm::{Gate, LlmConfig};
use leadscore_store::test_support::TestDb;
use leadscore_store::{
    Backend, Control, DEFAULT_WORKSPACE, NewRun, Page, ResultFilter, ResultRecord, ResultScope, Selection,
    Store,
};
use leadscore_worker::{Ai, WorkerConfig};
use tokio::sync::watch;

const WS: &str = DEFAULT_WORKSPACE;

fn offer() -> Offer {
    Offer {
        name: "AI Outreach Automation".into(),
        value_props: vec!["24/7 outreach".into()],
        ideal_use_cases: vec!["B2B SaaS".into()],
    }
}

fn lead(i: usize) -> Lead {
    Lead {
        external_id: None,
        name: format!("Lead {i}"),
        role: if i.is_multiple_of(3) { "VP Sales".into() } else { "Account Executive".into() },
        company: format!("Company {i}"),
        industry: "B2B SaaS".into(),
        location: "Berlin".into(),
        linkedin_bio: format!("Builds outbound pipelines; lead number {i}"),
        attributes: vec![],
    }
}

async fn seed(store: &Store, n: usize) -> (String, String) {
    let offer = store.create_offer(WS, &offer()).await.expect("offer");
    let mut w = store.begin_upload(WS, None).await.expect("upload");
    let leads: Vec<(u64, Lead)> = (0..n).map(|i| (i as u64 + 2, lead(i))).collect();
    for chunk in leads.chunks(5000) {
        w.write_batch(chunk, &[]).await.expect("batch");
    }
    (offer.id, w.commit(&[]).await.expect("commit").id)
}

async fn fake(config: FakeConfig) -> (FakeLlm, String) {
    let fake = FakeLlm::new(config);
    let addr = fake.spawn("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
    (fake, format!("http://{addr}/v1"))
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis key prefix no other test uses.
fn unique_prefix(test: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("leadscore-test:{test}:{nanos}:")
}

async fn all_results(store: &Store, run_id: &str) -> Vec<ResultRecord> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_results(
                WS,
                &ResultScope::Run(run_id.to_string()),
                &ResultFilter::default(),
                &Page { limit: 1000, after },
            )
            .await
            .expect("results");
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => return out,
        }
    }
}

async fn wait_for(store: &Store, run_id: &str, status: RunStatus, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let run = store.get_run(WS, run_id).await.expect("run").expect("exists");
        if run.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run not {status} within {within:?}: {} {:?}",
            run.status,
            store.job_counts(run_id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn expected_intent(lead: &Lead) -> Intent {
    Intent::parse(verdict_for(&build_prompt(&offer(), lead).user).0).expect("intent")
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Postgres).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Sqlite).await } )* }
    };
}

both_backends!(
    a_run_survives_rate_limits_and_server_errors,
    verdicts_are_cached,
    cost_cap_pauses_the_run,
    injection_attacks_are_flagged_and_never_high
);

/// 2,000 leads, 20% of requests answered 429, 5% 500 and 10% with an invalid reply: every lead ends `succeeded`
/// with the fake's verdict, and the run's usage is exactly what the fake billed, invalid replies included.
async fn a_run_survives_rate_limits_and_server_errors(backend: Backend) {
    const N: usize = 2000;
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer_id, upload) = seed(s, N).await;
    let (fake, base) = fake(FakeConfig {
        p429: 0.2,
        p500: 0.05,
        p_malformed: 0.1,
        retry_after_ms: 20,
        ..FakeConfig::default()
    })
    .await;
    let mut llm = LlmConfig::for_base_url(&base, "gpt-4.1-mini");
    llm.rpm = 1_000_000;
    llm.tpm = 100_000_000;
    let (max_tries, prices) = (llm.max_tries, llm.prices);
    let ai = Ai::from_config(llm).expect("ai");
    let run = s
        .create_run(&NewRun::new(WS, &offer_id, &Selection::Upload(upload)))
        .await
        .map(|c| c.run)
        .expect("run");
    let (stop, stopped) = watch::channel(false);
    let config = WorkerConfig { concurrency: 64, ai: Some(ai), ..WorkerConfig::default() };
    let pool = tokio::spawn(leadscore_worker::run(s.clone(), config, stopped));
    wait_for(s, &run.id, RunStatus::Completed, Duration::from_secs(180)).await;
    let _ = stop.send(true);
    pool.await.expect("pool");

    let counts = s.job_counts(&run.id).await.expect("counts");
    assert_eq!((counts.total, counts.succeeded), (N as i64, N as i64), "{counts:?}");
    let results = all_results(s, &run.id).await;
    assert_eq!(results.len(), N);
    let by_name: HashMap<String, Lead> = (0..N).map(|i| (format!("Lead {i}"), lead(i))).collect();
    for r in &results {
        assert_eq!((r.scoring.score_basis, r.scoring.ai_status), (ScoreBasis::Hybrid, AiStatus::Ok), "{r:?}");
        let want = expected_intent(&by_name[&r.lead.lead.name]);
        assert_eq!(r.scoring.ai_intent, Some(want), "{}", r.lead.lead.name);
        assert!(r.prompt_tokens.is_some_and(|t| t > 0) && r.cost_usd.is_some_and(|c| c > 0.0), "{r:?}");
        assert_eq!(r.model.as_deref(), Some("gpt-4.1-mini"));
    }
    let stats = fake.stats();
    let limited = stats.statuses.get("429").copied().unwrap_or(0);
    assert!(limited > 200, "the fake did inject 429s: {stats:?}");
    let allowed = u64::from(max_tries) * leadscore_store::DEFAULT_MAX_ATTEMPTS as u64;
    assert!(stats.max_calls_per_prompt <= allowed, "a lead was called {} times", stats.max_calls_per_prompt);
    assert!(stats.malformed > 100, "the fake did send invalid replies: {stats:?}");
    let usage = s.run_usage(&run.id).await.expect("usage");
    let billed = (stats.prompt_tokens as i64, stats.completion_tokens as i64);
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), billed, "every billed token counts");
    let cost = prices.cost(stats.prompt_tokens, stats.completion_tokens);
    assert!((usage.cost_usd - cost).abs() < 1e-6, "{usage:?} against {cost}");
}

/// A second run over the same leads and offer is answered from the cache: no provider calls, marked `cached`.
async fn verdicts_are_cached(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer_id, upload) = seed(s, 50).await;
    let (fake, base) = fake(FakeConfig::default()).await;
    let ai = Ai::from_config(LlmConfig::for_base_url(&base, "gpt-4.1-mini")).expect("ai");
    let (stop, stopped) = watch::channel(false);
    let config = WorkerConfig {
        concurrency: 8,
        ai: Some(ai),
        poll: Duration::from_millis(20),
        ..WorkerConfig::default()
    };
    let pool = tokio::spawn(leadscore_worker::run(s.clone(), config, stopped));
    let first = s
        .create_run(&NewRun::new(WS, &offer_id, &Selection::Upload(upload.clone())))
        .await
        .map(|c| c.run)
        .expect("run");
    wait_for(s, &first.id, RunStatus::Completed, Duration::from_secs(60)).await;
    assert_eq!(fake.stats().requests, 50);
    let second = s
        .create_run(&NewRun::new(WS, &offer_id, &Selection::Upload(upload)))
        .await
        .map(|c| c.run)
        .expect("run");
    wait_for(s, &second.id, RunStatus::Completed, Duration::from_secs(60)).await;
    let _ = stop.send(true);
    pool.await.expect("pool");
    assert_eq!(fake.stats().requests, 50, "the second run made no call");
    let results = all_results(s, &second.id).await;
    assert_eq!(results.len(), 50);
    for r in results {
        assert_eq!((r.scoring.ai_status, r.scoring.score_basis), (AiStatus::Cached, ScoreBasis::Hybrid));
        assert_eq!(r.scoring.ai_intent, Some(expected_intent(&r.lead.lead)));
        assert_eq!((r.prompt_tokens, r.cost_usd), (Some(0), Some(0.0)));
    }
}

/// A run with `max_cost_usd` pauses once its results cost that much.
async fn cost_cap_pauses_the_run(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer_id, upload) = seed(s, 400).await;
    let (_fake, base) = fake(FakeConfig { latency_ms: 5, ..FakeConfig::default() }).await;
    let mut llm = LlmConfig::for_base_url(&base, "gpt-4.1-mini");
    // About 400 prompt tokens per lead: 1 USD per 1k prompt tokens makes each lead cost about 0.4 USD.
    llm.prices.input_per_mtok = 1_000_000.0 / 1_000.0;
    let ai = Ai::from_config(llm).expect("ai");
    let run = s
        .create_run(&NewRun::new(WS, &offer_id, &Selection::Upload(upload)).max_cost(Some(10.0)))
        .await
        .map(|c| c.run)
        .expect("run");
    let (stop, stopped) = watch::channel(false);
    let config = WorkerConfig { concurrency: 4, ai: Some(ai), ..WorkerConfig::default() };
    let pool = tokio::spawn(leadscore_worker::run(s.clone(), config, stopped));
    wait_for(s, &run.id, RunStatus::Paused, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(true);
    pool.await.expect("pool");
    let usage = s.run_usage(&run.id).await.expect("usage");
    let counts = s.job_counts(&run.id).await.expect("counts");
    assert!(usage.cost_usd >= 10.0, "{usage:?}");
    assert!(counts.succeeded < 100, "stopped soon after the cap, not at the end: {counts:?}");
    let paused = s.get_run(WS, &run.id).await.expect("run").expect("exists");
    assert!(paused.blocked_reason.as_deref().is_some_and(|r| r.contains("max_cost_usd")), "{paused:?}");

    // Resuming lifts the cap: the run finishes.
    s.control_run(WS, &run.id, Control::Resume).await.expect("resume").expect("exists");
    let (stop, stopped) = watch::channel(false);
    let (_fake2, base2) = fake(FakeConfig::default()).await;
    let ai = Ai::from_config(LlmConfig::for_base_url(&base2, "gpt-4.1-mini")).expect("ai");
    let config = WorkerConfig { concurrency: 16, ai: Some(ai), ..WorkerConfig::default() };
    let pool = tokio::spawn(leadscore_worker::run(s.clone(), config, stopped));
    wait_for(s, &run.id, RunStatus::Completed, Duration::from_secs(60)).await;
    let _ = stop.send(true);
    pool.await.expect("pool");
    let done = s.get_run(WS, &run.id).await.expect("run").expect("exists");
    assert_eq!((done.max_cost_usd, done.blocked_reason), (None, None));
}

fn worker_process(db_url: &str, base: &str, key: &str, prefix: &str, rpm: &str, concurrency: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_leadscore-worker"))
        .env("LEADSCORE_OPS_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", db_url)
        .env("OPENAI_BASE_URL", base)
        .env("OPENAI_API_KEY", key)
        .env("LEADSCORE_MODEL", "gpt-4.1-mini")
        .env("REDIS_URL", redis_url())
        .env("LEADSCORE_REDIS_PREFIX", prefix)
        .env("LEADSCORE_RPM", rpm)
        .env("LEADSCORE_CONCURRENCY", concurrency)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn leadscore-worker")
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A rejected key stops two worker processes at once: after the first 401 the fake receives at most the
/// requests already in flight, the run shows `blocked` with the provider's message, and an operator's resume
/// (after fixing the key) finishes it with AI verdicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_blocks_every_worker_until_resumed() {
    const CONCURRENCY: u64 = 8;
    let db = TestDb::new(Backend::Postgres).await;
    let s = &db.store;
    let (offer_id, upload) = seed(s, 300).await;
    let (fake, base) =
        fake(FakeConfig { api_key: Some("sk-right".into()), latency_ms: 20, ..FakeConfig::default() }).await;
    let prefix = unique_prefix("breaker");
    let c = CONCURRENCY.to_string();
    let _workers = Killed(vec![
        worker_process(&db.url, &base, "sk-wrong", &prefix, "6000", &c),
        worker_process(&db.url, &base, "sk-wrong", &prefix, "6000", &c),
    ]);
    let run = s
        .create_run(&NewRun::new(WS, &offer_id, &Selection::Upload(upload)))
        .await
        .map(|c| c.run)
        .expect("run");
    wait_for(s, &run.id, RunStatus::Blocked, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = fake.stats();
    let after = stats.after_first_401.expect("a 401 was answered");
    assert!(
        after <= 2 * CONCURRENCY,
        "{after} requests arrived after the first 401 (in flight at most {})",
        2 * CONCURRENCY
    );
    assert!(stats.requests <= 2 * CONCURRENCY + 1, "{stats:?}");
    let blocked = s.get_run(WS, &run.id).await.expect("run").expect("exists");
    assert!(blocked.blocked_reason.as_deref().is_some_and(|r| r.contains("401")), "{blocked:?}");
    assert_eq!(s.job_counts(&run.id).await.expect("counts").failed, 0, "no attempt was burnt");

    // The operator fixes the key at the provider side (the fake now accepts any) and resumes the run: the API
    // closes the shared breaker and puts the run back to work.
    fake.set_config(FakeConfig { latency_ms: 20, ..FakeConfig::default() });
    let mut llm = LlmConfig::for_base_url(&base, "gpt-4.1-mini");
    llm.redis_url = Some(redis_url());
    llm.redis_prefix = prefix.clone();
    Gate::for_config(&llm).expect("gate").reset().await.expect("reset");
    s.control_run(WS, &run.id, Control::Resume).await.expect("resume").expect("exists");
    wait_for(s, &run.id, RunStatus::Completed, Duration::from_secs(90)).await;
    let results = all_results(s, &run.id).await;
    assert_eq!(results.len(), 300);
    assert!(results.iter().all(|r| r.scoring.score_basis == ScoreBasis::Hybrid));
}

/// Two worker processes sharing a 600 requests/min budget in Redis stay under the provider's enforced limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_rate_limit() {
    const N: usize = 120;
    let db = TestDb::new(Backend::Postgres).await;
    let s = &db.store;
    let (offer_id, upload) = seed(s, N).await;
    let (fake, base) = fake(FakeConfig { rpm: Some(600), latency_ms: 30, ..FakeConfig::default() }).await;
    let prefix = unique_prefix("rpm");
    let _workers = Killed(vec![
        worker_process(&db.url, &base, "sk", &prefix, "600", "32"),
        worker_process(&db.url, &base, "sk", &prefix, "600", "32"),
    ]);
    let run = s
        .create_run(&NewRun::new(WS, &offer_id, &Selection::Upload(upload)))
        .await
        .map(|c| c.run)
        .expect("run");
    wait_for(s, &run.id, RunStatus::Completed, Duration::from_secs(120)).await;
    let stats = fake.stats();
    let limited = stats.statuses.get("429").copied().unwrap_or(0);
    assert!(stats.requests >= N as u64, "{stats:?}");
    assert!(limited * 100 <= stats.requests, "{limited} of {} requests were answered 429", stats.requests);
    let results = all_results(s, &run.id).await;
    assert!(results.iter().all(|r| r.scoring.score_basis == ScoreBasis::Hybrid));
}

/// The attack corpus written for the injection screen (crates/core/tests/data), one bio per line.
fn attack_bios() -> Vec<String> {
    include_str!("../../core/tests/data/injection_attacks.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| l.replace("\\n", "\n"))
        .collect()
}

/// Every attack of the corpus, as the bio of a decision maker in the ICP's industry, through a whole run against
/// the fake: each result carries `prompt_injection`, and none is High, although the fake's verdict is High for
/// some of them (asserted, so the test cannot pass by luck of the hash).
async fn injection_attacks_are_flagged_and_never_high(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let offer = s.create_offer(WS, &offer()).await.expect("offer");
    let bios = attack_bios();
    assert!(bios.len() >= 60, "the corpus holds {} attacks", bios.len());
    let leads: Vec<(u64, Lead)> = bios
        .iter()
        .enumerate()
        .map(|(i, bio)| (i as u64 + 2, Lead { role: "CEO".into(), linkedin_bio: bio.clone(), ..lead(i) }))
        .collect();
    let told_high = leads.iter().filter(|(_, l)| expected_intent(l) == Intent::High).count();
    assert!(told_high > 0, "the fake answers High for some attacks");
    let mut w = s.begin_upload(WS, None).await.expect("upload");
    w.write_batch(&leads, &[]).await.expect("batch");
    let upload = w.commit(&[]).await.expect("commit").id;
    let (fake, base) = fake(FakeConfig::default()).await;
    let ai = Ai::from_config(LlmConfig::for_base_url(&base, "gpt-4.1-mini")).expect("ai");
    let (stop, stopped) = watch::channel(false);
    let config = WorkerConfig {
        concurrency: 8,
        ai: Some(ai),
        poll: Duration::from_millis(20),
        ..WorkerConfig::default()
    };
    let pool = tokio::spawn(leadscore_worker::run(s.clone(), config, stopped));
    let run = s.create_run(&NewRun::new(WS, &offer.id, &Selection::Upload(upload))).await.expect("run").run;
    wait_for(s, &run.id, RunStatus::Completed, Duration::from_secs(60)).await;
    let _ = stop.send(true);
    pool.await.expect("pool");
    assert_eq!(fake.stats().requests, leads.len() as u64, "every attack still went to the model");
    let results = all_results(s, &run.id).await;
    assert_eq!(results.len(), leads.len());
    for r in results {
        let bio = &r.lead.lead.linkedin_bio;
        assert_eq!(r.scoring.flags, vec![leadscore_core::Flag::PromptInjection], "{bio:?}");
        assert_eq!(r.scoring.ai_status, AiStatus::Ok, "{bio:?}");
        assert_eq!(r.scoring.ai_intent, Some(Intent::Low), "{bio:?}");
        assert_ne!(r.scoring.intent, Intent::High, "{bio:?}");
    }
}
