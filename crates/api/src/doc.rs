//! The OpenAPI document's shared parts: the API-key scheme, and the error responses an operation can give
//! because of what it uses (the key, a body, query or path parameters) or because of the layers in front of
//! every route. They are declared once in [`COMMON`] and added to each operation the rule of a row selects,
//! so a `#[utoipa::path]` lists only the statuses of its own logic (which also win over the common ones).
//!
//! An operation that needs no key says so with `security(())` in its annotation; it becomes `security: []`.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder, Type,
};

/// What an operation uses, as far as the common responses care.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Needs an API key (no `security(())` in its annotation).
    pub secured: bool,
    /// A route of the original service (`/api/...`): its errors are `{"error": "..."}`.
    pub compat: bool,
    /// Takes a body; `json_body` when that body is JSON.
    pub body: bool,
    pub json_body: bool,
    pub query: bool,
    pub path: bool,
}

/// Who writes a common response, which decides its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The route's extractors: problem+json on `/v1`, the original's `{"error": ...}` on compat routes.
    Route,
    /// A layer in front of every route: always problem+json.
    Layer,
    /// Both: on compat routes either body can come.
    Both,
}

/// A status some operations can answer, declared once.
pub struct Common {
    pub status: &'static str,
    /// Its name under `components/responses` (compat routes get `Compat` + name).
    pub name: &'static str,
    pub description: &'static str,
    pub source: Source,
    /// The answer carries `Retry-After` (seconds).
    pub retry_after: bool,
    /// Which operations can answer it.
    pub applies: fn(&Shape) -> bool,
}

/// Every status an operation can give because of what it uses or the layers in front of it. A helper that
/// adds a status answered by an extractor or a layer adds a row here, not a tuple to every annotation.
pub const COMMON: &[Common] = &[
    Common {
        status: "400",
        name: "Malformed",
        description: "The body cannot be read (malformed JSON or multipart framing, an interrupted upload) or a \
            query parameter cannot be parsed",
        source: Source::Route,
        retry_after: false,
        applies: |s| s.body || s.query,
    },
    Common {
        status: "401",
        name: "Unauthorized",
        description: "Missing, malformed or unknown API key (`Authorization: Bearer <API key>`)",
        source: Source::Route,
        retry_after: false,
        applies: |s| s.secured,
    },
    Common {
        status: "403",
        name: "Forbidden",
        description: "Refused by the browser guard: a `Host` that is not a name of this server, or a request \
            that changes something sent from another site (`Origin`, `Sec-Fetch-Site`)",
        source: Source::Layer,
        retry_after: false,
        applies: |_| true,
    },
    Common {
        status: "404",
        name: "NotFound",
        description: "An id in the path names nothing in this workspace",
        source: Source::Route,
        retry_after: false,
        applies: |s| s.path,
    },
    Common {
        status: "408",
        name: "RequestTimeout",
        description: "The request was not received in time (headers or body too slow)",
        source: Source::Layer,
        retry_after: false,
        applies: |_| true,
    },
    Common {
        status: "413",
        name: "TooLarge",
        description: "The body is over its size limit; nothing was stored",
        source: Source::Route,
        retry_after: false,
        applies: |s| s.body,
    },
    Common {
        status: "415",
        name: "UnsupportedMediaType",
        description: "The body's `Content-Type` is not one this operation reads",
        source: Source::Route,
        retry_after: false,
        applies: |s| s.body,
    },
    Common {
        status: "422",
        name: "Invalid",
        description: "A query parameter or body field is invalid; `errors` names each one at fault",
        source: Source::Route,
        retry_after: false,
        // The original's validation errors are 400s.
        applies: |s| !s.compat && (s.query || s.json_body),
    },
    Common {
        status: "429",
        name: "TooManyRequests",
        description: "A limit of the API key was reached: requests per second, uploads in progress, or the \
            workspace's unfinished runs; `Retry-After` says when to try again",
        source: Source::Route,
        retry_after: true,
        applies: |s| s.secured,
    },
    Common {
        status: "503",
        name: "Unavailable",
        description: "Unavailable for now: the database cannot be reached, the request ran past its deadline, or \
            the server is at its connection limit; retry after `Retry-After` seconds",
        // The database errors follow the route's shape; the deadline and the connection limit are layers.
        source: Source::Both,
        retry_after: true,
        applies: |_| true,
    },
];

/// Everything [`CommonResponses`] adds, applied to the finished document (the routes are merged into it after
/// the `#[openapi]` modifiers run).
pub fn finish(doc: &mut OpenApi) {
    use utoipa::Modify;
    register_named(doc);
    BearerAuth.modify(doc);
    CommonResponses.modify(doc);
}

/// The `api_key` bearer scheme, required by every operation that does not opt out.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("API key").build(),
            ),
        );
        openapi.security = Some(vec![SecurityRequirement::new("api_key", Vec::<String>::new())]);
    }
}

/// Adds the [`COMMON`] responses to every operation they apply to, as references to `components/responses`.
pub struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        let mut used = std::collections::BTreeMap::new();
        for item in openapi.paths.paths.values_mut() {
            for op in operations(item) {
                let shape = shape(op);
                if shape.compat {
                    // Operation ids are handler names, and the compat handlers reuse the /v1 ones.
                    op.operation_id = op.operation_id.take().map(|id| format!("compat_{id}"));
                }
                for common in COMMON.iter().filter(|c| (c.applies)(&shape)) {
                    let compat = shape.compat && common.source != Source::Layer;
                    let problem = !shape.compat || common.source != Source::Route;
                    let name = match (compat, problem) {
                        (true, true) => format!("CompatOrProblem{}", common.name),
                        (true, false) => format!("Compat{}", common.name),
                        _ => common.name.to_owned(),
                    };
                    op.responses
                        .responses
                        .entry(common.status.to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(&name)));
                    used.insert(name, (common.description, compat, problem, common.retry_after));
                }
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, (description, compat, problem, retry_after)) in used {
            components.responses.insert(name, RefOr::T(response(description, compat, problem, retry_after)));
        }
    }
}

