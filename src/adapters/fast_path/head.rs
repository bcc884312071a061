//! Message heads on the fast path: parsing with httparse, deciding whether a
//! request is plain enough to be served here, and writing the rewritten
//! heads (hop-by-hop fields dropped, `X-Forwarded-*` added).

use std::cell::RefCell;
use std::time::UNIX_EPOCH;

use httparse::{Header, Status};

use crate::error::InvalidResponse;
use crate::exchange::forwarding::connection_may_drop;

/// Headers parsed on the stack; a request with more goes to hyper, which
/// applies `limits.max_request_headers`.
pub const MAX_REQUEST_HEADERS: usize = 128;
/// Response headers parsed on the stack; more is a 502.
pub const MAX_RESPONSE_HEADERS: usize = 256;
/// Connection-named fields remembered per message; more sends the request
/// to hyper.
const MAX_NAMED: usize = 8;

/// The header fields the fast path looks at; one [`classify`] per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Host,
    ContentLength,
    ContentType,
    Date,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XForwardedClientCert,
    // Hop-by-hop fields (RFC 9110 §7.6.1), never forwarded.
    Connection,
    KeepAlive,
    ProxyConnection,
    ProxyAuthenticate,
    ProxyAuthorization,
    Te,
    TransferEncoding,
    Upgrade,
    Other,
}

impl Field {
    fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Field::Connection
                | Field::KeepAlive
                | Field::ProxyConnection
                | Field::ProxyAuthenticate
                | Field::ProxyAuthorization
                | Field::Te
                | Field::TransferEncoding
                | Field::Upgrade
        )
    }
}

/// Which field `name` is: the length and first letter pick the one
/// candidate, compared once without regard to case.
fn classify(name: &str) -> Field {
    let first = name.as_bytes().first().map_or(0, u8::to_ascii_lowercase);
    let (field, spelled) = match (name.len(), first) {
        (2, b't') => (Field::Te, "te"),
        (4, b'h') => (Field::Host, "host"),
        (4, b'd') => (Field::Date, "date"),
        (6, b'e') => (Field::Expect, "expect"),
        (7, b'u') => (Field::Upgrade, "upgrade"),
        (10, b'c') => (Field::Connection, "connection"),
        (10, b'k') => (Field::KeepAlive, "keep-alive"),
        (12, b'c') => (Field::ContentType, "content-type"),
        (14, b'c') => (Field::ContentLength, "content-length"),
        (15, b'x') => (Field::XForwardedFor, "x-forwarded-for"),
        (16, b'x') => (Field::XForwardedHost, "x-forwarded-host"),
        (16, b'p') => (Field::ProxyConnection, "proxy-connection"),
        (17, b't') => (Field::TransferEncoding, "transfer-encoding"),
        (17, b'x') => (Field::XForwardedProto, "x-forwarded-proto"),
        (18, b'p') => (Field::ProxyAuthenticate, "proxy-authenticate"),
        (19, b'p') => (Field::ProxyAuthorization, "proxy-authorization"),
        (23, b'x') => (Field::XForwardedClientCert, "x-forwarded-client-cert"),
        _ => return Field::Other,
    };
    if eq_lowercase(name.as_bytes(), spelled.as_bytes()) {
        field
    } else {
        Field::Other
    }
}

/// `name` equals the lowercase `lower` without regard to case, eight bytes
/// at a time. OR-ing 0x20 lowercases letters and leaves `-` alone; no other
/// token character (RFC 9110 §5.6.2; httparse lets no other through) turns
/// into a letter or `-` by it.
fn eq_lowercase(name: &[u8], lower: &[u8]) -> bool {
    if name.len() != lower.len() {
        return false;
    }
    let mut a = name.chunks_exact(8);
    let mut b = lower.chunks_exact(8);
    for (x, y) in a.by_ref().zip(b.by_ref()) {
        let x = u64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]);
        let y = u64::from_le_bytes([y[0], y[1], y[2], y[3], y[4], y[5], y[6], y[7]]);
        if x | 0x2020_2020_2020_2020 != y {
            return false;
        }
    }
    a.remainder()
        .iter()
        .zip(b.remainder())
        .all(|(x, y)| x | 0x20 == *y)
}

