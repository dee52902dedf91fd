//! Whole-word phrase matching over normalised words: the one matcher behind the role table, the industry
//! synonyms and the injection tables. Never substrings, so "cto" cannot match inside "director".

use std::collections::HashMap;

use crate::text::{data_lines, words};

/// Words a `*` in a pattern may stand for, at most.
const MAX_GAP: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    /// `*`: zero to [`MAX_GAP`] words.
    Gap,
}

/// A set of phrases, each with a value; finds the longest phrase starting at a word.
#[derive(Debug)]
pub(crate) struct PhraseTable<T> {
    by_first: HashMap<String, Vec<(Vec<Token>, T)>>,
}

impl<T> Default for PhraseTable<T> {
    fn default() -> Self {
        Self { by_first: HashMap::new() }
    }
}

impl<T> PhraseTable<T> {
    /// Adds `pattern` (free text, normalised here; `*` is a gap). A pattern that normalises to nothing, or
    /// starts with a gap, is a bug in a data file and panics at start-up (a test loads every table).
    pub(crate) fn insert(&mut self, pattern: &str, value: T) {
        let tokens = tokenize_pattern(pattern);
        let Some(Token::Word(first)) = tokens.first() else {
            panic!("data file pattern {pattern:?} must start with a word");
        };
        self.by_first.entry(first.clone()).or_default().push((tokens, value));
    }

    /// Adds a pattern already split into tokens (words and punctuation, as [`crate::injection`] splits text),
    /// matched token for token, without gaps.
    pub(crate) fn insert_tokens(&mut self, tokens: Vec<String>, value: T) {
        let Some(first) = tokens.first().cloned() else {
            panic!("a data file pattern is empty after normalisation");
        };
        self.by_first.entry(first).or_default().push((tokens.into_iter().map(Token::Word).collect(), value));
    }

    /// The longest phrase that starts at `words[at]`: its length in words and its value.
    pub(crate) fn longest_at<S: AsRef<str>>(&self, words: &[S], at: usize) -> Option<(usize, &T)> {
        let candidates = self.by_first.get(words.get(at)?.as_ref())?;
        candidates
            .iter()
            .filter_map(|(tokens, value)| match_len(tokens, words, at).map(|len| (len, value)))
            .max_by_key(|(len, _)| *len)
    }

    /// The first phrase found anywhere in `words`, as (start, length, value).
    pub(crate) fn find<S: AsRef<str>>(&self, words: &[S]) -> Option<(usize, usize, &T)> {
        (0..words.len()).find_map(|at| self.longest_at(words, at).map(|(len, value)| (at, len, value)))
    }
}

fn tokenize_pattern(pattern: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    for piece in pattern.split_whitespace() {
        if piece == "*" {
            tokens.push(Token::Gap);
        } else {
            tokens.extend(words(piece).into_iter().map(Token::Word));
        }
    }
    tokens
}

/// How many words `tokens` covers starting at `words[at]`, preferring the longest way to match.
fn match_len<S: AsRef<str>>(tokens: &[Token], words: &[S], at: usize) -> Option<usize> {
    match tokens.split_first() {
        None => Some(0),
        Some((Token::Word(w), rest)) => {
            if words.get(at).map(AsRef::as_ref) == Some(w.as_str()) {
                match_len(rest, words, at + 1).map(|n| n + 1)
            } else {
                None
            }
        }
        Some((Token::Gap, rest)) => (0..=MAX_GAP)
            .rev()
            .filter(|skip| at + skip <= words.len())
            .find_map(|skip| match_len(rest, words, at + skip).map(|n| n + skip)),
    }
}

/// A data file split into `[section]`s of entries, in file order.
pub(crate) fn sections(file: &str) -> Vec<(&str, Vec<&str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in data_lines(file) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((name, Vec::new()));
        } else if let Some((_, entries)) = out.last_mut() {
            entries.push(line);
        } else {
            panic!("data file entry {line:?} stands before any [section]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(patterns: &[&str]) -> PhraseTable<String> {
        let mut t = PhraseTable::default();
        for p in patterns {
            t.insert(p, (*p).to_owned());
        }
        t
    }

    #[test]
    fn longest_phrase_wins_and_only_whole_words_match() {
        let t = table(&["lead", "lead generation", "cto"]);
        let w = words("Lead Generation Specialist");
        assert_eq!(t.longest_at(&w, 0), Some((2, &"lead generation".to_owned())));
        assert_eq!(t.find(&words("Director")), None);
        assert_eq!(t.find(&words("Leads")), None);
    }

    #[test]
    fn gaps_take_zero_to_three_words() {
        let t = table(&["ignore * instructions"]);
        assert!(t.find(&words("ignore instructions")).is_some());
        assert!(t.find(&words("please ignore all of the instructions")).is_some());
        assert!(t.find(&words("ignore all of the previous instructions")).is_none());
        assert!(t.find(&words("ignore the noise")).is_none());
    }

    #[test]
    fn sections_keep_file_order() {
        let s = sections("# c\n[a]\nx\n\n[b]\ny\nz\n");
        assert_eq!(s, vec![("a", vec!["x"]), ("b", vec!["y", "z"])]);
    }
}
