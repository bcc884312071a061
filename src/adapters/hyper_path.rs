//! The request path, top to bottom:
//!
//! 1. load the routing snapshot (one atomic load; a reload never splits a request)
//! 2. match a route by host and path prefix (404 when none)
//! 3. pick a backend by weight (smooth WRR, see [`crate::control::balance`])
//! 4. rewrite the request for the upstream: origin-form URI, HTTP/1.1, Host kept,
//!    hop-by-hop headers removed, `X-Forwarded-*` added
//! 5. get a connection to an endpoint of that backend, trying the next endpoint
//!    when a connect fails (nothing was sent, so this is safe for any method)
//! 6. send, wait for response headers, stream the body back untouched
//!
//! Errors become short plain-text responses with the status of [`ProxyError`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;

use crate::adapters::tunnel;
use crate::config::Sticky;
use crate::control::balance;
use crate::control::{Backend, Route, Snapshot, State};
use crate::error::{ProxyError, UpstreamError};
use crate::exchange::body::ProxyBody;
use crate::exchange::forwarding;
use crate::exchange::mirror;
use crate::telemetry::access_log::{AccessLog, Entry};
use crate::upstream::Endpoint;
use crate::upstream::UpstreamBody;

/// `X-Forwarded-For`, `-Proto`, `-Host`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
/// `Trailer` is not one: it declares the trailer fields, which hyper needs
/// to send them on over HTTP/1.1.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

/// What the request path knows about the client connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// The status counted and logged for a request whose client went away
/// before it was answered (NGINX's 499, "client closed request").
pub const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// Proxies one request; never fails: errors become responses (gRPC-shaped
/// for gRPC requests). Every response is counted for the backend that
/// answered it (or the one picked, when sluicegate answered itself); a
/// request dropped unanswered (the client reset it) is counted as 499.
pub async fn handle(
    state: &State,
    client: ClientInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let snapshot = state.snapshot_full();
    let grpc = is_grpc(&req);
    let mut pending = Unanswered {
        state,
        snapshot: &snapshot,
        started: Instant::now(),
        entry: state.access_log().map(|_| log_entry(&req, client)),
        served: Served::default(),
        answered: false,
    };
    let (mut resp, status) = match forward(&snapshot, client, req, &mut pending.served).await {
        Ok(resp) => {
            let status = resp.status();
            (resp, status)
        }
        Err(error) => {
            tracing::debug!(%error, "request failed");
            if let Some(entry) = pending.entry.as_mut() {
                entry.error = Some(error.to_string());
            }
            let resp = if grpc {
                grpc_error_response(&error)
            } else {
                error_response(&error)
            };
            (resp, error.status())
        }
    };
    if let Some((log, entry)) = pending.answered(status) {
        resp.body_mut().log_when_done(log, entry, pending.started);
    }
    resp
}

/// A request being served; counted and logged as [`CLIENT_CLOSED_REQUEST`]
/// if it is dropped before [`Unanswered::answered`].
struct Unanswered<'s> {
    state: &'s State,
    snapshot: &'s Snapshot,
    started: Instant,
    entry: Option<Entry>,
    served: Served<'s>,
    answered: bool,
}

impl Unanswered<'_> {
    /// Counts the response and hands back its access log line, to be
    /// written when the body ends.
    fn answered(&mut self, status: StatusCode) -> Option<(Arc<AccessLog>, Entry)> {
        self.answered = true;
        self.settle(status)
    }

    /// Counts `status` for whoever served the request and fills in its
    /// access log line, when there is an access log.
    fn settle(&mut self, status: StatusCode) -> Option<(Arc<AccessLog>, Entry)> {
        let elapsed = self.started.elapsed();
        self.served
            .record(self.state, self.snapshot, status, elapsed);
        let log = self.state.access_log()?;
        let mut entry = self.entry.take()?;
        self.served.fill(&mut entry, status, self.snapshot.revision);
        Some((Arc::clone(log), entry))
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if let Some((log, mut entry)) = self.settle(CLIENT_CLOSED_REQUEST) {
            entry.duration = self.started.elapsed();
            log.log(entry);
        }
    }
}

