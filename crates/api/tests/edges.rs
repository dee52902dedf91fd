//! Issue 13, items 4 and 8 over real HTTP on both stores: bounded bodies and answers (list caps, at most 100
//! field errors with their total), query parameters that answer 400 naming themselves and never 500, the
//! seed-compatible score call that stops waiting when its run is cancelled, and compat links that never come
//! from the request's `Host`.

use std::time::Duration;

use leadscore_api::compat::CompatConfig;
use leadscore_api::{AppState, UploadLimits};
use leadscore_store::Backend;
use leadscore_store::test_support::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Postgres).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Sqlite).await } )* }
    };
}

both_backends!(
    long_lists_are_refused_small,
    field_errors_are_capped_with_their_total,
    bad_query_parameters_are_400_never_500,
    compat_score_returns_when_its_run_is_cancelled,
    compat_links_are_relative_or_from_the_public_url,
);

const SAMPLE: &str = "name,role,company,industry,location,linkedin_bio\n\
    John Doe,CEO,TechCorp,B2B SaaS,New York,15 years building enterprise SaaS platforms\n\
    Jane Smith,Head of Sales,DataFlow,B2B SaaS,San Francisco,Leading sales teams in scaling startups\n";

/// The API without workers (runs stay queued until a test moves them).
struct Server {
    base: String,
    _db: TestDb,
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

async fn server(backend: Backend, compat: CompatConfig) -> Server {
    let db = TestDb::new(backend).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState {
        store: db.store.clone(),
        upload_limits: UploadLimits::default(),
        ai: None,
        // Many requests a second: the per-key rate (0 turns it off) is not what these tests are about.
        key_limits: leadscore_api::KeyLimiter::new(leadscore_api::KeyLimits {
            rate_per_sec: 0,
            ..Default::default()
        }),
        access: leadscore_api::guard::Access::decide(&db.store, addr, &[]).await.expect("access"),
        compat,
    };
    tokio::spawn(leadscore_api::serve(listener, state, async {
        let _ = stopped.await;
    }));
    leadscore_llm::install_crypto();
    Server { base: format!("http://{addr}"), _db: db, http: reqwest::Client::new(), stop: Some(stop) }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        json_of(self.http.get(self.url(path)).send().await.expect("request")).await
    }

    async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        json_of(self.http.post(self.url(path)).json(body).send().await.expect("request")).await
    }

    /// An offer and an upload of two leads; returns (offer id, upload id).
    async fn seed(&self) -> (String, String) {
        let offer = json!({"name": "x", "ideal_use_cases": ["B2B SaaS"]});
        let (status, offer) = self.post_json("/v1/offers", &offer).await;
        assert_eq!(status, StatusCode::CREATED, "{offer}");
        let r = self
            .http
            .post(self.url("/v1/leads/upload"))
            .header("content-type", "text/csv")
            .body(SAMPLE)
            .send()
            .await
            .expect("upload");
        let (status, upload) = json_of(r).await;
        assert_eq!(status, StatusCode::CREATED, "{upload}");
        (id(&offer), upload["upload_id"].as_str().expect("upload id").to_owned())
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let bytes = r.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())))
}

