//! Uploads never hold others up (issue 13, ADR 0003): clients that send half a body and stall, over raw TCP
//! against a real server and a real database, on PostgreSQL and SQLite.

use std::path::PathBuf;
use std::time::Duration;

use leadscore_api::{AppState, UploadLimits};
use leadscore_store::test_support::TestDb;
use leadscore_store::{Backend, DEFAULT_WORKSPACE};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Postgres).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Sqlite).await } )* }
    };
}

both_backends!(stalled_uploads_hold_nobody_up, an_aborted_upload_leaves_nothing);

const HEADER: &str = "name,role,company,industry,location,linkedin_bio\n";
/// More than the pool's 16 connections: before ADR 0003 each stalled upload held one.
const STALLED: usize = 20;
/// Generous: the point is success, not speed (speed is in the bench). Before the fix SQLite failed after its
/// 10 s busy timeout and PostgreSQL after the pool's 10 s acquire timeout.
const PROMPTLY: Duration = Duration::from_secs(5);

struct Server {
    base: String,
    addr: std::net::SocketAddr,
    db: TestDb,
    spool: PathBuf,
    /// A key of the default workspace, whose uploads stall, and one of another workspace.
    key: String,
    other_key: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stop_workers: tokio::sync::watch::Sender<bool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.stop_workers.send(true);
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

/// A server with rules-only workers, spooling uploads into a directory of its own.
async fn server(backend: Backend) -> Server {
    let db = TestDb::new(backend).await;
    // Before the workers start: they write at once, and a key is created in a deferred transaction.
    let key = db.store.create_api_key("stalling", Some(DEFAULT_WORKSPACE)).await.expect("key").key;
    let other_key = db.store.create_api_key("other", None).await.expect("key").key;
    let spool = std::env::temp_dir().join(format!("ls_spool_{}", uuid_like()));
    std::fs::create_dir_all(&spool).expect("spool dir");
    let upload_limits = UploadLimits { spool_dir: spool.clone(), ..UploadLimits::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState {
        store: db.store.clone(),
        upload_limits,
        ai: None,
        // Many stalled uploads from one keyless client are the point here, not the per-key limits.
        key_limits: leadscore_api::KeyLimiter::new(leadscore_api::KeyLimits::OFF),
        access: leadscore_api::guard::Access::decide(&db.store, addr, &[]).await.expect("access"),
        compat: Default::default(),
    };
    tokio::spawn(leadscore_api::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    let config = leadscore_worker::WorkerConfig {
        concurrency: 8,
        poll: Duration::from_millis(20),
        ..Default::default()
    };
    tokio::spawn(leadscore_worker::run(db.store.clone(), config, workers_stopped));
    leadscore_llm::install_crypto();
    Server {
        base: format!("http://{addr}"),
        addr,
        db,
        spool,
        key,
        other_key,
        http: reqwest::Client::new(),
        stop: Some(stop),
        stop_workers,
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    format!("{}_{nanos}", std::process::id())
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends the head of an upload and the first half of its body, and leaves the connection open: the client
    /// stalls. Every other one goes to the seed-compatible route as multipart.
    async fn stalled_upload(&self, i: usize, key: &str) -> TcpStream {
        let mut csv = HEADER.to_owned();
        for row in 0..2000 {
            csv.push_str(&format!("Stalled {i}-{row},CEO,Acme,B2B SaaS,Oslo,bio\n"));
        }
        let (path, content_type, body) = if i.is_multiple_of(2) {
            ("/v1/leads/upload", "text/csv".to_owned(), csv)
        } else {
            let part = format!(
                "--XB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\
                 Content-Type: text/csv\r\n\r\n{csv}"
            );
            ("/api/leads/upload/", "multipart/form-data; boundary=XB".to_owned(), part)
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n",
            body.len() * 2
        );
        let mut tcp = TcpStream::connect(self.addr).await.expect("connect");
        tcp.write_all(head.as_bytes()).await.expect("head");
        tcp.write_all(body.as_bytes()).await.expect("half the body");
        tcp.flush().await.expect("flush");
        tcp
    }

    /// Uploads in the database, every workspace (an update that changes nothing counts them on both backends).
    async fn uploads(&self) -> u64 {
        self.db.execute("update uploads set filename = filename").await
    }

    fn spool_files(&self) -> usize {
        std::fs::read_dir(&self.spool).expect("spool dir").count()
    }
}

/// Another workspace's requests while uploads are stalled mid-body: an offer, an upload, a run whose results the
/// workers write. Returns when the run has finished.
async fn other_workspace_works(s: &Server, key: &str) {
    let post = |path: &str| s.http.post(s.url(path)).bearer_auth(key.to_owned());
    let r = post("/v1/offers")
        .json(&json!({"name": "x", "ideal_use_cases": ["B2B SaaS"]}))
        .send()
        .await
        .expect("offer");
    assert_eq!(r.status(), StatusCode::CREATED, "offer create while uploads stall");
    let offer: Value = r.json().await.expect("json");
    let csv = format!("{HEADER}Ada,CEO,Acme,B2B SaaS,Oslo,bio\nBob,CTO,Acme,B2B SaaS,Oslo,bio\n");
    let r =
        post("/v1/leads/upload").header("content-type", "text/csv").body(csv).send().await.expect("upload");
    assert_eq!(r.status(), StatusCode::CREATED, "an upload that arrives whole goes through");
    let upload: Value = r.json().await.expect("json");
    let r = post("/v1/leads/score")
        .header("prefer", "wait=4")
        .json(&json!({"offer_id": offer["id"], "upload_id": upload["upload_id"]}))
        .send()
        .await
        .expect("score");
    let status = r.status();
    let run: Value = r.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "the workers wrote the results while uploads stall: {run}");
    assert_eq!(run["results"].as_array().map(Vec::len), Some(2), "{run}");
}

async fn stalled_uploads_hold_nobody_up(backend: Backend) {
    let s = server(backend).await;
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        stalled.push(s.stalled_upload(i, &s.key).await);
    }
    // Let the server read what was sent (before ADR 0003 it opened each upload's transaction at once).
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::time::timeout(PROMPTLY, other_workspace_works(&s, &s.other_key))
        .await
        .expect("another workspace's writes and the workers' results went through promptly");
    assert_eq!(s.spool_files(), 0, "spool files are unlinked while in use");
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.uploads().await, 1, "only the other workspace's upload exists");
    assert_eq!(s.db.store.count_leads(DEFAULT_WORKSPACE).await.expect("count"), 0);
}

async fn an_aborted_upload_leaves_nothing(backend: Backend) {
    let s = server(backend).await;
    for i in 0..2 {
        let tcp = s.stalled_upload(i, &s.key).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(tcp); // the client goes away mid-body
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.uploads().await, 0, "no upload");
    assert_eq!(s.db.store.count_leads(DEFAULT_WORKSPACE).await.expect("count"), 0, "no lead");
    assert_eq!(s.spool_files(), 0, "no spool file");
    // And the server keeps taking uploads.
    let r = s
        .http
        .post(s.url("/v1/leads/upload"))
        .bearer_auth(&s.key)
        .header("content-type", "text/csv")
        .body(format!("{HEADER}Ada,CEO,Acme,B2B SaaS,Oslo,bio\n"))
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(s.uploads().await, 1);
}
