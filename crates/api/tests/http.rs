//! The API over real HTTP against a real database: every test runs on PostgreSQL and SQLite.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use leadscore_api::{AiSettings, AppState, UploadLimits};
use leadscore_fake_llm::{FakeConfig, FakeLlm};
use leadscore_llm::{Gate, LlmConfig};
use leadscore_store::test_support::TestDb;
use leadscore_store::{Backend, DEFAULT_WORKSPACE, Page};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Postgres).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Sqlite).await } )* }
    };
}

both_backends!(
    offers_crud,
    bad_requests_are_problems,
    uploads_multipart_and_csv_bodies,
    crm_and_spreadsheet_exports_upload_as_they_are,
    results_go_back_into_the_crm,
    hostile_csv_corpus_never_answers_5xx,
    upload_limits_store_nothing,
    an_interrupted_upload_stores_nothing,
    api_keys_and_workspaces,
    seed_compatible_routes,
    runs_over_http,
    the_original_walkthrough_scores_end_to_end,
    ai_layer_over_http,
);

const HEADER: &str = "name,role,company,industry,location,linkedin_bio\n";
const SAMPLE: &str = "name,role,company,industry,location,linkedin_bio\n\
    John Doe,CEO,TechCorp,B2B SaaS,New York,15 years building enterprise SaaS platforms\n\
    Jane Smith,Head of Sales,DataFlow,B2B SaaS,San Francisco,Leading sales teams in scaling startups\n\
    Mike Wilson,Manager,CloudTech,Healthcare,London,Technology implementation specialist\n";

struct Server {
    base: String,
    addr: std::net::SocketAddr,
    db: TestDb,
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
    }
}

async fn server(backend: Backend) -> Server {
    server_with(backend, UploadLimits::default()).await
}

async fn server_with(backend: Backend, upload_limits: UploadLimits) -> Server {
    server_full(backend, upload_limits, None).await
}

/// A server with the AI layer on `llm` (one gate shared by the API and the workers, as in `leadscore serve`).
async fn server_full(backend: Backend, upload_limits: UploadLimits, llm: Option<LlmConfig>) -> Server {
    let db = TestDb::new(backend).await;
    let (settings, ai) = match llm {
        Some(config) => {
            let gate = Gate::for_config(&config).expect("gate");
            let ai = leadscore_worker::Ai::new(config.clone(), gate.clone()).expect("ai");
            (Some(AiSettings { config, gate }), Some(ai))
        }
        None => (None, None),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState {
        store: db.store.clone(),
        upload_limits,
        ai: settings,
        key_limits: leadscore_api::KeyLimiter::default(),
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
        ai,
        ..Default::default()
    };
    tokio::spawn(leadscore_worker::run(db.store.clone(), config, workers_stopped));
    Server {
        base: format!("http://{addr}"),
        addr,
        db,
        http: {
            leadscore_llm::install_crypto();
            reqwest::Client::new()
        },
        stop: Some(stop),
        stop_workers,
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("request");
        status_json(r).await
    }

    async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.http.post(self.url(path)).json(&body).send().await.expect("request");
        status_json(r).await
    }

    async fn upload(&self, path: &str, csv: impl Into<Vec<u8>>) -> reqwest::Response {
        let form = Form::new().part("file", Part::bytes(csv.into()).file_name("leads.csv"));
        self.http.post(self.url(path)).multipart(form).send().await.expect("request")
    }

    async fn upload_json(&self, csv: impl Into<Vec<u8>>) -> (StatusCode, Value) {
        status_json(self.upload("/v1/leads/upload", csv).await).await
    }
}

async fn status_json(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let bytes = r.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, body)
}

