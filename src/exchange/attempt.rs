//! Attempts: the one attempt policy of every request path. Each attempt
//! takes an endpoint (the chosen backend's, then with failover another
//! backend's), and its outcome is counted for that backend; the error of a failed one says whether another may follow
//! ([`UpstreamError::nothing_sent`], the keep-alive race, an unprocessed
//! request) and whether it counts against the endpoint. A path's loop is
//! only this, whatever it sends:
//!
//! ```text
//! while let Some(endpoint) = attempts.next(served) {
//!     let result = send_to(endpoint).await;
//!     if let Some(answer) = attempts.settle(endpoint, result)? {
//!         return Ok(answer);
//!     }
//! }
//! Err(attempts.exhausted())
//! ```

use std::sync::Arc;

use http::{Method, Response, StatusCode};

use crate::control::{Backend, Route};
use crate::error::{ProxyError, UpstreamError};
use crate::exchange::outcome::Served;
use crate::upstream::Endpoint;

/// What an attempt's answer reports to passive health.
pub trait Answer {
    fn status(&self) -> StatusCode;
}

impl<B> Answer for Response<B> {
    fn status(&self) -> StatusCode {
        Response::status(self)
    }
}

/// The endpoint for the next attempt: the chosen backend's next available one
/// not tried yet; failing that (with failover on) one of another backend that
/// has traffic, largest share first. Only the `first` attempt takes a
/// round-robin turn, so retries do not skew the rotation.
fn next_endpoint<'a>(
    route: &'a Route,
    preferred: &'a Backend,
    first: bool,
    tried: impl Fn(&Arc<Endpoint>) -> bool,
) -> Option<(&'a Backend, &'a Arc<Endpoint>)> {
    let fresh = |e: &&Arc<Endpoint>| e.available() && !tried(e);
    if first && let Some(endpoint) = preferred.pick_endpoint().filter(fresh) {
        return Some((preferred, endpoint));
    }
    if let Some(endpoint) = preferred.endpoints.iter().find(fresh) {
        return Some((preferred, endpoint));
    }
    if !route.config.failover {
        return None;
    }
    let mut others: Vec<&Backend> = route
        .backends
        .iter()
        .filter(|b| !std::ptr::eq(*b, preferred) && b.effective.0 > 0)
        .collect();
    others.sort_by_key(|b| std::cmp::Reverse(b.effective));
    others
        .into_iter()
        .find_map(|b| b.endpoints.iter().find(fresh).map(|e| (b, e)))
}

/// At most this many attempts on distinct endpoints (`retries` is at most 10).
const MAX_ATTEMPTS: usize = 11;

/// At most this many times a request goes again to the same endpoint on a
/// fresh connection after the keep-alive race or an unprocessed (refused)
/// stream; these do not use up `retries`.
const MAX_SAME_ENDPOINT_REPLAYS: u32 = 2;

/// The attempt policy of every request path (hyper's, the fast path's and
/// upgrades): which endpoint each attempt takes, whether a failure ends the
/// request or another attempt follows, and which failures count against the
/// endpoint's passive health.
pub struct Attempts<'s> {
    route: &'s Route,
    /// The backend of the last attempt (the chosen one at first).
    backend: &'s Backend,
    /// The request is at hand to send again (no body, or a buffered one).
    at_hand: bool,
    /// It may be sent again after it reached an upstream: at hand,
    /// idempotent and `retries > 0`.
    replayable: bool,
    /// Endpoints tried, inline: no allocation per request.
    tried: [Option<&'s Arc<Endpoint>>; MAX_ATTEMPTS],
    attempt: u32,
    /// Attempts that went to the same endpoint again (not counted in `retries`).
    replays: u32,
    last_error: Option<UpstreamError>,
}

