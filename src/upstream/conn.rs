//! Connections to one endpoint: a stack of idle HTTP/1.1 connections, or one
//! shared multiplexed HTTP/2 connection, over TCP or TLS (hyper's
//! `client::conn`, no legacy client).
//!
//! A request first gets a connection — reusing one or dialling a new one — and
//! only then is sent, so a connect failure leaves the request untouched for a
//! retry on another endpoint. An HTTP/1.1 connection goes back to the pool when
//! its response body has been read to the end.

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
use super::tls::{Alpn, negotiated_h2};
use crate::body::UpstreamBody;
use crate::config::UpstreamProtocol;
use crate::error::UpstreamError;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed when returned.
const MAX_IDLE_PER_ENDPOINT: usize = 128;

/// How long a returned connection may take to become ready again.
const READY_WAIT: Duration = Duration::from_millis(50);

type H1Sender = http1::SendRequest<UpstreamBody>;
type H2Sender = http2::SendRequest<UpstreamBody>;

/// The connections of one endpoint that are not busy.
#[derive(Debug, Default)]
pub(super) struct Pool {
    /// Idle HTTP/1.1 connections and when each was returned, latest last.
    idle: Mutex<Vec<(H1Sender, Instant)>>,
    /// HTTP/2 multiplexes: every request shares this one.
    shared: Mutex<Option<H2Sender>>,
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

    /// The shared HTTP/2 connection, if it is still open.
    fn shared_h2(&self) -> Option<H2Sender> {
        let mut shared = self.shared.lock().ok()?;
        match &*shared {
            Some(sender) if sender.is_ready() => Some(sender.clone()),
            Some(_) => {
                *shared = None;
                None
            }
            None => None,
        }
    }

    fn set_h2(&self, sender: &H2Sender) {
        if let Ok(mut shared) = self.shared.lock() {
            *shared = Some(sender.clone());
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

/// One upstream connection, either version.
enum Sender {
    H1(H1Sender),
    H2(H2Sender),
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
    ) -> Result<Connection, UpstreamError> {
        self.checkout(connect_timeout, Need::Any).await
    }

    /// An HTTP/1.1 connection for an upgrade (WebSocket) request; fails for
    /// a backend that speaks only HTTP/2.
    pub async fn upgrade_connection(
        self: &Arc<Self>,
        connect_timeout: Duration,
    ) -> Result<Connection, UpstreamError> {
        if self.transport.protocol == UpstreamProtocol::H2 {
            return Err(UpstreamError::UpgradeOverH2);
        }
        self.checkout(connect_timeout, Need::Http1).await
    }

    async fn checkout(
        self: &Arc<Self>,
        connect_timeout: Duration,
        need: Need,
    ) -> Result<Connection, UpstreamError> {
        let reused = |sender| Connection {
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
                return Ok(Connection {
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
        Ok(Connection {
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
    async fn connect(&self, timeout: Duration, need: Need) -> Result<Sender, UpstreamError> {
        let sender = tokio::time::timeout(timeout, self.dial(need))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)??;
        if let Sender::H2(h2) = &sender {
            self.pool.set_h2(h2);
        }
        Ok(sender)
    }

    async fn dial(&self, need: Need) -> Result<Sender, UpstreamError> {
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
            return handshake(TokioIo::new(tcp), h2, self.authority.clone()).await;
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
        handshake(TokioIo::new(stream), h2, self.authority.clone()).await
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
async fn handshake<IO>(io: IO, h2: bool, endpoint: String) -> Result<Sender, UpstreamError>
where
    IO: Read + Write + Unpin + Send + 'static,
{
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%endpoint, error = %e, "upstream h2 connection ended with an error");
            }
        });
        Ok(Sender::H2(sender))
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
pub struct Connection {
    endpoint: Arc<Endpoint>,
    sender: Sender,
    reused: bool,
    need: Need,
    connect_timeout: Duration,
}

impl Connection {
    /// Whether this connection speaks HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }

    /// Sends `req` (origin-form, HTTP/1.1 shape) and waits up to
    /// `response_timeout` for the response headers.
    ///
    /// A reused connection that the upstream closed just as the request was
    /// sent (the keep-alive race, or an h2 GOAWAY) is retried once on a fresh
    /// connection when hyper hands the unsent request back.
    pub async fn send(
        self,
        req: Request<UpstreamBody>,
        response_timeout: Duration,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let (resp, sender, endpoint) = self.exchange(req, response_timeout).await?;
        let release = match sender {
            Sender::H1(sender) => Some((sender, endpoint)),
            Sender::H2(_) => None,
        };
        Ok(resp.map(|body| PooledBody::new(body, release)))
    }

    /// Sends an upgrade request; the connection is never pooled again, since
    /// after a `101` it belongs to the tunnel.
    pub async fn send_upgrade(
        self,
        req: Request<UpstreamBody>,
        response_timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let (resp, _sender, _endpoint) = self.exchange(req, response_timeout).await?;
        Ok(resp)
    }

    async fn exchange(
        mut self,
        mut req: Request<UpstreamBody>,
        response_timeout: Duration,
    ) -> Result<(Response<Incoming>, Sender, Arc<Endpoint>), UpstreamError> {
        loop {
            let sent = match &mut self.sender {
                Sender::H1(sender) => {
                    tokio::time::timeout(response_timeout, sender.try_send_request(req)).await
                }
                Sender::H2(sender) => {
                    let h2_req = h2_form(req, &self.endpoint);
                    tokio::time::timeout(response_timeout, sender.try_send_request(h2_req)).await
                }
            };
            match sent {
                Err(_) => return Err(UpstreamError::ResponseTimeout),
                Ok(Ok(resp)) => return Ok((resp, self.sender, self.endpoint)),
                Ok(Err(mut e)) => match e.take_message() {
                    Some(unsent) if self.reused => {
                        req = unsent;
                        self.sender =
                            Box::pin(self.endpoint.connect(self.connect_timeout, self.need))
                                .await?;
                        self.reused = false;
                    }
                    _ => {
                        let error = e.into_error();
                        return Err(if error.is_user() {
                            // Reading the client's body failed: not the upstream's fault.
                            UpstreamError::ClientBody(error)
                        } else if self.reused
                            && (error.is_incomplete_message()
                                || error.is_closed()
                                || error.is_canceled())
                        {
                            // The upstream closed an idle connection as the
                            // request went out (the keep-alive race).
                            UpstreamError::StaleConnection(error.into())
                        } else {
                            UpstreamError::Request(error)
                        });
                    }
                },
            }
        }
    }
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
    release: Option<(H1Sender, Arc<Endpoint>)>,
}

impl PooledBody {
    fn new(body: Incoming, release: Option<(H1Sender, Arc<Endpoint>)>) -> Self {
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
