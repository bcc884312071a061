//! Reloading the config file: on a file change (notify), on SIGHUP, and on
//! `POST /api/v1/reload`. A valid file becomes one new snapshot; an invalid one
//! changes nothing and its errors are logged, counted and returned.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::config::{Config, ConfigErrors};
use crate::state::{Applied, State};

/// Bursts of file events (an editor's write + rename) are folded into one reload.
const DEBOUNCE: Duration = Duration::from_millis(25);

/// Reloads one config file into the state.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    state: Arc<State>,
    /// The bytes last read, so that events that did not change the file are ignored.
    last_seen: Mutex<Option<Vec<u8>>>,
    /// Reloads applied.
    pub ok: AtomicU64,
    /// Reloads refused because the file was invalid.
    pub errors: AtomicU64,
}

/// What a reload did.
#[derive(Debug)]
pub enum Outcome {
    Applied(Applied),
    Unchanged,
}

impl Reloader {
    /// A reloader for `path`, whose current content is already in `state`.
    pub fn new(path: PathBuf, state: Arc<State>) -> Reloader {
        let current = std::fs::read(&path).ok();
        Reloader {
            path,
            state,
            last_seen: Mutex::new(current),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// The file being watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and applies the file now, changed or not.
    pub fn reload(&self) -> Result<Applied, ConfigErrors> {
        let bytes = std::fs::read(&self.path).ok();
        self.apply(bytes)
    }

    /// Applies the file only if its bytes differ from the last ones read.
    pub fn reload_if_changed(&self) -> Result<Outcome, ConfigErrors> {
        let bytes = std::fs::read(&self.path).ok();
        let unchanged = self
            .last_seen
            .lock()
            .map(|last| *last == bytes)
            .unwrap_or(false);
        if unchanged || bytes.is_none() {
            // A missing file is the middle of a rename: the next event brings it.
            return Ok(Outcome::Unchanged);
        }
        self.apply(bytes).map(Outcome::Applied)
    }

    fn apply(&self, bytes: Option<Vec<u8>>) -> Result<Applied, ConfigErrors> {
        if let Ok(mut last) = self.last_seen.lock() {
            last.clone_from(&bytes);
        }
        match Config::load(&self.path) {
            Ok(config) => {
                let applied = self.state.apply_file(config);
                self.ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    path = %self.path.display(),
                    revision = applied.revision,
                    routes_changed = ?applied.routes_changed,
                    "config reloaded"
                );
                Ok(applied)
            }
            Err(errors) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %self.path.display(), errors = %errors, "config reload refused; the running config stays");
                Err(errors)
            }
        }
    }

    /// Watches the file's directory (editors and Kubernetes ConfigMaps replace
    /// files by rename or symlink swap) and reloads on change until `stop`.
    pub fn watch(self: &Arc<Self>, mut stop: watch::Receiver<bool>) -> notify::Result<()> {
        let (tx, mut rx) = mpsc::channel::<()>(16);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
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
            loop {
                tokio::select! {
                    event = rx.recv() => if event.is_none() { break },
                    _ = stop.changed() => break,
                }
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let _ = reloader.reload_if_changed();
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
                let _ = reloader.reload();
            }
        });
        Ok(())
    }
}
