//! The admin API on the wire (SPEC §3): every request body and every JSON
//! answer as a serde type. The server serializes them, `ctl` and the tests
//! deserialize the same types, so the three cannot drift apart.
//!
//! Answers ignore unknown fields when read, so an older client still reads a
//! newer server; request bodies refuse them (a typo in a field name is a 422,
//! not a silently ignored setting).

use std::collections::BTreeMap;
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::clock::rfc3339;
use crate::control::history::Revision;
pub use crate::control::history::{Source, WeightMap};
use crate::telemetry::mirrors::Mismatch;
use crate::telemetry::stats::Point;

/// Every API path starts with this.
pub const PREFIX: &str = "/api/v1";

// ---- request bodies ----

/// `PUT /api/v1/routes/{route}/weights`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"weights": {"blue": 50, "green": 50}, "reason": "half and half"}))]
pub struct WeightsBody {
    #[serde(serialize_with = "whole_percents_as_integers")]
    #[schemars(schema_with = "schema::weights")]
    pub weights: WeightMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Refuse (409) unless the current revision is this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_revision: Option<u64>,
    /// In a fleet: the weights of this zone's instances only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// `POST /api/v1/routes/{route}/promote`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"backend": "green"}))]
pub struct PromoteBody {
    pub backend: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /api/v1/routes/{route}/rollback`; `{}` goes back one revision of the route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<u64>,
}

// The canary actions (`…/canary/{action}`), drain and undrain, and reload
// take no body: what they do is all in the path.

// ---- answers ----

/// `GET /api/v1/routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RoutesAnswer {
    pub revision: u64,
    pub routes: Vec<RouteView>,
    /// In fleet mode: this instance's link to the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetLinkView>,
}

/// `"fleet"` of `GET /api/v1/routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FleetLinkView {
    pub connected: bool,
    pub instance: String,
    #[serde(default)]
    pub zone: Option<String>,
}

/// `GET /api/v1/fleet`: every live instance of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FleetAnswer {
    pub instances: Vec<InstanceView>,
    /// Why some fleet values or routes are not applied on this instance.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// One instance of a fleet, as it registers itself in etcd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceView {
    pub instance: String,
    #[serde(default)]
    pub zone: Option<String>,
    pub version: String,
    pub connected: bool,
    pub applied_revision: u64,
    #[serde(with = "rfc3339")]
    #[schemars(schema_with = "schema::time")]
    pub last_seen: SystemTime,
    /// Routes whose canary controller runs on this instance.
    #[serde(default)]
    pub canary_controller: Vec<String>,
    /// A hash of the instance's config file.
    #[serde(default)]
    pub config_hash: Option<String>,
    pub routes: BTreeMap<String, RouteWeightsView>,
}

/// One route's weights on one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteWeightsView {
    #[schemars(schema_with = "schema::weights")]
    pub desired: WeightMap,
    #[schemars(schema_with = "schema::weights")]
    pub effective: WeightMap,
    /// `fleet` when the route runs on the fleet's weights, `file` when on
    /// the instance's file (none in etcd yet, or other backend names).
    pub weights_from: String,
    /// Per backend: endpoints available on that instance, `up/all`.
    #[serde(default)]
    pub healthy: BTreeMap<String, String>,
}

/// `GET /api/v1/routes/{route}`, and the answer of every change to one
/// route (weights, promote, rollback, canary, drain): the route as it is now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteAnswer {
    /// The revision the change made, or the current one.
    pub revision: u64,
    pub route: RouteView,
}

/// One route: its match, backends with desired and effective weight,
/// endpoint health, and canary state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteView {
    pub name: String,
    /// `shop.example.com`, or `*.example.com` for a suffix; `null` for any host.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path_prefix: String,
    /// Whether the route runs on weights set through the API (not the file's).
    #[serde(default, rename = "override")]
    pub admin_override: bool,
    #[serde(default)]
    pub backends: Vec<BackendView>,
    /// The canary's own view (its shape belongs to the canary module);
    /// `null` without `[routes.canary]`.
    #[serde(default)]
    #[schemars(schema_with = "schema::canary")]
    pub canary: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackendView {
    pub name: String,
    /// Percent asked for (file or admin).
    pub desired_weight: f64,
    /// Percent in force, after failover and drain.
    pub effective_weight: f64,
    #[serde(default)]
    pub endpoints: Vec<EndpointView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointView {
    /// As in the config: `host:port` or `https://host:port`.
    pub address: String,
    pub healthy: bool,
    #[serde(default)]
    pub draining: bool,
    /// `up`, `down` (active check), `ejected` (passive) or `draining`.
    #[serde(default)]
    pub state: String,
}

/// `GET /api/v1/history`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryPage {
    pub revisions: Vec<RevisionView>,
    /// Pass as `?before=` for the next, older page; `null` on the last page.
    #[serde(default)]
    pub next_before: Option<u64>,
}

