//! One trace from the request that creates a run through each job's LLM call: the API and a worker pool with the
//! AI layer on PostgreSQL, exporting spans over OTLP/HTTP to a receiver in this test, which decodes them with
//! the OpenTelemetry protobuf definitions. The tracing subscriber is process-wide, so this file is a test binary
//! of its own with a single test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use leadscore_api::{AiSettings, AppState, UploadLimits};
use leadscore_fake_llm::{FakeConfig, FakeLlm, Fault};
use leadscore_llm::{Gate, LlmConfig};
use leadscore_ops::config::{LogFormat, TelemetryArgs};
use leadscore_store::Backend;
use leadscore_store::test_support::TestDb;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

const LEADS: usize = 6;
/// The caller's own trace, as a gateway in front of the API would send it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// What the receiver got: every span, and the `service.name` of each export.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    services: Vec<String>,
}

type Shared = Arc<Mutex<Received>>;

async fn receive(State(received): State<Shared>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP/protobuf export");
    let mut received = received.lock().expect("lock");
    for resource_spans in request.resource_spans {
        let service =
            resource_spans.resource.iter().flat_map(|r| &r.attributes).find(|a| a.key == "service.name");
        received.services.extend(service.and_then(|a| string(a.value.as_ref()?.value.as_ref()?)));
        for scope in resource_spans.scope_spans {
            received.spans.extend(scope.spans);
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

fn string(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let a = span.attributes.iter().find(|a| a.key == key)?;
    string(a.value.as_ref()?.value.as_ref()?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn one_trace_runs_from_the_creating_request_through_each_job() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let received: Shared = Arc::default();
    let collector = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(received.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    // As the binaries do it: outside the runtime, before anything logs.
    let telemetry = TelemetryArgs {
        ops_listen: "127.0.0.1:0".parse().expect("addr"),
        log_format: LogFormat::Json,
        log_filter: "info,sqlx=warn".into(),
        otlp_endpoint: Some(format!("http://{collector}/")),
        service_name: Some("leadscore-traces-test".into()),
        trace_sample_ratio: 1.0,
    };
    let guard = leadscore_ops::telemetry::init(&telemetry, "unused").expect("telemetry");
    let run_id = runtime.block_on(score_a_run());
    guard.flush();
    drop(guard);

    let received = received.lock().expect("lock");
    assert!(received.services.iter().all(|s| s == "leadscore-traces-test"), "{:?}", received.services);
    check_tree(&received.spans, &run_id);
}

/// Creates a run of [`LEADS`] leads through the API (the score request carrying the caller's `traceparent`) and
/// lets a worker pool with the AI layer finish it; the provider answers the first call with a 429.
async fn score_a_run() -> String {
    let db = TestDb::new(Backend::Postgres).await;
    let fake = FakeLlm::new(FakeConfig { retry_after_ms: 20, ..FakeConfig::default() });
    let addr = fake.spawn("127.0.0.1:0".parse().expect("addr")).await.expect("fake");
    fake.script([Fault::RateLimited]);
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
    tokio::spawn(leadscore_api::serve(listener, state, std::future::pending()));
    leadscore_llm::install_crypto();
    let http = reqwest::Client::new();
    let base = format!("http://{api_addr}");
    let offer: Value = http
        .post(format!("{base}/v1/offers"))
        .json(&json!({"name": "AI Outreach", "value_props": ["24/7 outreach"], "ideal_use_cases": ["B2B SaaS"]}))
        .send()
        .await
        .expect("offer")
        .json()
        .await
        .expect("json");
    let mut csv = String::from("name,role,company,industry,location,linkedin_bio\n");
    for i in 0..LEADS {
        csv.push_str(&format!("Lead {i},VP Sales,Company {i},B2B SaaS,Berlin,Runs outbound {i}\n"));
    }
    let form = Form::new().part("file", Part::bytes(csv.into_bytes()).file_name("leads.csv"));
    let upload: Value = http
        .post(format!("{base}/v1/leads/upload"))
        .multipart(form)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    let run: Value = http
        .post(format!("{base}/v1/leads/score"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"offer_id": offer["id"], "upload_id": upload["upload_id"]}))
        .send()
        .await
        .expect("score")
        .json()
        .await
        .expect("json");
    let run_id = run["id"].as_str().expect("a run id").to_owned();

    let ai = leadscore_worker::Ai::new(llm, gate).expect("ai");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = leadscore_worker::WorkerConfig {
        concurrency: 4,
        poll: Duration::from_millis(20),
        ai: Some(ai),
        ..Default::default()
    };
    let pool = tokio::spawn(leadscore_worker::run(db.store.clone(), config, stopped));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = http
            .get(format!("{base}/v1/runs/{run_id}"))
            .send()
            .await
            .expect("run")
            .json()
            .await
            .expect("json");
        if body["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not complete: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stopping the pool writes every completion: each job's span has ended.
    let _ = stop.send(true);
    pool.await.expect("the pool stops");
    run_id
}

/// request (continuing the caller's trace) -> enqueue -> job x LEADS -> claim, llm_call (-> rate_limit_wait,
/// llm_request), result_write, in that order.
fn check_tree(spans: &[Span], run_id: &str) {
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let in_trace: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == TRACE_ID).collect();
    let one = |name: &str| -> &Span {
        let found: Vec<&&Span> = in_trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} span in the caller's trace; all spans: {names:?}");
        found[0]
    };
    let children = |parent: &Span, name: &str| -> Vec<&Span> {
        in_trace.iter().copied().filter(|s| s.parent_span_id == parent.span_id && s.name == name).collect()
    };

    let request = one("POST /v1/leads/score");
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN, "the request span continues the caller's");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(attr(request, "http.route").as_deref(), Some("/v1/leads/score"));
    assert_eq!(attr(request, "http.response.status_code").as_deref(), Some("202"));
    let enqueue = one("enqueue");
    assert_eq!(enqueue.parent_span_id, request.span_id);
    assert_eq!(attr(enqueue, "run_id").as_deref(), Some(run_id));
    assert_eq!(attr(enqueue, "jobs").as_deref(), Some(LEADS.to_string().as_str()));

    let jobs = children(enqueue, "job");
    assert_eq!(jobs.len(), LEADS, "every job's span is in the creating request's trace: {names:?}");
    let mut leads: Vec<String> = jobs.iter().map(|j| attr(j, "lead_id").expect("lead_id")).collect();
    leads.sort();
    leads.dedup();
    assert_eq!(leads.len(), LEADS, "one span per job");
    let mut requests = Vec::new();
    for job in &jobs {
        assert_eq!(attr(job, "run_id").as_deref(), Some(run_id));
        assert_eq!(attr(job, "attempt").as_deref(), Some("1"));
        let job_id = format!("{run_id}/{}", attr(job, "lead_id").expect("lead_id"));
        assert_eq!(attr(job, "job_id"), Some(job_id));
        let step = |name: &str| -> &Span {
            let found = children(job, name);
            assert_eq!(found.len(), 1, "one {name} step in each job");
            found[0]
        };
        let (claim, call, write) = (step("claim"), step("llm_call"), step("result_write"));
        assert!(claim.end_time_unix_nano <= call.start_time_unix_nano, "claim, then the LLM call");
        assert!(call.end_time_unix_nano <= write.start_time_unix_nano, "the LLM call, then the result write");
        assert!(
            write.end_time_unix_nano <= job.end_time_unix_nano,
            "the job ends once its result is written"
        );
        assert_eq!(attr(call, "outcome").as_deref(), Some("verdict"));
        assert!(
            !children(call, "rate_limit_wait").is_empty(),
            "each request waits on the rate limiter first"
        );
        requests.extend(children(call, "llm_request"));
    }
    let statuses: HashMap<String, usize> = requests.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(attr(r, "http.response.status_code").unwrap_or_default()).or_default() += 1;
        m
    });
    assert_eq!(statuses, HashMap::from([("200".to_owned(), LEADS), ("429".to_owned(), 1)]), "{statuses:?}");
}
