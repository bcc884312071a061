//! Revisions: every change to the routing state, numbered, with who made it
//! and why ([`History`]); and the state file that keeps admin changes across
//! restarts ([`Persisted`], written by the [`Persister`] off the writer lock).

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{Config, RouteConfig, TOTAL_WEIGHT, Weight};

/// Revisions kept in memory and in the state file; older ones are dropped.
pub const MAX_HISTORY: usize = 1000;

/// Backend weights of one route, in backend order; JSON `{"blue": 75, "green": 25}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WeightMap(pub Vec<(String, Weight)>);

impl WeightMap {
    /// The weight of `backend`, 0 when absent.
    pub fn get(&self, backend: &str) -> Weight {
        self.0
            .iter()
            .find(|(n, _)| n == backend)
            .map_or(Weight(0), |(_, w)| *w)
    }

    /// `blue=75 green=25`.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(n, w)| format!("{n}={w}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The same backends, in any order, as `names`.
    pub fn has_backends(&self, names: &[&str]) -> bool {
        self.0.len() == names.len() && names.iter().all(|n| self.0.iter().any(|(m, _)| m == n))
    }
}

impl Serialize for WeightMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, weight) in &self.0 {
            map.serialize_entry(name, &weight.percent())?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for WeightMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = WeightMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of backend name to percent")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WeightMap, A::Error> {
                let mut weights = Vec::new();
                while let Some((name, percent)) = map.next_entry::<String, f64>()? {
                    let weight = Weight::from_percent(percent).map_err(serde::de::Error::custom)?;
                    weights.push((name, weight));
                }
                Ok(WeightMap(weights))
            }
        }
        deserializer.deserialize_map(MapVisitor)
    }
}

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    File,
    Admin,
    Canary,
    Failover,
}

/// One numbered change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub revision: u64,
    #[serde(with = "crate::clock::rfc3339")]
    pub time: SystemTime,
    /// The route whose weights changed; `None` for a change of the whole config.
    pub route: Option<String>,
    pub weights: Option<WeightMap>,
    pub previous: Option<WeightMap>,
    pub source: Source,
    pub reason: String,
    /// In a fleet: the instance that made the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// In a fleet: the zone whose weights changed (none: fleet-wide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// In a fleet: the writer's id for the change, so a retried write is
    /// recognised and never applied twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Who asked: an admin token's name or a client certificate's subject;
    /// `None` for the file, the canary and failover (see [`Revision::actor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The admin caller's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl Revision {
    /// The recorded actor, else the source's name (`file`, `canary`,
    /// `failover`, and `admin` for revisions older than actors).
    pub fn actor(&self) -> String {
        self.actor.clone().unwrap_or_else(|| {
            match self.source {
                Source::File => "file",
                Source::Admin => "admin",
                Source::Canary => "canary",
                Source::Failover => "failover",
            }
            .to_string()
        })
    }
}

/// An admin caller, recorded on the revisions its change makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// A token's name or a client certificate's subject.
    pub actor: String,
    /// The caller's address.
    pub client: Option<String>,
}

/// The numbered revisions, newest last (at most [`MAX_HISTORY`]), and the
/// latest number: numbers are gap-free, one per recorded change.
#[derive(Debug, Default)]
pub struct History {
    revisions: VecDeque<Revision>,
    latest: u64,
    /// In a fleet the history is the fleet's ([`History::replace`]): this
    /// instance's own events (reloads, failovers) are logged, not numbered.
    shared: bool,
}

impl History {
    /// The history saved in a state file.
    pub fn restored(persisted: &Persisted) -> History {
        History {
            revisions: persisted.history.iter().cloned().collect(),
            latest: persisted.revision,
            shared: false,
        }
    }

    /// From now on the history is the fleet's: see [`History::replace`].
    pub fn share(&mut self) {
        self.shared = true;
    }

    /// Whether the history is a fleet's.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Takes the fleet's history (oldest first) and latest revision whole.
    pub fn replace(&mut self, revisions: Vec<Revision>, latest: u64) {
        let skip = revisions.len().saturating_sub(MAX_HISTORY);
        self.revisions = revisions.into_iter().skip(skip).collect();
        self.latest = latest;
    }

    /// Marks the revisions numbered after `after` as made by `caller`.
    pub fn attribute(&mut self, after: u64, caller: &Caller) {
        for revision in self.revisions.iter_mut().rev() {
            if revision.revision <= after {
                break;
            }
            revision.actor = Some(caller.actor.clone());
            revision.client = caller.client.clone();
        }
    }

