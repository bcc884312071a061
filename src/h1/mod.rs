//! The HTTP/1.1 fast path: plain keep-alive requests proxied byte for byte.
//!
//! Most traffic through a sidecar or an edge is small HTTP/1.1 requests on
//! kept-alive connections. For those, hyper's general machinery (a header
//! map per message, a request future moved through the dispatcher, a
//! connection task and a channel per upstream exchange) costs more CPU than
//! the proxying itself. This module serves them on the client connection's
//! own task: it parses the head with httparse, makes the same decisions as
//! [`crate::proxy`] (route, override, sticky bucket, weighted pick,
//! endpoint, retries, passive health, metrics, access log), writes the
//! rewritten head and body to a pooled upstream socket in one write, and
//! passes the response back with its framing untouched.
//!
//! Anything else is handed to hyper, with the bytes read so far, before any
//! decision with a side effect was taken: HTTP/1.0, upgrades, `Expect`,
//! chunked or large request bodies, absolute-form targets, h2 prior
//! knowledge, gRPC, malformed heads (hyper answers those with its own
//! statuses), routes with a mirror or with TLS / HTTP/2 endpoints. From
//! then on hyper serves the connection.

mod chunked;
mod head;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

pub use head::InvalidResponse;

use crate::access_log::Entry;
use crate::config::{Limits, Sticky, Timeouts};
use crate::error::{ProxyError, UpstreamError};
use crate::proxy::{self, ClientInfo, Served};
use crate::state::{Backend, Route, Snapshot, State};
use crate::upstream::{Endpoint, RawConn};
use chunked::Chunked;
use head::{Framing, Parsed, Response};

/// A request body up to this size is read before the request is sent; a
/// larger one goes to hyper, which streams it.
const MAX_BUFFERED_BODY: u64 = 64 * 1024;
/// The largest upstream response head accepted (hyper's client default).
const MAX_RESPONSE_HEAD: usize = 400 * 1024;
/// Reads take at least this much room.
const READ_ROOM: usize = 2 * 1024;
/// Body reads take up to this much room.
const BODY_ROOM: usize = 32 * 1024;
/// Buffers grown past this are released after a request, so an idle
/// connection holds little memory.
const KEEP_CAPACITY: usize = 8 * 1024;
/// On shutdown, how long a connection that has sent nothing yet may take to
/// send its first request (it was accepted a moment before).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Whether the fast path is on: it is unless `SLUICEGATE_H1_FAST_PATH=off`
/// (for comparing against hyper's path, or as an escape hatch).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("SLUICEGATE_H1_FAST_PATH").map_or(true, |v| v != "off" && v != "0")
    })
}

/// What became of a connection the fast path served.
#[derive(Debug)]
pub enum Outcome {
    /// Done: closed by the client, a timeout, shutdown or an error.
    Closed,
    /// A request the fast path leaves to hyper: these bytes (read, not
    /// answered) and the rest of the connection are hyper's.
    Handoff(Bytes),
}

/// The client connection and what it is served with.
pub struct Client<'a> {
    pub state: &'a State,
    pub info: ClientInfo,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub stop: &'a mut watch::Receiver<bool>,
}

/// Serves requests on `stream` until it closes or a request needs hyper.
pub async fn serve<S>(stream: &mut S, client: Client<'_>) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Client {
        state,
        info,
        timeouts,
        limits,
        stop,
    } = client;
    let mut conn = Conn {
        state,
        info,
        timeouts,
        limits,
        client_ip: info.peer.ip().to_canonical().to_string(),
        buf: BytesMut::new(),
        out: Vec::new(),
        resp: BytesMut::new(),
    };
    let mut served = false;
    let mut closing = false;
    loop {
        // 1. A complete head (and a small body) in `buf`.
        let idle = served && conn.buf.is_empty();
        let mut deadline = Instant::now()
            + if idle {
                timeouts.client_idle
            } else {
                timeouts.client_headers
            };
        let mut headed = !idle;
        loop {
            if !conn.buf.is_empty() {
                if !headed {
                    // The first byte after an idle wait: the head is due
                    // within `client_headers` from now.
                    headed = true;
                    deadline = Instant::now() + timeouts.client_headers;
                }
                match conn.ready() {
                    Ready::Yes => break,
                    Ready::Unfit => return Outcome::Handoff(conn.buf.freeze()),
                    Ready::More => {}
                }
            }
            let watch_stop = (!closing).then_some(&mut *stop);
            match read_more(stream, &mut conn.buf, deadline, watch_stop).await {
                Read::Data => {}
                Read::Stop => {
                    closing = true;
                    if conn.buf.is_empty() {
                        if served {
                            return Outcome::Closed;
                        }
                        deadline = deadline.min(Instant::now() + FIRST_REQUEST_GRACE);
                    }
                }
                Read::Closed => return Outcome::Closed,
            }
        }
        // 2. Decide and proxy it, on the snapshot in force now.
        let snapshot = state.snapshot_full();
        let Some(plan) = conn.plan(&snapshot) else {
            return Outcome::Handoff(conn.buf.freeze());
        };
        let consumed = plan.consumed;
        closing |= *stop.borrow();
        let keep_alive = conn.exchange(stream, &snapshot, plan, closing).await;
        conn.buf.advance(consumed);
        conn.trim();
        served = true;
        if !keep_alive || closing {
            let _ = stream.shutdown().await;
            return Outcome::Closed;
        }
    }
}

