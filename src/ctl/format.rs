//! How `ctl` prints the admin API's answers (the types of
//! [`api`](crate::control::admin::api)): tables, one-line confirmations, percents.

use std::fmt::Write as _;

use serde_json::Value;

use super::{CtlCommand, CtlError};
use crate::control::admin::api::{
    EndpointView, FleetAnswer, HistoryPage, ReloadAnswer, RouteAnswer, RouteView, RoutesAnswer,
};
use crate::control::admin::api::{Source, WeightMap};

/// Typed answers are read from the bytes, not a `Value`, to keep the
/// server's backend order in weight maps.
pub(super) fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CtlError> {
    serde_json::from_slice(body).map_err(|e| CtlError::Protocol(e.to_string()))
}

/// The human-readable output of `command` for the server's `answer`.
pub(super) fn format_answer(command: &CtlCommand, answer: &[u8]) -> Result<String, CtlError> {
    Ok(match command {
        CtlCommand::Status { route: None, .. } => {
            let answer: RoutesAnswer = decode(answer)?;
            format_status(Some(answer.revision), &answer.routes)
        }
        CtlCommand::Status { route: Some(_), .. } => {
            let answer: RouteAnswer = decode(answer)?;
            format_status(Some(answer.revision), std::slice::from_ref(&answer.route))
        }
        CtlCommand::Fleet => format_fleet(&decode(answer)?),
        CtlCommand::Set { .. }
        | CtlCommand::Reset { .. }
        | CtlCommand::Promote { .. }
        | CtlCommand::Rollback { .. } => {
            let answer: RouteAnswer = decode(answer)?;
            format_confirmation(&answer)
        }
        CtlCommand::Canary { .. } => {
            let answer: RouteAnswer = decode(answer)?;
            let mut text = format_confirmation(&answer);
            let canary = match &answer.route.canary {
                Value::Null => "none".to_string(),
                canary => format_canary(canary),
            };
            let _ = writeln!(text, "{}: canary {canary}", answer.route.name);
            text
        }
        CtlCommand::Drain(target) | CtlCommand::Undrain(target) => {
            let answer: RouteAnswer = decode(answer)?;
            let what = match command {
                CtlCommand::Drain(_) => "draining",
                _ => "taking new requests again:",
            };
            format!(
                "{}: {what} {} {}\n",
                answer.route.name, target.backend, target.endpoint
            )
        }
        CtlCommand::History { .. } => format_history(&decode(answer)?),
        CtlCommand::Reload => {
            let answer: ReloadAnswer = decode(answer)?;
            let change = match (answer.changed, answer.routes_changed.is_empty()) {
                (false, _) => ", nothing changed".to_string(),
                (true, true) => String::new(),
                (true, false) => format!(", changed: {}", answer.routes_changed.join(" ")),
            };
            format!("config reloaded{change} (revision {})\n", answer.revision)
        }
    })
}

/// `web: blue=75 green=25 (revision 14)`, plus the effective weights when
/// failover or drain make them differ.
pub(super) fn format_confirmation(answer: &RouteAnswer) -> String {
    let route = &answer.route;
    let desired = weights_text(route.backends.iter().map(|b| (&b.name, b.desired_weight)));
    let mut text = format!("{}: {desired} (revision {})", route.name, answer.revision);
    if route
        .backends
        .iter()
        .any(|b| b.desired_weight != b.effective_weight)
    {
        let effective = weights_text(route.backends.iter().map(|b| (&b.name, b.effective_weight)));
        let _ = write!(text, "; effective now {effective}");
    }
    text.push('\n');
    text
}

