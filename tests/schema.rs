//! `sluicegate schema` describes the files sluicegate takes: every example in
//! `config/` (TOML and YAML) validates against it, and broken files do not.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// The schema as the binary prints it.
fn schema() -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .arg("schema")
        .output()
        .expect("run sluicegate schema");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("the schema is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("a valid JSON Schema")
}

/// A config file as JSON, the way an editor's TOML or YAML plugin sees it.
fn document(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read config");
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => serde_saphyr::from_str(&text).expect("parse YAML"),
        _ => toml::from_str(&text).expect("parse TOML"),
    }
}

fn errors(validator: &jsonschema::Validator, document: &Value) -> Vec<String> {
    validator
        .iter_errors(document)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_example_config_validates() {
    let validator = validator();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("read config/") {
        let path = entry.expect("entry").path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("toml" | "yaml" | "yml")
        ) {
            continue;
        }
        let found = errors(&validator, &document(&path));
        assert!(found.is_empty(), "{}: {found:#?}", path.display());
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} configs checked");
}

fn minimal() -> Value {
    json!({
        "listeners": [{ "addr": "127.0.0.1:8080" }],
        "timeouts": { "connect": "1m30s" },
        "routes": [{
            "name": "web",
            "backends": [
                { "name": "blue", "weight": 90, "endpoints": ["127.0.0.1:8081"] },
                { "name": "green", "weight": 10, "endpoints": ["127.0.0.1:8082"] }
            ]
        }]
    })
}

#[test]
fn unknown_keys_and_wrong_types_fail() {
    let validator = validator();
    assert_eq!(errors(&validator, &minimal()), Vec::<String>::new());

    let mut unknown = minimal();
    unknown["routes"][0]["backends"][0]["weigth"] = json!(90);
    assert!(
        !errors(&validator, &unknown).is_empty(),
        "unknown key passed"
    );

    let mut wrong_type = minimal();
    wrong_type["routes"][0]["retries"] = json!("two");
    assert!(
        !errors(&validator, &wrong_type).is_empty(),
        "string retries passed"
    );

    let mut too_heavy = minimal();
    too_heavy["routes"][0]["backends"][0]["weight"] = json!(150);
    assert!(
        !errors(&validator, &too_heavy).is_empty(),
        "weight 150 passed"
    );

    let mut missing_name = minimal();
    missing_name["routes"][0]
        .as_object_mut()
        .expect("route")
        .remove("name");
    assert!(
        !errors(&validator, &missing_name).is_empty(),
        "route without name passed"
    );
}

#[test]
fn durations_follow_the_parser() {
    let validator = validator();
    for (text, valid) in [
        ("250ms", true),
        ("2s", true),
        ("1.5s", true),
        ("1m30s", true),
        ("1h", true),
        ("1m30", false),
        ("30", false),
        ("2x", false),
        ("", false),
    ] {
        let mut config = minimal();
        config["timeouts"]["connect"] = json!(text);
        assert_eq!(
            errors(&validator, &config).is_empty(),
            valid,
            "schema on {text:?}"
        );
        assert_eq!(
            sluicegate::config::parse_duration(text).is_ok(),
            valid,
            "parser on {text:?}"
        );
    }
}
