//! The offer: what we sell and to whom (the ICP).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::text::truncate_chars;

/// Longest offer name, in characters (after trimming).
pub const MAX_NAME_CHARS: usize = 200;
/// Most entries in each list of an offer (`value_props`, `ideal_use_cases`). A longer list is refused while it
/// is read (see [`capped_list`]): its entries are never all held, nor checked one by one.
pub const MAX_LIST_ITEMS: usize = 50;
/// Longest list entry, in characters (after trimming).
pub const MAX_ITEM_CHARS: usize = 500;

/// An offer as a client sends it. Unknown fields are an error, so a typo such as `ideal_use_case` is caught
/// instead of silently scoring against an empty ICP. The lists are capped while they are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferInput {
    pub name: String,
    #[serde(default, deserialize_with = "value_props_list")]
    pub value_props: Vec<String>,
    #[serde(deserialize_with = "ideal_use_cases_list")]
    pub ideal_use_cases: Vec<String>,
}

/// Reads `value_props`, refusing more than [`MAX_LIST_ITEMS`] entries (for `#[serde(deserialize_with)]`).
pub fn value_props_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    capped_list(d, "value_props", MAX_LIST_ITEMS)
}

/// Reads `ideal_use_cases`, refusing more than [`MAX_LIST_ITEMS`] entries (for `#[serde(deserialize_with)]`).
pub fn ideal_use_cases_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    capped_list(d, "ideal_use_cases", MAX_LIST_ITEMS)
}

/// Reads a JSON array of at most `max` elements and stops at the first one more, so a hostile body of a
/// million tiny entries costs `max` elements of memory, not a million. The error names `field` in backticks
/// (the API reports it as the field at fault).
pub fn capped_list<'de, D, T>(d: D, field: &'static str, max: usize) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Capped<T> {
        field: &'static str,
        max: usize,
        item: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Capped<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {} entries", self.max)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
            while let Some(item) = seq.next_element()? {
                if items.len() == self.max {
                    return Err(de::Error::custom(format_args!(
                        "`{}` must have at most {} entries",
                        self.field, self.max
                    )));
                }
                items.push(item);
            }
            Ok(items)
        }
    }
    d.deserialize_seq(Capped { field, max, item: PhantomData })
}

/// A validated offer: a non-empty name and at least one ideal use case, every entry trimmed and non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub name: String,
    pub value_props: Vec<String>,
    pub ideal_use_cases: Vec<String>,
}

/// One thing wrong with an input, named by the field (`ideal_use_cases[2]`) it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Everything wrong with an offer, all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid offer: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct OfferError(pub Vec<FieldError>);

impl Offer {
    /// Parses offer JSON (the body of `POST /v1/offers`, or an `offer.json` file).
    pub fn from_json(json: &str) -> Result<Offer, OfferError> {
        let input: OfferInput = serde_json::from_str(json).map_err(|e| {
            let field = if e.is_syntax() || e.is_eof() { "(body)" } else { "(offer)" };
            OfferError(vec![FieldError::new(field, e.to_string())])
        })?;
        Offer::parse(input)
    }

    pub fn parse(input: OfferInput) -> Result<Offer, OfferError> {
        let mut errors = Vec::new();
        let name = input.name.trim().to_owned();
        if name.is_empty() {
            errors.push(FieldError::new("name", "must not be empty"));
        } else if name.chars().count() > MAX_NAME_CHARS {
            errors.push(FieldError::new("name", format!("must be at most {MAX_NAME_CHARS} characters")));
        }
        let value_props = clean_list("value_props", input.value_props, &mut errors);
        let ideal_use_cases = clean_list("ideal_use_cases", input.ideal_use_cases, &mut errors);
        if ideal_use_cases.is_empty() && !errors.iter().any(|e| e.field.starts_with("ideal_use_cases")) {
            errors.push(FieldError::new(
                "ideal_use_cases",
                "must list at least one ideal use case (e.g. \"B2B SaaS\"): industry matching needs it",
            ));
        }
        if errors.is_empty() {
            Ok(Offer { name, value_props, ideal_use_cases })
        } else {
            Err(OfferError(errors))
        }
    }
}

/// The trimmed entries of a list. A list over [`MAX_LIST_ITEMS`] is one error, not one per entry: the errors of
/// an offer stay few (at most `1 + 2 * MAX_LIST_ITEMS`) whatever was sent.
fn clean_list(field: &str, items: Vec<String>, errors: &mut Vec<FieldError>) -> Vec<String> {
    if items.len() > MAX_LIST_ITEMS {
        errors.push(FieldError::new(field, format!("must have at most {MAX_LIST_ITEMS} entries")));
        return Vec::new();
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let item = item.trim();
        if item.is_empty() {
            errors.push(FieldError::new(format!("{field}[{i}]"), "must not be empty"));
        } else if truncate_chars(item, MAX_ITEM_CHARS).len() < item.len() {
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                format!("must be at most {MAX_ITEM_CHARS} characters"),
            ));
        } else {
            out.push(item.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_original_example_offer() {
        let offer = Offer::from_json(
            r#"{"name": " AI Outreach Automation ", "value_props": ["24/7 automated outreach"],
                "ideal_use_cases": ["B2B SaaS", "Sales teams"]}"#,
        )
        .expect("valid");
        assert_eq!(offer.name, "AI Outreach Automation");
        assert_eq!(offer.ideal_use_cases, ["B2B SaaS", "Sales teams"]);
    }

    #[test]
    fn reports_every_field_at_fault() {
        let err = Offer::from_json(r#"{"name": " ", "value_props": ["ok", ""], "ideal_use_cases": []}"#)
            .expect_err("invalid");
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "value_props[1]", "ideal_use_cases"]);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_json() {
        let err = Offer::from_json(r#"{"name": "x", "ideal_use_case": ["SaaS"]}"#).expect_err("typo");
        assert!(err.to_string().contains("unknown field `ideal_use_case`"), "{err}");
        let err = Offer::from_json("{").expect_err("syntax");
        assert_eq!(err.0[0].field, "(body)");
    }

    #[test]
    fn caps_sizes() {
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        let err = Offer::from_json(&format!(r#"{{"name": "{long}", "ideal_use_cases": ["a"]}}"#))
            .expect_err("long");
        assert_eq!(err.0[0].field, "name");
    }

    #[test]
    fn a_long_list_is_refused_while_read_and_once() {
        let empties = vec!["\"\""; 200_000].join(",");
        let err = Offer::from_json(&format!(r#"{{"name": "x", "ideal_use_cases": [{empties}]}}"#))
            .expect_err("too many");
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].message.contains("`ideal_use_cases` must have at most 50 entries"), "{err}");
        // Built by hand (no reading cap): still one error for the list, none per entry.
        let input = OfferInput {
            name: "x".into(),
            value_props: vec![String::new(); 200_000],
            ideal_use_cases: vec!["SaaS".into()],
        };
        let err = Offer::parse(input).expect_err("too many");
        assert_eq!(err.0, [FieldError::new("value_props", "must have at most 50 entries")]);
        let fifty = vec!["\"a\""; MAX_LIST_ITEMS].join(",");
        Offer::from_json(&format!(r#"{{"name": "x", "ideal_use_cases": [{fifty}]}}"#)).expect("50 is fine");
    }
}
