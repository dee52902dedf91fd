//! The verdict cache is per workspace: two workspaces scoring the same leads against the same offer with the
//! same model each pay for their own verdicts, in the database cache (both stores) and in Redis.

use std::time::{Duration, Instant};

use leadscore_core::{AiStatus, Lead, RunStatus};
use leadscore_fake_llm::{FakeConfig, FakeLlm};
use leadscore_llm::LlmConfig;
use leadscore_store::test_support::{TestDb, sample_lead};
use leadscore_store::{
    Backend, DEFAULT_WORKSPACE, NewRun, Page, ResultFilter, ResultScope, Selection, Store,
};
use leadscore_worker::{Ai, WorkerConfig};
use tokio::sync::watch;

const LEADS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_database_cache() {
    verdicts_stay_in_their_workspace(Backend::Postgres, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_database_cache() {
    verdicts_stay_in_their_workspace(Backend::Sqlite, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache() {
    verdicts_stay_in_their_workspace(Backend::Postgres, true).await;
}

/// The same offer and leads in `ws`: (offer id, upload id).
async fn seed_in(store: &Store, ws: &str) -> (String, String) {
    let offer = leadscore_core::Offer {
        name: "AI Outreach Automation".into(),
        value_props: vec!["24/7 outreach".into()],
        ideal_use_cases: vec!["B2B SaaS".into()],
    };
    let offer = store.create_offer(ws, &offer).await.expect("offer");
    let mut w = store.begin_upload(ws, None).await.expect("upload");
    // Each lead's prompt differs from the others' (the name is not sent, so the bio carries the number).
    let leads: Vec<_> = (0..LEADS)
        .map(|i| {
            let lead = Lead {
                linkedin_bio: format!("Builds outbound pipelines; lead number {i}"),
                ..sample_lead(i)
            };
            (i as u64 + 2, lead)
        })
        .collect();
    w.write_batch(&leads, &[]).await.expect("batch");
    (offer.id, w.commit(&[]).await.expect("commit").id)
}

/// Runs the upload in `ws` to completion and returns the AI status of each result.
async fn score(store: &Store, ws: &str, offer_id: &str, upload: &str) -> Vec<AiStatus> {
    let selection = Selection::Upload(upload.to_owned());
    let run = store.create_run(&NewRun::new(ws, offer_id, &selection)).await.expect("run").run;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = store.get_run(ws, &run.id).await.expect("run").expect("exists");
        if now.status == RunStatus::Completed {
            break;
        }
        assert!(Instant::now() < deadline, "run not completed within 60 s: {}", now.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let page = Page { limit: 1000, after: None };
    let results = store
        .list_results(ws, &ResultScope::Run(run.id), &ResultFilter::default(), &page)
        .await
        .expect("results");
    results.items.into_iter().map(|r| r.scoring.ai_status).collect()
}

async fn verdicts_stay_in_their_workspace(backend: Backend, redis: bool) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let other = s.create_api_key("other", None).await.expect("key").workspace_id;
    let (offer_a, upload_a) = seed_in(s, DEFAULT_WORKSPACE).await;
    let (offer_b, upload_b) = seed_in(s, &other).await;

    let fake = FakeLlm::new(FakeConfig::default());
    let addr = fake.spawn("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
    let mut llm = LlmConfig::for_base_url(&format!("http://{addr}/v1"), "gpt-4.1-mini");
    if redis {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        llm.redis_url = Some(std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()));
        llm.redis_prefix = format!("leadscore-test:cache_scope:{nanos}:");
    }
    let ai = Ai::from_config(llm).expect("ai");
    let (stop, stopped) = watch::channel(false);
    let config = WorkerConfig {
        concurrency: 8,
        ai: Some(ai),
        poll: Duration::from_millis(20),
        ..WorkerConfig::default()
    };
    let pool = tokio::spawn(leadscore_worker::run(s.clone(), config, stopped));

    let first = score(s, DEFAULT_WORKSPACE, &offer_a, &upload_a).await;
    assert_eq!(first, vec![AiStatus::Ok; LEADS]);
    assert_eq!(fake.stats().requests, LEADS as u64);
    // The cache does work within a workspace (so the check below is not vacuous)...
    let again = score(s, DEFAULT_WORKSPACE, &offer_a, &upload_a).await;
    assert_eq!(again, vec![AiStatus::Cached; LEADS]);
    // ...and another workspace with the very same prompts gets verdicts of its own.
    let other_ws = score(s, &other, &offer_b, &upload_b).await;
    let _ = stop.send(true);
    pool.await.expect("pool");
    assert_eq!(other_ws, vec![AiStatus::Ok; LEADS], "another workspace's cached verdicts were served");
    assert_eq!(fake.stats().requests, 2 * LEADS as u64);
}
