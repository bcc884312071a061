//! Upstream endpoints and their keep-alive connection pools.
//!
//! Each endpoint owns a small stack of idle HTTP/1.1 connections (hyper's
//! `client::conn`). A request first gets a connection — reusing an idle one or
//! dialling a new one — and only then is sent, so a connect failure leaves the
//! request untouched for a retry on another endpoint. A connection goes back to
//! the pool when its response body has been read to the end.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::UpstreamBody;
use crate::config::EndpointAddr;
use crate::error::UpstreamError;

/// Idle connections kept per endpoint; more are closed when returned.
const MAX_IDLE_PER_ENDPOINT: usize = 128;

/// How long a returned connection may take to become ready again.
const READY_WAIT: Duration = Duration::from_millis(50);

/// One upstream `host:port` with its connection pool.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: EndpointAddr,
    authority: String,
    idle: Mutex<Vec<SendRequest<UpstreamBody>>>,
}

/// A connection taken from the pool, and whether it was reused.
struct Checkout {
    sender: SendRequest<UpstreamBody>,
    reused: bool,
}

impl Endpoint {
    /// A new endpoint with an empty pool.
    pub fn new(addr: EndpointAddr) -> Endpoint {
        Endpoint {
            authority: addr.authority(),
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Gets a ready connection: an idle one, or a new one within `connect_timeout`.
    async fn checkout(&self, connect_timeout: Duration) -> Result<Checkout, UpstreamError> {
        while let Some(mut sender) = self.pop_idle() {
            if sender.is_ready() {
                return Ok(Checkout {
                    sender,
                    reused: true,
                });
            }
            if sender.is_closed() {
                continue;
            }
            // Returned right after its body ended: the connection task needs one more turn.
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                return Ok(Checkout {
                    sender,
                    reused: true,
                });
            }
        }
        let sender = self.connect(connect_timeout).await?;
        Ok(Checkout {
            sender,
            reused: false,
        })
    }

    fn pop_idle(&self) -> Option<SendRequest<UpstreamBody>> {
        self.idle.lock().ok()?.pop()
    }

    fn put_idle(&self, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_PER_ENDPOINT
        {
            idle.push(sender);
        }
    }

    /// Closes every idle connection (drain, removal from config).
    pub fn close_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    async fn connect(
        &self,
        connect_timeout: Duration,
    ) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
        let stream = match tokio::time::timeout(
            connect_timeout,
            TcpStream::connect(&self.authority),
        )
        .await
        {
            Err(_) => return Err(UpstreamError::ConnectTimeout),
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Ok(Ok(stream)) => stream,
        };
        // Small proxied requests must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Handshake)?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(endpoint = %authority, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A ready connection: an idle one, or a new one within `connect_timeout`.
    /// Nothing is sent yet, so on failure the request can go elsewhere.
    pub async fn connection(
        self: &Arc<Self>,
        connect_timeout: Duration,
    ) -> Result<Connection, UpstreamError> {
        let checkout = self.checkout(connect_timeout).await?;
        Ok(Connection {
            endpoint: Arc::clone(self),
            sender: checkout.sender,
            reused: checkout.reused,
            connect_timeout,
        })
    }
}

/// A connection to one endpoint, checked out of its pool.
pub struct Connection {
    endpoint: Arc<Endpoint>,
    sender: SendRequest<UpstreamBody>,
    reused: bool,
    connect_timeout: Duration,
}

impl Connection {
    /// Sends `req` and waits up to `response_timeout` for the response headers.
    ///
    /// A reused connection that the upstream closed just as the request was
    /// sent (the keep-alive race) is retried once on a fresh connection when
    /// hyper hands the unsent request back.
    pub async fn send(
        mut self,
        mut req: Request<UpstreamBody>,
        response_timeout: Duration,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        loop {
            let sent = self.sender.try_send_request(req);
            let result = match tokio::time::timeout(response_timeout, sent).await {
                Err(_) => return Err(UpstreamError::ResponseTimeout),
                Ok(result) => result,
            };
            match result {
                Ok(resp) => {
                    let Connection {
                        endpoint, sender, ..
                    } = self;
                    return Ok(resp.map(|body| PooledBody::new(body, sender, endpoint)));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if self.reused => {
                        req = unsent;
                        self.sender = self.endpoint.connect(self.connect_timeout).await?;
                        self.reused = false;
                    }
                    _ => return Err(UpstreamError::Request(e.into_error())),
                },
            }
        }
    }
}

/// An upstream response body that returns its connection to the pool once read
/// to the end. Dropped early, it closes the connection instead.
#[derive(Debug)]
pub struct PooledBody {
    body: Incoming,
    release: Option<(SendRequest<UpstreamBody>, Arc<Endpoint>)>,
}

impl PooledBody {
    fn new(body: Incoming, sender: SendRequest<UpstreamBody>, endpoint: Arc<Endpoint>) -> Self {
        let mut pooled = PooledBody {
            body,
            release: Some((sender, endpoint)),
        };
        if pooled.body.is_end_stream() {
            pooled.release();
        }
        pooled
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
