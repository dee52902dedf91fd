//! The Prometheus metrics of a real run: the API and a worker pool with the AI layer (the fake provider answering
//! a few 429s) on PostgreSQL, then on SQLite, with the process-wide recorder installed. The recorder is global,
//! so this file is a test binary of its own with a single test that checks what each backend's run added.

use std::time::{Duration, Instant};

use leadscore_api::{AiSettings, AppState, UploadLimits};
use leadscore_fake_llm::{FakeConfig, FakeLlm, Fault};
use leadscore_llm::{Gate, LlmConfig};
use leadscore_ops::metrics::Metrics;
use leadscore_store::Backend;
use leadscore_store::test_support::TestDb;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

const LEADS: usize = 50;
const RATE_LIMITED: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_shows_in_the_metrics() {
    let metrics = Metrics::install().expect("the recorder installs");
    for backend in [Backend::Postgres, Backend::Sqlite] {
        run_and_check(&metrics, backend).await;
    }
}

/// The sum of the samples of `name` whose labels include every one of `labels` (0 when none).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// The rendered metrics once `ready` holds of them (they are recorded just after what the test waits on).
async fn settled(metrics: &Metrics, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics.render();
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never saw {what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = request.send().await.expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body)).await
    }

    async fn wait_completed(&self, run: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, body) = self.get(&format!("/v1/runs/{run}")).await;
            if body["status"] == "completed" {
                return body;
            }
            assert!(Instant::now() < deadline, "the run did not complete: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// 50 leads, then two rows the upload rejects (no name; a duplicate).
fn csv() -> String {
    let mut csv = String::from("name,role,company,industry,location,linkedin_bio\n");
    for i in 0..LEADS {
        csv.push_str(&format!(
            "Lead {i},VP Sales,Company {i},B2B SaaS,Berlin,Builds outbound pipelines {i}\n"
        ));
    }
    csv.push_str(",CEO,Nameless,SaaS,Oslo,bio\nLead 0,VP Sales,Company 0,B2B SaaS,Berlin,Builds outbound pipelines 0\n");
    csv
}

async fn run_and_check(metrics: &Metrics, backend: Backend) {
    let db = TestDb::new(backend).await;
    let fake = FakeLlm::new(FakeConfig { retry_after_ms: 20, ..FakeConfig::default() });
    let addr = fake.spawn("127.0.0.1:0".parse().expect("addr")).await.expect("fake");
    let mut llm = LlmConfig::for_base_url(&format!("http://{addr}/v1"), "gpt-4.1-mini");
    (llm.rpm, llm.tpm) = (60_000, 100_000_000);
    let gate = Gate::for_config(&llm).expect("gate");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_addr = listener.local_addr().expect("addr");
    let state = AppState {
        store: db.store.clone(),
        upload_limits: UploadLimits::default(),
        ai: Some(AiSettings { config: llm.clone(), gate: gate.clone() }),
        key_limits: leadscore_api::KeyLimiter::default(),
        access: leadscore_api::guard::Access::decide(&db.store, api_addr, &[]).await.expect("access"),
        compat: Default::default(),
    };
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(leadscore_api::serve(listener, state, async {
        let _ = api_stopped.await;
    }));
    leadscore_llm::install_crypto();
    let api = Api { base: format!("http://{api_addr}"), http: reqwest::Client::new() };
    let before = metrics.render();

    // The run is created before any worker exists: its jobs wait on the queue.
    let (status, offer) = api
        .post(
            "/v1/offers",
            json!({"name": "AI Outreach Automation", "value_props": ["24/7 outreach"], "ideal_use_cases": ["B2B SaaS"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{offer}");
    let form = Form::new().part("file", Part::bytes(csv().into_bytes()).file_name("leads.csv"));
    let (status, upload) =
        api.send(api.http.post(format!("{}/v1/leads/upload", api.base)).multipart(form)).await;
    assert_eq!(status, StatusCode::CREATED, "{upload}");
    assert_eq!((upload["rows_accepted"].as_i64(), upload["rows_rejected"].as_i64()), (Some(50), Some(2)));
    let score = json!({"offer_id": offer["id"], "upload_id": upload["upload_id"]});
    let (status, run) = api.post("/v1/leads/score", score.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let run_id = run["id"].as_str().expect("id").to_owned();

    // What a process without maintenance (the API) exports when it refreshes the queue gauges, read while the
    // jobs wait.
    let refresher = tokio::spawn(leadscore_ops::metrics::refresh_queue_gauges(
        db.store.clone(),
        Duration::from_millis(50),
    ));
    let waiting = settled(metrics, "the waiting jobs in the queue gauges", |text| {
        value(text, "leadscore_queue_jobs", &[("status", "queued")]) == LEADS as f64
            && value(text, "leadscore_queue_oldest_job_age_seconds", &[]) > 0.0
    })
    .await;
    assert_eq!(value(&waiting, "leadscore_queue_jobs", &[("status", "running")]), 0.0, "{waiting}");
    refresher.abort();
    let _ = refresher.await;

    // A worker pool with the AI layer; the provider's first answers are 429s.
    fake.script([Fault::RateLimited; RATE_LIMITED]);
    let ai = leadscore_worker::Ai::new(llm.clone(), gate).expect("ai");
    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    let config = leadscore_worker::WorkerConfig {
        concurrency: 8,
        poll: Duration::from_millis(20),
        ai: Some(ai),
        ..Default::default()
    };
    let pool = tokio::spawn(leadscore_worker::run(db.store.clone(), config, workers_stopped));
    let done = api.wait_completed(&run_id).await;
    assert_eq!(done["result_counts"], json!({"hybrid": 50, "rules_only": 0}), "{done}");
    let (status, _) = api.get("/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The maintenance holder refreshes the gauges every few seconds: they come down to an empty queue. Job
    // outcomes are counted once their batch is written, which may be just after the run shows completed.
    let succeeded_before = value(&before, "leadscore_jobs_succeeded_total", &[]);
    let after = settled(metrics, "an empty queue and every job counted", |text| {
        value(text, "leadscore_queue_jobs", &[("status", "queued")]) == 0.0
            && value(text, "leadscore_queue_jobs", &[("status", "running")]) == 0.0
            && value(text, "leadscore_jobs_succeeded_total", &[]) >= succeeded_before + LEADS as f64
    })
    .await;
    assert_eq!(value(&after, "leadscore_queue_oldest_job_age_seconds", &[]), 0.0, "{backend:?}");
    for status in ["retrying", "failed"] {
        assert!(after.contains(&format!("leadscore_queue_jobs{{status=\"{status}\"}} 0")), "{after}");
    }

    let added =
        |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    let n = LEADS as f64;
    assert_eq!(added("leadscore_jobs_claimed_total", &[]), n, "{backend:?}");
    assert_eq!(added("leadscore_jobs_succeeded_total", &[]), n, "{backend:?}");
    assert_eq!(added("leadscore_jobs_failed_total", &[]), 0.0);
    assert_eq!(added("leadscore_jobs_retried_total", &[]), 0.0, "429s are retried within the attempt");
    assert_eq!(added("leadscore_job_duration_seconds_count", &[]), n);
    assert!(after.contains("leadscore_jobs_rescued_total"), "the maintenance holder ran its rescue");

    assert_eq!(added("leadscore_llm_requests_total", &[("status", "200")]), n, "{after}");
    assert_eq!(added("leadscore_llm_requests_total", &[("status", "429")]), RATE_LIMITED as f64, "{after}");
    assert_eq!(added("leadscore_llm_request_duration_seconds_count", &[]), n + RATE_LIMITED as f64);
    assert!(added("leadscore_llm_tokens_total", &[("kind", "prompt")]) > 50.0 * n, "{after}");
    assert!(added("leadscore_llm_tokens_total", &[("kind", "completion")]) > 0.0, "{after}");
    let cost = done["usage"]["cost_usd"].as_f64().expect("cost");
    let cost_added = added("leadscore_llm_cost_usd_total", &[]);
    assert!(
        cost > 0.0 && (cost_added - cost).abs() < 1e-9,
        "the run cost {cost}, the metric added {cost_added}"
    );
    assert_eq!(added("leadscore_llm_limiter_wait_seconds_count", &[]), n + RATE_LIMITED as f64);
    assert_eq!(added("leadscore_llm_cache_requests_total", &[("result", "miss")]), n);
    assert_eq!(added("leadscore_llm_cache_requests_total", &[("result", "hit")]), 0.0);
    assert_eq!(value(&after, "leadscore_llm_breaker_open", &[]), 0.0);

    assert_eq!(added("leadscore_upload_rows_total", &[("outcome", "accepted")]), n);
    assert_eq!(added("leadscore_upload_rows_total", &[("outcome", "rejected")]), 2.0);

    let http = |method: &str, route: &str, status: &str| {
        added("leadscore_http_requests_total", &[("method", method), ("route", route), ("status", status)])
    };
    assert_eq!(http("POST", "/v1/offers", "201"), 1.0, "{after}");
    assert_eq!(http("POST", "/v1/leads/upload", "201"), 1.0, "{after}");
    assert_eq!(http("POST", "/v1/leads/score", "202"), 1.0, "{after}");
    assert!(http("GET", "/v1/runs/{id}", "200") >= 1.0, "{after}");
    assert_eq!(http("GET", "unmatched", "404"), 1.0, "{after}");
    let polls = http("GET", "/v1/runs/{id}", "200");
    let timed = added(
        "leadscore_http_request_duration_seconds_count",
        &[("method", "GET"), ("route", "/v1/runs/{id}")],
    );
    assert_eq!(timed, polls, "every request is timed");
    assert!(!after.contains(&run_id) && !after.contains("/no/such/route"), "raw paths never become labels");

    // The same leads again: every verdict comes from the cache, and the provider hears nothing.
    let (status, again) = api.post("/v1/leads/score", score).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    api.wait_completed(again["id"].as_str().expect("id")).await;
    let succeeded_before = value(&after, "leadscore_jobs_succeeded_total", &[]);
    let cached = settled(metrics, "the second run counted", |text| {
        value(text, "leadscore_jobs_succeeded_total", &[]) >= succeeded_before + LEADS as f64
    })
    .await;
    let since =
        |name: &str, labels: &[(&str, &str)]| value(&cached, name, labels) - value(&after, name, labels);
    assert_eq!(since("leadscore_llm_cache_requests_total", &[("result", "hit")]), n, "{cached}");
    assert_eq!(since("leadscore_llm_requests_total", &[]), 0.0);
    assert_eq!(since("leadscore_jobs_succeeded_total", &[]), n);

    let _ = stop_workers.send(true);
    pool.await.expect("the pool stops");
    let _ = stop_api.send(());
    let _ = server.await;
}
