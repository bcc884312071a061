//! Connections to one endpoint: a stack of idle HTTP/1.1 connections, or one
//! shared multiplexed HTTP/2 connection, over TCP or TLS (hyper's
//! `client::conn`, no legacy client).
//!
//! A request first gets a connection — reusing one or dialling a new one — and
//! only then is sent, so a connect failure leaves the request untouched for a
//! retry on another endpoint. An HTTP/1.1 connection goes back to the pool when
//! its response body has been read to the end.
//!
//! An HTTP/2 server ends a connection with GOAWAY (NGINX after
//! `keepalive_requests`): streams above its last stream id, and streams it
//! resets with REFUSED_STREAM, were never processed (RFC 9113 §6.8, §8.7).
//! Their error says so ([`UpstreamError::Unprocessed`]), and the connection
//! takes no new stream.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::Endpoint;
use super::body::UpstreamBody;
use super::tls::{Alpn, negotiated_h2};
use crate::config::UpstreamProtocol;
use crate::error::UpstreamError;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed when returned.
const MAX_IDLE_PER_ENDPOINT: usize = 128;

/// How long a returned connection may take to become ready again.
const READY_WAIT: Duration = Duration::from_millis(50);

/// How often a request that hyper hands back unsent (its HTTP/2 connection
/// closed before the stream was opened) goes on another connection.
const MAX_UNSENT_RESENDS: u32 = 2;

type H1Sender = http1::SendRequest<UpstreamBody>;
type H2Sender = http2::SendRequest<UpstreamBody>;

/// The connections of one endpoint that are not busy.
#[derive(Debug, Default)]
pub(super) struct Pool {
    /// Idle HTTP/1.1 connections and when each was returned, latest last.
    idle: Mutex<Vec<(H1Sender, Instant)>>,
    /// HTTP/2 multiplexes: every request shares this one.
    shared: Mutex<Option<SharedH2>>,
    /// Held while dialling an HTTP/2 connection, so a burst of requests
    /// waits for one connection instead of opening one each.
    dialing_h2: tokio::sync::Mutex<()>,
    /// An `auto` endpoint's server chose HTTP/1.1: no need to serialise dials.
    chose_http1: AtomicBool,
}

impl Pool {
    fn pop_idle(&self) -> Option<(H1Sender, Instant)> {
        self.idle.lock().ok()?.pop()
    }

    /// Keeps the idle HTTP/1.1 connections for which `keep(returned at)` holds.
    pub(super) fn retain(&self, keep: impl Fn(Instant) -> bool) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|(_, since)| keep(*since));
        }
    }

    fn idle_is_empty(&self) -> bool {
        self.idle.lock().map_or(true, |idle| idle.is_empty())
    }

    fn push_idle(&self, sender: H1Sender) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_PER_ENDPOINT
        {
            idle.push((sender, Instant::now()));
        }
    }

    /// The shared HTTP/2 connection, if it still takes new streams.
    fn shared_h2(&self) -> Option<SharedH2> {
        let mut shared = self.shared.lock().ok()?;
        match &*shared {
            Some(h2) if h2.takes_streams() => Some(h2.clone()),
            Some(_) => {
                *shared = None;
                None
            }
            None => None,
        }
    }

    fn set_h2(&self, h2: &SharedH2) {
        if let Ok(mut shared) = self.shared.lock() {
            *shared = Some(h2.clone());
        }
    }

    /// Drops the shared HTTP/2 connection whose flag is `retired`, unless
    /// another has replaced it already.
    fn forget_h2(&self, retired: &Arc<AtomicBool>) {
        if let Ok(mut shared) = self.shared.lock()
            && shared
                .as_ref()
                .is_some_and(|h2| Arc::ptr_eq(&h2.retired, retired))
        {
            *shared = None;
        }
    }

    pub(super) fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        if let Ok(mut shared) = self.shared.lock() {
            *shared = None;
        }
    }
}

