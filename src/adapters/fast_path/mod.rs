//! The HTTP/1.1 fast path: plain keep-alive requests proxied byte for byte.
//!
//! Most traffic through a sidecar or an edge is small HTTP/1.1 requests on
//! kept-alive connections. For those, hyper's general machinery (a header
//! map per message, a request future moved through the dispatcher, a
//! connection task and a channel per upstream exchange) costs more CPU than
//! the proxying itself. This module serves them on the client connection's
//! own task: it parses the head with httparse, makes the same decisions as
//! [`crate::adapters::hyper_path`] (route, override, sticky bucket, weighted pick,
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
mod io;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::config::{FIRST_REQUEST_GRACE, Limits, ListenerConfig, Timeouts};
use crate::control::{Route, Snapshot, State};
use crate::error::{ProxyError, UpstreamError};
use crate::exchange::attempt::{Answer, Attempts};
use crate::exchange::decide::{self, Choice, ClientInfo};
use crate::exchange::outcome::{Ledger, Served, error_headers, error_text};
use crate::telemetry::access_log::Entry;
use crate::upstream::{Endpoint, RawConn};
use head::{Framing, Parsed};
pub use io::Readable;
use io::{BodyLeft, Read, now_or_never, read_more, read_response, wait_readable, within};

/// A request body up to this size is read before the request is sent; a
/// larger one goes to hyper, which streams it.
const MAX_BUFFERED_BODY: u64 = 64 * 1024;
/// The largest upstream response head accepted (hyper's client default).
const MAX_RESPONSE_HEAD: usize = 400 * 1024;
/// Reads take at least this much room.
const READ_ROOM: usize = 2 * 1024;
/// How long an idle keep-alive connection keeps its buffers before it lets
/// them go and waits for its next request holding none.
const IDLE_TRIM: std::time::Duration = std::time::Duration::from_secs(1);
/// Above this many open client connections an idle one lets its buffers go
/// at once (what a request then costs in allocations is small next to
/// thousands of idle clients' buffers).
const MANY_OPEN: u64 = 1024;
/// Body reads take up to this much room.
const BODY_ROOM: usize = 32 * 1024;
/// Buffers grown past this are released after a request, so an idle
/// connection holds little memory.
const KEEP_CAPACITY: usize = 8 * 1024;