/// One numbered change, as the history shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RevisionView {
    pub revision: u64,
    #[serde(with = "rfc3339")]
    #[schemars(schema_with = "schema::time")]
    pub time: SystemTime,
    /// `null` for a change of the whole config.
    pub route: Option<String>,
    #[schemars(schema_with = "schema::optional_weights")]
    pub weights: Option<WeightMap>,
    #[schemars(schema_with = "schema::optional_weights")]
    pub previous: Option<WeightMap>,
    #[schemars(schema_with = "schema::source")]
    pub source: Source,
    #[serde(default)]
    pub reason: String,
    /// In a fleet: the instance that made the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// In a fleet: the zone whose weights changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Who made the change: an admin token's name, the client certificate's
    /// subject, or `file`, `canary`, `failover`.
    #[serde(default)]
    pub actor: String,
    /// The admin caller's address; absent for file, canary and failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl From<Revision> for RevisionView {
    fn from(r: Revision) -> RevisionView {
        let actor = r.actor();
        RevisionView {
            actor,
            client: r.client,
            revision: r.revision,
            time: r.time,
            route: r.route,
            weights: r.weights,
            previous: r.previous,
            source: r.source,
            reason: r.reason,
            instance: r.instance,
            zone: r.zone,
        }
    }
}

/// `POST /api/v1/reload` when the file was valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReloadAnswer {
    pub revision: u64,
    pub changed: bool,
    /// Names of the routes whose settings changed.
    #[serde(default)]
    pub routes_changed: Vec<String>,
}

/// `GET /api/v1/routes/{route}/mirror`: settings, outcome counts and the
/// last mismatches (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MirrorView {
    pub route: String,
    pub backend: String,
    pub percent: f64,
    pub compare: bool,
    pub max_body: u64,
    pub max_concurrent: u32,
    pub outcomes: MirrorOutcomes,
    pub mismatches: Vec<MismatchView>,
}

/// Mirrored requests by outcome, as counted since start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MirrorOutcomes {
    #[serde(rename = "match")]
    pub matched: u64,
    pub mismatch: u64,
    pub error: u64,
    pub skipped: u64,
}

/// One copy whose answer differed from the primary's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MismatchView {
    #[serde(with = "rfc3339")]
    #[schemars(schema_with = "schema::time")]
    pub time: SystemTime,
    pub method: String,
    pub path: String,
    pub primary_status: u16,
    pub mirror_status: u16,
    pub body_differs: bool,
}

impl From<Mismatch> for MismatchView {
    fn from(m: Mismatch) -> MismatchView {
        MismatchView {
            time: m.time,
            method: m.method,
            path: m.path,
            primary_status: m.primary_status,
            mirror_status: m.mirror_status,
            body_differs: m.body_differs,
        }
    }
}