/// 200,000 empty use cases (the hostile body of the issue): refused with one error, in a small answer, on the
/// API and on the seed-compatible route; so are 10,001 lead ids.
async fn long_lists_are_refused_small(backend: Backend) {
    let s = server(backend, CompatConfig::default()).await;
    let body = format!(r#"{{"name": "x", "ideal_use_cases": [{}]}}"#, vec![r#""""#; 200_000].join(","));
    for path in ["/v1/offers", "/api/offer/"] {
        let r = s
            .http
            .post(s.url(path))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("request");
        let status = r.status();
        let bytes = r.bytes().await.expect("body");
        assert!(bytes.len() < 2048, "{path}: a {} byte answer", bytes.len());
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        let text = v.to_string();
        assert!(status.is_client_error() && text.contains("ideal_use_cases"), "{path}: {status} {text}");
        assert!(text.contains("at most 50 entries"), "{path}: {text}");
    }
    let (offer, _) = s.seed().await;
    let ids: Vec<String> = (0..10_001).map(|i| format!("lead-{i}")).collect();
    let (status, p) = s.post_json("/v1/leads/score", &json!({"offer_id": offer, "lead_ids": ids})).await;
    assert_eq!(
        (status, &p["errors"][0]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("lead_ids")),
        "{p}"
    );
}

/// An offer wrong in 101 places lists 100 of them and says there are 101.
async fn field_errors_are_capped_with_their_total(backend: Backend) {
    let s = server(backend, CompatConfig::default()).await;
    let body = json!({"name": " ", "value_props": vec![""; 50], "ideal_use_cases": vec![" "; 50]});
    let (status, p) = s.post_json("/v1/offers", &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["errors"].as_array().map(Vec::len), Some(leadscore_api::problem::MAX_PROBLEM_ERRORS));
    assert_eq!(p["total"], json!(101));
    assert!(p["detail"].as_str().expect("detail").ends_with("and 96 more"), "{p}");
    let (status, p) = s.post_json("/v1/offers", &json!({"name": "", "ideal_use_cases": ["a"]})).await;
    assert_eq!((status, &p["total"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!(1)), "{p}");
}

/// Every cursor and numeric query parameter: bad input is a 400 naming the parameter, never a 5xx.
async fn bad_query_parameters_are_400_never_500(backend: Backend) {
    let s = server(backend, CompatConfig::default()).await;
    let (offer, upload) = s.seed().await;
    let (status, run) =
        s.post_json("/v1/leads/score", &json!({"offer_id": offer, "upload_id": upload})).await;
    assert!(status.is_success(), "{run}");
    let run = id(&run);
    let lists = [
        "/v1/offers".to_owned(),
        "/v1/leads".to_owned(),
        "/v1/runs".to_owned(),
        format!("/v1/uploads/{upload}/errors"),
        format!("/v1/runs/{run}/jobs"),
        format!("/v1/runs/{run}/results"),
        "/v1/results".to_owned(),
    ];
    let huge = "9".repeat(5000);
    let bad_cursors = ["%00", "a%00b", "%01", huge.as_str()];
    let odd_cursors = ["18446744073709551616", "9223372036854775808", "-1", "x", "~", "%FF%FE", "ab~cd~ef"];
    let bad_limits = ["0", "-1", "1001", "ten", "1e3", "18446744073709551616", "%00", ""];
    for list in &lists {
        for cursor in bad_cursors {
            let (status, p) = s.get(&format!("{list}?cursor={cursor}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{list}?cursor={cursor}: {p}");
            assert_eq!(p["errors"][0]["field"], "cursor", "{list}: {p}");
        }
        for cursor in odd_cursors {
            let (status, p) = s.get(&format!("{list}?cursor={cursor}")).await;
            assert!(
                status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                "{list}?cursor={cursor}: {status} {p}"
            );
        }
        for limit in bad_limits.iter().filter(|l| !l.is_empty()) {
            let (status, p) = s.get(&format!("{list}?limit={limit}")).await;
            assert!(status == StatusCode::BAD_REQUEST, "{list}?limit={limit}: {status} {p}");
            assert_eq!(p["errors"][0]["field"], "limit", "{list}: {p}");
        }
    }
    // The exports take no page parameters: whatever is sent, never a 5xx.
    for csv in [format!("/v1/runs/{run}/results.csv"), "/v1/results.csv".to_owned()] {
        for param in ["cursor=%00", "limit=-1", "min_score=999999999999999999999", "intent=%00"] {
            let r = s.http.get(s.url(&format!("{csv}?{param}"))).send().await.expect("request");
            assert!(r.status().as_u16() < 500, "{csv}?{param}: {}", r.status());
        }
    }
    for big in ["18446744073709551616", "9223372036854775808", "-1", "x"] {
        let (status, p) = s.get(&format!("/v1/uploads/{upload}/errors?cursor={big}")).await;
        assert_eq!(
            (status, &p["errors"][0]["field"]),
            (StatusCode::BAD_REQUEST, &json!("cursor")),
            "{big}: {p}"
        );
    }
    let filters = [
        format!("/v1/runs/{run}/results?min_score=101"),
        format!("/v1/runs/{run}/results?min_score=-1"),
        format!("/v1/runs/{run}/results?min_score=99999999999999999999"),
        format!("/v1/runs/{run}/results?intent=Huge"),
        format!("/v1/runs/{run}/jobs?status=%00"),
        "/v1/results?score_basis=magic".to_owned(),
    ];
    for path in &filters {
        let (status, p) = s.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {p}");
    }
    for path in [
        "/v1/offers/%00",
        "/v1/leads/%00",
        "/v1/runs/%00",
        "/v1/uploads/%00",
        "/api/offer/%00/",
        "/api/leads/%00/",
    ] {
        let (status, p) = s.get(path).await;
        assert!(status.is_client_error(), "{path}: {status} {p}");
    }
    for page in ["0", "-1", "99999999999999999999", "x", "%00", "1.5"] {
        for path in ["/api/leads/", "/api/leads/results/"] {
            let (status, p) = s.get(&format!("{path}?page={page}")).await;
            assert!(status.is_client_error(), "{path}?page={page}: {status} {p}");
            assert!(p["error"].is_string(), "{p}");
        }
    }
}

/// The seed-compatible score call waits for its run; a cancelled run answers at once (it waited 300 s and
/// answered 503 before).
async fn compat_score_returns_when_its_run_is_cancelled(backend: Backend) {
    let s = server(backend, CompatConfig::default()).await;
    s.seed().await;
    let (status, _) = s
        .post_json("/api/offer/", &json!({"name": "y", "value_props": [], "ideal_use_cases": ["SaaS"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let score = tokio::spawn({
        let (http, url) = (s.http.clone(), s.url("/api/leads/score/"));
        async move { json_of(http.post(url).send().await.expect("score")).await }
    });
    let run = loop {
        let (_, runs) = s.get("/v1/runs").await;
        if let Some(run) = runs["items"].as_array().and_then(|r| r.first()) {
            break id(run);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, cancelled) = s.post_json(&format!("/v1/runs/{run}/cancel"), &json!({})).await;
    assert!(status.is_success(), "{cancelled}");
    // Without the fix the call waits out its 300 s: the guard makes that a failure, not a hang.
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(60), score).await.expect("answered").expect("join");
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().expect("error").contains("cancelled"), "{body}");
}

/// `next` / `previous` are relative unless a public URL is configured; a client's `Host` and
/// `X-Forwarded-Proto` never reach them.
async fn compat_links_are_relative_or_from_the_public_url(backend: Backend) {
    for (public, want) in [(None, ""), (Some("https://leads.example.com/"), "https://leads.example.com")] {
        let s = server(backend, CompatConfig::new(public, 1000).expect("config")).await;
        let many: String = (0..15).map(|i| format!("Lead {i},CEO,Co {i},SaaS,Berlin,bio\n")).collect();
        let csv = format!("name,role,company,industry,location,linkedin_bio\n{many}");
        let r =
            s.http.post(s.url("/v1/leads/upload")).header("content-type", "text/csv").body(csv).send().await;
        assert_eq!(r.expect("upload").status(), StatusCode::CREATED);
        let r = s
            .http
            .get(s.url("/api/leads/"))
            .header("x-forwarded-proto", "javascript")
            .send()
            .await
            .expect("request");
        let (status, page) = json_of(r).await;
        assert_eq!((status, &page["next"]), (StatusCode::OK, &json!(format!("{want}/api/leads/?page=2"))));
        let (_, page2) = s.get("/api/leads/?page=2").await;
        assert_eq!(page2["previous"], json!(format!("{want}/api/leads/")));
    }
    for bad in ["ftp://x", "leads.example.com", "https://x/?a=1", "https://x/#f", "https://"] {
        assert!(CompatConfig::new(Some(bad), 1).is_err(), "{bad}");
    }
}
