//! The outcome of a request, the same whichever path served it: who served
//! it ([`Served`]), counting it for that backend, its access log line (a
//! [`Ledger`] settles both once, or as 499 when the request is dropped
//! unanswered), and the answers sluicegate makes itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use crate::control::{Backend, Route, Snapshot, State};
use crate::error::ProxyError;
use crate::telemetry::access_log::{AccessLog, Entry};
use crate::upstream::Endpoint;

/// The status counted and logged for a request whose client went away
/// before it was answered (NGINX's 499, "client closed request").
pub const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// The books of one request: who served it, its access log line. Settled
/// once with the answer's status; a request dropped before that (the client
/// went away) is settled as [`CLIENT_CLOSED_REQUEST`] when the ledger drops.
/// The log line is written when the ledger drops, unless it was taken to be
/// written when the response body ends.
pub struct Ledger<'s> {
    state: &'s State,
    snapshot: &'s Snapshot,
    started: Instant,
    entry: Option<Box<Entry>>,
    pub served: Served<'s>,
    settled: bool,
}

impl<'s> Ledger<'s> {
    /// `entry`: the fields known on arrival, when the access log is on.
    pub fn new(
        state: &'s State,
        snapshot: &'s Snapshot,
        started: Instant,
        entry: Option<Box<Entry>>,
    ) -> Ledger<'s> {
        Ledger {
            state,
            snapshot,
            started,
            entry,
            served: Served::default(),
            settled: false,
        }
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Keeps the detail of `error` for the log line (never for the client).
    pub fn note_error(&mut self, error: &ProxyError) {
        if let Some(entry) = self.entry.as_mut() {
            entry.error = Some(error.to_string());
        }
    }

    /// Counts `status` for whoever served the request and fills in the log
    /// line's fields known now.
    pub fn settle(&mut self, status: StatusCode) {
        self.settled = true;
        self.served
            .record(self.state, status, self.started.elapsed());
        if let Some(entry) = self.entry.as_mut() {
            self.served.fill(entry, status, self.snapshot.revision);
        }
    }

    /// The log line, to be written when the response body ends.
    pub fn take_line(&mut self) -> Option<(Arc<AccessLog>, Entry)> {
        let log = self.state.access_log()?;
        let entry = self.entry.take()?;
        Some((Arc::clone(log), *entry))
    }

    /// Ends the books of a response whose body was `bytes` long.
    pub fn finish(mut self, bytes: u64) {
        if let Some(entry) = self.entry.as_mut() {
            entry.bytes = bytes;
        }
    }
}

impl Drop for Ledger<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(CLIENT_CLOSED_REQUEST);
        }
        if let Some((log, mut entry)) = self.take_line() {
            entry.duration = self.started.elapsed();
            log.log(entry);
        }
    }
}

/// Who handled a request, as far as it got.
#[derive(Default)]
pub struct Served<'s> {
    pub route: Option<&'s Route>,
    /// The backend in charge: picked, then the one of the last attempt.
    pub backend: Option<&'s Backend>,
    pub endpoint: Option<&'s Arc<Endpoint>>,
    pub retries: u32,
}

impl Served<'_> {
    /// Counts the response for the backend that answered it (or the one
    /// picked, when sluicegate answered itself).
    pub fn record(&self, state: &State, status: StatusCode, elapsed: Duration) {
        match (self.backend, self.route) {
            (Some(backend), _) => backend.metrics.record(status, elapsed),
            // A route whose every backend has no traffic: counted for the
            // backend the desired weights would have picked.
            (None, Some(route)) => match route.desired_backend() {
                Some(backend) => backend.metrics.record(status, elapsed),
                None => state
                    .telemetry()
                    .record_unrouted(Some(route.name()), status, elapsed),
            },
            (None, None) => state.telemetry().record_unrouted(None, status, elapsed),
        }
    }

    /// Fills in the access log fields known once the response is decided.
    pub fn fill(&self, entry: &mut Entry, status: StatusCode, revision: u64) {
        entry.status = status;
        entry.revision = revision;
        entry.route = self.route.map(|r| r.name().to_string());
        entry.backend = self.backend.map(|b| b.name.clone());
        entry.endpoint = self.endpoint.map(|e| e.addr.to_string());
        entry.retries = self.retries;
    }
}

/// The header fields of an answer sluicegate makes itself: the text's type,
/// and `Retry-After` on a 503.
pub fn error_headers(status: StatusCode) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::control::health::RETRY_AFTER.as_secs()),
        );
    }
    headers
}

/// The body of an answer sluicegate makes itself: `502 Bad Gateway:
/// upstream connect failed`, in general terms (the detail goes to the log).
pub fn error_text(error: &ProxyError) -> String {
    let status = error.status();
    format!(
        "{} {}: {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        error.public_message()
    )
}