impl<'s> Attempts<'s> {
    /// `at_hand`: the whole request can be sent again (no body, or its body
    /// buffered).
    pub fn new(
        route: &'s Route,
        backend: &'s Backend,
        method: &Method,
        at_hand: bool,
    ) -> Attempts<'s> {
        Attempts {
            route,
            backend,
            at_hand,
            replayable: at_hand && route.config.retries > 0 && is_idempotent(method),
            tried: [None; MAX_ATTEMPTS],
            attempt: 0,
            replays: 0,
            last_error: None,
        }
    }

    /// The backend and endpoint of the next attempt, recorded in `served`;
    /// `None` when the attempts are used up. Each attempt after the first
    /// counts a retry against the backend that failed.
    pub fn next(&mut self, served: &mut Served<'s>) -> Option<&'s Arc<Endpoint>> {
        if self.attempt > self.route.config.retries + self.replays {
            return None;
        }
        let tried = &self.tried;
        let is_tried = |e: &Arc<Endpoint>| tried.iter().flatten().any(|t| Arc::ptr_eq(t, e));
        let (chosen, endpoint) =
            next_endpoint(self.route, self.backend, self.attempt == 0, is_tried)?;
        if self.attempt > 0 {
            self.backend.metrics.record_retry();
            served.retries = self.attempt;
        }
        if let Some(slot) = self.tried.iter_mut().find(|t| t.is_none()) {
            *slot = Some(endpoint);
        }
        self.attempt += 1;
        self.backend = chosen;
        served.backend = Some(chosen);
        served.endpoint = Some(endpoint);
        Some(endpoint)
    }

    /// The attempt on `endpoint` failed. `Ok` when another attempt may
    /// follow, else the answer. The error carries its retry class: nothing
    /// sent (connect, TLS, handshake: the next endpoint, any method), the
    /// client's body failed (the end), or the exchange failed.
    ///
    /// The keep-alive race ([`UpstreamError::StaleConnection`]) and an
    /// unprocessed request ([`UpstreamError::Unprocessed`]) are not the
    /// endpoint's fault: the same endpoint is tried again on a fresh
    /// connection, when the request is safe to send again (an unprocessed
    /// one whatever its method).
    /// What the attempt on `endpoint` came to: the answer (its status goes
    /// to the endpoint's passive health: a 5xx is a failure), `None` when
    /// another attempt follows, or the error that ends the request.
    pub fn settle<T: Answer>(
        &mut self,
        endpoint: &Arc<Endpoint>,
        result: Result<T, UpstreamError>,
    ) -> Result<Option<T>, ProxyError> {
        match result {
            Ok(answer) => {
                let failed = answer.status().is_server_error();
                self.backend.metrics.record_attempt(failed);
                if failed {
                    endpoint.record_failure(&self.backend.outlier);
                } else {
                    endpoint.record_success();
                }
                Ok(Some(answer))
            }
            Err(error) => {
                let blames_backend = error.blames_endpoint();
                let next = self.failed(endpoint, error);
                // Counted for the backend it went to (the canary judges on
                // these), even when a retry elsewhere saves the request; the
                // client's body failing or the keep-alive race followed by
                // a replay is not the backend's doing.
                if !matches!(next, Err(ProxyError::RequestBody))
                    && (blames_backend || next.is_err())
                {
                    self.backend.metrics.record_attempt(true);
                }
                next.map(|()| None)
            }
        }
    }

    fn failed(&mut self, endpoint: &Arc<Endpoint>, error: UpstreamError) -> Result<(), ProxyError> {
        if let UpstreamError::ClientBody(error) = &error {
            tracing::debug!(%error, "the client's request body failed");
            return Err(ProxyError::RequestBody);
        }
        if error.nothing_sent() {
            // Nothing reached the upstream: whatever the method, the next
            // endpoint may take the request.
            tracing::debug!(endpoint = endpoint.authority(), %error, "connect failed");
            if error.blames_endpoint() {
                endpoint.record_failure(&self.backend.outlier);
            }
            self.last_error = Some(error);
            return Ok(());
        }
        let safe_again = match error {
            UpstreamError::Unprocessed(_) => self.at_hand,
            _ => self.replayable,
        };
        if !error.blames_endpoint() && safe_again && self.replays < MAX_SAME_ENDPOINT_REPLAYS {
            // Its other idle connections are as old as this one.
            tracing::debug!(endpoint = endpoint.authority(), %error, "connection lost before an answer: again on a fresh one");
            self.replays += 1;
            endpoint.close_idle();
            if let Some(slot) = self.tried.iter_mut().rev().find(|t| t.is_some()) {
                *slot = None;
            }
            self.last_error = Some(error);
            return Ok(());
        }
        if error.blames_endpoint() {
            endpoint.record_failure(&self.backend.outlier);
        }
        if !safe_again || matches!(error, UpstreamError::ResponseTimeout) {
            return Err(error.into());
        }
        tracing::debug!(endpoint = endpoint.authority(), %error, "request failed, retrying");
        self.last_error = Some(error);
        Ok(())
    }

    /// The answer when no attempt succeeded.
    pub fn exhausted(self) -> ProxyError {
        self.last_error
            .map_or(ProxyError::NoEndpoint, ProxyError::Upstream)
    }
}

/// RFC 9110 §9.2.2 idempotent methods.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}
