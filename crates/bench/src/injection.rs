//! `leadscore-bench injection`: the injection screen on the corpora written for it (crates/core/tests/data):
//! false positives on ordinary bios, detection per class on attacks, and throughput against the earlier
//! phrase-list screen (still the screen's `phrase` class) in the same run.

use std::time::{Duration, Instant};

use leadscore_core::injection::{InjectionClass, screen};

const ORDINARY: &str = include_str!("../../core/tests/data/bios_ordinary.txt");
const ATTACKS: &str = include_str!("../../core/tests/data/injection_attacks.txt");

#[derive(Debug, clap::Args)]
pub struct InjectionArgs {
    /// Timed runs per screen and text length; the median is reported.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Texts screened per timed run.
    #[arg(long, default_value_t = 20_000)]
    texts: usize,
}

fn lines(file: &str) -> impl Iterator<Item = String> + '_ {
    file.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.replace("\\n", "\n"))
}

fn attacks() -> Vec<(InjectionClass, String)> {
    let mut class = InjectionClass::Phrase;
    let mut out = Vec::new();
    for line in lines(ATTACKS) {
        match line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            Some(name) => class = InjectionClass::parse(name).expect("a class name"),
            None => out.push((class, line)),
        }
    }
    out
}

fn old_screen(text: &str) -> bool {
    InjectionClass::Phrase.matches(text)
}

fn new_screen(text: &str) -> bool {
    screen(text).is_some()
}

fn rate(hits: usize, of: usize) -> String {
    format!("{hits}/{of} ({:.1}%)", 100.0 * hits as f64 / of as f64)
}

pub fn run(args: &InjectionArgs) -> anyhow::Result<()> {
    let bios: Vec<String> = lines(ORDINARY).collect();
    let attacks = attacks();
    println!("false positives on {} ordinary bios (target 0):", bios.len());
    for (name, f) in [("class screen", new_screen as fn(&str) -> bool), ("phrase list (old)", old_screen)] {
        let flagged: Vec<&String> = bios.iter().filter(|b| f(b)).collect();
        println!("  {name:<18} {}", rate(flagged.len(), bios.len()));
        for bio in flagged {
            println!("    {bio}");
        }
    }
    println!("detection on {} attacks, by the class they belong to:", attacks.len());
    println!("  {:<11} {:>16} {:>16} {:>16}", "class", "class screen", "its own class", "phrase list (old)");
    for class in [InjectionClass::Structure, InjectionClass::Verdict, InjectionClass::Imperative] {
        let texts: Vec<&String> = attacks.iter().filter(|(c, _)| *c == class).map(|(_, t)| t).collect();
        let count = |f: &dyn Fn(&str) -> bool| texts.iter().filter(|t| f(t)).count();
        println!(
            "  {:<11} {:>16} {:>16} {:>16}",
            class.as_str(),
            rate(count(&new_screen), texts.len()),
            rate(count(&|t| class.matches(t)), texts.len()),
            rate(count(&old_screen), texts.len())
        );
    }
    println!(
        "throughput, median of {} runs of {} texts (ordinary bios, joined up to the length):",
        args.runs, args.texts
    );
    println!(
        "  {:>6} {:>16} {:>16} {:>8} {:>14}",
        "chars", "class bios/s", "old bios/s", "ratio", "class ns/char"
    );
    for length in [150, 1500, 15_000] {
        let texts = texts_of_length(&bios, length, args.texts.min(2_000));
        let new = median_rate(args, &texts, new_screen);
        let old = median_rate(args, &texts, old_screen);
        let chars: usize = texts.iter().map(|t| t.chars().count()).sum::<usize>() / texts.len();
        println!(
            "  {chars:>6} {new:>16.0} {old:>16.0} {:>8.2} {:>14.1}",
            new / old,
            1e9 / new / chars as f64
        );
    }
    Ok(())
}

/// `count` texts of about `length` characters, made by joining consecutive ordinary bios.
fn texts_of_length(bios: &[String], length: usize, count: usize) -> Vec<String> {
    let mut all = bios.iter().cycle();
    (0..count)
        .map(|_| {
            let mut text = String::new();
            while text.chars().count() < length {
                text.push_str(all.next().expect("cycle"));
                text.push(' ');
            }
            text
        })
        .collect()
}

/// Texts screened per second, median over the runs; each run screens `args.texts` texts.
fn median_rate(args: &InjectionArgs, texts: &[String], f: fn(&str) -> bool) -> f64 {
    let mut rates: Vec<f64> = (0..args.runs)
        .map(|_| {
            let start = Instant::now();
            let hits = texts.iter().cycle().take(args.texts).filter(|t| f(std::hint::black_box(t))).count();
            std::hint::black_box(hits);
            args.texts as f64 / start.elapsed().max(Duration::from_nanos(1)).as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}
