//! CSV ingest: a byte stream (an HTTP body, or a file the CLI reads) -> a spool file -> CSV reader (on a
//! blocking thread) -> batches -> ONE database transaction. The API's upload routes and `leadscore score` both
//! store leads through [`ingest`], so a file is read and checked the same way whichever door it comes in by.
//!
//! Two phases (ADR 0003). Receiving: the body goes to a spool file (bounded by the byte limit), and nothing
//! touches the database, so a client that stalls or leaves mid-body holds no lock and no pool connection.
//! Storing, once the last byte is in: the reader (never more than a batch, bounded in rows and in bytes) and the
//! writer (one transaction, opened only once the header is read) run concurrently. If anything fails, the
//! transaction is dropped and nothing is stored.

use std::io;
use std::path::PathBuf;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use leadscore_core::Lead;
use leadscore_core::csv::encoding::{Encoding, utf8_source};
use leadscore_core::csv::{HeaderError, LeadReader, Limits, Mapping, RejectedRow, Row, SourceReport};
use tokio::sync::mpsc;

use crate::uploads::{Spool, SpoolWriter};
use crate::{Store, StoreError, UploadRecord, UploadWriter};

/// Limits on one upload, and where its body waits; every one is configurable.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    pub max_bytes: u64,
    pub max_rows: u64,
    pub max_field_bytes: usize,
    /// Directory of the spool files bodies are received into (each at most `max_bytes`, unlinked at once).
    pub spool_dir: PathBuf,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            max_bytes: 2 * 1024 * 1024 * 1024,
            max_rows: 5_000_000,
            max_field_bytes: 16 * 1024,
            spool_dir: std::env::temp_dir(),
        }
    }
}

/// How one upload is read, besides its limits.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Accepted leads to keep in [`Ingested::leads`] (the seed-compatible response lists them).
    pub keep_leads: usize,
    /// The encoding the sender declared; `None`: found from the file (see `leadscore_core::csv::encoding`).
    pub encoding: Option<&'static Encoding>,
    /// The columns the sender named for some fields; the others are found from the headers.
    pub mapping: Option<Mapping>,
    /// The sheet of a workbook to read (default: the first).
    pub sheet: Option<String>,
}

/// Leads shown by a dry run ([`preview`]).
pub const PREVIEW_LEADS: usize = 20;

/// What an upload would store, read without storing anything.
#[derive(Debug)]
pub struct Preview {
    pub source: SourceReport,
    /// Columns that would be kept as attributes.
    pub extra_columns: Vec<String>,
    pub rows_total: u64,
    pub rows_accepted: u64,
    pub rows_rejected: u64,
    /// The first [`PREVIEW_LEADS`] accepted leads, with their lines.
    pub leads: Vec<(u64, Lead)>,
    /// The first [`INLINE_ERRORS`] rejected rows of the whole file.
    pub errors: Vec<RejectedRow>,
}

/// Rows per batch sent to the database (one `COPY` on Postgres, multi-row inserts on SQLite)...
const BATCH_ROWS: usize = 5000;
/// ...unless their text reaches this many bytes first: with rows alone, a batch of wide rows held hundreds of
/// megabytes (a 450 MB upload peaked at 1.39 GB RSS).
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of leads kept for the response (`keep_leads`), whatever their number.
const KEPT_LEADS_BYTES: usize = 8 * 1024 * 1024;
/// Rejected rows kept in [`Ingested::errors`] (the API lists them in its response); all of them are stored.
pub const INLINE_ERRORS: usize = 100;

