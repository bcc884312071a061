//! The snapshot: routes, backends and endpoints ready to serve, built once per
//! change. Endpoints (and so their connection pools) are shared between
//! snapshots by address, so a reload keeps the pools it did not change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::router::{HeaderLookup, Matchable, Router};
use crate::config::{
    BackendConfig, Config, EndpointAddr, HealthConfig, OutlierConfig, RouteConfig, TOTAL_WEIGHT,
    Weight,
};
use crate::control::balance::{StickyRanges, WeightedPicker};
use crate::control::history::WeightMap;
use crate::telemetry::mirrors::MirrorState;
use crate::telemetry::{BackendMetrics, Telemetry};
use crate::upstream::{EjectionGuard, EjectionRules, Endpoint, TlsClients, Transport};

/// Everything the request path needs, swapped as a whole.
#[derive(Debug)]
pub struct Snapshot {
    pub revision: u64,
    pub config: Arc<Config>,
    /// Shared with the snapshots before and after it where a change left
    /// them alone ([`Snapshot::with_weights`]).
    pub routes: Vec<Arc<Route>>,
    router: Arc<Router>,
    /// Route positions by name, for the admin API and the change pipeline.
    by_name: Arc<HashMap<String, usize>>,
}

/// A route ready to serve: its backends and the weighted picker over them.
#[derive(Debug)]
pub struct Route {
    pub config: Arc<RouteConfig>,
    pub backends: Vec<Backend>,
    picker: WeightedPicker,
    /// Sticky bucket ranges by desired weight (so a failover does not move
    /// anyone's bucket).
    sticky: StickyRanges,
    /// Mirror sampling, limits and results, shared across snapshots.
    pub mirror: Option<Arc<MirrorState>>,
    /// Whether the HTTP/1.1 fast path ([`crate::adapters::fast_path`]) may serve this route:
    /// no mirror, and every endpoint cleartext HTTP/1.1.
    pub fast_h1: bool,
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
    /// Metric handles and the live series, shared across snapshots.
    pub metrics: Arc<BackendMetrics>,
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

    /// A backend drawn at random in proportion to the desired weights: who
    /// a request belongs to when no backend can take it (every effective
    /// weight is zero), so its 503 is counted where the traffic was meant to go.
    pub fn desired_backend(&self) -> Option<&Backend> {
        let total: u32 = self.backends.iter().map(|b| b.weight.0).sum();
        if total == 0 {
            return None;
        }
        let mut at = fastrand::u32(0..total);
        self.backends.iter().find(|b| {
            if at < b.weight.0 {
                return true;
            }
            at -= b.weight.0;
            false
        })
    }

