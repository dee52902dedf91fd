//! The browser guard and the auth mode over real HTTP (crates/api/src/guard.rs): DNS rebinding, cross-site
//! posts, keyless mode only as decided at start, revoked keys, readiness detail. Both stores.

use leadscore_api::guard::{Access, AccessError, Auth};
use leadscore_api::{AppState, KeyLimiter, KeyLimits, UploadLimits};
use leadscore_store::test_support::TestDb;
use leadscore_store::{Backend, ConnectOptions, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Postgres).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Sqlite).await } )* }
    };
}

both_backends!(
    a_rebinding_host_is_refused,
    cross_site_posts_are_refused_and_reads_are_not,
    a_keyless_server_only_ever_tightens,
    a_server_started_with_keys_never_becomes_keyless,
    a_revoked_key_is_refused_at_once,
    readiness_detail_needs_a_key,
    public_hosts_are_checked_with_keys,
);

struct Server {
    base: String,
    port: u16,
    db: TestDb,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A server whose mode is decided as `leadscore serve` decides it, after `setup` ran on the fresh database.
async fn server(db: TestDb, public_hosts: &[&str]) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hosts: Vec<String> = public_hosts.iter().map(|h| (*h).to_owned()).collect();
    let state = AppState {
        store: db.store.clone(),
        upload_limits: UploadLimits::default(),
        ai: None,
        key_limits: KeyLimiter::new(KeyLimits::OFF),
        access: Access::decide(&db.store, addr, &hosts).await.expect("access"),
        compat: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(leadscore_api::serve(listener, state, async {
        let _ = stopped.await;
    }));
    leadscore_llm::install_crypto();
    Server {
        base: format!("http://{addr}"),
        port: addr.port(),
        db,
        http: reqwest::Client::new(),
        stop: Some(stop),
    }
}

impl Server {
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base))
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base))
    }

    async fn offers(&self) -> usize {
        let page: Value = self.get("/v1/offers").send().await.expect("list").json().await.expect("json");
        page["items"].as_array().expect("items").len()
    }
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Option<String>, Value) {
    let r = req.send().await.expect("request");
    let status = r.status();
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = r.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

/// 403 problem+json.
fn assert_refused((status, content_type, body): (StatusCode, Option<String>, Value), what: &str) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{what}");
    assert_eq!(body["status"], 403, "{what}: {body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{what}: {body}");
}

fn offer() -> Value {
    json!({"name": "AI Outreach", "value_props": ["fast"], "ideal_use_cases": ["B2B SaaS"]})
}

