//! Fleet mode (`[fleet]`, docs/FLEET.md): many instances share their routes'
//! desired weights (fleet-wide and per zone), one revision history and the
//! canary state through an etcd v3 cluster. Each instance keeps its own
//! listeners, routes, backends, endpoints and health checks from its file.
//!
//! - `etcd`: the small JSON-gateway client (timeouts, member failover).
//! - `keys`: the key layout under `prefix` and the records stored there.
//! - `sync`: the one task that reads the prefix, watches it from the revision
//!   applied, and hands every change to [`State::apply`] as one
//!   [`Change::Fleet`](crate::control::Change::Fleet); it re-reads on a
//!   reconnect, a compaction or a restored etcd, and seeds routes that etcd
//!   has no weights for from this instance's file.
//! - `write`: an admin change as one etcd transaction guarded by the
//!   fleet's revision counter, answered once this instance has applied it.
//! - `member`: this instance's registration under a lease, and its bid for
//!   the canary controller of each canary route.
//! - `canary`: what the canary controller asks of the fleet: who controls a
//!   route, the shared canary state, every instance's step counts, and
//!   writes fenced by the controller's key.
//!
//! Traffic never waits for etcd: requests read the snapshot, which only the
//! sync task replaces; with etcd gone the last applied weights stay (and come
//! back from the state file after a restart).

mod canary;
pub mod etcd;
mod keys;
mod member;
mod sync;
mod write;

pub use keys::InstanceView;
pub use write::FleetError;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::FleetConfig;
use crate::control::State;
use etcd::Etcd;
use keys::Keys;

/// Fleet's problems kept for the view (invalid values, backend mismatches).
const MAX_PROBLEMS: usize = 50;

/// This instance's link to its fleet.
#[derive(Debug)]
pub struct Fleet {
    config: FleetConfig,
    etcd: Etcd,
    keys: Keys,
    state: Arc<State>,
    /// Whether the sync task is connected and its watch is live.
    connected: AtomicBool,
    /// The etcd revision this instance has applied.
    applied: watch::Sender<i64>,
    /// This instance's lease (0 before it has one).
    lease: AtomicI64,
    /// The fleet's revision counter as last read: number, key's mod revision.
    counter: Mutex<(u64, i64)>,
    /// Woken when a canary route has no controller: the member task runs
    /// for it at once.
    contest: tokio::sync::Notify,
    view: Mutex<View>,
}

/// What the sync task last saw, for `GET /api/v1/fleet`.
#[derive(Debug, Default)]
struct View {
    /// Every registered instance, by name.
    instances: BTreeMap<String, InstanceView>,
    /// Why some values in etcd or some routes are not applied here.
    problems: Vec<String>,
    /// Route → the instance running its canary controller, and the
    /// controller key's mod revision (the fence of its writes).
    controllers: BTreeMap<String, (String, i64)>,
    /// Route → its canary state as the controller saved it.
    canary_states: BTreeMap<String, Vec<u8>>,
    /// Route → instance → that instance's counts of the step in force.
    canary_stats: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl View {
    fn controlled_by(&self, instance: &str) -> Vec<String> {
        self.controllers
            .iter()
            .filter(|(_, (who, _))| who == instance)
            .map(|(route, _)| route.clone())
            .collect()
    }
}

impl Fleet {
    /// The link for `state`'s `[fleet]`; `Ok(None)` when there is none.
    pub fn new(state: Arc<State>) -> Result<Option<Arc<Fleet>>, String> {
        let Some(config) = state.snapshot().config.fleet.clone() else {
            return Ok(None);
        };
        let etcd = Etcd::new(&config)?;
        let keys = Keys::new(&config.prefix);
        Ok(Some(Arc::new(Fleet {
            config,
            etcd,
            keys,
            state,
            connected: AtomicBool::new(false),
            applied: watch::Sender::new(0),
            lease: AtomicI64::new(0),
            counter: Mutex::new((0, 0)),
            contest: tokio::sync::Notify::new(),
            view: Mutex::new(View::default()),
        })))
    }

    /// Starts the sync and membership tasks; they end when `stop` turns true
    /// (the registration is then withdrawn at once).
    pub fn spawn(self: &Arc<Self>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(sync::run(Arc::clone(self), stop.clone())),
            tokio::spawn(member::run(Arc::clone(self), stop)),
        ]
    }

    /// This instance's name in the fleet.
    pub fn instance(&self) -> &str {
        &self.config.instance
    }

    /// This instance's zone.
    pub fn zone(&self) -> Option<&str> {
        self.config.zone.as_deref()
    }

    /// Whether etcd is reachable and this instance follows it.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Every instance of the fleet as last seen (this one as it is now).
    pub fn instances(&self) -> Vec<InstanceView> {
        let mut instances = self.view().instances.clone();
        instances.insert(self.instance().to_string(), self.record());
        instances.into_values().collect()
    }

    /// Why some fleet values or routes are not applied here.
    pub fn problems(&self) -> Vec<String> {
        self.view().problems.clone()
    }

    /// This instance's registration as it is now.
    fn record(&self) -> InstanceView {
        let snapshot = self.state.snapshot_full();
        keys::instance_record(
            &self.config,
            &snapshot,
            self.connected(),
            self.state.revision(),
            self.view().controlled_by(self.instance()),
            &|route| self.state.has_override(route),
        )
    }

    fn lease(&self) -> i64 {
        self.lease.load(Ordering::Relaxed)
    }

    fn counter_lock(&self) -> MutexGuard<'_, (u64, i64)> {
        self.counter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_connected(&self, connected: bool) {
        let was = self.connected.swap(connected, Ordering::Relaxed);
        if was != connected {
            if connected {
                tracing::info!(prefix = %self.config.prefix, "fleet: connected to etcd");
            } else {
                tracing::warn!(prefix = %self.config.prefix, "fleet: etcd unreachable; serving the last applied weights");
            }
        }
    }

    /// Waits until this instance has applied etcd revision `revision`, at
    /// most `within`.
    async fn applied_at_least(&self, revision: i64, within: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(within, applied.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Keeps `problems` short: the newest last.
fn note_problems(view: &mut View, problems: Vec<String>) {
    let skip = problems.len().saturating_sub(MAX_PROBLEMS);
    view.problems = problems.into_iter().skip(skip).collect();
}

/// The `sluicegate_fleet_connected` gauge in Prometheus text format.
pub fn connected_metric(connected: bool) -> String {
    format!(
        "# HELP sluicegate_fleet_connected Whether this instance follows its fleet's etcd (1) or serves its last applied weights without it (0).\n# TYPE sluicegate_fleet_connected gauge\nsluicegate_fleet_connected {}\n",
        u8::from(connected)
    )
}
