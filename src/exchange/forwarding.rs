//! Forwarding rules that every request path applies, so that an origin and a
//! client see the same message whichever path served it: which fields are
//! hop-by-hop, what `Connection` may drop, the `X-Forwarded-*` fields, the
//! `Host` rules. [`rewrite_request`] writes them into a `HeaderMap` (hyper's
//! path); the fast path writes the same rules as bytes, built on
//! [`is_hop_by_hop`] and [`connection_may_drop`], and the differential suite
//! (tests/differential.rs) checks that the two agree byte for byte.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Uri, Version};

use crate::error::ProxyError;
use crate::exchange::decide::ClientInfo;

/// `X-Forwarded-For`, `-Proto`, `-Host`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The verified client certificate's subject; a client-sent one is dropped.
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The `X-Forwarded-Client-Cert` value for a verified certificate's
/// subject (`Subject="CN=app,O=ops"`, the form Envoy sends); `None` when the
/// subject cannot be a header value.
pub fn client_cert_value(subject: &str) -> Option<HeaderValue> {
    let escaped = subject.replace('\\', "\\\\").replace('"', "\\\"");
    HeaderValue::try_from(format!("Subject=\"{escaped}\"")).ok()
}

/// How many fields [`HOP_BY_HOP`] lists (its type says so too, so the two
/// cannot drift apart).
const HOP_COUNT: usize = 7;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
/// `Trailer` is not one: it declares the trailer fields, which hyper needs
/// to send them on over HTTP/1.1.
pub const HOP_BY_HOP: [HeaderName; HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

/// Whether `name` (any case) is a hop-by-hop field: one of [`HOP_BY_HOP`]
/// or `Upgrade` (which a request path forwards only for an upgrade).
pub fn is_hop_by_hop(name: &str) -> bool {
    name.eq_ignore_ascii_case("upgrade")
        || HOP_BY_HOP
            .iter()
            .any(|hop| name.eq_ignore_ascii_case(hop.as_str()))
}

/// Whether a field that a `Connection` header names may be dropped with
/// it. `Content-Length`, `Transfer-Encoding` and `Host` may not: they frame
/// or address the message, and dropping one while forwarding the body
/// would let the next hop read that body as another request (request
/// smuggling). The token is ignored instead, in both directions; the
/// framing fields are then handled by the framing rules alone.
pub fn connection_may_drop(name: &str) -> bool {
    !(name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("transfer-encoding")
        || name.eq_ignore_ascii_case("host"))
}

/// The request-line and `Host` rules checked before any routing
/// (RFC 9112 §3.2): more than one `Host` field, or none on an HTTP/1.1
/// request, is 400; `TRACE` is 405 (it would echo credentials and cookies
/// back to a script: cross-site tracing; NGINX refuses it too).
pub fn check_request(
    method: &Method,
    version: Version,
    host_fields: usize,
) -> Result<(), ProxyError> {
    if host_fields > 1 {
        return Err(ProxyError::BadRequest("more than one Host header field"));
    }
    if host_fields == 0 && version == Version::HTTP_11 {
        return Err(ProxyError::BadRequest(
            "an HTTP/1.1 request needs a Host header field",
        ));
    }
    if method == Method::TRACE {
        return Err(ProxyError::MethodNotAllowed);
    }
    Ok(())
}

/// The host part of an authority, with its port, without userinfo
/// (`user@host:8080` → `host:8080`).
pub fn authority_host(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// The host the client asked for: the target's authority (an absolute-form
/// HTTP/1.1 target, or the h2 `:authority`), which wins over `Host`
/// (RFC 9112 §3.2.2), else the `Host` header.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| authority_host(a.as_str()))
        .or_else(|| {
            // As bytes: a Host with obs-text (UTF-8) is read as the fast path reads it.
            let host = req.headers().get(header::HOST)?;
            std::str::from_utf8(host.as_bytes()).ok()
        })
}

/// Rewrites the client's request for an HTTP/1.1 upstream (the upstream
/// connection turns it into HTTP/2 form when it speaks h2).
pub fn rewrite_request(parts: &mut Parts, host: Option<&str>, client: &ClientInfo) {
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
    // Only sluicegate says who the client is: a client-sent one never passes.
    match &client.client_cert {
        Some(value) => headers.insert(X_FORWARDED_CLIENT_CERT, value.clone()),
        None => headers.remove(X_FORWARDED_CLIENT_CERT),
    };
}

/// Whether the `TE` header lists `trailers` (gRPC clients send it).
fn accepts_trailers(headers: &HeaderMap) -> bool {
    header_tokens(headers, header::TE).any(|t| t.eq_ignore_ascii_case("trailers"))
}

/// The comma-separated tokens of every `name` header, trimmed
/// (`Connection: keep-alive, Upgrade`).
pub fn header_tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
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
    // Most messages have none or one (an upstream's `Connection:
    // keep-alive`): one pass over the names (cheap comparisons of standard
    // headers) finds which, and only those are removed (a removal hashes).
    let hops = HOP_BY_HOP;
    // One slot per field of `HOP_BY_HOP`, then `Upgrade`.
    let mut present = [false; HOP_COUNT + 1];
    let mut any = false;
    for name in headers.keys() {
        let at = if name == header::UPGRADE {
            Some(hops.len())
        } else {
            hops.iter().position(|hop| hop == name)
        };
        if let Some(slot) = at.and_then(|i| present.get_mut(i)) {
            *slot = true;
            any = true;
        }
    }
    if any {
        strip_hop_by_hop(headers, &present);
    }
}

