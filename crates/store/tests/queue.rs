//! The queue's contract against real databases: claims, completions, leases, controls, run creation, tallies,
//! the results pager and run watches. Every test runs on PostgreSQL and SQLite, each in a fresh database; no
//! worker pool is involved (the pool's own tests are `crates/worker/tests/pool.rs`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use leadscore_core::{Lead, Offer, RunStatus, ScoreBasis, StopReason};
use leadscore_store::test_support::TestDb;
use leadscore_store::{
    Backend, Completion, Control, ControlOutcome, Created, DEFAULT_WORKSPACE, IdempotencyKey, NewRun, Page,
    ResultFilter, ResultRecord, ResultScope, RunRecord, RunUsage, Selection, Store, StoreError,
};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Postgres).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Sqlite).await } )* }
    };
}

both_backends!(
    stale_workers_change_nothing,
    failures_retry_then_fail,
    selections,
    pause_resume_cancel,
    a_cancelled_run_ends_when_its_jobs_come_back,
    tallies_follow_every_transition,
    every_control_follows_the_table,
    resume_lifts_only_a_cost_cap,
    idempotency_keys_are_race_free,
    list_runs_carries_tallies,
    the_pager_reads_every_result_once,
    a_watch_wakes_on_the_run_finishing,
    queue_depth_counts_unfinished_runs_and_due_jobs,
    a_job_twice_in_one_batch_is_written_by_its_first_completion,
);

const WS: &str = DEFAULT_WORKSPACE;

use leadscore_store::test_support::{sample_lead as lead, seed};

/// A run of `selection` against `offer`, without cap or key.
async fn create(s: &Store, offer: &str, selection: Selection) -> RunRecord {
    s.create_run(&NewRun::new(WS, offer, &selection)).await.expect("run").run
}

/// The upload's lead ids, in id order.
async fn lead_ids(s: &Store, upload: &str) -> Vec<String> {
    let page = s.list_leads(WS, Some(upload), &Page { limit: 1000, after: None }).await.expect("leads");
    page.items.into_iter().map(|l| l.id).collect()
}

