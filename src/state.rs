//! The routing state: one immutable [`Snapshot`] behind one `ArcSwap`.
//!
//! A request loads the snapshot once and uses it to the end, so a reload or a
//! weight change takes effect on the next request and never half-way through
//! one. Endpoints (and so their connection pools) are shared between snapshots
//! by address, so a reload keeps the pools of endpoints it did not change.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};

use crate::balance::WeightedPicker;
use crate::config::{
    Config, EndpointAddr, HealthConfig, HostMatch, OutlierConfig, RouteConfig, TOTAL_WEIGHT, Weight,
};
use crate::history::{MAX_HISTORY, Persisted, Revision, Source, WeightMap};
use crate::upstream::Endpoint;

/// Everything the request path needs, swapped as a whole.
#[derive(Debug)]
pub struct Snapshot {
    pub revision: u64,
    pub config: Arc<Config>,
    pub routes: Vec<Route>,
    router: Router,
}

/// A route ready to serve: its backends and the weighted picker over them.
#[derive(Debug)]
pub struct Route {
    pub config: RouteConfig,
    pub backends: Vec<Backend>,
    picker: WeightedPicker,
}

/// A backend group of a route.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    /// The weight asked for (file or admin).
    pub weight: Weight,
    /// The weight in force: `weight`, moved to healthy groups on failover.
    pub effective: Weight,
    /// Whether any endpoint could take a request when the snapshot was built.
    pub available: bool,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Active check settings, when configured.
    pub health: Option<HealthConfig>,
    /// Passive ejection settings.
    pub outlier: OutlierConfig,
    next_endpoint: AtomicUsize,
}

impl Route {
    /// The route's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Picks a backend by weight; `None` when every weight is zero.
    #[inline]
    pub fn pick_backend(&self) -> Option<&Backend> {
        self.picker.pick().and_then(|i| self.backends.get(i))
    }
}

impl Backend {
    /// The next available endpoint in round-robin order; `None` when none is.
    #[inline]
    pub fn pick_endpoint(&self) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next_endpoint.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .filter_map(|k| self.endpoints.get((start + k) % n))
            .find(|e| e.available())
    }

    /// Whether any endpoint can take a request now.
    pub fn any_available(&self) -> bool {
        self.endpoints.iter().any(|e| e.available())
    }

    /// The endpoint shown as `address` (`127.0.0.1:8081`, `https://host:443`).
    pub fn endpoint(&self, address: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints
            .iter()
            .find(|e| e.addr.to_string() == address || e.authority() == address)
    }
}

/// The weights in force given which backends are available: with failover, a
/// group with no available endpoint gets 0 and its share goes to the available
/// groups in proportion to their weights (equally if those are all 0); without
/// failover the weights stay and that group's requests get 503.
pub fn effective_weights(desired: &[Weight], available: &[bool], failover: bool) -> Vec<Weight> {
    let all_up = available.iter().all(|a| *a);
    if !failover || all_up {
        return desired.to_vec();
    }
    let live: Vec<usize> = (0..desired.len())
        .filter(|&i| available.get(i) == Some(&true))
        .collect();
    let mut effective = vec![Weight(0); desired.len()];
    if live.is_empty() {
        return effective;
    }
    let live_total: u64 = live.iter().map(|&i| u64::from(desired[i].0)).sum();
    for &i in &live {
        let share = (u64::from(desired[i].0) * u64::from(TOTAL_WEIGHT))
            .checked_div(live_total)
            .unwrap_or(u64::from(TOTAL_WEIGHT) / live.len() as u64);
        effective[i] = Weight(u32::try_from(share).unwrap_or(TOTAL_WEIGHT));
    }
    // Rounding leftovers go to the largest live group so the sum stays 100 %.
    let assigned: u32 = effective.iter().map(|w| w.0).sum();
    if let Some(&largest) = live
        .iter()
        .max_by_key(|&&i| (desired[i].0, std::cmp::Reverse(i)))
    {
        effective[largest].0 += TOTAL_WEIGHT.saturating_sub(assigned);
    }
    effective
}