/// Whether `buf` holds a request to act on.
enum Ready {
    Yes,
    More,
    Unfit,
}

enum Read {
    Data,
    /// Shutdown started.
    Stop,
    /// EOF, an error or the deadline.
    Closed,
}

async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    deadline: Instant,
    stop: Option<&mut watch::Receiver<bool>>,
) -> Read {
    buf.reserve(READ_ROOM);
    let stop_changed = async {
        match stop {
            Some(stop) => {
                let _ = stop.changed().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        read = stream.read_buf(buf) => match read {
            Ok(0) | Err(_) => Read::Closed,
            Ok(_) => Read::Data,
        },
        () = stop_changed => Read::Stop,
        () = tokio::time::sleep_until(deadline.into()) => Read::Closed,
    }
}

/// What was decided about one request, before it is sent.
struct Plan<'s> {
    /// Bytes of `buf` the request takes (head and body).
    consumed: usize,
    method: Method,
    close: bool,
    started: Instant,
    log: Option<Entry>,
    choice: Result<Choice<'s>, ProxyError>,
}

/// The route and backend picked for a request.
struct Choice<'s> {
    route: &'s Route,
    backend: &'s Backend,
    /// A sticky bucket to hand the client in a cookie.
    new_bucket: Option<u32>,
}

/// An upstream that answered with a complete response head in `resp`.
struct Answered<'s> {
    conn: RawConn,
    endpoint: &'s Arc<Endpoint>,
    backend: &'s Backend,
}

/// A failed attempt: the error, and whether the socket was found closed
/// before any byte of a response (the keep-alive race).
struct Failure {
    error: UpstreamError,
    stale: bool,
}

/// How a relayed response ended.
struct Relayed {
    bytes: u64,
    /// The client connection can carry another request.
    keep_alive: bool,
}

/// Per-connection state and buffers.
struct Conn<'a> {
    state: &'a State,
    info: ClientInfo,
    timeouts: Timeouts,
    limits: Limits,
    client_ip: String,
    /// Bytes read from the client, not yet served.
    buf: BytesMut,
    /// The message being written (request to the upstream, then response).
    out: Vec<u8>,
    /// Bytes read from the upstream.
    resp: BytesMut,
}

