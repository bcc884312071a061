//! Forwarding rules that hyper's path ([`crate::adapters::hyper_path`]) and the HTTP/1.1
//! fast path ([`crate::adapters::fast_path`]) both apply, so that an origin and a client see
//! the same message whichever path served it.

use http::{Method, Version};

use crate::error::ProxyError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