/// Claims and completes every due job with a result (every fourth `rules_only`, the others `hybrid`) until
/// none is left. Returns how many were written.
async fn score_all(s: &Store) -> usize {
    let mut written = 0;
    loop {
        let work = s.claim_work("scorer", 16, Duration::from_secs(30)).await.expect("claim");
        if work.is_empty() {
            return written;
        }
        let done: Vec<Completion> = work
            .into_iter()
            .map(|w| {
                written += 1;
                let result = result_for(&w.lead.expect("lead exists").lead, !written.is_multiple_of(4));
                Completion::Succeeded { job: w.job, result }
            })
            .collect();
        s.complete_jobs("scorer", &done).await.expect("complete");
    }
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

/// A pool whose lease on a job was rescued while it still worked on it, and that claimed the job again, can
/// hand both attempts' completions to one batch: the first is written, the second is stale and adds only its
/// spend (a failure before a success must not leave the job `succeeded` without its result, nor a success
/// before a failure write the result twice).
async fn a_job_twice_in_one_batch_is_written_by_its_first_completion(backend: Backend) {
    for failure_first in [true, false] {
        let db = TestDb::new(backend).await;
        let s = &db.store;
        let (offer, upload) = seed(s, 1).await;
        let run = create(s, &offer, Selection::Upload(upload)).await;
        let old = s.claim_jobs("w", 10, Duration::from_millis(0)).await.expect("claim");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(s.rescue_expired().await.expect("rescue"), 1);
        let new = s.claim_jobs("w", 10, Duration::from_secs(30)).await.expect("claim again");
        assert_eq!((old.len(), new.len(), new[0].attempts), (1, 1, 2));
        let failed = Completion::Failed {
            job: old[0].clone(),
            error: "late".into(),
            retry_in: Some(Duration::ZERO),
            spent: RunUsage { prompt_tokens: 5, completion_tokens: 0, cost_usd: 0.0 },
        };
        let succeeded = Completion::Succeeded { job: new[0].clone(), result: result_for(&lead(0), true) };
        let batch = if failure_first { [failed, succeeded] } else { [succeeded, failed] };
        assert_eq!(s.complete_jobs("w", &batch).await.expect("complete"), 1, "one of the two is written");
        let counts = s.job_counts(&run.id).await.expect("counts");
        let t = s.run_tallies(&run.id).await.expect("tallies");
        let results = s
            .list_results(
                WS,
                &ResultScope::Run(run.id.clone()),
                &ResultFilter::default(),
                &Page { limit: 10, after: None },
            )
            .await
            .expect("results")
            .items;
        if failure_first {
            assert_eq!((counts.retrying, counts.succeeded, results.len()), (1, 0, 0), "{counts:?}");
        } else {
            assert_eq!((counts.succeeded, counts.retrying, results.len()), (1, 0, 1), "{counts:?}");
            assert_eq!(t.results.hybrid, 1);
        }
        // Both calls were billed: the stale completion's spend is counted as the written one's is.
        assert_eq!(t.usage.prompt_tokens, 305, "{:?}", t.usage);
    }
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

/// A job running when its run was cancelled that comes back to wait (a retryable failure, a deferral, a release
/// at shutdown) is never claimed again, since the run is not claimable: the maintenance sweep cancels it, and the
/// run ends `cancelled` instead of staying `cancelling` for ever.
async fn a_cancelled_run_ends_when_its_jobs_come_back(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 4).await;
    let run =
        s.create_run(&NewRun::new(WS, &offer, &Selection::Upload(upload))).await.map(|c| c.run).expect("run");
    let running = s.claim_jobs("w", 2, Duration::from_secs(30)).await.expect("claim");
    assert_eq!(running.len(), 2);
    s.control_run(WS, &run.id, Control::Cancel).await.expect("cancel").expect("run exists");
    let back: Vec<Completion> = vec![
        Completion::Failed {
            job: running[0].clone(),
            error: "timeout".into(),
            retry_in: Some(Duration::from_secs(60)),
            spent: RunUsage::default(),
        },
        Completion::Deferred {
            job: running[1].clone(),
            reason: "released".into(),
            retry_in: Duration::ZERO,
            spent: RunUsage::default(),
        },
    ];
    assert_eq!(s.complete_jobs("w", &back).await.expect("complete"), 2);
    let counts = s.job_counts(&run.id).await.expect("counts");
    assert_eq!((counts.retrying, counts.cancelled), (2, 2), "{counts:?}");
    assert_eq!(s.get_run(WS, &run.id).await.expect("run").expect("exists").status, RunStatus::Cancelling);
    assert!(s.claim_jobs("w", 10, Duration::from_secs(30)).await.expect("claim").is_empty(), "not claimable");
    assert_eq!(s.finish_idle_runs().await.expect("sweep"), 1, "the sweep finishes the run");
    let ended = s.get_run(WS, &run.id).await.expect("run").expect("exists");
    assert_eq!(ended.status, RunStatus::Cancelled);
    assert!(ended.finished_at.is_some());
    let counts = s.job_counts_by_scan(&run.id).await.expect("counts");
    assert_eq!((counts.cancelled, counts.total), (4, 4), "{counts:?}");
    assert_eq!(s.job_counts(&run.id).await.expect("tallies"), counts, "the tallies follow the sweep");
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

/// `now` as each backend stores a time column, `hours` back.
fn sql_time(backend: Backend, hours: u32) -> String {
    match backend {
        Backend::Postgres => format!("now() - interval '{hours} hours'"),
        Backend::Sqlite => format!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{hours} hours')"),
    }
}

/// Forces a fresh run of three queued jobs into `status` as the store would leave it there: one job failed (so
/// `retry` has one to re-queue), one running while the run has started and is not finished, the others queued
/// (succeeded or cancelled in a finished run); `stop_reason`, `started_at` and `finished_at` to match.
/// Returns whether a job is running and how many wait.
async fn force_run(db: &TestDb, run_id: &str, status: RunStatus) -> (bool, i64) {
    let s = &db.store;
    let jobs = s.list_jobs(run_id, None, &Page { limit: 10, after: None }).await.expect("jobs").items;
    let job = |i: usize| format!("run_id = '{run_id}' and lead_id = '{}'", jobs[i].lead_id);
    db.execute(&format!("update jobs set status = 'failed', attempts = 5 where {}", job(0))).await;
    let started = status != RunStatus::Queued;
    if started && !status.is_finished() {
        db.execute(&format!(
            "update jobs set status = 'running', attempts = 1, lease_owner = 'w', lease_expires_at = {} where {}",
            i64::MAX / 2,
            job(1)
        ))
        .await;
    }
    let rest = match status {
        RunStatus::Completed => "succeeded",
        RunStatus::Cancelled => "cancelled",
        _ => "queued",
    };
    db.execute(&format!("update jobs set status = '{rest}' where run_id = '{run_id}' and status = 'queued'"))
        .await;
    let stop_reason = match status {
        RunStatus::Paused => "'requested'",
        RunStatus::Blocked => "'provider_rejected'",
        _ => "null",
    };
    let now = sql_time(s.backend(), 0);
    let (started_at, finished_at) = (
        if started { now.as_str() } else { "null" },
        if status.is_finished() { now.as_str() } else { "null" },
    );
    let forced = db
        .execute(&format!(
            "update runs set status = '{status}', stop_reason = {stop_reason}, started_at = {started_at}, \
             finished_at = {finished_at} where id = '{run_id}'"
        ))
        .await;
    assert_eq!(forced, 1);
    let counts = s.job_counts_by_scan(run_id).await.expect("counts");
    (counts.running > 0, counts.queued)
}

/// Every control from every run status does what the core's table says: a conflict with the table's words
/// where it refuses (and nothing changes), else the table's target (a cancelled run without running jobs is
/// finished by the sweep at once), with the jobs the action moves.
async fn every_control_follows_the_table(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 3).await;
    for from in RunStatus::ALL {
        for control in [Control::Cancel, Control::Pause, Control::Resume, Control::Retry] {
            let case = format!("{control:?} from {from}");
            let run = create(s, &offer, Selection::Upload(upload.clone())).await;
            let (running, waiting) = force_run(&db, &run.id, from).await;
            let outcome = s.control_run(WS, &run.id, control).await.expect("control").expect("run exists");
            let after = s.get_run(WS, &run.id).await.expect("run").expect("exists");
            match from.on(control.event(), from != RunStatus::Queued) {
                Err(refused) => {
                    assert_eq!(outcome, ControlOutcome::Conflict(refused.to_string()), "{case}");
                    assert_eq!(after.status, from, "{case}: a refused control changes nothing");
                }
                Ok(target) => {
                    let (status, moved) = match control {
                        Control::Cancel if !running => (RunStatus::Cancelled, waiting),
                        Control::Cancel => (target, waiting),
                        Control::Retry => (target, 1),
                        Control::Pause | Control::Resume => (target, 0),
                    };
                    assert_eq!(outcome, ControlOutcome::Applied(moved as u64), "{case}");
                    assert_eq!(after.status, status, "{case}");
                }
            }
            let stopped = matches!(after.status, RunStatus::Paused | RunStatus::Blocked);
            assert_eq!(after.stop_reason.is_some(), stopped, "{case}: {:?}", after.stop_reason);
            assert_eq!(after.finished_at.is_some(), after.status.is_finished(), "{case}");
        }
    }
    // A retry with nothing to re-queue leaves a completed run as it is.
    let run = create(s, &offer, Selection::Upload(upload)).await;
    force_run(&db, &run.id, RunStatus::Completed).await;
    db.execute(&format!("update jobs set status = 'succeeded' where run_id = '{}'", run.id)).await;
    let outcome = s.control_run(WS, &run.id, Control::Retry).await.expect("retry").expect("run exists");
    let after = s.get_run(WS, &run.id).await.expect("run").expect("exists");
    assert_eq!(
        (outcome, after.status, after.finished_at.is_some()),
        (ControlOutcome::Applied(0), RunStatus::Completed, true)
    );
}

/// Resuming a run its cost cap paused lifts the cap (it would pause again at once otherwise); resuming a run
/// paused by request keeps its cap.
async fn resume_lifts_only_a_cost_cap(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 2).await;
    let selection = Selection::Upload(upload);
    let capped =
        s.create_run(&NewRun::new(WS, &offer, &selection).max_cost(Some(0.0001))).await.expect("run").run;
    let job = s.claim_jobs("w", 1, Duration::from_secs(30)).await.expect("claim").remove(0);
    let done = Completion::Succeeded { job, result: result_for(&lead(0), true) }; // billed 0.000123 USD
    assert_eq!(s.complete_jobs("w", &[done]).await.expect("complete"), 1);
    assert_eq!(s.pause_runs_over_budget(&[&capped.id]).await.expect("cap"), std::slice::from_ref(&capped.id));
    let requested =
        s.create_run(&NewRun::new(WS, &offer, &selection).max_cost(Some(1.0))).await.expect("run").run;
    let control = |id: String, action| async move { s.control_run(WS, &id, action).await.expect("control") };
    assert_eq!(control(requested.id.clone(), Control::Pause).await, Some(ControlOutcome::Applied(0)));
    let get = |id: String| async move { s.get_run(WS, &id).await.expect("run").expect("exists") };
    let stopped = |r: &RunRecord| (r.status, r.stop_reason, r.max_cost_usd);
    let cost_cap = Some(StopReason::CostCap);
    assert_eq!(stopped(&get(capped.id.clone()).await), (RunStatus::Paused, cost_cap, Some(0.0001)));
    let by_request = Some(StopReason::Requested);
    assert_eq!(stopped(&get(requested.id.clone()).await), (RunStatus::Paused, by_request, Some(1.0)));
    for id in [&capped.id, &requested.id] {
        assert!(matches!(control(id.clone(), Control::Resume).await, Some(ControlOutcome::Applied(_))));
    }
    assert_eq!(stopped(&get(capped.id.clone()).await), (RunStatus::Running, None, None), "the cap is lifted");
    assert_eq!(
        stopped(&get(requested.id.clone()).await),
        (RunStatus::Queued, None, Some(1.0)),
        "the cap stays"
    );
}

