//! CSV ingest: a byte stream (an HTTP body, or a file the CLI reads) -> CSV reader (on a blocking thread) ->
//! batches -> ONE database transaction. The API's upload routes and `leadscore score` both store leads
//! through [`ingest`], so a file is read and checked the same way whichever door it comes in by.
//!
//! Three stages run concurrently, each bounded: the body pump (async, enforces the byte limit), the reader
//! (blocking, never holds more than a chunk and a batch), and the writer (async, one transaction). If any
//! stage fails, or the client disconnects, the transaction is dropped and nothing is stored.

use std::io::{self, Read};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use leadscore_core::Lead;
use leadscore_core::csv::{HeaderError, LeadReader, Limits, RejectedRow, Row};
use tokio::sync::mpsc;

use crate::{Store, StoreError, UploadRecord};

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
/// Rejected rows kept in [`Ingested::errors`] (the API lists them in its response); all of them are stored.
pub const INLINE_ERRORS: usize = 100;

/// Why nothing was stored. Each caller turns these into its own answer (an HTTP status, an exit code); the
/// messages are written for the person who sent the file.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The byte stream failed: the client went away, or the file could not be read.
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    /// Reading failed before the header was complete (the reader's side of a failed stream).
    #[error("{0}")]
    Unreadable(#[source] io::Error),
    /// A format people upload by mistake (spreadsheet, archive, PDF, image), recognised by its first bytes.
    #[error("this is {kind}, not CSV: export the sheet as CSV (UTF-8) and upload that")]
    NotCsv { kind: &'static str },
    #[error("the upload is larger than the limit of {max_bytes} bytes")]
    TooManyBytes { max_bytes: u64 },
    #[error("the upload has more than the limit of {max_rows} rows")]
    TooManyRows { max_rows: u64 },
    /// The header makes the file unusable. Kept whole: callers list missing columns one by one. Never
    /// [`HeaderError::Io`], which is [`IngestError::Unreadable`].
    #[error(transparent)]
    Header(HeaderError),
    /// Reading a row failed after the header (a row the reader can judge is rejected, not an error).
    #[error("reading the upload failed: {0}")]
    Csv(#[source] io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("CSV reader panicked: {0}")]
    ReaderPanicked(#[source] tokio::task::JoinError),
}

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
    Failed(IngestError),
}

/// Stores the CSV in `body` as one upload.
pub async fn ingest<S, E>(
    store: &Store,
    workspace: &str,
    filename: Option<&str>,
    body: S,
    limits: UploadLimits,
    keep_leads: usize,
) -> Result<Ingested, IngestError>
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
        Ok::<_, IngestError>((writer, extra, errors, leads))
    };
    let (pumped, written) = tokio::join!(pump, write);
    // A body problem (limit, disconnect, not CSV) explains any reader failure it caused: report it first.
    pumped?;
    let (writer, extra, errors, leads) = written?;
    reader.await.map_err(IngestError::ReaderPanicked)?;
    let upload = writer.commit(&extra).await?;
    Ok(Ingested { upload, errors, leads })
}

/// Forwards body chunks to the reader, enforcing the byte limit and refusing obvious non-CSV files.
async fn pump_body<S, E>(
    mut body: S,
    tx: mpsc::Sender<io::Result<Bytes>>,
    max_bytes: u64,
) -> Result<(), IngestError>
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
                let e = IngestError::Interrupted(e.to_string());
                fail(&tx, e.to_string());
                return Err(e);
            }
        };
        if total == 0
            && let Some(kind) = binary_kind(&chunk)
        {
            fail(&tx, "not CSV".into());
            return Err(IngestError::NotCsv { kind });
        }
        total += chunk.len() as u64;
        if total > max_bytes {
            fail(&tx, "too large".into());
            return Err(IngestError::TooManyBytes { max_bytes });
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
        Err(e) => {
            let e = match e {
                HeaderError::Io(e) => IngestError::Unreadable(e),
                e => IngestError::Header(e),
            };
            let _ = tx.blocking_send(FromReader::Failed(e));
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
                let _ = tx.blocking_send(FromReader::Failed(IngestError::Csv(e)));
                return;
            }
            Ok(Row::Accepted { line, lead }) => leads.push((line, lead)),
            Ok(Row::Rejected(r)) => rejects.push(r),
        }
        rows += 1;
        if rows > limits.max_rows {
            let e = IngestError::TooManyRows { max_rows: limits.max_rows };
            let _ = tx.blocking_send(FromReader::Failed(e));
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