async fn a_rebinding_host_is_refused(backend: Backend) {
    let s = server(TestDb::new(backend).await, &[]).await;
    // A page on evil.example whose name now resolves to 127.0.0.1 sends its own name as Host.
    for host in
        ["evil.example", "evil.example:80", &format!("evil.example:{}", s.port), "localhost.evil.example"]
    {
        assert_refused(send(s.get("/v1/offers").header("host", host)).await, host);
        assert_refused(send(s.post("/v1/offers").header("host", host).json(&offer())).await, host);
        assert_refused(send(s.get("/readyz").header("host", host)).await, "keyless: probes too");
    }
    assert_eq!(s.offers().await, 0, "nothing was created");
    for host in [format!("localhost:{}", s.port), format!("127.0.0.1:{}", s.port), "localhost".to_owned()] {
        let (status, _, body) = send(s.get("/v1/offers").header("host", &host)).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
    let (status, _, _) =
        send(s.post("/v1/offers").header("host", format!("localhost:{}", s.port)).json(&offer())).await;
    assert_eq!(status, StatusCode::CREATED);
}

async fn cross_site_posts_are_refused_and_reads_are_not(backend: Backend) {
    let s = server(TestDb::new(backend).await, &[]).await;
    let evil = "https://evil.example";
    // The classic: an HTML form auto-submitted by another site (no CORS preflight for this content type).
    let form = s
        .post("/v1/offers")
        .header("origin", evil)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=x&ideal_use_cases=y");
    assert_refused(send(form).await, "form post");
    let text = s
        .post("/v1/leads/upload")
        .header("origin", evil)
        .header("content-type", "text/plain")
        .body("name,role,company,industry,location,linkedin_bio\nA,CEO,Acme,SaaS,Berlin,bio\n");
    assert_refused(send(text).await, "text/plain upload");
    let fetch = s.post("/v1/offers").header("sec-fetch-site", "cross-site").json(&offer());
    assert_refused(send(fetch).await, "Sec-Fetch-Site: cross-site");
    let sibling = s.post("/v1/offers").header("sec-fetch-site", "same-site").json(&offer());
    assert_refused(send(sibling).await, "Sec-Fetch-Site: same-site");
    let null = s.post("/v1/offers").header("origin", "null").json(&offer());
    assert_refused(send(null).await, "Origin: null (sandboxed frame)");
    let delete = s.http.delete(format!("{}/v1/offers/whatever", s.base)).header("origin", evil);
    assert_refused(send(delete).await, "DELETE");
    assert_refused(
        send(s.post("/api/offer/").header("origin", evil).json(&offer())).await,
        "compat routes too",
    );
    assert_eq!(s.offers().await, 0, "nothing was created");
    assert_eq!(s.db.store.count_leads("default").await.expect("count"), 0);

    // Reads from another origin are answered (the page cannot read them without CORS headers).
    let (status, _, _) =
        send(s.get("/v1/offers").header("origin", evil).header("sec-fetch-site", "cross-site")).await;
    assert_eq!(status, StatusCode::OK);
    // The API's own pages (Swagger UI at /docs) and other local pages may post; so may non-browser clients.
    let own = format!("http://localhost:{}", s.port);
    let req = s.post("/v1/offers").header("host", format!("localhost:{}", s.port)).header("origin", &own);
    assert_eq!(send(req.header("sec-fetch-site", "same-origin").json(&offer())).await.0, StatusCode::CREATED);
    let local_app = s.post("/v1/offers").header("origin", "http://localhost:3000").json(&offer());
    assert_eq!(send(local_app).await.0, StatusCode::CREATED);
    assert_eq!(send(s.post("/v1/offers").json(&offer())).await.0, StatusCode::CREATED);
}

async fn a_keyless_server_only_ever_tightens(backend: Backend) {
    let s = server(TestDb::new(backend).await, &[]).await;
    assert_eq!(send(s.get("/v1/offers")).await.0, StatusCode::OK, "keyless: no key needed");
    let key = s.db.store.create_api_key("ops", Some("default")).await.expect("key");
    assert_eq!(
        send(s.get("/v1/offers")).await.0,
        StatusCode::UNAUTHORIZED,
        "a key now exists: keys required"
    );
    assert_eq!(send(s.get("/v1/offers").bearer_auth(&key.key)).await.0, StatusCode::OK);
    s.db.store.revoke_api_key(&key.prefix).await.expect("revoke");
    assert_eq!(
        send(s.get("/v1/offers")).await.0,
        StatusCode::UNAUTHORIZED,
        "revoking the last key does not reopen"
    );
    assert_eq!(send(s.get("/v1/offers").bearer_auth(&key.key)).await.0, StatusCode::UNAUTHORIZED);

    // Keyless is for loopback only: another address needs a key.
    let db = TestDb::new(backend).await;
    match Access::decide(&db.store, "0.0.0.0:8080".parse().expect("addr"), &[]).await {
        Err(AccessError::KeylessOffLoopback(_)) => {}
        other => panic!("expected KeylessOffLoopback, got {other:?}"),
    }
    db.store.create_api_key("a", None).await.expect("key");
    let access = Access::decide(&db.store, "0.0.0.0:8080".parse().expect("addr"), &[]).await.expect("keys");
    assert_eq!(access.auth(), Auth::Keys);
}

async fn a_server_started_with_keys_never_becomes_keyless(backend: Backend) {
    let db = TestDb::new(backend).await;
    let key = db.store.create_api_key("only", None).await.expect("key");
    let s = server(db, &[]).await;
    assert_eq!(send(s.get("/v1/offers")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(s.get("/v1/offers").bearer_auth(&key.key)).await.0, StatusCode::OK);
    s.db.store.revoke_api_key("only").await.expect("revoke");
    assert_eq!(send(s.get("/v1/offers")).await.0, StatusCode::UNAUTHORIZED, "no key left, still not keyless");
    assert_eq!(send(s.post("/v1/offers").json(&offer())).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(s.get("/v1/offers").bearer_auth(&key.key)).await.0, StatusCode::UNAUTHORIZED);
}

async fn a_revoked_key_is_refused_at_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, b) = (
        db.store.create_api_key("a", None).await.expect("a"),
        db.store.create_api_key("b", None).await.expect("b"),
    );
    let s = server(db, &[]).await;
    for _ in 0..3 {
        assert_eq!(send(s.get("/v1/offers").bearer_auth(&a.key)).await.0, StatusCode::OK);
        assert_eq!(send(s.get("/v1/offers").bearer_auth(&b.key)).await.0, StatusCode::OK);
    }
    // Revoked by the server's own store: refused by the very next request.
    s.db.store.revoke_api_key(&a.prefix).await.expect("revoke");
    let (status, _, body) = send(s.get("/v1/offers").bearer_auth(&a.key)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("revoked")), "{body}");
    // Revoked by another process (another store on the same database, as `leadscore keys revoke` is).
    let other = Store::connect_lazy(&s.db.url, &ConnectOptions::default()).expect("store");
    other.revoke_api_key("b").await.expect("revoke");
    assert_eq!(send(s.get("/v1/offers").bearer_auth(&b.key)).await.0, StatusCode::UNAUTHORIZED);
    other.close().await;
}

