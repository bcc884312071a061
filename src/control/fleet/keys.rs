//! The fleet's keys under `prefix`, and the JSON records stored there:
//!
//! | key | value |
//! |---|---|
//! | `P/revision` | the fleet's latest revision number (decimal) |
//! | `P/history/00000000000000000042` | revision 42 ([`Revision`] JSON) |
//! | `P/weights/ROUTE` | the route's fleet-wide desired weights ([`WeightsRecord`]) |
//! | `P/zones/ZONE/weights/ROUTE` | the route's weights for instances in ZONE |
//! | `P/instances/NAME` | one instance's registration, under its lease ([`InstanceView`]) |
//! | `P/canary/ROUTE/controller` | the instance running ROUTE's canary controller, under its lease |
//! | `P/canary/ROUTE/state` | ROUTE's canary (plan, phase, step), written by its controller |
//! | `P/canary/ROUTE/stats/NAME` | instance NAME's counts of the step in force, under its lease |
//!
//! A route name is written with `%` and `/` escaped, so every key part is one
//! segment.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::FleetConfig;
use crate::control::Snapshot;
pub use crate::control::admin::api::{InstanceView, RouteWeightsView};
use crate::control::history::{Revision, WeightMap};

/// The keys of one fleet.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// `prefix/`: every key of the fleet starts with it.
    pub root: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            root: format!("{prefix}/"),
        }
    }

    pub fn revision(&self) -> String {
        format!("{}revision", self.root)
    }

    pub fn history(&self, revision: u64) -> String {
        format!("{}history/{revision:020}", self.root)
    }

    pub fn history_prefix(&self) -> String {
        format!("{}history/", self.root)
    }

    pub fn weights(&self, route: &str, zone: Option<&str>) -> String {
        match zone {
            None => format!("{}weights/{}", self.root, escape(route)),
            Some(zone) => format!("{}zones/{zone}/weights/{}", self.root, escape(route)),
        }
    }

    pub fn instance(&self, name: &str) -> String {
        format!("{}instances/{name}", self.root)
    }

    /// The instance running `route`'s canary controller (under its lease).
    pub fn controller(&self, route: &str) -> String {
        format!("{}canary/{}/controller", self.root, escape(route))
    }

    /// `route`'s canary state, written by its controller.
    pub fn canary_state(&self, route: &str) -> String {
        format!("{}canary/{}/state", self.root, escape(route))
    }

    /// One instance's counts of `route`'s canary step (under its lease).
    pub fn canary_stats(&self, route: &str, instance: &str) -> String {
        format!("{}canary/{}/stats/{instance}", self.root, escape(route))
    }

    /// What `key` is, when it is one of the fleet's.
    pub fn parse<'k>(&self, key: &'k str) -> Option<Key<'k>> {
        let rest = key.strip_prefix(self.root.as_str())?;
        let parts: Vec<&str> = rest.split('/').collect();
        Some(match parts.as_slice() {
            ["revision"] => Key::Revision,
            ["history", number] => Key::History(number.parse().ok()?),
            ["weights", route] => Key::Weights {
                route: unescape(route),
                zone: None,
            },
            ["zones", zone, "weights", route] => Key::Weights {
                route: unescape(route),
                zone: Some(zone),
            },
            ["instances", name] => Key::Instance(name),
            ["canary", route, "controller"] => Key::Controller(unescape(route)),
            ["canary", route, "state"] => Key::CanaryState(unescape(route)),
            ["canary", route, "stats", instance] => Key::CanaryStats(unescape(route), instance),
            _ => return None,
        })
    }
}

/// One of the fleet's keys.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Key<'k> {
    Revision,
    History(u64),
    Weights {
        route: String,
        zone: Option<&'k str>,
    },
    Instance(&'k str),
    Controller(String),
    CanaryState(String),
    CanaryStats(String, &'k str),
}

fn escape(route: &str) -> String {
    route.replace('%', "%25").replace('/', "%2F")
}

fn unescape(part: &str) -> String {
    part.replace("%2F", "/").replace("%25", "%")
}

/// `P/weights/ROUTE`: desired weights and the revision that set them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WeightsRecord {
    pub weights: WeightMap,
    pub revision: u64,
}

/// The number the revision counter key holds (0 when absent or unreadable).
pub(super) fn counter_number(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// One history entry, checked as it is read from etcd.
pub(super) fn parse_revision(bytes: &[u8]) -> Result<Revision, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// This instance's registration, from the snapshot in force.
pub(super) fn instance_record(
    config: &FleetConfig,
    snapshot: &Snapshot,
    connected: bool,
    applied_revision: u64,
    canary_controller: Vec<String>,
    on_fleet_weights: &dyn Fn(&str) -> bool,
) -> InstanceView {
    let routes = snapshot
        .routes
        .iter()
        .map(|route| {
            let weights_from = if on_fleet_weights(route.name()) {
                "fleet"
            } else {
                "file"
            };
            (
                route.name().to_string(),
                RouteWeightsView {
                    desired: route.weights(),
                    effective: route.effective_weights(),
                    weights_from: weights_from.to_string(),
                    healthy: route
                        .backends
                        .iter()
                        .map(|b| {
                            let up = b.endpoints.iter().filter(|e| e.available()).count();
                            (b.name.clone(), format!("{up}/{}", b.endpoints.len()))
                        })
                        .collect(),
                },
            )
        })
        .collect();
    InstanceView {
        instance: config.instance.clone(),
        zone: config.zone.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        connected,
        applied_revision,
        last_seen: SystemTime::now(),
        canary_controller,
        config_hash: snapshot.config.source_hash.map(|h| format!("{h:016x}")),
        routes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_as_what_they_name() {
        let keys = Keys::new("/sg/prod");
        assert_eq!(keys.parse(&keys.revision()), Some(Key::Revision));
        assert_eq!(keys.history(42), "/sg/prod/history/00000000000000000042");
        assert_eq!(keys.parse(&keys.history(42)), Some(Key::History(42)));
        let zoned = keys.weights("a/b%c", Some("eu"));
        assert_eq!(zoned, "/sg/prod/zones/eu/weights/a%2Fb%25c");
        assert_eq!(
            keys.parse(&zoned),
            Some(Key::Weights {
                route: "a/b%c".into(),
                zone: Some("eu")
            })
        );
        assert_eq!(
            keys.parse(&keys.instance("edge-1")),
            Some(Key::Instance("edge-1"))
        );
        assert_eq!(keys.parse("/sg/prod/unknown/x"), None);
        assert_eq!(keys.parse("/sg/other/revision"), None);
    }
}
