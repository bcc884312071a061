//! Upstream endpoints and their keep-alive connection pools.
//!
//! Each endpoint owns a small stack of idle HTTP/1.1 connections (hyper's
//! `client::conn`). A request first gets a connection — reusing an idle one or
//! dialling a new one — and only then is sent, so a connect failure leaves the
//! request untouched for a retry on another endpoint. A connection goes back to
//! the pool when its response body has been read to the end.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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
use tokio::sync::Notify;

use crate::body::UpstreamBody;
use crate::config::{EndpointAddr, OutlierConfig};
use crate::error::UpstreamError;

/// Idle connections kept per endpoint; more are closed when returned.
const MAX_IDLE_PER_ENDPOINT: usize = 128;

/// How long a returned connection may take to become ready again.
const READY_WAIT: Duration = Duration::from_millis(50);

/// One upstream `host:port` with its connection pool and health.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: EndpointAddr,
    authority: String,
    idle: Mutex<Vec<SendRequest<UpstreamBody>>>,
    health: Health,
    /// Woken whenever this endpoint's availability flips.
    changes: Arc<Notify>,
}

/// Health as seen by active checks, passive ejection and drain.
#[derive(Debug)]
struct Health {
    /// The active check's verdict; endpoints start healthy.
    check_up: AtomicBool,
    check_streak: AtomicU32,
    ejected: AtomicBool,
    /// Consecutive failures of real requests.
    failures: AtomicU32,
    /// Ejections in a row, for the growing back-off.
    ejections: AtomicU32,
    draining: AtomicBool,
}

/// A connection taken from the pool, and whether it was reused.
struct Checkout {
    sender: SendRequest<UpstreamBody>,
    reused: bool,
}

impl Endpoint {
    /// A new endpoint with an empty pool; `changes` is woken when its
    /// availability flips.
    pub fn new(addr: EndpointAddr, changes: Arc<Notify>) -> Endpoint {
        Endpoint {
            authority: addr.authority(),
            addr,
            idle: Mutex::new(Vec::new()),
            health: Health {
                check_up: AtomicBool::new(true),
                check_streak: AtomicU32::new(0),
                ejected: AtomicBool::new(false),
                failures: AtomicU32::new(0),
                ejections: AtomicU32::new(0),
                draining: AtomicBool::new(false),
            },
            changes,
        }
    }

    /// Healthy (active check and passive ejection) and not draining: may
    /// take new requests.
    #[inline]
    pub fn available(&self) -> bool {
        self.is_healthy() && !self.is_draining()
    }

    /// Passing its active check and not ejected.
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.health.check_up.load(Ordering::Relaxed) && !self.health.ejected.load(Ordering::Relaxed)
    }

    /// Drained: finishing in-flight requests, taking no new ones.
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.health.draining.load(Ordering::Relaxed)
    }

    /// Starts or ends a drain. Draining closes the idle connections at once.
    pub fn set_draining(&self, draining: bool) {
        if self.health.draining.swap(draining, Ordering::Relaxed) != draining {
            if draining {
                self.close_idle();
            }
            tracing::info!(endpoint = %self.addr, draining, "endpoint drain changed");
            self.changes.notify_one();
        }
    }

    /// Records an active check result; the verdict flips after `threshold`
    /// results in a row that disagree with it.
    pub fn record_check(&self, passed: bool, healthy_threshold: u32, unhealthy_threshold: u32) {
        let up = self.health.check_up.load(Ordering::Relaxed);
        if passed == up {
            self.health.check_streak.store(0, Ordering::Relaxed);
            return;
        }
        let streak = self.health.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = if passed {
            healthy_threshold
        } else {
            unhealthy_threshold
        };
        if streak >= threshold {
            self.health.check_streak.store(0, Ordering::Relaxed);
            self.health.check_up.store(passed, Ordering::Relaxed);
            if passed {
                tracing::info!(endpoint = %self.addr, "health check passing: endpoint healthy");
            } else {
                tracing::warn!(endpoint = %self.addr, "health check failing: endpoint unhealthy");
            }
            self.changes.notify_one();
        }
    }

    /// A real request succeeded.
    #[inline]
    pub fn record_success(&self) {
        if self.health.failures.load(Ordering::Relaxed) != 0 {
            self.health.failures.store(0, Ordering::Relaxed);
        }
        if self.health.ejections.load(Ordering::Relaxed) != 0
            && !self.health.ejected.load(Ordering::Relaxed)
        {
            self.health.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A real request failed (connect error, reset, 5xx): after
    /// `consecutive_failures` in a row the endpoint is ejected for a while.
    pub fn record_failure(self: &Arc<Self>, policy: &OutlierConfig) {
        let failures = self.health.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if policy.consecutive_failures == 0 || failures < policy.consecutive_failures {
            return;
        }
        if self.health.ejected.swap(true, Ordering::Relaxed) {
            return;
        }
        self.health.failures.store(0, Ordering::Relaxed);
        let repeat = self
            .health
            .ejections
            .fetch_add(1, Ordering::Relaxed)
            .min(16);
        let period = policy
            .base_ejection
            .saturating_mul(1 << repeat)
            .min(policy.max_ejection);
        tracing::warn!(endpoint = %self.addr, ?period, failures, "ejecting endpoint after consecutive failures");
        self.close_idle();
        self.changes.notify_one();
        let endpoint = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(period).await;
            endpoint.health.ejected.store(false, Ordering::Relaxed);
            tracing::info!(endpoint = %endpoint.addr, "ejection over: trying the endpoint again");
            endpoint.changes.notify_one();
        });
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
        if sender.is_closed() || self.is_draining() {
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
