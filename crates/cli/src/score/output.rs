//! Getting the results out: the results file (written to `<output>.partial`, renamed when complete), the
//! rejected rows file (`--rejects`) and the summary printed on standard error.
//!
//! Separate from the command's flow: this is everything the command writes, in the layouts users read.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use leadscore_core::results_csv::{ResultsCsv, push_cell};
use leadscore_core::{Intent, ScoreBasis};
use leadscore_store::{DEFAULT_WORKSPACE as WS, Page, ResultFilter, ResultScope, Store};

use super::{Failure, Summary};
use crate::ScoreArgs;

/// Results read back per page for the output file.
const EXPORT_PAGE: u32 = 1000;

/// Writes the run's results in lead (= input) order and counts them for the summary.
pub(super) async fn write_results<W: Write>(
    store: &Store,
    run_id: &str,
    out: &mut ResultsCsv<W>,
    summary: &mut Summary,
) -> Result<(), Failure> {
    let scope = ResultScope::Run(run_id.to_owned());
    let mut pages =
        std::pin::pin!(store.result_pages(WS.to_owned(), scope, ResultFilter::default(), EXPORT_PAGE));
    while let Some(page) = pages.next().await {
        for r in &page.context("reading results")? {
            r.write_csv(out).context("writing results")?;
            summary.scored += 1;
            *summary.by_intent.entry(r.scoring.intent).or_default() += 1;
            *summary.by_basis.entry(r.scoring.score_basis.as_str()).or_default() += 1;
        }
    }
    Ok(())
}

/// Writes every rejected row of the upload to `path` (`line,column,message`).
pub(super) async fn write_rejects(store: &Store, upload: &str, path: &Path) -> Result<(), Failure> {
    let mut out = RejectsCsv::create(path)?;
    let mut page = Page { limit: EXPORT_PAGE, after: None };
    loop {
        let chunk = store
            .list_upload_errors(WS, upload, &page)
            .await
            .context("reading rejected rows")?
            .context("the upload vanished")?;
        for e in &chunk.items {
            out.write(e.line, e.column.as_deref(), &e.message)?;
        }
        match chunk.next_cursor {
            Some(c) => page.after = Some(c),
            None => break,
        }
    }
    out.finish()?;
    Ok(())
}

/// Results go to `<output>.partial` first and are renamed at the end, so a failed run never leaves a
/// truncated file that looks finished.
pub(super) fn open_output(path: Option<&Path>) -> Result<(Box<dyn Write + Send>, Option<PathBuf>)> {
    match path {
        None => Ok((Box::new(BufWriter::with_capacity(256 * 1024, io::stdout())), None)),
        // A device or pipe (`-o /dev/null`, `-o >(gzip ...)`) is written to as it is: renaming a finished file
        // over it would replace the device with a regular file.
        Some(path) if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            Ok((Box::new(BufWriter::with_capacity(256 * 1024, file)), None))
        }
        Some(path) => {
            let mut partial = path.as_os_str().to_owned();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let file =
                File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
            Ok((Box::new(BufWriter::with_capacity(256 * 1024, file)), Some(partial)))
        }
    }
}

struct RejectsCsv {
    out: BufWriter<File>,
    path: PathBuf,
}

impl RejectsCsv {
    fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::new(file);
        out.write_all(b"line,column,message\r\n")?;
        Ok(RejectsCsv { out, path: path.to_owned() })
    }

    fn write(&mut self, line_no: i64, column: Option<&str>, message: &str) -> Result<()> {
        let mut line = line_no.to_string();
        line.push(',');
        push_cell(&mut line, column.unwrap_or(""));
        line.push(',');
        push_cell(&mut line, message);
        line.push_str("\r\n");
        self.out.write_all(line.as_bytes()).with_context(|| format!("writing {}", self.path.display()))
    }

    fn finish(mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("writing {}", self.path.display()))
    }
}

impl Summary {
    pub(super) fn print(&self, args: &ScoreArgs) {
        let target =
            self.output.as_ref().map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
        let rate = if self.seconds > 0.0 { self.scored as f64 / self.seconds } else { 0.0 };
        eprintln!(
            "Scored {} leads from {} in {:.2} s ({:.0} leads/s) -> {target}",
            self.scored, self.source, self.seconds, rate
        );
        let intents: Vec<String> = Intent::ALL
            .iter()
            .map(|i| format!("{} {}", i.as_str(), self.by_intent.get(i).unwrap_or(&0)))
            .collect();
        eprintln!("  intent:      {}", intents.join(" | "));
        let bases: Vec<String> = ScoreBasis::ALL
            .iter()
            .map(|b| format!("{} {}", b.as_str(), self.by_basis.get(b.as_str()).unwrap_or(&0)))
            .collect();
        eprintln!("  score_basis: {}", bases.join(" | "));
        if self.by_basis.contains_key(ScoreBasis::RulesOnly.as_str()) {
            match self.ai_off_reason {
                Some(why) => eprintln!("               rules_only: AI off ({why}); score = 2 x rule score"),
                None => eprintln!(
                    "               rules_only: the AI layer failed for these leads (see ai_status and ai_reasoning)"
                ),
            }
        }
        if self.failed > 0 {
            eprintln!("  failed:      {} leads have no result (see the run's jobs)", self.failed);
        }
        eprintln!("  rejected:    {} rows", self.rejected_total);
        if let Some(url) = &self.kept_in {
            eprintln!("  stored in:   {} (upload, run and results)", crate::serve::redact(url));
        }
        for r in &self.rejected {
            let column = r.column.as_ref().map(|c| format!(" [{c}]")).unwrap_or_default();
            eprintln!("    line {}{column}: {}", r.line, r.message);
        }
        let unlisted = self.rejected_total.saturating_sub(self.rejected.len() as u64);
        if unlisted > 0 {
            match &args.rejects {
                Some(p) => eprintln!("    ... and {unlisted} more (all in {})", p.display()),
                None => eprintln!("    ... and {unlisted} more (--rejects FILE writes them all)"),
            }
        }
    }
}
