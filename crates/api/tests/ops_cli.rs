//! The `leadscore-api` process in cluster mode: without a key it waits, not ready, instead of exiting (an
//! orchestrator would restart it in a loop); `LEADSCORE_BOOTSTRAP_KEY` gives it one without a manual step, and
//! that key is never printed. Its log is JSON lines when standard error is not a terminal, text when asked for.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leadscore_store::Backend;
use leadscore_store::test_support::TestDb;

const BOOTSTRAP_KEY: &str = "boot-SECRET-0123456789abcdef0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

/// `leadscore-api` logging to `log`: in the default format (JSON, since it is a file) with a bootstrap key, as
/// text without one.
fn api(url: &str, port: u16, ops: u16, bootstrap: Option<&str>, log: &std::path::Path) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leadscore-api"));
    c.env_clear()
        .env("DATABASE_URL", url)
        .env("LEADSCORE_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEADSCORE_OPS_LISTEN", format!("127.0.0.1:{ops}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"));
    match bootstrap {
        Some(key) => c.env("LEADSCORE_BOOTSTRAP_KEY", key),
        None => c.env("LEADSCORE_LOG_FORMAT", "text"),
    };
    c.spawn().expect("spawn leadscore-api")
}

async fn get(url: String, key: Option<&str>) -> Option<(u16, String)> {
    leadscore_llm::install_crypto();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
    let mut request = client.get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.ok()?;
    Some((response.status().as_u16(), response.text().await.unwrap_or_default()))
}

async fn until(what: &str, url: String, key: Option<&str>, want: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((status, body)) = get(url.clone(), key).await {
            if want(status, &body) {
                return body;
            }
            last = Some((status, body));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never showed {what}; last answer: {last:?}");
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_api_waits_not_ready_until_one_exists() {
    let db = TestDb::new(Backend::Postgres).await;
    let (port, ops) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("leadscore-api-nokey-{}.log", std::process::id()));
    let child = api(&db.url, port, ops, None, &log);
    let body = until("the key wait", format!("http://127.0.0.1:{ops}/readyz"), None, |s, b| {
        s == 503 && b.contains("no API key exists")
    })
    .await;
    assert!(body.contains("LEADSCORE_BOOTSTRAP_KEY"), "{body}");
    assert!(
        get(format!("http://127.0.0.1:{port}/healthz"), None).await.is_none(),
        "the public port waits too"
    );
    let key = db.store.create_api_key("ops", None).await.expect("key").key;
    until("ready", format!("http://127.0.0.1:{ops}/readyz"), None, |s, _| s == 200).await;
    until("the API", format!("http://127.0.0.1:{port}/v1/offers"), Some(&key), |s, _| s == 200).await;
    stop(child);
    let printed = std::fs::read_to_string(&log).expect("log");
    let _ = std::fs::remove_file(&log);
    assert!(printed.lines().any(|l| l.contains(" ERROR ") && l.contains("no API key exists")), "{printed}");
    assert!(printed.lines().all(|l| !l.starts_with('{')), "text, not JSON: {printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_key_starts_the_api_and_is_never_printed() {
    let db = TestDb::new(Backend::Postgres).await;
    let (port, ops) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("leadscore-api-boot-{}.log", std::process::id()));
    let child = api(&db.url, port, ops, Some(BOOTSTRAP_KEY), &log);
    until("ready", format!("http://127.0.0.1:{ops}/readyz"), None, |s, _| s == 200).await;
    until("the API", format!("http://127.0.0.1:{port}/v1/offers"), Some(BOOTSTRAP_KEY), |s, _| s == 200)
        .await;
    let (status, _) =
        get(format!("http://127.0.0.1:{port}/v1/offers"), Some("wrong-key")).await.expect("answer");
    assert_eq!(status, 401);
    stop(child);
    let keys = db.store.list_api_keys().await.expect("keys");
    assert_eq!(keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["bootstrap"]);
    let printed = std::fs::read_to_string(&log).expect("log");
    let _ = std::fs::remove_file(&log);
    assert!(!printed.contains(BOOTSTRAP_KEY) && !printed.contains(&BOOTSTRAP_KEY[12..]), "{printed}");
    let lines: Vec<&str> = printed.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{printed}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["target"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}