/// Why nothing was stored. Each caller turns these into its own answer (an HTTP status, an exit code); the
/// messages are written for the person who sent the file.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A workbook that cannot be read, or has no such sheet, or is too large to read as one.
    #[error(transparent)]
    Workbook(#[from] crate::workbook::WorkbookError),
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
    /// The spool file could not be created or written (the spool directory is missing, or the disk is full).
    #[error("the upload could not be received into the spool directory: {0}")]
    Spool(#[source] io::Error),
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
    /// The first `keep_leads` accepted leads with their ids and lines (for the seed-compatible response), fewer
    /// if they would take more than a few megabytes.
    pub leads: Vec<(String, u64, Lead)>,
}

enum FromReader {
    Header { extra_columns: Vec<String>, source: SourceReport },
    Batch { leads: Vec<(u64, Lead)>, rejects: Vec<RejectedRow> },
    Failed(IngestError),
}

/// What the reader needs of [`UploadLimits`] and [`IngestOptions`].
#[derive(Clone)]
struct ReadLimits {
    max_rows: u64,
    max_field_bytes: usize,
    encoding: Option<&'static Encoding>,
    mapping: Option<Mapping>,
    sheet: Option<String>,
}

impl ReadLimits {
    fn new(limits: &UploadLimits, options: &IngestOptions) -> ReadLimits {
        ReadLimits {
            max_rows: limits.max_rows,
            max_field_bytes: limits.max_field_bytes,
            encoding: options.encoding,
            mapping: options.mapping.clone(),
            sheet: options.sheet.clone(),
        }
    }
}

/// Stores the CSV in `body` as one upload.
pub async fn ingest<S, E>(
    store: &Store,
    workspace: &str,
    filename: Option<&str>,
    body: S,
    limits: UploadLimits,
    options: IngestOptions,
) -> Result<Ingested, IngestError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    // Until the last byte is in, the database is not touched: a stalled client costs a task and a file.
    let received = receive(body, &limits).await?;
    let read_limits = ReadLimits::new(&limits, &options);
    let (batch_tx, mut batch_rx) = mpsc::channel::<FromReader>(2);
    let reader = tokio::task::spawn_blocking(move || read_upload(received, read_limits, &batch_tx));
    let written = write(store, workspace, filename, &mut batch_rx, options.keep_leads).await;
    drop(batch_rx); // a reader blocked on a full channel stops
    // A panicked reader explains whatever the writer saw (a channel closed early): report it first.
    reader.await.map_err(IngestError::ReaderPanicked)?;
    let Written { mut writer, extra, source, errors, leads } = written?;
    writer.set_source(source);
    let upload = writer.commit(&extra).await?;
    Ok(Ingested { upload, errors, leads })
}

/// Reads the upload in `body` as [`ingest`] would, with the same limits and checks, and stores nothing: what
/// encoding, delimiter and columns it would be read with, its counts, its first leads and its rejected rows.
pub async fn preview<S, E>(
    body: S,
    limits: UploadLimits,
    options: IngestOptions,
) -> Result<Preview, IngestError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let received = receive(body, &limits).await?;
    let read_limits = ReadLimits::new(&limits, &options);
    let (batch_tx, mut batch_rx) = mpsc::channel::<FromReader>(2);
    let reader = tokio::task::spawn_blocking(move || read_upload(received, read_limits, &batch_tx));
    let previewed = collect_preview(&mut batch_rx).await;
    drop(batch_rx);
    reader.await.map_err(IngestError::ReaderPanicked)?;
    previewed
}

async fn collect_preview(rx: &mut mpsc::Receiver<FromReader>) -> Result<Preview, IngestError> {
    let mut preview = match rx.recv().await {
        Some(FromReader::Header { extra_columns, source }) => Preview {
            source,
            extra_columns,
            rows_total: 0,
            rows_accepted: 0,
            rows_rejected: 0,
            leads: Vec::new(),
            errors: Vec::new(),
        },
        Some(FromReader::Failed(e)) => return Err(e),
        Some(FromReader::Batch { .. }) | None => {
            return Err(IngestError::Csv(io::Error::other("the reader stopped before the header")));
        }
    };
    while let Some(msg) = rx.recv().await {
        let (leads, rejects) = match msg {
            FromReader::Header { .. } => continue,
            FromReader::Failed(e) => return Err(e),
            FromReader::Batch { leads, rejects } => (leads, rejects),
        };
        preview.rows_accepted += leads.len() as u64;
        preview.rows_rejected += rejects.len() as u64;
        let room = PREVIEW_LEADS.saturating_sub(preview.leads.len());
        preview.leads.extend(leads.into_iter().take(room));
        let room = INLINE_ERRORS.saturating_sub(preview.errors.len());
        preview.errors.extend(rejects.into_iter().take(room));
    }
    preview.rows_total = preview.rows_accepted + preview.rows_rejected;
    Ok(preview)
}

/// Receives the whole body into a spool file, enforcing the byte limit and refusing obvious non-CSV files.
async fn receive<S, E>(mut body: S, limits: &UploadLimits) -> Result<Received, IngestError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let mut spool = SpoolWriter::create(&limits.spool_dir).await.map_err(IngestError::Spool)?;
    let mut total: u64 = 0;
    // The first bytes, however the body is chunked, say whether it is a workbook or a file sent by mistake.
    let mut head: Vec<u8> = Vec::with_capacity(HEAD);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| IngestError::Interrupted(e.to_string()))?;
        if head.len() < HEAD {
            head.extend_from_slice(&chunk[..chunk.len().min(HEAD - head.len())]);
            if let Some(kind) = binary_kind(&head) {
                return Err(IngestError::NotCsv { kind });
            }
        }
        total += chunk.len() as u64;
        if total > limits.max_bytes {
            return Err(IngestError::TooManyBytes { max_bytes: limits.max_bytes });
        }
        spool.write(&chunk).await.map_err(IngestError::Spool)?;
    }
    let spool = spool.finish().await.map_err(IngestError::Spool)?;
    Ok(Received { spool, workbook: is_workbook(&head) })
}

