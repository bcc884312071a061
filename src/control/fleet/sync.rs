//! The sync task: read the fleet's prefix, apply it, watch it from the
//! revision read, apply each watch message as one change; on any trouble
//! reconnect with jittered back-off and read the prefix again, which catches
//! up on every change missed (a compaction included).
//!
//! While following, a heartbeat reads the revision key from the watched
//! member every [`HEARTBEAT`] (a linearizable read: it needs quorum), so a
//! member that lost quorum or froze is left within [`CALL_TIMEOUT`] plus a
//! heartbeat. A cluster id that changes or a revision that goes backwards
//! means etcd was restored from a backup: the prefix is read again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::etcd::{CALL_TIMEOUT, EtcdError, Kv, WatchMessage};
use super::keys::{Key, Keys, WeightsRecord, counter_number, parse_revision};
use super::{Fleet, InstanceView, note_problems};
use crate::config::{Config, RouteConfig};
use crate::control::history::{WeightMap, file_weights};
use crate::control::{Change, FleetUpdate};

/// How often the watched member is asked for the revision key.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(2);
/// Back-off between reconnects: doubles from the first to the last, jittered.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The fleet's keys as last read, by key.
#[derive(Debug, Default)]
pub(super) struct Mirror {
    pub kvs: BTreeMap<String, Kv>,
    pub cluster_id: u64,
    /// The etcd revision the mirror is at.
    pub revision: i64,
}

impl Mirror {
    /// The fleet's revision counter: its number and the key's mod revision.
    pub fn counter(&self, keys: &Keys) -> (u64, i64) {
        self.kvs
            .get(&keys.revision())
            .map_or((0, 0), |kv| (counter_number(&kv.value), kv.mod_revision))
    }
}

pub(super) async fn run(fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) {
    let mut delay = BACKOFF_FIRST;
    let mut last = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let followed = tokio::select! {
            result = follow(&fleet, &mut delay, &mut last) => result,
            _ = stop.changed() => break,
        };
        fleet.set_connected(false);
        if let Err(error) = followed {
            tracing::warn!(%error, "fleet: following etcd stopped; reconnecting");
        }
        let jittered = delay.mul_f64(0.5 + fastrand::f64());
        delay = (delay * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(jittered) => {}
            _ = stop.changed() => break,
        }
    }
}

/// Reads, applies, then follows the prefix until something goes wrong.
async fn follow(
    fleet: &Arc<Fleet>,
    delay: &mut Duration,
    last: &mut Option<FleetUpdate>,
) -> Result<(), EtcdError> {
    let (header, kvs) = fleet.etcd.get_prefix(&fleet.keys.root).await?;
    let mut mirror = Mirror {
        kvs: kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
        cluster_id: header.cluster_id,
        revision: header.revision,
    };
    let mut config = fleet.state.snapshot().config.clone();
    *fleet.counter_lock() = mirror.counter(&fleet.keys);
    apply(fleet, &mirror, &config, last);
    let (mut watch, member) = fleet
        .etcd
        .watch(&fleet.keys.root, mirror.revision + 1)
        .await?;
    fleet.set_connected(true);
    *delay = BACKOFF_FIRST;
    seed(fleet, &mirror, &config).await;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut revisions = fleet.state.subscribe();
    loop {
        tokio::select! {
            message = watch.next() => {
                let WatchMessage::Events(header, events) = message? else { continue };
                if header.cluster_id != mirror.cluster_id {
                    return Err(EtcdError::Protocol("etcd's cluster id changed: reading the fleet again".into()));
                }
                for event in events {
                    if event.delete {
                        mirror.kvs.remove(&event.kv.key);
                    } else {
                        mirror.kvs.insert(event.kv.key.clone(), event.kv);
                    }
                }
                mirror.revision = mirror.revision.max(header.revision);
                apply(fleet, &mirror, &config, last);
            }
            _ = heartbeat.tick() => {
                let header = fleet.etcd.heartbeat(member, &fleet.keys.revision()).await?;
                if header.cluster_id != mirror.cluster_id || header.revision < mirror.revision {
                    return Err(EtcdError::Protocol("etcd was restored (cluster id or revision went back): reading the fleet again".into()));
                }
            }
            _ = revisions.changed() => {
                // A reload of this instance's file may add routes or rename backends.
                let now = fleet.state.snapshot().config.clone();
                if !Arc::ptr_eq(&now, &config) {
                    config = now;
                    *last = None;
                    apply(fleet, &mirror, &config, last);
                    seed(fleet, &mirror, &config).await;
                }
            }
        }
    }
}