    /// The revisions numbered after `after`, oldest first.
    pub fn since(&self, after: u64) -> Vec<Revision> {
        let newer = self
            .revisions
            .iter()
            .rev()
            .take_while(|r| r.revision > after)
            .count();
        self.revisions
            .iter()
            .skip(self.revisions.len() - newer)
            .cloned()
            .collect()
    }

    /// The latest revision number.
    pub fn latest(&self) -> u64 {
        self.latest
    }

    /// Records the next revision: `route`'s desired (or, for failover,
    /// effective) `weights`, or a change of the whole config when `route` is
    /// `None`. Returns its number.
    pub fn record(
        &mut self,
        route: Option<&str>,
        weights: Option<WeightMap>,
        previous: Option<WeightMap>,
        source: Source,
        reason: String,
    ) -> u64 {
        if self.shared {
            let route = route.unwrap_or("");
            tracing::info!(%route, weights = %weights.as_ref().map(WeightMap::describe).unwrap_or_default(), ?source, %reason, "local change (not a fleet revision)");
            return self.latest;
        }
        self.latest += 1;
        if let (Some(route), Some(weights)) = (route, &weights) {
            tracing::info!(revision = self.latest, %route, weights = %weights.describe(), ?source, %reason, "weights changed");
        } else {
            tracing::info!(revision = self.latest, ?source, %reason, "config applied");
        }
        self.revisions.push_back(Revision {
            revision: self.latest,
            time: SystemTime::now(),
            route: route.map(str::to_string),
            weights,
            previous,
            source,
            reason,
            instance: None,
            zone: None,
            request_id: None,
            actor: None,
            client: None,
        });
        while self.revisions.len() > MAX_HISTORY {
            self.revisions.pop_front();
        }
        self.latest
    }

    /// Revisions newest first: at most `limit`, older than `before`, of `route`.
    /// Also returns the `before` for the next page, if there is one.
    pub fn page(
        &self,
        limit: usize,
        before: Option<u64>,
        route: Option<&str>,
    ) -> (Vec<Revision>, Option<u64>) {
        let mut matching = self
            .revisions
            .iter()
            .rev()
            .filter(|r| before.is_none_or(|b| r.revision < b))
            .filter(|r| route.is_none_or(|name| r.route.as_deref() == Some(name)));
        let page: Vec<Revision> = matching.by_ref().take(limit).cloned().collect();
        let next = matching.next().and(page.last().map(|r| r.revision));
        (page, next)
    }

    /// The weights a rollback of `route` goes back to, and its reason: those
    /// before its latest weight change, or those of revision `to`.
    pub fn rollback_target(
        &self,
        route: &str,
        to: Option<u64>,
    ) -> Result<(WeightMap, String), String> {
        // Failover entries record effective weights, never a choice to go back to.
        let of_route = |r: &&Revision| {
            r.route.as_deref() == Some(route) && r.weights.is_some() && r.source != Source::Failover
        };
        match to {
            Some(n) => {
                let target = self
                    .revisions
                    .iter()
                    .filter(of_route)
                    .find(|r| r.revision == n)
                    .ok_or_else(|| {
                        format!(
                            "revision {n} is not a weight change of route `{route}` in the history"
                        )
                    })?;
                Ok((
                    target.weights.clone().unwrap_or_default(),
                    format!("rollback to revision {n}"),
                ))
            }
            None => {
                let latest =
                    self.revisions.iter().rev().find(of_route).ok_or_else(|| {
                        format!("route `{route}` has no weight change to roll back")
                    })?;
                let previous = latest.previous.clone().ok_or_else(|| {
                    format!(
                        "revision {} of route `{route}` has no earlier weights",
                        latest.revision
                    )
                })?;
                Ok((
                    previous,
                    format!("rollback of revision {}", latest.revision),
                ))
            }
        }
    }
}

/// What the state file holds: admin overrides and the history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persisted {
    pub revision: u64,
    /// Route name → weights set through the admin API (or canary).
    pub overrides: Vec<(String, WeightMap)>,
    pub history: Vec<Revision>,
    /// Route name → the weights the config file had when this was saved, so
    /// a start-up can tell whether the file changed them meanwhile.
    #[serde(default)]
    pub file_weights: Vec<(String, WeightMap)>,
}