/// An HTTP/2 connection, shared by every request to its endpoint.
#[derive(Debug, Clone)]
struct SharedH2 {
    sender: H2Sender,
    /// No new stream goes on it: its server sent GOAWAY (hyper's sender
    /// stays ready until hyper's dispatch task next runs), or that task
    /// has ended. Also the connection's identity in [`Pool::forget_h2`].
    retired: Arc<AtomicBool>,
}

impl SharedH2 {
    fn new(sender: H2Sender) -> SharedH2 {
        SharedH2 {
            sender,
            retired: Arc::new(AtomicBool::new(false)),
        }
    }

    fn takes_streams(&self) -> bool {
        self.sender.is_ready() && !self.retired.load(Ordering::Relaxed)
    }
}

/// One upstream connection, either version.
enum Sender {
    H1(H1Sender),
    H2(SharedH2),
}

/// What a request needs from the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Whatever the backend's protocol says.
    Any,
    /// HTTP/1.1, for an `Upgrade` (WebSocket) request.
    Http1,
}

impl Endpoint {
    /// A ready connection: a pooled one, or a new one within `connect_timeout`.
    /// Nothing is sent yet, so on failure the request can go elsewhere.
    pub async fn connection(
        self: &Arc<Self>,
        connect_timeout: Duration,
    ) -> Result<HyperConn, UpstreamError> {
        self.checkout(connect_timeout, Need::Any).await
    }

    /// An HTTP/1.1 connection for an upgrade (WebSocket) request; fails for
    /// a backend that speaks only HTTP/2.
    pub async fn upgrade_connection(
        self: &Arc<Self>,
        connect_timeout: Duration,
    ) -> Result<HyperConn, UpstreamError> {
        if self.transport.protocol == UpstreamProtocol::H2 {
            return Err(UpstreamError::UpgradeOverH2);
        }
        self.checkout(connect_timeout, Need::Http1).await
    }

