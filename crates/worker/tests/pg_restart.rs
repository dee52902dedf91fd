//! A PostgreSQL restart under a running `leadscore-worker` process: the worker reconnects and carries on, and
//! every lead ends with exactly one result. The test starts its own throwaway cluster on its own port (never
//! the shared server), with the `initdb` / `pg_ctl` of the installed PostgreSQL.

use leadscore_core::RunStatus;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leadscore_core::{Lead, Offer};
use leadscore_store::{ConnectOptions, DEFAULT_WORKSPACE, NewRun, Selection, Store};

const WS: &str = DEFAULT_WORKSPACE;
const LEADS: usize = 10_000;

fn worker(url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_leadscore-worker"))
        .env("LEADSCORE_OPS_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", url)
        .env("LEADSCORE_CONCURRENCY", "64")
        .env("LEADSCORE_LEASE_SECS", "5")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn leadscore-worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_a_running_worker_loses_nothing() {
    let cluster = support::cluster::Cluster::new("pg-restart");
    cluster.start();
    let url = cluster.url();
    let store = Store::connect_lazy(&url, &ConnectOptions::default()).expect("url");
    store.migrate().await.expect("migrate");
    let offer = Offer { name: "x".into(), value_props: vec![], ideal_use_cases: vec!["SaaS".into()] };
    let offer = store.create_offer(WS, &offer).await.expect("offer");
    let mut w = store.begin_upload(WS, None).await.expect("upload");
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
    let run = store
        .create_run(&NewRun::new(WS, &offer.id, &Selection::Upload(upload)))
        .await
        .map(|c| c.run)
        .expect("run");

    let mut worker = worker(&url);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = store.job_counts(&run.id).await.expect("counts");
        if c.succeeded >= 300 {
            assert!(c.succeeded < LEADS as i64 / 2, "the restart must come mid-run: {c:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the worker made no progress: {c:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(worker.try_wait().expect("worker status").is_none(), "the worker survives the outage");
    cluster.start();

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match store.get_run(WS, &run.id).await {
            Ok(Some(r)) if r.status == RunStatus::Completed => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "not completed after the restart: {:?}\n{}",
            store.job_counts(&run.id).await,
            cluster.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = worker.kill();
    let _ = worker.wait();
    let counts = store.job_counts(&run.id).await.expect("counts");
    assert_eq!((counts.succeeded, counts.running), (LEADS as i64, 0), "{counts:?}");
    let results = store.result_counts(&run.id).await.expect("result counts");
    assert_eq!(
        results.hybrid + results.rules_only,
        LEADS as i64,
        "one result per lead (keyed by run and lead)"
    );
    store.close().await;
}