/// `GET /api/v1/stats`: per route and backend, the finished intervals of
/// the last 15 minutes and the one in progress (the dashboard's charts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatsView {
    pub interval_seconds: u64,
    pub routes: BTreeMap<String, RouteStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteStats {
    pub backends: BTreeMap<String, SeriesView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SeriesView {
    /// Finished intervals, oldest first.
    pub points: Vec<PointView>,
    pub current: PointView,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PointView {
    /// Unix seconds at the end of the interval.
    pub t: u64,
    pub requests: u64,
    pub errors: u64,
    /// `null` when the interval had no requests.
    pub p99_ms: Option<f64>,
}

impl From<Point> for PointView {
    fn from(p: Point) -> PointView {
        PointView {
            t: p.t,
            requests: p.requests,
            errors: p.errors,
            p99_ms: p.p99_ms,
        }
    }
}

/// Every refusal: `{"error": "message"}`, plus `"errors"` (one line each)
/// when there are several, e.g. an invalid config on reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApiError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Whole percents go out as integers (`75`), others as decimals (`12.5`):
/// the body a person reads in a log or a recorded request looks like what
/// they typed.
fn whole_percents_as_integers<S: Serializer>(
    weights: &WeightMap,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(weights.0.len()))?;
    for (name, weight) in &weights.0 {
        if weight.0.is_multiple_of(100) {
            map.serialize_entry(name, &(weight.0 / 100))?;
        } else {
            map.serialize_entry(name, &weight.percent())?;
        }
    }
    map.end()
}

/// Hand schemas for the fields whose Rust type says less than the wire
/// (weights in basis points travel as percents, times as RFC 3339).
mod schema {
    use schemars::{Schema, SchemaGenerator, json_schema};

    pub(super) fn weights(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "Backend name → percent (up to two decimals).",
            "additionalProperties": { "type": "number", "minimum": 0, "maximum": 100 }
        })
    }

    pub(super) fn optional_weights(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["object", "null"],
            "description": "Backend name → percent; `null` for a change of the whole config.",
            "additionalProperties": { "type": "number", "minimum": 0, "maximum": 100 }
        })
    }

    pub(super) fn time(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time" })
    }

    pub(super) fn source(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "enum": ["file", "admin", "canary", "failover"]
        })
    }

    pub(super) fn canary(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["object", "null"],
            "description": "The canary's state (idle, running, awaiting_approval, paused, succeeded, failed, aborted), step, weight and figures; `null` without [routes.canary].",
            "properties": {
                "state": { "type": "string" },
                "step": { "type": ["integer", "null"], "minimum": 1 },
                "steps": { "type": "array", "items": { "type": "number" } },
                "weight": { "type": ["number", "null"] },
                "step_started": { "type": ["string", "null"], "format": "date-time" },
                "step_requests": { "type": ["integer", "null"], "minimum": 0 },
                "min_requests": { "type": "integer", "minimum": 0 },
                "error_rate": { "type": ["number", "null"] },
                "p99_ms": { "type": ["number", "null"] },
                "baseline_p99_ms": { "type": ["number", "null"] },
                "reason": { "type": ["string", "null"] },
                "approve_at": { "type": "array", "items": { "type": "number" } },
                "gates": {
                    "type": "array",
                    "description": "The latest result of each gate in the current run.",
                    "items": {
                        "type": "object",
                        "required": ["url", "step", "weight", "passed", "detail", "time"],
                        "properties": {
                            "url": { "type": "string" },
                            "step": { "type": "integer", "minimum": 1 },
                            "weight": { "type": "number" },
                            "passed": { "type": "boolean" },
                            "detail": { "type": "string" },
                            "time": { "type": "string", "format": "date-time" }
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Weight;

    /// What the server sends (pretty, as `json_response` writes it), read
    /// back as the client reads it.
    fn round_trip<T>(view: &T) -> T
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        let text = serde_json::to_vec_pretty(view).unwrap();
        serde_json::from_slice(&text).unwrap()
    }

    fn time(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn weights(pairs: &[(&str, u32)]) -> WeightMap {
        WeightMap(
            pairs
                .iter()
                .map(|(name, basis_points)| ((*name).to_string(), Weight(*basis_points)))
                .collect(),
        )
    }

    fn sample_route() -> RouteView {
        RouteView {
            name: "web".into(),
            host: Some("*.example.com".into()),
            path_prefix: "/".into(),
            admin_override: true,
            backends: vec![
                BackendView {
                    name: "blue".into(),
                    desired_weight: 87.5,
                    effective_weight: 100.0,
                    endpoints: vec![EndpointView {
                        address: "127.0.0.1:8081".into(),
                        healthy: true,
                        draining: false,
                        state: "up".into(),
                    }],
                },
                BackendView {
                    name: "green".into(),
                    desired_weight: 12.5,
                    effective_weight: 0.0,
                    endpoints: vec![EndpointView {
                        address: "https://127.0.0.1:8443".into(),
                        healthy: false,
                        draining: true,
                        state: "draining".into(),
                    }],
                },
            ],
            canary: serde_json::json!({"state": "running", "step": 2, "weight": 5.0}),
        }
    }

    #[test]
    fn route_views_round_trip() {
        let answer = RoutesAnswer {
            revision: 13,
            routes: vec![
                sample_route(),
                RouteView {
                    host: None,
                    canary: Value::Null,
                    ..sample_route()
                },
            ],
            fleet: None,
        };
        assert_eq!(round_trip(&answer), answer);
        let one = RouteAnswer {
            revision: 14,
            route: sample_route(),
        };
        assert_eq!(round_trip(&one), one);
    }

    #[test]
    fn route_view_field_names_are_the_documented_ones() {
        let json = serde_json::to_value(RouteAnswer {
            revision: 3,
            route: RouteView {
                host: None,
                canary: Value::Null,
                ..sample_route()
            },
        })
        .unwrap();
        let route = &json["route"];
        assert_eq!(json["revision"], 3);
        assert_eq!(route["override"], true);
        assert_eq!(
            route["host"],
            Value::Null,
            "host is sent as null, not left out"
        );
        assert_eq!(route["canary"], Value::Null);
        assert_eq!(route["backends"][0]["desired_weight"], 87.5);
        assert_eq!(route["backends"][1]["effective_weight"], 0.0);
        let endpoint = &route["backends"][1]["endpoints"][0];
        assert_eq!(endpoint["address"], "https://127.0.0.1:8443");
        assert_eq!(endpoint["state"], "draining");
        assert_eq!(endpoint["draining"], true);
        assert_eq!(endpoint["healthy"], false);
    }

    /// A route answer exactly as the server wrote it before the types
    /// existed (built with `json!`), so the field names are pinned.
    #[test]
    fn a_route_answer_of_the_json_era_reads_and_writes_back_the_same() {
        let text = r#"{
          "revision": 1,
          "route": {
            "backends": [
              {"desired_weight": 90.0, "effective_weight": 90.0, "name": "blue",
               "endpoints": [{"address": "127.0.0.1:32857", "draining": false,
                              "healthy": true, "state": "up"}]}
            ],
            "canary": {"baseline_p99_ms": null, "error_rate": null, "min_requests": 10,
                       "p99_ms": null, "reason": null, "state": "idle", "step": null,
                       "step_requests": null, "step_started": null,
                       "steps": [10.0, 25.0, 50.0, 100.0], "weight": 10.0},
            "host": null,
            "name": "web",
            "override": false,
            "path_prefix": "/"
          }
        }"#;
        let answer: RouteAnswer = serde_json::from_str(text).unwrap();
        assert_eq!(answer.route.backends[0].endpoints[0].state, "up");
        let written = serde_json::to_value(&answer).unwrap();
        let original: Value = serde_json::from_str(text).unwrap();
        assert_eq!(written, original);
    }

    #[test]
    fn a_newer_servers_extra_fields_are_ignored() {
        let text = r#"{"revision": 2, "routes": [{"name": "web", "zone": "eu",
            "backends": [{"name": "b", "desired_weight": 100, "effective_weight": 100,
                          "endpoints": [{"address": "a:1", "healthy": true, "rtt_ms": 3}]}]}]}"#;
        let answer: RoutesAnswer = serde_json::from_str(text).unwrap();
        assert_eq!(answer.routes[0].backends[0].desired_weight, 100.0);
        assert_eq!(answer.routes[0].canary, Value::Null);
    }

    #[test]
    fn history_page_round_trips_in_the_servers_backend_order() {
        let page = HistoryPage {
            revisions: vec![
                RevisionView {
                    revision: 14,
                    time: time("2026-11-23T10:00:00Z"),
                    route: Some("web".into()),
                    weights: Some(weights(&[("green", 2500), ("blue", 7500)])),
                    previous: Some(weights(&[("green", 1000), ("blue", 9000)])),
                    source: Source::Admin,
                    reason: "more green".into(),
                    instance: None,
                    zone: None,
                    actor: "deploy-bot".into(),
                    client: Some("127.0.0.1:50000".into()),
                },
                RevisionView {
                    revision: 1,
                    time: time("2026-11-23T09:00:00Z"),
                    route: None,
                    weights: None,
                    previous: None,
                    source: Source::File,
                    reason: String::new(),
                    instance: None,
                    zone: None,
                    actor: "file".into(),
                    client: None,
                },
            ],
            next_before: Some(1),
        };
        assert_eq!(round_trip(&page), page);
        let text = serde_json::to_string(&page.revisions[0]).unwrap();
        assert_eq!(
            text,
            r#"{"revision":14,"time":"2026-11-23T10:00:00Z","route":"web","weights":{"green":25.0,"blue":75.0},"previous":{"green":10.0,"blue":90.0},"source":"admin","reason":"more green","actor":"deploy-bot","client":"127.0.0.1:50000"}"#
        );
    }

    #[test]
    fn a_revision_view_shows_what_the_history_recorded() {
        let revision = Revision {
            revision: 7,
            time: time("2026-11-23T10:00:00Z"),
            route: Some("web".into()),
            weights: Some(weights(&[("blue", 10_000)])),
            previous: None,
            source: Source::Canary,
            reason: "step 4".into(),
            instance: None,
            zone: None,
            request_id: None,
            actor: Some("canary".into()),
            client: None,
        };
        let view = RevisionView::from(revision.clone());
        // The history's own JSON (state file) and the API's agree today.
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            serde_json::to_value(&revision).unwrap()
        );
    }

    #[test]
    fn reload_mirror_stats_and_error_answers_round_trip() {
        let reload = ReloadAnswer {
            revision: 16,
            changed: true,
            routes_changed: vec!["web".into(), "api".into()],
        };
        assert_eq!(round_trip(&reload), reload);

        let mirror = MirrorView {
            route: "web".into(),
            backend: "green".into(),
            percent: 5.0,
            compare: true,
            max_body: 65536,
            max_concurrent: 64,
            outcomes: MirrorOutcomes {
                matched: 10,
                mismatch: 1,
                error: 0,
                skipped: 2,
            },
            mismatches: vec![MismatchView {
                time: time("2026-11-23T10:00:00Z"),
                method: "GET".into(),
                path: "/x".into(),
                primary_status: 200,
                mirror_status: 500,
                body_differs: false,
            }],
        };
        assert_eq!(round_trip(&mirror), mirror);
        assert_eq!(
            serde_json::to_value(&mirror).unwrap()["outcomes"]["match"],
            10
        );

        let point = PointView {
            t: 1_700_000_010,
            requests: 5,
            errors: 1,
            p99_ms: None,
        };
        let stats = StatsView {
            interval_seconds: 10,
            routes: BTreeMap::from([(
                "web".to_string(),
                RouteStats {
                    backends: BTreeMap::from([(
                        "blue".to_string(),
                        SeriesView {
                            points: vec![PointView {
                                p99_ms: Some(12.5),
                                ..point
                            }],
                            current: point,
                        },
                    )]),
                },
            )]),
        };
        assert_eq!(round_trip(&stats), stats);

        let error = ApiError {
            error: "invalid config: the running config stays".into(),
            errors: vec!["sluicegate.toml:3:5: weights sum to 90".into()],
        };
        assert_eq!(round_trip(&error), error);
        let plain = ApiError {
            error: "no route called `nope`".into(),
            errors: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"error":"no route called `nope`"}"#
        );
    }

    #[test]
    fn request_bodies_round_trip_and_send_whole_percents_as_integers() {
        let body = WeightsBody {
            weights: weights(&[("blue", 7500), ("green", 1250), ("red", 1250)]),
            reason: Some("shift".into()),
            if_revision: Some(12),
            zone: None,
        };
        let text = serde_json::to_string(&body).unwrap();
        assert_eq!(
            text,
            r#"{"weights":{"blue":75,"green":12.5,"red":12.5},"reason":"shift","if_revision":12}"#
        );
        assert_eq!(serde_json::from_str::<WeightsBody>(&text).unwrap(), body);

        let promote = PromoteBody {
            backend: "green".into(),
            reason: None,
        };
        assert_eq!(
            serde_json::to_string(&promote).unwrap(),
            r#"{"backend":"green"}"#
        );
        assert_eq!(round_trip(&promote), promote);
        assert_eq!(
            serde_json::to_string(&RollbackBody::default()).unwrap(),
            "{}"
        );
        assert_eq!(
            serde_json::from_str::<RollbackBody>(r#"{"to_revision":7}"#).unwrap(),
            RollbackBody {
                to_revision: Some(7)
            }
        );
    }

    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let typo = r#"{"weights": {"blue": 100}, "reasn": "x"}"#;
        assert!(serde_json::from_str::<WeightsBody>(typo).is_err());
        assert!(serde_json::from_str::<PromoteBody>(r#"{"backend":"b","to":1}"#).is_err());
        assert!(serde_json::from_str::<RollbackBody>(r#"{"revision":3}"#).is_err());
    }
}
