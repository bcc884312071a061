//! The OpenAPI 3.1 description of the admin API (`GET /api/v1/openapi.json`).
//!
//! The schemas come from the wire types of [`super::api`] (schemars derives:
//! request bodies as the server reads them, answers as it writes them);
//! [`OPERATIONS`] adds what a reader needs (a summary, the query, the
//! answer's type, whether it needs no token). A test in `routes.rs` checks
//! that it lists exactly the routes of the route table, with the same access,
//! so a new endpoint without a description fails the tests.

use std::sync::OnceLock;

use http::Method;
use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::api::{
    ApiError, FleetAnswer, HistoryPage, MirrorView, PromoteBody, ReloadAnswer, RollbackBody,
    RouteAnswer, RoutesAnswer, StatsView, WeightsBody,
};

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// What an operation answers with on success.
pub(super) enum Answer {
    /// 200 with this JSON type.
    Json(SchemaFn),
    /// Plain text (probes, metrics); `also_503` for `/readyz`.
    Text { also_503: bool },
}

/// A query parameter: its name, JSON Schema type, and what it does.
pub(super) struct Query {
    name: &'static str,
    schema: fn() -> Value,
    description: &'static str,
}

/// One operation of the admin API, keyed like the route table by method and
/// pattern.
pub(super) struct Operation {
    pub method: Method,
    pub pattern: &'static str,
    /// Answered without a token (the probes).
    pub open: bool,
    summary: &'static str,
    /// The JSON body it reads, and whether one is required.
    request: Option<(SchemaFn, bool)>,
    answer: Answer,
    query: &'static [Query],
}

impl Operation {
    const fn reading(mut self, body: SchemaFn, required: bool) -> Operation {
        self.request = Some((body, required));
        self
    }

    const fn with_query(mut self, query: &'static [Query]) -> Operation {
        self.query = query;
        self
    }

    const fn answering(mut self, answer: Answer) -> Operation {
        self.answer = answer;
        self
    }

    const fn without_token(mut self) -> Operation {
        self.open = true;
        self
    }
}

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

const fn get(pattern: &'static str, summary: &'static str, answer: Answer) -> Operation {
    Operation {
        method: Method::GET,
        pattern,
        open: false,
        summary,
        request: None,
        answer,
        query: &[],
    }
}

const fn post(pattern: &'static str, summary: &'static str) -> Operation {
    Operation {
        method: Method::POST,
        pattern,
        open: false,
        summary,
        request: None,
        answer: Answer::Json(schema_of::<RouteAnswer>),
        query: &[],
    }
}

const fn delete(pattern: &'static str, summary: &'static str) -> Operation {
    Operation {
        method: Method::DELETE,
        pattern,
        open: false,
        summary,
        request: None,
        answer: Answer::Json(schema_of::<RouteAnswer>),
        query: &[],
    }
}

const fn put(pattern: &'static str, summary: &'static str, body: SchemaFn) -> Operation {
    Operation {
        method: Method::PUT,
        pattern,
        open: false,
        summary,
        request: Some((body, true)),
        answer: Answer::Json(schema_of::<RouteAnswer>),
        query: &[],
    }
}

fn integer_from_1() -> Value {
    json!({ "type": "integer", "minimum": 1, "maximum": 1000 })
}

fn integer_from_0() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn string() -> Value {
    json!({ "type": "string" })
}

const ZONE_QUERY: &[Query] = &[Query {
    name: "zone",
    schema: string,
    description: "In a fleet: drop this zone's weights (its instances go back to the fleet-wide ones).",
}];

const HISTORY_QUERY: &[Query] = &[
    Query {
        name: "limit",
        schema: integer_from_1,
        description: "Revisions per page (default 50, at most 1000).",
    },
    Query {
        name: "before",
        schema: integer_from_0,
        description: "Only revisions older than this one: the previous page's `next_before`.",
    },
    Query {
        name: "route",
        schema: string,
        description: "Only the revisions of this route.",
    },
];

