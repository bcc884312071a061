//! Mirroring (shadow traffic): a copy of a share of a route's requests goes to
//! the mirror backend in the background. The client's response never waits
//! for it; copies have their own concurrency limit, so a slow mirror cannot
//! hold up live traffic, and request bodies are copied only up to `max_body`.
//!
//! Each copy's outcome is `match` (same status as the primary — and, with
//! `compare = true`, the same body hash), `mismatch`, `error` (the mirror
//! failed) or `skipped` (body too large or of unknown length, limit reached,
//! or the primary response never completed). The last mismatches are kept
//! for `GET /api/v1/routes/{route}/mirror`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::config::Timeouts;
use crate::control::Route;
use crate::error::ProxyError;
use crate::exchange::body::PrimaryResult;
use crate::exchange::body::ProxyBody;
use crate::telemetry::mirrors::{MirrorState, Mismatch};
use crate::telemetry::{BackendMetrics, MirrorOutcome};
use crate::upstream::Endpoint;
use crate::upstream::UpstreamBody;

/// Marks a mirrored copy, so the mirror backend can tell it from live traffic.
pub const X_SLUICEGATE_MIRROR: HeaderName = HeaderName::from_static("x-sluicegate-mirror");

/// The primary's side of a copy: tells the mirror task how the primary
/// response went.
#[derive(Debug)]
pub struct Report {
    sender: oneshot::Sender<PrimaryResult>,
    compare: bool,
}

impl Report {
    /// The primary answered `status`: report it now, or with `compare` once
    /// its body has been sent and hashed.
    pub fn primary_done(self, resp: &mut Response<ProxyBody>, status: StatusCode) {
        if self.compare {
            resp.body_mut().report_to_mirror(status, self.sender);
        } else {
            let _ = self.sender.send(PrimaryResult {
                status,
                body_hash: None,
            });
        }
    }
}

/// Starts a copy of this request if it is in the route's mirrored share.
/// A body to copy is read first (up to `max_body`; it has a known length)
/// and handed back as bytes for the primary.
pub async fn start(
    route: &Route,
    parts: &Parts,
    body: UpstreamBody,
    timeouts: Timeouts,
) -> Result<(UpstreamBody, Option<Report>), ProxyError> {
    let (Some(config), Some(state)) = (&route.config.mirror, &route.mirror) else {
        return Ok((body, None));
    };
    if !state.sample(config.percent) {
        return Ok((body, None));
    }
    let Some(target) = route.backend(&config.backend) else {
        return Ok((body, None));
    };
    let fits = body.is_end_stream()
        || body
            .size_hint()
            .exact()
            .is_some_and(|len| len <= config.max_body);
    if !fits {
        state.record(MirrorOutcome::Skipped, &target.metrics);
        return Ok((body, None));
    }
    let Some(permit) = state.try_start() else {
        state.record(MirrorOutcome::Skipped, &target.metrics);
        return Ok((body, None));
    };
    let Some(endpoint) = target.pick_endpoint() else {
        state.record(MirrorOutcome::Error, &target.metrics);
        return Ok((body, None));
    };
    let bytes = if body.is_end_stream() {
        None
    } else {
        let limit = usize::try_from(config.max_body).unwrap_or(usize::MAX);
        let collected = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|_| ProxyError::RequestBody)?;
        Some(collected.to_bytes())
    };
    let (sender, receiver) = oneshot::channel();
    spawn(
        MirrorCopy {
            parts: parts.clone(),
            body: bytes.clone(),
            endpoint: Arc::clone(endpoint),
            metrics: Arc::clone(&target.metrics),
            state: Arc::clone(state),
            permit,
            connect_timeout: timeouts.connect,
            timeout: timeouts.response_headers,
            compare: config.compare,
        },
        receiver,
    );
    let report = Report {
        sender,
        compare: config.compare,
    };
    Ok((UpstreamBody::Bytes(bytes), Some(report)))
}

/// One copy to send.
pub struct MirrorCopy {
    pub parts: Parts,
    pub body: Option<Bytes>,
    pub endpoint: Arc<Endpoint>,
    pub metrics: Arc<BackendMetrics>,
    pub state: Arc<MirrorState>,
    pub permit: OwnedSemaphorePermit,
    pub connect_timeout: Duration,
    /// Bounds the whole exchange with the mirror.
    pub timeout: Duration,
    pub compare: bool,
}

/// Sends `copy` in the background; `primary` delivers the primary's result.
pub fn spawn(copy: MirrorCopy, primary: oneshot::Receiver<PrimaryResult>) {
    tokio::spawn(async move {
        let MirrorCopy {
            mut parts,
            body,
            endpoint,
            metrics,
            state,
            permit,
            connect_timeout,
            timeout,
            compare,
        } = copy;
        parts
            .headers
            .insert(X_SLUICEGATE_MIRROR, HeaderValue::from_static("1"));
        let (method, path) = (parts.method.to_string(), parts.uri.to_string());
        let req = Request::from_parts(parts, UpstreamBody::Bytes(body));
        let exchange = async {
            let conn = endpoint.connection(connect_timeout).await.ok()?;
            let resp = conn.send(req, timeout).await.ok()?;
            let status = resp.status();
            let mut body = resp.into_body();
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            while let Some(frame) = body.frame().await {
                if let Some(data) = frame.ok()?.data_ref() {
                    hasher.update(data);
                }
            }
            Some((status, hasher.digest()))
        };
        let mirrored = tokio::time::timeout(timeout, exchange).await.ok().flatten();
        drop(permit);
        let Some((mirror_status, mirror_hash)) = mirrored else {
            state.record(MirrorOutcome::Error, &metrics);
            return;
        };
        let Ok(primary) = primary.await else {
            // The primary response never completed: nothing to compare with.
            state.record(MirrorOutcome::Skipped, &metrics);
            return;
        };
        let body_differs = compare && primary.body_hash != Some(mirror_hash);
        if primary.status == mirror_status && !body_differs {
            state.record(MirrorOutcome::Match, &metrics);
        } else {
            state.record(MirrorOutcome::Mismatch, &metrics);
            state.remember(Mismatch {
                time: SystemTime::now(),
                method,
                path,
                primary_status: primary.status.as_u16(),
                mirror_status: mirror_status.as_u16(),
                body_differs,
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Weight;

    #[test]
    fn sampling_is_exact_and_spread() {
        let state = MirrorState::new(1);
        let picked = (0..1000).filter(|_| state.sample(Weight(500))).count();
        assert_eq!(picked, 50);
        let state = MirrorState::new(1);
        let first: Vec<bool> = (0..40).map(|_| state.sample(Weight(500))).collect();
        assert_eq!(first.iter().filter(|p| **p).count(), 2);
        assert!(!state.sample(Weight(0)));
        let all = MirrorState::new(1);
        assert!((0..100).all(|_| all.sample(Weight(10_000))));
    }

    #[test]
    fn the_limit_bounds_copies_in_flight() {
        let state = MirrorState::new(2);
        let a = state.try_start();
        let b = state.try_start();
        assert!(a.is_some() && b.is_some());
        assert!(state.try_start().is_none());
        drop(a);
        assert!(state.try_start().is_some());
    }
}