/// Removes the hop-by-hop fields marked in `present` (by [`HOP_BY_HOP`]
/// position, then `Upgrade`) and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap, present: &[bool]) {
    if present.first() == Some(&true) {
        let named: Vec<HeaderName> = header_tokens(headers, header::CONNECTION)
            .filter(|name| connection_may_drop(name))
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    let hops = HOP_BY_HOP;
    let names = hops.iter().chain([&header::UPGRADE]);
    for (name, _) in names.zip(present).filter(|(_, here)| **here) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hop_by_hop_field_goes_alone_or_together_and_the_rest_stays() {
        let all: Vec<HeaderName> = HOP_BY_HOP
            .iter()
            .cloned()
            .chain([header::UPGRADE])
            .collect();
        let message = |names: &[HeaderName]| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            headers.insert("x-named", HeaderValue::from_static("1"));
            for name in names {
                let value = if name == header::CONNECTION {
                    "keep-alive, x-named"
                } else {
                    "1"
                };
                headers.append(name.clone(), HeaderValue::from_static(value));
            }
            headers
        };
        // Each one on its own (the removal marks fields by position), then all.
        let singles = all.iter().map(std::slice::from_ref);
        for names in singles.chain([all.as_slice()]) {
            let mut headers = message(names);
            remove_hop_by_hop(&mut headers);
            for name in &all {
                assert!(!headers.contains_key(name), "{name} left after {names:?}");
            }
            assert!(headers.contains_key(header::CONTENT_TYPE));
            let named_dropped = names.contains(&header::CONNECTION);
            assert_eq!(!headers.contains_key("x-named"), named_dropped, "{names:?}");
        }
    }

    #[test]
    fn framing_and_host_fields_survive_connection() {
        for name in [
            "Content-Length",
            "content-LENGTH",
            "Transfer-Encoding",
            "HOST",
        ] {
            assert!(!connection_may_drop(name), "{name}");
        }
        assert!(connection_may_drop("x-secret"));
        assert!(connection_may_drop("keep-alive"));
    }

    #[test]
    fn host_rules() {
        let get = Method::GET;
        assert!(check_request(&get, Version::HTTP_11, 1).is_ok());
        assert!(check_request(&get, Version::HTTP_10, 0).is_ok());
        assert!(check_request(&get, Version::HTTP_2, 0).is_ok());
        assert!(check_request(&get, Version::HTTP_11, 0).is_err());
        assert!(check_request(&get, Version::HTTP_11, 2).is_err());
        assert!(check_request(&get, Version::HTTP_2, 2).is_err());
        let trace = check_request(&Method::TRACE, Version::HTTP_11, 1);
        assert!(matches!(trace, Err(ProxyError::MethodNotAllowed)));
        assert_eq!(authority_host("u:p@a.example:81"), "a.example:81");
    }

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
