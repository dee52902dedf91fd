//! Imperative: an order aimed at the model's rules, instructions or answer ("forget your rules", "ignora las
//! instrucciones"). The verb alone proves nothing (bios say "Forget cold calling", "Ignore the noise"): the
//! object must be the model's. Instructions and prompts are always the model's; rules, guidelines or an answer
//! only with a word pointing at the model ("your rules", "the rules above").

use std::sync::LazyLock;

use super::{is_sentence_end, section, token_table};
use crate::phrase::PhraseTable;

pub(super) const FILE: &str = include_str!("../../data/injection_imperative.txt");

/// Words after the verb in which an object in `[strong objects]` is looked for ("ignore all of your previous
/// instructions").
pub(super) const STRONG_WINDOW: usize = 5;
/// Words after the verb in which an object in `[weak objects]` is looked for: shorter, because those words also
/// turn up in ordinary advice further from the verb.
pub(super) const WEAK_WINDOW: usize = 3;

struct Tables {
    verbs: PhraseTable<()>,
    strong: PhraseTable<()>,
    weak: PhraseTable<()>,
    pointers: PhraseTable<()>,
    after: PhraseTable<()>,
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let table = |name| token_table(&section(FILE, name));
    Tables {
        verbs: table("verbs"),
        strong: table("strong objects"),
        weak: table("weak objects"),
        pointers: table("pointers"),
        after: table("pointers after"),
    }
});

pub(super) fn imperative(t: &[String]) -> bool {
    t.split(|token| is_sentence_end(token)).any(|sentence| {
        let words: Vec<&str> =
            sentence.iter().map(String::as_str).filter(|t| t.chars().any(char::is_alphanumeric)).collect();
        (0..words.len()).any(|at| aims_at_model(&words, at))
    })
}

fn aims_at_model(w: &[&str], at: usize) -> bool {
    let Some((verb, ())) = TABLES.verbs.longest_at(w, at) else {
        return false;
    };
    let start = at + verb;
    let pointed = |object_at: usize, len: usize| {
        (start..object_at).any(|p| TABLES.pointers.longest_at(w, p).is_some())
            || TABLES.after.longest_at(w, object_at + len).is_some()
    };
    (start..w.len().min(start + STRONG_WINDOW)).any(|k| {
        TABLES.strong.longest_at(w, k).is_some()
            || (k < start + WEAK_WINDOW
                && TABLES.weak.longest_at(w, k).is_some_and(|(len, ())| pointed(k, len)))
    })
}
