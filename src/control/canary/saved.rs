//! The canary state saved beside the state file, so a restart brings each
//! canary back at its step.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CanaryPhase, Controller, Run, StepPlan, step_weights};

impl Controller {
    /// Restores the runs saved beside the state file. A canary whose plan or
    /// weights no longer match comes back paused, or not at all.
    pub(super) fn restore(&self) {
        let Some(path) = self.saved.as_deref() else {
            return;
        };
        let saved: Vec<SavedRun> = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(saved) => saved,
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "the canary state file is corrupt: starting without it");
                    return;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot read the canary state file");
                return;
            }
        };
        let snapshot = self.state.snapshot_full();
        let mut runs = self.lock();
        for saved in saved {
            let Some(route) = snapshot.route(&saved.route) else {
                continue;
            };
            let Some(config) = route.config.canary.as_ref() else {
                continue;
            };
            if StepPlan::of(config) != saved.plan || saved.step >= saved.plan.steps.len() {
                tracing::warn!(route = %saved.route, "[routes.canary] changed since the canary was saved: not restored");
                continue;
            }
            let mut run = Run::new(
                route,
                saved.plan,
                saved.phase,
                saved.step,
                snapshot.revision,
            );
            run.reason = saved.reason;
            run.passed = saved.passed || run.phase == CanaryPhase::AwaitingApproval;
            if run.phase.in_progress() {
                let fits = step_weights(route, &run.plan, run.plan.weight(run.step))
                    .is_ok_and(|w| w == route.weights());
                if run.phase == CanaryPhase::Running && fits {
                    run.reason = "resumed after a restart: the step's window started again".into();
                } else if !fits {
                    run.phase = CanaryPhase::Paused;
                    run.reason = format!(
                        "paused after a restart: the route's weights are not those of step {}; resume re-applies them",
                        run.plan.step_text(run.step)
                    );
                }
            }
            run.announced = Some((run.phase, run.step));
            tracing::info!(route = %saved.route, state = run.phase.as_str(), step = run.step + 1, "canary restored");
            runs.insert(saved.route, run);
        }
    }

    /// Saves every run beside the state file (temp file, then rename).
    pub(super) fn save(&self, runs: &HashMap<String, Run>) {
        self.save_shared(runs);
        let Some(path) = self.saved.as_deref() else {
            return;
        };
        let mut saved: Vec<SavedRun> = runs
            .iter()
            .map(|(route, run)| SavedRun::of(route, run))
            .collect();
        saved.sort_by(|a, b| a.route.cmp(&b.route));
        if let Err(error) = write_atomically(path, &saved) {
            tracing::error!(path = %path.display(), %error, "cannot write the canary state file");
        }
    }
}

/// One run as saved beside the state file (and, in a fleet, in etcd).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SavedRun {
    pub(super) route: String,
    pub(super) plan: StepPlan,
    pub(super) phase: CanaryPhase,
    pub(super) step: usize,
    pub(super) reason: String,
    /// The revision that began the step (tags the fleet's step counts).
    #[serde(default)]
    pub(super) step_revision: u64,
    /// The step passed and waits for an approval (also while paused).
    #[serde(default)]
    pub(super) passed: bool,
}

impl SavedRun {
    pub(super) fn of(route: &str, run: &Run) -> SavedRun {
        SavedRun {
            route: route.to_string(),
            plan: run.plan.clone(),
            phase: run.phase,
            step: run.step,
            reason: run.reason.clone(),
            step_revision: run.step_revision,
            passed: run.passed,
        }
    }
}

/// `sluicegate.state.json` → `sluicegate.state.canary.json`.
pub(super) fn path_beside(state_file: &Path) -> PathBuf {
    state_file.with_extension("canary.json")
}

fn write_atomically(path: &Path, saved: &[SavedRun]) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
