//! The README's configuration table, generated from the definitions (a test keeps the two equal).

use std::collections::BTreeMap;
use std::fmt::Write as _;

struct Row {
    flag: String,
    defaults: Vec<(&'static str, String)>,
    help: String,
}

/// One Markdown row per variable: its flag, its default per binary, which binaries read it and what it does.
pub fn markdown() -> String {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut order = Vec::new();
    for (binary, command) in super::commands() {
        for arg in command.get_arguments() {
            let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else { continue };
            let var = var.to_string_lossy().into_owned();
            let default =
                arg.get_default_values().iter().map(|v| v.to_string_lossy()).collect::<Vec<_>>().join(",");
            let row = rows.entry(var.clone()).or_insert_with(|| {
                order.push(var.clone());
                Row { flag: format!("--{long}"), defaults: Vec::new(), help: help(arg) }
            });
            row.defaults.push((binary, default));
        }
    }
    let mut out =
        String::from("| variable | flag | default | read by | what it does |\n|---|---|---|---|---|\n");
    for var in order {
        let row = &rows[&var];
        let binaries = row.defaults.iter().map(|(b, _)| *b).collect::<Vec<_>>().join(", ");
        let _ = writeln!(
            out,
            "| `{var}` | `{}` | {} | {binaries} | {} |",
            row.flag,
            defaults(&row.defaults),
            row.help
        );
    }
    out
}

/// `-` when none; one value when every binary agrees; else each binary's.
fn defaults(per_binary: &[(&'static str, String)]) -> String {
    let shown = |d: &str| if d.is_empty() { "-".to_owned() } else { format!("`{d}`") };
    if per_binary.windows(2).all(|w| w[0].1 == w[1].1) {
        return shown(&per_binary[0].1);
    }
    per_binary.iter().map(|(b, d)| format!("{} ({b})", shown(d))).collect::<Vec<_>>().join(", ")
}

fn help(arg: &clap::Arg) -> String {
    let help = arg.get_long_help().or_else(|| arg.get_help()).map(ToString::to_string).unwrap_or_default();
    help.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}
