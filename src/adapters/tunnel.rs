//! Upgrades: WebSocket and other protocols that take over the connection.
//!
//! An HTTP/1.1 `Upgrade` request, or an HTTP/2 extended CONNECT (RFC 8441),
//! is sent to the chosen endpoint as an HTTP/1.1 `Upgrade` request. When the
//! endpoint answers `101 Switching Protocols` the client gets `101` (HTTP/1.1)
//! or `200` (HTTP/2) and both sides are joined byte for byte. The tunnel holds
//! no snapshot, so it lives on across reloads and weight changes, pinned to
//! the endpoint that accepted it.

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::config::Timeouts;
use crate::error::{ProxyError, UpstreamError};
use crate::exchange::attempt::Attempts;
use crate::exchange::body::ProxyBody;
use crate::exchange::decide::{Choice, ClientInfo};
use crate::exchange::forwarding::{self, header_tokens, remove_hop_by_hop};
use crate::exchange::outcome::Served;
use crate::upstream::{Endpoint, PooledBody, UpstreamBody};

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

/// An upgrade request's decisions, taken by hyper's path.
pub struct Upgrade<'r, 'h> {
    pub choice: Choice<'r>,
    pub timeouts: Timeouts,
    pub client: &'h ClientInfo,
    pub host: Option<&'h str>,
    /// What the client asks to switch to (`websocket`).
    pub protocol: HeaderValue,
}

/// Forwards an upgrade request through the attempt driver (only what was
/// not sent goes to another endpoint: the upgrade request has no replay)
/// and joins the two connections once the endpoint switches protocols.
pub async fn forward<'s>(
    upgrade: Upgrade<'s, '_>,
    mut req: Request<Incoming>,
    served: &mut Served<'s>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Upgrade {
        choice,
        timeouts,
        client,
        host,
        protocol,
    } = upgrade;
    let extended_connect = req.method() == Method::CONNECT;
    let downstream = hyper::upgrade::on(&mut req);
    // The client's body is the tunnel itself (HTTP/2) or empty (HTTP/1.1).
    let (mut parts, _tunnel) = req.into_parts();
    forwarding::rewrite_request(&mut parts, host, client);
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

    let mut attempts = Attempts::new(choice.route, choice.backend, &parts.method, false);
    let mut resp = loop {
        let Some(endpoint) = attempts.next(served) else {
            return Err(attempts.exhausted());
        };
        let result = send_upgrade(endpoint, &parts, timeouts).await;
        if let Some(resp) = attempts.settle(endpoint, result)? {
            break resp;
        }
    };
    let used = served.backend.unwrap_or(choice.backend);

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

/// One attempt: the upgrade request to `endpoint`, up to its answer.
async fn send_upgrade(
    endpoint: &Arc<Endpoint>,
    parts: &Parts,
    timeouts: Timeouts,
) -> Result<Response<Incoming>, UpstreamError> {
    let conn = endpoint.upgrade_connection(timeouts.connect).await?;
    let req = Request::from_parts(parts.clone(), UpstreamBody::empty());
    conn.send_upgrade(req, timeouts.response_headers).await
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