fn is(name: &str, wanted: &str) -> bool {
    name.eq_ignore_ascii_case(wanted)
}

/// The fields a `Connection` header names (they are hop-by-hop too).
#[derive(Debug, Default)]
struct Named<'b> {
    names: [&'b str; MAX_NAMED],
    len: usize,
}

impl<'b> Named<'b> {
    fn push(&mut self, name: &'b str) -> bool {
        if self.len == MAX_NAMED {
            return false;
        }
        self.names[self.len] = name;
        self.len += 1;
        true
    }

    fn contains(&self, name: &str) -> bool {
        self.names[..self.len].iter().any(|n| is(name, n))
    }
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(value)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

impl crate::exchange::decide::HeaderLookup for [Header<'_>] {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |h| is(h.name, name))
            .map(|h| h.value)
    }
}

/// A request head the fast path serves.
#[derive(Debug)]
pub struct RequestHead<'b> {
    /// Bytes of the head, up to and including the empty line.
    pub len: usize,
    pub method: &'b str,
    /// Origin-form target, query included.
    pub target: &'b str,
    pub host: &'b str,
    pub content_length: u64,
    /// The client asked to close after this exchange.
    pub close: bool,
    pub headers: &'b [Header<'b>],
    named: Named<'b>,
    forwarded_for: bool,
    /// `classify` of each header, so it runs once per field.
    fields: [Field; MAX_REQUEST_HEADERS],
}

impl RequestHead<'_> {
    /// The target without its query, for route matching.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target, |(path, _)| path)
    }
}

/// What a buffer holds.
#[derive(Debug)]
// Returned on the stack and matched at once, never stored: boxing would
// only add an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Parsed<'b> {
    /// The head is not complete yet.
    Partial,
    /// Something the fast path leaves to hyper: HTTP/1.0, upgrades,
    /// `Expect`, chunked or ambiguous bodies, absolute-form targets,
    /// h2 prior knowledge, gRPC, malformed heads (hyper answers those).
    Unfit,
    /// Bytes httparse refuses as a request head (a bad token, a bare CR, an
    /// unknown version, an obs-fold), even before the head is complete.
    Malformed,
    Request(RequestHead<'b>),
}

/// Parses a request head in `buf` and checks it is plain HTTP/1.1.
pub fn parse_request<'b>(
    buf: &'b [u8],
    headers: &'b mut [Header<'b>],
    max_headers: usize,
) -> Parsed<'b> {
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(buf) {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) => return Parsed::Partial,
        // hyper applies `limits.max_request_headers` with its own status.
        Err(httparse::Error::TooManyHeaders) => return Parsed::Unfit,
        Err(_) => return Parsed::Malformed,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Unfit;
    };
    // TRACE, like a missing or second Host, is answered by hyper's path,
    // which applies `forwarding::check_request`.
    if method == "CONNECT"
        || method == "TRACE"
        || !target.starts_with('/')
        || target.contains('#')
        || req.headers.len() > max_headers
    {
        return Parsed::Unfit;
    }
    let headers: &'b [Header<'b>] = req.headers;
    let mut host = None;
    let mut content_length = None;
    let mut close = false;
    let mut named = Named::default();
    let mut forwarded_for = false;
    let mut fields = [Field::Other; MAX_REQUEST_HEADERS];
    for (h, slot) in headers.iter().zip(&mut fields) {
        *slot = classify(h.name);
        match *slot {
            Field::Host => {
                let value = std::str::from_utf8(h.value).ok().filter(|v| !v.is_empty());
                if host.is_some() || value.is_none() {
                    return Parsed::Unfit;
                }
                host = value;
            }
            Field::ContentLength => {
                if content_length.is_some() {
                    return Parsed::Unfit;
                }
                match parse_length(h.value) {
                    Some(n) => content_length = Some(n),
                    None => return Parsed::Unfit,
                }
            }
            Field::Connection => {
                for token in tokens(h.value) {
                    if is(token, "close") {
                        close = true;
                    } else if is(token, "upgrade")
                        || (connection_may_drop(token) && !named.push(token))
                    {
                        return Parsed::Unfit;
                    }
                }
            }
            Field::TransferEncoding | Field::Upgrade | Field::Expect | Field::Te => {
                return Parsed::Unfit;
            }
            Field::ContentType if h.value.starts_with(b"application/grpc") => {
                return Parsed::Unfit;
            }
            Field::XForwardedFor => forwarded_for = true,
            _ => {}
        }
    }
    let Some(host) = host else {
        return Parsed::Unfit;
    };
    Parsed::Request(RequestHead {
        len,
        method,
        target,
        host,
        content_length: content_length.unwrap_or(0),
        close,
        headers,
        named,
        forwarded_for,
        fields,
    })
}

