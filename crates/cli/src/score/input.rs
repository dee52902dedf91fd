//! Getting the leads in: opening the file (or standard input), reading it on a thread of its own into the
//! store's ingest pipeline, and the progress bars shown on a terminal (reading here, scoring in the parent).
//!
//! Separate from the command's flow because this is the part that deals with blocking reads and the terminal.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use leadscore_core::csv::RejectedRow;
use leadscore_store::{
    DEFAULT_WORKSPACE as WS, IngestError, IngestOptions, Store, UploadLimits, UploadRecord, ingest, preview,
};
use tokio::sync::mpsc;

use super::{Failure, unusable};
use crate::ScoreArgs;

/// Rejected rows listed on the terminal; the rest are counted (and all go to `--rejects`).
const LISTED_REJECTS: usize = 20;

/// Bytes per chunk handed from the reading thread to the upload pipeline.
const CHUNK: usize = 256 * 1024;

/// Stores the CSV as one upload through the store's ingest (as the API's upload routes do). Returns it with
/// the first rejected rows.
pub(super) async fn upload(
    args: &ScoreArgs,
    store: &Store,
    input: Box<dyn Read + Send>,
    size: Option<u64>,
) -> Result<(UploadRecord, Vec<RejectedRow>), Failure> {
    let bar = bar(size, "reading {bar:40} {bytes}/{total_bytes} ({eta} left)");
    let chunks = read_chunks(input, bar.clone());
    let name = args.leads.file_name().and_then(|n| n.to_str()).filter(|_| args.leads.as_os_str() != "-");
    let ingested = ingest(store, WS, name, chunks, limits(args), options(args)).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let ingested = ingested.map_err(|e| failure(args, e))?;
    let mut listed = ingested.errors;
    listed.truncate(LISTED_REJECTS);
    Ok((ingested.upload, listed))
}

fn limits(args: &ScoreArgs) -> UploadLimits {
    UploadLimits {
        max_bytes: u64::MAX,
        max_rows: u64::MAX,
        max_field_bytes: args.max_field_bytes,
        ..UploadLimits::default()
    }
}

fn options(args: &ScoreArgs) -> IngestOptions {
    IngestOptions {
        keep_leads: 0,
        encoding: args.encoding,
        mapping: args.mapping.clone(),
        sheet: args.sheet.clone(),
    }
}

/// `--dry-run`: how the file would be read, printed, and nothing stored.
pub(super) async fn dry_run(args: &ScoreArgs) -> Result<(), Failure> {
    let (input, _) = open_input(&args.leads).map_err(super::unusable)?;
    let previewed = preview(read_chunks(input, None), limits(args), options(args)).await;
    let p = previewed.map_err(|e| failure(args, e))?;
    let mut out = String::new();
    let delimiter =
        if p.source.delimiter == "\t" { "tab".to_owned() } else { format!("`{}`", p.source.delimiter) };
    match &p.source.sheet {
        Some(sheet) => {
            writeln!(out, "{}: {} workbook, sheet `{sheet}`", display(&args.leads), p.source.format)
        }
        None => writeln!(out, "{}: {}, delimiter {delimiter}", display(&args.leads), p.source.encoding),
    }
    .ok();
    for f in &p.source.fields {
        let columns =
            if f.columns.is_empty() { "(no column: empty)".to_owned() } else { f.columns.join(" + ") };
        let _ = writeln!(out, "  {:<13} <- {columns}", f.field);
    }
    if !p.extra_columns.is_empty() {
        let _ = writeln!(out, "  kept as attributes: {}", p.extra_columns.join(", "));
    }
    let _ = writeln!(
        out,
        "rows: {} read, {} accepted, {} rejected",
        p.rows_total, p.rows_accepted, p.rows_rejected
    );
    for (line, l) in &p.leads {
        let _ = writeln!(
            out,
            "  line {line}: {} | {} | {} | {} | {}",
            l.name, l.role, l.company, l.industry, l.location
        );
    }
    for e in &p.errors {
        let column = e.column.as_deref().map(|c| format!(", {c}")).unwrap_or_default();
        let _ = writeln!(out, "  rejected line {}{column}: {}", e.line, e.message);
    }
    print!("{out}");
    Ok(())
}

fn failure(args: &ScoreArgs, e: IngestError) -> Failure {
    let source = display(&args.leads);
    match e {
        // Keeping the leads failed, not the file: exit 1. Worded as when these were API internal errors.
        IngestError::Store(_) | IngestError::Spool(_) | IngestError::ReaderPanicked(_) => {
            Failure::Failed(anyhow!("storing the leads of {source}: internal error: {e}"))
        }
        // Listed one by one so that a new kind of failure has to be placed on one side or the other.
        IngestError::Interrupted(_)
        | IngestError::Unreadable(_)
        | IngestError::NotCsv { .. }
        | IngestError::TooManyBytes { .. }
        | IngestError::TooManyRows { .. }
        | IngestError::Header(_)
        | IngestError::Workbook(_)
        | IngestError::Csv(_) => unusable(anyhow!("{source} cannot be read as leads: {e}")),
    }
}

/// Reads `input` on a thread of its own (standard input blocks) and hands the chunks to the upload pipeline.
fn read_chunks(
    mut input: Box<dyn Read + Send>,
    bar: Option<ProgressBar>,
) -> impl futures_util::Stream<Item = Result<Bytes, io::Error>> + Send + Unpin {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    std::thread::spawn(move || {
        loop {
            let mut buf = vec![0; CHUNK];
            let chunk = match input.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if let Some(bar) = &bar {
                        bar.inc(n as u64);
                    }
                    Ok(Bytes::from(buf))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }))
}

pub(super) fn display(path: &Path) -> String {
    if path.as_os_str() == "-" { "standard input".to_owned() } else { path.display().to_string() }
}

pub(super) fn open_input(path: &Path) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
    if path.as_os_str() == "-" {
        return Ok((Box::new(io::stdin()), None));
    }
    let file = File::open(path).with_context(|| format!("cannot open the leads file {}", path.display()))?;
    let size = file.metadata().ok().map(|m| m.len());
    Ok((Box::new(file), size))
}

/// A progress bar on standard error when it is a terminal.
pub(super) fn bar(len: Option<u64>, template: &str) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len?);
    let style = ProgressStyle::with_template(&format!("{{spinner}} {template}"))
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}
