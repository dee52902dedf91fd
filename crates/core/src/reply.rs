//! Parsing the model's reply: strict on content (exactly one object that fits the schema), tolerant on
//! wrapping (that object may sit inside prose or a Markdown code fence).

use serde_json::{Map, Value};

use crate::prompt::MAX_REASONING_CHARS;
use crate::score::{AiVerdict, Intent};

/// Why a reply is not a usable verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the reply is empty")]
    Empty,
    #[error("the reply holds no JSON object (a refusal?): {0:?}")]
    NoObject(String),
    #[error("the reply holds {0} JSON objects; exactly one was expected")]
    SeveralObjects(usize),
    #[error("the reply object lacks `{0}`")]
    MissingField(&'static str),
    #[error("the reply object has an unexpected field `{0}`")]
    UnknownField(String),
    #[error("`intent` must be \"High\", \"Medium\" or \"Low\", got {0}")]
    InvalidIntent(String),
    #[error("`reasoning` must be a non-empty string")]
    InvalidReasoning,
    #[error("`reasoning` is {0} characters long; at most {MAX_REASONING_CHARS} are allowed")]
    ReasoningTooLong(usize),
}

/// Parses a reply into a verdict. `intent` is matched case-insensitively (`"high"` is High); anything else
/// about the object must be exactly as the schema says.
pub fn parse_reply(text: &str) -> Result<AiVerdict, ReplyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ReplyError::Empty);
    }
    let objects = json_objects(text);
    let object = match objects.len() {
        0 => {
            return Err(ReplyError::NoObject(crate::text::truncate_chars(text, 120).to_owned()));
        }
        1 => &objects[0],
        n => return Err(ReplyError::SeveralObjects(n)),
    };
    if let Some(unknown) = object.keys().find(|k| *k != "intent" && *k != "reasoning") {
        return Err(ReplyError::UnknownField(unknown.clone()));
    }
    let intent = match object.get("intent").ok_or(ReplyError::MissingField("intent"))? {
        Value::String(s) => Intent::ALL
            .into_iter()
            .find(|i| i.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ReplyError::InvalidIntent(format!("{s:?}")))?,
        other => return Err(ReplyError::InvalidIntent(other.to_string())),
    };
    let reasoning = match object.get("reasoning").ok_or(ReplyError::MissingField("reasoning"))? {
        Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => return Err(ReplyError::InvalidReasoning),
    };
    let len = reasoning.chars().count();
    if len > MAX_REASONING_CHARS {
        return Err(ReplyError::ReasoningTooLong(len));
    }
    Ok(AiVerdict { intent, reasoning })
}

/// The JSON objects of `text`, in order: each outermost brace-balanced span that parses as an object, or, when
/// it does not (prose such as `{see below}` around an object), the spans directly inside it that do.
///
/// Linear in `text` on any input: one pass finds the spans, and each byte is parsed at most twice (as part of an
/// outermost span and of one span inside it). Deeper spans are not tried: no model wraps its answer twice.
fn json_objects(text: &str) -> Vec<Map<String, Value>> {
    let parse = |(open, close): Span| match serde_json::from_str(&text[open..close]) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    let mut found = Vec::new();
    for (outer, inner) in balanced_spans(text.as_bytes()) {
        match parse(outer) {
            Some(map) => found.push(map),
            None => found.extend(inner.into_iter().filter_map(parse)),
        }
    }
    found
}

/// A byte range `(open, end)` of the reply.
type Span = (usize, usize);

