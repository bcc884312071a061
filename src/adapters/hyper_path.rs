//! hyper's path: one HTTP/1.1 or HTTP/2 request from hyper's service, top
//! to bottom, every decision taken by the exchange core:
//!
//! 1. load the routing snapshot (one atomic load; a reload never splits a request)
//! 2. check the `Host` rules and match a route by host and path prefix (404 when none)
//! 3. choose a backend ([`decide::choose`]: override, sticky bucket, weighted pick)
//! 4. hand upgrades to [`tunnel`]; rewrite the request for the upstream
//!    ([`forwarding::rewrite_request`]); start a mirror copy when sampled
//! 5. send it endpoint by endpoint as [`Attempts`] allows (retries, passive health)
//! 6. stream the response back; [`Ledger`] counts and logs it once
//!
//! Errors become short plain-text responses (gRPC-shaped for gRPC requests).

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response};
use http_body::Body;
use hyper::body::Incoming;

use crate::adapters::tunnel;
use crate::config::Timeouts;
use crate::control::{Snapshot, State};
use crate::error::{ProxyError, UpstreamError};
use crate::exchange::attempt::Attempts;
use crate::exchange::body::ProxyBody;
use crate::exchange::decide::{self, ClientInfo};
use crate::exchange::forwarding::{self, remove_hop_by_hop, request_host};
use crate::exchange::mirror;
use crate::exchange::outcome::{Ledger, Served, error_headers, error_text};
use crate::telemetry::access_log::Entry;
use crate::upstream::{Endpoint, PooledBody, UpstreamBody};

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
    let entry = state
        .access_log()
        .map(|_| Box::new(log_entry(&req, &client)));
    let mut ledger = Ledger::new(state, &snapshot, Instant::now(), entry);
    let mut resp = match forward(&snapshot, &client, req, &mut ledger.served).await {
        Ok(resp) => {
            ledger.settle(resp.status());
            resp
        }
        Err(error) => {
            tracing::debug!(%error, "request failed");
            ledger.note_error(&error);
            ledger.settle(error.status());
            if grpc {
                grpc_error_response(&error)
            } else {
                error_response(&error)
            }
        }
    };
    if let Some((log, entry)) = ledger.take_line() {
        resp.body_mut().log_when_done(log, entry, ledger.started());
    }
    resp
}

/// The access log fields known before forwarding.
fn log_entry<B>(req: &Request<B>, client: &ClientInfo) -> Entry {
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
    client: &ClientInfo,
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
        .find_route(host.as_deref(), req.uri().path(), req.headers())
        .ok_or(ProxyError::NoRoute)?;
    served.route = Some(route);
    let choice = decide::choose(route, req.headers(), client)?;
    served.backend = Some(choice.backend);
    let timeouts = snapshot.config.timeouts;
    if let Some(protocol) = upgrade {
        // Boxed: the rare paths must not grow every request's future.
        let upgrade = tunnel::Upgrade {
            choice,
            timeouts,
            client,
            host: host.as_deref(),
            protocol,
        };
        return Box::pin(tunnel::forward(upgrade, req, served)).await;
    }
    let (mut parts, body) = req.into_parts();
    forwarding::rewrite_request(&mut parts, host.as_deref(), client);
    let body = UpstreamBody::Incoming(body);
    let (body, mirror) = if route.mirror.is_some() {
        Box::pin(mirror::start(route, &parts, body, timeouts)).await?
    } else {
        (body, None)
    };
    // A request without a body is at hand to be sent again.
    let replay = body.is_end_stream().then(|| parts.clone());
    let mut attempts = Attempts::new(route, choice.backend, &parts.method, replay.is_some());
    let mut pending = Some(Request::from_parts(parts, body));
    let resp = loop {
        let Some(endpoint) = attempts.next(served) else {
            return Err(attempts.exhausted());
        };
        let result = send(endpoint, &mut pending, replay.as_ref(), timeouts).await;
        if let Some(resp) = attempts.settle(endpoint, result)? {
            break resp;
        }
    };
    let status = resp.status();
    let mut resp = client_response(resp);
    if let Some(report) = mirror {
        report.primary_done(&mut resp, status);
    }
    if let Some(cookie) = choice.sticky_cookie(client.tls)
        && let Ok(value) = HeaderValue::from_str(&cookie)
    {
        resp.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(resp)
}

/// One attempt: the request (or, after a failed attempt, its replay) to
/// `endpoint`, up to the response head.
async fn send(
    endpoint: &Arc<Endpoint>,
    pending: &mut Option<Request<UpstreamBody>>,
    replay: Option<&Parts>,
    timeouts: Timeouts,
) -> Result<Response<PooledBody>, UpstreamError> {
    let conn = endpoint.connection(timeouts.connect).await?;
    let req = pending
        .take()
        .or_else(|| replay.map(|p| Request::from_parts(p.clone(), UpstreamBody::empty())))
        .ok_or(UpstreamError::BodySpent)?;
    conn.send(req, timeouts.response_headers).await
}

/// Whether the request is gRPC (`content-type: application/grpc[+proto…]`).
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

fn client_response(resp: Response<PooledBody>) -> Response<ProxyBody> {
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