/// A run with an `Idempotency-Key` of the score route.
async fn create_keyed(
    s: &Store,
    offer: &str,
    selection: &Selection,
    key: &str,
    hash: &str,
) -> Result<Created, StoreError> {
    let idempotency = Some(IdempotencyKey { route: "/v1/leads/score", key, body_hash: hash });
    s.create_run(&NewRun { idempotency, ..NewRun::new(WS, offer, selection) }).await
}

/// Requests racing with one key create one run; the key refuses another body, survives a failed creation, and
/// is taken over once expired.
async fn idempotency_keys_are_race_free(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 3).await;
    let selection = Selection::Upload(upload);
    let racers: Vec<_> = (0..20)
        .map(|_| {
            let (s, offer, selection) = (s.clone(), offer.clone(), selection.clone());
            tokio::spawn(async move { create_keyed(&s, &offer, &selection, "k", "h").await.expect("create") })
        })
        .collect();
    let mut created = Vec::new();
    for racer in racers {
        created.push(racer.await.expect("racer"));
    }
    assert_eq!(created.iter().filter(|c| !c.replayed).count(), 1, "one creates, nineteen replay");
    let id = created[0].run.id.clone();
    assert!(created.iter().all(|c| c.run.id == id), "one run for all");
    let runs = || async { s.list_runs(WS, &Page { limit: 100, after: None }).await.expect("runs").items };
    assert_eq!(runs().await.iter().map(|v| v.run.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
    assert!(matches!(
        create_keyed(s, &offer, &selection, "k", "other body").await,
        Err(StoreError::IdempotencyMismatch)
    ));
    // A creation that fails leaves the key free for the request done right.
    let nobody = Selection::Leads(vec!["no-such-lead".into()]);
    assert!(matches!(create_keyed(s, &offer, &nobody, "k2", "h").await, Err(StoreError::EmptySelection)));
    let second = create_keyed(s, &offer, &selection, "k2", "h").await.expect("the key is free");
    assert!(!second.replayed && second.run.id != id);
    // An expired key stands for nothing: a new run takes it, and it stands for that one from then on.
    assert_eq!(
        db.execute(&format!(
            "update idempotency_keys set created_at = {} where key = 'k'",
            sql_time(backend, 25)
        ))
        .await,
        1
    );
    let third = create_keyed(s, &offer, &selection, "k", "h").await.expect("taken over");
    assert!(!third.replayed && third.run.id != id && third.run.id != second.run.id);
    let again = create_keyed(s, &offer, &selection, "k", "h").await.expect("replay");
    assert_eq!((again.replayed, again.run.id), (true, third.run.id));
    assert_eq!(runs().await.len(), 3);
}

/// A listing of runs (two to a page) shows each with the tallies its status poll shows.
async fn list_runs_carries_tallies(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 12).await;
    let ids = lead_ids(s, &upload).await;
    for n in [12, 5, 8, 3] {
        create(s, &offer, Selection::Leads(ids[..n].to_vec())).await;
    }
    let work = s.claim_work("w", 12, Duration::from_secs(30)).await.expect("claim");
    assert_eq!(work.len(), 12, "three of each run: the smallest is finished");
    let done: Vec<Completion> = work
        .into_iter()
        .enumerate()
        .map(|(i, w)| match i % 4 {
            3 => Completion::Failed {
                job: w.job,
                error: "x".into(),
                retry_in: None,
                spent: RunUsage::default(),
            },
            _ => Completion::Succeeded { job: w.job, result: result_for(&lead(i), i % 2 == 0) },
        })
        .collect();
    assert_eq!(s.complete_jobs("w", &done).await.expect("complete"), 12);
    let mut views = Vec::new();
    let mut page = Page { limit: 2, after: None };
    loop {
        let listed = s.list_runs(WS, &page).await.expect("runs");
        views.extend(listed.items);
        let Some(next) = listed.next_cursor else { break };
        page.after = Some(next);
    }
    assert_eq!(views.len(), 4);
    for view in &views {
        assert_eq!(
            view.tallies,
            s.run_tallies(&view.run.id).await.expect("tallies"),
            "run of {}",
            view.run.total
        );
        assert_eq!(view.tallies.jobs.total, view.run.total);
    }
    let finished: i64 = views.iter().map(|v| v.tallies.jobs.succeeded + v.tallies.jobs.failed).sum();
    let hybrid: i64 = views.iter().map(|v| v.tallies.results.hybrid).sum();
    assert_eq!((finished, hybrid), (12, 6));
    assert_eq!(views.iter().filter(|v| v.run.status == RunStatus::Completed).count(), 1);
}

