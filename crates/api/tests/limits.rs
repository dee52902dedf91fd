//! Per-key limits over real HTTP with small limits, on both stores: the request rate, uploads in progress and
//! unfinished runs are each answered 429 with `Retry-After`, per key, and only after authentication.

use std::time::{Duration, Instant};

use leadscore_api::guard::Access;
use leadscore_api::{AppState, KeyLimiter, KeyLimits, UploadLimits};
use leadscore_store::Backend;
use leadscore_store::test_support::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Postgres).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Sqlite).await } )* }
    };
}

both_backends!(request_rate_is_per_key, uploads_in_progress_are_capped_per_key, unfinished_runs_are_capped);

const CSV: &str = "name,role,company,industry,location,linkedin_bio\n\
    John Doe,CEO,TechCorp,B2B SaaS,New York,15 years building enterprise SaaS platforms\n";

/// A server with `limits` and no worker pool (runs stay queued), and two keys in two workspaces.
struct Server {
    base: String,
    addr: std::net::SocketAddr,
    limiter: KeyLimiter,
    keys: [String; 2],
    http: reqwest::Client,
    _db: TestDb,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn server(backend: Backend, limits: KeyLimits) -> Server {
    let db = TestDb::new(backend).await;
    let a = db.store.create_api_key("a", None).await.expect("key a").key;
    let b = db.store.create_api_key("b", None).await.expect("key b").key;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let limiter = KeyLimiter::new(limits);
    let state = AppState {
        store: db.store.clone(),
        upload_limits: UploadLimits::default(),
        ai: None,
        key_limits: limiter.clone(),
        access: Access::decide(&db.store, addr, &[]).await.expect("access"),
        compat: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(leadscore_api::serve(listener, state, async {
        let _ = stopped.await;
    }));
    Server {
        base: format!("http://{addr}"),
        addr,
        limiter,
        keys: [a, b],
        http: {
            leadscore_llm::install_crypto();
            reqwest::Client::new()
        },
        _db: db,
        stop: Some(stop),
    }
}

impl Server {
    async fn send(&self, key: &str, request: reqwest::RequestBuilder) -> reqwest::Response {
        request.bearer_auth(key).send().await.expect("request")
    }

    async fn get(&self, key: &str, path: &str) -> reqwest::Response {
        self.send(key, self.http.get(format!("{}{path}", self.base))).await
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> reqwest::Response {
        self.send(key, self.http.post(format!("{}{path}", self.base)).json(&body)).await
    }

    async fn upload(&self, key: &str) -> reqwest::Response {
        let request = self
            .http
            .post(format!("{}/v1/leads/upload", self.base))
            .header("content-type", "text/csv")
            .body(CSV);
        self.send(key, request).await
    }
}

fn retry_after(r: &reqwest::Response) -> u64 {
    let value = r.headers().get("retry-after").expect("a 429 carries Retry-After");
    value.to_str().expect("ascii").parse().expect("whole seconds")
}

/// A 429 problem document with a whole number of seconds in `Retry-After`.
async fn assert_problem_429(r: reqwest::Response) -> Value {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&r) >= 1);
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], 429, "{body}");
    assert_eq!(body["type"], "https://leadscore.dev/problems/too-many-requests", "{body}");
    body
}

/// A burst of 3 at 1 request per second: the first 3 pass, one of the next few is refused (a refill may let
/// one more through on a slow machine), and the other key, health checks and unknown keys are unaffected.
async fn request_rate_is_per_key(backend: Backend) {
    let s = server(backend, KeyLimits { rate_per_sec: 1, burst: 3, ..KeyLimits::OFF }).await;
    let [a, b] = &s.keys;
    for i in 0..3 {
        assert_eq!(s.get(a, "/v1/offers").await.status(), StatusCode::OK, "request {i} of the burst");
    }
    let mut refused = None;
    for _ in 0..5 {
        let r = s.get(a, "/v1/offers").await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
    }
    let refused = refused.expect("a request over the rate is refused");
    assert_eq!(retry_after(&refused), 1, "at 1 request per second the next one is at most 1 s away");
    let body = assert_problem_429(refused).await;
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("per second")), "{body}");

    // The other key has its own bucket.
    assert_eq!(s.get(b, "/v1/offers").await.status(), StatusCode::OK);
    // The seed-compatible routes refuse in their own shape, with Retry-After too.
    let compat = s.get(a, "/api/offer/").await;
    assert_eq!(compat.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&compat) >= 1);
    let body: Value = compat.json().await.expect("json");
    assert!(body["error"].is_string(), "{body}");
    // Health is never limited.
    assert_eq!(s.get(a, "/healthz").await.status(), StatusCode::OK);

    // Unknown keys are refused by auth and leave nothing behind in the limiter.
    let before = s.limiter.tracked();
    for i in 0..50 {
        let r = s.get(&format!("lsk_sprayed_{i}"), "/v1/offers").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(s.limiter.tracked(), before, "unknown keys got limiter entries");
}

