//! CSV ingest: what it stores, and which [`IngestError`] each kind of bad file gives. On SQLite only: the
//! pipeline is the same on both backends, and the contract tests cover the upload writer on each. Except for
//! stalled bodies (ADR 0003), whose effect on others depends on the backend's locks and pool: on both.

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use leadscore_core::csv::HeaderError;
use leadscore_store::test_support::TestDb;
use leadscore_store::{
    Backend, DEFAULT_WORKSPACE as WS, IngestError, IngestOptions, Ingested, UploadLimits, ingest,
};

const HEADER: &str = "name,role,company,industry,location,linkedin_bio\n";

/// Ingests `chunks` (an `Err` item fails the stream there) and checks that a failure stored nothing.
async fn run(chunks: Vec<Result<&str, &str>>, limits: UploadLimits) -> Result<Ingested, IngestError> {
    let db = TestDb::new(Backend::Sqlite).await;
    let body = stream::iter(chunks.into_iter().map(|c| c.map(|s| Bytes::from(s.to_owned()))));
    let result = ingest(
        &db.store,
        WS,
        Some("leads.csv"),
        body,
        limits,
        IngestOptions { keep_leads: 10, ..Default::default() },
    )
    .await;
    if result.is_err() {
        assert_eq!(db.store.count_leads(WS).await.expect("count"), 0, "a failed ingest stores nothing");
    }
    result
}

fn rows(n: usize) -> String {
    let mut csv = HEADER.to_owned();
    for i in 0..n {
        csv.push_str(&format!("Lead {i},CEO,Acme,SaaS,Berlin,bio\n"));
    }
    csv
}

#[tokio::test]
async fn stores_accepted_rows_and_lists_rejected_ones() {
    let csv = format!("{HEADER}Ada,CEO,Acme,SaaS,Berlin,bio\n,CTO,Acme,SaaS,Berlin,bio\n");
    let (head, tail) = csv.split_at(20); // a chunk boundary inside a row
    let ingested = run(vec![Ok(head), Ok(tail)], UploadLimits::default()).await.expect("stored");
    assert_eq!((ingested.upload.rows_accepted, ingested.upload.rows_rejected), (1, 1));
    assert_eq!(ingested.upload.filename.as_deref(), Some("leads.csv"));
    assert_eq!(ingested.errors.len(), 1);
    assert_eq!(ingested.errors[0].line, 3);
    assert_eq!(ingested.leads.len(), 1);
    assert_eq!((ingested.leads[0].1, ingested.leads[0].2.name.as_str()), (2, "Ada"));
}

#[tokio::test]
async fn a_missing_column_is_a_header_error_naming_it() {
    let err = run(vec![Ok("full name,industry,location\nAda,SaaS,Berlin\n")], UploadLimits::default())
        .await
        .expect_err("refused");
    match err {
        IngestError::Header(HeaderError::MissingColumns { missing, .. }) => {
            assert_eq!(missing, ["role", "company"])
        }
        other => panic!("expected missing columns, got {other:?}"),
    }
}

#[tokio::test]
async fn spreadsheets_are_recognised() {
    // A zip that is not a workbook is read as one and refused saying so; a PDF is not even tried.
    let err = run(vec![Ok("PK\x03\x04rest of a zip")], UploadLimits::default()).await.expect_err("refused");
    assert!(matches!(err, IngestError::Workbook(_)), "{err:?}");
    assert!(err.to_string().starts_with("the workbook cannot be read"), "{err}");
    let err = run(vec![Ok("%PDF-1.7")], UploadLimits::default()).await.expect_err("refused");
    assert!(matches!(err, IngestError::NotCsv { .. }), "{err:?}");
}

#[tokio::test]
async fn an_excel_workbook_is_read_from_its_first_or_named_sheet() {
    let db = TestDb::new(Backend::Sqlite).await;
    let xlsx =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/crm/hubspot-contacts.xlsx"))
            .expect("fixture");
    let body = || stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(xlsx.clone()))]);
    let options = IngestOptions { keep_leads: 10, ..Default::default() };
    let ingested =
        ingest(&db.store, WS, None, body(), UploadLimits::default(), options).await.expect("stored");
    assert_eq!((ingested.upload.rows_accepted, ingested.upload.rows_rejected), (3, 0));
    assert_eq!(
        (ingested.upload.source.format.as_str(), ingested.upload.source.sheet.as_deref()),
        ("xlsx", Some("Contacts"))
    );
    let lead = &ingested.leads[0].2;
    assert_eq!((lead.name.as_str(), lead.location.as_str()), ("José Müller", "München, Bavaria, Germany"));
    let attribute = |name: &str| lead.attributes.iter().find(|a| a.name == name).map(|a| a.value.as_str());
    // Numbers and dates as the sheet shows them.
    assert_eq!(
        (attribute("Record ID"), attribute("Deal Size"), attribute("Create Date")),
        (Some("5101"), Some("50000"), Some("2026-11-02"))
    );
    // A cell at the sheet's far corner is refused at once, not laid out as a grid of 17 billion cells.
    let far =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/far-cell.xlsx")).expect("fixture");
    let far = stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(far))]);
    let err = ingest(&db.store, WS, None, far, UploadLimits::default(), IngestOptions::default())
        .await
        .expect_err("wide");
    assert!(err.to_string().starts_with("the sheet uses columns beyond 512"), "{err}");
    // Line breaks inside cells keep the rows on their lines; dates of the 1904 system read right.
    let multi = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/multiline-1904.xlsx"))
        .expect("fixture");
    let multi = stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(multi))]);
    let options = IngestOptions { keep_leads: 10, ..Default::default() };
    let ingested =
        ingest(&db.store, WS, None, multi, UploadLimits::default(), options).await.expect("stored");
    assert_eq!(ingested.errors.iter().map(|e| e.line).collect::<Vec<_>>(), [3], "{:?}", ingested.errors);
    let leads: Vec<_> = ingested.leads.iter().map(|(_, line, l)| (*line, l.linkedin_bio.as_str())).collect();
    assert_eq!(leads, [(2, "Builds data teams. Likes outbound."), (4, "Line one line two")]);
    let since =
        |i: usize| ingested.leads[i].2.attributes.iter().find(|a| a.name == "Since").map(|a| a.value.clone());
    assert_eq!((since(0).as_deref(), since(1).as_deref()), (Some("2026-01-02"), Some("2026-01-03 14:05:00")));
    let other = IngestOptions { sheet: Some("Nope".into()), ..Default::default() };
    let err =
        ingest(&db.store, WS, None, body(), UploadLimits::default(), other).await.expect_err("no such sheet");
    assert_eq!(err.to_string(), "the workbook has no sheet named `Nope`; its sheets are: Contacts, Notes");
}