/// Whether the fast path tries a new client connection first: its
/// listener's `http1_fast_path` key (on unless set false; `None` when not
/// known here) and no ALPN choice of h2. The other two parts of the rule:
/// per route, [`Route::fast_h1`] (no mirror, every endpoint plain HTTP/1.1),
/// and per request, the head parser's `Unfit` (see the module doc).
pub fn takes_connection(listener: Option<&ListenerConfig>, alpn: Option<&[u8]>) -> bool {
    listener.is_none_or(|l| l.http1_fast_path) && alpn != Some(b"h2")
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
    S: AsyncRead + AsyncWrite + Readable + Unpin,
{
    let Client {
        state,
        info,
        timeouts,
        limits,
        stop,
    } = client;
    let client_ip = info.peer.ip().to_canonical().to_string();
    let mut conn = Conn {
        state,
        info,
        timeouts,
        limits,
        client_ip,
        buf: BytesMut::new(),
        out: Vec::new(),
        resp: BytesMut::new(),
        timer: Box::pin(tokio::time::sleep(timeouts.client_headers)),
    };
    // The busy part is boxed, and dropped while the connection waits idle
    // holding no buffer: an idle connection's task keeps room for `Conn`
    // and this wait, not for an exchange under way (one allocation per
    // wake-up from such a wait, none per request).
    let mut resume = None;
    loop {
        let busy = Box::pin(serve_busy(&mut *stream, &mut conn, &mut *stop, resume));
        let due = match busy.await {
            Busy::Done(outcome) => return outcome,
            Busy::Idle { due } => due,
        };
        conn.release();
        conn.timer.as_mut().reset(due.into());
        // Idle, so a shutdown ends the connection (as a busy burst does).
        match wait_readable(stream, conn.timer.as_mut(), Some(&mut *stop)).await {
            Read::Data => resume = Some(due),
            Read::Stop | Read::Closed => return Outcome::Closed,
        }
    }
}

/// How a busy stretch of a connection ended.
enum Busy {
    Done(Outcome),
    /// Idle for a while, or one of very many: wait (until `due`, the idle
    /// deadline) holding no buffer.
    Idle {
        due: Instant,
    },
}

/// Serves requests until the connection ends, needs hyper, or goes idle
/// for long (see [`Busy::Idle`]); `resume` is the idle deadline when this
/// follows such a wait (nothing served since, nothing read yet).
async fn serve_busy<S>(
    stream: &mut S,
    conn: &mut Conn<'_>,
    stop: &mut watch::Receiver<bool>,
    resume: Option<Instant>,
) -> Busy
where
    S: AsyncRead + AsyncWrite + Readable + Unpin,
{
    let (state, timeouts) = (conn.state, conn.timeouts);
    let mut served = resume.is_some();
    let mut closing = false;
    let mut resume = resume;
    loop {
        // 1. A complete head (and a small body) in `buf`, decided on the
        // snapshot in force when it became complete.
        let mut idle = served && conn.buf.is_empty();
        // Idle past IDLE_TRIM: the buffers were let go.
        let mut trimmed = resume.is_some();
        // Armed only when a read has to wait: under load the next request
        // is often there already.
        let mut deadline: Option<Instant> = resume.take();
        // Loaded once the bytes are there, so a change made while the
        // connection was idle applies to this request.
        let mut loaded: Option<Arc<Snapshot>> = None;
        let plan = loop {
            if !conn.buf.is_empty() {
                if loaded.is_none() {
                    loaded = Some(state.snapshot_full());
                }
                let Some(snapshot) = loaded.as_deref() else {
                    return Busy::Done(Outcome::Closed);
                };
                match conn.plan(snapshot) {
                    Prep::Ready(plan) => break plan,
                    Prep::Unfit => return Busy::Done(Outcome::Handoff(conn.buf.split().freeze())),
                    // After a request was served, answered as hyper answers
                    // a malformed later head: 400, then close. A connection's
                    // first bytes are hyper's to judge (h2 prior knowledge).
                    Prep::Malformed if served => {
                        conn.refuse_malformed(stream).await;
                        return Busy::Done(Outcome::Closed);
                    }
                    Prep::Malformed => {
                        return Busy::Done(Outcome::Handoff(conn.buf.split().freeze()));
                    }
                    Prep::More => {}
                }
            }
            conn.buf.reserve(READ_ROOM);
            let read = match now_or_never(stream.read_buf(&mut conn.buf)).await {
                Some(read) => Read::from(read),
                None => {
                    let limit = if idle {
                        timeouts.client_idle
                    } else {
                        timeouts.client_headers
                    };
                    let due = *deadline.get_or_insert_with(|| Instant::now() + limit);
                    let watch_stop = (!closing).then_some(&mut *stop);
                    if !idle {
                        conn.timer.as_mut().reset(due.into());
                        read_more(stream, &mut conn.buf, conn.timer.as_mut(), watch_stop).await
                    } else if trimmed || state.telemetry().open_connections() > MANY_OPEN {
                        // Idle for a while, or one of very many: the
                        // caller waits holding no buffer (nor this future).
                        return Busy::Idle { due };
                    } else {
                        // A keep-alive client's next request mostly comes
                        // within IDLE_TRIM: the buffers wait with it until then.
                        let trim_at = (Instant::now() + IDLE_TRIM).min(due);
                        conn.timer.as_mut().reset(trim_at.into());
                        match read_more(stream, &mut conn.buf, conn.timer.as_mut(), watch_stop)
                            .await
                        {
                            // The trim time, not the deadline (an EOF here
                            // is read again, from the empty buffer).
                            Read::Closed if trim_at < due => {
                                trimmed = true;
                                continue;
                            }
                            other => other,
                        }
                    }
                }
            };
            match read {
                Read::Data => {
                    if idle {
                        // The first byte after an idle wait: the head is due
                        // within `client_headers` from now.
                        idle = false;
                        deadline = None;
                    }
                    loaded = None;
                }
                Read::Stop => {
                    closing = true;
                    if conn.buf.is_empty() {
                        if served {
                            return Busy::Done(Outcome::Closed);
                        }
                        let grace = Instant::now() + FIRST_REQUEST_GRACE;
                        deadline = Some(deadline.map_or(grace, |d| d.min(grace)));
                    }
                }
                Read::Closed => return Busy::Done(Outcome::Closed),
            }
        };
        // 2. Proxy it.
        let consumed = plan.consumed;
        closing |= *stop.borrow();
        let Some(snapshot) = loaded.as_deref() else {
            return Busy::Done(Outcome::Closed);
        };
        let keep_alive = conn.exchange(stream, snapshot, plan, closing).await;
        conn.buf.advance(consumed);
        conn.trim();
        served = true;
        if !keep_alive || closing {
            let _ = stream.shutdown().await;
            return Busy::Done(Outcome::Closed);
        }
    }
}

/// What `buf` holds.
enum Prep<'s> {
    /// A request to send, planned.
    Ready(Plan<'s>),
    /// Not all of the head (or of a small body) yet.
    More,
    /// A request for hyper.
    Unfit,
    /// Not a request head at all.
    Malformed,
}

/// What was decided about one request, before it is sent.
struct Plan<'s> {
    /// Bytes of `buf` the request takes (head and body).
    consumed: usize,
    /// The route it matched, also when no backend could take it.
    route: Option<&'s Route>,
    method: Method,
    close: bool,
    started: Instant,
    /// The access log line, when there is an access log.
    log: Option<Box<Entry>>,
    choice: Result<Choice<'s>, ProxyError>,
}

