//! The routing state: one immutable [`Snapshot`] behind one `ArcSwap`, and
//! the one writer lock that orders every change to it.
//!
//! A request loads the snapshot once and uses it to the end, so a reload or a
//! weight change takes effect on the next request and never half-way through
//! one. Every change (file reload, admin call, failover) goes through
//! [`State`]: it takes the lock, records a numbered revision, builds a new
//! snapshot and swaps it in whole.

pub mod admin;
pub mod balance;
pub mod canary;
pub mod gauges;
pub mod health;
pub mod history;
pub mod reload;
mod router;
mod snapshot;

pub use snapshot::{Backend, EndpointPool, Route, Snapshot, effective_weights};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};

use crate::config::{Config, TOTAL_WEIGHT, Weight};
use crate::control::history::{MAX_HISTORY, Persisted, Revision, Source, WeightMap};
use crate::telemetry::Telemetry;
use crate::telemetry::access_log::AccessLog;

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
}

/// The result of applying a new config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub revision: u64,
    /// Routes whose weights changed.
    pub routes_changed: Vec<String>,
}

/// The shared, swappable routing state and the one writer lock that orders
/// every change to it.
#[derive(Debug)]
pub struct State {
    current: ArcSwap<Snapshot>,
    pool: EndpointPool,
    telemetry: Arc<Telemetry>,
    access_log: Option<Arc<AccessLog>>,
    control: Mutex<Control>,
    /// The revision of every published snapshot, for the health manager.
    revisions: watch::Sender<u64>,
}

/// The writer side: what the snapshot is built from, and the history.
#[derive(Debug)]
struct Control {
    config: Arc<Config>,
    overrides: HashMap<String, WeightMap>,
    history: VecDeque<Revision>,
    revision: u64,
}

impl State {
    /// State serving `config`, with admin overrides and history restored from
    /// its state file when one is configured.
    pub fn new(config: Config) -> State {
        let persisted = config
            .admin
            .state_file
            .as_deref()
            .map(Persisted::load)
            .unwrap_or_default();
        let mut overrides = HashMap::new();
        let saved_file_weights: HashMap<String, WeightMap> =
            persisted.file_weights.into_iter().collect();
        for (route, weights) in persisted.overrides {
            // Latest change wins: a file edited while sluicegate was stopped
            // is newer than the saved admin change.
            let file_changed = match (saved_file_weights.get(&route), config.route(&route)) {
                (Some(saved), Some(rc)) => *saved != file_weights(rc),
                _ => false,
            };
            if file_changed {
                tracing::info!(%route, "the config file's weights changed while stopped: they replace the saved admin weights");
                continue;
            }
            match validate_override(&config, &route, &weights) {
                Ok(()) => {
                    overrides.insert(route, weights);
                }
                Err(e) => {
                    tracing::warn!(%route, error = %e, "dropping a saved admin override that no longer fits the config")
                }
            }
        }
        let mut control = Control {
            config: Arc::new(config),
            overrides,
            history: persisted.history.into_iter().collect(),
            revision: persisted.revision,
        };
        let reason = match &control.config.source {
            Some(path) => format!("started from {}", path.display()),
            None => "started".to_string(),
        };
        control.record(None, None, None, Source::File, reason);
        let pool = EndpointPool::default();
        let telemetry = Arc::new(Telemetry::new());
        let snapshot = Snapshot::build(
            Arc::clone(&control.config),
            control.revision,
            &control.overrides,
            &pool,
            &telemetry,
        );
        let state = State {
            revisions: watch::Sender::new(snapshot.revision),
            current: ArcSwap::from_pointee(snapshot),
            pool,
            telemetry,
            access_log: None,
            control: Mutex::new(control),
        };
        state.persist();
        state
    }

    /// The snapshot in force now.
    #[inline]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The snapshot in force now, as an owned `Arc`.
    #[inline]
    pub fn snapshot_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The latest revision number.
    pub fn revision(&self) -> u64 {
        self.current.load().revision
    }

