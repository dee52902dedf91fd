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

/// What client generators need (docs/clients.md; `scripts/clients` generates and runs two clients): the upload
/// is a binary `file` in a multipart object, or a `text/csv` body; both upload routes say so.
#[test]
fn the_upload_body_is_a_binary_file_in_both_forms() {
    let doc = doc();
    let schema = |r: &Value| -> Value {
        let name =
            r["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")).expect("a schema ref");
        doc["components"]["schemas"][name].clone()
    };
    for path in ["/v1/leads/upload", "/api/leads/upload/"] {
        let body = &doc["paths"][path]["post"]["requestBody"];
        assert_eq!(body["required"], true, "{path}");
        let form = schema(&body["content"]["multipart/form-data"]["schema"]);
        assert_eq!(form["type"], "object", "{path}: {form}");
        assert_eq!(form["required"], serde_json::json!(["file"]), "{path}");
        let csv = schema(&body["content"]["text/csv"]["schema"]);
        for file in [&form["properties"]["file"], &csv] {
            let file = if file.get("$ref").is_some() { schema(file) } else { file.clone() };
            assert_eq!(
                (file["type"].as_str(), file["format"].as_str()),
                (Some("string"), Some("binary")),
                "{path}"
            );
        }
    }
}

/// Operation ids become method names: readable, and the ones docs/clients.md uses exist.
#[test]
fn operation_ids_read_as_method_names() {
    let doc = doc();
    let ids: BTreeSet<String> =
        operations(&doc).iter().map(|(_, op)| op["operationId"].as_str().expect("id").to_owned()).collect();
    for id in &ids {
        assert!(id.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{id} is not snake_case");
    }
    for id in [
        "create_offer",
        "upload_leads",
        "score_leads",
        "get_run",
        "list_run_results",
        "export_run_results",
        "list_current_results",
        "list_run_jobs",
        "stream_run_events",
        "cancel_run",
        "list_upload_errors",
    ] {
        assert!(ids.contains(id), "no operation {id}: {ids:?}");
    }
}

/// Each enum is one named schema, referenced where it is used: generators then make one type of it (inline
/// copies became `ListResultsIntent`, `ExportResultsIntent`, ... one per use).
#[test]
fn enums_are_named_once_and_referenced() {
    let doc = doc();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in ["Intent", "ScoreBasis", "AiStatus", "RunStatus", "JobStatus", "ReasonCode"] {
        assert!(schemas[name]["enum"].is_array(), "{name} is not a named enum");
    }
    // Outside the named enums themselves, no schema lists names of its own.
    let mut inline = Vec::new();
    find_enums(&doc["paths"], "paths", &mut inline);
    for (name, schema) in schemas {
        if schema.get("enum").is_none() {
            find_enums(schema, name, &mut inline);
        }
    }
    assert!(inline.is_empty(), "inline enums: {inline:?}");
    let result = &schemas["ResultResponse"]["properties"];
    assert_eq!(result["intent"]["$ref"], "#/components/schemas/Intent");
    assert_eq!(result["rule_reasons"]["items"]["$ref"], "#/components/schemas/RuleReason");
}

fn find_enums(value: &Value, at: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            // A string enum (`all_unscored`'s `enum: [true]` is a constant, not a set of names).
            if map.get("enum").and_then(Value::as_array).is_some_and(|v| v.iter().any(Value::is_string)) {
                found.push(at.to_owned());
            }
            for (k, v) in map {
                find_enums(v, &format!("{at}/{k}"), found);
            }
        }
        Value::Array(items) => {
            items.iter().enumerate().for_each(|(i, v)| find_enums(v, &format!("{at}/{i}"), found))
        }
        _ => {}
    }
}