/// Who handled a request, as far as it got.
#[derive(Default)]
pub(crate) struct Served<'s> {
    pub route: Option<&'s Route>,
    /// The backend in charge: picked, then the one of the last attempt.
    pub backend: Option<&'s Backend>,
    pub endpoint: Option<&'s Arc<Endpoint>>,
    pub retries: u32,
}

impl Served<'_> {
    /// Counts the response for the backend that answered it (or the one
    /// picked, when sluicegate answered itself).
    pub fn record(
        &self,
        state: &State,
        snapshot: &Snapshot,
        status: StatusCode,
        elapsed: Duration,
    ) {
        match (self.backend, self.route) {
            (Some(backend), _) => backend.metrics.record(status, elapsed),
            // A route whose every backend has no traffic: counted for the
            // backend the desired weights would have picked.
            (None, Some(route)) => match route.desired_backend() {
                Some(backend) => backend.metrics.record(status, elapsed),
                None => state
                    .telemetry()
                    .backend(route.name(), "")
                    .record(status, elapsed),
            },
            (None, None) => snapshot.unrouted.record(status, elapsed),
        }
    }

    /// Fills in the access log fields known once the response is decided.
    pub fn fill(&self, entry: &mut Entry, status: StatusCode, revision: u64) {
        entry.status = status;
        entry.revision = revision;
        entry.route = self.route.map(|r| r.name().to_string());
        entry.backend = self.backend.map(|b| b.name.clone());
        entry.endpoint = self.endpoint.map(|e| e.addr.to_string());
        entry.retries = self.retries;
    }
}

/// The access log fields known before forwarding.
fn log_entry<B>(req: &Request<B>, client: ClientInfo) -> Entry {
    Entry::arrived(
        client.peer.ip(),
        req.method().clone(),
        req.version(),
        request_host(req).map(str::to_owned),
        req.uri().path_and_query().map_or_else(
            || req.uri().path().to_string(),
            |pq| pq.as_str().to_string(),
        ),
    )
}