    async fn checkout(
        self: &Arc<Self>,
        connect_timeout: Duration,
        need: Need,
    ) -> Result<HyperConn, UpstreamError> {
        let reused = |sender| HyperConn {
            endpoint: Arc::clone(self),
            sender,
            reused: true,
            need,
            connect_timeout,
        };
        if need == Need::Any
            && self.transport.protocol != UpstreamProtocol::Http1
            && let Some(sender) = self.pool.shared_h2()
        {
            return Ok(reused(Sender::H2(sender)));
        }
        let may_be_h2 = need == Need::Any
            && match self.transport.protocol {
                UpstreamProtocol::H2 => true,
                UpstreamProtocol::Auto => {
                    self.addr.tls && !self.pool.chose_http1.load(Ordering::Relaxed)
                }
                UpstreamProtocol::Http1 => false,
            };
        if may_be_h2 {
            let _dialing = self.pool.dialing_h2.lock().await;
            if let Some(sender) = self.pool.shared_h2() {
                return Ok(reused(Sender::H2(sender)));
            }
            if self.transport.protocol == UpstreamProtocol::H2 || self.pool.idle_is_empty() {
                let sender = Box::pin(self.connect(connect_timeout, need)).await?;
                if matches!(sender, Sender::H1(_)) {
                    self.pool.chose_http1.store(true, Ordering::Relaxed);
                }
                return Ok(HyperConn {
                    endpoint: Arc::clone(self),
                    sender,
                    reused: false,
                    need,
                    connect_timeout,
                });
            }
        }
        while let Some((mut sender, since)) = self.pool.pop_idle() {
            if self.idle_expired(since) {
                // The rest were returned earlier still.
                self.pool.retain(|_| false);
                break;
            }
            if sender.is_ready() {
                return Ok(reused(Sender::H1(sender)));
            }
            if sender.is_closed() {
                continue;
            }
            // Returned right after its body ended: the connection task needs one more turn.
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                return Ok(reused(Sender::H1(sender)));
            }
        }
        let sender = Box::pin(self.connect(connect_timeout, need)).await?;
        Ok(HyperConn {
            endpoint: Arc::clone(self),
            sender,
            reused: false,
            need,
            connect_timeout,
        })
    }

    /// Returns an HTTP/1.1 connection whose response was read to the end.
    fn put_idle(&self, sender: H1Sender) {
        if sender.is_closed() || self.is_draining() {
            return;
        }
        self.pool.push_idle(sender);
    }

    /// Dials a new connection (TCP, TLS, HTTP handshake) within `timeout`.
    async fn connect(
        self: &Arc<Self>,
        timeout: Duration,
        need: Need,
    ) -> Result<Sender, UpstreamError> {
        let sender = tokio::time::timeout(timeout, self.dial(need))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)??;
        if let Sender::H2(h2) = &sender {
            self.pool.set_h2(h2);
        }
        Ok(sender)
    }

    async fn dial(self: &Arc<Self>, need: Need) -> Result<Sender, UpstreamError> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(UpstreamError::Connect)?;
        // Small proxied requests must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let protocol = match need {
            Need::Http1 => UpstreamProtocol::Http1,
            Need::Any => self.transport.protocol,
        };
        let tls = match (&self.transport.tls, &self.server_name) {
            (Some(tls), Some(name)) if self.addr.tls => Some((tls, name)),
            _ => None,
        };
        let Some((tls, name)) = tls else {
            // In cleartext, `auto` has nothing to negotiate with: HTTP/1.1.
            let h2 = protocol == UpstreamProtocol::H2;
            return handshake(TokioIo::new(tcp), h2, self).await;
        };
        let alpn = match protocol {
            UpstreamProtocol::Http1 => Alpn::Http1,
            UpstreamProtocol::H2 => Alpn::H2,
            UpstreamProtocol::Auto => Alpn::Any,
        };
        let stream = tls
            .connect(tcp, name, alpn)
            .await
            .map_err(UpstreamError::Tls)?;
        // `h2` speaks HTTP/2 even to a server that ignores ALPN; `auto`
        // follows what the server chose.
        let h2 = match protocol {
            UpstreamProtocol::H2 => true,
            UpstreamProtocol::Auto => negotiated_h2(&stream),
            UpstreamProtocol::Http1 => false,
        };
        handshake(TokioIo::new(stream), h2, self).await
    }

    /// The scheme of requests on an HTTP/2 connection to this endpoint.
    fn scheme(&self) -> Scheme {
        if self.addr.tls {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }
}

/// The HTTP handshake on a connected stream; the connection task is spawned.
async fn handshake<IO>(io: IO, h2: bool, owner: &Arc<Endpoint>) -> Result<Sender, UpstreamError>
where
    IO: Read + Write + Unpin + Send + 'static,
{
    let endpoint = owner.authority.clone();
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        let h2 = SharedH2::new(sender);
        let retired = Arc::clone(&h2.retired);
        let owner = Arc::downgrade(owner);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%endpoint, error = %e, "upstream h2 connection ended with an error");
            }
            // hyper's dispatch task has ended. A request queued to it just
            // as it ended is handed back only once every sender is dropped
            // (tokio's channel keeps it until then): drop the pool's.
            retired.store(true, Ordering::Relaxed);
            if let Some(owner) = owner.upgrade() {
                owner.pool.forget_h2(&retired);
            }
        });
        Ok(Sender::H2(h2))
    } else {
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%endpoint, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Sender::H1(sender))
    }
}

/// A connection to one endpoint, checked out of its pool.
pub struct HyperConn {
    endpoint: Arc<Endpoint>,
    sender: Sender,
    reused: bool,
    need: Need,
    connect_timeout: Duration,
}

impl HyperConn {
    /// Whether this connection speaks HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }

