//! The one change pipeline: every mutation of the routing state is a
//! [`Change`] handed to [`State::apply`], which validates it, records its
//! revision(s), builds and publishes the snapshot under the writer lock, and
//! then, off the lock, saves the state file.
//!
//! A `Change` is plain data (serde: `{"change": "set_weights", …}`) so a
//! remote source (a fleet's etcd watch) can feed the same pipeline; only a
//! file change, which carries a prepared config, is local.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{BackendConfig, Config, ConfigErrors, ParseMemo, TOTAL_WEIGHT, Weight};
use crate::control::history::{Caller, Persisted, Revision, Source, WeightMap};
use crate::control::{Control, Route, State, health};
use crate::upstream::TlsClients;

/// One mutation of the routing state.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// `route`'s desired weights: `weights` names backends of the route (the
    /// ones left out get 0) and sums to 100. A canary's steps and rollbacks
    /// are this with source `canary`.
    SetWeights {
        route: String,
        weights: WeightMap,
        /// Refused with a conflict unless this is the latest revision.
        #[serde(default)]
        if_revision: Option<u64>,
        source: Source,
        /// Empty: `set blue=75 green=25`.
        #[serde(default)]
        reason: String,
        /// In a fleet: the weights of this zone's instances only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        zone: Option<String>,
    },
    /// In a fleet: drops `route`'s weights for `zone`, whose instances go
    /// back to the fleet-wide weights.
    DropZone { route: String, zone: String },
    /// All of `route`'s traffic to `backend`.
    Promote {
        route: String,
        backend: String,
        #[serde(default)]
        reason: String,
    },
    /// `route`'s weights from before its latest change, or those of revision
    /// `to_revision` (a change of that route).
    Rollback {
        route: String,
        #[serde(default)]
        to_revision: Option<u64>,
    },
    /// Drops `route`'s admin weights: back to the file's (source `file`).
    Reset { route: String },
    /// A new config file, prepared ([`prepare`]). A route whose weights the
    /// file changed takes the file's weights (dropping an admin override); a
    /// route the file left alone keeps its override. Ends every drain.
    #[serde(skip)]
    ApplyFile(Box<PreparedConfig>),
    /// Effective weights follow endpoint availability (health checks,
    /// ejection, drain): a revision with source `failover` per route that moved.
    Failover,
    /// Stops (or resumes) new requests to one endpoint; no revision.
    Drain {
        route: String,
        backend: String,
        endpoint: String,
        drain: bool,
    },
    /// Ends every drain (a reload of an unchanged file does this); no revision.
    UndrainAll,
    /// The fleet's state as this instance applies it (`fleet::sync`): the
    /// weights of each of its routes and the fleet's history, whole.
    #[serde(skip)]
    Fleet(FleetUpdate),
}

/// What a fleet's etcd says, for this instance: see [`Change::Fleet`].
#[derive(Debug, Clone, PartialEq)]
pub struct FleetUpdate {
    /// The fleet's latest revision.
    pub revision: u64,
    /// Per local route: the fleet's weights for it, or `None` to run on the
    /// file's (none in etcd, or other backend names).
    pub weights: Vec<(String, Option<WeightMap>)>,
    /// The fleet's revisions, oldest first.
    pub history: Vec<Revision>,
}

/// A weight change resolved against the routes: what a local change
/// records, and what a fleet writes to etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightChange {
    pub route: String,
    /// Every backend of the route, in its order, summing to 100.
    pub weights: WeightMap,
    /// The route's desired weights now.
    pub previous: Option<WeightMap>,
    pub source: Source,
    pub reason: String,
    pub zone: Option<String>,
    pub if_revision: Option<u64>,
}