    /// Whether `route` runs on weights set through the admin API.
    pub fn has_override(&self, route: &str) -> bool {
        self.lock().overrides.contains_key(route)
    }

    /// Revisions newest first: at most `limit`, older than `before`, of `route`.
    /// Also returns the `before` for the next page, if there is one.
    pub fn history(
        &self,
        limit: usize,
        before: Option<u64>,
        route: Option<&str>,
    ) -> (Vec<Revision>, Option<u64>) {
        let control = self.lock();
        let mut matching = control
            .history
            .iter()
            .rev()
            .filter(|r| before.is_none_or(|b| r.revision < b))
            .filter(|r| route.is_none_or(|name| r.route.as_deref() == Some(name)));
        let page: Vec<Revision> = matching.by_ref().take(limit).cloned().collect();
        let next = matching.next().and(page.last().map(|r| r.revision));
        (page, next)
    }

    /// Sets the weights of `route`: `weights` names backends of the route
    /// (the ones left out get 0) and sums to 100.
    pub fn set_weights(
        &self,
        route: &str,
        weights: &WeightMap,
        if_revision: Option<u64>,
        source: Source,
        reason: &str,
    ) -> Result<u64, ChangeError> {
        let mut control = self.lock();
        if let Some(expected) = if_revision
            && expected != control.revision
        {
            return Err(ChangeError::Conflict {
                expected,
                current: control.revision,
            });
        }
        let route_config = control
            .config
            .route(route)
            .ok_or_else(|| ChangeError::UnknownRoute(route.to_string()))?;
        for (name, _) in &weights.0 {
            if route_config.backend_index(name).is_none() {
                return Err(ChangeError::UnknownBackend {
                    route: route.to_string(),
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
        let previous = self.current.load().route(route).map(Route::weights);
        control.overrides.insert(route.to_string(), full.clone());
        let reason = if reason.is_empty() {
            format!("set {}", full.describe())
        } else {
            reason.to_string()
        };
        control.record(Some(route), Some(full), previous, source, reason);
        Ok(self.publish(&control))
    }

    /// Sends all of `route`'s traffic to `backend`.
    pub fn promote(&self, route: &str, backend: &str, reason: &str) -> Result<u64, ChangeError> {
        let weights = WeightMap(vec![(backend.to_string(), Weight::FULL)]);
        let reason = if reason.is_empty() {
            format!("promote {backend}")
        } else {
            reason.to_string()
        };
        self.set_weights(route, &weights, None, Source::Admin, &reason)
    }

    /// Restores `route`'s weights from before its latest change, or those of
    /// revision `to` (which must be a change of that route).
    pub fn rollback(&self, route: &str, to: Option<u64>) -> Result<u64, ChangeError> {
        let (weights, reason) = {
            let control = self.lock();
            if control.config.route(route).is_none() {
                return Err(ChangeError::UnknownRoute(route.to_string()));
            }
            // Failover entries record effective weights, never a choice to go back to.
            let of_route = |r: &&Revision| {
                r.route.as_deref() == Some(route)
                    && r.weights.is_some()
                    && r.source != Source::Failover
            };
            match to {
                Some(n) => {
                    let target = control.history.iter().filter(of_route).find(|r| r.revision == n).ok_or_else(|| {
                        ChangeError::Invalid(format!("revision {n} is not a weight change of route `{route}` in the history"))
                    })?;
                    (
                        target.weights.clone().unwrap_or_default(),
                        format!("rollback to revision {n}"),
                    )
                }
                None => {
                    let latest = control.history.iter().rev().find(of_route).ok_or_else(|| {
                        ChangeError::Invalid(format!(
                            "route `{route}` has no weight change to roll back"
                        ))
                    })?;
                    let previous = latest.previous.clone().ok_or_else(|| {
                        ChangeError::Invalid(format!(
                            "revision {} of route `{route}` has no earlier weights",
                            latest.revision
                        ))
                    })?;
                    (
                        previous,
                        format!("rollback of revision {}", latest.revision),
                    )
                }
            }
        };
        self.set_weights(route, &weights, None, Source::Admin, &reason)
    }

    /// Applies a new config from the file. A route whose weights the file
    /// changed takes the file's weights (dropping an admin override); a route
    /// the file left alone keeps its override.
    pub fn apply_file(&self, config: Config) -> Applied {
        let mut control = self.lock();
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
        let mut changes = Vec::new();
        for route in &config.routes {
            let file_weights = WeightMap(
                route
                    .backends
                    .iter()
                    .map(|b| (b.name.clone(), b.weight))
                    .collect(),
            );
            let old_file_weights = old.route(&route.name).map(|r| {
                WeightMap(
                    r.backends
                        .iter()
                        .map(|b| (b.name.clone(), b.weight))
                        .collect(),
                )
            });
            if let Some(kept) = control.overrides.get(&route.name) {
                let file_changed = old_file_weights.as_ref() != Some(&file_weights);
                let names: Vec<&str> = route.backends.iter().map(|b| b.name.as_str()).collect();
                if file_changed || !kept.has_backends(&names) {
                    control.overrides.remove(&route.name);
                }
            }
            let desired = control
                .overrides
                .get(&route.name)
                .cloned()
                .unwrap_or(file_weights);
            let before = current.route(&route.name).map(Route::weights);
            if before.as_ref() != Some(&desired) {
                changes.push((route.name.clone(), desired, before));
            }
        }
        control
            .overrides
            .retain(|name, _| config.route(name).is_some());
        control.config = Arc::new(config);
        let routes_changed: Vec<String> = changes.iter().map(|(n, _, _)| n.clone()).collect();
        if changes.is_empty() {
            control.record(
                None,
                None,
                None,
                Source::File,
                "config reloaded".to_string(),
            );
        }
        for (route, desired, before) in changes {
            control.record(
                Some(&route),
                Some(desired),
                before,
                Source::File,
                "config reloaded".to_string(),
            );
        }
        let revision = self.publish(&control);
        self.undrain_all();
        Applied {
            revision,
            routes_changed,
        }
    }

    /// Builds and swaps in the snapshot for `control`, then saves the state file.
    fn publish(&self, control: &Control) -> u64 {
        let snapshot = Snapshot::build(
            Arc::clone(&control.config),
            control.revision,
            &control.overrides,
            &self.pool,
            &self.telemetry,
        );
        self.current.store(Arc::new(snapshot));
        save(control);
        self.revisions.send_replace(control.revision);
        control.revision
    }

    /// Sends every request's line to `log` from now on.
    pub fn set_access_log(&mut self, log: AccessLog) {
        self.access_log = Some(Arc::new(log));
    }

    /// The access log, when on.
    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.access_log.as_ref()
    }

    /// This proxy's metrics.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Wakes revision subscribers (certificate reload, health checks) without
    /// a new revision: a reload found the config unchanged.
    pub fn notify_unchanged_reload(&self) {
        self.revisions.send_modify(|_| {});
    }

    /// A receiver that sees the revision of every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revisions.subscribe()
    }

    /// Woken whenever an endpoint's availability flips.
    pub fn endpoint_changes(&self) -> Arc<Notify> {
        Arc::clone(&self.pool.changes)
    }

    /// Rebuilds the snapshot when a backend group lost or regained every
    /// endpoint, recording the failover as a revision.
    pub fn refresh_health(&self) -> Option<u64> {
        let mut control = self.lock();
        let current = self.current.load_full();
        let mut changed = false;
        for route in &current.routes {
            let now: Vec<bool> = route.backends.iter().map(Backend::any_available).collect();
            let before: Vec<bool> = route.backends.iter().map(|b| b.available).collect();
            if now == before {
                continue;
            }
            changed = true;
            let desired: Vec<Weight> = route.backends.iter().map(|b| b.weight).collect();
            let effective = effective_weights(&desired, &now, route.config.failover);
            let weights = WeightMap(
                route
                    .backends
                    .iter()
                    .map(|b| b.name.clone())
                    .zip(effective)
                    .collect(),
            );
            let down: Vec<&str> = route
                .backends
                .iter()
                .zip(&now)
                .filter(|(_, up)| !**up)
                .map(|(b, _)| b.name.as_str())
                .collect();
            for ((backend, was), is) in route.backends.iter().zip(&before).zip(&now) {
                if *was && !*is {
                    backend.metrics.record_failover();
                }
            }
            let reason = if down.is_empty() {
                "every backend available again".to_string()
            } else if route.config.failover {
                format!(
                    "no available endpoint in {}: share moved to available backends",
                    down.join(", ")
                )
            } else {
                format!(
                    "no available endpoint in {} (failover off: its share gets 503)",
                    down.join(", ")
                )
            };
            control.record(
                Some(route.name()),
                Some(weights),
                Some(route.effective_weights()),
                Source::Failover,
                reason,
            );
        }
        changed.then(|| self.publish(&control))
    }

    /// Ends every drain: a reload does this (issue: "undrain by reload").
    pub fn undrain_all(&self) {
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

    /// Drains (or undrains) one endpoint of `route`'s `backend`.
    pub fn drain(
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

    fn persist(&self) {
        save(&self.lock());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        // A panic while holding the lock cannot leave Control half-written in a
        // way that matters more than stopping every later change.
        self.control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Control {
    fn record(
        &mut self,
        route: Option<&str>,
        weights: Option<WeightMap>,
        previous: Option<WeightMap>,
        source: Source,
        reason: String,
    ) {
        self.revision += 1;
        if let (Some(route), Some(weights)) = (route, &weights) {
            tracing::info!(revision = self.revision, %route, weights = %weights.describe(), ?source, %reason, "weights changed");
        } else {
            tracing::info!(revision = self.revision, ?source, %reason, "config applied");
        }
        self.history.push_back(Revision {
            revision: self.revision,
            time: SystemTime::now(),
            route: route.map(str::to_string),
            weights,
            previous,
            source,
            reason,
        });
        while self.history.len() > MAX_HISTORY {
            self.history.pop_front();
        }
    }
}

fn save(control: &Control) {
    let Some(path) = control.config.admin.state_file.as_deref() else {
        return;
    };
    let mut overrides: Vec<(String, WeightMap)> = control
        .overrides
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    let persisted = Persisted {
        revision: control.revision,
        overrides,
        history: control.history.iter().cloned().collect(),
        file_weights: control
            .config
            .routes
            .iter()
            .map(|r| (r.name.clone(), file_weights(r)))
            .collect(),
    };
    if let Err(error) = persisted.save(path) {
        tracing::error!(path = %path.display(), %error, "cannot write the state file");
    }
}

/// The weights a route has in the config file.
fn file_weights(route: &crate::config::RouteConfig) -> WeightMap {
    WeightMap(
        route
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.weight))
            .collect(),
    )
}

/// Whether saved `weights` still fit `route` in `config`.
fn validate_override(config: &Config, route: &str, weights: &WeightMap) -> Result<(), String> {
    let rc = config.route(route).ok_or("the route is gone")?;
    let names: Vec<&str> = rc.backends.iter().map(|b| b.name.as_str()).collect();
    if !weights.has_backends(&names) {
        return Err("the route's backends changed".into());
    }
    if weights.0.iter().map(|(_, w)| w.0).sum::<u32>() != TOTAL_WEIGHT {
        return Err("the weights do not sum to 100".into());
    }
    Ok(())
}