    /// Sends `req` (origin-form, HTTP/1.1 shape) and waits up to
    /// `response_timeout` for the response headers.
    ///
    /// When hyper hands the request back unsent, it goes again: on HTTP/1.1
    /// once, on a fresh connection, if this one was reused (the keep-alive
    /// race); on HTTP/2 (a GOAWAY before the stream was opened) on the
    /// endpoint's next shared connection, dialled once for all requests.
    pub async fn send(
        self,
        req: Request<UpstreamBody>,
        response_timeout: Duration,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let (resp, release) = self.exchange(req, response_timeout).await?;
        Ok(resp.map(|body| PooledBody::new(body, release)))
    }

    /// Sends an upgrade request; the connection is never pooled again, since
    /// after a `101` it belongs to the tunnel.
    pub async fn send_upgrade(
        self,
        req: Request<UpstreamBody>,
        response_timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let (resp, _connection) = self.exchange(req, response_timeout).await?;
        Ok(resp)
    }

    /// The response head and, on HTTP/1.1, the connection to return to the
    /// pool once the body has been read.
    async fn exchange(
        self,
        mut req: Request<UpstreamBody>,
        response_timeout: Duration,
    ) -> Result<(Response<Incoming>, Option<Release>), UpstreamError> {
        let HyperConn {
            endpoint,
            mut sender,
            mut reused,
            need,
            connect_timeout,
        } = self;
        let mut resends = 0;
        loop {
            let (mut failure, retired) = match sender {
                Sender::H1(mut h1) => {
                    match tokio::time::timeout(response_timeout, h1.try_send_request(req)).await {
                        Err(_) => return Err(UpstreamError::ResponseTimeout),
                        Ok(Ok(resp)) => return Ok((resp, Some((h1, endpoint)))),
                        Ok(Err(failure)) => (failure, None),
                    }
                }
                Sender::H2(SharedH2 {
                    sender: mut h2,
                    retired,
                }) => {
                    let response = h2.try_send_request(h2_form(req, &endpoint));
                    // Not held while waiting: a request queued just as
                    // hyper's dispatch task ended is handed back only once
                    // every sender is dropped.
                    drop(h2);
                    match tokio::time::timeout(response_timeout, response).await {
                        Err(_) => return Err(UpstreamError::ResponseTimeout),
                        Ok(Ok(resp)) => return Ok((resp, None)),
                        Ok(Err(failure)) => (failure, Some(retired)),
                    }
                }
            };
            let may_resend = match retired {
                None => reused,
                Some(_) => resends < MAX_UNSENT_RESENDS,
            };
            match failure.take_message() {
                Some(unsent) if may_resend => {
                    req = unsent;
                    resends += 1;
                    (sender, reused) = if retired.is_some() {
                        // The endpoint's next shared connection, which one
                        // request dials for all.
                        let next = Box::pin(endpoint.checkout(connect_timeout, need)).await?;
                        (next.sender, next.reused)
                    } else {
                        // Other idle connections are as old as this one.
                        let fresh = Box::pin(endpoint.connect(connect_timeout, need)).await?;
                        (fresh, false)
                    };
                }
                // Handed back unsent by HTTP/2: never on the wire.
                Some(_) if retired.is_some() => {
                    return Err(UpstreamError::Unprocessed(failure.into_error().into()));
                }
                _ => return Err(failed(failure.into_error(), retired.as_deref(), reused)),
            }
        }
    }
}

/// An HTTP/1.1 connection whose response body is still to be read.
type Release = (H1Sender, Arc<Endpoint>);