    /// The backend owning sticky `bucket`, if it can take traffic now (its
    /// effective weight is not zero); otherwise the caller fails over.
    #[inline]
    pub fn sticky_backend(&self, bucket: u32) -> Option<&Backend> {
        self.sticky
            .owner(bucket)
            .and_then(|i| self.backends.get(i))
            .filter(|b| b.effective.0 > 0)
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
    /// `pool` and speaking TLS through `tls` (prepared for this config); a
    /// route in `overrides` takes its weights from there.
    pub fn build(
        config: Arc<Config>,
        tls: &TlsClients,
        revision: u64,
        overrides: &HashMap<String, WeightMap>,
        pool: &EndpointPool,
        telemetry: &Telemetry,
    ) -> Snapshot {
        Snapshot::build_reusing(config, tls, revision, overrides, pool, telemetry, None)
    }

    /// [`Snapshot::build`] that keeps `self`'s `Arc<Route>` for every route
    /// nothing changed for: the same config, desired weights, endpoints and
    /// availability. A reload of a large file that changes one route builds
    /// one route (no metric-handle lookups, no drop of the old routes).
    pub fn rebuild(
        &self,
        config: Arc<Config>,
        tls: &TlsClients,
        revision: u64,
        overrides: &HashMap<String, WeightMap>,
        pool: &EndpointPool,
        telemetry: &Telemetry,
    ) -> Snapshot {
        Snapshot::build_reusing(
            config,
            tls,
            revision,
            overrides,
            pool,
            telemetry,
            Some(self),
        )
    }

    fn build_reusing(
        config: Arc<Config>,
        tls: &TlsClients,
        revision: u64,
        overrides: &HashMap<String, WeightMap>,
        pool: &EndpointPool,
        telemetry: &Telemetry,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        // Endpoints by route and backend. They take this snapshot's ejection
        // rules before any availability is read: the rules may lift an ejection.
        let idle_limit = config.timeouts.upstream_idle;
        // Each route's namesake in the previous snapshot, looked up once.
        let olds: Vec<Option<&Arc<Route>>> = config
            .routes
            .iter()
            .map(|rc| previous.and_then(|p| p.route_arc(&rc.name)))
            .collect();
        let endpoints: Vec<Vec<Vec<Arc<Endpoint>>>> = config
            .routes
            .iter()
            .zip(&olds)
            .map(|(rc, old)| {
                // The very same route config: either the same config published
                // again (same TLS clients) or a reload that left a route without
                // TLS settings alone (`ParseMemo` shares no other): the pool
                // would give the endpoints the route has already.
                let same = old.filter(|old| Arc::ptr_eq(&old.config, rc));
                if let Some(old) = same {
                    return old
                        .backends
                        .iter()
                        .map(|b| {
                            b.endpoints
                                .iter()
                                .for_each(|e| e.set_idle_limit(idle_limit));
                            b.endpoints.clone()
                        })
                        .collect();
                }
                rc.backends
                    .iter()
                    .map(|bc| {
                        let transport = tls.transport(&bc.transport);
                        bc.endpoints
                            .iter()
                            .map(|a| pool.get(a, &transport, idle_limit))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        share_ejection_rules(&config.routes, &endpoints);
        let routes: Vec<Arc<Route>> = config
            .routes
            .iter()
            .zip(endpoints)
            .zip(olds)
            .map(|((rc, route_endpoints), old)| {
                let chosen = overrides.get(&rc.name);
                let kept = old.filter(|old| old.unchanged(rc, chosen, &route_endpoints));
                if let Some(kept) = kept {
                    return Arc::clone(kept);
                }
                let backends: Vec<Backend> = rc
                    .backends
                    .iter()
                    .zip(route_endpoints)
                    .map(|(bc, endpoints)| {
                        let weight = chosen.map_or(bc.weight, |w| w.get(&bc.name));
                        Backend {
                            name: bc.name.clone(),
                            weight,
                            effective: weight,
                            available: endpoints.iter().any(|e| e.available()),
                            endpoints,
                            health: bc.health.clone(),
                            outlier: bc.outlier,
                            metrics: if rc.mirror.as_ref().is_some_and(|m| m.backend == bc.name) {
                                telemetry.mirror_target(&rc.name, &bc.name)
                            } else {
                                telemetry.backend(&rc.name, &bc.name)
                            },
                            next_endpoint: AtomicUsize::new(0),
                        }
                    })
                    .collect();
                let fast_h1 = rc.mirror.is_none()
                    && backends
                        .iter()
                        .all(|b| b.endpoints.iter().all(|e| e.speaks_plain_http1()));
                let mirror = rc
                    .mirror
                    .as_ref()
                    .map(|m| telemetry.mirror(&rc.name, m.max_concurrent));
                Arc::new(Route::assemble(Arc::clone(rc), backends, mirror, fast_h1))
            })
            .collect();
        // The router and the name map only see each route's name, host and
        // place: the previous ones serve when those are all the same.
        let same_places = |p: &&Snapshot| {
            p.routes.len() == routes.len()
                && p.routes.iter().zip(&routes).all(|(a, b)| {
                    Arc::ptr_eq(&a.config, &b.config)
                        || (a.config.name == b.config.name && a.config.host == b.config.host)
                })
        };
        let (router, by_name) = match previous.filter(same_places) {
            Some(p) => (Arc::clone(&p.router), Arc::clone(&p.by_name)),
            None => (
                Arc::new(Router::new(&routes)),
                Arc::new(
                    routes
                        .iter()
                        .enumerate()
                        .map(|(i, r)| (r.config.name.clone(), i))
                        .collect(),
                ),
            ),
        };
        Snapshot {
            revision,
            config,
            routes,
            router,
            by_name,
        }
    }

    /// This snapshot at `revision` with route `name`'s desired weights set to
    /// `weights` (`None`: the file's). Every other route, the router and
    /// the endpoints are shared, so a weight change costs one route, not
    /// the whole config. `None` for an unknown route.
    pub fn with_weights(
        &self,
        name: &str,
        weights: Option<&WeightMap>,
        revision: u64,
    ) -> Option<Snapshot> {
        let &at = self.by_name.get(name)?;
        let mut routes = self.routes.clone();
        let changed = routes.get_mut(at)?;
        *changed = Arc::new(changed.with_weights(weights));
        Some(Snapshot {
            revision,
            config: Arc::clone(&self.config),
            routes,
            router: Arc::clone(&self.router),
            by_name: Arc::clone(&self.by_name),
        })
    }

    /// The first route matching `host` (any case, port allowed), `path` and
    /// the route's `match.headers`.
    #[inline]
    pub fn find_route(
        &self,
        host: Option<&str>,
        path: &str,
        headers: &(impl HeaderLookup + ?Sized),
    ) -> Option<&Route> {
        self.router
            .find(&self.routes, host, path, headers)
            .map(AsRef::as_ref)
    }

    /// The route called `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.route_arc(name).map(AsRef::as_ref)
    }

    fn route_arc(&self, name: &str) -> Option<&Arc<Route>> {
        self.by_name.get(name).and_then(|&i| self.routes.get(i))
    }
}

impl Route {
    /// A route of `backends` (their desired weights set, availability read):
    /// the effective weights, the picker and the sticky ranges follow.
    fn assemble(
        config: Arc<RouteConfig>,
        mut backends: Vec<Backend>,
        mirror: Option<Arc<MirrorState>>,
        fast_h1: bool,
    ) -> Route {
        let desired: Vec<Weight> = backends.iter().map(|b| b.weight).collect();
        let available: Vec<bool> = backends.iter().map(|b| b.available).collect();
        let effective = effective_weights(&desired, &available, config.failover);
        for (backend, weight) in backends.iter_mut().zip(&effective) {
            backend.effective = *weight;
        }
        let weights: Vec<u32> = effective.iter().map(|w| w.0).collect();
        let desired: Vec<u32> = desired.iter().map(|w| w.0).collect();
        Route {
            fast_h1,
            config,
            picker: WeightedPicker::new(&weights),
            sticky: StickyRanges::new(&desired),
            mirror,
            backends,
        }
    }

    /// Whether a build for `config` with desired `weights` (`None`: the
    /// file's) over `endpoints` would give this route: same config, same
    /// desired weights, the same endpoint objects, each backend's
    /// availability as it was (a flip must recompute the effective weights).
    fn unchanged(
        &self,
        config: &Arc<RouteConfig>,
        weights: Option<&WeightMap>,
        endpoints: &[Vec<Arc<Endpoint>>],
    ) -> bool {
        (Arc::ptr_eq(&self.config, config) || self.config == *config)
            && self.backends.len() == endpoints.len()
            && self
                .backends
                .iter()
                .zip(&config.backends)
                .zip(endpoints)
                .all(|((b, bc), endpoints)| {
                    b.weight == weights.map_or(bc.weight, |w| w.get(&bc.name))
                        && b.endpoints.len() == endpoints.len()
                        && b.endpoints
                            .iter()
                            .zip(endpoints)
                            .all(|(a, b)| Arc::ptr_eq(a, b))
                        && b.available == endpoints.iter().any(|e| e.available())
                })
    }

    /// This route with desired `weights` (`None`: the file's), the same
    /// endpoints, metrics and mirror.
    fn with_weights(&self, weights: Option<&WeightMap>) -> Route {
        let backends = self
            .backends
            .iter()
            .zip(&self.config.backends)
            .map(|(b, bc)| {
                let weight = weights.map_or(bc.weight, |w| w.get(&b.name));
                Backend {
                    name: b.name.clone(),
                    weight,
                    effective: weight,
                    available: b.endpoints.iter().any(|e| e.available()),
                    endpoints: b.endpoints.clone(),
                    health: b.health.clone(),
                    outlier: b.outlier,
                    metrics: Arc::clone(&b.metrics),
                    next_endpoint: AtomicUsize::new(b.next_endpoint.load(Ordering::Relaxed)),
                }
            })
            .collect();
        Route::assemble(
            Arc::clone(&self.config),
            backends,
            self.mirror.clone(),
            self.fast_h1,
        )
    }

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

/// Hands every endpoint its passive-ejection rules for this snapshot (see
/// `upstream::outlier`): the outlier settings of every backend listing it,
/// and the guards it is in. A route with failover is one guard: a backend
/// left without endpoints hands its share to the others, so only the last
/// available endpoint of the whole route is kept in. Without failover each
/// backend is a guard, since its share would get 503. An endpoint in several
/// routes is in a guard of each, and an ejection that would empty any of
/// them is refused.
fn share_ejection_rules(routes: &[Arc<RouteConfig>], endpoints: &[Vec<Vec<Arc<Endpoint>>>]) {
    type ByEndpoint<'a> = HashMap<*const Endpoint, (&'a Arc<Endpoint>, EjectionRules)>;
    fn add<'a>(
        rules: &mut ByEndpoint<'a>,
        backend: &BackendConfig,
        endpoints: &'a [Arc<Endpoint>],
        guard: &Arc<EjectionGuard>,
    ) {
        for endpoint in endpoints {
            let (_, entry) = rules
                .entry(Arc::as_ptr(endpoint))
                .or_insert_with(|| (endpoint, EjectionRules::default()));
            entry.add_backend(&backend.outlier);
            entry.add_guard(guard);
        }
    }
    let mut rules = ByEndpoint::new();
    for (route, route_endpoints) in routes.iter().zip(endpoints) {
        let backends = route.backends.iter().zip(route_endpoints);
        if route.failover {
            let all = route_endpoints.iter().flatten();
            let guard = EjectionGuard::new(format!("route `{}`", route.name), all);
            for (backend, endpoints) in backends {
                add(&mut rules, backend, endpoints, &guard);
            }
        } else {
            for (backend, endpoints) in backends {
                let name = format!("backend `{}` of route `{}`", backend.name, route.name);
                add(
                    &mut rules,
                    backend,
                    endpoints,
                    &EjectionGuard::new(name, endpoints),
                );
            }
        }
    }
    for (endpoint, rules) in rules.into_values() {
        endpoint.set_ejection_rules(rules);
    }
}

/// Endpoints by address and transport, shared across snapshots so pools
/// survive reloads.
#[derive(Debug, Default)]
pub struct EndpointPool {
    endpoints: Mutex<HashMap<(EndpointAddr, Transport), Weak<Endpoint>>>,
    /// Woken when any endpoint's availability flips.
    pub changes: Arc<Notify>,
}

impl EndpointPool {
    /// The live endpoint for `addr` spoken to over `transport`, or a new
    /// one; its pooled connections are kept idle up to `idle_limit`.
    pub fn get(
        &self,
        addr: &EndpointAddr,
        transport: &Transport,
        idle_limit: Duration,
    ) -> Arc<Endpoint> {
        let new = || {
            let endpoint =
                Endpoint::new(addr.clone(), transport.clone(), Arc::clone(&self.changes));
            endpoint.set_idle_limit(idle_limit);
            Arc::new(endpoint)
        };
        let Ok(mut map) = self.endpoints.lock() else {
            return new();
        };
        let key = (addr.clone(), transport.clone());
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
            existing.set_idle_limit(idle_limit);
            return existing;
        }
        // Dead entries are dropped only when the map would grow: amortised
        // O(1) per insert (a sweep on every insert made building N new
        // entries quadratic).
        if map.len() == map.capacity() {
            map.retain(|_, weak| weak.strong_count() > 0);
        }
        let endpoint = new();
        map.insert(key, Arc::downgrade(&endpoint));
        endpoint
    }
}

impl Matchable for Route {
    fn host(&self) -> Option<&crate::config::HostMatch> {
        self.config.host.as_ref()
    }

    fn path_prefix(&self) -> &str {
        &self.config.path_prefix
    }

    fn headers(&self) -> &[crate::config::HeaderMatch] {
        &self.config.headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;

    fn snapshot(toml: &str) -> Snapshot {
        let config = Config::parse(toml, "test.toml", Format::Toml).unwrap();
        Snapshot::build(
            Arc::new(config),
            &TlsClients::default(),
            1,
            &HashMap::new(),
            &EndpointPool::default(),
            &Telemetry::new(),
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
        let none = http::HeaderMap::new();
        let find = |host, path| s.find_route(host, path, &none).map(Route::name);
        assert_eq!(find(Some("shop.example.com"), "/api/x"), Some("api"));
        // The wildcard comes before the exact `shop` route in the file.
        assert_eq!(find(Some("SHOP.example.com:8080"), "/"), Some("wild"));
        assert_eq!(find(Some("other.test"), "/static/a.css"), Some("rest"));
        assert_eq!(find(Some("other.test"), "/"), None);
        assert_eq!(find(None, "/static/"), Some("rest"));
    }

    #[test]
    fn a_weight_change_rebuilds_its_route_alone_and_equals_a_whole_build() {
        let toml = r#"
[[listeners]]
addr = "127.0.0.1:0"
[[routes]]
name = "web"
failover = true
match = { host = "web.test" }
backends = [
  { name = "blue", weight = 90, endpoints = ["127.0.0.1:1"] },
  { name = "green", weight = 10, endpoints = ["127.0.0.1:2"] },
]
[[routes]]
name = "api"
match = { path_prefix = "/api/" }
backends = [{ name = "a", endpoints = ["127.0.0.1:3"] }]
"#;
        let config = Arc::new(Config::parse(toml, "test.toml", Format::Toml).unwrap());
        let (tls, pool, telemetry) = (
            TlsClients::default(),
            EndpointPool::default(),
            Telemetry::new(),
        );
        let before = Snapshot::build(
            Arc::clone(&config),
            &tls,
            1,
            &HashMap::new(),
            &pool,
            &telemetry,
        );
        let weights = WeightMap(vec![
            ("blue".to_string(), Weight(2_500)),
            ("green".to_string(), Weight(7_500)),
        ]);
        let after = before.with_weights("web", Some(&weights), 2).unwrap();
        let overrides = HashMap::from([("web".to_string(), weights.clone())]);
        let whole = Snapshot::build(config, &tls, 2, &overrides, &pool, &telemetry);
        assert_eq!(after.revision, 2);
        let web = after.route("web").unwrap();
        assert_eq!(web.weights(), weights);
        assert_eq!(web.weights(), whole.route("web").unwrap().weights());
        assert_eq!(
            web.effective_weights(),
            whole.route("web").unwrap().effective_weights(),
            "the same effective weights as a whole build"
        );
        assert!(
            Arc::ptr_eq(&before.routes[1], &after.routes[1]),
            "api shared"
        );
        assert!(Arc::ptr_eq(
            &before.route("web").unwrap().backends[0].endpoints[0],
            &web.backends[0].endpoints[0]
        ));
        let none = http::HeaderMap::new();
        let found = after.find_route(None, "/api/x", &none).map(Route::name);
        assert_eq!(found, Some("api"), "the router is the same");
        // Back to the file's weights.
        let file = after.with_weights("web", None, 3).unwrap();
        assert_eq!(
            file.route("web").unwrap().weights(),
            before.route("web").unwrap().weights()
        );
        assert!(before.with_weights("nope", None, 3).is_none());
    }

    #[test]
    fn a_rebuild_keeps_what_did_not_change_and_rebuilds_the_rest() {
        let text = |web_weight: u32, api_host: &str| {
            format!(
                r#"
[[listeners]]
addr = "127.0.0.1:0"
[[routes]]
name = "web"
match = {{ host = "web.test" }}
backends = [
  {{ name = "blue", weight = {web_weight}, endpoints = ["127.0.0.1:1"] }},
  {{ name = "green", weight = {}, endpoints = ["127.0.0.1:2"] }},
]
[[routes]]
name = "api"
match = {{ host = "{api_host}" }}
backends = [{{ name = "a", endpoints = ["127.0.0.1:3"] }}]
"#,
                100 - web_weight
            )
        };
        let parse = |t: &str| Arc::new(Config::parse(t, "test.toml", Format::Toml).unwrap());
        let (tls, pool, telemetry) = (
            TlsClients::default(),
            EndpointPool::default(),
            Telemetry::new(),
        );
        let none = HashMap::new();
        // Whether route `i` is the same object in both snapshots.
        let kept = |a: &Snapshot, b: &Snapshot, i: usize| Arc::ptr_eq(&a.routes[i], &b.routes[i]);
        let first = Snapshot::build(
            parse(&text(90, "api.test")),
            &tls,
            1,
            &none,
            &pool,
            &telemetry,
        );

        // web's weights changed in the file; api's config is equal (another parse).
        let second = first.rebuild(
            parse(&text(50, "api.test")),
            &tls,
            2,
            &none,
            &pool,
            &telemetry,
        );
        assert!(!kept(&first, &second, 0), "web rebuilt");
        assert_eq!(
            second.route("web").unwrap().backends[0].weight,
            Weight(5_000)
        );
        assert!(kept(&first, &second, 1), "api kept");
        assert!(
            Arc::ptr_eq(&first.router, &second.router),
            "same hosts: same router"
        );

        // An override for web: rebuilt with it; one equal to the file's
        // weights for api: kept.
        let overrides = HashMap::from([
            (
                "web".to_string(),
                WeightMap(vec![
                    ("blue".to_string(), Weight(2_500)),
                    ("green".to_string(), Weight(7_500)),
                ]),
            ),
            (
                "api".to_string(),
                WeightMap(vec![("a".to_string(), Weight(10_000))]),
            ),
        ]);
        let config = Arc::clone(&second.config);
        let third = second.rebuild(Arc::clone(&config), &tls, 3, &overrides, &pool, &telemetry);
        assert!(!kept(&second, &third, 0), "web rebuilt");
        assert_eq!(
            third.route("web").unwrap().backends[1].weight,
            Weight(7_500)
        );
        assert!(kept(&second, &third, 1), "api kept");

        // An endpoint's availability flips: its route is rebuilt (failover
        // and effective weights are computed at build).
        third.route("web").unwrap().backends[1].endpoints[0].set_draining(true);
        let fourth = third.rebuild(config, &tls, 4, &overrides, &pool, &telemetry);
        let web = fourth.route("web").unwrap();
        assert!(!kept(&third, &fourth, 0));
        assert!(!web.backends[1].available);
        assert_eq!(web.backends[1].weight, Weight(7_500), "the override stays");
        assert!(kept(&third, &fourth, 1));

        // A host changed: a new router that finds it.
        let fifth = fourth.rebuild(
            parse(&text(50, "v2.api.test")),
            &tls,
            5,
            &none,
            &pool,
            &telemetry,
        );
        assert!(!Arc::ptr_eq(&fourth.router, &fifth.router));
        let headers = http::HeaderMap::new();
        let found = fifth
            .find_route(Some("v2.api.test"), "/", &headers)
            .map(Route::name);
        assert_eq!(found, Some("api"));
        assert!(fifth.find_route(Some("api.test"), "/", &headers).is_none());
        // Compared with a whole build of the same: the same weights everywhere.
        let whole = Snapshot::build(Arc::clone(&fifth.config), &tls, 5, &none, &pool, &telemetry);
        for (a, b) in fifth.routes.iter().zip(&whole.routes) {
            assert_eq!(a.weights(), b.weights());
            assert_eq!(a.effective_weights(), b.effective_weights());
        }
    }

    /// The endpoint `addr` of `route`'s `backend`.
    fn endpoint<'s>(s: &'s Snapshot, route: &str, backend: &str, addr: &str) -> &'s Arc<Endpoint> {
        s.route(route)
            .and_then(|r| r.backend(backend))
            .and_then(|b| b.endpoint(addr))
            .unwrap_or_else(|| panic!("no {addr} in {route}/{backend}"))
    }

    fn fail(endpoint: &Arc<Endpoint>, s: &Snapshot, times: u32) {
        let outlier = s.routes[0].backends[0].outlier;
        for _ in 0..times {
            endpoint.record_failure(&outlier);
        }
    }

    #[tokio::test]
    async fn ejection_never_empties_a_route_of_a_shared_endpoint() {
        let s = snapshot(
            r#"
[[listeners]]
addr = "127.0.0.1:0"
[[routes]]
name = "both"
match = { path_prefix = "/both/" }
backends = [{ name = "a", endpoints = ["127.0.0.1:1", "127.0.0.1:2"] }]
[[routes]]
name = "only"
backends = [{ name = "a", endpoints = ["127.0.0.1:1"] }]
"#,
        );
        let shared = endpoint(&s, "both", "a", "127.0.0.1:1");
        assert!(Arc::ptr_eq(
            shared,
            endpoint(&s, "only", "a", "127.0.0.1:1")
        ));
        fail(shared, &s, 10);
        assert_eq!(shared.state(), "up", "route `only` has no other endpoint");
        let other = endpoint(&s, "both", "a", "127.0.0.1:2");
        fail(other, &s, 5);
        assert_eq!(
            other.state(),
            "ejected",
            "route `both` keeps the shared one"
        );
    }

    #[tokio::test]
    async fn failover_lets_a_backend_empty_while_another_serves() {
        let two_groups = |failover: bool| {
            format!(
                r#"
[[listeners]]
addr = "127.0.0.1:0"
[[routes]]
name = "web"
failover = {failover}
[[routes.backends]]
name = "blue"
weight = 50
endpoints = ["127.0.0.1:1"]
[[routes.backends]]
name = "green"
weight = 50
endpoints = ["127.0.0.1:2"]
"#
            )
        };
        let s = snapshot(&two_groups(true));
        let blue = endpoint(&s, "web", "blue", "127.0.0.1:1");
        fail(blue, &s, 5);
        assert_eq!(blue.state(), "ejected", "green takes blue's share");

        // Without failover blue's share would get 503: its only endpoint stays.
        let s = snapshot(&two_groups(false));
        let blue = endpoint(&s, "web", "blue", "127.0.0.1:1");
        fail(blue, &s, 5);
        assert_eq!(blue.state(), "up");
    }

    #[tokio::test]
    async fn snapshot_that_turns_ejection_off_counts_the_endpoint_available() {
        let config = |failures: u32| {
            let text = format!(
                r#"
[[listeners]]
addr = "127.0.0.1:0"
[[routes]]
name = "web"
[[routes.backends]]
name = "blue"
weight = 50
endpoints = ["127.0.0.1:1"]
outlier = {{ consecutive_failures = {failures} }}
[[routes.backends]]
name = "green"
weight = 50
endpoints = ["127.0.0.1:2"]
"#
            );
            Arc::new(Config::parse(&text, "test.toml", Format::Toml).unwrap())
        };
        let (pool, telemetry) = (EndpointPool::default(), Telemetry::new());
        let tls = TlsClients::default();
        let build = |c| Snapshot::build(c, &tls, 1, &HashMap::new(), &pool, &telemetry);
        let before = build(config(1));
        fail(endpoint(&before, "web", "blue", "127.0.0.1:1"), &before, 1);
        let after = build(config(0));
        let blue = after.route("web").and_then(|r| r.backend("blue")).unwrap();
        assert!(
            blue.available,
            "the new rules apply before availability is read"
        );
        assert_eq!(blue.effective, Weight(5000));
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
}
