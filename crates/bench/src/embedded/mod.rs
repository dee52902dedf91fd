//! `leadscore-bench embedded`: the embedded (SQLite) pipeline measured from outside, with the release
//! `leadscore` binary as a child process, for issue 17 ("the embedded pipeline at 20,000 leads/s").
//!
//! Three parts (`--parts`), each taken once per file (or once, for `cached`) in every round; the rounds repeat
//! the parts in order (score, serve, cached, then again...) so that a slow minute of the machine hits every row
//! rather than one. The report gives each row's median over the rounds with the per-round values in brackets;
//! ratios are computed within a round, then medianed.
//! - [`score`]: `leadscore score --no-ai` on the file (wall, leads/s, peak RSS) next to `sqlite3 .import` of the
//!   same file;
//! - [`serve`]: a `leadscore serve` child on a fresh SQLite file, rules only: upload, score, export through
//!   HTTP, with pollers and an SSE client on the run while it is scored (their latencies);
//! - [`cached`]: a `leadscore serve` child with the AI layer on against the in-process fake LLM: a second run
//!   over the same leads and offer, every verdict from the cache.
//!
//! Everything goes through the binary's CLI and the public HTTP API; no `leadscore_store` call.

mod cached;
mod score;
mod serve;

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::llm::median;
use crate::pipeline::thousands;

#[derive(Debug, clap::Args)]
pub struct EmbeddedArgs {
    /// Where the release `leadscore` binary is.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Leads CSVs (six columns, as `leadscore-bench gen --rows N -o FILE` writes them), comma-separated; needed
    /// by the `score` and `serve` parts.
    #[arg(long, value_delimiter = ',')]
    pub files: Vec<PathBuf>,
    /// The offer JSON (`leadscore score --offer`, and the body of `POST /v1/offers`).
    #[arg(long, default_value = "examples/offer.json")]
    pub offer: PathBuf,
    /// Rounds of every part; medians and per-round values are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Parts to run, in this order in every round.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "score,serve,cached")]
    pub parts: Vec<Part>,
    /// Generated leads of the `cached` part.
    #[arg(long, default_value_t = 100_000)]
    pub cached_leads: u64,
    /// Tasks polling `GET /v1/runs/{id}` every 100 ms while the `serve` part's run is scored.
    #[arg(long, default_value_t = 10)]
    pub pollers: usize,
    /// `leadscore score --concurrency` and `LEADSCORE_CONCURRENCY` of `leadscore serve`.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Score,
    Serve,
    Cached,
}

/// A leads file, with its data rows (CSV records after the header) counted once.
pub(super) struct LeadsFile {
    path: PathBuf,
    name: String,
    rows: u64,
    size_mb: f64,
}

impl LeadsFile {
    fn label(&self) -> String {
        format!("{} ({} leads, {:.0} MB)", self.name, thousands(self.rows as f64), self.size_mb)
    }
}

