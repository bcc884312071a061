//! `GET /api/v1/openapi.json` on a real admin listener: it is the document
//! kept in `docs/openapi.json`, and live answers match the schemas it gives.
//!
//! After changing the admin API, refresh the file with
//! `SLUICEGATE_WRITE_OPENAPI=1 cargo test --test openapi`.

pub mod support;

use std::path::PathBuf;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use support::admin::FileProxy;
use support::config_text::two_backend_config;
use support::origin::RunningOrigin;

fn docs_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

async fn started() -> (RunningOrigin, RunningOrigin, FileProxy) {
    let blue = RunningOrigin::start("blue").await;
    let green = RunningOrigin::start("green").await;
    let proxy = FileProxy::start(&two_backend_config("90", &blue, "10", &green)).await;
    (blue, green, proxy)
}

async fn served(proxy: &FileProxy) -> Value {
    let (status, document) = proxy.admin_get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    document
}

#[tokio::test]
async fn served_document_is_the_one_in_docs() {
    let (_blue, _green, proxy) = started().await;
    let document = served(&proxy).await;
    let mut text = serde_json::to_string_pretty(&document).expect("serialize");
    text.push('\n');
    if std::env::var_os("SLUICEGATE_WRITE_OPENAPI").is_some() {
        std::fs::write(docs_file(), &text).expect("write docs/openapi.json");
    }
    let kept = std::fs::read_to_string(docs_file()).unwrap_or_default();
    assert!(
        kept == text,
        "docs/openapi.json differs from what the admin API serves: \
         run SLUICEGATE_WRITE_OPENAPI=1 cargo test --test openapi"
    );
    assert_eq!(document["openapi"], "3.1.0");
}

/// A validator for the 200 answer of `method path` in `document`.
fn answer_validator(document: &Value, path: &str, method: &str) -> jsonschema::Validator {
    let schema = &document["paths"][path][method]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    assert!(schema.is_object(), "no JSON 200 answer for {method} {path}");
    let root = json!({
        "allOf": [schema],
        "components": document["components"],
    });
    jsonschema::validator_for(&root).expect("a valid schema")
}

fn assert_conforms(document: &Value, path: &str, method: &str, answer: &Value) {
    let validator = answer_validator(document, path, method);
    let errors: Vec<String> = validator
        .iter_errors(answer)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path}: {errors:#?}\n{answer:#}"
    );
}

#[tokio::test]
async fn live_answers_match_their_schemas() {
    let (_blue, _green, proxy) = started().await;
    let document = served(&proxy).await;
    let token = proxy.token.clone();

    let (_, answer) = proxy.admin_get("/api/v1/routes").await;
    assert_conforms(&document, "/api/v1/routes", "get", &answer);
    let (_, answer) = proxy.admin_get("/api/v1/routes/web").await;
    assert_conforms(&document, "/api/v1/routes/{route}", "get", &answer);

    let body = json!({ "weights": { "blue": 75, "green": 25 }, "reason": "test" });
    let (status, answer) = proxy
        .admin_send(
            Method::PUT,
            "/api/v1/routes/web/weights",
            Some(&body),
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_conforms(&document, "/api/v1/routes/{route}/weights", "put", &answer);

    let (_, answer) = proxy.admin_get("/api/v1/history").await;
    assert_conforms(&document, "/api/v1/history", "get", &answer);
    let (_, answer) = proxy.admin_get("/api/v1/stats").await;
    assert_conforms(&document, "/api/v1/stats", "get", &answer);
    let (status, answer) = proxy
        .admin_send(Method::POST, "/api/v1/reload", None, Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_conforms(&document, "/api/v1/reload", "post", &answer);

    // A broken answer does not pass: the check can fail.
    let validator = answer_validator(&document, "/api/v1/routes", "get");
    assert!(!validator.is_valid(&json!({ "revision": "one", "routes": [] })));
}
