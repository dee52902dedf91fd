//! The upload pipeline: HTTP body -> CSV reader (on a blocking thread) -> batches -> ONE database transaction.
//!
//! Three stages run concurrently, each bounded: the body pump (async, enforces the byte limit), the reader
//! (blocking, never holds more than a chunk and a batch), and the writer (async, one transaction). If any
//! stage fails, or the client disconnects, the transaction is dropped and nothing is stored.

use std::io::{self, Read};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use leadscore_core::Lead;
use leadscore_core::csv::{HeaderError, LeadReader, Limits, RejectedRow, Row};
use leadscore_store::{Store, UploadRecord};
use tokio::sync::mpsc;

use crate::problem::{ApiError, ProblemItem};

/// Limits on one upload; every one is configurable.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    pub max_bytes: u64,
    pub max_rows: u64,
    pub max_field_bytes: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits { max_bytes: 2 * 1024 * 1024 * 1024, max_rows: 5_000_000, max_field_bytes: 16 * 1024 }
    }
}

/// Rows per batch sent to the database (one `COPY` on Postgres, multi-row inserts on SQLite).
const BATCH_ROWS: usize = 5000;
/// Rejected rows returned inline in the response; all of them are stored.
pub const INLINE_ERRORS: usize = 100;

/// What an upload produced.
#[derive(Debug)]
pub struct Ingested {
    pub upload: UploadRecord,
    /// The first [`INLINE_ERRORS`] rejected rows.
    pub errors: Vec<RejectedRow>,
    /// The first `keep_leads` accepted leads with their ids and lines (for the seed-compatible response).
    pub leads: Vec<(String, u64, Lead)>,
}

enum FromReader {
    Header { extra_columns: Vec<String> },
    Batch { leads: Vec<(u64, Lead)>, rejects: Vec<RejectedRow> },
    Failed(ApiError),
}

/// Stores the CSV in `body` as one upload.
pub async fn ingest<S, E>(
    store: &Store,
    workspace: &str,
    filename: Option<&str>,
    body: S,
    limits: UploadLimits,
    keep_leads: usize,
) -> Result<Ingested, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let (chunk_tx, chunk_rx) = mpsc::channel::<io::Result<Bytes>>(16);
    let (batch_tx, mut batch_rx) = mpsc::channel::<FromReader>(2);
    let reader = tokio::task::spawn_blocking(move || read_csv(ChannelRead::new(chunk_rx), limits, &batch_tx));

    let pump = pump_body(body, chunk_tx, limits.max_bytes);
    let write = async {
        let mut writer = store.begin_upload(workspace, filename).await?;
        let mut extra = Vec::new();
        let mut errors = Vec::new();
        let mut leads = Vec::new();
        while let Some(msg) = batch_rx.recv().await {
            match msg {
                FromReader::Header { extra_columns } => extra = extra_columns,
                FromReader::Failed(e) => return Err(e),
                FromReader::Batch { leads: batch, rejects } => {
                    let ids = writer.write_batch(&batch, &rejects).await?;
                    let room = INLINE_ERRORS.saturating_sub(errors.len());
                    errors.extend(rejects.into_iter().take(room));
                    let room = keep_leads.saturating_sub(leads.len());
                    leads.extend(
                        ids.into_iter().zip(batch).take(room).map(|(id, (line, lead))| (id, line, lead)),
                    );
                }
            }
        }
        Ok::<_, ApiError>((writer, extra, errors, leads))
    };
    let (pumped, written) = tokio::join!(pump, write);
    // A body problem (limit, disconnect, not CSV) explains any reader failure it caused: report it first.
    pumped?;
    let (writer, extra, errors, leads) = written?;
    reader.await.map_err(|e| ApiError::Internal(format!("CSV reader panicked: {e}")))?;
    let upload = writer.commit(&extra).await?;
    Ok(Ingested { upload, errors, leads })
}

