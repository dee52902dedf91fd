//! The worker pool and the queue against real databases (PostgreSQL and SQLite).

use leadscore_core::RunStatus;
use std::time::{Duration, Instant};

use leadscore_core::{Lead, Offer};
use leadscore_store::test_support::TestDb;
use leadscore_store::{
    Backend, Completion, Control, ControlOutcome, DEFAULT_WORKSPACE, NewRun, Page, ResultFilter, ResultScope,
    RunUsage, Selection, Store, StoreError,
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
    pause_resume_cancel,
    idle_pools_wake_on_enqueue,
    a_run_is_scored_end_to_end,
    stale_workers_change_nothing,
    failures_retry_then_fail,
    small_runs_are_not_starved,
    selections,
    tallies_follow_every_transition,
    pruning_keeps_counts_and_results,
    a_stray_lease_is_not_kept_alive
);

const WS: &str = DEFAULT_WORKSPACE;

fn lead(i: usize) -> Lead {
    Lead {
        external_id: None,
        name: format!("Lead {i}"),
        role: if i.is_multiple_of(2) { "CEO".into() } else { "Analyst".into() },
        company: "Acme".into(),
        industry: "B2B SaaS".into(),
        location: "Berlin".into(),
        linkedin_bio: "bio".into(),
        attributes: vec![],
    }
}

async fn seed(store: &Store, n: usize) -> (String, String) {
    let offer = Offer { name: "x".into(), value_props: vec![], ideal_use_cases: vec!["B2B SaaS".into()] };
    let offer = store.create_offer(WS, &offer).await.expect("offer");
    let mut w = store.begin_upload(WS, None).await.expect("upload");
    let leads: Vec<(u64, Lead)> = (0..n).map(|i| (i as u64 + 2, lead(i))).collect();
    w.write_batch(&leads, &[]).await.expect("batch");
    (offer.id, w.commit(&[]).await.expect("commit").id)
}

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

