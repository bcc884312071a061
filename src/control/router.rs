//! Route lookup: exact hosts and wildcard suffixes by hash, first match in
//! file order; a route's path prefix and headers are checked on the way.

use std::collections::HashMap;

use http::header::{HeaderMap, HeaderValue};

use crate::config::{HeaderMatch, HostMatch};

/// What the router needs of a route.
pub(super) trait Matchable {
    fn host(&self) -> Option<&HostMatch>;
    fn path_prefix(&self) -> &str;
    /// Headers the request must carry; empty: any request.
    fn headers(&self) -> &[HeaderMatch];
}

impl<M: Matchable> Matchable for std::sync::Arc<M> {
    fn host(&self) -> Option<&HostMatch> {
        M::host(self)
    }

    fn path_prefix(&self) -> &str {
        M::path_prefix(self)
    }

    fn headers(&self) -> &[HeaderMatch] {
        M::headers(self)
    }
}

/// Header lookups over hyper's [`HeaderMap`] or the HTTP/1.1 fast path's
/// parsed head: what route matching and the backend choice read.
pub trait HeaderLookup {
    /// Every value of header `name` (lowercase), in order.
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a;

    /// The first value of header `name`.
    fn first<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.values(name).next()
    }
}

impl HeaderLookup for HeaderMap {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).into_iter().map(HeaderValue::as_bytes)
    }
}

/// Whether `headers` carry every header `wanted` asks for (any of a
/// repeated header's values may match).
fn carries(headers: &(impl HeaderLookup + ?Sized), wanted: &[HeaderMatch]) -> bool {
    wanted.iter().all(|m| {
        let mut values = headers.values(m.name.as_str());
        match &m.value {
            None => values.next().is_some(),
            Some(value) => values.any(|v| v == value.as_slice()),
        }
    })
}

/// Route lookup by hash: exact hosts, wildcard suffixes, and host-less routes.
/// The first match in file order wins: the smallest matching route index.
#[derive(Debug, Default)]
pub(super) struct Router {
    /// Lower-case host → indexes of routes with exactly that host, ascending.
    exact: HashMap<String, Vec<usize>>,
    /// Lower-case suffix with its dot (`.example.com`) → wildcard route indexes.
    wildcard: HashMap<String, Vec<usize>>,
    /// Indexes of routes that match any host, ascending.
    any_host: Vec<usize>,
}

impl Router {
    pub(super) fn new<R: Matchable>(routes: &[R]) -> Router {
        let mut router = Router::default();
        for (i, route) in routes.iter().enumerate() {
            match route.host() {
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

    pub(super) fn find<'a, R: Matchable>(
        &self,
        routes: &'a [R],
        host: Option<&str>,
        path: &str,
        headers: &(impl HeaderLookup + ?Sized),
    ) -> Option<&'a R> {
        let mut best: Option<usize> = None;
        // Each list holds routes whose host already matches: find its first
        // route whose path matches, and keep the smallest index over all lists.
        let mut consider = |list: &[usize]| {
            for &i in list {
                if best.is_some_and(|b| b <= i) {
                    return;
                }
                if routes.get(i).is_some_and(|r| {
                    path.starts_with(r.path_prefix()) && carries(headers, r.headers())
                }) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