/// What a result is: its key, run and version.
fn keys(results: &[ResultRecord]) -> Vec<(String, String, String, i64)> {
    results.iter().map(|r| (r.lead.id.clone(), r.offer_id.clone(), r.run_id.clone(), r.version)).collect()
}

/// Every page of `scope` after the other, `limit` to a page.
async fn read_pages(s: &Store, scope: &ResultScope, filter: &ResultFilter, limit: u32) -> Vec<ResultRecord> {
    let mut all = Vec::new();
    let mut page = Page { limit, after: None };
    loop {
        let listed = s.list_results(WS, scope, filter, &page).await.expect("page");
        assert!(listed.items.len() <= limit as usize);
        assert!(
            listed.items.iter().all(|r| passes(filter, r)),
            "a page holds only what the filter lets through"
        );
        all.extend(listed.items);
        let Some(next) = listed.next_cursor else { return all };
        page.after = Some(next);
    }
}

fn passes(filter: &ResultFilter, r: &ResultRecord) -> bool {
    filter.min_score.is_none_or(|min| r.scoring.final_score >= min)
        && filter.score_basis.is_none_or(|basis| r.scoring.score_basis == basis)
        && filter.intent.is_none_or(|intent| r.scoring.intent == intent)
}

/// Paging through results (a run's, the current ones of all offers or one) by 7 reads each exactly once, as
/// one big page does and the export stream does, with or without filters.
async fn the_pager_reads_every_result_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 25).await;
    let other = Offer { name: "y".into(), value_props: vec![], ideal_use_cases: vec![] };
    let other = s.create_offer(WS, &other).await.expect("offer").id;
    let ids = lead_ids(s, &upload).await;
    let first = create(s, &offer, Selection::Upload(upload)).await;
    create(s, &other, Selection::Leads(ids[..10].to_vec())).await;
    let rescored = create(s, &offer, Selection::Leads(ids[5..10].to_vec())).await;
    assert_eq!(score_all(s).await, 40);
    let current = ResultScope::Current { offer_id: None };
    let scopes = [
        (ResultScope::Run(first.id.clone()), 25),
        (current.clone(), 35), // 25 leads of the offer (5 re-scored: their newest result) and 10 of the other
        (ResultScope::Current { offer_id: Some(other.clone()) }, 10),
    ];
    let everything = Page { limit: 1000, after: None };
    let hybrid_90 =
        ResultFilter { min_score: Some(90), score_basis: Some(ScoreBasis::Hybrid), ..Default::default() };
    for (scope, n) in scopes {
        let all = s.list_results(WS, &scope, &ResultFilter::default(), &everything).await.expect("all").items;
        assert_eq!(
            (all.len(), s.count_results(WS, &scope).await.expect("count")),
            (n, n as i64),
            "{scope:?}"
        );
        let once: BTreeSet<_> = keys(&all).into_iter().map(|(lead, offer, ..)| (lead, offer)).collect();
        assert_eq!(once.len(), n, "{scope:?}: each (lead, offer) once");
        assert_eq!(keys(&read_pages(s, &scope, &ResultFilter::default(), 7).await), keys(&all), "{scope:?}");
        let stream = s.result_pages(WS.into(), scope.clone(), ResultFilter::default(), 7);
        let streamed: Vec<Vec<ResultRecord>> = stream.try_collect().await.expect("stream");
        assert!(streamed.iter().all(|p| p.len() <= 7));
        assert_eq!(keys(&streamed.concat()), keys(&all), "{scope:?}: streamed");
        let filtered = s.list_results(WS, &scope, &hybrid_90, &everything).await.expect("filtered").items;
        let expected: Vec<ResultRecord> = all.iter().filter(|r| passes(&hybrid_90, r)).cloned().collect();
        assert_eq!(keys(&filtered), keys(&expected), "{scope:?}: filtered");
        assert_eq!(
            keys(&read_pages(s, &scope, &hybrid_90, 7).await),
            keys(&expected),
            "{scope:?}: filtered pages"
        );
    }
    // The filter matters on both counts and spans pages.
    let all = s.list_results(WS, &current, &ResultFilter::default(), &everything).await.expect("all").items;
    assert!(
        all.iter().any(|r| r.scoring.score_basis == ScoreBasis::RulesOnly && r.scoring.final_score >= 90)
    );
    assert!(all.iter().any(|r| r.scoring.score_basis == ScoreBasis::Hybrid && r.scoring.final_score < 90));
    assert!(all.iter().filter(|r| passes(&hybrid_90, r)).count() > 7);
    let newest: BTreeSet<&str> =
        all.iter().filter(|r| r.offer_id == offer).map(|r| r.run_id.as_str()).collect();
    assert_eq!(newest, BTreeSet::from([first.id.as_str(), rescored.id.as_str()]));
    assert!(all.iter().filter(|r| r.run_id == rescored.id).all(|r| ids[5..10].contains(&r.lead.id)));
    let bad = Page { limit: 7, after: Some("no-tilde".into()) };
    assert!(matches!(
        s.list_results(WS, &current, &ResultFilter::default(), &bad).await,
        Err(StoreError::BadCursor)
    ));
}

