//! The file's text → raw types, and the duration syntax; a syntax or shape
//! error names its position and the field path.

use std::time::Duration;

use crate::config::source::Position;
use crate::config::{Format, file};

/// Parses the file into raw types; a syntax or shape error names its position
/// and the field path.
pub(in crate::config) fn deserialize(
    src: &str,
    format: Format,
) -> Result<file::FileConfig, (Position, String)> {
    match format {
        Format::Toml => {
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
        Format::Yaml => {
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
    }
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

/// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like \"250ms\", \"2s\" or \"1m\""))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{text}` has no valid unit (use ms, s, m or h), e.g. \"250ms\", \"2s\", \"1m\""
            ));
        }
    };
    if seconds <= 0.0 || seconds.is_nan() || seconds > 86_400.0 * 365.0 {
        return Err(format!("`{text}` must be more than 0 and at most a year"));
    }
    Ok(Duration::from_secs_f64(seconds))
}
