//! Reloading the config file: on a file change (notify), on SIGHUP, and on
//! `POST /api/v1/reload`. A valid file (its CA files read too, see
//! [`crate::control::load`]) becomes one [`Change::ApplyFile`]; an invalid
//! one changes nothing and its errors are logged, counted and returned.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::config::{ConfigError, ConfigErrors, ParseMemo, content_hash};
use crate::control::{Applied, Change, State, load_with};

/// Bursts of file events (an editor's write + rename) are folded into one reload.
const DEBOUNCE: Duration = Duration::from_millis(25);

/// Reloads one config file into the state.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    state: Arc<State>,
    /// Hashes of the bytes last read and last applied: file events that did
    /// not change the file are ignored, and reloading the running file is a no-op.
    seen: Mutex<Seen>,
    /// The route tables of the last file read, so a reload parses only the
    /// ones that changed ([`ParseMemo`]).
    memo: Mutex<ParseMemo>,
    announce: Option<Announce>,
}

/// Called as a reload starts and once it is over (applied or refused): the
/// service manager's `RELOADING=1` … `READY=1` (`edge::notify`).
#[derive(Debug, Clone, Copy)]
pub struct Announce {
    pub start: fn(),
    pub done: fn(),
}

/// Calls `done` when dropped, however the reload ended.
struct Announced(Option<Announce>);

impl Announced {
    fn start(announce: Option<Announce>) -> Announced {
        if let Some(announce) = announce {
            (announce.start)();
        }
        Announced(announce)
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        if let Some(announce) = self.0 {
            (announce.done)();
        }
    }
}

#[derive(Debug, Default)]
struct Seen {
    read: Option<u64>,
    applied: Option<u64>,
}

/// What a reload did.
#[derive(Debug)]
pub enum Outcome {
    Applied(Applied),
    Unchanged,
}

impl Reloader {
    /// A reloader for `path`; `loaded` is the hash of the bytes the running
    /// config came from (a change made since is picked up at the first check).
    pub fn new(path: PathBuf, state: Arc<State>, loaded: Option<u64>) -> Reloader {
        Reloader {
            path,
            state,
            seen: Mutex::new(Seen {
                read: loaded,
                applied: loaded,
            }),
            memo: Mutex::new(ParseMemo::default()),
            announce: None,
        }
    }

    /// Announces every reload that reads the file with `announce`.
    pub fn announcing(mut self, announce: Announce) -> Reloader {
        self.announce = Some(announce);
        self
    }

    /// The file being watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file now and applies it unless it is the running one.
    pub fn reload(&self) -> Result<Applied, ConfigErrors> {
        let _announced = Announced::start(self.announce);
        let hash = std::fs::read(&self.path).ok().map(|b| content_hash(&b));
        let running = self.seen.lock().map(|s| s.applied).unwrap_or(None);
        if hash.is_some() && hash == running {
            // Nothing to apply, but a reload still ends drains and re-reads
            // certificate files (a renewed certificate, same config).
            let _ = self.state.apply(Change::UndrainAll);
            self.state.notify_unchanged_reload();
            return Ok(Applied {
                revision: self.state.revision(),
                routes_changed: Vec::new(),
            });
        }
        self.apply(hash)
    }

    /// Applies the file only if its bytes differ from the last ones read.
    pub fn reload_if_changed(&self) -> Result<Outcome, ConfigErrors> {
        let hash = std::fs::read(&self.path).ok().map(|b| content_hash(&b));
        if hash.is_none() {
            // A missing file is the middle of a rename: the next event brings it.
            return Ok(Outcome::Unchanged);
        }
        if let Ok(mut seen) = self.seen.lock() {
            if seen.read == hash {
                return Ok(Outcome::Unchanged);
            }
            if seen.applied == hash {
                // A broken edit undone: the file is the running one again.
                seen.read = hash;
                return Ok(Outcome::Unchanged);
            }
        }
        let _announced = Announced::start(self.announce);
        self.apply(hash).map(Outcome::Applied)
    }