pub async fn run(args: &EmbeddedArgs) -> Result<()> {
    leadscore_llm::install_crypto();
    let bin = args.bin_dir.join("leadscore");
    if !bin.is_file() {
        bail!("{} not found: build the release binaries or pass --bin-dir", bin.display());
    }
    if args.rounds == 0 || args.parts.is_empty() {
        bail!("nothing to measure: --rounds and --parts must not be empty");
    }
    let offer_path =
        std::fs::canonicalize(&args.offer).with_context(|| format!("{}", args.offer.display()))?;
    let offer: Value = serde_json::from_str(&std::fs::read_to_string(&offer_path)?)
        .with_context(|| format!("{} is not JSON", offer_path.display()))?;
    let needs_files = args.parts.iter().any(|p| *p != Part::Cached);
    if needs_files && args.files.is_empty() {
        bail!("--files is needed by the score and serve parts");
    }
    let mut files = Vec::new();
    for path in args.files.iter().filter(|_| needs_files) {
        let path = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
        let records = count_file_records(&path)?;
        let rows = records.checked_sub(1).with_context(|| format!("{}: empty", path.display()))?;
        let name =
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
        let size_mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
        files.push(LeadsFile { path, name, rows, size_mb });
    }
    let root = std::env::temp_dir().join(format!("ls_bench_embedded_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut scores: Vec<Vec<score::Sample>> = files.iter().map(|_| Vec::new()).collect();
    let mut serves: Vec<Vec<serve::Sample>> = files.iter().map(|_| Vec::new()).collect();
    let mut cacheds: Vec<cached::Sample> = Vec::new();
    let measured = async {
        let cache_setup = if args.parts.contains(&Part::Cached) {
            Some(cached::Setup::new(args.cached_leads).await?)
        } else {
            None
        };
        for r in 1..=args.rounds {
            eprintln!("round {r} of {}", args.rounds);
            for part in &args.parts {
                match part {
                    Part::Score => {
                        for (i, f) in files.iter().enumerate() {
                            let dir = fresh_dir(&root, &format!("score-{r}-{i}"))?;
                            scores[i].push(score::once(args, &bin, &offer_path, f, &dir).await?);
                            let _ = std::fs::remove_dir_all(&dir);
                        }
                    }
                    Part::Serve => {
                        for (i, f) in files.iter().enumerate() {
                            let dir = fresh_dir(&root, &format!("serve-{r}-{i}"))?;
                            serves[i].push(serve::once(args, &bin, &offer, f, &dir).await?);
                            let _ = std::fs::remove_dir_all(&dir);
                        }
                    }
                    Part::Cached => {
                        let setup = cache_setup.as_ref().context("cached setup")?;
                        let dir = fresh_dir(&root, &format!("cached-{r}"))?;
                        cacheds.push(cached::once(args, &bin, &offer, setup, &dir).await?);
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&root);
    measured?;
    for part in &args.parts {
        let table = match part {
            Part::Score => score::report(args, &files, &scores),
            Part::Serve => serve::report(args, &files, &serves),
            Part::Cached => cached::report(args, &cacheds),
        };
        println!("{table}");
    }
    Ok(())
}

/// An empty directory `root/tag` for one measurement (removed after it).
fn fresh_dir(root: &Path, tag: &str) -> Result<PathBuf> {
    let dir = root.join(tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Counts CSV records as they stream past: newlines outside quoted fields, plus a last record without one.
/// A doubled quote inside a quoted field toggles twice, so it needs no special case.
#[derive(Debug, Default)]
pub(super) struct RecordCounter {
    in_quotes: bool,
    records: u64,
    partial: bool,
}

impl RecordCounter {
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'"' => {
                    self.in_quotes = !self.in_quotes;
                    self.partial = true;
                }
                b'\n' if !self.in_quotes => {
                    self.records += 1;
                    self.partial = false;
                }
                _ => self.partial = true,
            }
        }
    }

    pub(super) fn records(&self) -> u64 {
        self.records + u64::from(self.partial)
    }
}

/// CSV records of a file (the header included).
pub(super) fn count_file_records(path: &Path) -> Result<u64> {
    let mut file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut buf = vec![0; 1 << 20];
    let mut counter = RecordCounter::default();
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(counter.records());
        }
        counter.feed(&buf[..n]);
    }
}

/// The nearest-rank percentile `p` (0 to 100) of sorted values; NaN of none.
pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How a row's values are written.
#[derive(Debug, Clone, Copy)]
pub(super) enum Unit {
    /// A rate: `12,345 leads/s`.
    Rate(&'static str),
    Secs,
    Mb,
    Ms,
    Pct,
    Count,
}

fn show(v: f64, unit: Unit) -> String {
    if v.is_nan() {
        return "-".into();
    }
    match unit {
        Unit::Rate(per) => format!("{} {per}", thousands(v)),
        Unit::Secs => format!("{v:.2} s"),
        Unit::Mb => format!("{v:.0} MB"),
        Unit::Ms => format!("{v:.1} ms"),
        Unit::Pct => format!("{v:.0}%"),
        Unit::Count => thousands(v),
    }
}

/// One row of a report: its values, one per round.
pub(super) struct Row {
    pub(super) file: String,
    pub(super) what: String,
    pub(super) unit: Unit,
    pub(super) values: Vec<f64>,
}

impl Row {
    pub(super) fn new(file: &str, what: impl Into<String>, unit: Unit, values: Vec<f64>) -> Row {
        Row { file: file.to_owned(), what: what.into(), unit, values }
    }
}

/// A markdown table: a title line, then `| file | what | median of N rounds [per round] |`.
pub(super) fn table(title: &str, rows: &[Row]) -> String {
    let n = rows.first().map_or(0, |r| r.values.len());
    let mut out = String::new();
    let _ = writeln!(out, "{title}\n");
    let per_round = if n > 1 { " [per round]" } else { "" };
    let rounds = if n == 1 { "1 round".to_owned() } else { format!("{n} rounds") };
    let _ = writeln!(out, "| file | what | median of {rounds}{per_round} |");
    let _ = writeln!(out, "|---|---|---|");
    for row in rows {
        let m = median_or_nan(&row.values);
        let mut cell = show(m, row.unit);
        if row.values.len() > 1 {
            let each: Vec<String> = row.values.iter().map(|v| show(*v, row.unit)).collect();
            let _ = write!(cell, " [{}]", each.join("; "));
        }
        let _ = writeln!(out, "| {} | {} | {cell} |", row.file, row.what);
    }
    out
}

/// The median of the values that are numbers (a round without samples has NaN); NaN if none is.
fn median_or_nan(values: &[f64]) -> f64 {
    let numbers: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if numbers.is_empty() { f64::NAN } else { median(numbers) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(chunks: &[&str]) -> u64 {
        let mut c = RecordCounter::default();
        for chunk in chunks {
            c.feed(chunk.as_bytes());
        }
        c.records()
    }

    #[test]
    fn counts_csv_records_across_chunks() {
        assert_eq!(records(&[]), 0);
        assert_eq!(records(&["a,b\n1,2\n"]), 2);
        assert_eq!(records(&["a,b\n1,2"]), 2);
        assert_eq!(records(&["a,b\r\n1,2\r\n"]), 2);
        // A newline inside quotes, a doubled quote, and a chunk boundary inside a quoted field.
        assert_eq!(records(&["a,b\n1,\"x\ny\"\n2,\"say \"\"hi", "\"\"\nz\"\n"]), 3);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn tables_show_medians_and_rounds() {
        let rows = [
            Row::new("f", "rate", Unit::Rate("leads/s"), vec![12_000.0, 10_000.4, 11_000.0]),
            Row::new("f", "ratio", Unit::Pct, vec![50.4]),
            Row::new("f", "none", Unit::Ms, vec![f64::NAN, f64::NAN, f64::NAN]),
        ];
        let t = table("T", &rows);
        assert!(
            t.contains("| f | rate | 11,000 leads/s [12,000 leads/s; 10,000 leads/s; 11,000 leads/s] |"),
            "{t}"
        );
        assert!(t.contains("| f | ratio | 50% |"), "{t}");
        assert!(t.contains("| f | none | - [-; -; -] |"), "{t}");
    }
}