impl Persisted {
    /// Reads the state file. A missing file is an empty state; a corrupt one
    /// is moved aside (`.corrupt-<unix time>`) and reported, never fatal.
    pub fn load(path: &Path) -> Persisted {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Persisted::default(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the state file; starting without it");
                return Persisted::default();
            }
        };
        match serde_json::from_str(&text) {
            Ok(state) => state,
            Err(e) => {
                let stamp = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
                let moved = std::fs::rename(path, &aside);
                tracing::error!(
                    path = %path.display(), error = %e, moved_to = %aside.display(), moved_ok = moved.is_ok(),
                    "the state file is corrupt: moved aside, starting from the config file"
                );
                Persisted::default()
            }
        }
    }

    /// Writes the state file atomically: temp file, fsync, rename, fsync dir.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
            std::process::id()
        ));
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Persisted {
    /// What to save: the latest revision, the admin `overrides` (by route
    /// name) and the weights `config`'s file gives each route.
    pub fn of(
        history: &History,
        overrides: &HashMap<String, WeightMap>,
        config: &Config,
    ) -> Persisted {
        let mut overrides: Vec<(String, WeightMap)> = overrides
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        overrides.sort_by(|a, b| a.0.cmp(&b.0));
        Persisted {
            revision: history.latest,
            overrides,
            history: history.revisions.iter().cloned().collect(),
            file_weights: config
                .routes
                .iter()
                .map(|r| (r.name.clone(), file_weights(r)))
                .collect(),
        }
    }

    /// The saved admin overrides that still apply to `config`. Latest change
    /// wins: a route whose file weights changed while sluicegate was stopped
    /// takes the file's; one whose backends changed drops its override.
    pub fn overrides_for(&self, config: &Config) -> HashMap<String, WeightMap> {
        let saved_file_weights: HashMap<&str, &WeightMap> = self
            .file_weights
            .iter()
            .map(|(route, w)| (route.as_str(), w))
            .collect();
        let mut overrides = HashMap::new();
        for (route, weights) in &self.overrides {
            let file_changed = match (saved_file_weights.get(route.as_str()), config.route(route)) {
                (Some(saved), Some(rc)) => **saved != file_weights(rc),
                _ => false,
            };
            if file_changed {
                tracing::info!(%route, "the config file's weights changed while stopped: they replace the saved admin weights");
                continue;
            }
            match fits(config, route, weights) {
                Ok(()) => {
                    overrides.insert(route.clone(), weights.clone());
                }
                Err(e) => {
                    tracing::warn!(%route, error = %e, "dropping a saved admin override that no longer fits the config")
                }
            }
        }
        overrides
    }
}

/// The weights a route has in the config file.
pub fn file_weights(route: &RouteConfig) -> WeightMap {
    WeightMap(
        route
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.weight))
            .collect(),
    )
}

/// Whether saved `weights` still fit `route` in `config`.
fn fits(config: &Config, route: &str, weights: &WeightMap) -> Result<(), String> {
    let rc = config.route(route).ok_or("the route is gone")?;
    let names: Vec<&str> = rc.backends.iter().map(|b| b.name.as_str()).collect();
    if !weights.has_backends(&names) {
        return Err("the route's backends changed".into());
    }
    if weights.0.iter().map(|(_, w)| w.0).sum::<u32>() != TOTAL_WEIGHT {
        return Err("the weights do not sum to 100".into());
    }
    Ok(())
}

/// Writes the state file off the writer lock. Changes offer what to save in
/// revision order but may write in any order: only the newest offer is
/// written, and one older than the file already written is skipped, so a
/// stale save never overwrites a newer state.
#[derive(Debug, Default)]
pub struct Persister {
    /// The newest state offered and not yet taken by a writer.
    pending: Mutex<Option<(PathBuf, Persisted)>>,
    /// Held while writing: the file and revision written last.
    written: Mutex<Option<(PathBuf, u64)>>,
}

impl Persister {
    /// Forgets the revision written last: the numbers started again (a
    /// fleet whose etcd was restored from an older backup), so the next save
    /// writes even with a lower revision.
    pub fn numbering_restarted(&self) {
        *lock(&self.pending) = None;
        *lock(&self.written) = None;
    }