impl Conn<'_> {
    /// Whether `buf` holds a complete head and body, needs more, or is for
    /// hyper.
    fn ready(&self) -> Ready {
        let mut headers = [httparse::EMPTY_HEADER; head::MAX_REQUEST_HEADERS];
        match head::parse_request(&self.buf, &mut headers, self.limits.max_request_headers) {
            Parsed::Partial if self.buf.len() >= self.limits.max_header_bytes => Ready::Unfit,
            Parsed::Partial => Ready::More,
            Parsed::Unfit => Ready::Unfit,
            Parsed::Request(req) if req.content_length > MAX_BUFFERED_BODY => Ready::Unfit,
            Parsed::Request(req) => {
                let whole = req.len as u64 + req.content_length;
                if (self.buf.len() as u64) < whole {
                    Ready::More
                } else {
                    Ready::Yes
                }
            }
        }
    }

    /// Releases buffers that grew large, so an idle connection stays small.
    fn trim(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::new();
        }
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
        if self.resp.capacity() > KEEP_CAPACITY {
            self.resp = BytesMut::new();
        }
    }

    /// Decides where the request in `buf` goes and writes it for the
    /// upstream into `out`; `None` when it is for hyper after all (its route
    /// needs what only the general path does). Nothing with a side effect
    /// (the weighted pick) happens before that is known.
    fn plan<'s>(&mut self, snapshot: &'s Snapshot) -> Option<Plan<'s>> {
        let started = Instant::now();
        let mut headers = [httparse::EMPTY_HEADER; head::MAX_REQUEST_HEADERS];
        let Parsed::Request(req) =
            head::parse_request(&self.buf, &mut headers, self.limits.max_request_headers)
        else {
            return None;
        };
        let method = Method::from_bytes(req.method.as_bytes()).ok()?;
        let body_len = usize::try_from(req.content_length).ok()?;
        let consumed = req.len + body_len;
        let route = snapshot.find_route(Some(req.host), req.path());
        if route.is_some_and(|r| !r.fast_h1) {
            return None;
        }
        let log = self.state.access_log().map(|_| Entry {
            time: std::time::SystemTime::now(),
            client: self.info.peer.ip(),
            method: method.clone(),
            version: Version::HTTP_11,
            host: Some(req.host.to_string()),
            path: req.target.to_string(),
            status: StatusCode::OK,
            bytes: 0,
            duration: Duration::ZERO,
            route: None,
            backend: None,
            endpoint: None,
            revision: 0,
            retries: 0,
        });
        let choice = route.ok_or(ProxyError::NoRoute).and_then(|route| {
            let (backend, new_bucket) = proxy::choose_backend(route, req.headers, self.info)?;
            Ok(Choice {
                route,
                backend,
                new_bucket,
            })
        });
        self.out.clear();
        head::write_upstream_head(&mut self.out, &req, &self.client_ip, self.info.tls);
        self.out
            .extend_from_slice(&self.buf[req.len..req.len + body_len]);
        Some(Plan {
            consumed,
            method,
            close: req.close,
            started,
            log,
            choice,
        })
    }

    /// Sends the planned request and relays the response (or answers an
    /// error); false when the client connection must close afterwards.
    async fn exchange<S>(
        &mut self,
        stream: &mut S,
        snapshot: &Snapshot,
        plan: Plan<'_>,
        closing: bool,
    ) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let close = plan.close || closing;
        let mut served = Served::default();
        let result = match &plan.choice {
            Ok(choice) => {
                served.route = Some(choice.route);
                served.backend = Some(choice.backend);
                self.forward(choice, &plan.method, &mut served).await
            }
            Err(ProxyError::NoRoute) => Err(ProxyError::NoRoute),
            Err(_) => Err(ProxyError::NoEndpoint),
        };
        let (status, relayed) = match result {
            Ok(answered) => {
                let cookie = plan.choice.as_ref().ok().and_then(|c| {
                    match (c.new_bucket, &c.route.config.sticky) {
                        (Some(bucket), Some(Sticky::Cookie { name, max_age })) => {
                            Some(proxy::sticky_cookie(name, bucket, *max_age, self.info.tls))
                        }
                        _ => None,
                    }
                });
                let head = plan.method == Method::HEAD;
                self.relay(stream, answered, head, cookie.as_deref(), close, |status| {
                    served.record(self.state, snapshot, status, plan.started.elapsed());
                })
                .await
            }
            Err(error) => {
                tracing::debug!(%error, "request failed");
                let status = error.status();
                served.record(self.state, snapshot, status, plan.started.elapsed());
                (status, self.answer_error(stream, &error, close).await)
            }
        };
        if let (Some(log), Some(mut entry)) = (self.state.access_log(), plan.log) {
            served.fill(&mut entry, status, snapshot.revision);
            entry.bytes = relayed.bytes;
            entry.duration = plan.started.elapsed();
            log.log(entry);
        }
        relayed.keep_alive && !close
    }

    /// Sends `out` to an endpoint of the chosen backend, moving on to the
    /// next endpoint when that is safe, until one answers with a response
    /// head. Mirrors [`crate::proxy`]'s attempt loop.
    async fn forward<'s>(
        &mut self,
        choice: &Choice<'s>,
        method: &Method,
        served: &mut Served<'s>,
    ) -> Result<Answered<'s>, ProxyError> {
        let route = choice.route;
        let mut backend = choice.backend;
        // The whole request is in `out`: an idempotent one can be sent again.
        let replayable = route.config.retries > 0 && proxy::is_idempotent(method);
        let head_request = *method == Method::HEAD;
        let mut tried: Vec<&Arc<Endpoint>> = Vec::new();
        let mut last_error = None;
        let mut stale_retried = false;
        for attempt in 0..=route.config.retries {
            let Some((chosen, endpoint)) = proxy::next_endpoint(route, backend, &tried) else {
                break;
            };
            if attempt > 0 {
                backend.metrics.record_retry();
                served.retries = attempt;
            }
            backend = chosen;
            served.backend = Some(backend);
            served.endpoint = Some(endpoint);
            tried.push(endpoint);
            let mut conn = match endpoint.raw_connection(self.timeouts.connect).await {
                Ok(conn) => conn,
                Err(error) => {
                    // Nothing was sent: the same request may go elsewhere.
                    tracing::debug!(endpoint = endpoint.authority(), %error, "connect failed");
                    endpoint.record_failure(&backend.outlier);
                    last_error = Some(error);
                    continue;
                }
            };
            match self.send(&mut conn.stream, head_request).await {
                Ok(()) => {
                    return Ok(Answered {
                        conn,
                        endpoint,
                        backend,
                    });
                }
                Err(Failure { error, stale })
                    if stale && conn.reused && replayable && !stale_retried =>
                {
                    // The keep-alive race: once, the same endpoint again on a
                    // fresh connection (its other idle ones are as old).
                    tracing::debug!(endpoint = endpoint.authority(), %error, "stale connection, retrying");
                    stale_retried = true;
                    endpoint.close_idle();
                    tried.pop();
                    last_error = Some(error);
                }
                Err(Failure { error, .. }) => {
                    endpoint.record_failure(&backend.outlier);
                    if !replayable || matches!(error, UpstreamError::ResponseTimeout) {
                        return Err(error.into());
                    }
                    tracing::debug!(endpoint = endpoint.authority(), %error, "request failed, retrying");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.map_or(ProxyError::NoEndpoint, ProxyError::Upstream))
    }

    /// Writes `out` and reads until `resp` starts with a final response head
    /// (1xx interim responses are skipped).
    async fn send(&mut self, upstream: &mut TcpStream, head_request: bool) -> Result<(), Failure> {
        self.resp.clear();
        if let Err(error) = upstream.write_all(&self.out).await {
            return Err(Failure {
                error: UpstreamError::Io(error),
                stale: true,
            });
        }
        let wait = async {
            loop {
                self.resp.reserve(READ_ROOM);
                match upstream.read_buf(&mut self.resp).await {
                    Ok(0) => {
                        let error = std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "connection closed before a response",
                        );
                        return Err(Failure {
                            error: UpstreamError::Io(error),
                            stale: self.resp.is_empty(),
                        });
                    }
                    Err(error) => {
                        return Err(Failure {
                            error: UpstreamError::Io(error),
                            stale: self.resp.is_empty(),
                        });
                    }
                    Ok(_) => {}
                }
                loop {
                    let mut headers = [httparse::EMPTY_HEADER; head::MAX_RESPONSE_HEADERS];
                    let parsed = head::parse_response(&self.resp, &mut headers, head_request);
                    match parsed {
                        Ok(Response::Final(_)) => return Ok(()),
                        Ok(Response::Interim(len)) => self.resp.advance(len),
                        Ok(Response::Partial) if self.resp.len() > MAX_RESPONSE_HEAD => {
                            return Err(Failure {
                                error: InvalidResponse("response head too large").into(),
                                stale: false,
                            });
                        }
                        Ok(Response::Partial) => break,
                        Err(invalid) => {
                            return Err(Failure {
                                error: invalid.into(),
                                stale: false,
                            });
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(self.timeouts.response_headers, wait).await {
            Ok(result) => result,
            Err(_) => Err(Failure {
                error: UpstreamError::ResponseTimeout,
                stale: false,
            }),
        }
    }

    /// Passes the response in `resp` (and the rest of its body) to the
    /// client; `counted` is called with the status once the head is known.
    async fn relay<S>(
        &mut self,
        stream: &mut S,
        answered: Answered<'_>,
        head_request: bool,
        cookie: Option<&str>,
        close: bool,
        counted: impl FnOnce(StatusCode),
    ) -> (StatusCode, Relayed)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Answered {
            mut conn,
            endpoint,
            backend,
        } = answered;
        let Some((status, framing, mut reusable, head_len)) =
            self.client_head(head_request, cookie, close)
        else {
            // `send` checked this head already.
            return (
                StatusCode::BAD_GATEWAY,
                Relayed {
                    bytes: 0,
                    keep_alive: false,
                },
            );
        };
        if status.is_server_error() {
            endpoint.record_failure(&backend.outlier);
        } else {
            endpoint.record_success();
        }
        counted(status);
        // The start of the body came with the head: send both in one write.
        let mut body = Body::new(framing);
        let first = match body.take(&self.resp[head_len..]) {
            Ok(n) => n,
            Err(_) => {
                return (
                    status,
                    Relayed {
                        bytes: 0,
                        keep_alive: false,
                    },
                );
            }
        };
        if head_len + first < self.resp.len() {
            // More than the response: the upstream is not to be trusted.
            reusable = false;
        }
        self.out
            .extend_from_slice(&self.resp[head_len..head_len + first]);
        let mut bytes = first as u64;
        let idle = self.timeouts.client_idle;
        if !write_within(stream, &self.out, idle).await {
            return (
                status,
                Relayed {
                    bytes,
                    keep_alive: false,
                },
            );
        }
        while !body.done() {
            self.resp.clear();
            self.resp.reserve(BODY_ROOM);
            let read = tokio::time::timeout(idle, conn.stream.read_buf(&mut self.resp)).await;
            let got = match read {
                Ok(Ok(0)) if framing == Framing::UntilClose => break,
                Ok(Ok(n)) if n > 0 => n,
                // Cut short, failed or stalled: the client cannot be told
                // otherwise than by closing.
                _ => {
                    return (
                        status,
                        Relayed {
                            bytes,
                            keep_alive: false,
                        },
                    );
                }
            };
            let take = match body.take(&self.resp[..got]) {
                Ok(n) => n,
                Err(_) => {
                    return (
                        status,
                        Relayed {
                            bytes,
                            keep_alive: false,
                        },
                    );
                }
            };
            if take < got {
                reusable = false;
            }
            bytes += take as u64;
            if !write_within(stream, &self.resp[..take], idle).await {
                return (
                    status,
                    Relayed {
                        bytes,
                        keep_alive: false,
                    },
                );
            }
        }
        if reusable {
            endpoint.return_raw(conn.stream);
        }
        let keep_alive = framing != Framing::UntilClose;
        (status, Relayed { bytes, keep_alive })
    }

    /// Writes the client's response head for the upstream head in `resp`
    /// into `out`: status, framing, reusability of the upstream socket and
    /// the head's length.
    fn client_head(
        &mut self,
        head_request: bool,
        cookie: Option<&str>,
        close: bool,
    ) -> Option<(StatusCode, Framing, bool, usize)> {
        let mut headers = [httparse::EMPTY_HEADER; head::MAX_RESPONSE_HEADERS];
        let Ok(Response::Final(resp)) =
            head::parse_response(&self.resp, &mut headers, head_request)
        else {
            return None;
        };
        let status = StatusCode::from_u16(resp.status).ok()?;
        self.out.clear();
        head::write_client_head(&mut self.out, &resp, cookie, close);
        Some((status, resp.framing, resp.reusable, resp.len))
    }

    /// Answers an error sluicegate produced; false when the connection
    /// cannot go on.
    async fn answer_error<S>(&mut self, stream: &mut S, error: &ProxyError, close: bool) -> Relayed
    where
        S: AsyncWrite + Unpin,
    {
        let status = error.status();
        let text = proxy::error_text(error);
        let retry_after = crate::health::RETRY_AFTER.as_secs().to_string();
        let mut fields = vec![("content-type", "text/plain; charset=utf-8")];
        if status == StatusCode::SERVICE_UNAVAILABLE {
            fields.push(("retry-after", retry_after.as_str()));
        }
        self.out.clear();
        head::write_own_response(&mut self.out, status, &fields, text.as_bytes(), close);
        let written = write_within(stream, &self.out, self.timeouts.client_idle).await;
        Relayed {
            bytes: text.len() as u64,
            keep_alive: written,
        }
    }
}

/// Writes all of `data` to the client within `limit`.
async fn write_within<S: AsyncWrite + Unpin>(stream: &mut S, data: &[u8], limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, stream.write_all(data)).await,
        Ok(Ok(()))
    )
}

/// Where a response body ends.
enum Body {
    Empty,
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

impl Body {
    fn new(framing: Framing) -> Body {
        match framing {
            Framing::Empty => Body::Empty,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(Chunked::new()),
            Framing::UntilClose => Body::UntilClose,
        }
    }

    fn done(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Length(left) => *left == 0,
            Body::Chunked(chunked) => chunked.is_done(),
            Body::UntilClose => false,
        }
    }

    /// How many of `data`'s bytes belong to the body.
    fn take(&mut self, data: &[u8]) -> Result<usize, chunked::InvalidChunked> {
        Ok(match self {
            Body::Empty => 0,
            Body::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= n as u64;
                n
            }
            Body::Chunked(chunked) => chunked.feed(data)?,
            Body::UntilClose => data.len(),
        })
    }
}
