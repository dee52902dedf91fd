//! The `score` part: the one-shot CLI on a file, next to SQLite's own bulk loader on the same file.
//!
//! (a) `sqlite3 .import` of the file into a fresh database file (`upload::sqlite_import`, the `upload` bench's
//! baseline): rows/s. (b) `leadscore score --no-ai --offer OFFER -o OUT FILE` as a child under
//! `/usr/bin/time -f '%e %M'`: wall seconds (taken here, around the child), leads/s = data rows / wall, peak RSS
//! (`%M`, the child's maximum resident set); the results CSV must hold one record per lead and the header.
//! Its throwaway database goes to the measurement's directory (`TMPDIR`), beside the baseline's.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use super::{EmbeddedArgs, LeadsFile, Row, Unit, count_file_records, table};

pub(super) struct Sample {
    wall_secs: f64,
    leads_per_sec: f64,
    peak_rss_mb: f64,
    import_rows_per_sec: f64,
}

pub(super) async fn once(
    args: &EmbeddedArgs,
    bin: &Path,
    offer: &Path,
    file: &LeadsFile,
    dir: &Path,
) -> Result<Sample> {
    let import_db = dir.join("import.db");
    let import_secs = crate::upload::sqlite_import(&import_db, &file.path).await?;
    let _ = std::fs::remove_file(&import_db);
    let import_rows_per_sec = file.rows as f64 / import_secs;
    eprintln!("  score: sqlite3 .import {}: {import_secs:.2} s = {import_rows_per_sec:.0} rows/s", file.name);

    let out = dir.join("results.csv");
    let timing = dir.join("time.txt");
    let started = Instant::now();
    let child = Command::new("/usr/bin/time")
        .args(["-f", "%e %M", "-o"])
        .arg(&timing)
        .arg(bin)
        .args(["score", "--no-ai", "--concurrency", &args.concurrency.to_string(), "--offer"])
        .arg(offer)
        .arg("-o")
        .arg(&out)
        .arg(&file.path)
        .env("TMPDIR", dir)
        .env("RUST_LOG", "warn")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .context("running /usr/bin/time (apt-get install time)")?;
    let wall_secs = started.elapsed().as_secs_f64();
    if !child.status.success() {
        bail!(
            "leadscore score {} failed ({}): {}",
            file.name,
            child.status,
            String::from_utf8_lossy(&child.stderr)
        );
    }
    let timing_text = std::fs::read_to_string(&timing)?;
    let (_, max_rss_kb) =
        parse_time(&timing_text).with_context(|| format!("/usr/bin/time output {timing_text:?}"))?;
    let records = count_file_records(&out)?;
    if records != file.rows + 1 {
        bail!(
            "leadscore score {}: the results CSV has {records} records, expected {} leads + the header",
            file.name,
            file.rows
        );
    }
    let s = Sample {
        wall_secs,
        leads_per_sec: file.rows as f64 / wall_secs,
        peak_rss_mb: max_rss_kb / 1024.0,
        import_rows_per_sec,
    };
    eprintln!(
        "  score: leadscore score --no-ai {}: {wall_secs:.2} s = {:.0} leads/s, peak RSS {:.0} MB",
        file.name, s.leads_per_sec, s.peak_rss_mb
    );
    Ok(s)
}

/// `/usr/bin/time -f '%e %M'`: (elapsed seconds, maximum RSS in KB) from its last line (a line before it says
/// when the command exited non-zero).
fn parse_time(text: &str) -> Option<(f64, f64)> {
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let mut fields = line.split_whitespace();
    let secs = fields.next()?.parse().ok()?;
    let kb = fields.next()?.parse().ok()?;
    Some((secs, kb))
}

pub(super) fn report(args: &EmbeddedArgs, files: &[LeadsFile], samples: &[Vec<Sample>]) -> String {
    let mut rows = Vec::new();
    for (f, s) in files.iter().zip(samples) {
        let label = f.label();
        let each = |v: fn(&Sample) -> f64| s.iter().map(v).collect::<Vec<f64>>();
        rows.push(Row::new(&label, "`leadscore score --no-ai`: wall", Unit::Secs, each(|s| s.wall_secs)));
        rows.push(Row::new(
            &label,
            "`leadscore score --no-ai`: leads / wall",
            Unit::Rate("leads/s"),
            each(|s| s.leads_per_sec),
        ));
        rows.push(Row::new(&label, "`leadscore score --no-ai`: peak RSS", Unit::Mb, each(|s| s.peak_rss_mb)));
        rows.push(Row::new(
            &label,
            "`sqlite3 .import` of the same file",
            Unit::Rate("rows/s"),
            each(|s| s.import_rows_per_sec),
        ));
        rows.push(Row::new(
            &label,
            "`leadscore score` / `sqlite3 .import` (within each round)",
            Unit::Pct,
            each(|s| 100.0 * s.leads_per_sec / s.import_rows_per_sec),
        ));
    }
    table(
        &format!(
            "### score: the one-shot CLI, rules only (`leadscore score --no-ai --concurrency {}`), \
             whole process (upload, run, results file) against the bulk loader",
            args.concurrency
        ),
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_time_output() {
        assert_eq!(parse_time("3.21 123456\n"), Some((3.21, 123_456.0)));
        assert_eq!(parse_time("Command exited with non-zero status 1\n0.01 2048\n"), Some((0.01, 2048.0)));
        assert_eq!(parse_time(""), None);
        assert_eq!(parse_time("garbage\n"), None);
    }
}