/// The outermost brace-balanced spans `(open, end)` of `s`, each with the balanced spans directly inside it,
/// found in one pass. Inside a span, JSON strings and their escapes are minded (a `}` in a string closes
/// nothing); outside, quotes are prose. A `{` never closed ends the search: no balanced span follows it.
fn balanced_spans(s: &[u8]) -> Vec<(Span, Vec<Span>)> {
    let mut spans = Vec::new();
    let (mut depth, mut outer_open, mut inner_open) = (0usize, 0usize, 0usize);
    let mut inner = Vec::new();
    let (mut in_string, mut escaped) = (false, false);
    for (i, &b) in s.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' if depth > 0 => in_string = true,
            b'{' => {
                match depth {
                    0 => outer_open = i,
                    1 => inner_open = i,
                    _ => {}
                }
                depth += 1;
            }
            b'}' if depth > 0 => {
                depth -= 1;
                match depth {
                    0 => spans.push(((outer_open, i + 1), std::mem::take(&mut inner))),
                    1 => inner.push((inner_open, i + 1)),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(intent: Intent, reasoning: &str) -> Result<AiVerdict, ReplyError> {
        Ok(AiVerdict { intent, reasoning: reasoning.into() })
    }

    #[test]
    fn accepts_a_valid_object() {
        assert_eq!(
            parse_reply(r#"{"intent": "High", "reasoning": "VP at a SaaS firm."}"#),
            ok(Intent::High, "VP at a SaaS firm.")
        );
        assert_eq!(parse_reply(r#" {"reasoning": "meh", "intent": "low"} "#), ok(Intent::Low, "meh"));
    }

    #[test]
    fn accepts_the_object_inside_prose_or_a_code_fence() {
        let fenced = "```json\n{\"intent\": \"Medium\", \"reasoning\": \"Partial fit {not json}.\"}\n```";
        assert_eq!(parse_reply(fenced), ok(Intent::Medium, "Partial fit {not json}."));
        let prose = "Sure! Here is my assessment: {\"intent\":\"High\",\"reasoning\":\"Clear fit.\"} Hope it helps {:)}";
        assert_eq!(parse_reply(prose), ok(Intent::High, "Clear fit."));
    }

    #[test]
    fn rejects_what_does_not_fit_the_schema() {
        let long = "x".repeat(MAX_REASONING_CHARS + 1);
        let cases = [
            (
                r#"{"intent": "Very High", "reasoning": "r"}"#.to_owned(),
                ReplyError::InvalidIntent("\"Very High\"".into()),
            ),
            (r#"{"intent": 3, "reasoning": "r"}"#.to_owned(), ReplyError::InvalidIntent("3".into())),
            (r#"{"reasoning": "r"}"#.to_owned(), ReplyError::MissingField("intent")),
            (r#"{"intent": "Low"}"#.to_owned(), ReplyError::MissingField("reasoning")),
            (r#"{"intent": "Low", "reasoning": "  "}"#.to_owned(), ReplyError::InvalidReasoning),
            (
                r#"{"intent": "Low", "reasoning": "r", "score": 9}"#.to_owned(),
                ReplyError::UnknownField("score".into()),
            ),
            (
                format!(r#"{{"intent": "Low", "reasoning": "{long}"}}"#),
                ReplyError::ReasoningTooLong(MAX_REASONING_CHARS + 1),
            ),
            (
                r#"{"intent": "High", "reasoning": "a"} {"intent": "Low", "reasoning": "b"}"#.to_owned(),
                ReplyError::SeveralObjects(2),
            ),
            (
                "I'm sorry, but I can't help with that.".to_owned(),
                ReplyError::NoObject("I'm sorry, but I can't help with that.".into()),
            ),
            ("High|Strong fit".to_owned(), ReplyError::NoObject("High|Strong fit".into())),
            ("   ".to_owned(), ReplyError::Empty),
            (
                r#"{"intent": "High", "reasoning": "unterminated"#.to_owned(),
                ReplyError::NoObject(r#"{"intent": "High", "reasoning": "unterminated"#.into()),
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(parse_reply(&reply), Err(want), "{reply}");
        }
    }

    #[test]
    fn braces_inside_strings_do_not_confuse_the_scanner() {
        assert_eq!(
            parse_reply(r#"{"intent": "Low", "reasoning": "says \"}\" a lot {"}"#),
            ok(Intent::Low, r#"says "}" a lot {"#)
        );
    }

    #[test]
    fn finds_an_object_inside_a_prose_brace_span() {
        let reply = r#"{Answer: {"intent": "High", "reasoning": "Fits."}}"#;
        assert_eq!(parse_reply(reply), ok(Intent::High, "Fits."));
    }

    /// A megabyte of unbalanced braces (each `{` would have been scanned to the end before: quadratic). Only
    /// the answer is asserted; the time is measured by `leadscore-bench reply`.
    #[test]
    fn unbalanced_braces_are_no_object() {
        let opens = "{".repeat(1 << 20);
        assert!(matches!(parse_reply(&opens), Err(ReplyError::NoObject(_))));
        let closes = format!("{}{}", "}".repeat(1 << 20), r#"{"intent": "Low", "reasoning": "r"}"#);
        assert_eq!(parse_reply(&closes), ok(Intent::Low, "r"));
        let nested = format!("{}{}", "{\"a\":".repeat(1 << 16), "1");
        assert!(matches!(parse_reply(&nested), Err(ReplyError::NoObject(_))));
    }
}