/// A `Content-Length` value: digits only, as RFC 9110 §8.6 asks.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Writes the request for the upstream: the same method, target and fields
/// minus hop-by-hop ones, with `X-Forwarded-For` appended to and
/// `X-Forwarded-Proto` / `-Host` set; `X-Forwarded-Client-Cert` is only
/// ever the verified `client_cert` (a client-sent one is dropped).
pub fn write_upstream_head(
    out: &mut Vec<u8>,
    req: &RequestHead<'_>,
    client_ip: &str,
    tls: bool,
    client_cert: Option<&[u8]>,
) {
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (h, &field) in req.headers.iter().zip(&req.fields) {
        let replaced = matches!(
            field,
            Field::XForwardedFor
                | Field::XForwardedProto
                | Field::XForwardedHost
                | Field::XForwardedClientCert
        );
        if field.is_hop_by_hop() || replaced || (req.named.len > 0 && req.named.contains(h.name)) {
            continue;
        }
        push_field(out, h.name.as_bytes(), h.value);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    // A `Connection`-named X-Forwarded-For is hop-by-hop: dropped.
    if req.forwarded_for && !(req.named.len > 0 && req.named.contains("x-forwarded-for")) {
        for h in req
            .headers
            .iter()
            .filter(|h| classify(h.name) == Field::XForwardedFor)
        {
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(if tls {
        b"\r\nx-forwarded-proto: https\r\n"
    } else {
        b"\r\nx-forwarded-proto: http\r\n"
    });
    push_field(out, b"x-forwarded-host", req.host.as_bytes());
    if let Some(value) = client_cert {
        push_field(out, b"x-forwarded-client-cert", value);
    }
    out.extend_from_slice(b"\r\n");
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    UntilClose,
}

/// A response head from the upstream.
#[derive(Debug)]
pub struct ResponseHead<'b> {
    pub len: usize,
    pub status: u16,
    pub reason: &'b str,
    pub framing: Framing,
    /// The upstream connection may carry another request afterwards.
    pub reusable: bool,
    pub headers: &'b [Header<'b>],
    named: Named<'b>,
    has_date: bool,
    /// `classify` of each header, so it runs once per field.
    fields: [Field; MAX_RESPONSE_HEADERS],
}

/// What the upstream sent.
#[derive(Debug)]
// Like `Parsed`: matched at once on the stack, never stored.
#[allow(clippy::large_enum_variant)]
pub enum Response<'b> {
    Partial,
    /// A 1xx interim response of this many bytes, to skip.
    Interim(usize),
    Final(ResponseHead<'b>),
}

/// Parses the upstream's response head to a request (`head_request` for HEAD).
pub fn parse_response<'b>(
    buf: &'b [u8],
    headers: &'b mut [Header<'b>],
    head_request: bool,
) -> Result<Response<'b>, InvalidResponse> {
    let mut resp = httparse::Response::new(headers);
    let len = match resp.parse(buf) {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) => return Ok(Response::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(InvalidResponse("too many headers")),
        Err(_) => return Err(InvalidResponse("malformed head")),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(InvalidResponse("malformed head"));
    };
    if status == 101 {
        return Err(InvalidResponse("101 to a request without Upgrade"));
    }
    if (100..200).contains(&status) {
        return Ok(Response::Interim(len));
    }
    let headers: &'b [Header<'b>] = resp.headers;
    let mut reusable = version == 1;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut named = Named::default();
    let mut has_date = false;
    let mut fields = [Field::Other; MAX_RESPONSE_HEADERS];
    for (h, slot) in headers.iter().zip(&mut fields) {
        *slot = classify(h.name);
        match *slot {
            Field::ContentLength => {
                let n = parse_length(h.value).ok_or(InvalidResponse("bad content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(InvalidResponse("differing content-length"));
                }
                length = Some(n);
            }
            Field::TransferEncoding => {
                // Only the last coding counts: `gzip, chunked` is chunked.
                chunked = Some(tokens(h.value).last().is_some_and(|t| is(t, "chunked")));
            }
            Field::Connection => {
                for token in tokens(h.value) {
                    if is(token, "close") {
                        reusable = false;
                    } else if connection_may_drop(token) && !named.push(token) {
                        return Err(InvalidResponse("too many connection options"));
                    }
                }
            }
            Field::Date => has_date = true,
            _ => {}
        }
    }
    let framing = if head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if let Some(chunked) = chunked {
        // Both framings: Transfer-Encoding wins, and the connection is not
        // trusted afterwards (RFC 9112 §6.3).
        if length.is_some() {
            reusable = false;
        }
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    if framing == Framing::UntilClose {
        reusable = false;
    }
    Ok(Response::Final(ResponseHead {
        len,
        status,
        reason: resp.reason.unwrap_or(""),
        framing,
        reusable,
        headers,
        named,
        has_date,
        fields,
    }))
}

/// Writes the response for the client: status line, the upstream's fields
/// minus hop-by-hop ones (`Transfer-Encoding: chunked` stays: the chunks are
/// passed on as they are), `Date` when missing, a sticky cookie, and
/// `Connection: close` when the client connection ends after it.
pub fn write_client_head(
    out: &mut Vec<u8>,
    resp: &ResponseHead<'_>,
    set_cookie: Option<&str>,
    close: bool,
) {
    write_status_line(out, resp.status, resp.reason);
    for (h, &field) in resp.headers.iter().zip(&resp.fields) {
        let keep_framing = resp.framing == Framing::Chunked && field == Field::TransferEncoding;
        let hop = field.is_hop_by_hop() || (resp.named.len > 0 && resp.named.contains(h.name));
        if hop && !keep_framing {
            continue;
        }
        push_field(out, h.name.as_bytes(), h.value);
    }
    if !resp.has_date {
        push_date(out);
    }
    if let Some(cookie) = set_cookie {
        push_field(out, b"set-cookie", cookie.as_bytes());
    }
    if close || resp.framing == Framing::UntilClose {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete short response sluicegate makes itself (errors).
pub fn write_own_response(
    out: &mut Vec<u8>,
    status: http::StatusCode,
    fields: &http::HeaderMap,
    body: &[u8],
    close: bool,
) {
    write_status_line(out, status.as_u16(), "");
    for (name, value) in fields {
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    push_field(out, b"content-length", body.len().to_string().as_bytes());
    push_date(out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

fn write_status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let code = [
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ];
    out.extend_from_slice(&code);
    out.push(b' ');
    let canonical = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    out.extend_from_slice(canonical.unwrap_or(reason).as_bytes());
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// `date: …\r\n` for the current second.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((0, Vec::new())) };
}

/// Appends a `Date` field (RFC 9110 §6.6.1: a proxy adds one when missing),
/// formatted once per second per thread from the coarse clock.
fn push_date(out: &mut Vec<u8>) {
    let second = crate::clock::unix_secs();
    DATE.with_borrow_mut(|(cached, line)| {
        if *cached != second || line.is_empty() {
            *cached = second;
            line.clear();
            line.extend_from_slice(b"date: ");
            let now = UNIX_EPOCH + std::time::Duration::from_secs(second);
            line.extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            line.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(line);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::forwarding;

    /// The byte writer's hop-by-hop classification is the exchange core's
    /// rule ([`forwarding::is_hop_by_hop`], which hyper's path applies): for
    /// every hop-by-hop name in any case, and for names one letter off.
    #[test]
    fn hop_by_hop_fields_are_the_forwarding_rules() {
        let mut names: Vec<String> = forwarding::HOP_BY_HOP
            .iter()
            .map(|h| h.as_str().to_string())
            .chain(["upgrade".to_string()])
            .collect();
        for field in [
            "host",
            "date",
            "expect",
            "content-type",
            "content-length",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "trailer",
            "tE",
        ] {
            names.push(field.to_string());
        }
        let mut variants = Vec::new();
        for name in &names {
            variants.push(name.to_ascii_uppercase());
            variants.push(name.clone());
            // One letter changed: same length and first letter, another name.
            let mut off = name.clone().into_bytes();
            if let Some(last) = off.last_mut() {
                *last = if *last == b'x' { b'y' } else { b'x' };
            }
            variants.push(String::from_utf8(off).unwrap());
        }
        for name in variants {
            assert_eq!(
                classify(&name).is_hop_by_hop(),
                forwarding::is_hop_by_hop(&name),
                "{name}"
            );
        }
    }

    fn request(raw: &[u8]) -> String {
        let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
        match parse_request(raw, &mut headers, 100) {
            Parsed::Request(req) => {
                let mut out = Vec::new();
                write_upstream_head(&mut out, &req, "10.0.0.9", false, None);
                String::from_utf8(out).unwrap()
            }
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn fields_are_classified_without_regard_to_case() {
        assert_eq!(classify("Host"), Field::Host);
        assert_eq!(classify("TRANSFER-ENCODING"), Field::TransferEncoding);
        assert_eq!(classify("x-Forwarded-Proto"), Field::XForwardedProto);
        assert_eq!(classify("Proxy-Authorization"), Field::ProxyAuthorization);
        assert_eq!(classify("hosts"), Field::Other);
        assert_eq!(classify("hast"), Field::Other);
        assert_eq!(classify("Keep-Alive"), Field::KeepAlive);
        assert_eq!(classify("content-typo"), Field::Other);
        assert_eq!(classify(""), Field::Other);
        assert_eq!(classify("X-FORWARDED-FOR"), Field::XForwardedFor);
        assert_eq!(classify("x-forwarded_for"), Field::Other);
        assert_eq!(
            classify("X-Forwarded-Client-Cert"),
            Field::XForwardedClientCert
        );
        assert_eq!(classify("Content-Lengtx"), Field::Other);
        assert_eq!(classify("Content.Length"), Field::Other);
    }

    #[test]
    fn plain_requests_are_rewritten() {
        let out = request(
            b"GET /a?b=1 HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, x-secret\r\n\
              x-secret: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 1.2.3.4\r\nAccept: */*\r\n\r\n",
        );
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: web\r\nAccept: */*\r\n\
             x-forwarded-for: 1.2.3.4, 10.0.0.9\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: web\r\n\r\n"
        );
    }

    #[test]
    fn anything_unusual_goes_to_hyper() {
        for raw in [
            &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(request(raw), "Unfit", "{}", String::from_utf8_lossy(raw));
        }
        for raw in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\n bad fold\r\n\r\n",
            b"GET / HTTP/1.1\r\nUser-\xbf: 1\r\n",
        ] {
            assert_eq!(
                request(raw),
                "Malformed",
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(request(b"GET / HTTP/1.1\r\nHost: a\r\n"), "Partial");
    }

    fn response(raw: &[u8], head: bool) -> Result<(Framing, bool, String), InvalidResponse> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        match parse_response(raw, &mut headers, head)? {
            Response::Final(resp) => {
                let mut out = Vec::new();
                write_client_head(&mut out, &resp, None, false);
                let text = String::from_utf8(out).unwrap();
                Ok((resp.framing, resp.reusable, text))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn response_framing() {
        let ok = |raw: &[u8], head| response(raw, head).map(|(f, r, _)| (f, r));
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Ok((Framing::Length(5), true))
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false
            ),
            Ok((Framing::Chunked, true))
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            Ok((Framing::Chunked, false))
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\n\r\n", false),
            Ok((Framing::UntilClose, false))
        );
        assert_eq!(
            ok(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            ok(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            Ok((Framing::Length(0), false))
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            ),
            Ok((Framing::Length(0), false))
        );
        assert!(
            ok(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(ok(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        assert!(ok(b"HTTP/1.1 101 Switching\r\n\r\n", false).is_err());
        assert!(ok(b"HTTP/1.1 2000 OK\r\n\r\n", false).is_err());
    }

    #[test]
    fn client_head_drops_hop_by_hop_and_adds_date() {
        let (_, _, text) = response(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\n\
              Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(
            text.starts_with(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\ndate: "
            ),
            "{text}"
        );
        assert!(
            !text.contains("x-hop") && !text.contains("Keep-Alive"),
            "{text}"
        );
    }
}
