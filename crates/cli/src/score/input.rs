//! Getting the leads in: opening the file (or standard input), reading it on a thread of its own into the
//! store's ingest pipeline, and the progress bars shown on a terminal (reading here, scoring in the parent).
//!
//! Separate from the command's flow because this is the part that deals with blocking reads and the terminal.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use leadscore_core::csv::RejectedRow;
use leadscore_store::{
    DEFAULT_WORKSPACE as WS, IngestError, IngestOptions, Store, UploadLimits, UploadRecord, ingest,
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
    let limits = UploadLimits {
        max_bytes: u64::MAX,
        max_rows: u64::MAX,
        max_field_bytes: args.max_field_bytes,
        ..UploadLimits::default()
    };
    let name = args.leads.file_name().and_then(|n| n.to_str()).filter(|_| args.leads.as_os_str() != "-");
    let options = IngestOptions { keep_leads: 0, encoding: args.encoding };
    let ingested = ingest(store, WS, name, chunks, limits, options).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let source = display(&args.leads);
    let ingested = ingested.map_err(|e| match e {
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
        | IngestError::Csv(_) => unusable(anyhow!("{source} cannot be read as leads: {e}")),
    })?;
    let mut listed = ingested.errors;
    listed.truncate(LISTED_REJECTS);
    Ok((ingested.upload, listed))
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