/// Forwards body chunks to the reader, enforcing the byte limit and refusing obvious non-CSV files.
async fn pump_body<S, E>(
    mut body: S,
    tx: mpsc::Sender<io::Result<Bytes>>,
    max_bytes: u64,
) -> Result<(), ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let mut total: u64 = 0;
    let fail = |tx: &mpsc::Sender<io::Result<Bytes>>, msg: String| {
        // The reader must see an error, not a clean end of file, or it would store a truncated upload.
        let _ = tx.try_send(Err(io::Error::other(msg)));
    };
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                fail(&tx, format!("the upload was interrupted: {e}"));
                return Err(ApiError::Malformed(format!("the upload was interrupted: {e}")));
            }
        };
        if total == 0
            && let Some(kind) = binary_kind(&chunk)
        {
            fail(&tx, "not CSV".into());
            return Err(ApiError::UnsupportedMediaType(format!(
                "this is {kind}, not CSV: export the sheet as CSV (UTF-8) and upload that"
            )));
        }
        total += chunk.len() as u64;
        if total > max_bytes {
            fail(&tx, "too large".into());
            return Err(ApiError::TooLarge(format!(
                "the upload is larger than the limit of {max_bytes} bytes"
            )));
        }
        if tx.send(Ok(chunk)).await.is_err() {
            return Ok(()); // the reader stopped early; its message says why
        }
    }
    Ok(())
}

/// Recognises file formats people upload by mistake.
fn binary_kind(start: &[u8]) -> Option<&'static str> {
    const KINDS: [(&[u8], &str); 5] = [
        (b"PK\x03\x04", "an Excel workbook or ZIP archive"),
        (b"\xD0\xCF\x11\xE0", "an old Excel (.xls) workbook"),
        (b"%PDF", "a PDF document"),
        (b"\x1F\x8B", "a gzip archive"),
        (b"\x89PNG", "a PNG image"),
    ];
    KINDS.iter().find(|(magic, _)| start.starts_with(magic)).map(|(_, kind)| *kind)
}

/// Runs on a blocking thread: parses rows and sends them in batches.
fn read_csv(src: ChannelRead, limits: UploadLimits, tx: &mpsc::Sender<FromReader>) {
    let csv_limits = Limits { max_field_bytes: limits.max_field_bytes, ..Limits::default() };
    let reader = match LeadReader::new(src, csv_limits) {
        Ok(r) => r,
        Err(HeaderError::Io(e)) => {
            let _ = tx.blocking_send(FromReader::Failed(ApiError::Malformed(e.to_string())));
            return;
        }
        Err(e) => {
            let _ = tx.blocking_send(FromReader::Failed(header_problem(&e)));
            return;
        }
    };
    if tx.blocking_send(FromReader::Header { extra_columns: reader.extra_columns() }).is_err() {
        return;
    }
    let (mut leads, mut rejects) = (Vec::with_capacity(BATCH_ROWS), Vec::new());
    let mut rows: u64 = 0;
    for row in reader {
        match row {
            Err(e) => {
                let _ = tx.blocking_send(FromReader::Failed(ApiError::Malformed(format!(
                    "reading the upload failed: {e}"
                ))));
                return;
            }
            Ok(Row::Accepted { line, lead }) => leads.push((line, lead)),
            Ok(Row::Rejected(r)) => rejects.push(r),
        }
        rows += 1;
        if rows > limits.max_rows {
            let msg = format!("the upload has more than the limit of {} rows", limits.max_rows);
            let _ = tx.blocking_send(FromReader::Failed(ApiError::TooLarge(msg)));
            return;
        }
        if leads.len() + rejects.len() >= BATCH_ROWS {
            let batch = FromReader::Batch {
                leads: std::mem::take(&mut leads),
                rejects: std::mem::take(&mut rejects),
            };
            if tx.blocking_send(batch).is_err() {
                return;
            }
            leads.reserve(BATCH_ROWS);
        }
    }
    if !leads.is_empty() || !rejects.is_empty() {
        let _ = tx.blocking_send(FromReader::Batch { leads, rejects });
    }
}

/// A header that makes the file unusable: 422 with the reason (missing columns are listed one by one).
fn header_problem(e: &HeaderError) -> ApiError {
    let errors = match e {
        HeaderError::MissingColumns { missing, .. } => missing
            .iter()
            .map(|c| ProblemItem {
                field: None,
                line: Some(1),
                column: Some((*c).to_owned()),
                message: "required column is missing".into(),
            })
            .collect(),
        _ => vec![ProblemItem { field: None, line: Some(1), column: None, message: e.to_string() }],
    };
    ApiError::Invalid { detail: e.to_string(), errors }
}

/// A blocking `Read` over the chunks the body pump sends.
struct ChannelRead {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelRead {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelRead { rx, current: Bytes::new() }
    }
}

impl Read for ChannelRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => self.current = chunk?,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
