//! The routing state: one immutable [`Snapshot`] behind one `ArcSwap`.
//!
//! A request loads the snapshot once and uses it to the end, so a reload or a
//! weight change takes effect on the next request and never half-way through
//! one. Endpoints (and so their connection pools) are shared between snapshots
//! by address, so a reload keeps the pools of endpoints it did not change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;

use crate::balance::WeightedPicker;
use crate::config::{Config, EndpointAddr, HostMatch, RouteConfig, Weight};
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
    pub weight: Weight,
    pub endpoints: Vec<Arc<Endpoint>>,
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
    /// The next endpoint in round-robin order; `None` when the group is empty.
    #[inline]
    pub fn pick_endpoint(&self) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let i = self.next_endpoint.fetch_add(1, Ordering::Relaxed) % n;
        self.endpoints.get(i)
    }
}

impl Snapshot {
    /// Builds the snapshot for `config` at `revision`, reusing endpoints from `pool`.
    pub fn build(config: Arc<Config>, revision: u64, pool: &EndpointPool) -> Snapshot {
        let routes: Vec<Route> = config
            .routes
            .iter()
            .map(|rc| {
                let backends: Vec<Backend> = rc
                    .backends
                    .iter()
                    .map(|bc| Backend {
                        name: bc.name.clone(),
                        weight: bc.weight,
                        endpoints: bc.endpoints.iter().map(|a| pool.get(a)).collect(),
                        next_endpoint: AtomicUsize::new(0),
                    })
                    .collect();
                let weights: Vec<u32> = backends.iter().map(|b| b.weight.0).collect();
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
}

impl EndpointPool {
    /// The live endpoint for `addr`, or a new one.
    pub fn get(&self, addr: &EndpointAddr) -> Arc<Endpoint> {
        let Ok(mut map) = self.endpoints.lock() else {
            return Arc::new(Endpoint::new(addr.clone()));
        };
        if let Some(existing) = map.get(addr).and_then(Weak::upgrade) {
            return existing;
        }
        map.retain(|_, weak| weak.strong_count() > 0);
        let endpoint = Arc::new(Endpoint::new(addr.clone()));
        map.insert(addr.clone(), Arc::downgrade(&endpoint));
        endpoint
    }
}

/// The shared, swappable routing state.
#[derive(Debug)]
pub struct State {
    current: ArcSwap<Snapshot>,
    pool: EndpointPool,
}

impl State {
    /// State serving `config` as revision 1.
    pub fn new(config: Config) -> State {
        let pool = EndpointPool::default();
        let snapshot = Snapshot::build(Arc::new(config), 1, &pool);
        State {
            current: ArcSwap::from_pointee(snapshot),
            pool,
        }
    }

    /// The snapshot in force now.
    #[inline]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The snapshot in force now, as an owned `Arc`.
    pub fn snapshot_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the config; the next request uses it.
    pub fn replace(&self, config: Config) -> u64 {
        let revision = self.current.load().revision + 1;
        let snapshot = Snapshot::build(Arc::new(config), revision, &self.pool);
        self.current.store(Arc::new(snapshot));
        revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;

    fn snapshot(toml: &str) -> Snapshot {
        let config = Config::parse(toml, "test.toml", Format::Toml).unwrap();
        Snapshot::build(Arc::new(config), 1, &EndpointPool::default())
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
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
