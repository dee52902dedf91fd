//! Crash safety of the embedded queue with real processes: `leadscore serve` on a SQLite file is SIGKILLed in the
//! middle of a run and started again on the same file; the run finishes with every lead scored exactly once.

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leadscore_core::prompt::build_prompt;
use leadscore_core::{Lead, Offer};
use leadscore_fake_llm::{FakeConfig, FakeLlm, verdict_for};
use leadscore_store::sqlx;
use serde_json::{Value, json};

const LEADS: usize = 3000;

/// A scratch directory, removed at the end; kept (with the servers' logs) when the test fails.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("scratch dir kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A running `leadscore serve`; dropping it is a SIGKILL (`Child::kill`), never a drain.
struct Serve {
    child: Child,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("db.sqlite").display())
}

async fn serve(dir: &Path, fake: &str, log: &str) -> Serve {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["serve", "--database-url", &db_url(dir), "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("DATABASE_URL")
        // In-process limiter and verdict cache: nothing shared with other tests through Redis.
        .env_remove("REDIS_URL")
        .env("LEADSCORE_OPS_LISTEN", "127.0.0.1:0")
        .env("LEADSCORE_LEASE_SECS", "2")
        // 8 jobs at once against a 30 ms provider cap the run at ~260 leads/s: it lasts > 10 s however fast the
        // machine, so the kill lands mid-run. The rate limits are lifted so they do not set the pace instead.
        .env("LEADSCORE_CONCURRENCY", "8")
        .env("LEADSCORE_RPM", "1000000")
        .env("LEADSCORE_TPM", "1000000000")
        .env("OPENAI_BASE_URL", fake)
        .env("OPENAI_API_KEY", "sk-test")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(File::create(dir.join(log)).expect("log file"))
        .spawn()
        .expect("spawn leadscore serve");
    let mut server = Serve { child, base: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/readyz", server.base)).await
            && r.status().is_success()
        {
            return server;
        }
        assert!(server.child.try_wait().expect("try_wait").is_none(), "serve exited: see {log}");
        assert!(Instant::now() < deadline, "serve not ready within 60 s: see {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends the request and returns its JSON body, asserting the status.
async fn call(request: reqwest::RequestBuilder, status: u16) -> Value {
    let r = request.send().await.expect("request");
    let got = r.status().as_u16();
    let body = r.text().await.expect("body");
    assert_eq!(got, status, "{body}");
    serde_json::from_str(&body).expect("json body")
}

fn offer() -> Offer {
    Offer {
        name: "AI Outreach Automation".into(),
        value_props: vec!["24/7 outreach".into()],
        ideal_use_cases: vec!["B2B SaaS".into()],
    }
}

/// Unique names (to check per lead) and bios (so every prompt, and so every verdict, is the lead's own).
fn lead(i: usize) -> Lead {
    Lead {
        external_id: None,
        name: format!("Lead {i:04}"),
        role: ["CEO", "VP Sales", "Account Executive"][i % 3].into(),
        company: format!("Company {i}"),
        industry: "B2B SaaS".into(),
        location: "Berlin".into(),
        linkedin_bio: format!("Builds outbound pipelines; lead number {i}"),
        attributes: vec![],
    }
}

fn csv(leads: &[Lead]) -> String {
    let mut out = String::from("name,role,company,industry,location,linkedin_bio\n");
    for l in leads {
        out += &format!(
            "{},{},{},{},{},{}\n",
            l.name, l.role, l.company, l.industry, l.location, l.linkedin_bio
        );
    }
    out
}

/// Rows of `sql` (one `?`: the run id) read from the SQLite file directly, not through the API.
async fn query(dir: &Path, sql: &'static str, run: &str) -> Vec<(String, i64)> {
    let pool = sqlx::SqlitePool::connect(&db_url(dir)).await.expect("open the SQLite file");
    let rows = sqlx::query_as(sql).bind(run).fetch_all(&pool).await.expect("query");
    pool.close().await;
    rows
}

const JOB_STATES: &str = "select status, count(*) from jobs where run_id = ? group by status order by status";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_serve_loses_no_job_and_scores_none_twice() {
    leadscore_llm::install_crypto();
    let dir = std::env::temp_dir().join(format!("leadscore-serve-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let scratch = Scratch(dir);
    let dir = scratch.0.as_path();
    let fake = FakeLlm::new(FakeConfig { latency_ms: 30, ..FakeConfig::default() });
    let fake =
        format!("http://{}/v1", fake.spawn("127.0.0.1:0".parse().expect("addr")).await.expect("fake LLM"));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");

    let first = serve(dir, &fake, "serve-1.log").await;
    let base = first.base.clone();
    let o = offer();
    let body = json!({"name": o.name, "value_props": o.value_props, "ideal_use_cases": o.ideal_use_cases});
    let offer_id = call(http.post(format!("{base}/v1/offers")).json(&body), 201).await["id"].clone();
    let leads: Vec<Lead> = (0..LEADS).map(lead).collect();
    let upload =
        http.post(format!("{base}/v1/leads/upload")).header("content-type", "text/csv").body(csv(&leads));
    let upload = call(upload, 201).await;
    assert_eq!(upload["rows_accepted"], LEADS, "{upload}");
    let score = json!({"offer_id": offer_id, "upload_id": upload["upload_id"]});
    let run = call(http.post(format!("{base}/v1/leads/score")).json(&score), 202).await;
    let run_id = run["id"].as_str().expect("run id").to_owned();
    let run_url = format!("{base}/v1/runs/{run_id}");

    // Kill once a fifth is scored: well inside the run (the concurrency cap keeps it from racing to the end).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = call(http.get(&run_url), 200).await;
        if run["job_counts"]["succeeded"].as_u64().expect("succeeded") >= LEADS as u64 / 5 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress before the kill: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(first); // SIGKILL: running jobs keep their leases, nothing is given back
    let at_kill: HashMap<String, i64> = query(dir, JOB_STATES, &run_id).await.into_iter().collect();
    eprintln!("job states at the kill: {at_kill:?}");
    let (done, running) = (at_kill.get("succeeded").copied(), at_kill.get("running").copied().unwrap_or(0));
    assert!(done.is_some_and(|n| n < LEADS as i64 * 3 / 5), "killed mid-run: {at_kill:?}");
    assert!(running > 0, "the kill left leased jobs behind to rescue: {at_kill:?}");

    // The second process rescues the expired leases and finishes the run.
    let second = serve(dir, &fake, "serve-2.log").await;
    let run_url = format!("{}/v1/runs/{run_id}", second.base);
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let run = call(http.get(&run_url), 200).await;
        if !run["finished_at"].is_null() {
            break run;
        }
        assert!(Instant::now() < deadline, "run not finished within 120 s of the restart: {run}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["status"], "completed", "{run}");
    let counts = &run["job_counts"];
    assert_eq!(
        (&counts["total"], &counts["succeeded"], &counts["failed"]),
        (&json!(LEADS), &json!(LEADS), &json!(0))
    );
    assert_eq!(run["result_counts"]["hybrid"], LEADS, "tallies count each lead once: {run}");

    // Every lead exactly once in the results, with the verdict the fake gives its prompt. `cached` is an AI
    // verdict too: embedded mode caches verdicts in the database, so a job killed after its provider call but
    // before its result was written reuses the verdict it paid for.
    let expected: HashMap<String, &str> =
        leads.iter().map(|l| (l.name.clone(), verdict_for(&build_prompt(&o, l).user).0)).collect();
    let (mut seen, mut statuses) = (HashMap::<String, usize>::new(), HashMap::<String, usize>::new());
    let mut page_url = format!("{run_url}/results?limit=1000");
    loop {
        let page = call(http.get(&page_url), 200).await;
        for r in page["items"].as_array().expect("items") {
            let name = r["name"].as_str().expect("name");
            let want = expected.get(name).copied().unwrap_or_else(|| panic!("unknown lead {r}"));
            assert_eq!((&r["score_basis"], &r["ai_intent"]), (&json!("hybrid"), &json!(want)), "{r}");
            let status = r["ai_status"].as_str().expect("ai_status");
            assert!(matches!(status, "ok" | "cached"), "{r}");
            *statuses.entry(status.to_owned()).or_default() += 1;
            *seen.entry(name.to_owned()).or_default() += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => page_url = format!("{run_url}/results?limit=1000&cursor={next}"),
            None => break,
        }
    }
    eprintln!("ai_status of the results: {statuses:?}");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "leads with more than one result: {twice:?}");
    let missing: Vec<_> = expected.keys().filter(|n| !seen.contains_key(*n)).collect();
    assert!(missing.is_empty(), "{} leads without a result, e.g. {:?}", missing.len(), missing.first());
    drop(second);

    // The file itself: no job left running, one result row per (run, lead), the leased jobs tried again.
    assert_eq!(query(dir, JOB_STATES, &run_id).await, [("succeeded".to_owned(), LEADS as i64)]);
    let per_lead = "select 'max rows per lead', coalesce(max(n), 0) from \
                    (select count(*) as n from results where run_id = ? group by lead_id)";
    assert_eq!(query(dir, per_lead, &run_id).await[0].1, 1);
    let rows = "select 'leads with a result', count(distinct lead_id) from results where run_id = ?";
    assert_eq!(query(dir, rows, &run_id).await[0].1, LEADS as i64);
    let retried = "select 'retried jobs', count(*) from jobs where run_id = ? and attempts > 1";
    let retried = query(dir, retried, &run_id).await[0].1;
    assert!(retried >= running, "each job leased at the kill ran again: {retried} retried, {running} leased");
}