/// Steps 2 to 6; `served` records who handled the request as it goes.
async fn forward<'s>(
    snapshot: &'s Snapshot,
    client: ClientInfo,
    req: Request<Incoming>,
    served: &mut Served<'s>,
) -> Result<Response<ProxyBody>, ProxyError> {
    forwarding::check_request(
        req.method(),
        req.version(),
        req.headers().get_all(header::HOST).iter().count(),
    )?;
    let host = request_host(&req).map(str::to_owned);
    let upgrade = tunnel::requested_protocol(&req);
    // A plain CONNECT names an authority, not a path to route by.
    if req.method() == Method::CONNECT && upgrade.is_none() {
        return Err(ProxyError::Connect);
    }
    let route = snapshot
        .find_route(host.as_deref(), req.uri().path())
        .ok_or(ProxyError::NoRoute)?;
    served.route = Some(route);
    let (backend, new_sticky_bucket) = choose_backend(route, req.headers(), client)?;
    served.backend = Some(backend);
    let timeouts = snapshot.config.timeouts;
    if let Some(protocol) = upgrade {
        // Boxed: the rare paths must not grow every request's future.
        return Box::pin(tunnel::forward(
            route,
            backend,
            timeouts,
            client,
            req,
            host.as_deref(),
            protocol,
        ))
        .await;
    }
    let (parts, body) = upstream_request(req, host.as_deref(), client).into_parts();
    let (body, mirror) = if route.mirror.is_some() {
        Box::pin(mirror::start(route, &parts, body, timeouts)).await?
    } else {
        (body, None)
    };
    // A request without a body is at hand to be sent again.
    let replay = body.is_end_stream().then(|| parts.clone());
    let mut attempts = Attempts::new(route, backend, &parts.method, replay.is_some());
    let mut pending = Some(Request::from_parts(parts, body));
    while let Some((backend, endpoint)) = attempts.next(served) {
        let Some(req) = pending.take().or_else(|| {
            replay
                .clone()
                .map(|p| Request::from_parts(p, UpstreamBody::empty()))
        }) else {
            break;
        };
        let conn = match endpoint.connection(timeouts.connect).await {
            Ok(conn) => conn,
            Err(error) => {
                pending = Some(req);
                attempts.connect_failed(endpoint, error);
                continue;
            }
        };
        match conn.send(req, timeouts.response_headers).await {
            Ok(resp) => {
                if resp.status().is_server_error() {
                    endpoint.record_failure(&backend.outlier);
                } else {
                    endpoint.record_success();
                }
                let status = resp.status();
                let mut resp = client_response(resp);
                if let Some(report) = mirror {
                    report.primary_done(&mut resp, status);
                }
                if let (Some(bucket), Some(Sticky::Cookie { name, max_age })) =
                    (new_sticky_bucket, &route.config.sticky)
                {
                    set_sticky_cookie(&mut resp, name, bucket, *max_age, client.tls);
                }
                return Ok(resp);
            }
            Err(UpstreamError::ClientBody(error)) => {
                tracing::debug!(%error, "the client's request body failed");
                return Err(ProxyError::RequestBody);
            }
            Err(error) => attempts.failed(endpoint, error)?,
        }
    }
    Err(attempts.exhausted())
}

/// Header lookups the backend choice needs, over hyper's [`HeaderMap`] or
/// the HTTP/1.1 fast path's parsed head ([`crate::adapters::fast_path`]).
pub(crate) trait HeaderLookup {
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

/// Steps 3: the backend for this request, and a sticky bucket to hand the
/// client in a cookie when it had none.
///
/// An override (header or cookie naming a backend, from an allowed client)
/// wins; then the sticky key's bucket owner, unless that backend has no
/// traffic now (it failed over; the client keeps its bucket and comes back
/// when it recovers); then the weighted pick.
pub(crate) fn choose_backend<'r>(
    route: &'r Route,
    headers: &(impl HeaderLookup + ?Sized),
    client: ClientInfo,
) -> Result<(&'r Backend, Option<u32>), ProxyError> {
    if let Some(backend) = override_backend(route, headers, client) {
        return Ok((backend, None));
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
        return Ok((backend, new_bucket));
    }
    let backend = route.pick_backend().ok_or(ProxyError::NoEndpoint)?;
    Ok((backend, new_bucket))
}

/// The backend an override header or cookie names, when the client may use
/// overrides; unknown names are ignored.
fn override_backend<'r>(
    route: &'r Route,
    headers: &(impl HeaderLookup + ?Sized),
    client: ClientInfo,
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

/// Hands the client its sticky bucket.
fn set_sticky_cookie(
    resp: &mut Response<ProxyBody>,
    name: &str,
    bucket: u32,
    max_age: std::time::Duration,
    tls: bool,
) {
    let cookie = sticky_cookie(name, bucket, max_age, tls);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The `Set-Cookie` value that hands out a sticky bucket.
pub(crate) fn sticky_cookie(name: &str, bucket: u32, max_age: Duration, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!(
        "{name}={bucket}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        max_age.as_secs()
    )
}

/// The endpoint for the next attempt: the chosen backend's next available one
/// not tried yet; failing that (with failover on) one of another backend that
/// has traffic, largest share first. Only the `first` attempt takes a
/// round-robin turn, so retries do not skew the rotation.
pub(crate) fn next_endpoint<'a>(
    route: &'a Route,
    preferred: &'a Backend,
    first: bool,
    tried: impl Fn(&Arc<Endpoint>) -> bool,
) -> Option<(&'a Backend, &'a Arc<Endpoint>)> {
    let fresh = |e: &&Arc<Endpoint>| e.available() && !tried(e);
    if first && let Some(endpoint) = preferred.pick_endpoint().filter(fresh) {
        return Some((preferred, endpoint));
    }
    if let Some(endpoint) = preferred.endpoints.iter().find(fresh) {
        return Some((preferred, endpoint));
    }
    if !route.config.failover {
        return None;
    }
    let mut others: Vec<&Backend> = route
        .backends
        .iter()
        .filter(|b| !std::ptr::eq(*b, preferred) && b.effective.0 > 0)
        .collect();
    others.sort_by_key(|b| std::cmp::Reverse(b.effective));
    others
        .into_iter()
        .find_map(|b| b.endpoints.iter().find(fresh).map(|e| (b, e)))
}

