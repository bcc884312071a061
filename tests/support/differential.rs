//! The differential comparison ("Two paths, one truth", docs/STYLE.md): raw
//! bytes sent on a fresh client connection, what the client got back and
//! what the [`RecordingOrigin`](super::recording_origin) parsed, turned into
//! normalised facts, and the facts on which two paths differ.
//!
//! Shared by `tests/differential.rs` and the `h1_differential` fuzz target
//! (included there by path), so it depends on nothing but std, tokio,
//! httparse and its sibling `recording_origin`.
//!
//! Normalised on purpose, and only this (docs/RELIABILITY.md, "Differential
//! suite"):
//! - header field names are compared lower-cased: hyper writes every name
//!   in lower case upstream, the fast path forwards the client's spelling
//!   (both are the same field, RFC 9110 §5.1); the spelling is still
//!   counted, see [`names_spelled_differently`];
//! - fields are compared per name: the order of the values of one name is
//!   kept, the order between different names is not (RFC 9110 §5.3; hyper's
//!   header map moves fields when it removes hop-by-hop ones);
//! - the client's `Date` field is left out (the clock);
//! - chunked bodies are compared decoded (chunk sizes are the sender's
//!   choice), with their trailer fields; one cut short, by the data of its
//!   chunks so far.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::recording_origin::{
    OriginEvent, OriginRequest, chunked_data_so_far, decode_chunked, is_chunked, show,
};

/// `client_headers` and `response_headers` of [`proxy_config`]: short, so a
/// request that stalls is answered (or closed) within a case, yet far longer
/// than a client's grace, so a loaded machine's pause does not fire them.
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(2);

/// The proxy config both paths run with: one listener, one route to
/// `origin`; only `http1_fast_path` differs.
pub fn proxy_config(origin: SocketAddr, fast_path: bool) -> String {
    let timeout = PROXY_TIMEOUT.as_secs();
    format!(
        "[[listeners]]\naddr = \"127.0.0.1:0\"\nhttp1_fast_path = {fast_path}\n\n\
         [timeouts]\nclient_headers = \"{timeout}s\"\nresponse_headers = \"{timeout}s\"\n\
         shutdown_grace = \"1s\"\n\n\
         [[routes]]\nname = \"web\"\n\n  [[routes.backends]]\n  name = \"origin\"\n  \
         endpoints = [\"{origin}\"]\n"
    )
}

/// How long the client waits.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// For all the responses expected.
    pub overall: Duration,
    /// After the last one expected: for a close, or anything more.
    pub grace: Duration,
}

/// One response as the client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseSeen {
    /// `HTTP/1.1 200 OK`.
    pub status_line: String,
    pub code: u16,
    /// Names as sent.
    pub fields: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// What came back on one client connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSeen {
    /// Interim (1xx) and final responses, in order.
    pub responses: Vec<ResponseSeen>,
    /// The proxy closed the connection (EOF or reset) before the wait ended.
    pub closed: bool,
    /// Fewer final responses than requests came before [`Timing::overall`],
    /// and the connection stayed open.
    pub timed_out: bool,
    /// Bytes after the last response that are not a response.
    pub garbage: Vec<u8>,
    /// From the connect to the close or the end of the wait (not compared:
    /// it is the clock's; shown with `DIFF_SHOW`).
    pub elapsed: Duration,
}