/// What a failed exchange means for the request and the endpoint; `retired`
/// is the HTTP/2 connection's flag, `reused` whether the connection had
/// served requests before.
fn failed(error: hyper::Error, retired: Option<&AtomicBool>, reused: bool) -> UpstreamError {
    if let Some(retired) = retired
        && let Some(refusal) = h2_refusal(&error)
    {
        if refusal == H2Refusal::GoAway {
            retired.store(true, Ordering::Relaxed);
        }
        return UpstreamError::Unprocessed(error.into());
    }
    if error.is_user() {
        // Reading the client's body failed: not the upstream's fault.
        UpstreamError::ClientBody(error)
    } else if reused && (error.is_incomplete_message() || error.is_closed() || error.is_canceled())
    {
        // The upstream closed an idle connection as the request went out
        // (the keep-alive race).
        UpstreamError::StaleConnection(error.into())
    } else {
        UpstreamError::Request(error)
    }
}

/// How an HTTP/2 server said that it never processed a stream (RFC 9113 §8.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum H2Refusal {
    /// The stream is above the last stream id of the server's GOAWAY, or was
    /// opened after it, whatever the error code. h2 fails exactly these
    /// streams with the GOAWAY's error; those at or below the last stream id
    /// go on, and if the connection closes before they end they fail with an
    /// I/O error, which is not a refusal. One exception we cannot tell
    /// apart: hyper 1.12's dispatch task reports the GOAWAY for a stream it
    /// had just opened when the GOAWAY lands before its next readiness
    /// check, and drops that stream, which may be the last one the server
    /// took (docs/RELIABILITY.md, "HTTP/2 GOAWAY").
    GoAway,
    /// The server reset the stream with REFUSED_STREAM.
    RefusedStream,
}

/// The refusal behind a failed HTTP/2 exchange, if it was one: hyper wraps
/// the stream's `h2::Error` as its source.
fn h2_refusal(error: &hyper::Error) -> Option<H2Refusal> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return if !h2.is_remote() {
                None
            } else if h2.is_go_away() {
                Some(H2Refusal::GoAway)
            } else if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                Some(H2Refusal::RefusedStream)
            } else {
                None
            };
        }
        source = cause.source();
    }
    None
}

/// Rewrites an HTTP/1.1-shaped request for HTTP/2: absolute URI with the
/// client's host as `:authority`, no `Host` header.
fn h2_form(req: Request<UpstreamBody>, endpoint: &Endpoint) -> Request<UpstreamBody> {
    let (mut parts, body) = req.into_parts();
    if parts.uri.scheme().is_some() {
        // Already in HTTP/2 form (a retry after a lost connection).
        return Request::from_parts(parts, body);
    }
    let host = parts.headers.remove(header::HOST);
    let authority = host
        .as_ref()
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| Authority::try_from(endpoint.authority()).ok());
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(endpoint.scheme());
    uri.authority = authority;
    uri.path_and_query = parts.uri.path_and_query().cloned();
    if let Ok(absolute) = Uri::from_parts(uri) {
        parts.uri = absolute;
    } else if let Some(host) = host {
        parts.headers.insert(header::HOST, host);
    }
    parts.version = Version::HTTP_2;
    // The only TE value HTTP/2 allows (gRPC needs it).
    if parts
        .headers
        .get(header::TE)
        .is_some_and(|te| te != HeaderValue::from_static("trailers"))
    {
        parts.headers.remove(header::TE);
    }
    Request::from_parts(parts, body)
}

/// An upstream response body; on HTTP/1.1 it returns its connection to the
/// pool once read to the end, and dropped early it closes the connection.
#[derive(Debug)]
pub struct PooledBody {
    body: Incoming,
    release: Option<Release>,
}

impl PooledBody {
    fn new(body: Incoming, release: Option<Release>) -> Self {
        let mut pooled = PooledBody { body, release };
        if pooled.body.is_end_stream() {
            pooled.release();
        }
        pooled
    }

    /// A body whose connection is not pooled again.
    pub fn detached(body: Incoming) -> Self {
        PooledBody {
            body,
            release: None,
        }
    }

    fn release(&mut self) {
        if let Some((sender, endpoint)) = self.release.take() {
            endpoint.put_idle(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.release = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
