//! The store's contract: every test runs against PostgreSQL and SQLite, each in a fresh database.

use leadscore_core::csv::RejectedRow;
use leadscore_core::{Attribute, Lead, Offer};
use leadscore_store::test_support::TestDb;
use leadscore_store::{Backend, DEFAULT_WORKSPACE, Page, StoreError};

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test] async fn $name() { super::$name(leadscore_store::Backend::Postgres).await } )* }
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(leadscore_store::Backend::Sqlite).await } )* }
    };
}

contract!(
    offers_crud_and_pagination,
    workspaces_are_isolated,
    upload_stores_leads_and_errors_in_order,
    an_upload_not_committed_leaves_nothing,
    large_uploads_are_batched,
    text_round_trips_exactly,
    api_keys,
);

const WS: &str = DEFAULT_WORKSPACE;

fn offer(name: &str) -> Offer {
    Offer { name: name.into(), value_props: vec!["fast".into()], ideal_use_cases: vec!["B2B SaaS".into()] }
}

fn lead(name: &str) -> Lead {
    Lead {
        external_id: None,
        name: name.into(),
        role: "CEO".into(),
        company: "Acme".into(),
        industry: "B2B SaaS".into(),
        location: "Berlin".into(),
        linkedin_bio: "bio".into(),
        attributes: vec![],
    }
}

fn page(limit: u32, after: Option<String>) -> Page {
    Page { limit, after }
}

async fn offers_crud_and_pagination(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let a = s.create_offer(WS, &offer("a")).await.expect("create");
    let b = s.create_offer(WS, &offer("b")).await.expect("create");
    let c = s.create_offer(WS, &offer("c")).await.expect("create");
    let got = s.get_offer(WS, &a.id).await.expect("get").expect("exists");
    assert_eq!((got.id.as_str(), &got.offer), (a.id.as_str(), &a.offer));
    assert_eq!(s.latest_offer(WS).await.expect("latest").map(|o| o.id), Some(c.id.clone()));

    let first = s.list_offers(WS, &page(2, None)).await.expect("list");
    assert_eq!(first.items.iter().map(|o| o.offer.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(first.next_cursor.as_deref(), Some(b.id.as_str()));
    let second = s.list_offers(WS, &page(2, first.next_cursor)).await.expect("list");
    assert_eq!(second.items.iter().map(|o| o.offer.name.as_str()).collect::<Vec<_>>(), ["c"]);
    assert_eq!(second.next_cursor, None);

    let mut changed = offer("a2");
    changed.ideal_use_cases = vec!["Fintech".into(), "Sales teams".into()];
    let updated = s.update_offer(WS, &a.id, &changed).await.expect("update").expect("exists");
    assert_eq!(updated.offer, changed);
    assert!(updated.updated_at >= got.updated_at);
    assert_eq!(s.get_offer(WS, &a.id).await.expect("get").map(|o| o.offer), Some(changed));
    assert_eq!(s.update_offer(WS, "nope", &offer("x")).await.expect("update"), None);

    assert!(s.delete_offer(WS, &b.id).await.expect("delete"));
    assert!(!s.delete_offer(WS, &b.id).await.expect("delete twice"));
    assert_eq!(s.get_offer(WS, &b.id).await.expect("get"), None);
}

async fn workspaces_are_isolated(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let other = s.create_api_key("other", None).await.expect("key").workspace_id;
    let o = s.create_offer(WS, &offer("mine")).await.expect("create");
    assert_eq!(s.get_offer(&other, &o.id).await.expect("get"), None);
    assert!(!s.delete_offer(&other, &o.id).await.expect("delete"));
    assert_eq!(s.update_offer(&other, &o.id, &offer("x")).await.expect("update"), None);
    assert!(s.list_offers(&other, &page(10, None)).await.expect("list").items.is_empty());
    assert_eq!(s.latest_offer(&other).await.expect("latest"), None);
    let mut w = s.begin_upload(WS, None).await.expect("begin");
    let ids = w.write_batch(&[(2, lead("Ann"))], &[]).await.expect("batch");
    let up = w.commit(&[]).await.expect("commit");
    assert_eq!(s.get_lead(&other, &ids[0]).await.expect("get"), None);
    assert_eq!(s.get_upload(&other, &up.id).await.expect("get"), None);
    assert!(s.list_upload_errors(&other, &up.id, &page(10, None)).await.expect("errors").is_none());
    assert!(!s.delete_lead(&other, &ids[0]).await.expect("delete"));
    assert_eq!(s.count_leads(&other).await.expect("count"), 0);
    assert_eq!(s.count_leads(WS).await.expect("count"), 1);
}

async fn upload_stores_leads_and_errors_in_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let mut w = s.begin_upload(WS, Some("leads.csv")).await.expect("begin");
    let mut ann = lead("Ann");
    ann.external_id = Some("crm-1".into());
    ann.attributes = vec![Attribute { name: "Deal Size".into(), value: "50k".into() }];
    let rejects = [
        RejectedRow { line: 3, column: Some("name".into()), message: "name is required".into() },
        RejectedRow { line: 5, column: None, message: "duplicate of line 2".into() },
    ];
    let ids = w.write_batch(&[(2, ann.clone()), (4, lead("Bob"))], &rejects).await.expect("batch");
    let ids2 = w.write_batch(&[(6, lead("Cid"))], &[]).await.expect("batch");
    let up = w.commit(&["Deal Size".to_owned()]).await.expect("commit");
    assert_eq!((up.rows_total, up.rows_accepted, up.rows_rejected), (5, 3, 2));

    let stored = s.get_upload(WS, &up.id).await.expect("get").expect("exists");
    assert_eq!(stored.filename.as_deref(), Some("leads.csv"));
    assert_eq!(stored.extra_columns, ["Deal Size"]);
    assert_eq!((stored.rows_total, stored.rows_accepted, stored.rows_rejected), (5, 3, 2));

    let leads = s.list_leads(WS, Some(&up.id), &page(10, None)).await.expect("list");
    let names: Vec<&str> = leads.items.iter().map(|l| l.lead.name.as_str()).collect();
    assert_eq!(names, ["Ann", "Bob", "Cid"]);
    assert_eq!(leads.items[0].lead, ann);
    assert_eq!(leads.items[0].line, 2);
    assert_eq!(leads.items[0].id, ids[0]);
    assert_eq!(leads.items[2].id, ids2[0]);
    let two = s.list_leads(WS, None, &page(2, None)).await.expect("list");
    assert_eq!(two.items.len(), 2);
    let rest = s.list_leads(WS, None, &page(2, two.next_cursor)).await.expect("list");
    assert_eq!(rest.items.iter().map(|l| l.lead.name.as_str()).collect::<Vec<_>>(), ["Cid"]);
    assert_eq!(s.leads_at_offset(WS, 1, 1).await.expect("offset")[0].lead.name, "Bob");

    let errors =
        s.list_upload_errors(WS, &up.id, &page(1, None)).await.expect("errors").expect("upload exists");
    assert_eq!(errors.items[0].line, 3);
    assert_eq!(errors.items[0].column.as_deref(), Some("name"));
    let errors = s
        .list_upload_errors(WS, &up.id, &page(1, errors.next_cursor))
        .await
        .expect("errors")
        .expect("upload");
    assert_eq!((errors.items[0].line, errors.items[0].column.as_deref()), (5, None));
    assert_eq!(errors.items[0].message, "duplicate of line 2");
    assert_eq!(errors.next_cursor, None);

    assert_eq!(s.get_lead(WS, &ids[1]).await.expect("get").map(|l| l.lead.name), Some("Bob".to_owned()));
    assert!(s.delete_lead(WS, &ids[1]).await.expect("delete"));
    assert_eq!(s.get_lead(WS, &ids[1]).await.expect("get"), None);
    assert_eq!(s.count_leads(WS).await.expect("count"), 2);
}

async fn an_upload_not_committed_leaves_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let mut w = s.begin_upload(WS, None).await.expect("begin");
    let id = w.id().to_owned();
    w.write_batch(&[(2, lead("Ann"))], &[RejectedRow { line: 3, column: None, message: "x".into() }])
        .await
        .expect("batch");
    drop(w); // the client went away
    assert_eq!(s.get_upload(WS, &id).await.expect("get"), None);
    assert_eq!(s.count_leads(WS).await.expect("count"), 0);
    // The store stays usable after the rollback.
    let w = s.begin_upload(WS, None).await.expect("begin again");
    w.commit(&[]).await.expect("commit");
}