/// Sends `bytes` on a fresh connection to `addr` (writing while reading, so
/// an early answer or close is seen) and reads responses: `heads[i]` tells
/// whether the i-th request is a HEAD (its response has no body).
pub async fn exchange(
    addr: SocketAddr,
    bytes: &[u8],
    heads: &[bool],
    timing: Timing,
) -> ClientSeen {
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(_) => {
            return ClientSeen {
                closed: true,
                ..ClientSeen::default()
            };
        }
    };
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let data = bytes.to_vec();
    // Keeps the write half open until the reading is done: a half-close
    // would tell the proxy the client has gone.
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&data).await;
        writer
    });
    let expected = heads.len().max(1);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut deadline = Instant::now() + timing.overall;
    let mut settled = false;
    let mut closed = false;
    loop {
        if !settled {
            let read = parse_responses(&buf, heads, false);
            if read.finals >= expected {
                settled = true;
                // A response that announces the close: wait for it.
                if !read.announces_close {
                    deadline = deadline.min(Instant::now() + timing.grace);
                }
            }
        }
        match tokio::time::timeout_at(deadline, reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    write.abort();
    let read = parse_responses(&buf, heads, closed);
    ClientSeen {
        timed_out: read.finals < expected && !closed,
        responses: read.responses,
        closed,
        garbage: read.garbage,
        elapsed: started.elapsed(),
    }
}

struct ReadResponses {
    responses: Vec<ResponseSeen>,
    finals: usize,
    garbage: Vec<u8>,
    /// The last final response carries `Connection: close`.
    announces_close: bool,
}

/// The responses at the start of `buf`; at `eof` a partial one is garbage.
fn parse_responses(buf: &[u8], heads: &[bool], eof: bool) -> ReadResponses {
    let mut out = ReadResponses {
        responses: Vec::new(),
        finals: 0,
        garbage: Vec::new(),
        announces_close: false,
    };
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(rest) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if !eof => break,
            _ => {
                out.garbage = rest.to_vec();
                break;
            }
        };
        let code = resp.code.unwrap_or_default();
        let fields: Vec<(String, Vec<u8>)> = resp
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect();
        let status_line = format!(
            "HTTP/1.{} {code} {}",
            resp.version.unwrap_or_default(),
            resp.reason.unwrap_or_default()
        );
        let value = |name: &str| {
            fields
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice())
                .collect::<Vec<_>>()
        };
        let interim = (100..200).contains(&code) && code != 101;
        let no_body = interim
            || code == 101
            || code == 204
            || code == 304
            || heads.get(out.finals).copied().unwrap_or(false);
        let chunked = value("transfer-encoding").iter().any(|v| {
            v.split(|&b| b == b',')
                .next_back()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        });
        let length = value("content-length")
            .first()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let body_start = at + len;
        let (body, used) = if no_body {
            (Vec::new(), 0)
        } else if chunked {
            match decode_chunked(&buf[body_start..]) {
                Ok(Some(decoded)) => (decoded.body, decoded.len),
                Ok(None) if !eof => break,
                _ => {
                    out.garbage = rest.to_vec();
                    break;
                }
            }
        } else if let Some(n) = length {
            if buf.len() - body_start < n {
                if eof {
                    out.garbage = rest.to_vec();
                }
                break;
            }
            (buf[body_start..body_start + n].to_vec(), n)
        } else if eof {
            (buf[body_start..].to_vec(), buf.len() - body_start)
        } else {
            // Until the close.
            break;
        };
        if !interim {
            out.finals += 1;
            out.announces_close = value("connection").iter().any(|v| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            });
        }
        out.responses.push(ResponseSeen {
            status_line,
            code,
            fields,
            body,
        });
        at = body_start + used;
        if code == 101 {
            out.garbage = buf[at..].to_vec();
            break;
        }
    }
    out
}

/// For arbitrary input (the fuzz target): whether each request a lenient
/// reading finds in `bytes` is a HEAD, as far as the requests can be told
/// apart (by `Content-Length` or chunked framing).
pub fn head_hints(bytes: &[u8]) -> Vec<bool> {
    let mut heads = Vec::new();
    let mut at = 0;
    while at < bytes.len() && heads.len() < 16 {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = req.parse(&bytes[at..]) else {
            break;
        };
        heads.push(req.method == Some("HEAD"));
        let has = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
        };
        at += len;
        if has("transfer-encoding").is_some() {
            match decode_chunked(&bytes[at..]) {
                Ok(Some(chunked)) => at += chunked.len,
                _ => break,
            }
        } else if let Some(h) = has("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                Some(n) => at += n,
                None => break,
            }
        }
    }
    heads
}

/// What one path did with one input: the client's side and the origin's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub client: ClientSeen,
    pub origin: Vec<OriginEvent>,
}