/// Applies what `mirror` says to this instance's state (when it changes
/// anything) and notes the view.
fn apply(fleet: &Fleet, mirror: &Mirror, config: &Config, last: &mut Option<FleetUpdate>) {
    let read = read_mirror(
        &fleet.keys,
        mirror,
        fleet.zone(),
        &config.routes,
        last.as_ref(),
    );
    let uncontrolled = config
        .routes
        .iter()
        .any(|r| r.canary.is_some() && !read.controllers.contains_key(&r.name));
    {
        let mut view = fleet.view();
        view.instances = read.instances;
        view.controllers = read.controllers;
        view.canary_states = read.canary_states;
        view.canary_stats = read.canary_stats;
        note_problems(&mut view, read.problems);
    }
    if uncontrolled {
        fleet.contest.notify_one();
    }
    {
        // A write of this instance may have moved the counter past the watch.
        let read = mirror.counter(&fleet.keys);
        let mut counter = fleet.counter_lock();
        if read.1 >= counter.1 {
            *counter = read;
        }
    }
    if last.as_ref() != Some(&read.update) {
        // The fleet's state is data: the pipeline cannot refuse it.
        if let Err(error) = fleet.state.apply(Change::Fleet(read.update.clone())) {
            tracing::error!(%error, "fleet: applying the fleet's state failed");
        }
        *last = Some(read.update);
    }
    fleet.applied.send_replace(mirror.revision);
}