fn weights_text<'a>(weights: impl Iterator<Item = (&'a String, f64)>) -> String {
    weights
        .map(|(name, percent)| format!("{name}={}", format_percent(percent)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One block per route: name and match, a backend table, then notes.
fn format_status(revision: Option<u64>, routes: &[RouteView]) -> String {
    let mut text = String::new();
    if let Some(revision) = revision {
        let _ = writeln!(text, "revision {revision}");
    }
    if routes.is_empty() {
        text.push_str("no routes\n");
    }
    for route in routes {
        let host = match &route.host {
            Some(host) => format!("host {host}"),
            None => "any host".to_string(),
        };
        let prefix = match route.path_prefix.as_str() {
            "" => "/",
            prefix => prefix,
        };
        let _ = writeln!(text, "\n{}  {host}, prefix {prefix}", route.name);
        let rows: Vec<Vec<String>> = route
            .backends
            .iter()
            .map(|backend| {
                vec![
                    backend.name.clone(),
                    format_percent(backend.desired_weight),
                    format_percent(backend.effective_weight),
                    endpoints_summary(&backend.endpoints),
                ]
            })
            .collect();
        text.push_str(&table(
            "  ",
            &["BACKEND", "DESIRED", "EFFECTIVE", "ENDPOINTS"],
            &rows,
        ));
        for backend in &route.backends {
            for endpoint in &backend.endpoints {
                if !endpoint.healthy {
                    let _ = writeln!(text, "  unhealthy: {} {}", backend.name, endpoint.address);
                }
                if endpoint.draining {
                    let _ = writeln!(text, "  draining: {} {}", backend.name, endpoint.address);
                }
            }
        }
        if route.admin_override {
            text.push_str("  override: admin\n");
        }
        if !route.canary.is_null() {
            let _ = writeln!(text, "  canary: {}", format_canary(&route.canary));
        }
    }
    text
}

/// `healthy/total`, and how many drain.
fn endpoints_summary(endpoints: &[EndpointView]) -> String {
    let healthy = endpoints.iter().filter(|e| e.healthy).count();
    let draining = endpoints.iter().filter(|e| e.draining).count();
    let mut text = format!("{healthy}/{}", endpoints.len());
    if draining > 0 {
        let _ = write!(text, ", {draining} draining");
    }
    text
}

/// `running, step 2, weight 5`, then any other plain fields the server
/// sends, the (long) `reason` last. The canary's view is its module's own
/// shape, so it is read field by field.
fn format_canary(canary: &Value) -> String {
    const FIRST: [&str; 2] = ["step", "weight"];
    let Some(fields) = canary.as_object() else {
        return scalar_text(canary, false);
    };
    let mut parts = Vec::new();
    if let Some(state) = fields.get("state") {
        parts.push(scalar_text(state, false));
    }
    let rest = |(key, _): &(&String, &Value)| {
        !FIRST.contains(&key.as_str()) && !["state", "reason"].contains(&key.as_str())
    };
    let ordered = FIRST
        .iter()
        .filter_map(|key| fields.get_key_value(*key))
        .chain(fields.iter().filter(rest))
        .chain(fields.get_key_value("reason"));
    for (key, value) in ordered {
        if value.is_object() || value.is_array() || value.is_null() {
            continue;
        }
        let is_percent = key.contains("weight") || key.contains("percent");
        parts.push(format!("{key} {}", scalar_text(value, is_percent)));
    }
    parts.join(", ")
}

fn scalar_text(value: &Value, is_percent: bool) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if is_percent => n.as_f64().map_or_else(|| n.to_string(), format_percent),
        other => other.to_string(),
    }
}

fn format_history(answer: &HistoryPage) -> String {
    if answer.revisions.is_empty() {
        return "no revisions\n".to_string();
    }
    let rows: Vec<Vec<String>> = answer
        .revisions
        .iter()
        .map(|r| {
            vec![
                r.revision.to_string(),
                humantime::format_rfc3339_seconds(r.time).to_string(),
                r.route.clone().unwrap_or_else(|| "-".to_string()),
                source_name(r.source).to_string(),
                if r.actor.is_empty() {
                    source_name(r.source).to_string()
                } else {
                    r.actor.clone()
                },
                r.client.clone().unwrap_or_else(|| "-".to_string()),
                r.weights
                    .as_ref()
                    .map_or_else(|| "-".to_string(), history_weights),
                r.reason.clone(),
            ]
        })
        .collect();
    let mut text = table(
        "",
        &[
            "REV", "TIME", "ROUTE", "SOURCE", "ACTOR", "CLIENT", "WEIGHTS", "REASON",
        ],
        &rows,
    );
    if let Some(before) = answer.next_before {
        let _ = writeln!(text, "(older revisions: --before {before})");
    }
    text
}

fn history_weights(weights: &WeightMap) -> String {
    weights_text(weights.0.iter().map(|(name, w)| (name, w.percent())))
}

/// As the API spells it.
fn source_name(source: Source) -> &'static str {
    match source {
        Source::File => "file",
        Source::Admin => "admin",
        Source::Canary => "canary",
        Source::Failover => "failover",
    }
}