/// An upstream that answered with a complete response head in `resp`.
struct Answered<'s> {
    conn: RawConn,
    endpoint: &'s Arc<Endpoint>,
    head: Head,
}

impl Answer for Answered<'_> {
    fn status(&self) -> StatusCode {
        self.head.status
    }
}

/// What the client's response head depends on besides the upstream's.
struct Reply<'a> {
    head_request: bool,
    cookie: Option<&'a str>,
    close: bool,
}

/// The upstream's response head, as far as relaying its body goes.
struct Head {
    status: StatusCode,
    framing: Framing,
    /// The upstream socket may carry another request afterwards.
    reusable: bool,
    /// Bytes of the head at the start of `resp`.
    len: usize,
}

/// Why no response head was read.
enum ReadFailure {
    /// The socket failed or closed before any response byte.
    Lost(std::io::Error),
    Upstream(UpstreamError),
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
    /// The deadline of whatever is being waited for (reset, not re-created,
    /// for each wait).
    timer: Pin<Box<Sleep>>,
}

impl Conn<'_> {
    /// Lets every buffer go (the connection is idle: `buf` holds nothing).
    fn release(&mut self) {
        self.buf = BytesMut::new();
        self.out = Vec::new();
        self.resp = BytesMut::new();
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
    fn plan<'s>(&mut self, snapshot: &'s Snapshot) -> Prep<'s> {
        let mut headers = [httparse::EMPTY_HEADER; head::MAX_REQUEST_HEADERS];
        let req =
            match head::parse_request(&self.buf, &mut headers, self.limits.max_request_headers) {
                Parsed::Request(req) => req,
                Parsed::Partial if self.buf.len() >= self.limits.max_header_bytes => {
                    return Prep::Unfit;
                }
                Parsed::Partial => return Prep::More,
                Parsed::Unfit => return Prep::Unfit,
                Parsed::Malformed => return Prep::Malformed,
            };
        if req.content_length > MAX_BUFFERED_BODY {
            return Prep::Unfit;
        }
        // Both fit in memory: the body is at most MAX_BUFFERED_BODY.
        let body_len = req.content_length as usize;
        let consumed = req.len + body_len;
        if self.buf.len() < consumed {
            return Prep::More;
        }
        let Ok(method) = Method::from_bytes(req.method.as_bytes()) else {
            return Prep::Unfit;
        };
        let route = snapshot.find_route(Some(req.host), req.path(), req.headers);
        if route.is_some_and(|r| !r.fast_h1) {
            return Prep::Unfit;
        }
        let started = Instant::now();
        let log = self.state.access_log().map(|_| {
            Box::new(Entry::arrived(
                self.info.peer.ip(),
                method.clone(),
                Version::HTTP_11,
                Some(req.host.to_string()),
                req.target.to_string(),
            ))
        });
        let choice = route
            .ok_or(ProxyError::NoRoute)
            .and_then(|route| decide::choose(route, req.headers, &self.info));
        self.out.clear();
        head::write_upstream_head(
            &mut self.out,
            &req,
            &self.client_ip,
            self.info.tls,
            self.info.client_cert.as_ref().map(|v| v.as_bytes()),
        );
        self.out.extend_from_slice(&self.buf[req.len..consumed]);
        Prep::Ready(Plan {
            consumed,
            route,
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
        let Plan {
            route,
            method,
            close,
            started,
            log,
            choice,
            ..
        } = plan;
        let close = close || closing;
        let mut ledger = Ledger::new(self.state, snapshot, started, log);
        ledger.served.route = route;
        let result = match choice {
            Ok(choice) => {
                ledger.served.backend = Some(choice.backend);
                let cookie = choice.sticky_cookie(self.info.tls);
                let reply = Reply {
                    head_request: method == Method::HEAD,
                    cookie: cookie.as_deref(),
                    close,
                };
                self.forward(&choice, &method, &reply, &mut ledger.served)
                    .await
            }
            Err(error) => Err(error),
        };
        let relayed = match result {
            Ok(answered) => {
                self.relay(stream, answered, |status| ledger.settle(status))
                    .await
            }
            Err(error) => {
                tracing::debug!(%error, "request failed");
                ledger.note_error(&error);
                ledger.settle(error.status());
                self.answer_error(stream, &error, close).await
            }
        };
        ledger.finish(relayed.bytes);
        relayed.keep_alive && !close
    }

    /// Sends `out` to an endpoint of the chosen backend through the attempt
    /// driver, until one answers with a response head.
    async fn forward<'s>(
        &mut self,
        choice: &Choice<'s>,
        method: &Method,
        reply: &Reply<'_>,
        served: &mut Served<'s>,
    ) -> Result<Answered<'s>, ProxyError> {
        // The whole request is in `out`: it is at hand to send again.
        let mut attempts = Attempts::new(choice.route, choice.backend, method, true);
        while let Some(endpoint) = attempts.next(served) {
            let result = self.attempt(endpoint, reply).await;
            if let Some(answered) = attempts.settle(endpoint, result)? {
                return Ok(answered);
            }
        }
        Err(attempts.exhausted())
    }

    /// One attempt: `out` to `endpoint` on a pooled socket.
    async fn attempt<'s>(
        &mut self,
        endpoint: &'s Arc<Endpoint>,
        reply: &Reply<'_>,
    ) -> Result<Answered<'s>, UpstreamError> {
        let mut conn = endpoint.raw_connection(self.timeouts.connect).await?;
        let head = self.send(&mut conn, reply).await?;
        Ok(Answered {
            conn,
            endpoint,
            head,
        })
    }

    /// Writes `out` and reads until `resp` starts with a final response head
    /// (1xx interim responses are skipped); then writes the client's head for
    /// it into `out`.
    async fn send(&mut self, conn: &mut RawConn, reply: &Reply<'_>) -> Result<Head, UpstreamError> {
        self.resp.clear();
        let lost = |error: std::io::Error| {
            if conn.reused {
                UpstreamError::StaleConnection(error.into())
            } else {
                UpstreamError::Io(error)
            }
        };
        match conn.stream.write(&self.out).await {
            // Not one byte taken: the upstream never saw this request.
            Err(error) if conn.reused => return Err(UpstreamError::Unprocessed(error.into())),
            Err(error) => return Err(UpstreamError::Io(error)),
            Ok(written) => {
                if let Err(error) = conn.stream.write_all(&self.out[written..]).await {
                    return Err(lost(error));
                }
            }
        }
        let wait = read_response(&mut conn.stream, &mut self.resp, &mut self.out, reply);
        let limit = self.timeouts.response_headers;
        match within(wait, self.timer.as_mut(), limit).await {
            None => Err(UpstreamError::ResponseTimeout),
            Some(Ok(head)) => Ok(head),
            Some(Err(ReadFailure::Lost(error))) => Err(lost(error)),
            Some(Err(ReadFailure::Upstream(error))) => Err(error),
        }
    }

    /// Passes the response in `resp` (its head already rewritten in `out`)
    /// and the rest of its body to the client; `counted` is called with the
    /// status first.
    async fn relay<S>(
        &mut self,
        stream: &mut S,
        answered: Answered<'_>,
        counted: impl FnOnce(StatusCode),
    ) -> Relayed
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Answered {
            mut conn,
            endpoint,
            head,
        } = answered;
        let Head {
            status,
            framing,
            mut reusable,
            len: head_len,
        } = head;
        counted(status);
        let cut = |bytes| Relayed {
            bytes,
            keep_alive: false,
        };
        // The start of the body came with the head: send both in one write.
        let mut body = BodyLeft::new(framing);
        let Ok(first) = body.take(&self.resp[head_len..]) else {
            // Broken framing: the head goes out, then the connection closes
            // (the client sees the body cut short, as with a failure later).
            let _ = within(
                stream.write_all(&self.out),
                self.timer.as_mut(),
                self.timeouts.client_idle,
            )
            .await;
            return cut(0);
        };
        if head_len + first < self.resp.len() {
            // More than the response: the upstream is not to be trusted.
            reusable = false;
        }
        self.out
            .extend_from_slice(&self.resp[head_len..head_len + first]);
        let mut bytes = first as u64;
        let idle = self.timeouts.client_idle;
        let write = stream.write_all(&self.out);
        if !matches!(within(write, self.timer.as_mut(), idle).await, Some(Ok(()))) {
            return cut(bytes);
        }
        while !body.done() {
            self.resp.clear();
            self.resp.reserve(BODY_ROOM);
            let read = conn.stream.read_buf(&mut self.resp);
            let got = match within(read, self.timer.as_mut(), idle).await {
                Some(Ok(0)) if framing == Framing::UntilClose => break,
                Some(Ok(n)) if n > 0 => n,
                // Cut short, failed or stalled: the client cannot be told
                // otherwise than by closing.
                _ => return cut(bytes),
            };
            let Ok(take) = body.take(&self.resp[..got]) else {
                return cut(bytes);
            };
            if take < got {
                reusable = false;
            }
            bytes += take as u64;
            let write = stream.write_all(&self.resp[..take]);
            if !matches!(within(write, self.timer.as_mut(), idle).await, Some(Ok(()))) {
                return cut(bytes);
            }
        }
        if reusable {
            endpoint.return_raw(conn.stream);
        }
        let keep_alive = framing != Framing::UntilClose;
        Relayed { bytes, keep_alive }
    }

    /// Answers a malformed head 400 with `connection: close`, as hyper does.
    async fn refuse_malformed<S>(&mut self, stream: &mut S)
    where
        S: AsyncWrite + Unpin,
    {
        self.out.clear();
        let fields = http::HeaderMap::new();
        head::write_own_response(&mut self.out, StatusCode::BAD_REQUEST, &fields, b"", true);
        let write = stream.write_all(&self.out);
        let _ = within(write, self.timer.as_mut(), self.timeouts.client_idle).await;
        let _ = stream.shutdown().await;
    }

    /// Answers an error sluicegate produced; false when the connection
    /// cannot go on.
    async fn answer_error<S>(&mut self, stream: &mut S, error: &ProxyError, close: bool) -> Relayed
    where
        S: AsyncWrite + Unpin,
    {
        let status = error.status();
        let text = error_text(error);
        let fields = error_headers(status);
        self.out.clear();
        head::write_own_response(&mut self.out, status, &fields, text.as_bytes(), close);
        let write = stream.write_all(&self.out);
        let written = matches!(
            within(write, self.timer.as_mut(), self.timeouts.client_idle).await,
            Some(Ok(()))
        );
        Relayed {
            bytes: text.len() as u64,
            keep_alive: written,
        }
    }
}

#[cfg(test)]
mod future_size {
    use super::*;

    fn size_of_future<'a, F: std::future::Future>(
        _: fn(&'a mut tokio::net::TcpStream, Client<'a>) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle keep-alive connection's task holds this future: the busy
    /// part (an exchange under way) is boxed, so it is `Conn` and the idle
    /// wait (about 1 KiB in a debug build; it was 2,072 bytes with the
    /// exchange inline).
    #[test]
    fn an_idle_connection_holds_a_small_future() {
        let size = size_of_future(serve::<tokio::net::TcpStream>);
        assert!(size <= 1_400, "fast_path::serve's future is {size} bytes");
    }
}