/// Every documented operation; the dashboard's files are left out.
#[rustfmt::skip]
pub(super) static OPERATIONS: [Operation; 19] = [
    get("healthz", "Liveness: 200 while the process runs", Answer::Text { also_503: false }).without_token(),
    get("readyz", "Readiness: 503 while draining for shutdown", Answer::Text { also_503: true }).without_token(),
    get("metrics", "Prometheus metrics (text format)", Answer::Text { also_503: false }),
    get("api/v1/openapi.json", "This description of the admin API", Answer::Json(openapi_schema)),
    get("api/v1/routes", "All routes: backends, desired and effective weights, endpoint health, canary", Answer::Json(schema_of::<RoutesAnswer>)),
    get("api/v1/routes/{route}", "One route, same shape", Answer::Json(schema_of::<RouteAnswer>)),
    put("api/v1/routes/{route}/weights", "Set the route's weights (they sum to 100); in a fleet, for every instance or one zone", schema_of::<WeightsBody>),
    delete("api/v1/routes/{route}/weights", "Back to the file's weights (a new revision); with `zone`, drop that zone's weights")
        .with_query(ZONE_QUERY),
    post("api/v1/routes/{route}/promote", "Send 100 % of the route to one backend")
        .reading(schema_of::<PromoteBody>, true),
    post("api/v1/routes/{route}/rollback", "Restore the weights from before the route's latest change, or of `to_revision`")
        .reading(schema_of::<RollbackBody>, false),
    post("api/v1/routes/{route}/backends/{backend}/endpoints/{endpoint}/drain", "Stop new requests to one endpoint; in-flight ones finish"),
    post("api/v1/routes/{route}/backends/{backend}/endpoints/{endpoint}/undrain", "Let a drained endpoint take requests again"),
    get("api/v1/routes/{route}/mirror", "Mirroring: settings, outcome counts, the last mismatches", Answer::Json(schema_of::<MirrorView>)),
    post("api/v1/routes/{route}/canary/approve", "Let a canary awaiting approval (an `approve_at` step passed) go on to its next step; 409 when it is not waiting"),
    post("api/v1/routes/{route}/canary/{action}", "Canary control (start, pause, resume, abort, approve); abort rolls back to the baseline"),
    get("api/v1/history", "Revisions, newest first", Answer::Json(schema_of::<HistoryPage>))
        .with_query(HISTORY_QUERY),
    get("api/v1/stats", "Per backend: requests, errors and p99 in 10 s intervals over 15 minutes", Answer::Json(schema_of::<StatsView>)),
    post("api/v1/reload", "Re-read the config file now; 422 with the errors when it is invalid")
        .answering(Answer::Json(schema_of::<ReloadAnswer>)),
    get("api/v1/fleet", "In fleet mode: every live instance and its weights per route; 404 outside a fleet", Answer::Json(schema_of::<FleetAnswer>)),
];

/// The answer of `GET /api/v1/openapi.json` is an OpenAPI document.
fn openapi_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "object",
        "required": ["openapi", "info", "paths"],
        "properties": { "openapi": { "type": "string" } }
    })
}

/// The document, built once.
pub(super) fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// The document as `docs/openapi.json` holds it: pretty, ending in a newline.
pub fn text() -> String {
    let mut text = serde_json::to_string_pretty(document()).unwrap_or_default();
    text.push('\n');
    text
}

fn generator(contract: Contract) -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.contract = contract;
            s.meta_schema = None;
        })
        .into_generator()
}