#[tokio::test]
async fn limits_are_enforced() {
    let csv = rows(5);
    let rows_limit = UploadLimits { max_rows: 4, ..UploadLimits::default() };
    let err = run(vec![Ok(&csv)], rows_limit).await.expect_err("too many rows");
    assert!(matches!(err, IngestError::TooManyRows { max_rows: 4 }), "{err:?}");

    let bytes_limit = UploadLimits { max_bytes: 64, ..UploadLimits::default() };
    let err = run(vec![Ok(&csv)], bytes_limit).await.expect_err("too many bytes");
    assert_eq!(err.to_string(), "the upload is larger than the limit of 64 bytes");
}

#[tokio::test]
async fn an_interrupted_stream_stores_nothing() {
    let csv = rows(3);
    let err =
        run(vec![Ok(&csv), Err("connection reset")], UploadLimits::default()).await.expect_err("refused");
    assert_eq!(err.to_string(), "the upload was interrupted: connection reset");
}

/// Before ADR 0003 a stalled body held SQLite's write lock (others failed after the 10 s busy timeout) and a
/// PostgreSQL pool connection each (more stalls than the pool's 16: every other query timed out).
async fn stalled_bodies_hold_no_lock_and_no_connection(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let half = Ok::<_, String>(Bytes::from(rows(500)));
        let body = stream::iter([half]).chain(stream::pending());
        let store = db.store.clone();
        stalled.push(tokio::spawn(async move {
            ingest(&store, WS, None, body.boxed(), UploadLimits::default(), IngestOptions::default()).await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // the stalls reach their first chunk
    let others = async {
        let offer = leadscore_core::Offer { name: "x".into(), value_props: vec![], ideal_use_cases: vec![] };
        db.store.create_offer(WS, &offer).await.expect("offer create while bodies stall");
        let whole = stream::iter([Ok::<_, String>(Bytes::from(rows(3)))]);
        ingest(&db.store, WS, None, whole, UploadLimits::default(), IngestOptions::default())
            .await
            .expect("a whole upload")
    };
    let stored = tokio::time::timeout(std::time::Duration::from_secs(5), others).await.expect("promptly");
    assert_eq!(stored.upload.rows_accepted, 3);
    for task in &stalled {
        task.abort(); // the clients go away
    }
    for task in stalled {
        assert!(task.await.is_err_and(|e| e.is_cancelled()), "still waiting for the rest of its body");
    }
    assert_eq!(db.store.count_leads(WS).await.expect("count"), 3, "nothing of the stalled uploads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_hold_no_lock_and_no_connection_postgres() {
    stalled_bodies_hold_no_lock_and_no_connection(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_hold_no_lock_and_no_connection_sqlite() {
    stalled_bodies_hold_no_lock_and_no_connection(Backend::Sqlite).await
}

#[tokio::test]
async fn an_interrupted_stream_stores_nothing_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let csv = rows(3);
    let body = stream::iter([Ok(Bytes::from(csv)), Err("connection reset")]);
    let err = ingest(&db.store, WS, None, body, UploadLimits::default(), IngestOptions::default())
        .await
        .expect_err("refused");
    assert!(matches!(err, IngestError::Interrupted(_)), "{err:?}");
    assert_eq!(db.store.count_leads(WS).await.expect("count"), 0);
}

#[tokio::test]
async fn a_missing_spool_directory_is_an_error_and_stores_nothing() {
    let limits = UploadLimits { spool_dir: "/nonexistent/leadscore-spool".into(), ..UploadLimits::default() };
    let csv = rows(3);
    let err = run(vec![Ok(&csv)], limits).await.expect_err("refused");
    assert!(matches!(err, IngestError::Spool(_)), "{err:?}");
}