/// The operations of a path item.
fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    let ops = [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ];
    ops.into_iter().filter_map(Option::as_mut)
}

/// What `op` uses. `security(())` in an annotation (`[{}]`) is made `security: []`: no key at all.
fn shape(op: &mut Operation) -> Shape {
    let public = op.security.as_ref().is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
    if public {
        op.security = Some(Vec::new());
    }
    let params = op.parameters.iter().flatten().filter_map(|p| match p {
        RefOr::T(p) => Some(&p.parameter_in),
        RefOr::Ref(_) => None,
    });
    let (mut query, mut path) = (false, false);
    for p in params {
        query |= matches!(p, ParameterIn::Query);
        path |= matches!(p, ParameterIn::Path);
    }
    let body = match &op.request_body {
        Some(RefOr::T(b)) => Some(b),
        _ => None,
    };
    Shape {
        secured: !public,
        compat: op.tags.iter().flatten().any(|t| t == "compat"),
        body: op.request_body.is_some(),
        json_body: body.is_some_and(|b| b.content.keys().any(|c| c == "application/json")),
        query,
        path,
    }
}

/// A common response: problem+json, the original's `{"error": ...}` on compat routes, or either.
fn response(description: &str, compat: bool, problem: bool, retry_after: bool) -> Response {
    let body = |schema: &str| ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build();
    let mut builder = ResponseBuilder::new().description(description);
    if compat {
        builder = builder.content("application/json", body("CompatErrorBody"));
    }
    if problem {
        builder = builder.content(crate::problem::PROBLEM_JSON, body("Problem"));
    }
    if retry_after {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0));
        builder = builder.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(seconds))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    builder.build()
}

/// A pattern matching a string with a character that is not whitespace as Rust's `char::is_whitespace` (what
/// `trim` removes) sees it; `\S` would differ (Python's counts U+001C..U+001F as whitespace, Rust does not).
pub const NOT_BLANK: &str =
    r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// A string schema allowing only `names`: the words a handler parses, taken from the core's own lists so the
/// document cannot drift from them.
fn one_of_names(names: impl IntoIterator<Item = &'static str>) -> RefOr<utoipa::openapi::Schema> {
    let names: Vec<&str> = names.into_iter().collect();
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names)).into()
}

/// Declares a schema type `$name`, named `$title` in `components/schemas` (generated clients make it one enum
/// type), whose values are the `as_str()` names of `$core::ALL`.
macro_rules! names_schema {
    ($(#[$doc:meta])* $name:ident = $title:literal, $core:ty) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<utoipa::openapi::Schema> {
                one_of_names(<$core>::ALL.iter().map(|v| v.as_str()))
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                $title.into()
            }
        }
    };
}

names_schema!(
    /// An intent: High, Medium or Low.
    IntentName = "Intent",
    leadscore_core::Intent
);
names_schema!(
    /// How a result was scored: hybrid or rules_only.
    ScoreBasisName = "ScoreBasis",
    leadscore_core::ScoreBasis
);
names_schema!(
    /// A job's status.
    JobStatusName = "JobStatus",
    leadscore_core::JobStatus
);
names_schema!(
    /// A run's status.
    RunStatusName = "RunStatus",
    leadscore_core::RunStatus
);
names_schema!(
    /// What the AI layer did for a lead.
    AiStatusName = "AiStatus",
    leadscore_core::AiStatus
);
names_schema!(
    /// The rule that awarded points.
    ReasonCodeName = "ReasonCode",
    leadscore_core::rules::ReasonCode
);

/// One rule that awarded points (`leadscore_core::rules::RuleReason`, which the pure core keeps free of
/// documentation types).
pub struct RuleReasonDoc;

impl utoipa::PartialSchema for RuleReasonDoc {
    fn schema() -> RefOr<utoipa::openapi::Schema> {
        let text = |d: &str| ObjectBuilder::new().schema_type(Type::String).description(Some(d));
        ObjectBuilder::new()
            .property("code", Ref::from_schema_name("ReasonCode"))
            .property(
                "points",
                ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).maximum(Some(50)),
            )
            .property("text", text("The reason as the original service worded it, points included"))
            .property("detail", text("What matched, e.g. `role \"vice president\"`"))
            .required("code")
            .required("points")
            .required("text")
            .required("detail")
            .into()
    }
}

impl utoipa::ToSchema for RuleReasonDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        "RuleReason".into()
    }
}

/// The named schemas that parameters and fields refer to by name (`$ref`), registered once.
pub fn register_named(doc: &mut OpenApi) {
    use utoipa::{PartialSchema, ToSchema};
    let components = doc.components.get_or_insert_with(Default::default);
    for (name, schema) in [
        (IntentName::name(), IntentName::schema()),
        (ScoreBasisName::name(), ScoreBasisName::schema()),
        (JobStatusName::name(), JobStatusName::schema()),
        (RunStatusName::name(), RunStatusName::schema()),
        (AiStatusName::name(), AiStatusName::schema()),
        (ReasonCodeName::name(), ReasonCodeName::schema()),
        (RuleReasonDoc::name(), RuleReasonDoc::schema()),
    ] {
        components.schemas.insert(name.into_owned(), schema);
    }
}
