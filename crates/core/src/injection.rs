//! The injection screen: does a piece of untrusted lead text try to steer the model? Four classes, each a small
//! matcher over its own data table (`data/injection_*.txt`):
//!
//! - [`InjectionClass::Structure`]: text that imitates a prompt's structure: our own delimiters (taken from
//!   [`crate::prompt::DELIMITERS`]), chat-template tokens, a role name opening a turn (`System:`, `### Assistant`).
//! - [`InjectionClass::Verdict`]: text shaped like an answer: a key of our reply schema in JSON, an intent
//!   assigned a level (`intent: high`, "the correct answer is High"), an order to rate ("classify this as High").
//! - [`InjectionClass::Imperative`]: an imperative aimed at the model's rules, instructions or answer ("forget your
//!   rules"), told apart from the imperatives people write in bios ("Forget cold calling", "Ignore the noise") by
//!   its object.
//! - [`InjectionClass::Phrase`]: the earlier phrase list (`data/injection_phrases.txt`), kept as it was.
//!
//! Text is split into tokens once (normalised words and single punctuation characters, line breaks kept), and
//! every matcher looks a bounded number of tokens ahead of each position: linear in the text's length, no regex.

use std::sync::LazyLock;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::phrase::{PhraseTable, sections};
use crate::text::{data_lines, normalize, strip_invisible, words};

/// What kind of injection a text looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InjectionClass {
    Structure,
    Verdict,
    Imperative,
    Phrase,
}

impl InjectionClass {
    pub const ALL: [InjectionClass; 4] = [
        InjectionClass::Structure,
        InjectionClass::Verdict,
        InjectionClass::Imperative,
        InjectionClass::Phrase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InjectionClass::Structure => "structure",
            InjectionClass::Verdict => "verdict",
            InjectionClass::Imperative => "imperative",
            InjectionClass::Phrase => "phrase",
        }
    }

    pub fn parse(s: &str) -> Option<InjectionClass> {
        InjectionClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// True when `text` falls in this class (the screen tries every class; this one alone, for tests and the
    /// bench).
    pub fn matches(self, text: &str) -> bool {
        match self {
            InjectionClass::Phrase => phrase_list(text),
            class => {
                let raw = tokens(text);
                class.matches_tokens(&plain(&raw), &raw)
            }
        }
    }

    fn matches_tokens(self, plain: &[String], raw: &[String]) -> bool {
        match self {
            InjectionClass::Structure => structure(plain),
            InjectionClass::Verdict => verdict(plain, raw),
            InjectionClass::Imperative => imperative(plain),
            InjectionClass::Phrase => false,
        }
    }
}

/// The first class `text` falls in, if any.
pub fn screen(text: &str) -> Option<InjectionClass> {
    let raw = tokens(text);
    let plain = plain(&raw);
    [InjectionClass::Structure, InjectionClass::Verdict, InjectionClass::Imperative]
        .into_iter()
        .find(|class| class.matches_tokens(&plain, &raw))
        .or_else(|| phrase_list(text).then_some(InjectionClass::Phrase))
}

/// The token that stands for a line break.
const LINE: &str = "\n";

/// Splits text into tokens: words spelled as [`normalize`] spells them, each other visible character on its
/// own (after NFKC, lower case, look-alike angle brackets and HTML/JSON escapes of `<`, `>` and `"` folded),
/// and [`LINE`] between lines. Invisible characters are removed first, so they cannot split a word.
pub(crate) fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.split(['\n', '\r', '\u{0B}', '\u{0C}', '\u{85}', '\u{2028}', '\u{2029}']) {
        let line = strip_invisible(line);
        if line.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(LINE.to_owned());
        }
        let mut word = String::new();
        for c in unescape(&fold(&line)).chars() {
            if c.is_alphanumeric() || is_combining_mark(c) {
                word.push(c);
                continue;
            }
            push_word(&mut word, &mut out);
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
        }
        push_word(&mut word, &mut out);
    }
    out
}

