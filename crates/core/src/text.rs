//! Text normalisation shared by every matcher, so that a title, an industry, a data-file entry and an
//! injection phrase are compared in one form.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Normalises free text into space-separated lower-case words.
///
/// Unicode NFKC, lower case, German umlauts and eszett spelled out (`ä` and `ae` compare equal), other
/// diacritics dropped, and everything that is not a letter or digit (punctuation, symbols, emoji) turned into
/// a word break.
pub fn normalize(text: &str) -> String {
    if text.is_ascii() {
        return normalize_ascii(text);
    }
    let mut spelled = String::with_capacity(text.len());
    for c in text.nfkc().flat_map(char::to_lowercase) {
        match c {
            'ä' => spelled.push_str("ae"),
            'ö' => spelled.push_str("oe"),
            'ü' => spelled.push_str("ue"),
            'ß' => spelled.push_str("ss"),
            _ => spelled.push(c),
        }
    }
    let mut out = String::with_capacity(spelled.len());
    let mut pending_space = false;
    for c in spelled.nfd().filter(|c| !is_combining_mark(*c)) {
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        } else {
            pending_space = true;
        }
    }
    out
}

/// [`normalize`] for ASCII text, where NFKC, case folding and accent removal reduce to lower-casing.
fn normalize_ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(char::from(b.to_ascii_lowercase()));
        } else {
            pending_space = true;
        }
    }
    out
}

/// The words of `text` after [`normalize`].
pub fn words(text: &str) -> Vec<String> {
    normalize(text).split(' ').filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

/// Values that people type into a cell to mean "nothing here".
const PLACEHOLDERS: &str = include_str!("../data/placeholders.txt");

static PLACEHOLDER_LIST: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| data_lines(PLACEHOLDERS).collect());

/// True when a cell is empty, only white space, or a placeholder such as `N/A`.
pub fn is_blank(value: &str) -> bool {
    let value = value.trim();
    value.is_empty()
        || (value.len() <= 16
            && PLACEHOLDER_LIST.iter().any(|p| p.len() == value.len() && p.eq_ignore_ascii_case(value)))
}

/// The meaningful lines of a data file: trimmed, without blank lines and `#` comments.
pub(crate) fn data_lines(file: &str) -> impl Iterator<Item = &str> {
    file.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Removes control and zero-width characters (which can hide text from a human reviewer but not from a model),
/// folds runs of white space into one space and trims.
pub fn strip_invisible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = true;
        } else if !(c.is_control() || is_invisible_format(c)) {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        }
    }
    out
}

fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{E0000}'..='\u{E007F}')
}

/// Cuts `text` to at most `max_chars` characters, on a character boundary.
pub fn truncate_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_accents_umlauts_and_punctuation() {
        let cases = [
            ("Geschäftsführer", "geschaeftsfuehrer"),
            ("GESCHÄFTSFÜHRER", "geschaeftsfuehrer"),
            ("Geschaeftsfuehrer", "geschaeftsfuehrer"),
            ("Straße", "strasse"),
            ("Directeur Général", "directeur general"),
            ("Co-Founder & CEO 🚀", "co founder ceo"),
            ("  VP,   Sales!! ", "vp sales"),
            ("ｆｕｌｌｗｉｄｔｈ", "fullwidth"),
            ("a\u{0308}", "ae"),
            ("", ""),
            ("--", ""),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "input {input:?}");
        }
    }

    #[test]
    fn words_splits_normalized_text() {
        assert_eq!(words("Head of R&D"), ["head", "of", "r", "d"]);
        assert!(words(" ... ").is_empty());
    }

    #[test]
    fn every_placeholder_is_blank_and_real_values_are_not() {
        for p in data_lines(PLACEHOLDERS) {
            assert!(is_blank(p), "{p:?}");
            assert!(is_blank(&format!("  {} ", p.to_uppercase())), "{p:?} upper-cased");
        }
        for v in ["NA", "Nadia", "No", "0", "Unknown Soldiers Inc", "n/a ltd"] {
            assert!(!is_blank(v), "{v:?}");
        }
        assert!(is_blank("   \t"));
    }

    #[test]
    fn strips_control_and_zero_width_characters() {
        assert_eq!(strip_invisible("ig\u{200B}nore\u{0007} all\n\nprevious\u{FEFF}"), "ignore all previous");
        assert_eq!(strip_invisible("\u{202E}evil\u{202C}"), "evil");
        assert_eq!(strip_invisible("  a \t b  "), "a b");
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("hi", 5), "hi");
    }
}
