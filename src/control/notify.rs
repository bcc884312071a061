//! `[[notify]]`: every revision and every canary state or step change, as
//! one JSON POST per event to each receiver that asked for its kind.
//!
//! Sending never waits: an event goes into the receiver's bounded queue
//! ([`QUEUE`]) and the receiver's own task delivers the queue in order, each
//! event tried up to [`ATTEMPTS`] times with a back-off. An event that finds
//! the queue full, or that fails every attempt, is dropped and counted in
//! `sluicegate_notify_dropped_total{receiver}`; a slow or dead receiver
//! therefore delays neither traffic, nor admin answers, nor the canary.
//! A reload that changes `[[notify]]` applies the new receivers; a removed
//! receiver's task ends once its queue is delivered.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use metrics::Counter;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::NotifyConfig;
use crate::control::history::{Revision, WeightMap};
use crate::control::webhook;
use crate::telemetry::Telemetry;

/// Events waiting per receiver; more are dropped (and counted).
pub const QUEUE: usize = 1000;
/// Delivery attempts per event.
pub const ATTEMPTS: u32 = 3;
/// The wait before the second attempt; doubled before each later one.
const BACKOFF: Duration = Duration::from_millis(200);

/// The kinds of event a receiver may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Revision,
    Canary,
}

/// The receivers of one proxy.
#[derive(Debug)]
pub struct Notifier {
    receivers: Mutex<Vec<Receiver>>,
    /// Revisions older than this are not news: a fleet's first sync hands
    /// this instance the fleet's whole history.
    started: SystemTime,
}

impl Default for Notifier {
    fn default() -> Notifier {
        Notifier {
            receivers: Mutex::new(Vec::new()),
            started: SystemTime::now(),
        }
    }
}

#[derive(Debug)]
struct Receiver {
    config: NotifyConfig,
    /// Started with the first event (it needs the runtime).
    queue: Option<mpsc::Sender<Bytes>>,
    dropped: Counter,
}

impl Notifier {
    /// Takes `configs` as the receivers: unchanged ones keep their queue,
    /// new ones start empty, removed ones finish what they hold.
    pub fn configure(&self, configs: &[NotifyConfig], telemetry: &Telemetry) {
        let mut receivers = self.lock();
        let mut old = std::mem::take(&mut *receivers);
        for config in configs {
            let kept = old
                .iter()
                .position(|r| r.config == *config)
                .map(|i| old.swap_remove(i));
            receivers.push(kept.unwrap_or_else(|| Receiver {
                dropped: telemetry.notify_dropped(&config.url.text),
                config: config.clone(),
                queue: None,
            }));
        }
    }

    /// A new revision, to the receivers of `revision` events.
    pub fn revision(&self, revision: &Revision) {
        if revision.time < self.started || !self.wants(Kind::Revision) {
            return;
        }
        let route = revision.route.as_deref().unwrap_or("");
        let actor = revision.actor();
        let source = source_name(revision);
        let weights = revision.weights.as_ref().map(describe_weights);
        let mut text = match (&weights, revision.route.is_some()) {
            (Some(weights), true) => format!(
                "sluicegate: {route} revision {} ({source} by {actor}): {weights}",
                revision.revision
            ),
            _ => format!(
                "sluicegate: revision {} ({source} by {actor})",
                revision.revision
            ),
        };
        if !revision.reason.is_empty() {
            text.push_str(" — ");
            text.push_str(&revision.reason);
        }
        let event = json!({
            "event": "revision",
            "route": revision.route,
            "revision": revision.revision,
            "weights": revision.weights,
            "source": source,
            "reason": revision.reason,
            "time": rfc3339(revision.time),
            "actor": actor,
            "client": revision.client,
            "instance": revision.instance,
            "text": text,
        });
        self.send(Kind::Revision, &event);
    }

    /// A canary's new state or step (`step` 1-based; `weight` the canary's
    /// percent now), to the receivers of `canary` events.
    pub fn canary(&self, route: &str, state: &str, step: Option<usize>, weight: f64, reason: &str) {
        if !self.wants(Kind::Canary) {
            return;
        }
        let mut text = match step {
            Some(step) => format!("sluicegate: {route} canary {state} at step {step} ({weight} %)"),
            None => format!("sluicegate: {route} canary {state} ({weight} %)"),
        };
        if !reason.is_empty() {
            text.push_str(" — ");
            text.push_str(reason);
        }
        let event = json!({
            "event": "canary",
            "route": route,
            "state": state,
            "step": step,
            "weight": weight,
            "reason": reason,
            "time": rfc3339(SystemTime::now()),
            "text": text,
        });
        self.send(Kind::Canary, &event);
    }

    fn wants(&self, kind: Kind) -> bool {
        self.lock().iter().any(|r| wants(&r.config, kind))
    }

    fn send(&self, kind: Kind, event: &Value) {
        let Ok(body) = serde_json::to_vec(event) else {
            return;
        };
        let body = Bytes::from(body);
        let mut receivers = self.lock();
        for receiver in receivers.iter_mut().filter(|r| wants(&r.config, kind)) {
            let Some(queue) = receiver.queue() else {
                receiver.dropped.increment(1);
                continue;
            };
            if queue.try_send(body.clone()).is_err() {
                receiver.dropped.increment(1);
                tracing::warn!(receiver = %receiver.config.url, "notify queue full: event dropped");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Receiver>> {
        self.receivers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether a receiver asked for events of `kind`.
fn wants(config: &NotifyConfig, kind: Kind) -> bool {
    match kind {
        Kind::Revision => config.revisions,
        Kind::Canary => config.canary,
    }
}

impl Receiver {
    /// The queue, its task started on first use; `None` outside a runtime.
    fn queue(&mut self) -> Option<&mpsc::Sender<Bytes>> {
        if self.queue.as_ref().is_none_or(mpsc::Sender::is_closed) {
            let handle = tokio::runtime::Handle::try_current().ok()?;
            let (tx, rx) = mpsc::channel(QUEUE);
            handle.spawn(deliver(self.config.clone(), rx, self.dropped.clone()));
            self.queue = Some(tx);
        }
        self.queue.as_ref()
    }
}

/// Delivers `queue` to one receiver, in order, until every sender is gone.
async fn deliver(config: NotifyConfig, mut queue: mpsc::Receiver<Bytes>, dropped: Counter) {
    while let Some(body) = queue.recv().await {
        let mut wait = BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let (outcome, _) = webhook::post_json(&config.url, body.clone(), config.timeout).await;
            if outcome.is_success() {
                break;
            }
            if attempt == ATTEMPTS {
                dropped.increment(1);
                tracing::warn!(receiver = %config.url, outcome = %outcome.describe(), "notify: event dropped after {ATTEMPTS} attempts");
                break;
            }
            tracing::debug!(receiver = %config.url, outcome = %outcome.describe(), attempt, "notify: trying again");
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
}

/// `file`, `admin`, `canary`, `failover`.
fn source_name(revision: &Revision) -> String {
    serde_json::to_value(revision.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `blue 75, green 25`.
fn describe_weights(weights: &WeightMap) -> String {
    weights
        .0
        .iter()
        .map(|(name, weight)| format!("{name} {weight}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}
