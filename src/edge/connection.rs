//! One client HTTP connection from accept to close, for the data plane and
//! the admin listener alike: HTTP/1.1 or h2 (prior knowledge or ALPN), the
//! header-read and idle timeouts, header limits, and a graceful finish on
//! shutdown that still serves the first request of a connection accepted a
//! moment before.
//!
//! [`Tracker`] lets a listener wait for its connections at shutdown.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::{FIRST_REQUEST_GRACE, Limits, Timeouts};

/// Counts a listener's open connections so shutdown can wait for them.
#[derive(Debug)]
pub struct Tracker {
    tx: Option<mpsc::Sender<()>>,
    rx: mpsc::Receiver<()>,
}

/// Held by one connection until it ends.
#[derive(Debug, Clone)]
pub struct Tracked {
    _tx: mpsc::Sender<()>,
}

impl Tracker {
    pub fn new() -> Tracker {
        let (tx, rx) = mpsc::channel(1);
        Tracker { tx: Some(tx), rx }
    }

    /// A token to keep for as long as a connection lives.
    pub fn track(&self) -> Tracked {
        Tracked {
            _tx: self.tx.clone().unwrap_or_else(|| mpsc::channel(1).0),
        }
    }

    /// Waits until every tracked connection has ended, up to `grace`; false
    /// when some were still open.
    pub async fn wait(mut self, grace: Duration) -> bool {
        // Every connection holds a sender; once all are gone, recv() is None.
        self.tx = None;
        tokio::time::timeout(grace, self.rx.recv()).await.is_ok()
    }
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker::new()
    }
}

/// Serves HTTP on `stream` with `service` until the client closes, the
/// connection is idle for `client_idle`, or `stop` changes; then in-flight
/// requests finish before it closes. `read_ahead` holds bytes already read
/// from `stream` (by the HTTP/1.1 fast path): they are served first.
pub async fn serve_hyper<I, S, B>(
    stream: I,
    read_ahead: bytes::Bytes,
    service: S,
    timeouts: Timeouts,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Box<dyn StdError + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        read_ahead,
        activity: Arc::clone(&activity),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.client_headers)
        .max_headers(limits.max_request_headers)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut finishing = false;
    // Set on shutdown for a connection that has not sent a byte yet: it was
    // accepted from the queue just now and its request is on the way.
    let mut first_request_deadline: Option<Instant> = None;
    loop {
        let idle_deadline = activity.last() + timeouts.client_idle;
        let wake =
            first_request_deadline.map_or(idle_deadline, |_| Instant::now() + FIRST_BYTE_POLL);
        tokio::select! {
            result = conn.as_mut() => return result,
            _ = stop.changed(), if !finishing && first_request_deadline.is_none() => {
                if activity.has_read() {
                    finishing = true;
                    conn.as_mut().graceful_shutdown();
                } else {
                    first_request_deadline = Some(Instant::now() + FIRST_REQUEST_GRACE);
                }
            }
            _ = tokio::time::sleep_until(wake), if !finishing => {
                let first_request_due = first_request_deadline
                    .is_some_and(|deadline| activity.has_read() || Instant::now() >= deadline);
                if first_request_due || activity.last() + timeouts.client_idle <= Instant::now() {
                    finishing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// On shutdown, how often a just-accepted connection is looked at during its
/// [`FIRST_REQUEST_GRACE`].
const FIRST_BYTE_POLL: Duration = Duration::from_millis(5);

/// When a connection last moved a byte, for the idle timeout.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    read_any: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            read_any: AtomicBool::new(false),
        }
    }

    fn has_read(&self) -> bool {
        self.read_any.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records activity on every read and write, and first
/// returns the bytes read ahead of it.
struct TrackedIo<T> {
    inner: T,
    /// Read before hyper took over; returned by the first reads.
    read_ahead: bytes::Bytes,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = if this.read_ahead.is_empty() {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        } else {
            let n = this.read_ahead.len().min(buf.remaining());
            buf.put_slice(&this.read_ahead.split_to(n));
            Poll::Ready(Ok(()))
        };
        if buf.filled().len() > before {
            this.activity.touch();
            if !this.activity.read_any.load(Ordering::Relaxed) {
                this.activity.read_any.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            this.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            this.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
