//! The worker pool against real databases (PostgreSQL and SQLite). The queue's own contract, which needs no
//! pool, is tested next to it: `crates/store/tests/queue.rs`.

use leadscore_core::RunStatus;
use std::time::{Duration, Instant};

use leadscore_store::test_support::TestDb;
use leadscore_store::{
    Backend, DEFAULT_WORKSPACE, NewRun, Page, ResultFilter, ResultScope, Selection, Store,
};
use leadscore_worker::WorkerConfig;
use tokio::sync::watch;

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Postgres).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Sqlite).await } )* }
    };
}

both_backends!(
    idle_pools_wake_on_enqueue,
    a_run_is_scored_end_to_end,
    small_runs_are_not_starved,
    pruning_keeps_counts_and_results,
    a_stray_lease_is_not_kept_alive
);

const WS: &str = DEFAULT_WORKSPACE;

use leadscore_store::test_support::seed;

fn start_pool(store: &Store, concurrency: usize) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    let config = WorkerConfig { concurrency, poll: Duration::from_millis(20), ..WorkerConfig::default() };
    (stop, tokio::spawn(leadscore_worker::run(store.clone(), config, stopped)))
}

async fn wait_completed(store: &Store, run_id: &str, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let run = store.get_run(WS, run_id).await.expect("run").expect("exists");
        if run.status == RunStatus::Completed {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} not completed in {within:?}: {:?}",
            store.job_counts(run_id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_run_is_scored_end_to_end(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 300).await;
    let run =
        s.create_run(&NewRun::new(WS, &offer, &Selection::Upload(upload))).await.map(|c| c.run).expect("run");
    assert_eq!((run.total, run.status.as_str()), (300, "queued"));
    let (stop, pool) = start_pool(s, 16);
    wait_completed(s, &run.id, Duration::from_secs(30)).await;
    let counts = s.job_counts(&run.id).await.expect("counts");
    assert_eq!((counts.total, counts.succeeded), (300, 300));
    assert_eq!(s.result_counts(&run.id).await.expect("results").rules_only, 300);
    let page = s
        .list_results(
            WS,
            &ResultScope::Run(run.id.to_string()),
            &ResultFilter::default(),
            &Page { limit: 1000, after: None },
        )
        .await
        .expect("results");
    assert_eq!(page.items.len(), 300);
    let ceo = page.items.iter().find(|r| r.lead.lead.role == "CEO").expect("a CEO");
    assert_eq!((ceo.scoring.rule.score, ceo.scoring.final_score, ceo.version), (50, 100, 1));
    let high = s
        .list_results(
            WS,
            &ResultScope::Run(run.id.to_string()),
            &ResultFilter { min_score: Some(70), ..Default::default() },
            &Page { limit: 1000, after: None },
        )
        .await
        .expect("filtered");
    assert_eq!(high.items.len(), 150);
    let finished = s.get_run(WS, &run.id).await.expect("run").expect("exists");
    assert!(finished.started_at.is_some() && finished.finished_at.is_some());
    stop.send(true).expect("stop");
    pool.await.expect("pool drains and exits");
}

async fn small_runs_are_not_starved(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, big_upload) = seed(s, 3000).await;
    let (_, small_upload) = seed(s, 10).await;
    let big = s
        .create_run(&NewRun::new(WS, &offer, &Selection::Upload(big_upload)))
        .await
        .map(|c| c.run)
        .expect("big run");
    let small = s
        .create_run(&NewRun::new(WS, &offer, &Selection::Upload(small_upload)))
        .await
        .map(|c| c.run)
        .expect("small run");
    let (stop, pool) = start_pool(s, 8);
    let small_done = wait_completed(s, &small.id, Duration::from_secs(60)).await;
    let big_counts = s.job_counts(&big.id).await.expect("counts");
    assert!(
        !big_counts.is_idle(),
        "the small run finished while the big one was still working: {big_counts:?}"
    );
    wait_completed(s, &big.id, Duration::from_secs(120)).await;
    assert!(small_done.elapsed() > Duration::ZERO);
    stop.send(true).expect("stop");
    pool.await.expect("pool");
}