/// What one read of the mirror gives this instance.
#[derive(Debug)]
pub(super) struct Read {
    pub update: FleetUpdate,
    pub problems: Vec<String>,
    pub instances: BTreeMap<String, InstanceView>,
    pub controllers: BTreeMap<String, (String, i64)>,
    pub canary_states: BTreeMap<String, Vec<u8>>,
    pub canary_stats: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// The fleet's state for an instance in `zone` with `routes`. A value that
/// does not parse or fit is reported and leaves that route as it was
/// (`last`), so a bad write is refused by every instance without looping.
pub(super) fn read_mirror(
    keys: &Keys,
    mirror: &Mirror,
    zone: Option<&str>,
    routes: &[Arc<RouteConfig>],
    last: Option<&FleetUpdate>,
) -> Read {
    let mut problems = Vec::new();
    let mut history = Vec::new();
    let mut instances = BTreeMap::new();
    let mut controllers = BTreeMap::new();
    let mut canary_states = BTreeMap::new();
    let mut canary_stats: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut fleet_weights: BTreeMap<(String, Option<String>), Result<WeightMap, String>> =
        BTreeMap::new();
    for (key, kv) in &mirror.kvs {
        match keys.parse(key) {
            Some(Key::History(number)) => match parse_revision(&kv.value) {
                Ok(revision) if revision.revision == number => history.push(revision),
                Ok(_) => problems.push(format!("{key}: its revision number is not the key's")),
                Err(e) => problems.push(format!("{key}: not a revision: {e}")),
            },
            Some(Key::Weights { route, zone }) => {
                let parsed = serde_json::from_slice::<WeightsRecord>(&kv.value)
                    .map(|r| r.weights)
                    .map_err(|e| format!("{key}: not weights: {e}"));
                fleet_weights.insert((route, zone.map(str::to_string)), parsed);
            }
            Some(Key::Instance(name)) => match serde_json::from_slice::<InstanceView>(&kv.value) {
                Ok(record) => {
                    instances.insert(name.to_string(), record);
                }
                Err(e) => problems.push(format!("{key}: not an instance record: {e}")),
            },
            Some(Key::Controller(route)) => {
                let who = String::from_utf8_lossy(&kv.value).into_owned();
                controllers.insert(route, (who, kv.mod_revision));
            }
            Some(Key::CanaryState(route)) => {
                canary_states.insert(route, kv.value.clone());
            }
            Some(Key::CanaryStats(route, instance)) => {
                canary_stats
                    .entry(route)
                    .or_default()
                    .insert(instance.to_string(), kv.value.clone());
            }
            Some(Key::Revision) | None => {}
        }
    }
    history.sort_by_key(|r| r.revision);
    let (counter, _) = mirror.counter(keys);
    let revision = counter.max(history.last().map_or(0, |r| r.revision));
    let weights = routes
        .iter()
        .map(|route| {
            let kept = || {
                last.and_then(|u| u.weights.iter().find(|(n, _)| *n == route.name))
                    .and_then(|(_, w)| w.clone())
            };
            let zoned =
                zone.and_then(|z| fleet_weights.get(&(route.name.clone(), Some(z.to_string()))));
            let chosen = zoned.or_else(|| fleet_weights.get(&(route.name.clone(), None)));
            let weights = match chosen {
                None => None,
                Some(Err(problem)) => {
                    problems.push(format!("{problem}: refused, the route keeps its weights"));
                    kept()
                }
                Some(Ok(weights)) => match fits(route, weights) {
                    Ok(()) => Some(weights.clone()),
                    Err(problem) => {
                        problems.push(format!(
                            "route `{}`: {problem}: this instance runs on its file's weights",
                            route.name
                        ));
                        None
                    }
                },
            };
            (route.name.clone(), weights)
        })
        .collect();
    Read {
        update: FleetUpdate {
            revision,
            weights,
            history,
        },
        problems,
        instances,
        controllers,
        canary_states,
        canary_stats,
    }
}

/// Whether the fleet's `weights` apply to this instance's `route`.
fn fits(route: &RouteConfig, weights: &WeightMap) -> Result<(), String> {
    let names: Vec<&str> = route.backends.iter().map(|b| b.name.as_str()).collect();
    if !weights.has_backends(&names) {
        let theirs: Vec<&str> = weights.0.iter().map(|(n, _)| n.as_str()).collect();
        return Err(format!(
            "the fleet's weights name backends {}, this instance has {}",
            theirs.join(","),
            names.join(",")
        ));
    }
    let total: u32 = weights.0.iter().map(|(_, w)| w.0).sum();
    if total != crate::config::TOTAL_WEIGHT {
        return Err("the fleet's weights do not sum to 100".into());
    }
    // In the route's own backend order.
    Ok(())
}

/// Seeds the fleet-wide weights of routes etcd has none for from this
/// instance's file, in one transaction guarded by the revision counter so
/// instances starting together seed once. Failures are retried on the next
/// connect or reload.
async fn seed(fleet: &Fleet, mirror: &Mirror, config: &Config) {
    let missing: Vec<(String, WeightMap)> = config
        .routes
        .iter()
        .filter(|r| !mirror.kvs.contains_key(&fleet.keys.weights(&r.name, None)))
        .map(|r| (r.name.clone(), file_weights(r)))
        .collect();
    if missing.is_empty() {
        return;
    }
    match tokio::time::timeout(CALL_TIMEOUT * 3, fleet.seed(missing)).await {
        Ok(Ok(seeded)) if seeded > 0 => {
            tracing::info!(
                routes = seeded,
                "fleet: seeded routes' weights from this file"
            );
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "fleet: seeding weights failed"),
        Err(_) => tracing::warn!("fleet: seeding weights timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<Arc<RouteConfig>> {
        crate::config::blue_green_90_10().routes
    }

    fn kv(key: &str, value: &str) -> (String, Kv) {
        (
            key.to_string(),
            Kv {
                key: key.to_string(),
                value: value.as_bytes().to_vec(),
                create_revision: 1,
                mod_revision: 1,
                lease: 0,
            },
        )
    }

    fn mirror(pairs: &[(&str, &str)]) -> Mirror {
        Mirror {
            kvs: pairs.iter().map(|(k, v)| kv(k, v)).collect(),
            cluster_id: 1,
            revision: 9,
        }
    }

    #[test]
    fn zone_weights_win_over_fleet_weights_in_their_zone_only() {
        let keys = Keys::new("/sg");
        let m = mirror(&[
            ("/sg/revision", "2"),
            (
                "/sg/weights/web",
                r#"{"weights":{"blue":50,"green":50},"revision":1}"#,
            ),
            (
                "/sg/zones/eu/weights/web",
                r#"{"weights":{"blue":0,"green":100},"revision":2}"#,
            ),
        ]);
        let eu = read_mirror(&keys, &m, Some("eu"), &routes(), None);
        assert_eq!(eu.update.revision, 2);
        assert_eq!(
            eu.update.weights[0].1.as_ref().unwrap().describe(),
            "blue=0 green=100"
        );
        let us = read_mirror(&keys, &m, Some("us"), &routes(), None);
        assert_eq!(
            us.update.weights[0].1.as_ref().unwrap().describe(),
            "blue=50 green=50"
        );
        assert!(us.problems.is_empty(), "{:?}", us.problems);
    }

    #[test]
    fn bad_or_foreign_weights_are_reported_and_never_applied() {
        let keys = Keys::new("/sg");
        let good = mirror(&[(
            "/sg/weights/web",
            r#"{"weights":{"blue":70,"green":30},"revision":1}"#,
        )]);
        let first = read_mirror(&keys, &good, None, &routes(), None);
        let broken = mirror(&[("/sg/weights/web", "{not json")]);
        let read = read_mirror(&keys, &broken, None, &routes(), Some(&first.update));
        assert_eq!(
            read.update.weights[0].1.as_ref().unwrap().describe(),
            "blue=70 green=30"
        );
        assert!(read.problems[0].contains("refused"), "{:?}", read.problems);
        let foreign = mirror(&[("/sg/weights/web", r#"{"weights":{"red":100},"revision":1}"#)]);
        let read = read_mirror(&keys, &foreign, None, &routes(), Some(&first.update));
        assert_eq!(read.update.weights[0].1, None, "runs on the file's weights");
        assert!(
            read.problems[0].contains("backends red"),
            "{:?}",
            read.problems
        );
    }
}