/// One upload in progress per key: a second one from the same key while the first stalls mid-body is refused;
/// another key uploads meanwhile; once the stalled client goes away, the key uploads again.
async fn uploads_in_progress_are_capped_per_key(backend: Backend) {
    let s = server(backend, KeyLimits { max_uploads: 1, ..KeyLimits::OFF }).await;
    let [a, b] = &s.keys;
    let head = format!(
        "POST /v1/leads/upload HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {a}\r\nContent-Type: text/csv\r\n\
         Content-Length: 100000\r\n\r\nname,role,company,industry,location,linkedin_bio\n",
        s.addr
    );
    let stall = || async {
        let mut stalled = tokio::net::TcpStream::connect(s.addr).await.expect("connect");
        stalled.write_all(head.as_bytes()).await.expect("write");
        stalled.flush().await.expect("flush");
        stalled
    };
    let mut stalled = stall().await;

    // The stalled upload holds the key's one place as soon as its head is read: until then (never long) a
    // complete upload may still get through, and a stalled head read while such an upload held the place is
    // itself refused (then it is sent again).
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let r = s.upload(a).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            break r;
        }
        assert_eq!(r.status(), StatusCode::CREATED);
        let mut answer = [0u8; 64];
        if let Ok(read) = tokio::time::timeout(Duration::from_millis(5), stalled.peek(&mut answer)).await {
            let seen = read.map(|n| String::from_utf8_lossy(&answer[..n]).into_owned()).unwrap_or_default();
            assert!(seen.is_empty() || seen.contains(" 429 "), "the stalled upload was answered: {seen:?}");
            stalled = stall().await;
        }
        assert!(
            Instant::now() < deadline,
            "a second upload of the key was never refused while the first stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_problem_429(refused).await;
    assert_eq!(s.upload(b).await.status(), StatusCode::CREATED, "another key is not held up");

    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.upload(a).await;
        if r.status() == StatusCode::CREATED {
            break;
        }
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "the place of the abandoned upload was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// At most 2 unfinished runs per workspace (no worker: runs stay queued): the third is refused, a replay of
/// an Idempotency-Key is still answered, another workspace is unaffected, and cancelling one makes room.
async fn unfinished_runs_are_capped(backend: Backend) {
    let s = server(backend, KeyLimits { max_active_runs: 2, ..KeyLimits::OFF }).await;
    let [a, b] = &s.keys;
    let setup = |key: String| {
        let s = &s;
        async move {
            let offer = json!({"name": "x", "value_props": ["v"], "ideal_use_cases": ["B2B SaaS"]});
            let offer: Value = s.post(&key, "/v1/offers", offer).await.json().await.expect("offer");
            let upload: Value = s.upload(&key).await.json().await.expect("upload");
            json!({"offer_id": offer["id"], "upload_id": upload["upload_id"]})
        }
    };
    let score_a = setup(a.clone()).await;
    let create = |key: &str, idempotency: Option<&str>| {
        let mut r = s.http.post(format!("{}/v1/leads/score", s.base)).json(&score_a).bearer_auth(key);
        if let Some(k) = idempotency {
            r = r.header("idempotency-key", k);
        }
        r.send()
    };
    let first: Value = create(a, None).await.expect("send").json().await.expect("run");
    let second = create(a, Some("second")).await.expect("send");
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    let second: Value = second.json().await.expect("run");

    let refused = create(a, None).await.expect("send");
    let body = assert_problem_429(refused).await;
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("unfinished runs")), "{body}");
    let replay = create(a, Some("second")).await.expect("send");
    assert_eq!(replay.status(), StatusCode::ACCEPTED, "a replay is answered at the cap");
    assert_eq!(replay.json::<Value>().await.expect("run")["id"], second["id"]);
    // The seed-compatible route (which scores every unscored lead) refuses in its own shape.
    assert_eq!(s.upload(a).await.status(), StatusCode::CREATED);
    let compat = s.send(a, s.http.post(format!("{}/api/leads/score/", s.base))).await;
    assert_eq!(compat.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&compat) >= 1);
    assert!(compat.json::<Value>().await.expect("json")["error"].is_string());

    let score_b = setup(b.clone()).await;
    let other = s.post(b, "/v1/leads/score", score_b).await;
    assert_eq!(other.status(), StatusCode::ACCEPTED, "another workspace has its own count");

    let cancel = format!("{}/v1/runs/{}/cancel", s.base, first["id"].as_str().expect("id"));
    let cancelled = s.send(a, s.http.post(cancel)).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(create(a, None).await.expect("send").status(), StatusCode::ACCEPTED, "cancelling made room");
    assert_problem_429(create(a, None).await.expect("send")).await;
}