    /// Saves `state` to `path` unless a newer revision is (or is being)
    /// written there; returns once the newest offered state is on disk.
    pub fn save(&self, path: PathBuf, state: Persisted) {
        {
            let mut pending = lock(&self.pending);
            let newer_pending = pending
                .as_ref()
                .is_some_and(|(p, s)| *p == path && s.revision >= state.revision);
            if !newer_pending {
                *pending = Some((path, state));
            }
        }
        let mut written = lock(&self.written);
        // Another writer may have taken ours (and written it, or something newer).
        let Some((path, state)) = lock(&self.pending).take() else {
            return;
        };
        let stale = written
            .as_ref()
            .is_some_and(|(p, revision)| *p == path && *revision >= state.revision);
        if stale {
            return;
        }
        match state.save(&path) {
            Ok(()) => *written = Some((path, state.revision)),
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot write the state file");
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Both slots are replaced whole: a panic elsewhere leaves them consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_map_keeps_backend_order_in_json() {
        let w = WeightMap(vec![
            ("green".into(), Weight(2500)),
            ("blue".into(), Weight(7500)),
        ]);
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(json, r#"{"green":25.0,"blue":75.0}"#);
        assert_eq!(serde_json::from_str::<WeightMap>(&json).unwrap(), w);
        assert_eq!(w.describe(), "green=25 blue=75");
    }

    #[test]
    fn corrupt_state_file_is_moved_aside() {
        let dir = std::env::temp_dir().join(format!("sg-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        std::fs::write(&path, "{not json").unwrap();
        let state = Persisted::load(&path);
        assert_eq!(state.revision, 0);
        assert!(!path.exists());
        let moved = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(moved, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = std::env::temp_dir().join(format!("sg-history-rt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let state = Persisted {
            file_weights: vec![(
                "web".into(),
                WeightMap(vec![("blue".into(), Weight(10_000))]),
            )],
            revision: 3,
            overrides: vec![(
                "web".into(),
                WeightMap(vec![("blue".into(), Weight(10_000))]),
            )],
            history: vec![Revision {
                revision: 3,
                time: humantime::parse_rfc3339("2026-11-23T10:00:00Z").unwrap(),
                route: Some("web".into()),
                weights: None,
                previous: None,
                source: Source::Admin,
                reason: "test".into(),
                instance: None,
                zone: None,
                request_id: None,
                actor: None,
                client: None,
            }],
        };
        state.save(&path).unwrap();
        let loaded = Persisted::load(&path);
        assert_eq!(loaded.revision, 3);
        assert_eq!(loaded.overrides, state.overrides);
        assert_eq!(loaded.history, state.history);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sg-history-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn at_revision(revision: u64) -> Persisted {
        Persisted {
            revision,
            ..Persisted::default()
        }
    }

    #[test]
    fn a_stale_save_never_overwrites_a_newer_state_file() {
        let dir = temp_dir("stale");
        let path = dir.join("state.json");
        let persister = Persister::default();
        persister.save(path.clone(), at_revision(5));
        persister.save(path.clone(), at_revision(3));
        assert_eq!(Persisted::load(&path).revision, 5);
        persister.save(path.clone(), at_revision(6));
        assert_eq!(Persisted::load(&path).revision, 6);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn after_the_numbering_restarts_a_lower_revision_is_written() {
        let dir = temp_dir("restarted");
        let path = dir.join("state.json");
        let persister = Persister::default();
        persister.save(path.clone(), at_revision(9));
        persister.numbering_restarted();
        persister.save(path.clone(), at_revision(2));
        assert_eq!(Persisted::load(&path).revision, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn saves_racing_in_any_order_leave_the_newest_state() {
        let dir = temp_dir("race");
        let path = dir.join("state.json");
        let persister = std::sync::Arc::new(Persister::default());
        let writers: Vec<_> = (1..=16u64)
            .rev()
            .map(|revision| {
                let (persister, path) = (std::sync::Arc::clone(&persister), path.clone());
                std::thread::spawn(move || persister.save(path, at_revision(revision)))
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(Persisted::load(&path).revision, 16);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn revisions_are_numbered_without_gaps_and_paged_newest_first() {
        let mut history = History::restored(&at_revision(7));
        let blue = WeightMap(vec![("blue".into(), Weight(10_000))]);
        assert_eq!(
            history.record(None, None, None, Source::File, "start".into()),
            8
        );
        assert_eq!(
            history.record(
                Some("web"),
                Some(blue.clone()),
                None,
                Source::Admin,
                "a".into()
            ),
            9
        );
        let (page, next) = history.page(1, None, None);
        assert_eq!((page[0].revision, next), (9, Some(9)));
        let (page, next) = history.page(1, Some(9), None);
        assert_eq!((page[0].revision, next), (8, None));
        assert!(
            history.rollback_target("web", None).is_err(),
            "no earlier weights"
        );
        assert_eq!(
            history.rollback_target("web", Some(9)),
            Ok((blue, "rollback to revision 9".to_string()))
        );
    }
}