/// At most this many attempts on distinct endpoints (`retries` is at most 10).
const MAX_ATTEMPTS: usize = 11;

/// At most this many times a request goes again to the same endpoint on a
/// fresh connection after the keep-alive race or an unprocessed (refused)
/// stream; these do not use up `retries`.
const MAX_SAME_ENDPOINT_REPLAYS: u32 = 2;

/// The attempt policy of both request paths (hyper's here and
/// [`crate::adapters::fast_path`]'s): which endpoint each attempt takes, whether a failure
/// ends the request or another attempt follows, and which failures count
/// against the endpoint's passive health.
pub(crate) struct Attempts<'s> {
    route: &'s Route,
    /// The backend of the last attempt (the chosen one at first).
    backend: &'s Backend,
    /// The request is at hand to send again (no body, or a buffered one).
    at_hand: bool,
    /// It may be sent again after it reached an upstream: at hand,
    /// idempotent and `retries > 0`.
    replayable: bool,
    /// Endpoints tried, inline: no allocation per request.
    tried: [Option<&'s Arc<Endpoint>>; MAX_ATTEMPTS],
    attempt: u32,
    /// Attempts that went to the same endpoint again (not counted in `retries`).
    replays: u32,
    last_error: Option<UpstreamError>,
}

impl<'s> Attempts<'s> {
    /// `at_hand`: the whole request can be sent again (no body, or its body
    /// buffered).
    pub fn new(
        route: &'s Route,
        backend: &'s Backend,
        method: &Method,
        at_hand: bool,
    ) -> Attempts<'s> {
        Attempts {
            route,
            backend,
            at_hand,
            replayable: at_hand && route.config.retries > 0 && is_idempotent(method),
            tried: [None; MAX_ATTEMPTS],
            attempt: 0,
            replays: 0,
            last_error: None,
        }
    }

    /// The backend and endpoint of the next attempt, recorded in `served`;
    /// `None` when the attempts are used up. Each attempt after the first
    /// counts a retry against the backend that failed.
    pub fn next(&mut self, served: &mut Served<'s>) -> Option<(&'s Backend, &'s Arc<Endpoint>)> {
        if self.attempt > self.route.config.retries + self.replays {
            return None;
        }
        let tried = &self.tried;
        let is_tried = |e: &Arc<Endpoint>| tried.iter().flatten().any(|t| Arc::ptr_eq(t, e));
        let (chosen, endpoint) =
            next_endpoint(self.route, self.backend, self.attempt == 0, is_tried)?;
        if self.attempt > 0 {
            self.backend.metrics.record_retry();
            served.retries = self.attempt;
        }
        if let Some(slot) = self.tried.iter_mut().find(|t| t.is_none()) {
            *slot = Some(endpoint);
        }
        self.attempt += 1;
        self.backend = chosen;
        served.backend = Some(chosen);
        served.endpoint = Some(endpoint);
        Some((chosen, endpoint))
    }

    /// Connecting to `endpoint` failed: nothing was sent, so the request,
    /// whatever its method, may go to the next one.
    pub fn connect_failed(&mut self, endpoint: &Arc<Endpoint>, error: UpstreamError) {
        tracing::debug!(endpoint = endpoint.authority(), %error, "connect failed");
        endpoint.record_failure(&self.backend.outlier);
        self.last_error = Some(error);
    }

    /// The exchange with `endpoint` failed. `Ok` when another attempt may
    /// follow, else the answer.
    ///
    /// The keep-alive race ([`UpstreamError::StaleConnection`]) and an
    /// unprocessed request ([`UpstreamError::Unprocessed`]) are not the
    /// endpoint's fault: the same endpoint is tried again on a fresh
    /// connection, when the request is safe to send again (an unprocessed
    /// one whatever its method).
    pub fn failed(
        &mut self,
        endpoint: &Arc<Endpoint>,
        error: UpstreamError,
    ) -> Result<(), ProxyError> {
        let safe_again = match error {
            UpstreamError::Unprocessed(_) => self.at_hand,
            _ => self.replayable,
        };
        if !error.blames_endpoint() && safe_again && self.replays < MAX_SAME_ENDPOINT_REPLAYS {
            // Its other idle connections are as old as this one.
            tracing::debug!(endpoint = endpoint.authority(), %error, "connection lost before an answer: again on a fresh one");
            self.replays += 1;
            endpoint.close_idle();
            if let Some(slot) = self.tried.iter_mut().rev().find(|t| t.is_some()) {
                *slot = None;
            }
            self.last_error = Some(error);
            return Ok(());
        }
        if error.blames_endpoint() {
            endpoint.record_failure(&self.backend.outlier);
        }
        if !safe_again || matches!(error, UpstreamError::ResponseTimeout) {
            return Err(error.into());
        }
        tracing::debug!(endpoint = endpoint.authority(), %error, "request failed, retrying");
        self.last_error = Some(error);
        Ok(())
    }

    /// The answer when no attempt succeeded.
    pub fn exhausted(self) -> ProxyError {
        self.last_error
            .map_or(ProxyError::NoEndpoint, ProxyError::Upstream)
    }
}