/// Why a change was refused; each maps to one admin API status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    #[error("no route called `{0}`")]
    UnknownRoute(String),
    #[error("route `{route}` has no backend called `{backend}`")]
    UnknownBackend { route: String, backend: String },
    #[error("{0}")]
    Invalid(String),
    #[error("backend `{backend}` has no endpoint `{endpoint}`")]
    UnknownEndpoint { backend: String, endpoint: String },
    #[error("revision is {current}, not {expected}: reload the state and try again")]
    Conflict { expected: u64, current: u64 },
    /// The change needs `[fleet]` (zone-scoped weights).
    #[error("{0}")]
    NeedsFleet(String),
}

/// What an applied change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The latest revision after the change (unchanged when it recorded none).
    pub revision: u64,
    /// Routes whose weights changed.
    pub routes_changed: Vec<String>,
}

/// A validated config whose TLS clients are built (CA files read): what a
/// file change applies.
#[derive(Debug)]
pub struct PreparedConfig {
    pub config: Config,
    pub tls: TlsClients,
}

/// Builds `config`'s TLS clients; an unreadable or invalid CA file is an
/// error located at its `tls_ca` key.
pub fn prepare(config: Config) -> Result<PreparedConfig, ConfigErrors> {
    let tls = TlsClients::prepare(&config)?;
    Ok(PreparedConfig { config, tls })
}

/// Reads, validates and prepares the config file at `path`: what
/// `sluicegate check`, start-up and every reload do.
pub fn load(path: &Path) -> Result<PreparedConfig, ConfigErrors> {
    prepare(Config::load(path)?)
}

/// [`load`] through `memo` ([`Config::load_with`]): what reloads do.
pub fn load_with(path: &Path, memo: &mut ParseMemo) -> Result<PreparedConfig, ConfigErrors> {
    prepare(Config::load_with(path, memo)?)
}

fn needs_fleet() -> ChangeError {
    ChangeError::NeedsFleet("zone-scoped weights need [fleet] in the config".into())
}

impl State {
    /// Applies `change`: validates it, records its revision(s), publishes
    /// the new snapshot, then saves the state file off the writer lock.
    pub fn apply(&self, change: Change) -> Result<Applied, ChangeError> {
        self.apply_as(change, None)
    }

    /// [`State::apply`] for an admin caller, recorded on the revisions it makes.
    pub fn apply_by(&self, change: Change, caller: &Caller) -> Result<Applied, ChangeError> {
        self.apply_as(change, Some(caller))
    }

    fn apply_as(&self, change: Change, caller: Option<&Caller>) -> Result<Applied, ChangeError> {
        let (applied, save, new_revisions) = {
            let mut control = self.lock();
            let before = control.history.latest();
            let file_change = matches!(change, Change::ApplyFile(_));
            let routes_changed = self.apply_locked(&mut control, change)?;
            if let Some(caller) = caller {
                control.history.attribute(before, caller);
            }
            if file_change {
                self.notifier
                    .configure(&control.config.notify, &self.telemetry);
            }
            let revision = control.history.latest();
            let new_revisions = control.history.since(before);
            if revision < before {
                // Only a fleet's history goes back: its etcd was restored.
                self.persister.numbering_restarted();
            }
            let save = (revision != before)
                .then(|| {
                    let path = control.config.admin.state_file.clone()?;
                    let state =
                        Persisted::of(&control.history, &control.overrides, &control.config);
                    Some((path, state))
                })
                .flatten();
            (
                Applied {
                    revision,
                    routes_changed,
                },
                save,
                new_revisions,
            )
        };
        if let Some((path, state)) = save {
            self.persister.save(path, state);
        }
        for revision in &new_revisions {
            self.notifier.revision(revision);
        }
        Ok(applied)
    }