async fn stale_workers_change_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 1).await;
    let run =
        s.create_run(&NewRun::new(WS, &offer, &Selection::Upload(upload))).await.map(|c| c.run).expect("run");
    let a = s.claim_jobs("a", 10, Duration::from_millis(0)).await.expect("claim");
    assert_eq!(a.len(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(s.rescue_expired().await.expect("rescue"), 1, "a's lease expired");
    let b = s.claim_jobs("b", 10, Duration::from_secs(30)).await.expect("claim");
    assert_eq!((b.len(), b[0].attempts), (1, 2));
    // a finishes late, with a result and a failure (as if it had held two jobs): neither is written, but what
    // their calls cost is spent all the same.
    let late = [
        Completion::Succeeded { job: a[0].clone(), result: result_for(&lead(0), true) },
        Completion::Failed {
            job: a[0].clone(),
            error: "late".into(),
            retry_in: None,
            spent: RunUsage { prompt_tokens: 7, completion_tokens: 1, cost_usd: 0.000_001 },
        },
    ];
    assert_eq!(s.complete_jobs("a", &late).await.expect("complete"), 0, "a no longer holds the lease");
    let counts = s.job_counts(&run.id).await.expect("counts");
    assert_eq!(counts.running, 1);
    let t = s.run_tallies(&run.id).await.expect("tallies");
    assert_eq!((t.results.hybrid, t.usage.prompt_tokens, t.usage.completion_tokens), (0, 307, 21));
    assert_eq!(
        s.claim_jobs("c", 10, Duration::from_secs(30)).await.expect("claim").len(),
        0,
        "nothing to claim twice"
    );
}

async fn failures_retry_then_fail(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 1).await;
    let run =
        s.create_run(&NewRun::new(WS, &offer, &Selection::Upload(upload))).await.map(|c| c.run).expect("run");
    for attempt in 1..=5 {
        let jobs = s.claim_jobs("w", 10, Duration::from_secs(30)).await.expect("claim");
        assert_eq!(jobs.len(), 1, "attempt {attempt} is due at once (retry_in 0)");
        assert_eq!(jobs[0].attempts, attempt);
        let failed = Completion::Failed {
            job: jobs[0].clone(),
            error: format!("boom {attempt}"),
            retry_in: Some(Duration::ZERO),
            spent: RunUsage::default(),
        };
        assert_eq!(s.complete_jobs("w", &[failed]).await.expect("complete"), 1);
    }
    let counts = s.job_counts(&run.id).await.expect("counts");
    assert_eq!((counts.failed, counts.retrying), (1, 0), "failed after max_attempts");
    // A retry in the future is not claimable now.
    let (offer2, upload2) = seed(s, 1).await;
    s.create_run(&NewRun::new(WS, &offer2, &Selection::Upload(upload2))).await.map(|c| c.run).expect("run");
    let jobs = s.claim_jobs("w", 10, Duration::from_secs(30)).await.expect("claim");
    let later = Completion::Failed {
        job: jobs[0].clone(),
        error: "429".into(),
        retry_in: Some(Duration::from_secs(60)),
        spent: RunUsage::default(),
    };
    s.complete_jobs("w", &[later]).await.expect("complete");
    assert!(
        s.claim_jobs("w", 10, Duration::from_secs(30)).await.expect("claim").is_empty(),
        "backoff is respected"
    );
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

async fn selections(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 5).await;
    match s.create_run(&NewRun::new(WS, "no-such-offer", &Selection::AllUnscored)).await.map(|c| c.run) {
        Err(StoreError::OfferNotFound) => {}
        other => panic!("{other:?}"),
    }
    match s.create_run(&NewRun::new(WS, &offer, &Selection::Leads(vec!["nope".into()]))).await.map(|c| c.run)
    {
        Err(StoreError::EmptySelection) => {}
        other => panic!("{other:?}"),
    }
    let leads = s.list_leads(WS, Some(&upload), &Page { limit: 10, after: None }).await.expect("leads");
    let two: Vec<String> = leads.items.iter().take(2).map(|l| l.id.clone()).collect();
    let r = s.create_run(&NewRun::new(WS, &offer, &Selection::Leads(two))).await.map(|c| c.run).expect("run");
    assert_eq!(r.total, 2);
    let r2 =
        s.create_run(&NewRun::new(WS, &offer, &Selection::AllUnscored)).await.map(|c| c.run).expect("run");
    assert_eq!(r2.total, 3, "leads queued in another run of this offer are not unscored");
    assert!(matches!(
        s.create_run(&NewRun::new(WS, &offer, &Selection::AllUnscored)).await.map(|c| c.run),
        Err(StoreError::EmptySelection)
    ));
    assert_eq!(s.list_runs(WS, &Page { limit: 10, after: None }).await.expect("runs").items.len(), 2);
}

async fn pause_resume_cancel(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 10).await;
    let run =
        s.create_run(&NewRun::new(WS, &offer, &Selection::Upload(upload))).await.map(|c| c.run).expect("run");
    let run_id = run.id.clone();
    let control = |action| {
        let run_id = run_id.clone();
        async move { s.control_run(WS, &run_id, action).await.expect("control").expect("run exists") }
    };
    assert_eq!(control(Control::Pause).await, ControlOutcome::Applied(0));
    assert!(
        s.claim_jobs("w", 10, Duration::from_secs(30)).await.expect("claim").is_empty(),
        "a paused run is not claimed"
    );
    assert!(matches!(control(Control::Pause).await, ControlOutcome::Conflict(_)));
    assert_eq!(control(Control::Resume).await, ControlOutcome::Applied(0));
    let running = s.claim_jobs("w", 3, Duration::from_secs(30)).await.expect("claim");
    assert_eq!(running.len(), 3);
    assert_eq!(
        control(Control::Cancel).await,
        ControlOutcome::Applied(7),
        "the 7 jobs not started are cancelled"
    );
    assert_eq!(s.get_run(WS, &run.id).await.expect("run").expect("exists").status, RunStatus::Cancelling);
    let done: Vec<Completion> = running
        .into_iter()
        .map(|job| Completion::Failed { job, error: "x".into(), retry_in: None, spent: RunUsage::default() })
        .collect();
    let mut progress = s.subscribe_progress();
    assert_eq!(s.complete_jobs("w", &done).await.expect("complete"), 3, "running jobs finish");
    assert_eq!(
        s.get_run(WS, &run.id).await.expect("run").expect("exists").status,
        RunStatus::Cancelled,
        "the batch that wrote the last job settles its run (no sweep needed)"
    );
    assert_eq!(progress.try_recv().expect("progress announced"), run.id);
    let counts = s.job_counts(&run.id).await.expect("counts");
    assert_eq!((counts.cancelled, counts.failed, counts.total), (7, 3, 10));
    assert!(matches!(control(Control::Retry).await, ControlOutcome::Conflict(_)));
    assert_eq!(s.control_run(WS, "nope", Control::Cancel).await.expect("control"), None);
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

