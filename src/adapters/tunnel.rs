//! Upgrades: WebSocket and other protocols that take over the connection.
//!
//! An HTTP/1.1 `Upgrade` request, or an HTTP/2 extended CONNECT (RFC 8441),
//! is sent to the chosen endpoint as an HTTP/1.1 `Upgrade` request. When the
//! endpoint answers `101 Switching Protocols` the client gets `101` (HTTP/1.1)
//! or `200` (HTTP/2) and both sides are joined byte for byte. The tunnel holds
//! no snapshot, so it lives on across reloads and weight changes, pinned to
//! the endpoint that accepted it.

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::adapters::hyper_path::{
    ClientInfo, header_tokens, next_endpoint, remove_hop_by_hop, upstream_request,
};
use crate::config::Timeouts;
use crate::control::{Backend, Route};
use crate::error::{ProxyError, UpstreamError};
use crate::exchange::body::ProxyBody;
use crate::upstream::UpstreamBody;
use crate::upstream::{Endpoint, PooledBody};

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// The protocol a request asks to switch to, if it is an upgrade: the
/// `Upgrade` header of an HTTP/1.1 request with `Connection: upgrade`, or the
/// `:protocol` of an HTTP/2 extended CONNECT.
pub fn requested_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.method() == Method::CONNECT {
        let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
        return HeaderValue::from_str(protocol.as_str()).ok();
    }
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let wants_upgrade = header_tokens(req.headers(), header::CONNECTION)
        .any(|token| token.eq_ignore_ascii_case("upgrade"));
    if !wants_upgrade {
        return None;
    }
    req.headers().get(header::UPGRADE).cloned()
}

/// Forwards an upgrade request to an endpoint of `backend` (or, when it
/// cannot be reached, of another backend as for any request) and joins the
/// two connections once the endpoint switches protocols.
pub async fn forward(
    route: &Route,
    backend: &Backend,
    timeouts: Timeouts,
    client: ClientInfo,
    mut req: Request<Incoming>,
    host: Option<&str>,
    protocol: HeaderValue,
) -> Result<Response<ProxyBody>, ProxyError> {
    let extended_connect = req.method() == Method::CONNECT;
    let downstream = hyper::upgrade::on(&mut req);
    // The client's body is the tunnel itself (HTTP/2) or empty (HTTP/1.1).
    let (mut parts, _tunnel) = upstream_request(req, host, client).into_parts();
    if extended_connect {
        parts.method = Method::GET;
        if protocol.as_bytes().eq_ignore_ascii_case(b"websocket") {
            // HTTP/2 WebSockets have no handshake key; HTTP/1.1 needs one.
            if let Ok(key) = HeaderValue::from_str(&websocket_key()) {
                parts.headers.entry(SEC_WEBSOCKET_KEY).or_insert(key);
            }
            parts
                .headers
                .entry(SEC_WEBSOCKET_VERSION)
                .or_insert(HeaderValue::from_static("13"));
        }
    }
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, protocol);

    let mut tried: Vec<&std::sync::Arc<Endpoint>> = Vec::new();
    let mut last_error = None;
    let (mut resp, used) = loop {
        let is_tried =
            |e: &std::sync::Arc<Endpoint>| tried.iter().any(|t| std::sync::Arc::ptr_eq(t, e));
        let Some((used, endpoint)) = next_endpoint(route, backend, tried.is_empty(), is_tried)
        else {
            return Err(last_error.map_or(ProxyError::NoEndpoint, ProxyError::Upstream));
        };
        tried.push(endpoint);
        // Only a failed connect is retried: nothing was sent yet.
        let conn = match endpoint.upgrade_connection(timeouts.connect).await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::debug!(endpoint = endpoint.authority(), %error, "connect for upgrade failed");
                if !matches!(error, UpstreamError::UpgradeOverH2) {
                    endpoint.record_failure(&backend.outlier);
                }
                last_error = Some(error);
                continue;
            }
        };
        let req = Request::from_parts(parts.clone(), UpstreamBody::empty());
        match conn.send_upgrade(req, timeouts.response_headers).await {
            Ok(resp) => {
                endpoint.record_success();
                break (resp, used);
            }
            Err(error) => {
                endpoint.record_failure(&backend.outlier);
                return Err(error.into());
            }
        }
    };

    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Declined: pass the answer on, unless it would read as "tunnel
        // open" to an HTTP/2 client.
        if extended_connect && resp.status().is_success() {
            return Err(ProxyError::NotUpgraded);
        }
        let (mut head, body) = resp.into_parts();
        remove_hop_by_hop(&mut head.headers);
        return Ok(Response::from_parts(
            head,
            ProxyBody::upstream(PooledBody::detached(body)),
        ));
    }

    let upstream = hyper::upgrade::on(&mut resp);
    let (mut head, _) = resp.into_parts();
    let switched_to = head.headers.get(header::UPGRADE).cloned();
    remove_hop_by_hop(&mut head.headers);
    if extended_connect {
        head.status = StatusCode::OK;
        head.headers.remove(SEC_WEBSOCKET_ACCEPT);
    } else if let Some(switched_to) = switched_to {
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        head.headers.insert(header::UPGRADE, switched_to);
    }
    // Counted from the switch until the task ends, however it ends.
    let slot = used.metrics.open_tunnel();
    tokio::spawn(async move {
        let _slot = slot;
        let (upstream, downstream) = match tokio::join!(upstream, downstream) {
            (Ok(up), Ok(down)) => (up, down),
            (Err(error), _) | (_, Err(error)) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let (mut upstream, mut downstream) = (TokioIo::new(upstream), TokioIo::new(downstream));
        match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
            Ok((sent, received)) => tracing::debug!(sent, received, "tunnel closed"),
            Err(error) => tracing::debug!(%error, "tunnel ended with an error"),
        }
    });
    Ok(Response::from_parts(head, ProxyBody::empty()))
}

/// A random `Sec-WebSocket-Key`: 16 bytes, base64.
fn websocket_key() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    let mut out = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_key_is_24_chars_of_base64() {
        let key = websocket_key();
        assert_eq!(key.len(), 24);
        assert!(key.ends_with("=="));
        assert!(
            key[..22]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        );
    }

    #[test]
    fn upgrade_needs_connection_upgrade_on_http11() {
        let req = Request::builder()
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert_eq!(requested_protocol(&req).unwrap(), "websocket");
        let no_connection = Request::builder()
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(requested_protocol(&no_connection).is_none());
        let http10 = Request::builder()
            .version(Version::HTTP_10)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(requested_protocol(&http10).is_none());
    }
}
