//! Structure: text that imitates the layout of a prompt, so that a model could read what follows as ours.

use std::sync::LazyLock;

use super::{LINE, is_sentence_end, plain, section, token_table, tokens};
use crate::phrase::PhraseTable;
use crate::prompt::DELIMITERS;

pub(super) const FILE: &str = include_str!("../../data/injection_structure.txt");

struct Tables {
    markers: PhraseTable<()>,
    roles: PhraseTable<()>,
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let mut markers = token_table(&section(FILE, "markers"));
    for delimiter in delimiter_markers() {
        markers.insert_tokens(plain(&tokens(delimiter)), ());
    }
    Tables { markers, roles: token_table(&section(FILE, "roles")) }
});

/// Our own delimiters without their closing `>`, so that `</lead id="2">` and a bare `</lead` count too.
pub(super) fn delimiter_markers() -> impl Iterator<Item = &'static str> {
    DELIMITERS.iter().map(|d| d.strip_suffix('>').unwrap_or(d))
}

pub(super) fn structure(t: &[String]) -> bool {
    TABLES.markers.find(t).is_some()
        || (0..t.len()).any(|at| (at == 0 || is_sentence_end(&t[at - 1])) && opens_turn(t, at))
}

/// Characters that may come before a role name in a turn header: `### System`, `[assistant]`, `> System:`.
fn is_lead_in(token: &str) -> bool {
    matches!(token, "#" | "[" | "<" | "|" | ">" | "-" | "(" | "{" | "=")
}

/// At the start of a line or sentence: a role name followed by `:`, or a header (`#`, `[`, `<`, `|` before the
/// name) at the start of a line followed by a closing bracket or the end of the line. A role name alone
/// ("System architect", a role field "Assistant") is not a turn.
fn opens_turn(t: &[String], mut at: usize) -> bool {
    let line_start = at == 0 || t[at - 1] == LINE;
    let mut header = false;
    while let Some(token) = t.get(at).filter(|t| is_lead_in(t)) {
        header |= matches!(token.as_str(), "#" | "[" | "<" | "|");
        at += 1;
    }
    let Some((len, ())) = TABLES.roles.longest_at(t, at) else {
        return false;
    };
    match t.get(at + len).map(String::as_str) {
        Some(":") => true,
        Some("]" | ">" | "|" | LINE) | None => header && line_start,
        _ => false,
    }
}