/// A result as the AI layer would write it: `hybrid`, or `rules_only` after invalid replies. Both were billed.
fn result_for(lead: &Lead, hybrid: bool) -> Box<leadscore_store::NewResult> {
    use leadscore_core::{AiOutcome, AiVerdict, Intent, Rules, Scoring};
    let offer = Offer { name: "x".into(), value_props: vec![], ideal_use_cases: vec!["B2B SaaS".into()] };
    let ai = if hybrid {
        AiOutcome::Verdict {
            verdict: AiVerdict { intent: Intent::High, reasoning: "fits".into() },
            cached: false,
        }
    } else {
        AiOutcome::Failed { error: "boom".into() }
    };
    Box::new(leadscore_store::NewResult {
        scoring: Scoring::compose(Rules::for_offer(&offer).score(lead), ai, vec![]),
        model: hybrid.then(|| "m".into()),
        prompt_version: None,
        prompt_tokens: Some(300),
        completion_tokens: Some(20),
        cost_usd: Some(0.000_123),
        latency_ms: None,
    })
}

/// The run's tallies (what a status poll reads) equal a `GROUP BY` over its jobs and results after every kind
/// of transition: claim, success, retry, failure, rescue, cancel, re-queue by `retry`, and compaction.
async fn tallies_follow_every_transition(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 40).await;
    let run =
        s.create_run(&NewRun::new(WS, &offer, &Selection::Upload(upload))).await.map(|c| c.run).expect("run");
    let run_id = run.id.as_str();
    let check = |what: &'static str| async move {
        let tallies = s.run_tallies(run_id).await.expect("tallies");
        assert_eq!(tallies.jobs, s.job_counts_by_scan(run_id).await.expect("scan"), "after {what}");
        tallies
    };
    assert_eq!(check("create").await.jobs.queued, 40);
    let jobs = s.claim_jobs("a", 30, Duration::from_secs(30)).await.expect("claim");
    assert_eq!(check("claim").await.jobs.running, jobs.len() as i64);
    let mut done = Vec::new();
    for (i, job) in jobs.iter().enumerate().take(20) {
        let result = result_for(&lead(i), i < 15);
        done.push(Completion::Succeeded { job: job.clone(), result });
    }
    // An attempt that was billed but produced no result (invalid replies): its spend counts all the same.
    done.push(Completion::Failed {
        job: jobs[20].clone(),
        error: "invalid reply".into(),
        retry_in: Some(Duration::ZERO),
        spent: RunUsage { prompt_tokens: 300, completion_tokens: 20, cost_usd: 0.000_123 },
    });
    done.push(Completion::Failed {
        job: jobs[21].clone(),
        error: "bad".into(),
        retry_in: None,
        spent: RunUsage::default(),
    });
    s.complete_jobs("a", &done).await.expect("complete");
    let t = check("completions").await;
    assert_eq!((t.jobs.succeeded, t.jobs.retrying, t.jobs.failed), (20, 1, 1));
    assert_eq!((t.results.hybrid, t.results.rules_only), (15, 5));
    assert_eq!((t.usage.prompt_tokens, t.usage.completion_tokens), (21 * 300, 21 * 20));
    assert!((t.usage.cost_usd - 21.0 * 0.000_123).abs() < 1e-9, "{}", t.usage.cost_usd);
    // Another worker dies holding jobs: they are rescued.
    let b = s.claim_jobs("b", 5, Duration::ZERO).await.expect("claim");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(s.rescue_expired().await.expect("rescue"), b.len() as u64);
    check("rescue").await;
    let rest: Vec<Completion> = jobs[22..]
        .iter()
        .map(|job| Completion::Succeeded { job: job.clone(), result: result_for(&lead(0), true) })
        .collect();
    s.complete_jobs("a", &rest).await.expect("complete");
    let work_off = |worker: &'static str| async move {
        loop {
            let jobs = s.claim_jobs(worker, 16, Duration::from_secs(30)).await.expect("claim");
            if jobs.is_empty() {
                break;
            }
            let done: Vec<Completion> = jobs
                .into_iter()
                .map(|job| Completion::Succeeded { job, result: result_for(&lead(0), true) })
                .collect();
            s.complete_jobs(worker, &done).await.expect("complete");
        }
    };
    work_off("c").await;
    let t = check("all worked").await;
    assert_eq!((t.jobs.total, t.jobs.succeeded, t.jobs.failed), (40, 39, 1));
    // `retry` re-queues the failed job and the 5 rules-only results; their new results replace the old ones.
    let moved = s.control_run(WS, &run.id, Control::Retry).await.expect("retry").expect("run");
    assert_eq!(moved, ControlOutcome::Applied(6));
    let t = check("retry").await;
    assert_eq!(t.jobs.queued, 6);
    // The run is active again: compaction folds its deltas (Postgres) and changes no count.
    let folded = s.compact_tallies().await.expect("compact");
    assert!(backend == Backend::Sqlite || folded > 0, "a delta per statement was folded");
    assert_eq!(check("compaction").await, t);
    work_off("d").await;
    let t = check("re-scored").await;
    assert_eq!((t.jobs.succeeded, t.results.hybrid, t.results.rules_only), (40, 40, 0));
    // 39 results, the billed attempt without one, and 6 new results: what replaced results cost stays spent.
    assert_eq!(t.usage.prompt_tokens, 46 * 300, "every billed call counts");
    assert!((t.usage.cost_usd - 46.0 * 0.000_123).abs() < 1e-9, "{}", t.usage.cost_usd);
    // Deleting a lead takes its job and result out of the counts, not what scoring it cost.
    assert!(s.delete_lead(WS, &jobs[0].lead_id).await.expect("delete"));
    let after = check("lead deleted").await;
    assert_eq!((after.jobs.total, after.jobs.succeeded, after.results.hybrid), (39, 39, 39));
    assert_eq!(after.usage, t.usage, "usage is what was spent");
    // Cancel: queued jobs are cancelled at once, running ones finish.
    let (offer, upload) = seed(s, 10).await;
    let other =
        s.create_run(&NewRun::new(WS, &offer, &Selection::Upload(upload))).await.map(|c| c.run).expect("run");
    let held = s.claim_jobs("e", 3, Duration::from_secs(30)).await.expect("claim");
    s.control_run(WS, &other.id, Control::Cancel).await.expect("cancel").expect("run");
    let c = s.job_counts(&other.id).await.expect("counts");
    assert_eq!((c.running, c.cancelled, c.total), (held.len() as i64, 10 - held.len() as i64, 10));
    assert_eq!(c, s.job_counts_by_scan(&other.id).await.expect("scan"));
}

/// One process at a time leads maintenance; when its connection ends, another takes over.
#[tokio::test]
async fn one_maintenance_leader_at_a_time() {
    let db = TestDb::new(Backend::Postgres).await;
    let other = Store::open(&db.url, &Default::default()).await.expect("second pool");
    let (mut a, mut b) = (leadscore_store::Leadership::default(), leadscore_store::Leadership::default());
    let first = db.store.lead_maintenance(&mut a).await.expect("a asks");
    let second = other.lead_maintenance(&mut b).await.expect("b asks");
    assert!(first ^ second, "exactly one leads: {first} {second}");
    let (leader, follower, follower_store) = if first { (a, &mut b, &other) } else { (b, &mut a, &db.store) };
    assert!(!follower_store.lead_maintenance(follower).await.expect("asks again"), "still led by the other");
    drop(leader); // its connection closes: the lock is free
    let deadline = Instant::now() + Duration::from_secs(5);
    while !follower_store.lead_maintenance(follower).await.expect("asks") {
        assert!(Instant::now() < deadline, "leadership did not pass on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(follower_store.lead_maintenance(follower).await.expect("keeps it"));
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
