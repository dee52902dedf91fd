//! Cheap guards on the OpenAPI document that fail before the fuzzer does (`scripts/contract` runs
//! openapi-spec-validator and schemathesis against a real server): descriptions, auth, error shapes, ids.

use std::collections::BTreeSet;

use serde_json::Value;

fn doc() -> Value {
    serde_json::to_value(leadscore_api::openapi()).expect("the document serializes")
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/// Every operation as (`METHOD path`, operation).
fn operations(doc: &Value) -> Vec<(String, &Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut ops = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push((format!("{} {path}", method.to_uppercase()), op));
            }
        }
    }
    assert!(ops.len() > 30, "the document lists {} operations", ops.len());
    ops
}

/// A response, following a `$ref` into `components/responses`.
fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
    match response.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/responses/").expect("a response reference");
            doc["components"]["responses"].get(name).unwrap_or_else(|| panic!("{r} is not in components"))
        }
        None => response,
    }
}

fn is_public(op: &Value) -> bool {
    op.get("security").and_then(Value::as_array).is_some_and(Vec::is_empty)
}

#[test]
fn every_response_has_a_description() {
    let doc = doc();
    for (label, op) in operations(&doc) {
        let responses = op["responses"].as_object().expect("responses");
        assert!(responses.keys().any(|s| s.starts_with('2')), "{label} declares no success");
        for (status, response) in responses {
            let description = resolve(&doc, response)["description"].as_str().unwrap_or("");
            assert!(!description.trim().is_empty(), "{label} {status} has no description");
        }
    }
}

#[test]
fn only_the_probes_need_no_key_and_every_other_operation_declares_401_and_429() {
    let doc = doc();
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object(), "the bearer scheme is declared");
    let mut public = BTreeSet::new();
    for (label, op) in operations(&doc) {
        if is_public(op) {
            public.insert(label);
            continue;
        }
        assert!(op.get("security").is_none(), "{label}: a secured operation uses the document's security");
        for status in ["401", "429", "503"] {
            assert!(op["responses"].get(status).is_some(), "{label} does not declare {status}");
        }
    }
    assert_eq!(public, BTreeSet::from(["GET /healthz".to_owned(), "GET /readyz".to_owned()]));
}

#[test]
fn errors_are_problem_json_on_v1_and_the_original_shape_on_compat_routes() {
    let doc = doc();
    for (label, op) in operations(&doc) {
        let compat = label.contains(" /api/");
        for (status, response) in op["responses"].as_object().expect("responses") {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            let content = resolve(&doc, response)["content"].as_object().expect("an error has a body");
            let problem = content.get("application/problem+json").map(|c| &c["schema"]["$ref"]);
            let original = content.get("application/json").map(|c| &c["schema"]["$ref"]);
            let ok = problem == Some(&Value::from("#/components/schemas/Problem"))
                || (compat && original == Some(&Value::from("#/components/schemas/CompatErrorBody")));
            assert!(ok, "{label} {status}: {}", Value::Object(content.clone()));
        }
    }
}

#[test]
fn operation_ids_are_unique_and_routes_with_inputs_declare_their_errors() {
    let doc = doc();
    let mut ids = BTreeSet::new();
    for (label, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{label} has no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        let params = op.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
        let has = |place: &str| params.iter().any(|p| p["in"] == place);
        let declares = |status: &str| op["responses"].get(status).is_some();
        if has("path") {
            assert!(declares("404"), "{label} takes an id but does not declare 404");
        }
        if has("query") {
            assert!(declares("400"), "{label} takes query parameters but does not declare 400");
        }
        if op.get("requestBody").is_some() {
            for status in ["400", "413", "415"] {
                assert!(declares(status), "{label} takes a body but does not declare {status}");
            }
        }
    }
}

/// utoipa wraps an inline schema whose field has a doc comment in `allOf: [schema, {type: object, description}]`,
/// which no string satisfies: the document would reject the server's own answers.
#[test]
fn no_value_is_wrapped_in_an_impossible_all_of() {
    fn walk(path: &str, v: &Value) {
        match v {
            Value::Object(map) => {
                if let Some(parts) = map.get("allOf").and_then(Value::as_array) {
                    let types: Vec<&Value> = parts.iter().filter_map(|p| p.get("type")).collect();
                    let object = types.iter().any(|t| **t == "object");
                    let other = types.iter().any(|t| **t != "object");
                    assert!(!(object && other), "{path}: allOf mixes an object with another type: {v}");
                }
                for (k, child) in map {
                    walk(&format!("{path}/{k}"), child);
                }
            }
            Value::Array(items) => {
                items.iter().enumerate().for_each(|(i, c)| walk(&format!("{path}/{i}"), c))
            }
            _ => {}
        }
    }
    walk("#", &doc());
}
