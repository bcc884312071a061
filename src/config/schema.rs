//! The JSON Schema of the config file, derived from the raw types of
//! [`super::file`] (so it cannot drift from what the parser takes), and the
//! walk that finds every unknown key in a document before serde stops at the
//! first one.

use std::sync::OnceLock;

use schemars::Schema;
use serde_json::{Map, Value};

use super::file::FileConfig;

/// The schema of the whole file (draft 2020-12).
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut schema = schemars::schema_for!(FileConfig);
        schema.insert("title".into(), "sluicegate config file".into());
        schema.insert(
            "description".into(),
            "The TOML or YAML file of `sluicegate run -c FILE` (docs/CONFIG.md).".into(),
        );
        schema
    })
}

/// The schema as pretty JSON, ending in a newline (`sluicegate schema`).
pub fn text() -> String {
    let mut text = serde_json::to_string_pretty(schema()).unwrap_or_else(|_| "{}".to_string());
    text.push('\n');
    text
}

/// An unknown key: its path (`routes[0].backends[1].weigth`) and the known
/// keys of its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UnknownKey {
    pub path: String,
    pub key: String,
    pub known: Vec<String>,
}

/// Every key of `document` that the schema does not know (in key order;
/// errors are sorted by position later).
pub(super) fn unknown_keys(document: &Value) -> Vec<UnknownKey> {
    let root = schema().as_value();
    let mut found = Vec::new();
    walk(root, root, document, "", &mut found);
    found
}

/// The object schema `node` stands for, following `$ref` and the branches of
/// `anyOf`/`oneOf` (an `Option` is `anyOf [T, null]`) that describe an object.
fn object_schema<'a>(root: &'a Value, node: &'a Value) -> Option<&'a Map<String, Value>> {
    let node = resolve(root, node);
    let map = node.as_object()?;
    if map.contains_key("properties") {
        return Some(map);
    }
    ["anyOf", "oneOf", "allOf"]
        .iter()
        .filter_map(|k| map.get(*k).and_then(Value::as_array))
        .flatten()
        .find_map(|branch| object_schema(root, branch))
}

/// The item schema of the array schema `node` stands for.
fn items_schema<'a>(root: &'a Value, node: &'a Value) -> Option<&'a Value> {
    let map = resolve(root, node).as_object()?;
    if let Some(items) = map.get("items") {
        return Some(items);
    }
    ["anyOf", "oneOf", "allOf"]
        .iter()
        .filter_map(|k| map.get(*k).and_then(Value::as_array))
        .flatten()
        .find_map(|branch| items_schema(root, branch))
}

/// `node`, or what its `$ref` (`#/$defs/Name`) points at.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut node = node;
    for _ in 0..8 {
        let Some(pointer) = node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        else {
            break;
        };
        match root.pointer(pointer) {
            Some(target) => node = target,
            None => break,
        }
    }
    node
}

fn walk(root: &Value, schema: &Value, value: &Value, path: &str, found: &mut Vec<UnknownKey>) {
    match value {
        Value::Object(entries) => {
            let Some(object) = object_schema(root, schema) else {
                return;
            };
            let Some(properties) = object.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (key, child) in entries {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match properties.get(key) {
                    Some(child_schema) => walk(root, child_schema, child, &child_path, found),
                    None => found.push(UnknownKey {
                        path: child_path,
                        key: key.clone(),
                        known: properties.keys().cloned().collect(),
                    }),
                }
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = items_schema(root, schema) else {
                return;
            };
            for (i, item) in items.iter().enumerate() {
                walk(root, item_schema, item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// The known key closest to `key`, when at most two edits away.
pub(super) fn did_you_mean<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|candidate| (edit_distance(key, candidate), candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.as_str())
}

/// Levenshtein distance, with a swap of two neighbours counting as one edit
/// (`weigth` → `weight`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn close_keys_are_suggested() {
        let keys = known(&["name", "weight", "endpoints", "health"]);
        assert_eq!(did_you_mean("weigth", &keys), Some("weight"));
        assert_eq!(did_you_mean("endpoint", &keys), Some("endpoints"));
        assert_eq!(did_you_mean("helth", &keys), Some("health"));
        assert_eq!(did_you_mean("colour", &keys), None);
    }

    #[test]
    fn swaps_count_as_one_edit() {
        assert_eq!(edit_distance("weigth", "weight"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn unknown_keys_are_found_at_every_depth() {
        let document = serde_json::json!({
            "listeners": [{ "addr": "127.0.0.1:8080", "tsl": {} }],
            "routes": [{
                "name": "web",
                "match": { "host": "a", "path": "/" },
                "backends": [{ "name": "blue", "weigth": 90, "health": { "intervall": "2s" } }]
            }],
            "admn": {}
        });
        let paths: Vec<String> = unknown_keys(&document)
            .into_iter()
            .map(|u| u.path)
            .collect();
        assert_eq!(
            paths,
            [
                "admn",
                "listeners[0].tsl",
                "routes[0].backends[0].health.intervall",
                "routes[0].backends[0].weigth",
                "routes[0].match.path",
            ]
        );
    }
}
