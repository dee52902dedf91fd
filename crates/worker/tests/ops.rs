//! A `leadscore-worker` process as an orchestrator sees it: it starts while its database and Redis are down,
//! stays up, says why it is not ready on `/readyz`, and recovers by itself when they come back (and when they go
//! and come back again). No secret from its configuration appears in what it prints.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::cluster::{Cluster, free_port};

const DB_PASSWORD: &str = "pw-SECRET-db-4f1c";
const REDIS_PASSWORD: &str = "pw-SECRET-redis-9a2e";
const PROVIDER_KEY: &str = "sk-SECRET-provider-77d0";

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", REDIS_PASSWORD])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        Redis { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET path` on the operations listener: (status, body), or `None` while nothing answers.
async fn get(ops: u16, path: &str) -> Option<(u16, String)> {
    leadscore_llm::install_crypto();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
    let response = client.get(format!("http://127.0.0.1:{ops}{path}")).send().await.ok()?;
    Some((response.status().as_u16(), response.text().await.unwrap_or_default()))
}

/// Polls `/readyz` until `want(status, body)` holds; panics with the last answer after `within`.
async fn readyz_until(ops: u16, within: Duration, what: &str, want: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((status, body)) = get(ops, "/readyz").await {
            if want(status, &body) {
                return body;
            }
            last = Some((status, body));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("/readyz never showed {what}; last answer: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_its_database_and_redis_says_why_and_recovers() {
    let cluster = Cluster::new("ops");
    let mut redis = Redis::start(free_port());
    let ops = free_port();
    let log = std::env::temp_dir().join(format!("leadscore-ops-worker-{}.log", std::process::id()));
    let mut worker = Command::new(env!("CARGO_BIN_EXE_leadscore-worker"))
        .env("DATABASE_URL", format!("postgres://postgres:{DB_PASSWORD}@127.0.0.1:{}/postgres", cluster.port))
        .env("REDIS_URL", format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port))
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .env("OPENAI_API_KEY", PROVIDER_KEY)
        .env("LEADSCORE_OPS_LISTEN", format!("127.0.0.1:{ops}"))
        .env("LEADSCORE_LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn leadscore-worker");

    // The database is down: alive, not ready, and saying why.
    let body = readyz_until(ops, Duration::from_secs(20), "the database wait", |s, b| {
        s == 503 && b.contains("waiting for the database")
    })
    .await;
    assert!(!body.contains(DB_PASSWORD), "{body}");
    assert_eq!(get(ops, "/healthz").await.map(|(s, _)| s), Some(200));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(worker.try_wait().expect("status").is_none(), "the worker must not exit while it waits");

    // It comes up: ready once migrated.
    cluster.start();
    let body = readyz_until(ops, Duration::from_secs(60), "ready", |s, _| s == 200).await;
    assert!(body.contains("schema version") && body.contains(r#""ai":"ok""#), "{body}");

    // The database goes and comes back.
    cluster.stop();
    readyz_until(ops, Duration::from_secs(20), "the database down", |s, b| {
        s == 503 && b.contains("database")
    })
    .await;
    cluster.start();
    readyz_until(ops, Duration::from_secs(60), "ready again", |s, _| s == 200).await;

    // Redis goes and comes back (on the same port).
    let port = redis.port;
    redis.stop();
    readyz_until(ops, Duration::from_secs(20), "Redis down", |s, b| {
        s == 503 && b.contains(r#""ai":"failed"#)
    })
    .await;
    redis = Redis::start(port);
    readyz_until(ops, Duration::from_secs(30), "ready after Redis", |s, _| s == 200).await;

    // SIGTERM: a clean exit.
    let _ = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = worker.try_wait().expect("status") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");
    drop(redis);

    let printed = std::fs::read_to_string(&log).expect("log");
    let _ = std::fs::remove_file(&log);
    assert!(printed.contains("database not ready"), "the wait is logged:\n{printed}");
    for secret in [DB_PASSWORD, REDIS_PASSWORD, PROVIDER_KEY] {
        assert!(!printed.contains(secret), "{secret} appears in the worker's output:\n{printed}");
    }
}

#[test]
fn a_malformed_setting_is_one_line_naming_its_variable_and_help_shows_no_secret() {
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_leadscore-worker"));
        c.env_clear().args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run")
    };
    let url = format!("postgres://u:{DB_PASSWORD}@[broken/db");
    let out = run(&[("DATABASE_URL", &url)], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("DATABASE_URL") && !err.contains(DB_PASSWORD), "{err}");

    let out = run(&[("DATABASE_URL", "sqlite://x.db"), ("LEADSCORE_CONCURRENCY", "lots")], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), err.trim().lines().count()), (Some(2), 1), "{err}");
    assert!(err.contains("LEADSCORE_CONCURRENCY") && err.contains("lots"), "{err}");

    for (var, bad) in [
        ("LEADSCORE_TRACE_SAMPLE_RATIO", "1.5"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("LEADSCORE_LOG_FORMAT", "xml"),
        ("RUST_LOG", "info,[[["),
    ] {
        let out = run(&[("DATABASE_URL", "sqlite://x.db"), (var, bad)], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!((out.status.code(), err.trim().lines().count()), (Some(2), 1), "{var}: {err}");
        assert!(err.contains(var), "{err}");
    }

    let out = run(&[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), err.trim().lines().count()), (Some(2), 1), "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");

    assert_eq!(run(&[], &["--no-such-flag"]).status.code(), Some(2));

    let secrets =
        [("DATABASE_URL", url.as_str()), ("OPENAI_API_KEY", PROVIDER_KEY), ("REDIS_URL", REDIS_PASSWORD)];
    let out = run(&secrets, &["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    for option in [
        "--database-url",
        "LEADSCORE_CONCURRENCY",
        "--ops-listen",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "REDIS_URL",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
    for (_, secret) in secrets {
        assert!(!help.contains(secret), "--help shows {secret}");
    }
}