    /// The change under the writer lock; returns the routes whose weights changed.
    fn apply_locked(
        &self,
        control: &mut Control,
        change: Change,
    ) -> Result<Vec<String>, ChangeError> {
        match change {
            change @ (Change::SetWeights { .. }
            | Change::Promote { .. }
            | Change::Rollback { .. }) => {
                let resolved = self.resolve_locked(control, &change)?;
                if resolved.zone.is_some() {
                    return Err(needs_fleet());
                }
                self.check_revision(control, resolved.if_revision)?;
                Ok(self.commit_locked(control, resolved))
            }
            Change::DropZone { .. } => Err(needs_fleet()),
            Change::Reset { route } => self.reset_locked(control, &route),
            Change::Fleet(update) => Ok(self.fleet_locked(control, update)),
            Change::ApplyFile(prepared) => Ok(self.apply_file_locked(control, *prepared)),
            Change::Failover => Ok(self.failover_locked(control)),
            Change::Drain {
                route,
                backend,
                endpoint,
                drain,
            } => {
                self.drain_locked(&route, &backend, &endpoint, drain)?;
                Ok(Vec::new())
            }
            Change::UndrainAll => {
                self.undrain_all();
                Ok(Vec::new())
            }
        }
    }

    /// Resolves a weight change (set, promote, rollback, reset) against the
    /// routes and history without applying it.
    pub fn resolve(&self, change: &Change) -> Result<WeightChange, ChangeError> {
        let control = self.lock();
        self.resolve_locked(&control, change)
    }

    fn resolve_locked(
        &self,
        control: &Control,
        change: &Change,
    ) -> Result<WeightChange, ChangeError> {
        let (route, weights, source, reason, zone, if_revision) = match change {
            Change::SetWeights {
                route,
                weights,
                if_revision,
                source,
                reason,
                zone,
            } => (
                route.clone(),
                weights.clone(),
                *source,
                reason.clone(),
                zone.clone(),
                *if_revision,
            ),
            Change::Promote {
                route,
                backend,
                reason,
            } => {
                let reason = if reason.is_empty() {
                    format!("promote {backend}")
                } else {
                    reason.clone()
                };
                let weights = WeightMap(vec![(backend.clone(), Weight::FULL)]);
                (route.clone(), weights, Source::Admin, reason, None, None)
            }
            Change::Rollback { route, to_revision } => {
                if control.config.route(route).is_none() {
                    return Err(ChangeError::UnknownRoute(route.clone()));
                }
                let (weights, reason) = control
                    .history
                    .rollback_target(route, *to_revision)
                    .map_err(ChangeError::Invalid)?;
                (route.clone(), weights, Source::Admin, reason, None, None)
            }
            Change::Reset { route } => {
                let route_config = control
                    .config
                    .route(route)
                    .ok_or_else(|| ChangeError::UnknownRoute(route.clone()))?;
                let weights = crate::control::history::file_weights(route_config);
                let reason = "back to the file's weights".to_string();
                (route.clone(), weights, Source::File, reason, None, None)
            }
            other => {
                return Err(ChangeError::Invalid(format!(
                    "not a weight change: {other:?}"
                )));
            }
        };
        let route_config = control
            .config
            .route(&route)
            .ok_or_else(|| ChangeError::UnknownRoute(route.clone()))?;
        for (name, _) in &weights.0 {
            if route_config.backend_index(name).is_none() {
                return Err(ChangeError::UnknownBackend {
                    route: route.clone(),
                    backend: name.clone(),
                });
            }
        }
        let full = WeightMap(
            route_config
                .backends
                .iter()
                .map(|b| (b.name.clone(), weights.get(&b.name)))
                .collect(),
        );
        let total: u32 = full.0.iter().map(|(_, w)| w.0).sum();
        if total != TOTAL_WEIGHT {
            return Err(ChangeError::Invalid(format!(
                "weights sum to {}, they must sum to 100",
                Weight(total)
            )));
        }
        let previous = self.current.load().route(&route).map(Route::weights);
        let reason = if reason.is_empty() {
            format!("set {}", full.describe())
        } else {
            reason
        };
        Ok(WeightChange {
            route,
            weights: full,
            previous,
            source,
            reason,
            zone,
            if_revision,
        })
    }

    fn check_revision(
        &self,
        control: &Control,
        if_revision: Option<u64>,
    ) -> Result<(), ChangeError> {
        let current = control.history.latest();
        match if_revision {
            Some(expected) if expected != current => {
                Err(ChangeError::Conflict { expected, current })
            }
            _ => Ok(()),
        }
    }