/// A watch on a run wakes when another task completes the run's last jobs, and returns it finished.
async fn a_watch_wakes_on_the_run_finishing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 3).await;
    let run = create(s, &offer, Selection::Upload(upload)).await;
    let mut jobs = s.claim_jobs("w", 10, Duration::from_secs(30)).await.expect("claim");
    assert_eq!(jobs.len(), 3);
    let last = jobs.pop().expect("a job");
    let succeed = |job| Completion::Succeeded { job, result: result_for(&lead(0), true) };
    let first: Vec<Completion> = jobs.into_iter().map(succeed).collect();
    assert_eq!(s.complete_jobs("w", &first).await.expect("complete"), 2);
    let mut watch = s.watch_run(WS, &run.id);
    let writer = {
        let (s, done) = (s.clone(), [succeed(last)]);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.complete_jobs("w", &done).await.expect("complete")
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let finished = watch.finished(deadline).await.expect("watch").expect("run exists");
    assert_eq!(finished.status, RunStatus::Completed);
    assert!(finished.finished_at.is_some());
    assert_eq!(writer.await.expect("writer"), 1);
}

/// (queued, running, retrying, failed) of the queue-depth reading, and whether a job is due.
async fn depth(s: &Store) -> ((i64, i64, i64, i64), bool) {
    use leadscore_core::JobStatus;
    let d = s.queue_depth().await.expect("depth");
    let by = |status| d.get(status);
    let counts =
        (by(JobStatus::Queued), by(JobStatus::Running), by(JobStatus::Retrying), by(JobStatus::Failed));
    (counts, d.oldest_due > Duration::ZERO)
}

