//! Reading results back (issue 13): the current result per (lead, offer) is the newest run's across re-scores,
//! retries and deleted leads; pages are stable under writes; a page's plan walks an index (no sort of the whole
//! set, no subquery per row), so dropping a stream between pages stops its reads. PostgreSQL and SQLite.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use leadscore_core::{AiOutcome, AiVerdict, Intent, Lead, Offer, Rules, Scoring};
use leadscore_store::test_support::{TestDb, seed};
use leadscore_store::{
    Backend, Completion, Control, DEFAULT_WORKSPACE as WS, NewResult, NewRun, Page, ResultFilter,
    ResultRecord, ResultScope, Selection, Store,
};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Postgres).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(leadscore_store::Backend::Sqlite).await } )* }
    };
}

both_backends!(current_is_the_newest_runs_result, pages_are_stable_under_writes, a_page_walks_an_index);

/// Every fourth result `rules_only` (what `Control::Retry` re-queues), the others `hybrid`.
fn result_for(lead: &Lead, hybrid: bool) -> Box<NewResult> {
    let offer = Offer { name: "x".into(), value_props: vec![], ideal_use_cases: vec!["B2B SaaS".into()] };
    let ai = if hybrid {
        AiOutcome::Verdict {
            verdict: AiVerdict { intent: Intent::High, reasoning: "fits".into() },
            cached: false,
        }
    } else {
        AiOutcome::Failed { error: "boom".into() }
    };
    Box::new(NewResult::without_model(Scoring::compose(Rules::for_offer(&offer).score(lead), ai, vec![])))
}

/// Claims and completes every due job until none is left.
async fn score_all(s: &Store) {
    let mut n = 0_usize;
    loop {
        let work = s.claim_work("scorer", 200, Duration::from_secs(30)).await.expect("claim");
        if work.is_empty() {
            return;
        }
        let done: Vec<Completion> = work
            .into_iter()
            .map(|w| {
                n += 1;
                let result = result_for(&w.lead.expect("lead exists").lead, !n.is_multiple_of(4));
                Completion::Succeeded { job: w.job, result }
            })
            .collect();
        s.complete_jobs("scorer", &done).await.expect("complete");
    }
}

async fn run(s: &Store, offer: &str, selection: Selection) -> String {
    s.create_run(&NewRun::new(WS, offer, &selection)).await.expect("run").run.id
}

async fn lead_ids(s: &Store, upload: &str) -> Vec<String> {
    let page = s.list_leads(WS, Some(upload), &Page { limit: 1000, after: None }).await.expect("leads");
    page.items.into_iter().map(|l| l.id).collect()
}

type Key = (String, String, String, i64);

fn keys(results: &[ResultRecord]) -> Vec<Key> {
    results.iter().map(|r| (r.lead.id.clone(), r.offer_id.clone(), r.run_id.clone(), r.version)).collect()
}

/// Every page of `scope`, `limit` to a page.
async fn read_pages(s: &Store, scope: &ResultScope, limit: u32) -> Vec<ResultRecord> {
    let mut all = Vec::new();
    let mut page = Page { limit, after: None };
    loop {
        let listed = s.list_results(WS, scope, &ResultFilter::default(), &page).await.expect("page");
        all.extend(listed.items);
        let Some(next) = listed.next_cursor else { return all };
        page.after = Some(next);
    }
}

/// The current results computed the slow, obvious way: every run's results, newest run per (lead, offer).
async fn expected_current(s: &Store, runs: &[&str], offer: Option<&str>) -> Vec<Key> {
    let mut newest: BTreeMap<(String, String), Key> = BTreeMap::new();
    for run in runs {
        for k in keys(&read_pages(s, &ResultScope::Run((*run).to_owned()), 1000).await) {
            let slot = newest.entry((k.0.clone(), k.1.clone())).or_insert_with(|| k.clone());
            if k.2 > slot.2 {
                *slot = k;
            }
        }
    }
    newest.into_values().filter(|k| offer.is_none_or(|o| k.1 == o)).collect()
}

