//! The duration syntax of the file: `"250ms"`, `"2s"`, `"1m30s"`, `"1h"`;
//! the parser, and the pattern and schema that describe it.

use std::time::Duration;

use schemars::{Schema, SchemaGenerator, json_schema};

/// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"` and sums of them in
/// Go's (Traefik's) style, largest unit first or not: `"1m30s"`, `"1h30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let like = "like \"250ms\", \"2s\", \"1m30s\" or \"1h\"";
    if text.is_empty() {
        return Err(format!("an empty string is not a duration {like}"));
    }
    let mut seconds = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration {like}"))?;
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                let suggestion = if text == number { "s" } else { next_unit(text) };
                return Err(format!(
                    "`{text}` lacks a unit after `{number}`: write {text}{suggestion} (units: ms, s, m, h)"
                ));
            }
            "us" | "µs" | "ns" => {
                return Err(format!(
                    "`{text}`: durations below a millisecond are not supported (units: ms, s, m, h)"
                ));
            }
            _ => {
                return Err(format!(
                    "`{text}` has an unknown unit `{unit}` (use ms, s, m or h), {like}"
                ));
            }
        };
        seconds += value * scale;
        rest = after;
    }
    if seconds <= 0.0 || seconds.is_nan() || seconds > 86_400.0 * 365.0 {
        return Err(format!("`{text}` must be more than 0 and at most a year"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The unit one step below the last one in `text` (`1h30` → `m`, `1m30` → `s`).
fn next_unit(text: &str) -> &'static str {
    let last_unit = text.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    if last_unit.ends_with("ms") {
        "ms"
    } else if last_unit.ends_with('h') {
        "m"
    } else if last_unit.ends_with('m') {
        "s"
    } else {
        "ms"
    }
}

/// A duration as the schema describes it: number-unit pairs.
pub const DURATION_PATTERN: &str =
    r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)(ms|s|m|h)(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ms|s|m|h))*\s*$";

/// The JSON Schema of a duration string.
pub(super) fn schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": DURATION_PATTERN,
        "description": "A duration: numbers with units ms, s, m, h, e.g. \"250ms\", \"2s\", \"1m30s\", \"1h\".",
        "examples": ["250ms", "2s", "1m30s"]
    })
}