    /// Records and publishes a resolved weight change of this instance.
    fn commit_locked(&self, control: &mut Control, change: WeightChange) -> Vec<String> {
        control
            .overrides
            .insert(change.route.clone(), change.weights.clone());
        control.history.record(
            Some(&change.route),
            Some(change.weights),
            change.previous,
            change.source,
            change.reason,
        );
        self.publish_weights(control, &change.route);
        vec![change.route]
    }

    /// Takes the fleet's weights and history: one new snapshot.
    fn fleet_locked(&self, control: &mut Control, update: FleetUpdate) -> Vec<String> {
        let current = self.current.load_full();
        let mut changed = Vec::new();
        for (route, weights) in update.weights {
            let Some(route_config) = control.config.route(&route) else {
                continue;
            };
            let desired = weights
                .clone()
                .unwrap_or_else(|| crate::control::history::file_weights(route_config));
            if current.route(&route).map(Route::weights).as_ref() != Some(&desired) {
                changed.push(route.clone());
            }
            match weights {
                Some(weights) => control.overrides.insert(route, weights),
                None => control.overrides.remove(&route),
            };
        }
        control.history.replace(update.history, update.revision);
        self.publish(control);
        changed
    }

    fn reset_locked(&self, control: &mut Control, route: &str) -> Result<Vec<String>, ChangeError> {
        let route_config = control
            .config
            .route(route)
            .ok_or_else(|| ChangeError::UnknownRoute(route.to_string()))?;
        let file = crate::control::history::file_weights(route_config);
        let previous = self.current.load().route(route).map(Route::weights);
        // (A fleet resets through etcd: see fleet::write.)
        let reason = if control.overrides.remove(route).is_some() {
            "admin weights dropped: back to the file's weights"
        } else {
            "back to the file's weights (there were no admin weights)"
        };
        control.history.record(
            Some(route),
            Some(file),
            previous,
            Source::File,
            reason.to_string(),
        );
        self.publish_weights(control, route);
        Ok(vec![route.to_string()])
    }