/// 600 leads: all scored for offer A, a third re-scored by a newer run of A, 100 scored for offer B; then the
/// OLDER run of A is retried (its `rules_only` results get version 2 but must stay behind the newer run where
/// it re-scored them) and two leads are deleted. The listing, its pages, its stream, the offset reads and the
/// count all agree with the obvious computation.
async fn current_is_the_newest_runs_result(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (a, upload) = seed(s, 600).await;
    let other = Offer { name: "y".into(), value_props: vec![], ideal_use_cases: vec![] };
    let b = s.create_offer(WS, &other).await.expect("offer").id;
    let ids = lead_ids(s, &upload).await;
    let first = run(s, &a, Selection::Upload(upload)).await;
    score_all(s).await;
    let second = run(s, &a, Selection::Leads(ids[200..400].to_vec())).await;
    let third = run(s, &b, Selection::Leads(ids[..100].to_vec())).await;
    score_all(s).await;
    s.control_run(WS, &first, Control::Retry).await.expect("retry").expect("run");
    score_all(s).await;
    // An older run whose results are written after a newer run's (both claimed, the newer completed first).
    let older = run(s, &b, Selection::Leads(ids[500..520].to_vec())).await;
    let newer = run(s, &b, Selection::Leads(ids[500..520].to_vec())).await;
    let work = s.claim_work("scorer", 100, Duration::from_secs(30)).await.expect("claim");
    let (newer_jobs, older_jobs): (Vec<_>, Vec<_>) = work
        .into_iter()
        .map(|w| {
            let result = result_for(&w.lead.expect("lead").lead, true);
            Completion::Succeeded { job: w.job, result }
        })
        .partition(|c| matches!(c, Completion::Succeeded { job, .. } if job.run_id == newer));
    assert_eq!((newer_jobs.len(), older_jobs.len()), (20, 20));
    s.complete_jobs("scorer", &newer_jobs).await.expect("complete");
    s.complete_jobs("scorer", &older_jobs).await.expect("complete");
    for gone in [&ids[10], &ids[250]] {
        assert!(s.delete_lead(WS, gone).await.expect("delete"));
    }
    let runs = [first.as_str(), second.as_str(), third.as_str(), older.as_str(), newer.as_str()];
    let retried = read_pages(s, &ResultScope::Run(first.clone()), 1000).await;
    assert!(retried.iter().any(|r| r.version == 2), "the retry re-wrote some results");

    for (offer, n) in [(None, 598 + 119), (Some(a.as_str()), 598), (Some(b.as_str()), 119)] {
        let scope = ResultScope::Current { offer_id: offer.map(str::to_owned) };
        let expected = expected_current(s, &runs, offer).await;
        assert_eq!(expected.len(), n, "{scope:?}");
        assert_eq!(keys(&read_pages(s, &scope, 1000).await), expected, "{scope:?}: one page");
        assert_eq!(keys(&read_pages(s, &scope, 7).await), expected, "{scope:?}: pages of 7");
        let streamed: Vec<Vec<ResultRecord>> = s
            .result_pages(WS.into(), scope.clone(), ResultFilter::default(), 7)
            .try_collect()
            .await
            .expect("pages");
        assert_eq!(keys(&streamed.concat()), expected, "{scope:?}: streamed");
        let at = s.list_results_at(WS, &scope, 5, 10).await.expect("offset");
        assert_eq!(keys(&at), expected[5..15], "{scope:?}: by offset");
        assert_eq!(s.count_results(WS, &scope).await.expect("count"), n as i64, "{scope:?}: count");
    }
    let current = keys(&read_pages(s, &ResultScope::Current { offer_id: Some(a.clone()) }, 1000).await);
    let by_run: BTreeSet<&str> = current.iter().map(|k| k.2.as_str()).collect();
    assert_eq!(by_run, BTreeSet::from([first.as_str(), second.as_str()]));
    assert!(current.iter().any(|k| k.2 == first && k.3 == 2), "a retried result of the older run is current");
    let of_b = keys(&read_pages(s, &ResultScope::Current { offer_id: Some(b) }, 1000).await);
    assert_eq!(of_b.iter().filter(|k| k.2 == newer).count(), 20, "the newer run wins, whichever wrote last");
}

/// Keyset pages over the current results while a newer run re-scores leads before and after the cursor: every
/// (lead, offer) is read once, in order, and nothing after the cursor is skipped.
async fn pages_are_stable_under_writes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (a, upload) = seed(s, 300).await;
    let ids = lead_ids(s, &upload).await;
    run(s, &a, Selection::Upload(upload)).await;
    score_all(s).await;
    let scope = ResultScope::Current { offer_id: None };
    let first = s
        .list_results(WS, &scope, &ResultFilter::default(), &Page { limit: 100, after: None })
        .await
        .expect("page");
    let newer = run(s, &a, Selection::Leads([&ids[..50], &ids[150..250]].concat())).await;
    score_all(s).await;
    let mut read = first.items;
    let mut after = first.next_cursor;
    while let Some(cursor) = after {
        let page = s
            .list_results(WS, &scope, &ResultFilter::default(), &Page { limit: 100, after: Some(cursor) })
            .await
            .expect("page");
        read.extend(page.items);
        after = page.next_cursor;
    }
    let order: Vec<(String, String)> = read.iter().map(|r| (r.lead.id.clone(), r.offer_id.clone())).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in key order, each once");
    assert_eq!(order.len(), 300);
    let rescored_later = read.iter().filter(|r| r.run_id == newer).count();
    assert_eq!(
        rescored_later, 100,
        "the re-scores after the cursor are read, those before it are not re-read"
    );
}

/// The plan of a page: on SQLite an index search with no temporary sort and no correlated subquery (the old
/// query had both: a page cost the whole set, and a dropped export kept a core busy); on PostgreSQL no subplan
/// per row. A page costs its own rows, so a stream dropped between pages stops reading at once.
async fn a_page_walks_an_index(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let (a, upload) = seed(s, 50).await;
    run(s, &a, Selection::Upload(upload)).await;
    score_all(s).await;
    for scope in [
        ResultScope::Current { offer_id: None },
        ResultScope::Current { offer_id: Some(a.clone()) },
        ResultScope::Run("x".into()),
    ] {
        let plan = s.explain_results_page(WS, &scope).await.expect("plan").join("\n");
        assert!(
            !plan.contains("SubPlan") && !plan.contains("CORRELATED"),
            "{scope:?}: a subquery per row\n{plan}"
        );
        if backend == Backend::Sqlite {
            assert!(!plan.contains("TEMP B-TREE"), "{scope:?}: sorts the whole set\n{plan}");
            assert!(!plan.lines().any(|l| l.starts_with("SCAN")), "{scope:?}: scans a table\n{plan}");
        }
    }
    // Dropping a stream after its first page leaves nothing running: the next read is served at once.
    let mut pages = Box::pin(s.result_pages(
        WS.into(),
        ResultScope::Current { offer_id: None },
        ResultFilter::default(),
        10,
    ));
    assert_eq!(pages.next().await.expect("a page").expect("page").len(), 10);
    drop(pages);
    assert_eq!(s.count_results(WS, &ResultScope::Current { offer_id: Some(a) }).await.expect("count"), 50);
}