async fn readiness_detail_needs_a_key(backend: Backend) {
    let db = TestDb::new(backend).await;
    let key = db.store.create_api_key("ops", None).await.expect("key");
    let s = server(db, &[]).await;
    let (status, _, body) = send(s.get("/readyz")).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "ready"})),
        "the status alone without a key"
    );
    let (_, _, body) = send(s.get("/readyz").bearer_auth("lsk_wrong")).await;
    assert_eq!(body, json!({"status": "ready"}), "nor with a wrong key");
    let (status, _, body) = send(s.get("/readyz").bearer_auth(&key.key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&body["database"], &body["ai"]), (&json!("ok"), &json!("off")), "{body}");

    let keyless = server(TestDb::new(backend).await, &[]).await;
    let (_, _, body) = send(keyless.get("/readyz")).await;
    assert_eq!(body["database"], "ok", "keyless (this machine only): the detail: {body}");
}

async fn public_hosts_are_checked_with_keys(backend: Backend) {
    let db = TestDb::new(backend).await;
    let key = db.store.create_api_key("ops", None).await.expect("key");
    let s = server(db, &["leads.example.com"]).await;
    let with_key = |r: reqwest::RequestBuilder| r.bearer_auth(&key.key);
    assert_refused(send(with_key(s.get("/v1/offers").header("host", "evil.example"))).await, "foreign Host");
    let (status, _, _) = send(with_key(s.get("/v1/offers").header("host", "leads.example.com"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) =
        send(with_key(s.get("/v1/offers").header("host", format!("localhost:{}", s.port)))).await;
    assert_eq!(status, StatusCode::OK);
    // Orchestrators probe by address.
    assert_eq!(send(s.get("/healthz").header("host", "10.1.2.3:8080")).await.0, StatusCode::OK);
    assert_eq!(send(s.get("/readyz").header("host", "10.1.2.3:8080")).await.0, StatusCode::OK);
    let cross = with_key(s.post("/v1/offers").header("host", "leads.example.com"))
        .header("origin", "https://evil.example")
        .json(&offer());
    assert_refused(send(cross).await, "keys mode refuses foreign origins too");
    let own = with_key(s.post("/v1/offers").header("host", "leads.example.com"))
        .header("origin", "https://leads.example.com")
        .json(&offer());
    assert_eq!(send(own).await.0, StatusCode::CREATED);

    // Without public hosts a server with keys answers any Host (a rebound page has no key).
    let db = TestDb::new(backend).await;
    let key = db.store.create_api_key("ops", None).await.expect("key");
    let open = server(db, &[]).await;
    let r = open.get("/v1/offers").header("host", "api.internal:8080").bearer_auth(&key.key);
    assert_eq!(send(r).await.0, StatusCode::OK);
}