/// Every file in `examples/crm/` (HubSpot, Salesforce, Pipedrive, Apollo, ZoomInfo and Sales Navigator exports,
/// Excel's three text saves) uploads with every row accepted, the encoding and the columns of each field in its
/// report, and the leads' fields composed and accented right.
async fn crm_and_spreadsheet_exports_upload_as_they_are(backend: Backend) {
    let s = server(backend).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/crm");
    let mut files: Vec<_> =
        std::fs::read_dir(dir).expect("examples/crm").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert_eq!(files.len(), 10, "{files:?}");
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).expect("name").to_owned();
        let (status, body) = s.upload_json(std::fs::read(&path).expect("read")).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        assert_eq!(
            (body["rows_accepted"].as_i64(), body["rows_rejected"].as_i64()),
            (Some(3), Some(0)),
            "{name}: {body}"
        );
        let source = &body["source"];
        let (format, encoding) = match name.as_str() {
            "excel-csv.csv" => ("csv", "windows-1252"),
            "excel-unicode-text.txt" => ("csv", "UTF-16LE"),
            "hubspot-contacts.xlsx" => ("xlsx", "UTF-8"),
            _ => ("csv", "UTF-8"),
        };
        assert_eq!(
            (source["format"].as_str(), source["encoding"].as_str()),
            (Some(format), Some(encoding)),
            "{name}: {source}"
        );
        let name_columns = &source["fields"][0];
        assert_eq!(name_columns["field"], "name", "{name}: {source}");
        assert!(!name_columns["columns"].as_array().expect("columns").is_empty(), "{name}: {source}");
        let upload_id = body["upload_id"].as_str().expect("id");
        let (_, report) = s.get(&format!("/v1/uploads/{upload_id}")).await;
        assert_eq!(report["source"], *source, "{name}: the stored report says the same");
        let (_, leads) = s.get(&format!("/v1/leads?upload_id={upload_id}")).await;
        let first = &leads["items"][0];
        assert_eq!(
            (first["name"].as_str(), first["company"].as_str()),
            (Some("José Müller"), Some("Lumen Data GmbH")),
            "{name}: {first}"
        );
        assert!(first["location"].as_str().expect("location").starts_with("München, "), "{name}: {first}");
    }
    // A declared encoding is used; an unknown one is named.
    let latin1 = std::fs::read(format!("{dir}/excel-csv.csv")).expect("read");
    let r = s
        .http
        .post(s.url("/v1/leads/upload?encoding=iso-8859-1"))
        .header("content-type", "text/csv")
        .body(latin1.clone())
        .send()
        .await
        .expect("post");
    let (status, body) = status_json(r).await;
    assert_eq!(
        (status, body["source"]["encoding"].as_str()),
        (StatusCode::CREATED, Some("windows-1252")),
        "{body}"
    );
    // A dry run reads the whole file and stores nothing; a mapping names the columns of odd headers.
    let (_, before) = s.get("/v1/leads?limit=1000").await;
    let odd = "Given,Family,Position,Org,Town,Nation\nAda,Park,CTO,Acme,Seoul,KR\nBo,Kim,,,Busan,KR\n";
    let mapping = r#"{"name":["Given","Family"],"company":"Org","location":["Town","Nation"]}"#;
    let url = format!("/v1/leads/upload?dry_run=true&mapping={}", urlencode(mapping));
    let r = s.http.post(s.url(&url)).header("content-type", "text/csv").body(odd).send().await.expect("post");
    let (status, preview) = status_json(r).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(
        (preview["rows_accepted"].as_u64(), preview["rows_rejected"].as_u64()),
        (Some(1), Some(1)),
        "{preview}"
    );
    assert_eq!(preview["leads"][0]["name"], "Ada Park", "{preview}");
    assert_eq!(preview["leads"][0]["location"], "Seoul, KR", "{preview}");
    assert_eq!(preview["source"]["fields"][1]["columns"], json!(["Position"]), "{preview}");
    assert_eq!(preview["errors"][0]["line"], 3, "{preview}");
    let (_, after) = s.get("/v1/leads?limit=1000").await;
    assert_eq!(
        before["items"].as_array().map(Vec::len),
        after["items"].as_array().map(Vec::len),
        "a dry run stores nothing"
    );
    let url = format!("/v1/leads/upload?mapping={}", urlencode(r#"{"role":"Job Title"}"#));
    let r = s.http.post(s.url(&url)).header("content-type", "text/csv").body(odd).send().await.expect("post");
    let (status, body) = status_json(r).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["detail"].as_str().expect("detail").contains("`Job Title` for `role`"), "{body}");
    let r = s
        .http
        .post(s.url("/v1/leads/upload?mapping=%7B%22nom%22%3A1%7D"))
        .header("content-type", "text/csv")
        .body(odd)
        .send()
        .await
        .expect("post");
    let (status, body) = status_json(r).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("mapping")),
        "{body}"
    );
    // The original service's route has no dry run: it says so rather than storing.
    let r = s
        .http
        .post(s.url("/api/leads/upload/?dry_run=true"))
        .header("content-type", "text/csv")
        .body(odd)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s
        .http
        .post(s.url("/v1/leads/upload?encoding=klingon"))
        .header("content-type", "text/csv")
        .body(latin1)
        .send()
        .await
        .expect("post");
    let (status, body) = status_json(r).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "encoding", "{body}");
}

