//! Revisions: every change to the routing state, numbered, with who made it
//! and why; and the state file that keeps admin changes across restarts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::Weight;

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
            }],
        };
        state.save(&path).unwrap();
        let loaded = Persisted::load(&path);
        assert_eq!(loaded.revision, 3);
        assert_eq!(loaded.overrides, state.overrides);
        assert_eq!(loaded.history, state.history);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