/// Bytes looked at to recognise a file's kind.
const HEAD: usize = 8;

/// A received body: on disk, and whether it starts like a workbook (a zip or an OLE file).
struct Received {
    spool: Spool,
    workbook: bool,
}

/// Excel's `.xlsx`/`.xlsb` and OpenDocument's `.ods` are zip files; Excel's old `.xls` is an OLE file.
fn is_workbook(start: &[u8]) -> bool {
    start.starts_with(b"PK\x03\x04") || start.starts_with(b"\xD0\xCF\x11\xE0")
}

struct Written {
    writer: UploadWriter,
    extra: Vec<String>,
    source: SourceReport,
    errors: Vec<RejectedRow>,
    leads: Vec<(String, u64, Lead)>,
}

/// Writes what the reader sends in one transaction, opened once the header is known to be usable.
async fn write(
    store: &Store,
    workspace: &str,
    filename: Option<&str>,
    rx: &mut mpsc::Receiver<FromReader>,
    keep_leads: usize,
) -> Result<Written, IngestError> {
    let (extra, source) = match rx.recv().await {
        Some(FromReader::Header { extra_columns, source }) => (extra_columns, source),
        Some(FromReader::Failed(e)) => return Err(e),
        Some(FromReader::Batch { .. }) | None => {
            return Err(IngestError::Csv(io::Error::other("the reader stopped before the header")));
        }
    };
    let mut writer = store.begin_upload(workspace, filename).await?;
    let (mut errors, mut leads, mut kept_bytes) = (Vec::new(), Vec::new(), 0);
    while let Some(msg) = rx.recv().await {
        let (batch, rejects) = match msg {
            FromReader::Header { .. } => continue,
            FromReader::Failed(e) => return Err(e),
            FromReader::Batch { leads, rejects } => (leads, rejects),
        };
        let ids = writer.write_batch(&batch, &rejects).await?;
        let room = INLINE_ERRORS.saturating_sub(errors.len());
        errors.extend(rejects.into_iter().take(room));
        for (id, (line, lead)) in ids.into_iter().zip(batch) {
            kept_bytes += lead_bytes(&lead);
            if leads.len() >= keep_leads || kept_bytes > KEPT_LEADS_BYTES {
                break;
            }
            leads.push((id, line, lead));
        }
    }
    Ok(Written { writer, extra, source, errors, leads })
}

/// Recognises file formats people upload by mistake.
fn binary_kind(start: &[u8]) -> Option<&'static str> {
    const KINDS: [(&[u8], &str); 3] =
        [(b"%PDF", "a PDF document"), (b"\x1F\x8B", "a gzip archive"), (b"\x89PNG", "a PNG image")];
    KINDS.iter().find(|(magic, _)| start.starts_with(magic)).map(|(_, kind)| *kind)
}

/// Runs on a blocking thread: parses rows and sends them in batches bounded in rows and in bytes.
fn read_upload(received: Received, limits: ReadLimits, tx: &mpsc::Sender<FromReader>) {
    if !received.workbook {
        return read_csv(received.spool, limits, None, tx);
    }
    match crate::workbook::sheet_csv(received.spool, limits.sheet.as_deref()) {
        Ok(sheet) => {
            let (format, name) = (sheet.format, sheet.sheet);
            read_csv(io::Cursor::new(sheet.csv), limits, Some((format, name)), tx);
        }
        Err(e) => {
            let _ = tx.blocking_send(FromReader::Failed(e.into()));
        }
    }
}