async fn large_uploads_are_batched(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let mut w = s.begin_upload(WS, None).await.expect("begin");
    let mut line = 1;
    for _ in 0..3 {
        let batch: Vec<(u64, Lead)> = (0..2100)
            .map(|_| {
                line += 1;
                (line, lead(&format!("Lead {line}")))
            })
            .collect();
        let rejects: Vec<RejectedRow> = (0..1100)
            .map(|i| RejectedRow { line: 100_000 + line * 10_000 + i, column: None, message: "bad".into() })
            .collect();
        w.write_batch(&batch, &rejects).await.expect("batch");
    }
    let up = w.commit(&[]).await.expect("commit");
    assert_eq!((up.rows_accepted, up.rows_rejected), (6300, 3300));
    assert_eq!(s.count_leads(WS).await.expect("count"), 6300);
    let first = s.list_leads(WS, None, &page(1000, None)).await.expect("list");
    assert_eq!(first.items[999].lead.name, "Lead 1001");
}

async fn text_round_trips_exactly(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    let mut tricky = lead("Zoë \"Z\" O'Brien, Jr.");
    tricky.linkedin_bio = "line one\nline two, with comma; \"quotes\" \\ backslash 🚀 \t tab".into();
    tricky.role = String::new();
    tricky.external_id = Some("0042".into());
    tricky.attributes = vec![Attribute { name: "Größe".into(), value: "\\N".into() }];
    let mut w = s.begin_upload(WS, None).await.expect("begin");
    let ids = w.write_batch(&[(2, tricky.clone())], &[]).await.expect("batch");
    w.commit(&[]).await.expect("commit");
    assert_eq!(s.get_lead(WS, &ids[0]).await.expect("get").map(|l| l.lead), Some(tricky));
}

async fn api_keys(backend: Backend) {
    let db = TestDb::new(backend).await;
    let s = &db.store;
    assert!(!s.auth_enabled().await.expect("auth"));
    let k = s.create_api_key("acme", None).await.expect("key");
    assert!(s.auth_enabled().await.expect("auth"));
    assert_ne!(k.workspace_id, WS);
    assert_eq!(s.workspace_for_key(&k.key).await.expect("lookup"), Some(k.workspace_id.clone()));
    assert_eq!(s.workspace_for_key("lsk_wrong").await.expect("lookup"), None);
    let d = s.create_api_key("ops", Some(WS)).await.expect("key for default");
    assert_eq!(s.workspace_for_key(&d.key).await.expect("lookup").as_deref(), Some(WS));
    match s.create_api_key("x", Some("no-such-workspace")).await {
        Err(StoreError::UnknownWorkspace(w)) => assert_eq!(w, "no-such-workspace"),
        other => panic!("expected UnknownWorkspace, got {other:?}"),
    }
}