    fn apply(&self, hash: Option<u64>) -> Result<Applied, ConfigErrors> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.read = hash;
        }
        let loaded = match self.memo.lock() {
            Ok(mut memo) => load_with(&self.path, &mut memo),
            Err(_) => load_with(&self.path, &mut ParseMemo::default()),
        };
        let applied = loaded.and_then(|prepared| {
            let loaded = prepared.config.source_hash;
            let applied = self
                .state
                .apply(Change::ApplyFile(Box::new(prepared)))
                .map_err(|e| {
                    ConfigErrors(vec![ConfigError {
                        file: self.path.display().to_string(),
                        line: 1,
                        column: 1,
                        message: e.to_string(),
                    }])
                })?;
            Ok((applied, loaded))
        });
        match applied {
            Ok((applied, loaded)) => {
                if let Ok(mut seen) = self.seen.lock() {
                    seen.applied = loaded;
                }
                self.state.telemetry().record_reload(true);
                tracing::info!(
                    path = %self.path.display(),
                    revision = applied.revision,
                    routes_changed = ?applied.routes_changed,
                    "config reloaded"
                );
                Ok(applied)
            }
            Err(errors) => {
                self.state.telemetry().record_reload(false);
                tracing::error!(path = %self.path.display(), errors = %errors, "config reload refused; the running config stays");
                Err(errors)
            }
        }
    }

    /// Gives the memo the running config's routes when the file is the
    /// one they came from, so the first reload is as quick as the others.
    fn remember(&self) {
        let Ok(src) = std::fs::read_to_string(&self.path) else {
            return;
        };
        let running = self.seen.lock().map(|s| s.applied).unwrap_or(None);
        let toml = crate::config::Format::from_path(&self.path) == crate::config::Format::Toml;
        if toml && running == Some(content_hash(src.as_bytes())) {
            let config = Arc::clone(&self.state.snapshot().config);
            if let Ok(mut memo) = self.memo.lock() {
                memo.seed(&src, &config.routes);
            }
        }
    }

    /// Watches the file's directory (editors and Kubernetes ConfigMaps replace
    /// files by rename or symlink swap) and reloads on change until `stop`.
    pub fn watch(self: &Arc<Self>, mut stop: watch::Receiver<bool>) -> notify::Result<()> {
        let (tx, mut rx) = mpsc::channel::<()>(16);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading the file (ours included) is an access event, not a
                // change: reacting to it would re-read the file forever.
                if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                    let _ = tx.try_send(());
                }
            })?;
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        let reloader = Arc::clone(self);
        tokio::spawn(async move {
            let _watcher = watcher;
            // The file may have changed between loading it and watching it.
            let first = Arc::clone(&reloader);
            let _ = tokio::task::spawn_blocking(move || {
                if matches!(first.reload_if_changed(), Ok(Outcome::Unchanged)) {
                    first.remember();
                }
            })
            .await;
            loop {
                tokio::select! {
                    event = rx.recv() => if event.is_none() { break },
                    _ = stop.changed() => break,
                }
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                // Off the workers: a large file takes tens of milliseconds
                // that requests on this worker need not wait for.
                let next = Arc::clone(&reloader);
                let _ = tokio::task::spawn_blocking(move || next.reload_if_changed()).await;
            }
        });
        Ok(())
    }

    /// Reloads on every SIGHUP until `stop`.
    #[cfg(unix)]
    pub fn reload_on_sighup(
        self: &Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reloader = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    signal = hangup.recv() => if signal.is_none() { break },
                    _ = stop.changed() => break,
                }
                tracing::info!("SIGHUP: reloading the config file");
                let next = Arc::clone(&reloader);
                let _ = tokio::task::spawn_blocking(move || next.reload()).await;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Format};

    const VALID: &str = "[[listeners]]\naddr = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"web\"\nbackends = [{ name = \"a\", endpoints = [\"127.0.0.1:3\"] }]\n";

    #[test]
    fn restoring_the_running_file_after_a_broken_edit_is_no_revision() {
        let dir = std::env::temp_dir().join(format!("sluicegate-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("restore.toml");
        std::fs::write(&path, VALID).unwrap();
        let config = Config::parse(VALID, "restore.toml", Format::Toml).unwrap();
        let state = Arc::new(State::new(config));
        let reloader = Reloader::new(
            path.clone(),
            Arc::clone(&state),
            Some(content_hash(VALID.as_bytes())),
        );
        let before = state.revision();

        std::fs::write(&path, "[[routes]\n").unwrap();
        assert!(reloader.reload_if_changed().is_err());
        std::fs::write(&path, VALID).unwrap();
        assert!(matches!(
            reloader.reload_if_changed(),
            Ok(Outcome::Unchanged)
        ));

        assert_eq!(state.revision(), before);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_with_an_unreadable_ca_is_refused_and_the_running_snapshot_stays() {
        let dir = std::env::temp_dir().join(format!("sluicegate-reload-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.toml");
        std::fs::write(&path, VALID).unwrap();
        let state = Arc::new(State::try_new(Config::load(&path).unwrap()).unwrap());
        let reloader = Reloader::new(path.clone(), Arc::clone(&state), None);
        let before = state.snapshot_full();

        let bad = VALID.replace(
            "endpoints = [\"127.0.0.1:3\"] }",
            "endpoints = [\"https://127.0.0.1:3\"], tls_ca = \"missing.pem\" }",
        );
        std::fs::write(&path, &bad).unwrap();
        let errors = reloader.reload().unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        let error = &errors.0[0];
        assert!(
            error
                .message
                .starts_with("routes[0].backends[0].tls_ca: cannot read")
                && error.message.contains("missing.pem")
                && error.line == 6,
            "{error}"
        );
        let after = state.snapshot_full();
        assert!(Arc::ptr_eq(&before, &after), "the running snapshot stays");
        assert_eq!(state.revision(), before.revision);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