/// Percents with at most 2 decimals and no trailing zeros: 90, 12.5, 0.01.
pub(super) fn format_percent(value: f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// Left-aligned columns two spaces apart, each line prefixed by `indent`.
fn table(indent: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = indent.to_string();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `ctl fleet`: one row per instance and route.
fn format_fleet(answer: &FleetAnswer) -> String {
    let mut rows: Vec<[String; 10]> = vec![[
        "INSTANCE".to_string(),
        "ZONE".to_string(),
        "CONNECTED".to_string(),
        "REVISION".to_string(),
        "ROUTE".to_string(),
        "DESIRED".to_string(),
        "EFFECTIVE".to_string(),
        "FROM".to_string(),
        "HEALTHY".to_string(),
        "CANARY".to_string(),
    ]];
    for instance in &answer.instances {
        for (route, weights) in &instance.routes {
            let controller = if instance.canary_controller.contains(route) {
                "controller"
            } else {
                ""
            };
            rows.push([
                instance.instance.clone(),
                instance.zone.clone().unwrap_or_else(|| "-".into()),
                if instance.connected { "yes" } else { "no" }.to_string(),
                instance.applied_revision.to_string(),
                route.clone(),
                weights.desired.describe(),
                weights.effective.describe(),
                weights.weights_from.clone(),
                weights
                    .healthy
                    .iter()
                    .map(|(b, up)| format!("{b}={up}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                controller.to_string(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..10)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(text, "{}", line.join("  ").trim_end());
    }
    for problem in &answer.problems {
        let _ = writeln!(text, "problem: {problem}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::tests::parse;
    use serde_json::json;

    // ---- tables ----

    fn sample_route() -> Value {
        json!({
            "name": "web", "host": "shop.example.com", "path_prefix": "/", "override": true,
            "backends": [
                {"name": "blue", "desired_weight": 87.5, "effective_weight": 100.0, "endpoints": [
                    {"address": "127.0.0.1:8081", "healthy": true, "draining": false},
                    {"address": "127.0.0.1:8083", "healthy": true, "draining": true}]},
                {"name": "green", "desired_weight": 12.5, "effective_weight": 0.0, "endpoints": [
                    {"address": "127.0.0.1:8082", "healthy": false, "draining": false}]}
            ],
            "canary": {"state": "running", "step": 2, "weight": 5.0}
        })
    }

    #[test]
    fn percents_print_without_trailing_zeros() {
        assert_eq!(format_percent(90.0), "90");
        assert_eq!(format_percent(12.5), "12.5");
        assert_eq!(format_percent(0.01), "0.01");
        assert_eq!(format_percent(100.0), "100");
        assert_eq!(format_percent(0.0), "0");
        assert_eq!(format_percent(-0.0), "0");
        assert_eq!(format_percent(33.333333), "33.33");
    }

    #[test]
    fn status_prints_a_block_per_route() {
        let args = parse(&["status"]).unwrap();
        let answer = json!({"revision": 13, "routes": [sample_route(), {
            "name": "api", "host": null, "path_prefix": "/api", "override": false,
            "backends": [{"name": "v1", "desired_weight": 100.0, "effective_weight": 100.0,
                "endpoints": [{"address": "10.0.0.1:80", "healthy": true, "draining": false}]}],
            "canary": null
        }]});
        let text = format_answer(&args.command, answer.to_string().as_bytes()).unwrap();
        let expected = "\
revision 13

web  host shop.example.com, prefix /
  BACKEND  DESIRED  EFFECTIVE  ENDPOINTS
  blue     87.5     100        2/2, 1 draining
  green    12.5     0          0/1
  draining: blue 127.0.0.1:8083
  unhealthy: green 127.0.0.1:8082
  override: admin
  canary: running, step 2, weight 5

api  any host, prefix /api
  BACKEND  DESIRED  EFFECTIVE  ENDPOINTS
  v1       100      100        1/1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn canary_prints_state_step_and_weight_first_and_the_reason_last() {
        let canary = json!({
            "state": "running", "step": 2, "steps": [1.0, 5.0, 100.0], "weight": 5.0,
            "step_started": "2026-11-23T10:00:00.000Z", "step_requests": 3, "min_requests": 100,
            "error_rate": null, "reason": "waiting for canary traffic: 3 of 100 requests"
        });
        assert_eq!(
            format_canary(&canary),
            "running, step 2, weight 5, min_requests 100, step_requests 3, \
             step_started 2026-11-23T10:00:00.000Z, reason waiting for canary traffic: 3 of 100 requests"
        );
    }

    #[test]
    fn history_prints_one_row_per_revision_in_the_servers_backend_order() {
        let args = parse(&["history"]).unwrap();
        // Raw text: the weights' key order (green before blue) must survive.
        let answer = r#"{"revisions": [
            {"revision": 14, "time": "2026-11-23T10:00:00Z", "route": "web",
             "weights": {"green": 25.0, "blue": 75.0}, "previous": {"green": 10.0, "blue": 90.0},
             "source": "admin", "reason": "more green", "actor": "deploy-bot",
             "client": "10.0.0.7:50000"},
            {"revision": 1, "time": "2026-11-23T09:00:00Z", "route": null,
             "weights": null, "previous": null, "source": "file", "reason": ""}
        ], "next_before": 1}"#;
        let text = format_answer(&args.command, answer.as_bytes()).unwrap();
        let expected = "\
REV  TIME                  ROUTE  SOURCE  ACTOR       CLIENT          WEIGHTS           REASON
14   2026-11-23T10:00:00Z  web    admin   deploy-bot  10.0.0.7:50000  green=25 blue=75  more green
1    2026-11-23T09:00:00Z  -      file    file        -               -
(older revisions: --before 1)
";
        assert_eq!(text, expected);
        let empty = br#"{"revisions": [], "next_before": null}"#;
        assert_eq!(
            format_answer(&args.command, empty).unwrap(),
            "no revisions\n"
        );
    }

    #[test]
    fn mutations_print_a_one_line_confirmation() {
        let args = parse(&["set", "web", "blue=75", "green=25"]).unwrap();
        let answer = json!({"revision": 14, "route": {"name": "web", "host": null, "path_prefix": "/",
            "override": true, "canary": null, "backends": [
                {"name": "blue", "desired_weight": 75.0, "effective_weight": 75.0, "endpoints": []},
                {"name": "green", "desired_weight": 25.0, "effective_weight": 25.0, "endpoints": []}]}});
        let text = format_answer(&args.command, answer.to_string().as_bytes()).unwrap();
        assert_eq!(text, "web: blue=75 green=25 (revision 14)\n");

        let answer = json!({"revision": 15, "route": sample_route()});
        let text = format_answer(&args.command, answer.to_string().as_bytes()).unwrap();
        assert_eq!(
            text,
            "web: blue=87.5 green=12.5 (revision 15); effective now blue=100 green=0\n"
        );

        let reload = parse(&["reload"]).unwrap();
        let text =
            format_answer(&reload.command, br#"{"revision": 15, "changed": false}"#).unwrap();
        assert_eq!(text, "config reloaded, nothing changed (revision 15)\n");
        let answer = br#"{"revision": 16, "changed": true, "routes_changed": ["web", "api"]}"#;
        let text = format_answer(&reload.command, answer).unwrap();
        assert_eq!(text, "config reloaded, changed: web api (revision 16)\n");
    }

    #[test]
    fn an_answer_of_the_wrong_shape_is_a_protocol_error() {
        let args = parse(&["status"]).unwrap();
        let err = format_answer(&args.command, br#"{"routes": "nope"}"#).unwrap_err();
        assert!(matches!(err, CtlError::Protocol(_)), "{err:?}");
    }
}