impl Observation {
    /// The normalised facts, as (what, value) in a fixed order.
    pub fn facts(&self) -> Vec<(String, String)> {
        let mut facts = Vec::new();
        let client = &self.client;
        facts.push(("client closed".to_string(), client.closed.to_string()));
        facts.push(("client timed out".to_string(), client.timed_out.to_string()));
        facts.push((
            "client responses".to_string(),
            client.responses.len().to_string(),
        ));
        for (i, resp) in client.responses.iter().enumerate() {
            let at = format!("client response {}", i + 1);
            facts.push((format!("{at} status"), resp.status_line.clone()));
            let fields = resp
                .fields
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("date"))
                .map(|(n, v)| (n.to_ascii_lowercase(), v.as_slice()));
            push_fields(&mut facts, &at, fields);
            facts.push((format!("{at} body"), show(&resp.body)));
        }
        if !client.garbage.is_empty() {
            facts.push(("client garbage".to_string(), show(&client.garbage)));
        }
        facts.push(("origin events".to_string(), self.origin.len().to_string()));
        for (i, event) in self.origin.iter().enumerate() {
            let at = format!("origin {}", i + 1);
            match event {
                OriginEvent::Request(req) => {
                    facts.push((at.clone(), format!("request {}", request_line(req))));
                    push_request(&mut facts, &at, req);
                }
                OriginEvent::Unparsable { reason, raw } => {
                    facts.push((at, format!("unparsable ({reason}): {}", show(raw))));
                }
                OriginEvent::Incomplete {
                    head: Some(head),
                    raw,
                } => {
                    facts.push((at.clone(), format!("incomplete {}", request_line(head))));
                    push_request(&mut facts, &at, head);
                    let so_far = raw.get(head.raw.len()..).unwrap_or_default();
                    if is_chunked(head) {
                        let data = chunked_data_so_far(so_far);
                        facts.push((format!("{at} chunked data so far"), show(&data)));
                    } else {
                        facts.push((format!("{at} body so far"), show(so_far)));
                    }
                }
                OriginEvent::Incomplete { head: None, raw } => {
                    facts.push((at, format!("incomplete: {}", show(raw))));
                }
            }
        }
        facts
    }

    /// The status codes the client got, for the summary (`200`, `400 closed`).
    pub fn client_summary(&self) -> String {
        let mut text: Vec<String> = self
            .client
            .responses
            .iter()
            .map(|r| r.code.to_string())
            .collect();
        if text.is_empty() {
            text.push("no response".to_string());
        }
        if self.client.closed {
            text.push("closed".to_string());
        }
        if self.client.timed_out {
            text.push("timed out".to_string());
        }
        text.join(" ")
    }
}

fn request_line(req: &OriginRequest) -> String {
    format!("{} {} HTTP/1.{}", req.method, req.target, req.version)
}

fn push_request(facts: &mut Vec<(String, String)>, at: &str, req: &OriginRequest) {
    let fields = req
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.value.as_slice()));
    push_fields(facts, at, fields);
    facts.push((format!("{at} body"), show(&req.body)));
    if let Some(trailers) = &req.trailers {
        let text: Vec<String> = trailers
            .iter()
            .map(|f| format!("{}: {}", f.name, show(&f.value)))
            .collect();
        facts.push((format!("{at} chunked trailers"), text.join(" | ")));
    }
}

/// One fact per field name (sorted), its values in order joined by ` | `.
fn push_fields<'a>(
    facts: &mut Vec<(String, String)>,
    at: &str,
    fields: impl Iterator<Item = (String, &'a [u8])>,
) {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in fields {
        by_name.entry(name).or_default().push(show(value));
    }
    for (name, values) in by_name {
        facts.push((format!("{at} field {name}"), values.join(" | ")));
    }
}

/// Each fact on which `fast` and `hyper` differ, as `what: fast=… hyper=…`
/// (`labels` name the two sides).
pub fn differences(fast: &Observation, hyper: &Observation, labels: [&str; 2]) -> Vec<String> {
    let fast_facts = fast.facts();
    let hyper_facts = hyper.facts();
    let fast_map: BTreeMap<&str, &str> = fast_facts
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let hyper_map: BTreeMap<&str, &str> = hyper_facts
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut keys: Vec<&str> = Vec::new();
    for (key, _) in fast_facts.iter().chain(&hyper_facts) {
        if !keys.contains(&key.as_str()) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .filter_map(|key| {
            let f = fast_map.get(key).copied();
            let h = hyper_map.get(key).copied();
            (f != h).then(|| {
                format!(
                    "{key}: {}={} {}={}",
                    labels[0],
                    f.unwrap_or("(absent)"),
                    labels[1],
                    h.unwrap_or("(absent)")
                )
            })
        })
        .collect()
}

/// Whether the origin got the same field names spelled differently through
/// the two paths (expected: hyper lower-cases them, the fast path does not).
pub fn names_spelled_differently(fast: &Observation, hyper: &Observation) -> bool {
    fn spellings(obs: &Observation) -> Vec<Vec<&str>> {
        obs.origin
            .iter()
            .filter_map(|e| match e {
                OriginEvent::Request(req) => Some(req),
                _ => None,
            })
            .map(|req| {
                let mut names: Vec<&str> = req.fields.iter().map(|f| f.spelled.as_str()).collect();
                names.sort_by_key(|n| n.to_ascii_lowercase());
                names
            })
            .collect()
    }
    spellings(fast) != spellings(hyper)
}