/// RFC 9110 §9.2.2 idempotent methods.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The host the client asked for: the target's authority (an absolute-form
/// HTTP/1.1 target, or the h2 `:authority`), which wins over `Host`
/// (RFC 9112 §3.2.2), else the `Host` header.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| forwarding::authority_host(a.as_str()))
        .or_else(|| {
            // As bytes: a Host with obs-text (UTF-8) is read as the fast path reads it.
            let host = req.headers().get(header::HOST)?;
            std::str::from_utf8(host.as_bytes()).ok()
        })
}

/// Rewrites the client's request for an HTTP/1.1 upstream (the upstream
/// connection turns it into HTTP/2 form when it speaks h2).
pub(crate) fn upstream_request(
    req: Request<Incoming>,
    host: Option<&str>,
    client: ClientInfo,
) -> Request<UpstreamBody> {
    let (mut parts, body) = req.into_parts();
    let origin_form = parts
        .uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    parts.uri = origin_form;
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    let trailers_ok = accepts_trailers(headers);
    remove_hop_by_hop(headers);
    if trailers_ok {
        // End to end in meaning: the client can take trailers, and so do we.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(host) = host
        && let Ok(value) = HeaderValue::from_bytes(host.as_bytes())
    {
        // The host the request was routed by is the one the upstream gets.
        headers.insert(header::HOST, value.clone());
        headers.insert(X_FORWARDED_HOST, value);
    }
    append_forwarded_for(headers, client.peer);
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if client.tls { "https" } else { "http" }),
    );
    Request::from_parts(parts, UpstreamBody::Incoming(body))
}

/// Whether the `TE` header lists `trailers` (gRPC clients send it).
fn accepts_trailers(headers: &HeaderMap) -> bool {
    header_tokens(headers, header::TE).any(|t| t.eq_ignore_ascii_case("trailers"))
}

