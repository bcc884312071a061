//! Deciding where a request goes: the route's override (header or cookie),
//! the sticky key's bucket owner, or the weighted pick. Both HTTP/1.1 paths
//! and HTTP/2 decide here, over whatever header representation they hold.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Sticky;
use crate::control::balance;
use crate::control::{Backend, Route};
use crate::error::ProxyError;

/// What the request path knows about the client connection.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The `X-Forwarded-Client-Cert` value (`Subject="CN=…"`) of a client
    /// certificate the listener's `client_ca` verified.
    pub client_cert: Option<http::HeaderValue>,
}

impl ClientInfo {
    /// A client on a connection without a verified certificate.
    pub fn new(peer: SocketAddr) -> ClientInfo {
        ClientInfo {
            peer,
            tls: false,
            client_cert: None,
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub struct Choice<'r> {
    pub route: &'r Route,
    pub backend: &'r Backend,
    /// A sticky bucket handed out with this response (the client had none).
    pub new_bucket: Option<u32>,
}

impl Choice<'_> {
    /// The `Set-Cookie` value handing the client its new sticky bucket, when
    /// the route keeps clients by cookie and this one had none.
    pub fn sticky_cookie(&self, tls: bool) -> Option<String> {
        match (self.new_bucket, &self.route.config.sticky) {
            (Some(bucket), Some(Sticky::Cookie { name, max_age })) => {
                Some(sticky_cookie(name, bucket, *max_age, tls))
            }
            _ => None,
        }
    }
}

pub use crate::control::HeaderLookup;

/// The backend for this request, and a sticky bucket to hand the client in
/// a cookie when it had none.
///
/// An override (header or cookie naming a backend, from an allowed client)
/// wins; then the sticky key's bucket owner, unless that backend has no
/// traffic now (it failed over; the client keeps its bucket and comes back
/// when it recovers); then the weighted pick.
pub fn choose<'r>(
    route: &'r Route,
    headers: &(impl HeaderLookup + ?Sized),
    client: &ClientInfo,
) -> Result<Choice<'r>, ProxyError> {
    let choice = |backend, new_bucket| Choice {
        route,
        backend,
        new_bucket,
    };
    if let Some(backend) = override_backend(route, headers, client) {
        return Ok(choice(backend, None));
    }
    let sticky = match &route.config.sticky {
        None => None,
        Some(Sticky::Header(name)) => headers
            .first(name.as_str())
            .map(|key| (balance::bucket_of(key), false)),
        Some(Sticky::Cookie { name, .. }) => Some(cookie(headers, name).map_or_else(
            || (balance::random_bucket(), true),
            |key| (balance::bucket_of(key.as_bytes()), false),
        )),
    };
    let new_bucket = sticky.and_then(|(bucket, new)| new.then_some(bucket));
    if let Some(backend) = sticky.and_then(|(bucket, _)| route.sticky_backend(bucket)) {
        return Ok(choice(backend, new_bucket));
    }
    let backend = route.pick_backend().ok_or(ProxyError::NoEndpoint)?;
    Ok(choice(backend, new_bucket))
}

/// The backend an override header or cookie names, when the client may use
/// overrides; unknown names are ignored.
fn override_backend<'r>(
    route: &'r Route,
    headers: &(impl HeaderLookup + ?Sized),
    client: &ClientInfo,
) -> Option<&'r Backend> {
    let config = &route.config;
    if config.override_header.is_none() && config.override_cookie.is_none() {
        return None;
    }
    let allowed = config.override_from.is_empty()
        || config
            .override_from
            .iter()
            .any(|net| net.contains(client.peer.ip()));
    if !allowed {
        return None;
    }
    let from_header = config
        .override_header
        .as_ref()
        .and_then(|name| headers.first(name.as_str()))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|name| route.backend(name.trim()));
    from_header.or_else(|| {
        config
            .override_cookie
            .as_deref()
            .and_then(|name| cookie(headers, name))
            .and_then(|value| route.backend(value))
    })
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h (impl HeaderLookup + ?Sized), name: &str) -> Option<&'h str> {
    headers
        .values("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.trim_matches('"'))
        })
}

/// The `Set-Cookie` value that hands out a sticky bucket.
fn sticky_cookie(name: &str, bucket: u32, max_age: Duration, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!(
        "{name}={bucket}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        max_age.as_secs()
    )
}
