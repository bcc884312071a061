//! The routing state: one immutable [`Snapshot`] behind one `ArcSwap`, and
//! the one writer lock that orders every change to it.
//!
//! A request loads the snapshot once and uses it to the end, so a reload or a
//! weight change takes effect on the next request and never half-way through
//! one. Every change (file reload, admin call, failover, canary step, drain)
//! is a [`Change`] applied by [`State::apply`] (in `change`): it takes the
//! lock, records the numbered revision, builds a new snapshot and swaps it in
//! whole, then saves the state file off the lock (`history::Persister`).

pub mod admin;
pub mod balance;
pub mod canary;
mod change;
pub mod fleet;
pub mod gauges;
pub mod health;
pub mod history;
pub mod notify;
pub mod reload;
mod router;
mod snapshot;
pub mod webhook;

pub use change::{
    Applied, Change, ChangeError, FleetUpdate, PreparedConfig, WeightChange, load, load_with,
    prepare,
};
pub use router::HeaderLookup;
pub use snapshot::{Backend, EndpointPool, Route, Snapshot, effective_weights};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};

use crate::config::{Config, ConfigErrors};
use crate::control::history::{History, Persisted, Persister, Revision, Source, WeightMap};
use crate::telemetry::Telemetry;
use crate::telemetry::access_log::AccessLog;
use crate::upstream::TlsClients;

/// The shared, swappable routing state and the one writer lock that orders
/// every change to it.
#[derive(Debug)]
pub struct State {
    current: ArcSwap<Snapshot>,
    pool: EndpointPool,
    telemetry: Arc<Telemetry>,
    access_log: Option<Arc<AccessLog>>,
    control: Mutex<Control>,
    /// Saves the state file after a change, outside `control`'s lock.
    persister: Persister,
    /// The revision of every published snapshot, for the health manager.
    revisions: watch::Sender<u64>,
    /// `[[notify]]`: told of every new revision (and, by the canary
    /// controller, of every canary change).
    notifier: notify::Notifier,
}

/// The writer side: what the snapshot is built from, and the history.
#[derive(Debug)]
struct Control {
    config: Arc<Config>,
    /// The TLS clients built for `config`.
    tls: Arc<TlsClients>,
    overrides: HashMap<String, WeightMap>,
    history: History,
}

impl State {
    /// State serving `config`, with admin overrides and history restored from
    /// its state file when one is configured. A CA file that cannot be read
    /// is logged and that backend's TLS handshakes fail: start-up uses
    /// [`State::try_new`] (or [`prepare`]) to refuse such a file instead.
    pub fn new(config: Config) -> State {
        let tls = TlsClients::prepare_lenient(&config);
        State::from_prepared(PreparedConfig { config, tls })
    }

    /// State serving `config`, or the errors of its CA files.
    pub fn try_new(config: Config) -> Result<State, ConfigErrors> {
        prepare(config).map(State::from_prepared)
    }

    /// State serving a prepared config (see [`State::new`]).
    pub fn from_prepared(prepared: PreparedConfig) -> State {
        let PreparedConfig { config, tls } = prepared;
        let persisted = config
            .admin
            .state_file
            .as_deref()
            .map(Persisted::load)
            .unwrap_or_default();
        let mut control = Control {
            overrides: persisted.overrides_for(&config),
            history: History::restored(&persisted),
            config: Arc::new(config),
            tls: Arc::new(tls),
        };
        if control.config.fleet.is_some() {
            control.history.share();
        }
        let reason = match &control.config.source {
            Some(path) => format!("started from {}", path.display()),
            None => "started".to_string(),
        };
        control
            .history
            .record(None, None, None, Source::File, reason);
        let pool = EndpointPool::default();
        let telemetry = Arc::new(Telemetry::new());
        let snapshot = Snapshot::build(
            Arc::clone(&control.config),
            &control.tls,
            control.history.latest(),
            &control.overrides,
            &pool,
            &telemetry,
        );
        let save = control.config.admin.state_file.clone().map(|path| {
            (
                path,
                Persisted::of(&control.history, &control.overrides, &control.config),
            )
        });
        let notifier = notify::Notifier::default();
        notifier.configure(&control.config.notify, &telemetry);
        let state = State {
            notifier,
            revisions: watch::Sender::new(snapshot.revision),
            current: ArcSwap::from_pointee(snapshot),
            pool,
            telemetry,
            access_log: None,
            control: Mutex::new(control),
            persister: Persister::default(),
        };
        if let Some((path, persisted)) = save {
            state.persister.save(path, persisted);
        }
        state
    }

    /// The snapshot in force now.
    #[inline]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The snapshot in force now, as an owned `Arc`.
    #[inline]
    pub fn snapshot_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The latest revision number.
    pub fn revision(&self) -> u64 {
        self.current.load().revision
    }

    /// Whether `route` runs on weights set through the admin API.
    pub fn has_override(&self, route: &str) -> bool {
        self.lock().overrides.contains_key(route)
    }

    /// Revisions newest first: at most `limit`, older than `before`, of `route`.
    /// Also returns the `before` for the next page, if there is one.
    pub fn history(
        &self,
        limit: usize,
        before: Option<u64>,
        route: Option<&str>,
    ) -> (Vec<Revision>, Option<u64>) {
        self.lock().history.page(limit, before, route)
    }

    /// Builds and swaps in the snapshot for `control`, then tells subscribers.
    fn publish(&self, control: &Control) {
        let revision = control.history.latest();
        let snapshot = self.current.load().rebuild(
            Arc::clone(&control.config),
            &control.tls,
            revision,
            &control.overrides,
            &self.pool,
            &self.telemetry,
        );
        drop_later(self.current.swap(Arc::new(snapshot)));
        self.revisions.send_replace(revision);
    }

    /// Publishes a change of route `route`'s desired weights alone: the
    /// current snapshot with that one route rebuilt (the others, the router
    /// and the endpoints shared), so a weight change costs one route however
    /// many there are. A whole build when the snapshot is of another config.
    fn publish_weights(&self, control: &Control, route: &str) {
        let revision = control.history.latest();
        let current = self.current.load();
        let next = Arc::ptr_eq(&current.config, &control.config)
            .then(|| current.with_weights(route, control.overrides.get(route), revision))
            .flatten();
        match next {
            Some(snapshot) => {
                self.current.store(Arc::new(snapshot));
                self.revisions.send_replace(revision);
            }
            None => self.publish(control),
        }
    }

    /// Sends every request's line to `log` from now on.
    pub fn set_access_log(&mut self, log: AccessLog) {
        self.access_log = Some(Arc::new(log));
    }

    /// The access log, when on.
    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.access_log.as_ref()
    }

    /// The `[[notify]]` receivers.
    pub fn notifier(&self) -> &notify::Notifier {
        &self.notifier
    }

    /// This proxy's metrics.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Wakes revision subscribers (certificate reload, health checks) without
    /// a new revision: a reload found the config unchanged.
    pub fn notify_unchanged_reload(&self) {
        self.revisions.send_modify(|_| {});
    }

    /// A receiver that sees the revision of every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revisions.subscribe()
    }

    /// Woken whenever an endpoint's availability flips.
    pub fn endpoint_changes(&self) -> Arc<Notify> {
        Arc::clone(&self.pool.changes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        // A panic while holding the lock cannot leave Control half-written in a
        // way that matters more than stopping every later change.
        self.control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Drops `value` on the blocking pool when there is a runtime: the routes of
/// a large config take milliseconds to free, which the change that replaced
/// them (and the worker it ran on) need not wait for.
pub(crate) fn drop_later<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(value));
        }
        Err(_) => drop(value),
    }
}