/// A run over two CRM exports: its CSV carries every upload's own columns under their headers by default, or the
/// ones `include` names, and reads back as CSV with the record ids intact (issue 15).
async fn results_go_back_into_the_crm(backend: Backend) {
    let s = server(backend).await;
    let (_, offer) = s.post_json("/v1/offers", offer_json()).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/crm");
    for file in ["hubspot-contacts.csv", "salesforce-leads.csv"] {
        let (status, body) = s.upload_json(std::fs::read(format!("{dir}/{file}")).expect("read")).await;
        assert_eq!(status, StatusCode::CREATED, "{file}: {body}");
    }
    let r = s
        .http
        .post(s.url("/v1/leads/score"))
        .json(&json!({"offer_id": offer["id"], "all_unscored": true}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let run = wait_run(&s, &location).await;
    let export = |query: &str| {
        let url = s.url(&format!("/v1/runs/{}/results.csv{query}", run["id"].as_str().expect("id")));
        let http = s.http.clone();
        async move { http.get(url).send().await.expect("get").text().await.expect("text") }
    };
    let all = read_csv(&export("").await);
    let header = &all[0];
    for column in ["Record ID", "Lead ID", "Email", "First Name", "Lead Status"] {
        assert!(header.iter().any(|h| h == column), "{column} missing from {header:?}");
    }
    assert_eq!(all.len(), 7, "a header and six leads");
    let picked = read_csv(&export("?include=Email,Record%20ID").await);
    assert_eq!(picked[0][picked[0].len() - 2..], ["Email", "Record ID"]);
    let at = |rows: &[Vec<String>], name: &str, column: &str| {
        let (n, c) = (
            rows[0].iter().position(|h| h == "name").expect("name"),
            rows[0].iter().position(|h| h == column).expect("column"),
        );
        rows.iter().find(|r| r[n] == name).map(|r| r[c].clone()).expect("row")
    };
    assert_eq!(at(&picked, "José Müller", "Record ID").len(), 4, "HubSpot's id, e.g. 5101");
    assert!(at(&picked, "José Müller", "Email").contains('@'));
    let none = read_csv(&export("?include=").await);
    assert_eq!(none[0].last().map(String::as_str), Some("scored_at"), "no source columns");
}

/// The rows of a CSV, read with the `csv` crate as a CRM import would (the header is the first row).
fn read_csv(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.expect("a CSV record").iter().map(str::to_owned).collect())
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn offer_json() -> Value {
    json!({"name": "AI Outreach Automation", "value_props": ["24/7 automated outreach"], "ideal_use_cases": ["B2B SaaS", "Sales teams"]})
}

async fn offers_crud(backend: Backend) {
    let s = server(backend).await;
    let r = s.http.post(s.url("/v1/offers")).json(&offer_json()).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let created: Value = r.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/v1/offers/{id}"));
    assert_eq!(created["ideal_use_cases"], json!(["B2B SaaS", "Sales teams"]));

    let (status, got) = s.get(&location).await;
    assert_eq!((status, &got["name"]), (StatusCode::OK, &json!("AI Outreach Automation")));

    for name in ["second", "third"] {
        s.post_json("/v1/offers", json!({"name": name, "ideal_use_cases": ["SaaS"]})).await;
    }
    let (_, page1) = s.get("/v1/offers?limit=2").await;
    assert_eq!(page1["items"].as_array().expect("items").len(), 2);
    let cursor = page1["next_cursor"].as_str().expect("more pages");
    let (_, page2) = s.get(&format!("/v1/offers?limit=2&cursor={cursor}")).await;
    assert_eq!(page2["items"][0]["name"], "third");
    assert_eq!(page2["next_cursor"], Value::Null);

    let r = s
        .http
        .put(s.url(&location))
        .json(&json!({"name": "Renamed", "ideal_use_cases": ["Fintech"]}))
        .send()
        .await
        .expect("put");
    let (status, updated) = status_json(r).await;
    assert_eq!(
        (status, &updated["name"], &updated["value_props"]),
        (StatusCode::OK, &json!("Renamed"), &json!([]))
    );

    let r = s.http.delete(s.url(&location)).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, problem) = s.get(&location).await;
    assert_eq!((status, &problem["status"]), (StatusCode::NOT_FOUND, &json!(404)));
}

async fn bad_requests_are_problems(backend: Backend) {
    let s = server(backend).await;
    let send = |req: reqwest::RequestBuilder| async move {
        let r = req.send().await.expect("request");
        let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_owned());
        let (status, body) = status_json(r).await;
        assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{status} {body}");
        assert_eq!(body["status"], json!(status.as_u16()), "{body}");
        (status, body)
    };
    let post = |body: &str| {
        s.http.post(s.url("/v1/offers")).header("content-type", "application/json").body(body.to_owned())
    };

    let (status, p) = send(post("{\"name\": ")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().expect("detail").starts_with("malformed JSON"), "{p}");

    let (status, p) = send(post(r#"{"name": "x", "ideal_use_case": ["SaaS"]}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "ideal_use_case");

    let (status, p) = send(post(r#"{"name": "x", "ideal_use_cases": []}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["errors"][0]["field"], "ideal_use_cases");

    let (status, p) =
        send(post(r#"{"name": "", "value_props": [""], "ideal_use_cases": ["ok", " "]}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> =
        p["errors"].as_array().expect("errors").iter().map(|e| e["field"].as_str().expect("field")).collect();
    assert_eq!(fields, ["name", "value_props[0]", "ideal_use_cases[1]"]);

    let (status, _) =
        send(s.http.post(s.url("/v1/offers")).header("content-type", "text/plain").body("{}")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge = format!(r#"{{"name": "{}", "ideal_use_cases": ["a"]}}"#, "x".repeat(2 * 1024 * 1024));
    let (status, _) = send(post(&huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let (status, p) = send(s.http.get(s.url("/v1/offers/nope"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(p["detail"], "offer \"nope\" does not exist");
    let (status, _) = send(s.http.get(s.url("/v1/leads/nope"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(s.http.delete(s.url("/v1/leads/nope"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(s.http.get(s.url("/v1/uploads/nope/errors"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for bad in ["0", "1001", "ten", "-1"] {
        let (status, p) = send(s.http.get(s.url(&format!("/v1/leads?limit={bad}")))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit={bad}");
        assert_eq!(p["errors"][0]["field"], "limit");
    }
    let (status, p) = send(s.http.get(s.url("/v1/no/such/route"))).await;
    assert_eq!((status, &p["detail"]), (StatusCode::NOT_FOUND, &json!("no route /v1/no/such/route")));

    let (status, p) =
        send(s.http.post(s.url("/v1/leads/upload")).header("content-type", "application/json").body("{}"))
            .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(p["detail"].as_str().expect("detail").contains("multipart/form-data"), "{p}");
    let form = Form::new().part("other", Part::bytes(SAMPLE.as_bytes().to_vec()));
    let (status, p) = send(s.http.post(s.url("/v1/leads/upload")).multipart(form)).await;
    assert_eq!((status, &p["errors"][0]["field"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("file")));
}

async fn uploads_multipart_and_csv_bodies(backend: Backend) {
    let s = server(backend).await;
    let csv = format!(
        "{SAMPLE},CEO,Nameless,SaaS,Oslo,bio\nJohn Doe,CEO,TechCorp,B2B SaaS,New York,15 years building enterprise SaaS platforms\n"
    );
    let r = s.upload("/v1/leads/upload", csv).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let up: Value = r.json().await.expect("json");
    assert_eq!(
        (up["rows_total"].as_i64(), up["rows_accepted"].as_i64(), up["rows_rejected"].as_i64()),
        (Some(5), Some(3), Some(2))
    );
    assert_eq!(
        up["errors"],
        json!([{"line": 5, "column": "name", "message": "name is required"}, {"line": 6, "message": "duplicate of line 2"}])
    );
    assert_eq!(up["filename"], "leads.csv");
    let upload_id = up["upload_id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/v1/uploads/{upload_id}"));

    let (status, report) = s.get(&location).await;
    assert_eq!((status, &report["rows_accepted"]), (StatusCode::OK, &json!(3)));
    let (_, errors) = s.get(&format!("{location}/errors?limit=1")).await;
    assert_eq!(errors["items"][0]["line"], 5);
    let (_, errors) = s
        .get(&format!("{location}/errors?limit=1&cursor={}", errors["next_cursor"].as_str().expect("next")))
        .await;
    assert_eq!((&errors["items"][0]["line"], &errors["next_cursor"]), (&json!(6), &Value::Null));

    // The same leads again as a text/csv body, with an extra column and a semicolon delimiter.
    let body = "Name;Title;Company;Industry;Location;Bio;Deal Size\nAnn;VP Sales;Acme;Fintech;Oslo;bio;50k\n";
    let r = s
        .http
        .post(s.url("/v1/leads/upload"))
        .header("content-type", "text/csv; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("post");
    let (status, up2) = status_json(r).await;
    assert_eq!(
        (status, &up2["rows_accepted"], &up2["filename"]),
        (StatusCode::CREATED, &json!(1), &Value::Null)
    );

    let (_, leads) = s.get("/v1/leads?limit=3").await;
    let names: Vec<&str> =
        leads["items"].as_array().expect("items").iter().map(|l| l["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["John Doe", "Jane Smith", "Mike Wilson"]);
    assert_eq!(leads["items"][1]["line"], 3);
    let (_, rest) =
        s.get(&format!("/v1/leads?limit=3&cursor={}", leads["next_cursor"].as_str().expect("next"))).await;
    assert_eq!(rest["items"][0]["attributes"], json!([{"name": "Deal Size", "value": "50k"}]));
    let (_, only) = s.get(&format!("/v1/leads?upload_id={}", up2["upload_id"].as_str().expect("id"))).await;
    assert_eq!(only["items"].as_array().expect("items").len(), 1);

    let id = leads["items"][0]["id"].as_str().expect("id");
    let (status, lead) = s.get(&format!("/v1/leads/{id}")).await;
    assert_eq!((status, &lead["role"]), (StatusCode::OK, &json!("CEO")));
    let r = s.http.delete(s.url(&format!("/v1/leads/{id}"))).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.get(&format!("/v1/leads/{id}")).await.0, StatusCode::NOT_FOUND);
}

async fn hostile_csv_corpus_never_answers_5xx(backend: Backend) {
    let s = server(backend).await;
    let two_mb_field = format!(
        "{HEADER}Ann,CEO,Acme,SaaS,Oslo,\"{}\"\nBob,CTO,Acme,SaaS,Oslo,bio\n",
        "x".repeat(2 * 1024 * 1024)
    );
    let binary: Vec<u8> = (0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut nul = HEADER.as_bytes().to_vec();
    nul.extend_from_slice(b"A\0nn,CEO,Acme,SaaS,Oslo,bio\0\nBob,CTO,Acme,SaaS,Oslo,bio\n");
    let mut latin1 = HEADER.as_bytes().to_vec();
    latin1.extend_from_slice(b"Bj\xF6rn,CEO,Acme,SaaS,Malm\xF6,bio\nBob,CTO,Acme,SaaS,Oslo,bio\n");
    let cases: Vec<(&str, Vec<u8>, StatusCode, Option<i64>)> = vec![
        ("empty file", vec![], StatusCode::UNPROCESSABLE_ENTITY, None),
        ("only a header", HEADER.into(), StatusCode::CREATED, Some(0)),
        ("binary data", binary, StatusCode::UNPROCESSABLE_ENTITY, None),
        // Read as a workbook (issue 15): a broken one is a 422 saying so.
        (
            "a broken Excel workbook",
            b"PK\x03\x04\x14\x00\x06\x00rest of a zip".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        ("a PDF", b"%PDF-1.7 rest".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE, None),
        ("NUL bytes", nul, StatusCode::CREATED, Some(2)),
        // Found to be windows-1252 and transcoded: both rows, accents kept (issue 15).
        ("Latin-1", latin1, StatusCode::CREATED, Some(2)),
        (
            "unterminated quote",
            format!("{HEADER}\"Ann,CEO,Acme,SaaS,Oslo,bio\nBob,CTO,Acme,SaaS,Oslo,bio\n").into(),
            StatusCode::CREATED,
            Some(1),
        ),
        (
            "duplicate headers",
            b"name,role,title,company,industry,location,bio\n".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        ("missing columns", b"name,email\nAnn,a@b.c\n".to_vec(), StatusCode::UNPROCESSABLE_ENTITY, None),
        ("a 2 MB field", two_mb_field.into(), StatusCode::CREATED, Some(1)),
        ("JSON sent as a file", b"{\"name\": \"Ann\"}".to_vec(), StatusCode::UNPROCESSABLE_ENTITY, None),
        (
            "ragged rows",
            format!("{HEADER}a,b\n,,,,,,,,,,\nAnn,CEO,Acme,SaaS,Oslo,bio\n").into(),
            StatusCode::CREATED,
            Some(1),
        ),
        (
            "CR-only line ends with BOM",
            b"\xEF\xBB\xBFname,role,company,industry,location,bio\rAnn,CEO,Acme,SaaS,Oslo,bio\r".to_vec(),
            StatusCode::CREATED,
            Some(1),
        ),
    ];
    for (name, body, want, accepted) in cases {
        let (status, body) = s.upload_json(body).await;
        assert_eq!(status, want, "{name}: {body}");
        if let Some(n) = accepted {
            assert_eq!(body["rows_accepted"], json!(n), "{name}: {body}");
        }
    }
    let (_, p) = s.upload_json(b"name,email\nAnn,a@b.c\n".to_vec()).await;
    let columns: Vec<&str> = p["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["column"].as_str().expect("column"))
        .collect();
    // A name and a role or a company are required; industry, location and bio are read when present.
    assert_eq!(columns, ["role", "company"]);
    assert!(
        p["detail"].as_str().expect("detail").starts_with("missing required columns: role, company"),
        "{p}"
    );
}

async fn upload_limits_store_nothing(backend: Backend) {
    let s = server_with(
        backend,
        UploadLimits { max_bytes: 4096, max_rows: 10, max_field_bytes: 64, ..UploadLimits::default() },
    )
    .await;
    let mut big = HEADER.to_owned();
    for i in 0..200 {
        big.push_str(&format!("Lead {i},CEO,Acme,SaaS,Oslo,bio\n"));
    }
    let (status, p) = s.upload_json(big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{p}");
    assert!(p["detail"].as_str().expect("detail").contains("4096 bytes"), "{p}");
    let mut many = HEADER.to_owned();
    for i in 0..11 {
        many.push_str(&format!("L{i},CEO,A,S,O,b\n"));
    }
    let (status, p) = s.upload_json(many).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{p}");
    assert!(p["detail"].as_str().expect("detail").contains("10 rows"), "{p}");
    assert_eq!(s.db.store.count_leads(DEFAULT_WORKSPACE).await.expect("count"), 0);
    let (status, up) = s
        .upload_json(format!(
            "{HEADER}Ann,CEO,Acme,SaaS,Oslo,{}\nBob,CTO,Acme,SaaS,Oslo,bio\n",
            "b".repeat(65)
        ))
        .await;
    assert_eq!((status, &up["rows_accepted"]), (StatusCode::CREATED, &json!(1)));
    assert_eq!(up["errors"][0]["message"], "`linkedin_bio` is longer than 64 bytes");
}

async fn an_interrupted_upload_stores_nothing(backend: Backend) {
    let s = server(backend).await;
    let mut head = HEADER.to_owned();
    for i in 0..20_000 {
        head.push_str(&format!("Lead {i},CEO,Acme,SaaS,Oslo,bio\n"));
    }
    let addr = s.addr;
    let sent = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(addr).expect("connect");
        let request = format!(
            "POST /v1/leads/upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
            head.len() * 10
        );
        tcp.write_all(request.as_bytes()).expect("head");
        tcp.write_all(head.as_bytes()).expect("part of the body");
        std::thread::sleep(Duration::from_millis(300));
        drop(tcp); // the client goes away mid-upload
    });
    sent.await.expect("client");
    // The server notices, rolls back, and keeps serving.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = s.upload_json(format!("{HEADER}Probe,CEO,Acme,SaaS,Oslo,bio\n")).await;
        assert_eq!(status, StatusCode::CREATED);
        let count = s.db.store.count_leads(DEFAULT_WORKSPACE).await.expect("count");
        let uploads =
            s.db.store
                .list_leads(DEFAULT_WORKSPACE, None, &Page { limit: 10, after: None })
                .await
                .expect("list");
        assert!(
            uploads.items.iter().all(|l| l.lead.name == "Probe"),
            "no lead of the interrupted upload is visible"
        );
        if count >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "server kept serving");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        s.db.store
            .list_leads(DEFAULT_WORKSPACE, None, &Page { limit: 1000, after: None })
            .await
            .expect("list")
            .items
            .iter()
            .all(|l| l.lead.name == "Probe")
    );
    // Raw HTTP also gets a well-formed 201 for a complete body (sanity check of the raw client above).
    let mut tcp = TcpStream::connect(addr).expect("connect");
    let body = format!("{HEADER}Raw,CEO,Acme,SaaS,Oslo,bio\n");
    write!(tcp, "POST /v1/leads/upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

async fn api_keys_and_workspaces(backend: Backend) {
    let s = server(backend).await;
    let (status, offer) = s.post_json("/v1/offers", offer_json()).await;
    assert_eq!(status, StatusCode::CREATED);
    let default_offer = offer["id"].as_str().expect("id").to_owned();
    let acme = s.db.store.create_api_key("acme", None).await.expect("key");
    let ops = s.db.store.create_api_key("ops", Some(DEFAULT_WORKSPACE)).await.expect("key");

    let (status, p) = s.get("/v1/offers").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{p}");
    let r = s.http.get(s.url("/v1/offers")).bearer_auth("lsk_wrong").send().await.expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = s.http.get(s.url("/api/leads/")).send().await.expect("get");
    let (status, body) = status_json(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].is_string(), "compat routes keep their error shape: {body}");

    let with = |key: &str, req: reqwest::RequestBuilder| req.bearer_auth(key.to_owned());
    let r =
        with(&ops.key, s.http.get(s.url(&format!("/v1/offers/{default_offer}")))).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK, "the default workspace's key sees the data created before auth");
    let r =
        with(&acme.key, s.http.get(s.url(&format!("/v1/offers/{default_offer}")))).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "another workspace's id is 404, not 403");
    let r = with(&acme.key, s.http.post(s.url("/v1/offers")).json(&offer_json())).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = with(&acme.key, s.http.get(s.url("/v1/offers"))).send().await.expect("list");
    let (_, page) = status_json(r).await;
    assert_eq!(page["items"].as_array().expect("items").len(), 1);
    let form = Form::new().part("file", Part::bytes(SAMPLE.as_bytes().to_vec()).file_name("a.csv"));
    let r =
        with(&acme.key, s.http.post(s.url("/v1/leads/upload")).multipart(form)).send().await.expect("upload");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(s.db.store.count_leads(&acme.workspace_id).await.expect("count"), 3);
    assert_eq!(s.db.store.count_leads(DEFAULT_WORKSPACE).await.expect("count"), 0);
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "health needs no key");
}

async fn seed_compatible_routes(backend: Backend) {
    let s = server(backend).await;
    let (status, offer) = s.post_json("/api/offer/", json!({
        "name": "AI Outreach Automation",
        "value_props": ["24/7 automated outreach", "6x more qualified meetings", "Personalized messaging at scale"],
        "ideal_use_cases": ["B2B SaaS", "Sales teams", "Marketing agencies"]
    })).await;
    assert_eq!(status, StatusCode::CREATED);
    let keys: Vec<&str> = offer.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{keys:?}");
    for k in ["id", "name", "value_props", "ideal_use_cases", "created_at"] {
        assert!(offer.get(k).is_some(), "{k} in {offer}");
    }
    let id = offer["id"].as_str().expect("id");
    let (status, list) = s.get("/api/offer/").await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let (status, one) = s.get(&format!("/api/offer/{id}/")).await;
    assert_eq!((status, &one["name"]), (StatusCode::OK, &json!("AI Outreach Automation")));
    let (status, err) = s.get("/api/offer/nope/").await;
    assert_eq!((status, err), (StatusCode::NOT_FOUND, json!({"error": "Offer not found."})));
    let (status, err) = s.post_json("/api/offer/", json!({"name": "x", "ideal_use_cases": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().expect("error").contains("ideal_use_cases"), "{err}");
    let r = s
        .http
        .put(s.url(&format!("/api/offer/{id}/")))
        .json(&json!({"name": "Renamed", "ideal_use_cases": ["SaaS"]}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::OK);

    let r = s.upload("/api/leads/upload/", SAMPLE).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["x-rows-rejected"], "0");
    let (_, created) = status_json(r).await;
    let created = created.as_array().expect("array of leads");
    assert_eq!(created.len(), 3);
    assert_eq!(created[0]["name"], "John Doe");
    for k in [
        "id",
        "name",
        "role",
        "company",
        "industry",
        "location",
        "linkedin_bio",
        "intent",
        "score",
        "reasoning",
        "created_at",
    ] {
        assert!(created[0].get(k).is_some(), "{k} in {}", created[0]);
    }
    assert_eq!((&created[0]["intent"], &created[0]["score"]), (&Value::Null, &Value::Null));

    let mut more = HEADER.to_owned();
    for i in 0..12 {
        more.push_str(&format!("Lead {i},Manager,Acme,SaaS,Oslo,bio\n"));
    }
    assert_eq!(s.upload("/api/leads/upload/", more).await.status(), StatusCode::CREATED);
    let (status, page) = s.get("/api/leads/").await;
    assert_eq!((status, &page["count"], &page["previous"]), (StatusCode::OK, &json!(15), &Value::Null));
    assert_eq!(page["results"].as_array().expect("results").len(), 10);
    assert_eq!(page["next"], json!("/api/leads/?page=2"));
    let (_, page2) = s.get("/api/leads/?page=2").await;
    assert_eq!((page2["results"].as_array().map(Vec::len), &page2["next"]), (Some(5), &Value::Null));
    assert_eq!(page2["previous"], json!("/api/leads/"));
    let (status, err) = s.get("/api/leads/?page=9").await;
    assert_eq!((status, err), (StatusCode::NOT_FOUND, json!({"error": "Invalid page."})));

    let lead_id = created[1]["id"].as_str().expect("id");
    let (status, lead) = s.get(&format!("/api/leads/{lead_id}/")).await;
    assert_eq!((status, &lead["name"]), (StatusCode::OK, &json!("Jane Smith")));
    let r = s.http.delete(s.url(&format!("/api/leads/{lead_id}/"))).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, err) = s.get(&format!("/api/leads/{lead_id}/")).await;
    assert_eq!((status, err), (StatusCode::NOT_FOUND, json!({"error": "Lead not found."})));

    let r = s.upload("/api/leads/upload/", "name,email\nAnn,a@b.c\n").await;
    let (status, err) = status_json(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().expect("error").starts_with("missing required columns"), "{err}");
    let r = s.http.delete(s.url(&format!("/api/offer/{id}/"))).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

/// Every route the service offers, as (method, path). A route added to the router without documenting it, or
/// documented without existing, fails here.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/offers"),
    ("get", "/v1/offers"),
    ("get", "/v1/offers/{id}"),
    ("put", "/v1/offers/{id}"),
    ("delete", "/v1/offers/{id}"),
    ("post", "/v1/leads/upload"),
    ("get", "/v1/leads"),
    ("get", "/v1/leads/{id}"),
    ("delete", "/v1/leads/{id}"),
    ("get", "/v1/uploads/{id}"),
    ("get", "/v1/uploads/{id}/errors"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("post", "/api/offer/"),
    ("get", "/api/offer/"),
    ("get", "/api/offer/{id}/"),
    ("put", "/api/offer/{id}/"),
    ("delete", "/api/offer/{id}/"),
    ("get", "/api/leads/"),
    ("get", "/api/leads/{id}/"),
    ("delete", "/api/leads/{id}/"),
    ("post", "/api/leads/upload/"),
    ("post", "/v1/leads/score"),
    ("get", "/v1/runs"),
    ("get", "/v1/runs/{id}"),
    ("get", "/v1/runs/{id}/jobs"),
    ("get", "/v1/runs/{id}/events"),
    ("post", "/v1/runs/{id}/cancel"),
    ("post", "/v1/runs/{id}/pause"),
    ("post", "/v1/runs/{id}/resume"),
    ("post", "/v1/runs/{id}/retry"),
    ("get", "/v1/runs/{id}/results"),
    ("get", "/v1/runs/{id}/results.csv"),
    ("get", "/v1/results"),
    ("get", "/v1/results.csv"),
    ("post", "/api/leads/score/"),
    ("get", "/api/leads/results/"),
    ("get", "/api/leads/export_csv/"),
];

#[tokio::test]
async fn openapi_documents_every_route_and_every_documented_route_exists() {
    let s = server(Backend::Sqlite).await;
    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"), "{}", doc["openapi"]);
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item
            .as_object()
            .expect("item")
            .keys()
            .filter(|m| ["get", "post", "put", "delete", "patch"].contains(&m.as_str()))
        {
            documented.push((method.clone(), path.clone()));
            let op = &item[method];
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} documents its responses"
            );
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> =
        ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    expected.sort();
    assert_eq!(documented, expected);

    // Every documented route is served: the router answers something other than its own "no route" 404 / 405.
    for (method, path) in ROUTES {
        let url = s.url(&path.replace("{id}", "some-id"));
        let req = match *method {
            "get" => s.http.get(&url),
            "post" => s.http.post(&url),
            "put" => s.http.put(&url),
            _ => s.http.delete(&url),
        };
        let r = req.send().await.expect("request");
        let status = r.status();
        let body = r.text().await.expect("body");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(!body.contains("problems/no-route"), "{method} {path} is not routed: {body}");
    }
    let r = s.http.get(s.url("/docs/")).send().await.expect("docs");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.expect("html").contains("swagger"), "Swagger UI is served from the binary");
    // Schemas carry examples.
    assert!(doc["components"]["schemas"]["OfferBody"]["example"].is_object(), "OfferBody has an example");
}

async fn wait_run(s: &Server, location: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, run) = s.get(location).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        if run["status"] == "completed" {
            return run;
        }
        assert!(std::time::Instant::now() < deadline, "run did not complete: {run}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn runs_over_http(backend: Backend) {
    let s = server(backend).await;
    let (_, offer) = s.post_json("/v1/offers", offer_json()).await;
    let offer_id = offer["id"].as_str().expect("id").to_owned();
    let (_, up) = s.upload_json(SAMPLE).await;
    let upload_id = up["upload_id"].as_str().expect("id").to_owned();

    let (status, p) =
        s.post_json("/v1/leads/score", json!({"offer_id": "nope", "upload_id": upload_id})).await;
    assert_eq!((status, &p["status"]), (StatusCode::NOT_FOUND, &json!(404)));
    let (status, p) = s
        .post_json(
            "/v1/leads/score",
            json!({"offer_id": offer_id, "upload_id": upload_id, "all_unscored": true}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let (status, p) =
        s.post_json("/v1/leads/score", json!({"offer_id": offer_id, "lead_ids": ["nope"]})).await;
    assert_eq!(status, StatusCode::CONFLICT, "no such lead: nothing to score");
    assert!(p["detail"].as_str().is_some_and(|d| d.starts_with("lead_ids: ")), "{p}");

    let r = s
        .http
        .post(s.url("/v1/leads/score"))
        .json(&json!({"offer_id": offer_id, "upload_id": upload_id}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let created: Value = r.json().await.expect("json");
    assert_eq!(created["job_counts"]["total"], 3);
    // The events stream carries status events and ends with the finished run.
    let events = tokio::time::timeout(
        Duration::from_secs(20),
        s.http.get(s.url(&format!("{location}/events"))).send(),
    )
    .await
    .expect("events answer")
    .expect("events");
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(Duration::from_secs(20), events.text())
        .await
        .expect("the stream ends")
        .expect("body");
    let last = text.lines().rev().find_map(|l| l.strip_prefix("data: ")).expect("a data line");
    let last: Value = serde_json::from_str(last).expect("json event");
    assert_eq!(
        (&last["status"], &last["job_counts"]["succeeded"]),
        (&json!("completed"), &json!(3)),
        "{text}"
    );
    assert!(text.contains("event: status"), "{text}");
    let run = wait_run(&s, &location).await;
    let counts = &run["job_counts"];
    assert_eq!((counts["total"].as_i64(), counts["succeeded"].as_i64()), (Some(3), Some(3)));
    assert_eq!(run["result_counts"], json!({"hybrid": 0, "rules_only": 3}));
    assert_eq!(run["eta_seconds"], 0);

    let r = s.http.get(s.url(&location)).send().await.expect("get");
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let r = s.http.get(s.url(&location)).header("if-none-match", &etag).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let (_, results) = s.get(&format!("{location}/results")).await;
    let items = results["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    let john = items.iter().find(|r| r["name"] == "John Doe").expect("John");
    assert_eq!(
        (&john["score"], &john["intent"], &john["score_basis"], &john["ai_status"]),
        (&json!(100), &json!("High"), &json!("rules_only"), &json!("skipped"))
    );
    assert_eq!(john["rule_reasons"][0]["code"], "decision_maker_role");
    assert_eq!(john["rule_reasons"][0]["text"], "Decision maker role (+20)");
    let (_, high) = s.get(&format!("{location}/results?min_score=70&intent=High")).await;
    assert_eq!(high["items"].as_array().map(Vec::len), Some(2));
    let (status, p) = s.get(&format!("{location}/results?intent=Huge")).await;
    assert_eq!((status, &p["errors"][0]["field"]), (StatusCode::BAD_REQUEST, &json!("intent")));
    let (_, jobs) = s.get(&format!("{location}/jobs?status=succeeded")).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(jobs["items"][0]["attempts"], 1);

    let r = s.http.get(s.url(&format!("{location}/results.csv"))).send().await.expect("csv");
    assert_eq!(r.status(), StatusCode::OK);
    let csv = r.text().await.expect("text");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("lead_id,external_id,name,role,company,industry,location,intent,score,"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        csv.contains(",John Doe,CEO,TechCorp,B2B SaaS,New York,High,100,50,,,rules_only,skipped,"),
        "{csv}"
    );

    let (_, runs) = s.get("/v1/runs").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(1));

    // Idempotency-Key: the same request again is the same run; another body with the key is refused.
    let (_, up2) = s.upload_json(format!("{HEADER}Zed,CTO,Acme,B2B SaaS,Oslo,bio\n")).await;
    let body = json!({"offer_id": offer_id, "upload_id": up2["upload_id"]});
    let send = |body: Value| {
        s.http
            .post(s.url("/v1/leads/score"))
            .header("idempotency-key", "k-1")
            .header("prefer", "wait=10")
            .json(&body)
            .send()
    };
    let r = send(body.clone()).await.expect("post");
    assert_eq!(r.status(), StatusCode::OK, "Prefer: wait answers the finished run");
    assert_eq!(r.headers()["preference-applied"], "wait=10");
    let first: Value = r.json().await.expect("json");
    assert_eq!(first["results"][0]["name"], "Zed");
    let again: Value = send(body).await.expect("post").json().await.expect("json");
    assert_eq!(again["run"]["id"], first["run"]["id"], "same key, same run");
    let (status, _) =
        status_json(send(json!({"offer_id": offer_id, "all_unscored": true})).await.expect("post")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "the same key with another body");
    let (_, runs) = s.get("/v1/runs").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(2));

    // Retry re-queues the rules_only results; the new results replace the old ones with version 2.
    let (status, retried) = s.post_json(&format!("{location}/retry"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    let run = wait_run(&s, &location).await;
    assert_eq!(run["job_counts"]["succeeded"], 3);
    let (_, results) = s.get(&format!("{location}/results")).await;
    assert!(results["items"].as_array().expect("items").iter().all(|r| r["version"] == 2), "{results}");
    // /v1/results: the current result per lead (the retry's version 2), across runs.
    let (_, current) = s.get(&format!("/v1/results?offer_id={offer_id}&limit=2")).await;
    assert_eq!(current["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(current["items"][0]["version"], 2);
    let (_, rest) = s
        .get(&format!(
            "/v1/results?offer_id={offer_id}&limit=2&cursor={}",
            current["next_cursor"].as_str().expect("more")
        ))
        .await;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(2), "3 leads of the first upload + Zed");
    assert_eq!(rest["next_cursor"], Value::Null);
    let csv = s
        .http
        .get(s.url("/v1/results.csv?min_score=70"))
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("text");
    assert_eq!(csv.lines().count(), 4, "header + John, Jane and Zed: {csv}");
    let (status, p) = s.get("/v1/results?cursor=garbage").await;
    assert_eq!((status, &p["errors"][0]["field"]), (StatusCode::BAD_REQUEST, &json!("cursor")));
    let (status, p) = s.post_json(&format!("{location}/pause"), json!({})).await;
    assert_eq!(
        (status, &p["status"]),
        (StatusCode::CONFLICT, &json!(409)),
        "a completed run cannot be paused"
    );
    let (status, _) = s.post_json("/v1/runs/nope/cancel", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        s.post_json("/v1/leads/score", json!({"offer_id": offer_id, "all_unscored": true})).await;
    assert_eq!(status, StatusCode::CONFLICT, "every lead is scored for this offer");

    // Deleting a lead takes its job and result with it; the run counts one lead less and still adds up.
    let (_, results) = s.get(&format!("{location}/results")).await;
    let john =
        results["items"].as_array().expect("items").iter().find(|r| r["name"] == "John Doe").expect("John");
    let john_id = john["lead_id"].as_str().expect("lead id").to_owned();
    let r = s.http.delete(s.url(&format!("/v1/leads/{john_id}"))).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, run) = s.get(&location).await;
    assert_eq!(
        (&run["status"], &run["job_counts"]["total"], &run["job_counts"]["succeeded"], &run["result_counts"]),
        (&json!("completed"), &json!(2), &json!(2), &json!({"hybrid": 0, "rules_only": 2})),
        "{run}"
    );
    let (_, results) = s.get(&format!("{location}/results")).await;
    assert_eq!(results["items"].as_array().map(Vec::len), Some(2));
    let (_, jobs) = s.get(&format!("{location}/jobs")).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(2));
    let (_, current) = s.get(&format!("/v1/results?offer_id={offer_id}")).await;
    assert!(current["items"].as_array().expect("items").iter().all(|r| r["lead_id"] != json!(john_id)));
    let r = s.http.delete(s.url(&format!("/v1/leads/{john_id}"))).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "already gone");
}

/// The original service's README, step by step, against our aliases.
async fn the_original_walkthrough_scores_end_to_end(backend: Backend) {
    let s = server(backend).await;
    let r = s.http.post(s.url("/api/leads/score/")).send().await.expect("score");
    let (status, err) = status_json(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().expect("error").starts_with("Please create an offer first"), "{err}");
    let (status, _) = s.post_json("/api/offer/", json!({
        "name": "AI Outreach Automation",
        "value_props": ["24/7 automated outreach", "6x more qualified meetings", "Personalized messaging at scale"],
        "ideal_use_cases": ["B2B SaaS", "Sales teams", "Marketing agencies"]
    })).await;
    assert_eq!(status, StatusCode::CREATED);
    let r = s.http.post(s.url("/api/leads/score/")).send().await.expect("score");
    let (status, err) = status_json(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().expect("error").starts_with("No unscored leads found"), "{err}");
    assert_eq!(s.upload("/api/leads/upload/", SAMPLE).await.status(), StatusCode::CREATED);

    let r = s.http.post(s.url("/api/leads/score/")).send().await.expect("score");
    let (status, scored) = status_json(r).await;
    assert_eq!(status, StatusCode::OK, "{scored}");
    assert_eq!(scored["total_scored"], 3);
    let john = &scored["results"][0];
    assert_eq!(
        (&john["name"], &john["intent"], &john["score"]),
        (&json!("John Doe"), &json!("High"), &json!(100))
    );
    assert_eq!(john["score_breakdown"], json!({"rule_score": 50, "ai_score": 0}));
    assert!(
        john["reasoning"]
            .as_str()
            .expect("reasoning")
            .starts_with("[Rule: Decision maker role (+20), Exact ICP match (+20), Complete profile (+10)]")
    );
    let mike = &scored["results"][2];
    assert_eq!((&mike["intent"], &mike["score"]), (&json!("Medium"), &json!(40)));

    let (status, page) = s.get("/api/leads/results/").await;
    assert_eq!((status, &page["count"], &page["next"]), (StatusCode::OK, &json!(3), &Value::Null));
    assert_eq!(page["results"][1]["name"], "Jane Smith");
    assert_eq!(page["results"][1]["score"], 100);

    let r = s.http.get(s.url("/api/leads/export_csv/")).send().await.expect("export");
    assert_eq!(r.status(), StatusCode::OK);
    let csv = r.text().await.expect("csv");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("Name,Role,Company,Industry,Location,Intent,Score,Reasoning"));
    assert!(
        lines.next().expect("row").starts_with("John Doe,CEO,TechCorp,B2B SaaS,New York,High,100,"),
        "{csv}"
    );

    let r = s.http.post(s.url("/api/leads/score/")).send().await.expect("score again");
    let (status, _) = status_json(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "nothing left to score");
}

async fn wait_status(s: &Server, run: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = s.get(&format!("/v1/runs/{run}")).await;
        if body["status"] == status {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "run never became {status}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A rejected key blocks the run (its reason on the run and on /readyz); an operator fixes the key and resumes
/// it over HTTP, which closes the breaker; the run then finishes with AI verdicts, usage and cost.
async fn ai_layer_over_http(backend: Backend) {
    let fake = FakeLlm::new(FakeConfig { api_key: Some("sk-right".into()), ..FakeConfig::default() });
    let addr = fake.spawn("127.0.0.1:0".parse().expect("addr")).await.expect("fake");
    let mut llm = LlmConfig::for_base_url(&format!("http://{addr}/v1"), "gpt-4.1-mini");
    llm.api_key = Some("sk-wrong".into());
    let s = server_full(backend, UploadLimits::default(), Some(llm)).await;
    let (_, offer) = s.post_json("/v1/offers", offer_json()).await;
    let (_, up) = s.upload_json(SAMPLE).await;
    let (status, run) =
        s.post_json("/v1/leads/score", json!({"offer_id": offer["id"], "upload_id": up["upload_id"]})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let estimate = run["usage"]["estimated_cost_usd"].as_f64().expect("estimate");
    assert!(estimate > 0.0 && estimate < 0.01, "3 leads on gpt-4.1-mini: {estimate}");
    let id = run["id"].as_str().expect("id").to_owned();

    let blocked = wait_status(&s, &id, "blocked").await;
    assert!(blocked["blocked_reason"].as_str().is_some_and(|r| r.contains("401")), "{blocked}");
    let (_, ready) = s.get("/readyz").await;
    assert!(ready["ai"].as_str().is_some_and(|a| a.starts_with("blocked: 401")), "{ready}");

    fake.set_config(FakeConfig::default());
    let (status, resumed) = s.post_json(&format!("/v1/runs/{id}/resume"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["blocked_reason"], Value::Null);
    let (_, ready) = s.get("/readyz").await;
    assert_eq!(ready["ai"], "ok");
    let done = wait_status(&s, &id, "completed").await;
    assert_eq!(done["result_counts"], json!({"hybrid": 3, "rules_only": 0}), "{done}");
    assert!(done["usage"]["prompt_tokens"].as_i64().is_some_and(|t| t > 300), "{done}");
    assert!(done["usage"]["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{done}");
    let (_, results) = s.get(&format!("/v1/runs/{id}/results")).await;
    for r in results["items"].as_array().expect("items") {
        assert_eq!(
            (&r["ai_status"], &r["score_basis"], &r["model"]),
            (&json!("ok"), &json!("hybrid"), &json!("gpt-4.1-mini")),
            "{r}"
        );
    }
}
