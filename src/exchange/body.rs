//! Body types of the request path, as enums rather than boxes so that
//! forwarding allocates nothing per request for the body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use http::StatusCode;
use tokio::sync::oneshot;
use xxhash_rust::xxh3::Xxh3;

use crate::telemetry::access_log::{AccessLog, Entry};
use crate::upstream::PooledBody;

/// What the primary response turned out to be.
#[derive(Debug, Clone, Copy)]
pub struct PrimaryResult {
    pub status: StatusCode,
    /// xxh3 of the body, with `compare = true`.
    pub body_hash: Option<u64>,
}

/// A response body sent to the client: the upstream's stream, or a short
/// message sluicegate made itself; with the access log on, it also counts
/// the bytes sent and writes the request's line when it ends.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
    log: Option<Box<PendingLine>>,
    /// Hashes the body for a mirror comparison.
    tap: Option<Box<MirrorTap>>,
}

/// Reports the primary response to a mirror once it ends.
struct MirrorTap {
    status: StatusCode,
    hasher: Xxh3,
    report: oneshot::Sender<PrimaryResult>,
}

impl std::fmt::Debug for MirrorTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorTap")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Kind {
    Upstream(PooledBody),
    Bytes(Option<Bytes>),
}

/// An access log line waiting for the end of its response.
#[derive(Debug)]
struct PendingLine {
    entry: Entry,
    started: Instant,
    log: Arc<AccessLog>,
}

impl ProxyBody {
    /// The upstream's response body.
    pub fn upstream(body: PooledBody) -> Self {
        ProxyBody {
            kind: Kind::Upstream(body),
            log: None,
            tap: None,
        }
    }

    /// A body of `text`.
    pub fn text(text: impl Into<Bytes>) -> Self {
        ProxyBody {
            kind: Kind::Bytes(Some(text.into())),
            log: None,
            tap: None,
        }
    }

    /// No body.
    pub fn empty() -> Self {
        ProxyBody {
            kind: Kind::Bytes(None),
            log: None,
            tap: None,
        }
    }

    /// Writes `entry` to `log` when this body ends or is dropped, with the
    /// bytes sent and the time since `started`.
    pub fn log_when_done(&mut self, log: Arc<AccessLog>, entry: Entry, started: Instant) {
        self.log = Some(Box::new(PendingLine {
            entry,
            started,
            log,
        }));
    }
}

impl ProxyBody {
    /// Hashes the body as it is sent and reports it with `status` to a
    /// mirror comparison when it ends (not when it is cut short).
    pub fn report_to_mirror(&mut self, status: StatusCode, report: oneshot::Sender<PrimaryResult>) {
        let tap = MirrorTap {
            status,
            hasher: Xxh3::new(),
            report,
        };
        if self.is_end_stream() {
            let _ = tap.report.send(PrimaryResult {
                status,
                body_hash: Some(tap.hasher.digest()),
            });
        } else {
            self.tap = Some(Box::new(tap));
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(pending) = self.log.take() {
            let PendingLine {
                mut entry,
                started,
                log,
            } = *pending;
            entry.duration = started.elapsed();
            log.log(entry);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = match &mut this.kind {
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::Bytes(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        if let (Some(pending), Poll::Ready(Some(Ok(frame)))) = (&mut this.log, &frame)
            && let Some(data) = frame.data_ref()
        {
            pending.entry.bytes += data.len() as u64;
        }
        if this.tap.is_some() {
            if let (Some(tap), Poll::Ready(Some(Ok(frame)))) = (&mut this.tap, &frame)
                && let Some(data) = frame.data_ref()
            {
                tap.hasher.update(data);
            }
            let ended = matches!(frame, Poll::Ready(None)) || this.is_end_stream();
            if ended && let Some(tap) = this.tap.take() {
                let _ = tap.report.send(PrimaryResult {
                    status: tap.status,
                    body_hash: Some(tap.hasher.digest()),
                });
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Bytes(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(body) => body.size_hint(),
            Kind::Bytes(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