fn push_word(word: &mut String, out: &mut Vec<String>) {
    if !word.is_empty() {
        out.extend(normalize(word).split(' ').filter(|w| !w.is_empty()).map(str::to_owned));
        word.clear();
    }
}

/// NFKC, lower case, and the angle brackets that look like `<` and `>` turned into them.
fn fold(line: &str) -> String {
    line.nfkc()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            // ‹ 〈 ⟨ ˂ and › 〉 ⟩ ˃ (NFKC already turned the fullwidth and small forms into < and >).
            '\u{2039}' | '\u{3008}' | '\u{27E8}' | '\u{02C2}' => '<',
            '\u{203A}' | '\u{3009}' | '\u{27E9}' | '\u{02C3}' => '>',
            _ => c,
        })
        .collect()
}

/// Escapes a writer could use to smuggle a delimiter past a reader (applied to lower-cased text).
const ESCAPES: [(&str, &str); 15] = [
    ("&lt;", "<"),
    ("&gt;", ">"),
    ("&#60;", "<"),
    ("&#62;", ">"),
    ("&#x3c;", "<"),
    ("&#x3e;", ">"),
    ("\\u003c", "<"),
    ("\\u003e", ">"),
    ("\\x3c", "<"),
    ("\\x3e", ">"),
    ("%3c", "<"),
    ("%3e", ">"),
    ("&quot;", "\""),
    ("\\u0022", "\""),
    ("\\\"", "\""),
];

fn unescape(line: &str) -> String {
    if !line.contains(['&', '\\', '%']) {
        return line.to_owned();
    }
    ESCAPES.iter().fold(line.to_owned(), |s, (from, to)| s.replace(from, to))
}

/// Quote marks and markdown emphasis: they change nothing a model reads, so every matcher but the JSON-key one
/// ignores them (`**System:**` is `System:`, `"intent" = 'high'` is `intent = high`).
fn is_decoration(token: &str) -> bool {
    matches!(token, "\"" | "'" | "`" | "“" | "”" | "„" | "‘" | "’" | "‚" | "«" | "»" | "*" | "_" | "~")
}

fn plain(tokens: &[String]) -> Vec<String> {
    tokens.iter().filter(|t| !is_decoration(t)).cloned().collect()
}

/// Tokens that end a sentence (and so a window: a match never spans two sentences).
fn is_sentence_end(token: &str) -> bool {
    matches!(token, "." | "!" | "?" | ";" | "。" | "¡" | "¿" | LINE)
}

/// A table of token patterns from the entries of one section: each entry split as [`tokens`] splits text.
fn token_table(entries: &[&str]) -> PhraseTable<()> {
    let mut table = PhraseTable::default();
    for entry in entries {
        table.insert_tokens(plain(&tokens(entry)), ());
    }
    table
}

/// The entries of `[name]` in a data file; a missing section is a bug in the file (a test loads every table).
fn section<'a>(file: &'a str, name: &str) -> Vec<&'a str> {
    sections(file)
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, entries)| entries)
        .unwrap_or_else(|| panic!("data file section [{name}] is missing"))
}

mod imperative;
mod structure;
mod verdict;

use imperative::imperative;
use structure::structure;
use verdict::verdict;

pub(crate) const PHRASES: &str = include_str!("../data/injection_phrases.txt");

static PHRASE_TABLE: LazyLock<PhraseTable<()>> = LazyLock::new(|| {
    let mut table = PhraseTable::default();
    for pattern in data_lines(PHRASES) {
        table.insert(pattern, ());
    }
    table
});

/// The earlier screen, unchanged: the phrase list, whole words within one sentence.
fn phrase_list(text: &str) -> bool {
    text.split(['.', ';', '!', '?', '\n'])
        .any(|sentence| PHRASE_TABLE.find(&words(&strip_invisible(sentence))).is_some())
}

#[cfg(test)]
mod tests;