/// Reads CSV text (an upload, or a workbook's sheet turned into CSV with its format and name).
fn read_csv<R: io::Read>(
    src: R,
    limits: ReadLimits,
    workbook: Option<(&'static str, String)>,
    tx: &mpsc::Sender<FromReader>,
) {
    let csv_limits = Limits { max_field_bytes: limits.max_field_bytes, ..Limits::default() };
    // A workbook's text is UTF-8 already, whatever the sender declared.
    let declared = if workbook.is_some() { None } else { limits.encoding };
    let opened = utf8_source(src, declared).and_then(|(src, encoding)| {
        Ok((LeadReader::with_mapping(src, csv_limits, limits.mapping.as_ref())?, encoding))
    });
    let (reader, encoding) = match opened {
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
    let mut source = SourceReport::new(encoding.name(), &reader);
    if let Some((format, sheet)) = workbook {
        source.format = format.to_owned();
        source.sheet = Some(sheet);
    }
    if tx.blocking_send(FromReader::Header { extra_columns: reader.extra_columns(), source }).is_err() {
        return;
    }
    let (mut leads, mut rejects, mut bytes) = (Vec::new(), Vec::new(), 0);
    let mut rows: u64 = 0;
    for row in reader {
        match row {
            Err(e) => {
                let _ = tx.blocking_send(FromReader::Failed(IngestError::Csv(e)));
                return;
            }
            Ok(Row::Accepted { line, lead }) => {
                bytes += lead_bytes(&lead);
                leads.push((line, lead));
            }
            Ok(Row::Rejected(r)) => {
                bytes += r.message.len() + r.column.as_ref().map_or(0, String::len);
                rejects.push(r);
            }
        }
        rows += 1;
        if rows > limits.max_rows {
            let e = IngestError::TooManyRows { max_rows: limits.max_rows };
            let _ = tx.blocking_send(FromReader::Failed(e));
            return;
        }
        if leads.len() + rejects.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
            let batch = FromReader::Batch {
                leads: std::mem::take(&mut leads),
                rejects: std::mem::take(&mut rejects),
            };
            bytes = 0;
            if tx.blocking_send(batch).is_err() {
                return;
            }
        }
    }
    if !leads.is_empty() || !rejects.is_empty() {
        let _ = tx.blocking_send(FromReader::Batch { leads, rejects });
    }
}

/// The heap a lead takes, near enough to bound batches by: its text, attribute names included (each row
/// holds its own copy), plus a word or so per string.
fn lead_bytes(lead: &Lead) -> usize {
    const PER_STRING: usize = 32;
    let fields = [&lead.name, &lead.role, &lead.company, &lead.industry, &lead.location, &lead.linkedin_bio];
    let text: usize = fields.iter().map(|s| s.len() + PER_STRING).sum();
    let external = lead.external_id.as_ref().map_or(0, |s| s.len() + PER_STRING);
    let attributes: usize =
        lead.attributes.iter().map(|a| a.name.len() + a.value.len() + 2 * PER_STRING).sum();
    text + external + attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `csv` through a spool as [`ingest`] does; returns the batches' (rows, bytes).
    async fn batches(csv: String) -> Vec<(usize, usize)> {
        let mut spool = SpoolWriter::create(&std::env::temp_dir()).await.expect("spool");
        spool.write(csv.as_bytes()).await.expect("write");
        let spool = spool.finish().await.expect("finish");
        let (tx, mut rx) = mpsc::channel(2);
        let limits = ReadLimits {
            max_rows: u64::MAX,
            max_field_bytes: 16 * 1024,
            encoding: None,
            mapping: None,
            sheet: None,
        };
        let reader = tokio::task::spawn_blocking(move || read_csv(spool, limits, None, &tx));
        let mut sizes = Vec::new();
        while let Some(msg) = rx.recv().await {
            match msg {
                FromReader::Batch { leads, .. } => {
                    sizes.push((leads.len(), leads.iter().map(|(_, l)| lead_bytes(l)).sum()))
                }
                FromReader::Header { .. } => {}
                FromReader::Failed(e) => panic!("{e}"),
            }
        }
        reader.await.expect("reader");
        sizes
    }

    #[tokio::test]
    async fn batches_of_wide_rows_are_bounded_in_bytes() {
        let wide = "x".repeat(15_000);
        let mut csv = "name,role,company,industry,location,linkedin_bio,a,b,c\n".to_owned();
        for i in 0..1000 {
            csv.push_str(&format!("Lead {i},CEO,Acme,SaaS,Oslo,{wide},{wide},{wide},{wide}\n"));
        }
        let sizes = batches(csv).await;
        assert_eq!(sizes.iter().map(|(rows, _)| rows).sum::<usize>(), 1000);
        let row = sizes[0].1 / sizes[0].0;
        for (rows, bytes) in &sizes {
            assert!(*bytes < BATCH_BYTES + row, "{rows} rows of {bytes} bytes in one batch");
        }
    }

    #[tokio::test]
    async fn narrow_rows_are_batched_by_count() {
        let mut csv = "name,role,company,industry,location,linkedin_bio\n".to_owned();
        for i in 0..12_000 {
            csv.push_str(&format!("Lead {i},CEO,Acme,SaaS,Oslo,bio\n"));
        }
        let rows: Vec<usize> = batches(csv).await.into_iter().map(|(rows, _)| rows).collect();
        assert_eq!(rows, [BATCH_ROWS, BATCH_ROWS, 2000]);
    }
}
