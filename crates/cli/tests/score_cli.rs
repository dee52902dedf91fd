//! `leadscore score` end to end: the real binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("leadscore-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The binary with no AI provider configured, whatever the environment of the test run says.
fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leadscore"));
    c.current_dir(repo()).env_remove("OPENAI_API_KEY").env_remove("OPENAI_BASE_URL").env_remove("REDIS_URL");
    c
}

fn leadscore(args: &[&str]) -> Output {
    command().args(args).output().expect("runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The results CSV as (name, intent, score, rule_score, score_basis, ai_status) rows.
fn rows(csv: &str) -> Vec<Vec<String>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).expect("column");
    let wanted = ["name", "intent", "score", "rule_score", "score_basis", "ai_status"].map(col);
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            wanted.iter().map(|&i| cells[i].to_owned()).collect()
        })
        .collect()
}

#[test]
fn scores_the_examples_and_summarises() {
    let out = scratch("examples").join("scored.csv");
    let o = leadscore(&[
        "score",
        "examples/leads.csv",
        "--offer",
        "examples/offer.json",
        "-o",
        out.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(&out).expect("results written");
    assert!(!out.with_extension("csv.partial").exists(), "partial file renamed away");
    let rows = rows(&csv);
    assert_eq!(rows.len(), 16);
    assert_eq!(rows[0], ["John Doe", "High", "100", "50", "rules_only", "skipped"]);
    assert_eq!(rows[2], ["Mike Wilson", "Medium", "40", "20", "rules_only", "skipped"]);
    let err = stderr(&o);
    assert!(err.contains("Scored 16 leads from examples/leads.csv"), "{err}");
    assert!(err.contains("rules_only 16"), "{err}");
    assert!(err.contains("rejected:    0 rows"), "{err}");
}

/// `-o` naming a pipe (as `/dev/null` names a device) writes into it and leaves it a pipe: the finished file is
/// renamed into place only over a regular file or nothing. (It once replaced `/dev/null` with a regular file.)
#[cfg(unix)]
#[test]
fn writes_into_a_pipe_without_replacing_it() {
    use std::os::unix::fs::FileTypeExt;
    let fifo = scratch("fifo").join("results.pipe");
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).expect("read the pipe"))
    };
    let o = leadscore(&[
        "score",
        "examples/leads.csv",
        "--offer",
        "examples/offer.json",
        "-o",
        fifo.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = reader.join().expect("reader");
    assert_eq!(rows(&csv).len(), 16, "{csv}");
    assert!(std::fs::metadata(&fifo).expect("still there").file_type().is_fifo(), "still a pipe");
}

#[test]
fn lists_rejected_rows_with_lines_and_still_exits_0() {
    let dir = scratch("messy");
    let (out, rejects) = (dir.join("scored.csv"), dir.join("rejects.csv"));
    let o = leadscore(&[
        "score",
        "examples/messy-leads.csv",
        "--offer",
        "examples/offer.json",
        "-o",
        out.to_str().expect("utf8"),
        "--rejects",
        rejects.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    for expected in [
        "rejected:    5 rows",
        "line 3 [Full Name]: name is required",
        "line 5: duplicate of line 2",
        "line 8: misplaced quote",
    ] {
        assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
    }
    let names: Vec<String> =
        rows(&std::fs::read_to_string(&out).expect("results")).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(names, ["Ada Park", "Eli Stone"]);
    let rejects = std::fs::read_to_string(&rejects).expect("rejects written");
    assert_eq!(rejects.lines().count(), 6, "{rejects}");
    assert!(rejects.starts_with("line,column,message\r\n3,Full Name,name is required\r\n"), "{rejects}");
}

#[test]
fn strict_turns_rejected_rows_into_exit_2() {
    let out = scratch("strict").join("scored.csv");
    let o = leadscore(&[
        "score",
        "examples/messy-leads.csv",
        "--offer",
        "examples/offer.json",
        "--strict",
        "-o",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// A Windows-1252 save of Excel and a HubSpot export score as they are; the record id keeps its header in the
/// results, so the CRM can match them on import.
#[test]
fn crm_and_excel_exports_score_as_they_are() {
    let dir = scratch("crm");
    for (file, encoding) in
        [("excel-csv.csv", None), ("hubspot-contacts.csv", None), ("excel-csv.csv", Some("cp1252"))]
    {
        let out = dir.join("scored.csv");
        let mut args = vec![
            "score",
            file,
            "--offer",
            "examples/offer.json",
            "--no-ai",
            "-o",
            out.to_str().expect("utf8"),
        ];
        if let Some(e) = encoding {
            args.extend(["--encoding", e]);
        }
        let path = format!("examples/crm/{file}");
        args[1] = &path;
        let o = leadscore(&args);
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        let csv = std::fs::read_to_string(&out).expect("results written");
        assert!(csv.contains("José Müller") && csv.contains("São Paulo"), "{file}: {csv}");
        assert_eq!(rows(&csv).len(), 3, "{file}: {csv}");
        if file.starts_with("hubspot") {
            assert!(csv.lines().next().expect("header").split(',').any(|h| h == "Record ID"), "{csv}");
        }
    }
    let o = leadscore(&[
        "score",
        "examples/crm/excel-csv.csv",
        "--offer",
        "examples/offer.json",
        "--encoding",
        "klingon",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown encoding `klingon`"), "{}", stderr(&o));
    // A dry run needs no offer, stores nothing and says how the file would be read.
    let o = leadscore(&["score", "examples/crm/hubspot-contacts.csv", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(printed.contains("name          <- First Name + Last Name"), "{printed}");
    assert!(printed.contains("rows: 3 read, 3 accepted, 0 rejected"), "{printed}");
    assert!(printed.contains("line 2: José Müller | CTO | Lumen Data GmbH"), "{printed}");
    let odd = dir.join("odd.csv");
    std::fs::write(&odd, "Given,Family,Org\nAda,Park,Acme\n").expect("write");
    let map = r#"{"name": ["Given", "Family"], "company": "Org"}"#;
    let o = leadscore(&["score", odd.to_str().expect("utf8"), "--dry-run", "--map", map]);
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(printed.contains("line 2: Ada Park |  | Acme"), "{}{printed}", stderr(&o));
    let o = leadscore(&["score", odd.to_str().expect("utf8"), "--dry-run", "--map", "{\"nom\": \"x\"}"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Every file of `examples/crm/` scores as it is through the CLI, on SQLite and on PostgreSQL: three leads each,
/// none rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crm_fixture_scores_on_both_stores() {
    use leadscore_store::Backend;
    use leadscore_store::test_support::TestDb;
    let pg = TestDb::new(Backend::Postgres).await;
    let dir = scratch("crm-all");
    let mut files: Vec<_> = std::fs::read_dir(repo().join("examples/crm"))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for (store, url) in [("sqlite", None), ("postgres", Some(pg.url.clone()))] {
        for file in &files {
            let out = dir.join("scored.csv");
            let mut args: Vec<String> = [
                "score",
                file.to_str().expect("utf8"),
                "--offer",
                "examples/offer.json",
                "--no-ai",
                "--strict",
                "-o",
                out.to_str().expect("utf8"),
            ]
            .map(str::to_owned)
            .to_vec();
            if let Some(url) = &url {
                args.extend(["--database-url".to_owned(), url.clone()]);
            }
            let o = tokio::task::spawn_blocking(move || command().args(args).output().expect("runs"))
                .await
                .expect("joined");
            assert!(o.status.success(), "{store} {}: {}", file.display(), stderr(&o));
            let csv = std::fs::read_to_string(&out).expect("results");
            assert_eq!(rows(&csv).len(), 3, "{store} {}: {csv}", file.display());
            assert!(csv.contains("José Müller"), "{store} {}: {csv}", file.display());
        }
    }
}

#[test]
fn unusable_input_exits_2_with_one_clear_line() {
    let dir = scratch("unusable");
    let bad_header = dir.join("bad.csv");
    std::fs::write(&bad_header, "full_name,notes\nAnn,x\n").expect("write");
    let bad_offer = dir.join("offer.json");
    std::fs::write(&bad_offer, r#"{"name": "x", "ideal_use_cases": []}"#).expect("write");
    let cases: [(&[&str], &str); 4] = [
        (
            &["score", bad_header.to_str().expect("utf8"), "--offer", "examples/offer.json"],
            "missing required columns: role, company",
        ),
        (
            &["score", "examples/leads.csv", "--offer", bad_offer.to_str().expect("utf8")],
            "ideal_use_cases: must list at least one ideal use case",
        ),
        (
            &["score", "examples/leads.csv", "--offer", "no-such-offer.json"],
            "cannot read the offer file no-such-offer.json",
        ),
        (
            &["score", "no-such-leads.csv", "--offer", "examples/offer.json"],
            "cannot open the leads file no-such-leads.csv",
        ),
    ];
    for (args, message) in cases {
        let o = leadscore(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "nothing written to stdout on unusable input");
    }
}

#[test]
fn reads_stdin_and_writes_stdout() {
    use std::io::Write;
    let mut child = command()
        .args(["score", "-", "--offer", "examples/offer.json", "--no-ai"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"name,role,company,industry,location,linkedin_bio\nAnn,VP Sales,Acme,B2B SaaS startup,Oslo,bio\n")
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = rows(&String::from_utf8(o.stdout.clone()).expect("utf8"));
    assert_eq!(rows, [["Ann", "High", "80", "40", "rules_only", "skipped"]]);
    assert!(stderr(&o).contains("AI off (--no-ai)"), "{}", stderr(&o));
}

/// With a provider configured the command scores through the same queue and AI layer as `serve`: hybrid results
/// (one request per lead), and `--database-url` keeps the upload, run and results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_with_the_ai_layer_and_keeps_the_run() {
    use leadscore_fake_llm::{FakeConfig, FakeLlm};
    let fake = FakeLlm::new(FakeConfig::default());
    let addr = fake.spawn("127.0.0.1:0".parse().expect("addr")).await.expect("fake LLM");
    let dir = scratch("ai");
    let out = dir.join("scored.csv");
    let db = format!("sqlite://{}", dir.join("kept.db").display());
    let args = [
        "score",
        "examples/leads.csv",
        "--offer",
        "examples/offer.json",
        "-o",
        out.to_str().expect("utf8"),
        "--database-url",
        &db,
    ]
    .map(str::to_owned);
    let o = tokio::task::spawn_blocking(move || {
        command()
            .args(args)
            .env("OPENAI_BASE_URL", format!("http://{addr}/v1"))
            .env("OPENAI_API_KEY", "sk-test")
            .output()
            .expect("runs")
    })
    .await
    .expect("joined");
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(&out).expect("output");
    let rows = rows(&csv);
    assert_eq!(rows.len(), 16);
    for r in &rows {
        assert_eq!((r[4].as_str(), r[5].as_str()), ("hybrid", "ok"), "{r:?}");
        let (score, rule): (i64, i64) = (r[2].parse().expect("score"), r[3].parse().expect("rule"));
        assert!([10, 30, 50].contains(&(score - rule)), "final = rule + AI (50/30/10): {r:?}");
    }
    assert_eq!(rows[0][0], "John Doe", "input order is kept");
    assert!(stderr(&o).contains("hybrid 16 | rules_only 0"), "{}", stderr(&o));
    assert_eq!(fake.stats().requests, 16, "one request per lead");
    let store = leadscore_store::Store::open(&db, &Default::default()).await.expect("kept database");
    let page = leadscore_store::Page { limit: 10, after: None };
    let runs = store.list_runs(leadscore_store::DEFAULT_WORKSPACE, &page).await.expect("runs");
    assert_eq!(runs.items.len(), 1);
    assert_eq!(runs.items[0].run.status, leadscore_core::RunStatus::Completed);
    // The CLI's run is created like the API's: with the AI layer's cost estimate.
    let estimate = runs.items[0].run.estimated_cost_usd;
    assert!(estimate.is_some_and(|e| e > 0.0), "estimate {estimate:?}");
    let tallies = runs.items[0].tallies;
    assert_eq!((tallies.jobs.succeeded, tallies.results.hybrid), (16, 16));
    assert!(tallies.usage.prompt_tokens > 0 && tallies.usage.cost_usd > 0.0, "{tallies:?}");
}