    fn apply_file_locked(&self, control: &mut Control, prepared: PreparedConfig) -> Vec<String> {
        let PreparedConfig { config, tls } = prepared;
        let old = Arc::clone(&control.config);
        let sockets = |c: &Config| -> Vec<(std::net::SocketAddr, bool)> {
            c.listeners
                .iter()
                .map(|l| (l.addr, l.tls.is_some()))
                .collect()
        };
        if sockets(&old) != sockets(&config) || old.admin.addr != config.admin.addr {
            tracing::warn!(
                "listener or admin addresses changed: that needs a restart; the running sockets stay as they are"
            );
        }
        if old.access_log != config.access_log {
            tracing::warn!(
                "access_log settings changed: that needs a restart; the log stays as it is"
            );
        }
        let current = self.current.load_full();
        // In place when the routes kept their order, else by name (built at
        // the first miss), so that a reload stays linear in the routes.
        let mut old_by_name: Option<HashMap<&str, &crate::config::RouteConfig>> = None;
        // Compared in place: a reload of 10,000 unchanged routes allocates
        // no weight maps.
        let same_weights = |a: &[BackendConfig], b: &[BackendConfig]| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(a, b)| a.name == b.name && a.weight == b.weight)
        };
        let mut changes = Vec::new();
        for (i, route) in config.routes.iter().enumerate() {
            let old_route = match old.routes.get(i).filter(|o| o.name == route.name) {
                Some(same_place) => Some(&**same_place),
                None => old_by_name
                    .get_or_insert_with(|| {
                        old.routes.iter().map(|r| (r.name.as_str(), &**r)).collect()
                    })
                    .get(route.name.as_str())
                    .copied(),
            };
            if let Some(kept) = control.overrides.get(&route.name) {
                let file_changed =
                    old_route.is_none_or(|old| !same_weights(&old.backends, &route.backends));
                let names: Vec<&str> = route.backends.iter().map(|b| b.name.as_str()).collect();
                if file_changed || !kept.has_backends(&names) {
                    control.overrides.remove(&route.name);
                }
            }
            let desired = control.overrides.get(&route.name);
            let before = current.route(&route.name);
            let unchanged = before.is_some_and(|before| {
                let now = before.backends.iter().map(|b| (b.name.as_str(), b.weight));
                match desired {
                    Some(kept) => now.eq(kept.0.iter().map(|(n, w)| (n.as_str(), *w))),
                    None => now.eq(route.backends.iter().map(|b| (b.name.as_str(), b.weight))),
                }
            });
            if !unchanged {
                let desired = desired
                    .cloned()
                    .unwrap_or_else(|| crate::control::history::file_weights(route));
                changes.push((route.name.clone(), desired, before.map(Route::weights)));
            }
        }
        let names: HashSet<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        control
            .overrides
            .retain(|name, _| names.contains(name.as_str()));
        let replaced = std::mem::replace(&mut control.config, Arc::new(config));
        crate::control::drop_later((old, replaced));
        control.tls = Arc::new(tls);
        let routes_changed: Vec<String> = changes.iter().map(|(n, _, _)| n.clone()).collect();
        if changes.is_empty() {
            control.history.record(
                None,
                None,
                None,
                Source::File,
                "config reloaded".to_string(),
            );
        }
        for (route, desired, before) in changes {
            control.history.record(
                Some(&route),
                Some(desired),
                before,
                Source::File,
                "config reloaded".to_string(),
            );
        }
        self.publish(control);
        self.undrain_all();
        routes_changed
    }

    fn failover_locked(&self, control: &mut Control) -> Vec<String> {
        let current = self.current.load_full();
        let failovers = health::failovers(&current);
        if failovers.is_empty() {
            return Vec::new();
        }
        let mut routes = Vec::with_capacity(failovers.len());
        for failover in failovers {
            control.history.record(
                Some(&failover.route),
                Some(failover.effective),
                Some(failover.previous),
                Source::Failover,
                failover.reason,
            );
            routes.push(failover.route);
        }
        self.publish(control);
        routes
    }

    fn drain_locked(
        &self,
        route: &str,
        backend: &str,
        endpoint: &str,
        drain: bool,
    ) -> Result<(), ChangeError> {
        let snapshot = self.current.load_full();
        let r = snapshot
            .route(route)
            .ok_or_else(|| ChangeError::UnknownRoute(route.to_string()))?;
        let b = r
            .backend(backend)
            .ok_or_else(|| ChangeError::UnknownBackend {
                route: route.to_string(),
                backend: backend.to_string(),
            })?;
        let e = b
            .endpoint(endpoint)
            .ok_or_else(|| ChangeError::UnknownEndpoint {
                backend: backend.to_string(),
                endpoint: endpoint.to_string(),
            })?;
        e.set_draining(drain);
        Ok(())
    }

    /// Ends the drain of every endpoint of the snapshot in force.
    fn undrain_all(&self) {
        let snapshot = self.current.load_full();
        for endpoint in snapshot
            .routes
            .iter()
            .flat_map(|r| &r.backends)
            .flat_map(|b| &b.endpoints)
        {
            endpoint.set_draining(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(crate::config::blue_green_90_10())
    }

    fn weights(state: &State) -> String {
        state.snapshot().route("web").unwrap().weights().describe()
    }

    #[test]
    fn a_change_is_plain_data_in_json() {
        let json = r#"{"change":"set_weights","route":"web","weights":{"blue":75,"green":25},"source":"admin"}"#;
        let change: Change = serde_json::from_str(json).unwrap();
        assert!(
            matches!(&change, Change::SetWeights { route, if_revision: None, .. } if route == "web")
        );
        let back = serde_json::to_value(&change).unwrap();
        assert_eq!(back["weights"]["blue"], 75.0);
        let rollback: Change =
            serde_json::from_str(r#"{"change":"rollback","route":"web"}"#).unwrap();
        assert!(matches!(
            rollback,
            Change::Rollback {
                to_revision: None,
                ..
            }
        ));
        let prepared = prepare(crate::config::blue_green_90_10()).unwrap();
        assert!(serde_json::to_string(&Change::ApplyFile(Box::new(prepared))).is_err());
    }

    #[test]
    fn every_change_goes_through_apply_with_gap_free_revisions() {
        let state = state();
        let start = state.revision();
        let set = |blue: f64, green: f64| Change::SetWeights {
            route: "web".into(),
            weights: WeightMap(vec![
                ("blue".into(), Weight::from_percent(blue).unwrap()),
                ("green".into(), Weight::from_percent(green).unwrap()),
            ]),
            if_revision: None,
            source: Source::Admin,
            reason: String::new(),
            zone: None,
        };
        let applied = state.apply(set(75.0, 25.0)).unwrap();
        assert_eq!(applied.revision, start + 1);
        assert_eq!(applied.routes_changed, ["web"]);
        assert_eq!(weights(&state), "blue=75 green=25");
        let promoted = state
            .apply(Change::Promote {
                route: "web".into(),
                backend: "green".into(),
                reason: String::new(),
            })
            .unwrap();
        assert_eq!(promoted.revision, start + 2);
        assert_eq!(weights(&state), "blue=0 green=100");
        state
            .apply(Change::Rollback {
                route: "web".into(),
                to_revision: None,
            })
            .unwrap();
        assert_eq!(weights(&state), "blue=75 green=25");
        assert!(state.has_override("web"));
        let reset = state
            .apply(Change::Reset {
                route: "web".into(),
            })
            .unwrap();
        assert_eq!(reset.revision, start + 4);
        assert_eq!(weights(&state), "blue=90 green=10");
        assert!(!state.has_override("web"));
        let (history, _) = state.history(10, None, Some("web"));
        assert_eq!(history[0].source, Source::File);

        // Drain and failover without a flip record nothing.
        let drained = state
            .apply(Change::Drain {
                route: "web".into(),
                backend: "blue".into(),
                endpoint: "127.0.0.1:1".into(),
                drain: true,
            })
            .unwrap();
        assert_eq!(drained.revision, start + 4);
        let failover = state.apply(Change::Failover).unwrap();
        assert_eq!(
            failover.routes_changed,
            ["web"],
            "blue lost its only endpoint"
        );
        assert_eq!(failover.revision, start + 5);
        assert_eq!(
            state
                .snapshot()
                .route("web")
                .unwrap()
                .effective_weights()
                .describe(),
            "blue=0 green=100"
        );
        state.apply(Change::UndrainAll).unwrap();
        assert_eq!(state.apply(Change::Failover).unwrap().revision, start + 6);
        assert_eq!(state.apply(Change::Failover).unwrap().revision, start + 6);
    }

    #[test]
    fn a_refused_change_records_nothing() {
        let state = state();
        let start = state.revision();
        let conflict = state.apply(Change::SetWeights {
            route: "web".into(),
            weights: WeightMap(vec![("blue".into(), Weight::FULL)]),
            if_revision: Some(start - 1),
            source: Source::Admin,
            reason: String::new(),
            zone: None,
        });
        assert_eq!(
            conflict.unwrap_err(),
            ChangeError::Conflict {
                expected: start - 1,
                current: start
            }
        );
        let unknown = state.apply(Change::Promote {
            route: "web".into(),
            backend: "red".into(),
            reason: String::new(),
        });
        assert!(matches!(unknown, Err(ChangeError::UnknownBackend { .. })));
        assert!(matches!(
            state.apply(Change::Reset {
                route: "shop".into()
            }),
            Err(ChangeError::UnknownRoute(_))
        ));
        assert_eq!(state.revision(), start);
    }
}
