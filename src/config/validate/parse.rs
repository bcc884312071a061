//! The file's text → raw types, and the duration syntax; a syntax or shape
//! error names its position and the field path.

use crate::config::source::{Position, SourceMap};
use crate::config::{Format, file, schema};

/// Parses the file into raw types. A syntax or shape error names its
/// position and the field path; unknown keys are all reported, each with the
/// known key it is closest to.
pub(in crate::config) fn deserialize(
    src: &str,
    format: Format,
) -> Result<file::FileConfig, Vec<(Position, String)>> {
    let first_error = match format {
        Format::Toml => deserialize_toml(src),
        Format::Yaml => deserialize_yaml(src),
    };
    let (pos, message) = match first_error {
        Ok(config) => return Ok(config),
        Err(error) => error,
    };
    let mut errors = unknown_keys(src, format);
    if errors.is_empty() || !message.contains("unknown field") {
        errors.push((pos, message));
    }
    errors.sort_by_key(|(pos, _)| (pos.line, pos.column));
    errors.dedup();
    Err(errors)
}

/// Every key of the document the schema does not know, located at the key.
fn unknown_keys(src: &str, format: Format) -> Vec<(Position, String)> {
    let document: Option<serde_json::Value> = match format {
        Format::Toml => toml::from_str(src).ok(),
        Format::Yaml => serde_saphyr::from_str(src).ok(),
    };
    let Some(document) = document else {
        return Vec::new();
    };
    let unknown = schema::unknown_keys(&document);
    if unknown.is_empty() {
        return Vec::new();
    }
    let map = SourceMap::parse(src, format);
    unknown
        .into_iter()
        .map(|u| {
            let parent = u
                .path
                .strip_suffix(u.key.as_str())
                .map_or("", |p| p.trim_end_matches('.'));
            let prefix = if parent.is_empty() {
                String::new()
            } else {
                format!("{parent}: ")
            };
            let hint = match schema::did_you_mean(&u.key, &u.known) {
                Some(close) => format!("did you mean `{close}`?"),
                None => {
                    let known: Vec<String> = u.known.iter().map(|k| format!("`{k}`")).collect();
                    format!("expected one of {}", known.join(", "))
                }
            };
            let message = format!("{prefix}unknown field `{}`, {hint}", u.key);
            (map.locate_key(&u.path), message)
        })
        .collect()
}

fn deserialize_toml(src: &str) -> Result<file::FileConfig, (Position, String)> {
    let located = |e: &toml::de::Error| {
        e.span().map_or(Position { line: 1, column: 1 }, |s| {
            Position::of_offset(src, s.start)
        })
    };
    let de = toml::de::Deserializer::parse(src)
        .map_err(|e| (located(&e), e.message().trim().to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().trim().to_string();
        let message = if path == "." {
            message
        } else {
            format!("{path}: {message}")
        };
        (located(&inner), message)
    })
}

fn deserialize_yaml(src: &str) -> Result<file::FileConfig, (Position, String)> {
    if src.trim().is_empty() {
        return Ok(file::FileConfig::default());
    }
    serde_saphyr::from_str(src).map_err(|e| {
        let pos = e
            .location()
            .map_or(Position { line: 1, column: 1 }, |l| Position {
                line: usize::try_from(l.line()).unwrap_or(1).max(1),
                column: usize::try_from(l.column()).unwrap_or(1).max(1),
            });
        (pos, yaml_message(&e.to_string()))
    })
}

/// The first line of a serde-saphyr message without its own
/// `error: line L column C: ` prefix (we print the position ourselves).
fn yaml_message(text: &str) -> String {
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    let first = first.strip_prefix("error:").map_or(first, str::trim);
    let without_position = first
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
        .map_or(first, |(_, message)| message);
    without_position.to_string()
}