/// An idle pool picks new work up at once: through the in-process signal, and on Postgres through
/// `LISTEN/NOTIFY` from another process's store (here: a second, independent connection pool).
async fn idle_pools_wake_on_enqueue(backend: Backend) {
    let db = TestDb::new(backend).await;
    let worker_store = match backend {
        Backend::Postgres => Store::open(&db.url, &Default::default()).await.expect("second store"),
        Backend::Sqlite => db.store.clone(),
    };
    let (stop, stopped) = watch::channel(false);
    let config = WorkerConfig { concurrency: 4, poll: Duration::from_secs(30), ..WorkerConfig::default() };
    let pool = tokio::spawn(leadscore_worker::run(worker_store, config, stopped));
    tokio::time::sleep(Duration::from_millis(500)).await; // the pool is idle, listening
    let (offer, upload) = seed(&db.store, 3).await;
    let started = Instant::now();
    let run = db
        .store
        .create_run(&NewRun::new(WS, &offer, &Selection::Upload(upload)))
        .await
        .map(|c| c.run)
        .expect("run");
    wait_completed(&db.store, &run.id, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken, not polled (poll is 30 s): {:?}",
        started.elapsed()
    );
    stop.send(true).expect("stop");
    pool.await.expect("pool");
}

/// Pruning the finished jobs of an old run keeps its counts and results.
async fn pruning_keeps_counts_and_results(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 30).await;
    let run =
        s.create_run(&NewRun::new(WS, &offer, &Selection::Upload(upload))).await.map(|c| c.run).expect("run");
    let (stop, pool) = start_pool(s, 8);
    wait_completed(s, &run.id, Duration::from_secs(30)).await;
    stop.send(true).expect("stop");
    pool.await.expect("pool exits");
    let before = s.run_tallies(&run.id).await.expect("tallies");
    assert_eq!(s.prune_finished_jobs(Duration::from_secs(3600)).await.expect("prune"), 0, "not old yet");
    assert_eq!(s.prune_finished_jobs(Duration::ZERO).await.expect("prune"), 30);
    assert_eq!(s.job_counts_by_scan(&run.id).await.expect("scan").total, 0, "the jobs are gone");
    assert_eq!(s.run_tallies(&run.id).await.expect("tallies"), before, "counts stay");
    let page = s
        .list_results(
            WS,
            &ResultScope::Run(run.id.to_string()),
            &ResultFilter::default(),
            &Page { limit: 100, after: None },
        )
        .await
        .expect("results");
    assert_eq!(page.items.len(), 30, "results stay");
    assert_eq!(s.prune_finished_jobs(Duration::ZERO).await.expect("prune"), 0, "nothing left to prune");
}

/// A job leased under the pool's id that the pool does not work on (its claim answer was lost) is not renewed
/// by the pool: its lease expires, it is rescued, and the pool scores it.
async fn a_stray_lease_is_not_kept_alive(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 1).await;
    let run =
        s.create_run(&NewRun::new(WS, &offer, &Selection::Upload(upload))).await.map(|c| c.run).expect("run");
    let stray = s.claim_jobs("pool-p", 10, Duration::from_secs(1)).await.expect("claim");
    assert_eq!(stray.len(), 1);
    let (stop, stopped) = watch::channel(false);
    let config = WorkerConfig {
        id: "pool-p".into(),
        concurrency: 4,
        lease: Duration::from_secs(2),
        poll: Duration::from_millis(20),
        ..WorkerConfig::default()
    };
    let pool = tokio::spawn(leadscore_worker::run(s.clone(), config, stopped));
    wait_completed(s, &run.id, Duration::from_secs(15)).await;
    let jobs = s.list_jobs(&run.id, None, &Page { limit: 10, after: None }).await.expect("jobs");
    assert_eq!((jobs.items[0].status.as_str(), jobs.items[0].attempts), ("succeeded", 2), "{:?}", jobs.items);
    stop.send(true).expect("stop");
    pool.await.expect("pool exits");
}