fn build() -> Value {
    // Request bodies as the server reads them, answers as it writes them.
    let mut reads = generator(Contract::Deserialize);
    let mut writes = generator(Contract::Serialize);
    let error = writes.subschema_for::<ApiError>();
    let mut paths = Map::new();
    for op in &OPERATIONS {
        let item = paths
            .entry(format!("/{}", op.pattern))
            .or_insert_with(|| json!({}));
        if let Value::Object(item) = item {
            let method = op.method.as_str().to_ascii_lowercase();
            item.insert(method, operation(op, &mut reads, &mut writes, &error));
        }
    }
    let mut schemas = reads.take_definitions(true);
    schemas.extend(writes.take_definitions(true));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sluicegate admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The admin listener of sluicegate. Requests that change state need \
                `Authorization: Bearer TOKEN`; reads need it too unless the admin listener is on \
                loopback; a presented wrong token is refused (401) everywhere. Errors are \
                `{\"error\": \"message\"}`: 400 malformed JSON, 401 token, 404 unknown route, \
                backend or endpoint, 405 wrong method, 409 revision conflict, 413 body too large, \
                422 invalid value.",
            "license": { "name": "MIT OR Apache-2.0", "identifier": "MIT OR Apache-2.0" }
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas
        }
    })
}

fn operation(
    op: &Operation,
    reads: &mut SchemaGenerator,
    writes: &mut SchemaGenerator,
    error: &Schema,
) -> Value {
    let error_body = json!({
        "description": "Refused: `error` says why (`errors`: one line each, e.g. config errors)",
        "content": { "application/json": { "schema": error } }
    });
    let mut responses = Map::new();
    match op.answer {
        Answer::Json(schema) => {
            let content = json!({ "application/json": { "schema": schema(writes) } });
            responses.insert(
                "200".into(),
                json!({ "description": "OK", "content": content }),
            );
        }
        Answer::Text { also_503 } => {
            let text = json!({ "text/plain": { "schema": { "type": "string" } } });
            let ok = json!({ "description": "OK", "content": text.clone() });
            responses.insert("200".into(), ok);
            if also_503 {
                let draining = json!({ "description": "Draining for shutdown", "content": text });
                responses.insert("503".into(), draining);
            }
        }
    }
    responses.insert("default".into(), error_body);

    let mut parameters: Vec<Value> = path_parameters(op.pattern)
        .map(|name| {
            let (schema, example) = match name {
                "action" => (
                    json!({ "type": "string", "enum": ["start", "pause", "resume", "abort"] }),
                    "start",
                ),
                "backend" => (json!({ "type": "string", "minLength": 1 }), "green"),
                "endpoint" => (
                    json!({ "type": "string", "minLength": 1 }),
                    "127.0.0.1:8082",
                ),
                _ => (json!({ "type": "string", "minLength": 1 }), "web"),
            };
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": schema,
                "example": example
            })
        })
        .collect();
    parameters.extend(op.query.iter().map(|q| {
        json!({
            "name": q.name,
            "in": "query",
            "required": false,
            "schema": (q.schema)(),
            "description": q.description
        })
    }));

    let mut out = json!({
        "operationId": operation_id(op),
        "summary": op.summary,
        "responses": responses,
    });
    if !parameters.is_empty() {
        out["parameters"] = Value::Array(parameters);
    }
    if let Some((schema, required)) = op.request {
        out["requestBody"] = json!({
            "required": required,
            "content": { "application/json": { "schema": schema(reads) } }
        });
    }
    if op.open {
        out["security"] = json!([]);
    }
    out
}

fn path_parameters(pattern: &'static str) -> impl Iterator<Item = &'static str> {
    pattern
        .split('/')
        .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
}

/// `get_api_v1_routes_route`, from the method and the pattern.
fn operation_id(op: &Operation) -> String {
    let path: String = op
        .pattern
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = path
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    format!("{}_{path}", op.method.as_str().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_resolvable_refs() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let weights = &doc["paths"]["/api/v1/routes/{route}/weights"]["put"];
        assert_eq!(weights["requestBody"]["required"], true);
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let target = reference.split('"').next().unwrap_or_default();
            let pointer = target.strip_prefix('#').unwrap_or(target);
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
        }
        assert!(!text.contains("$defs"), "refs must point into components");
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut ids: Vec<String> = OPERATIONS.iter().map(operation_id).collect();
        ids.sort();
        let count = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), count);
    }
}