/// The queue gauges' reading: jobs of unfinished runs by status (paused runs included, finished runs not), and
/// how long the oldest claimable job has waited (jobs of paused runs and retries not yet due do not count).
async fn queue_depth_counts_unfinished_runs_and_due_jobs(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    assert_eq!(depth(s).await, ((0, 0, 0, 0), false), "an empty queue");
    let (offer, upload) = seed(s, 6).await;
    let a = create(s, &offer, Selection::Upload(upload)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(depth(s).await, ((6, 0, 0, 0), true));

    let jobs = s.claim_jobs("w", 2, Duration::from_secs(30)).await.expect("claim");
    assert_eq!(depth(s).await, ((4, 2, 0, 0), true));
    let failed = |job: &leadscore_store::ClaimedJob, retry_in| Completion::Failed {
        job: job.clone(),
        error: "boom".into(),
        retry_in,
        spent: RunUsage::default(),
    };
    let done = [failed(&jobs[0], None), failed(&jobs[1], Some(Duration::from_secs(3600)))];
    assert_eq!(s.complete_jobs("w", &done).await.expect("complete"), 2);
    assert_eq!(depth(s).await, ((4, 0, 1, 1), true));

    let paused = s.control_run(WS, &a.id, Control::Pause).await.expect("pause");
    assert!(matches!(paused, Some(ControlOutcome::Applied(_))), "{paused:?}");
    assert_eq!(depth(s).await, ((4, 0, 1, 1), false), "a paused run's jobs wait, but none is claimable");

    let (offer2, upload2) = seed(s, 3).await;
    create(s, &offer2, Selection::Upload(upload2)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(depth(s).await, ((7, 0, 1, 1), true));
    assert_eq!(score_all(s).await, 3, "only the second run is claimable");
    assert_eq!(depth(s).await, ((4, 0, 1, 1), false), "a completed run's jobs are not counted");

    s.control_run(WS, &a.id, Control::Resume).await.expect("resume");
    assert_eq!(depth(s).await, ((4, 0, 1, 1), true), "resumed: its queued jobs are due again");
}
