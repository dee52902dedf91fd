//! Issue 13, item 3 over real HTTP on both stores: `/v1/results.csv` and the seed-compatible
//! `/api/leads/export_csv/` stream exactly the rows of the store's pager (the current result per lead, across
//! runs that re-scored the leads), in its order, with their header once.

use std::time::Duration;

use futures_util::TryStreamExt;
use leadscore_api::{AppState, UploadLimits};
use leadscore_core::results_csv::ResultsCsv;
use leadscore_core::{AiOutcome, Offer, Rules, Scoring};
use leadscore_store::test_support::{TestDb, seed};
use leadscore_store::{
    Backend, Completion, DEFAULT_WORKSPACE as WS, NewResult, NewRun, Page, ResultFilter, ResultRecord,
    ResultScope, Selection, Store,
};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Postgres).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Sqlite).await } )* }
    };
}

both_backends!(exports_stream_the_pagers_rows);

/// The API without workers, on a fresh database; the stop sender ends it when dropped.
async fn server(backend: Backend) -> (TestDb, String, tokio::sync::oneshot::Sender<()>) {
    let db = TestDb::new(backend).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState {
        store: db.store.clone(),
        upload_limits: UploadLimits::default(),
        ai: None,
        key_limits: leadscore_api::KeyLimiter::default(),
        access: leadscore_api::guard::Access::decide(&db.store, addr, &[]).await.expect("access"),
        compat: Default::default(),
    };
    tokio::spawn(leadscore_api::serve(listener, state, async {
        let _ = stopped.await;
    }));
    leadscore_llm::install_crypto();
    (db, format!("http://{addr}"), stop)
}

/// Scores every due job (rules only) until none is left.
async fn score_all(s: &Store) {
    let offer = Offer { name: "x".into(), value_props: vec![], ideal_use_cases: vec!["B2B SaaS".into()] };
    loop {
        let work = s.claim_work("scorer", 500, Duration::from_secs(30)).await.expect("claim");
        if work.is_empty() {
            return;
        }
        let done: Vec<Completion> = work
            .into_iter()
            .map(|w| {
                let lead = w.lead.expect("lead exists").lead;
                let scoring =
                    Scoring::compose(Rules::for_offer(&offer).score(&lead), AiOutcome::Skipped, vec![]);
                Completion::Succeeded { job: w.job, result: Box::new(NewResult::without_model(scoring)) }
            })
            .collect();
        s.complete_jobs("scorer", &done).await.expect("complete");
    }
}

async fn body(base: &str, path: &str) -> String {
    let r = reqwest::get(format!("{base}{path}")).await.expect("request");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.text().await.expect("body")
}

/// 700 leads scored by three runs of one offer (the last re-scores 300 of them): 1,700 results, 700 current.
async fn exports_stream_the_pagers_rows(backend: Backend) {
    let (db, base, _stop) = server(backend).await;
    let s = &db.store;
    let (offer, upload) = seed(s, 700).await;
    let page = s.list_leads(WS, Some(&upload), &Page { limit: 1000, after: None }).await.expect("leads");
    let ids: Vec<String> = page.items.into_iter().map(|l| l.id).collect();
    for selection in
        [Selection::Upload(upload.clone()), Selection::Upload(upload), Selection::Leads(ids[..300].to_vec())]
    {
        s.create_run(&NewRun::new(WS, &offer, &selection)).await.expect("run");
        score_all(s).await;
    }
    let scope = ResultScope::Current { offer_id: None };
    let pages: Vec<Vec<ResultRecord>> =
        s.result_pages(WS.into(), scope, ResultFilter::default(), 1000).try_collect().await.expect("pages");
    let rows = pages.concat();
    assert_eq!(rows.len(), 700);

    let mut expected = Vec::new();
    let mut csv = ResultsCsv::new(&mut expected, Vec::new()).expect("header");
    for r in &rows {
        r.write_csv(&mut csv).expect("row");
    }
    drop(csv);
    let csv = body(&base, "/v1/results.csv").await;
    assert_eq!(csv, String::from_utf8(expected).expect("utf-8"), "/v1/results.csv is the pager's rows");

    let compat = body(&base, "/api/leads/export_csv/").await;
    let mut lines = compat.split("\r\n");
    assert_eq!(lines.next(), Some("Name,Role,Company,Industry,Location,Intent,Score,Reasoning"));
    let listed: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.splitn(8, ',').collect();
            (cells[0].to_owned(), cells[6].to_owned())
        })
        .collect();
    let pager: Vec<(String, String)> =
        rows.iter().map(|r| (r.lead.lead.name.clone(), r.scoring.final_score.to_string())).collect();
    assert_eq!(listed, pager, "the compat export is the pager's rows, in its order");
}
