//! The offer: what we sell and to whom (the ICP).

use serde::{Deserialize, Serialize};

use crate::text::truncate_chars;

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_LIST_ITEMS: usize = 50;
pub const MAX_ITEM_CHARS: usize = 500;

/// An offer as a client sends it. Unknown fields are an error, so a typo such as `ideal_use_case` is caught
/// instead of silently scoring against an empty ICP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferInput {
    pub name: String,
    #[serde(default)]
    pub value_props: Vec<String>,
    pub ideal_use_cases: Vec<String>,
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

fn clean_list(field: &str, items: Vec<String>, errors: &mut Vec<FieldError>) -> Vec<String> {
    if items.len() > MAX_LIST_ITEMS {
        errors.push(FieldError::new(field, format!("must have at most {MAX_LIST_ITEMS} entries")));
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
}