impl Snapshot {
    /// Builds the snapshot for `config` at `revision`, reusing endpoints from
    /// `pool`; a route in `overrides` takes its weights from there.
    pub fn build(
        config: Arc<Config>,
        revision: u64,
        overrides: &HashMap<String, WeightMap>,
        pool: &EndpointPool,
    ) -> Snapshot {
        let routes: Vec<Route> = config
            .routes
            .iter()
            .map(|rc| {
                let chosen = overrides.get(&rc.name);
                let mut backends: Vec<Backend> = rc
                    .backends
                    .iter()
                    .map(|bc| {
                        let endpoints: Vec<Arc<Endpoint>> =
                            bc.endpoints.iter().map(|a| pool.get(a)).collect();
                        let weight = chosen.map_or(bc.weight, |w| w.get(&bc.name));
                        Backend {
                            name: bc.name.clone(),
                            weight,
                            effective: weight,
                            available: endpoints.iter().any(|e| e.available()),
                            endpoints,
                            health: bc.health.clone(),
                            outlier: bc.outlier,
                            next_endpoint: AtomicUsize::new(0),
                        }
                    })
                    .collect();
                let desired: Vec<Weight> = backends.iter().map(|b| b.weight).collect();
                let available: Vec<bool> = backends.iter().map(|b| b.available).collect();
                let effective = effective_weights(&desired, &available, rc.failover);
                for (backend, weight) in backends.iter_mut().zip(&effective) {
                    backend.effective = *weight;
                }
                let weights: Vec<u32> = effective.iter().map(|w| w.0).collect();
                Route {
                    config: rc.clone(),
                    picker: WeightedPicker::new(&weights),
                    backends,
                }
            })
            .collect();
        let router = Router::new(&routes);
        Snapshot {
            revision,
            config,
            routes,
            router,
        }
    }

    /// The first route matching `host` (any case, port allowed) and `path`.
    #[inline]
    pub fn find_route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.router.find(&self.routes, host, path)
    }

    /// The route called `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name() == name)
    }
}

impl Route {
    /// The desired weights, in backend order.
    pub fn weights(&self) -> WeightMap {
        WeightMap(
            self.backends
                .iter()
                .map(|b| (b.name.clone(), b.weight))
                .collect(),
        )
    }

    /// The effective weights, in backend order.
    pub fn effective_weights(&self) -> WeightMap {
        WeightMap(
            self.backends
                .iter()
                .map(|b| (b.name.clone(), b.effective))
                .collect(),
        )
    }

    /// The backend called `name`.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }
}

/// Route lookup by hash: exact hosts, wildcard suffixes, and host-less routes.
/// The first match in file order wins: the smallest matching route index.
#[derive(Debug, Default)]
struct Router {
    /// Lower-case host → indexes of routes with exactly that host, ascending.
    exact: HashMap<String, Vec<usize>>,
    /// Lower-case suffix with its dot (`.example.com`) → wildcard route indexes.
    wildcard: HashMap<String, Vec<usize>>,
    /// Indexes of routes that match any host, ascending.
    any_host: Vec<usize>,
}

impl Router {
    fn new(routes: &[Route]) -> Router {
        let mut router = Router::default();
        for (i, route) in routes.iter().enumerate() {
            match &route.config.host {
                Some(HostMatch::Exact(host)) => {
                    router.exact.entry(host.clone()).or_default().push(i)
                }
                Some(HostMatch::Suffix(suffix)) => {
                    router.wildcard.entry(suffix.clone()).or_default().push(i)
                }
                None => router.any_host.push(i),
            }
        }
        router
    }

    fn find<'a>(&self, routes: &'a [Route], host: Option<&str>, path: &str) -> Option<&'a Route> {
        let mut best: Option<usize> = None;
        // Each list holds routes whose host already matches: find its first
        // route whose path matches, and keep the smallest index over all lists.
        let mut consider = |list: &[usize]| {
            for &i in list {
                if best.is_some_and(|b| b <= i) {
                    return;
                }
                if routes
                    .get(i)
                    .is_some_and(|r| path.starts_with(r.config.path_prefix.as_str()))
                {
                    best = Some(i);
                    return;
                }
            }
        };
        if let Some(host) = host.map(strip_port) {
            let lowered;
            let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                lowered = host.to_ascii_lowercase();
                lowered.as_str()
            } else {
                host
            };
            if let Some(list) = self.exact.get(host) {
                consider(list);
            }
            if !self.wildcard.is_empty() {
                // `a.b.example.com` tries `.b.example.com`, `.example.com`, `.com`.
                for (dot, _) in host.match_indices('.').filter(|(i, _)| *i > 0) {
                    if let Some(list) = host.get(dot..).and_then(|suffix| self.wildcard.get(suffix))
                    {
                        consider(list);
                    }
                }
            }
        }
        consider(&self.any_host);
        best.and_then(|i| routes.get(i))
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').and_then(|i| host.get(..=i)).unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Endpoints by address, shared across snapshots so pools survive reloads.
#[derive(Debug, Default)]
pub struct EndpointPool {
    endpoints: Mutex<HashMap<EndpointAddr, Weak<Endpoint>>>,
    /// Woken when any endpoint's availability flips.
    pub changes: Arc<Notify>,
}

