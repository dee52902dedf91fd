//! `leadscore serve` / `keys` / `migrate` as a real process on a real SQLite file.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("leadscore-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn leadscore(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leadscore"));
    // Each server its own operations port: tests run side by side.
    c.args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .env("LEADSCORE_OPS_LISTEN", "127.0.0.1:0");
    c
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(base: &str) {
    leadscore_llm::install_crypto();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server at {base} did not become ready");
}

#[tokio::test]
async fn serve_runs_the_api_on_sqlite_and_keys_turn_auth_on() {
    let dir = scratch("api");
    let db = format!("sqlite://{}", dir.join("leadscore.db").display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = Running(
        leadscore(&["serve", "--database-url", &db, "--listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    wait_ready(&base).await;
    leadscore_llm::install_crypto();
    let http = reqwest::Client::new();
    let offer = serde_json::json!({"name": "AI Outreach", "ideal_use_cases": ["B2B SaaS"]});
    let r = http.post(format!("{base}/v1/offers")).json(&offer).send().await.expect("post");
    assert_eq!(r.status(), 201);
    let csv = std::fs::read("../../examples/leads.csv").expect("examples");
    let r = http
        .post(format!("{base}/v1/leads/upload"))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["rows_accepted"], 16);

    // A key created while the server runs turns auth on for the next request.
    let out =
        leadscore(&["keys", "create", "--name", "ops", "--workspace", "default", "--database-url", &db])
            .output()
            .expect("keys");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).expect("utf8").trim().to_owned();
    assert!(key.starts_with("lsk_"), "{key}");
    assert_eq!(http.get(format!("{base}/v1/leads")).send().await.expect("get").status(), 401);
    let r = http.get(format!("{base}/v1/leads?limit=1")).bearer_auth(&key).send().await.expect("get");
    assert_eq!(r.status(), 200);
    drop(server);

    let out = leadscore(&["migrate", "--database-url", &db]).output().expect("migrate");
    assert!(out.status.success(), "migrate is idempotent: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn serve_refuses_a_public_address_without_keys_and_bad_urls() {
    let dir = scratch("refuse");
    let db = format!("sqlite://{}", dir.join("leadscore.db").display());
    let out = leadscore(&["serve", "--database-url", &db, "--listen", "0.0.0.0:0"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0:0 without API keys"), "{err}");

    let out = leadscore(&["serve", "--database-url", "mysql://nope"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported database URL"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line naming the problem: {err}");
}

#[tokio::test]
async fn serve_has_an_operations_listener_and_healthcheck_reads_it() {
    let dir = scratch("ops");
    let db = format!("sqlite://{}", dir.join("leadscore.db").display());
    let (port, ops) = (free_port(), free_port());
    let _server = Running(
        leadscore(&["serve", "--database-url", &db, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--ops-listen", &format!("127.0.0.1:{ops}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    wait_ready(&format!("http://127.0.0.1:{ops}")).await;
    let body = reqwest::get(format!("http://127.0.0.1:{ops}/readyz"))
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(body.contains(r#""status":"ready""#) && body.contains("schema version"), "{body}");

    let check = |url: String| leadscore(&["healthcheck", &url, "--timeout-secs", "2"]).output().expect("run");
    let out = check(format!("http://127.0.0.1:{ops}/readyz"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let dead = free_port();
    let out = check(format!("http://127.0.0.1:{dead}/readyz"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not ready"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check(format!("http://127.0.0.1:{ops}/no-such-page"));
    assert_eq!(out.status.code(), Some(1), "a 404 is not ready");
}