/// The comma-separated tokens of every `name` header, trimmed
/// (`Connection: keep-alive, Upgrade`).
pub(crate) fn header_tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Whether the request is gRPC (`content-type: application/grpc[+proto…]`).
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// Appends the client address to `X-Forwarded-For`, keeping what was there.
fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    use std::io::Write as _;
    // Formatted on the stack: an address is at most 45 bytes.
    let mut buf = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{}", peer.ip().to_canonical());
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    let ip = &buf[..len];
    let value = if headers.contains_key(&X_FORWARDED_FOR) {
        let mut joined: Vec<u8> = Vec::with_capacity(64);
        for prior in headers.get_all(&X_FORWARDED_FOR) {
            joined.extend_from_slice(prior.as_bytes());
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(ip);
        HeaderValue::from_bytes(&joined)
    } else {
        HeaderValue::from_bytes(ip)
    };
    if let Ok(value) = value {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// Removes hop-by-hop headers and every header the `Connection` header names.
#[inline]
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one pass over the names (cheap comparisons of
    // standard headers) instead of eight hashed removals.
    let any = headers
        .keys()
        .any(|name| name == header::UPGRADE || HOP_BY_HOP.contains(name));
    if any {
        strip_hop_by_hop(headers);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = header_tokens(headers, header::CONNECTION)
            .filter(|name| forwarding::connection_may_drop(name))
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

fn client_response(resp: Response<crate::upstream::PooledBody>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, ProxyBody::upstream(body))
}

/// A short plain-text response for an error sluicegate itself produced.
pub fn error_response(error: &ProxyError) -> Response<ProxyBody> {
    let status = error.status();
    let text = error_text(error);
    let mut resp = Response::new(ProxyBody::text(text));
    *resp.status_mut() = status;
    *resp.headers_mut() = error_headers(status);
    resp
}

/// The header fields of [`error_response`] (both request paths): the text's
/// type, and `Retry-After` on a 503.
pub(crate) fn error_headers(status: StatusCode) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::control::health::RETRY_AFTER.as_secs()),
        );
    }
    headers
}

/// The body of [`error_response`]: `502 Bad Gateway: upstream connect
/// failed`, in general terms (the detail goes to the log).
pub(crate) fn error_text(error: &ProxyError) -> String {
    let status = error.status();
    format!(
        "{} {}: {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        error.public_message()
    )
}

/// A gRPC "trailers-only" response for an error sluicegate itself produced:
/// HTTP 200 with `grpc-status` and `grpc-message`, no body (as gRPC clients
/// expect from a proxy; Envoy does the same).
pub fn grpc_error_response(error: &ProxyError) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from(error.grpc_status()));
    if let Ok(message) = HeaderValue::from_str(&percent_encode(error.public_message())) {
        headers.insert(GRPC_MESSAGE, message);
    }
    resp
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Percent-encodes what `grpc-message` may not carry as is.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Shared between the accept loop and every request.
pub type SharedState = Arc<State>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
        append_forwarded_for(&mut h, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(
            h.get(&X_FORWARDED_FOR).unwrap(),
            "10.0.0.1, 10.0.0.2, 127.0.0.1"
        );
    }
}

#[cfg(test)]
mod future_size {
    use super::*;

    fn size_of_future<'a, F: std::future::Future>(
        _: fn(&'a State, ClientInfo, Request<Incoming>) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper moves the request future twice per request (docs/BENCHMARKS.md):
    /// rare paths (upgrades, mirroring, dialling) are boxed to keep it small.
    /// It was 13,400 bytes before; 4,344 after boxing them.
    #[test]
    fn the_request_future_stays_small() {
        let size = size_of_future(handle);
        assert!(size <= 5000, "proxy::handle's future is {size} bytes");
    }
}