impl EndpointPool {
    /// The live endpoint for `addr`, or a new one.
    pub fn get(&self, addr: &EndpointAddr) -> Arc<Endpoint> {
        let Ok(mut map) = self.endpoints.lock() else {
            return Arc::new(Endpoint::new(addr.clone(), Arc::clone(&self.changes)));
        };
        if let Some(existing) = map.get(addr).and_then(Weak::upgrade) {
            return existing;
        }
        map.retain(|_, weak| weak.strong_count() > 0);
        let endpoint = Arc::new(Endpoint::new(addr.clone(), Arc::clone(&self.changes)));
        map.insert(addr.clone(), Arc::downgrade(&endpoint));
        endpoint
    }
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
        for (route, weights) in persisted.overrides {
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
        let snapshot = Snapshot::build(
            Arc::clone(&control.config),
            control.revision,
            &control.overrides,
            &pool,
        );
        let state = State {
            revisions: watch::Sender::new(snapshot.revision),
            current: ArcSwap::from_pointee(snapshot),
            pool,
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
        if old.listeners != config.listeners || old.admin.addr != config.admin.addr {
            tracing::warn!(
                "listener or admin addresses changed: that needs a restart; the running sockets stay as they are"
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
        // A reload ends every drain (SPEC: undrain by reload).
        let snapshot = self.current.load_full();
        for endpoint in snapshot
            .routes
            .iter()
            .flat_map(|r| &r.backends)
            .flat_map(|b| &b.endpoints)
        {
            endpoint.set_draining(false);
        }
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
        );
        self.current.store(Arc::new(snapshot));
        save(control);
        self.revisions.send_replace(control.revision);
        control.revision
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
    };
    if let Err(error) = persisted.save(path) {
        tracing::error!(path = %path.display(), %error, "cannot write the state file");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;

    fn snapshot(toml: &str) -> Snapshot {
        let config = Config::parse(toml, "test.toml", Format::Toml).unwrap();
        Snapshot::build(
            Arc::new(config),
            1,
            &HashMap::new(),
            &EndpointPool::default(),
        )
    }

    const ROUTES: &str = r#"
[[listeners]]
addr = "127.0.0.1:0"
[[routes]]
name = "api"
match = { host = "shop.example.com", path_prefix = "/api/" }
backends = [{ name = "a", endpoints = ["127.0.0.1:1"] }]
[[routes]]
name = "wild"
match = { host = "*.example.com" }
backends = [{ name = "a", endpoints = ["127.0.0.1:1"] }]
[[routes]]
name = "shop"
match = { host = "shop.example.com" }
backends = [{ name = "a", endpoints = ["127.0.0.1:1"] }]
[[routes]]
name = "rest"
match = { path_prefix = "/static/" }
backends = [{ name = "a", endpoints = ["127.0.0.1:1"] }]
"#;

    #[test]
    fn first_match_in_file_order_wins() {
        let s = snapshot(ROUTES);
        let find = |host, path| s.find_route(host, path).map(Route::name);
        assert_eq!(find(Some("shop.example.com"), "/api/x"), Some("api"));
        // The wildcard comes before the exact `shop` route in the file.
        assert_eq!(find(Some("SHOP.example.com:8080"), "/"), Some("wild"));
        assert_eq!(find(Some("other.test"), "/static/a.css"), Some("rest"));
        assert_eq!(find(Some("other.test"), "/"), None);
        assert_eq!(find(None, "/static/"), Some("rest"));
    }

    #[test]
    fn failover_moves_share_in_proportion() {
        let w = |v: &[u32]| v.iter().map(|x| Weight(*x)).collect::<Vec<_>>();
        assert_eq!(
            effective_weights(&w(&[9000, 1000]), &[true, false], true),
            w(&[10_000, 0])
        );
        assert_eq!(
            effective_weights(&w(&[6000, 3000, 1000]), &[true, true, false], true),
            w(&[6667, 3333, 0])
        );
        assert_eq!(
            effective_weights(&w(&[10_000, 0]), &[false, true], true),
            w(&[0, 10_000])
        );
        assert_eq!(
            effective_weights(&w(&[9000, 1000]), &[false, false], true),
            w(&[0, 0])
        );
        assert_eq!(
            effective_weights(&w(&[9000, 1000]), &[true, false], false),
            w(&[9000, 1000])
        );
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
