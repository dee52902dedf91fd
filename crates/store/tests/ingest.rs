//! CSV ingest: what it stores, and which [`IngestError`] each kind of bad file gives. On SQLite only: the
//! pipeline is the same on both backends, and the contract tests cover the upload writer on each.

use bytes::Bytes;
use futures_util::stream;
use leadscore_core::csv::HeaderError;
use leadscore_store::test_support::TestDb;
use leadscore_store::{Backend, DEFAULT_WORKSPACE as WS, IngestError, Ingested, UploadLimits, ingest};

const HEADER: &str = "name,role,company,industry,location,linkedin_bio\n";

/// Ingests `chunks` (an `Err` item fails the stream there) and checks that a failure stored nothing.
async fn run(chunks: Vec<Result<&str, &str>>, limits: UploadLimits) -> Result<Ingested, IngestError> {
    let db = TestDb::new(Backend::Sqlite).await;
    let body = stream::iter(chunks.into_iter().map(|c| c.map(|s| Bytes::from(s.to_owned()))));
    let result = ingest(&db.store, WS, Some("leads.csv"), body, limits, 10).await;
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
    let err = run(
        vec![Ok("name,role,company,industry,location\nAda,CEO,Acme,SaaS,Berlin\n")],
        UploadLimits::default(),
    )
    .await
    .expect_err("refused");
    match err {
        IngestError::Header(HeaderError::MissingColumns { missing, .. }) => {
            assert_eq!(missing, ["linkedin_bio"])
        }
        other => panic!("expected missing columns, got {other:?}"),
    }
}

#[tokio::test]
async fn spreadsheets_are_recognised() {
    let err = run(vec![Ok("PK\x03\x04rest of a zip")], UploadLimits::default()).await.expect_err("refused");
    assert!(matches!(err, IngestError::NotCsv { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "this is an Excel workbook or ZIP archive, not CSV: export the sheet as CSV (UTF-8) and upload that"
    );
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
