//! A PostgreSQL restart under a running `leadscore-worker` process: the worker reconnects and carries on, and
//! every lead ends with exactly one result. The test starts its own throwaway cluster on its own port (never
//! the shared server), with the `initdb` / `pg_ctl` of the installed PostgreSQL.

use leadscore_core::RunStatus;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leadscore_core::{Lead, Offer};
use leadscore_store::{ConnectOptions, DEFAULT_WORKSPACE, NewRun, Selection, Store};

const WS: &str = DEFAULT_WORKSPACE;
const LEADS: usize = 10_000;

/// A throwaway cluster; stopped and deleted on drop.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    fn pg_ctl(&self, args: &[&str]) -> bool {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let mut full: Vec<String> = vec![
            self.bin.join("pg_ctl").display().to_string(),
            "-D".into(),
            data.display().to_string(),
            "-l".into(),
            log.display().to_string(),
        ];
        full.extend(args.iter().map(|a| (*a).to_owned()));
        run(&full, self.as_postgres)
    }

    fn start(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.display());
        assert!(self.pg_ctl(&["-w", "-o", &opts, "start"]), "pg_ctl start: {}", self.log());
    }

    fn stop(&self) {
        assert!(self.pg_ctl(&["-w", "-m", "fast", "stop"]), "pg_ctl stop: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(args: &[String], as_postgres: bool) -> bool {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).args(args);
        c
    } else {
        let mut c = Command::new(&args[0]);
        c.args(&args[1..]);
        c
    };
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(55_432, |a| a.port())
}

/// The newest installed PostgreSQL's binaries, if any.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent().and_then(Path::file_name).and_then(|n| n.to_str()).and_then(|n| n.parse::<u32>().ok())
    });
    versions.pop()
}

fn throwaway_cluster() -> Cluster {
    let bin = postgres_bin().expect("PostgreSQL's initdb (scripts/test installs the postgresql package)");
    let dir = std::env::temp_dir().join(format!("leadscore-pg-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    // initdb refuses to run as root: run the cluster as the postgres user then.
    let as_postgres = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if as_postgres {
        assert!(run(&["chown".into(), "postgres".into(), dir.display().to_string()], false), "chown");
    }
    let initdb = vec![
        bin.join("initdb").display().to_string(),
        "-D".into(),
        dir.join("data").display().to_string(),
        "-A".into(),
        "trust".into(),
        "-U".into(),
        "postgres".into(),
    ];
    assert!(run(&initdb, as_postgres), "initdb failed");
    let cluster = Cluster { bin, dir, port: free_port(), as_postgres };
    cluster.start();
    cluster
}

fn worker(url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_leadscore-worker"))
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
    let cluster = throwaway_cluster();
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
