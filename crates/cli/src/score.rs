//! `leadscore score`: read, validate, score and write in one streaming pass.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use leadscore_core::csv::{LeadReader, Limits, RejectedRow, Row};
use leadscore_core::results_csv::{ResultRow, ResultsCsv, push_cell};
use leadscore_core::{AiOutcome, Intent, Offer, Rules, ScoreBasis, Scoring};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::ScoreArgs;

/// Rejected rows listed on the terminal; the rest are counted (and all go to `--rejects`).
const LISTED_REJECTS: usize = 20;

/// A failure that makes the input unusable (exit 2) as opposed to one while working (exit 1).
struct Unusable(anyhow::Error);

/// Why this command has no AI verdicts without `--no-ai`.
const RULES_ONLY_FOR_NOW: &str = "this command uses the rule layer only so far; the AI layer runs in `leadscore serve` and `leadscore-worker`";

pub fn run(args: &ScoreArgs) -> ExitCode {
    match score(args) {
        Ok(summary) => {
            summary.print(args);
            if args.strict && summary.rejected_total > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS }
        }
        Err(Failure::Unusable(Unusable(e))) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Unusable(Unusable),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Failed(e)
    }
}

fn unusable(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Unusable(Unusable(e.into()))
}

#[derive(Default)]
struct Summary {
    source: String,
    output: Option<PathBuf>,
    scored: u64,
    by_intent: BTreeMap<Intent, u64>,
    by_basis: BTreeMap<&'static str, u64>,
    rejected: Vec<RejectedRow>,
    rejected_total: u64,
    seconds: f64,
    ai_off_reason: &'static str,
}

fn score(args: &ScoreArgs) -> Result<Summary, Failure> {
    let started = Instant::now();
    let offer_text = std::fs::read_to_string(&args.offer)
        .with_context(|| format!("cannot read the offer file {}", args.offer.display()))
        .map_err(unusable)?;
    let offer = Offer::from_json(&offer_text)
        .with_context(|| format!("the offer file {} is not a valid offer", args.offer.display()))
        .map_err(unusable)?;
    let (input, size) = open_input(&args.leads).map_err(unusable)?;
    let limits = Limits { max_field_bytes: args.max_field_bytes, ..Limits::default() };
    let mut reader = LeadReader::new(input, limits)
        .with_context(|| format!("{} cannot be read as leads", display(&args.leads)))
        .map_err(unusable)?;

    let (out, partial) = open_output(args.output.as_deref())?;
    let mut results = ResultsCsv::new(out, reader.extra_columns()).context("writing the results header")?;
    let mut rejects = match &args.rejects {
        Some(path) => Some(RejectsCsv::create(path)?),
        None => None,
    };
    let progress = progress_bar(size);
    let rules = Rules::for_offer(&offer);
    let (run_id, offer_id) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    let mut summary = Summary {
        source: display(&args.leads),
        output: args.output.clone(),
        ai_off_reason: if args.no_ai { "--no-ai" } else { RULES_ONLY_FOR_NOW },
        ..Summary::default()
    };
    while let Some(row) = reader.next() {
        match row.with_context(|| format!("reading {}", display(&args.leads)))? {
            Row::Accepted { lead, .. } => {
                let scoring = Scoring::compose(rules.score(&lead), AiOutcome::Skipped, vec![]);
                let scored_at =
                    OffsetDateTime::now_utc().format(&Rfc3339).context("formatting a timestamp")?;
                let lead_id = Uuid::now_v7().to_string();
                let row = ResultRow {
                    lead_id: &lead_id,
                    lead: &lead,
                    scoring: &scoring,
                    run_id: &run_id,
                    offer_id: &offer_id,
                    scored_at: &scored_at,
                };
                results.write(&row).context("writing results")?;
                summary.count(&scoring);
            }
            Row::Rejected(r) => {
                if let Some(rejects) = &mut rejects {
                    rejects.write(&r)?;
                }
                summary.rejected_total += 1;
                if summary.rejected.len() < LISTED_REJECTS {
                    summary.rejected.push(r);
                }
            }
        }
        if let Some(bar) = &progress {
            bar.set_position(reader.bytes_read());
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    results.flush().context("writing results")?;
    if let Some(rejects) = rejects {
        rejects.finish()?;
    }
    if let (Some(partial), Some(path)) = (partial, &args.output) {
        std::fs::rename(&partial, path)
            .with_context(|| format!("moving the results to {}", path.display()))?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn display(path: &Path) -> String {
    if path.as_os_str() == "-" { "standard input".to_owned() } else { path.display().to_string() }
}

fn open_input(path: &Path) -> Result<(Box<dyn Read>, Option<u64>)> {
    if path.as_os_str() == "-" {
        return Ok((Box::new(io::stdin().lock()), None));
    }
    let file = File::open(path).with_context(|| format!("cannot open the leads file {}", path.display()))?;
    let size = file.metadata().ok().map(|m| m.len());
    Ok((Box::new(file), size))
}

/// Results go to `<output>.partial` first and are renamed at the end, so a failed run never leaves a
/// truncated file that looks finished.
fn open_output(path: Option<&Path>) -> Result<(Box<dyn Write>, Option<PathBuf>)> {
    match path {
        None => Ok((Box::new(BufWriter::with_capacity(256 * 1024, io::stdout().lock())), None)),
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

fn progress_bar(size: Option<u64>) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(size?);
    let style = ProgressStyle::with_template("{spinner} scoring {bar:40} {bytes}/{total_bytes} ({eta} left)")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
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

    fn write(&mut self, r: &RejectedRow) -> Result<()> {
        let mut line = r.line.to_string();
        line.push(',');
        push_cell(&mut line, r.column.as_deref().unwrap_or(""));
        line.push(',');
        push_cell(&mut line, &r.message);
        line.push_str("\r\n");
        self.out.write_all(line.as_bytes()).with_context(|| format!("writing {}", self.path.display()))
    }

    fn finish(mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("writing {}", self.path.display()))
    }
}

impl Summary {
    fn count(&mut self, s: &Scoring) {
        self.scored += 1;
        *self.by_intent.entry(s.intent).or_default() += 1;
        *self.by_basis.entry(s.score_basis.as_str()).or_default() += 1;
    }

    fn print(&self, args: &ScoreArgs) {
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
            eprintln!("               rules_only: AI off ({}); score = 2 x rule score", self.ai_off_reason);
        }
        eprintln!("  rejected:    {} rows", self.rejected_total);
        for r in &self.rejected {
            let column = r.column.as_ref().map(|c| format!(" [{c}]")).unwrap_or_default();
            eprintln!("    line {}{column}: {}", r.line, r.message);
        }
        let unlisted = self.rejected_total - self.rejected.len() as u64;
        if unlisted > 0 {
            match &args.rejects {
                Some(p) => eprintln!("    ... and {unlisted} more (all in {})", p.display()),
                None => eprintln!("    ... and {unlisted} more (--rejects FILE writes them all)"),
            }
        }
    }
}
