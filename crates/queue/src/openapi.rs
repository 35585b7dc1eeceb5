//! The API's OpenAPI 3.1 document, served at `/openapi.json`.
//!
//! Made, never written by hand: the paths from the handlers' annotations
//! in [`crate::api`] (the same list builds the router, so every route
//! served is in it), the schemas from the types the handlers read and
//! write (`#[derive(ToSchema)]`). What those derives cannot say is added
//! here from the same constants the checks use: the shape of a name
//! ([`check_name`](crate::model::check_name)) and of a duration, and the
//! bodies that take one field out of several.

use utoipa::openapi::schema::{
    AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::model::MAX_NAME;

/// The document's frame: title, the bearer token, and where it is
/// required (everywhere but `/healthz` and `/openapi.json`, which say
/// so themselves).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "backstop fan-out coordinator",
        description = "The operators' API of `backstop serve`: submit operations that are \
                       delivered to every node that should get them, follow and cancel them, \
                       requeue dead letters, drain and remove nodes. Every route but \
                       `/healthz` and `/openapi.json` needs `Authorization: Bearer TOKEN`. \
                       A refusal is `{\"error\": \"one sentence\"}`: 400 for a request of \
                       the wrong shape, 422 for values the coordinator cannot act on."
    ),
    modifiers(&BearerToken),
    security(("token" = [])),
)]
pub struct ApiDoc;

struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "token",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("the coordinator's BACKSTOP_TOKEN"))
                        .build(),
                ),
            );
    }
}

/// The whole document, as `/openapi.json` serves it.
pub fn openapi() -> OpenApi {
    let mut doc = crate::api::routes(None).into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if let Some(components) = doc.components.as_mut() {
        let schemas = &mut components.schemas;
        let null = || ObjectBuilder::new().schema_type(Type::Null).into();
        // `POST /v1/ops` targets a type or names nodes; `present_only`
        // goes with a type.
        one_of(
            schemas.get_mut("SubmitRequest"),
            &[
                Exclusive {
                    field: "type",
                    given: Name::schema(),
                    absent: null(),
                    with: None,
                },
                Exclusive {
                    field: "nodes",
                    given: ArrayBuilder::new().items(Name::schema()).into(),
                    absent: null(),
                    with: Some(("present_only", boolean(false))),
                },
            ],
        );
        // `POST /v1/requeue` says exactly one of what to requeue.
        let integer = || ObjectBuilder::new().schema_type(Type::Integer).into();
        one_of(
            schemas.get_mut("RequeueRequest"),
            &[
                Exclusive {
                    field: "delivery",
                    given: integer(),
                    absent: null(),
                    with: None,
                },
                Exclusive {
                    field: "node",
                    given: ObjectBuilder::new().schema_type(Type::String).into(),
                    absent: null(),
                    with: None,
                },
                Exclusive {
                    field: "op",
                    given: integer(),
                    absent: null(),
                    with: None,
                },
                Exclusive {
                    field: "all",
                    given: boolean(true),
                    absent: boolean(false),
                    with: None,
                },
            ],
        );
    }
    doc
}

/// [`openapi`] as JSON, with its summaries and descriptions (the doc
/// comments of the handlers and types)
/// read as a client's reader sees them: `` [`Op`] `` as `` `Op` ``, and no
/// Rust examples.
pub fn openapi_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(openapi()).unwrap_or_default();
    plain_descriptions(&mut doc);
    doc
}

fn plain_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(text) if key == "description" || key == "summary" => {
                        *text = plain(text);
                    }
                    _ => plain_descriptions(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(plain_descriptions),
        _ => {}
    }
}

/// A doc comment without rustdoc's links and code blocks.
fn plain(doc: &str) -> String {
    let mut prose = String::new();
    let mut in_code = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    let mut out = String::with_capacity(prose.len());
    let mut rest = prose.trim_end();
    while let Some(start) = rest.find("[`") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find("`]") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        out.push_str(&after[..end + 1]);
        rest = &after[end + 2..];
        // An explicit target, `[`x`](path)`, goes too.
        if rest.starts_with('(')
            && let Some(close) = rest.find(')')
        {
            rest = &rest[close + 1..];
        }
    }
    out.push_str(rest);
    out
}

fn boolean(only: bool) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([only]))
        .into()
}

/// One of the fields of which a body takes exactly one.
struct Exclusive {
    field: &'static str,
    /// What it is when given.
    given: RefOr<Schema>,
    /// What it is when not given, if it is there (serde reads `null` as
    /// absent).
    absent: RefOr<Schema>,
    /// Another field this choice asks of.
    with: Option<(&'static str, RefOr<Schema>)>,
}

/// Makes `schema` take exactly one of `fields`: a branch for each, in
/// which it is given and the others are absent.
fn one_of(schema: Option<&mut RefOr<Schema>>, fields: &[Exclusive]) {
    let Some(schema) = schema else {
        return;
    };
    let mut branches = OneOfBuilder::new();
    for chosen in fields {
        let mut branch = ObjectBuilder::new()
            .required(chosen.field)
            .property(chosen.field, chosen.given.clone());
        for other in fields.iter().filter(|f| f.field != chosen.field) {
            branch = branch.property(other.field, other.absent.clone());
        }
        if let Some((field, value)) = &chosen.with {
            branch = branch.property(*field, value.clone());
        }
        branches = branches.item(branch);
    }
    let whole = AllOfBuilder::new()
        .item(schema.clone())
        .item(branches)
        .build();
    *schema = RefOr::T(Schema::AllOf(whole));
}

/// A node name, node type or kind: 1 to [`MAX_NAME`] letters, digits,
/// `_` or `-` ([`check_name`](crate::model::check_name)).
pub struct Name;

impl PartialSchema for Name {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_NAME))
            .pattern(Some("^[A-Za-z0-9_-]+$"))
            .into()
    }
}

impl ToSchema for Name {}

/// The units a [`Duration`] may use, longest first (as `humantime` reads
/// them).
const UNITS: &str = "nsec|ns|usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|\
                     hour|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y";

/// A duration as `humantime` writes it: `"90s"`, `"30m"`, `"1h 30m"`.
/// The schema keeps each number to ten digits and to nine parts (years
/// down to nanoseconds), so that every duration it allows can be read (its bounds are checked after:
/// 422).
pub struct Duration;

impl PartialSchema for Duration {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^([0-9]{{1,10}} ?({UNITS}) ?){{1,9}}$")))
            .examples(["30s", "15m", "1h 30m"])
            .into()
    }
}

impl ToSchema for Duration {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_read_without_rustdoc_links_or_examples() {
        for (doc, want) in [
            (
                "The attempt's number ([`Token::attempt`]).",
                "The attempt's number (`Token::attempt`).",
            ),
            (
                "See [`IDEMPOTENCY_WINDOW`](crate::model::IDEMPOTENCY_WINDOW) for it.",
                "See `IDEMPOTENCY_WINDOW` for it.",
            ),
            (
                "What it printed.\n\n```\nlet x = 1;\n```\n",
                "What it printed.",
            ),
            (
                "[default: 100] and [`a` unclosed",
                "[default: 100] and [`a` unclosed",
            ),
        ] {
            assert_eq!(plain(doc), want, "{doc:?}");
        }
        let served = openapi_json().to_string();
        let left: Vec<&str> = served
            .match_indices("[`")
            .map(|(i, _)| {
                served
                    .get(i.saturating_sub(80)..i + 40)
                    .unwrap_or(&served[i..])
            })
            .collect();
        assert!(left.is_empty(), "a rustdoc link is left: {left:?}");
        assert!(!served.contains("```"), "a code block is left");
    }
}
