//! Crash safety with real processes: a `leadscore-worker` killed with SIGKILL mid-run loses nothing.

use leadscore_core::RunStatus;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leadscore_core::{Lead, Offer};
use leadscore_store::test_support::TestDb;
use leadscore_store::{Backend, DEFAULT_WORKSPACE, NewRun, Selection};

const WS: &str = DEFAULT_WORKSPACE;
const LEADS: usize = 10_000;

fn worker(url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_leadscore-worker"))
        .env("LEADSCORE_OPS_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", url)
        .env("LEADSCORE_CONCURRENCY", "64")
        .env("LEADSCORE_LEASE_SECS", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn leadscore-worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_loses_nothing() {
    let db = TestDb::new(Backend::Postgres).await;
    let s = &db.store;
    let offer = s
        .create_offer(
            WS,
            &Offer { name: "x".into(), value_props: vec![], ideal_use_cases: vec!["SaaS".into()] },
        )
        .await
        .expect("offer");
    let mut w = s.begin_upload(WS, None).await.expect("upload");
    let leads: Vec<(u64, Lead)> = (0..LEADS)
        .map(|i| {
            let lead = Lead {
                external_id: None,
                name: format!("Lead {i}"),
                role: "CEO".into(),
                company: "Acme".into(),
                industry: "SaaS".into(),
                location: "Oslo".into(),
                linkedin_bio: "bio".into(),
                attributes: vec![],
            };
            (i as u64 + 2, lead)
        })
        .collect();
    for chunk in leads.chunks(5000) {
        w.write_batch(chunk, &[]).await.expect("batch");
    }
    let upload = w.commit(&[]).await.expect("commit").id;
    let run = s
        .create_run(&NewRun::new(WS, &offer.id, &Selection::Upload(upload)))
        .await
        .map(|c| c.run)
        .expect("run");

    let mut first = worker(&db.url);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = s.job_counts(&run.id).await.expect("counts");
        if c.succeeded >= 500 {
            break;
        }
        assert!(Instant::now() < deadline, "the first worker made no progress: {c:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().expect("SIGKILL"); // no drain, no goodbye: leases are left behind
    first.wait().expect("reaped");
    let after_kill = s.job_counts(&run.id).await.expect("counts");
    assert!(after_kill.succeeded < LEADS as i64, "killed mid-run: {after_kill:?}");

    let mut second = worker(&db.url);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = s.get_run(WS, &run.id).await.expect("run").expect("exists");
        if run.status == RunStatus::Completed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not completed after the restart: {:?}",
            s.job_counts(&run.id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = second.kill();
    let _ = second.wait();
    let c = s.job_counts(&run.id).await.expect("counts");
    assert_eq!((c.total, c.succeeded, c.running, c.failed), (LEADS as i64, LEADS as i64, 0, 0), "{c:?}");
    assert_eq!(c, s.job_counts_by_scan(&run.id).await.expect("scan"), "tallies equal a GROUP BY");
    let results = s.result_counts(&run.id).await.expect("results");
    assert_eq!(results.rules_only, LEADS as i64, "exactly one current result per lead");
}
