//! The canary in a fleet: one instance (the one holding the route's
//! controller key) judges and steps; every instance follows the state it
//! saves in etcd, measures the step on its own traffic and publishes those
//! counts, which the controller sums. When the controller dies another
//! instance takes the key and carries on from the saved state with the step
//! counts it already has.
//!
//! The controller's etcd calls block its thread (the controller's tick runs
//! on a blocking thread in a fleet, and admin actions are called from one),
//! never a runtime worker.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::run::StepCounts;
use super::saved::SavedRun;
use super::{CanaryPhase, Controller, Run, StepPlan};
use crate::control::fleet::FleetError;
use crate::control::history::Caller;
use crate::control::{Change, ChangeError, Snapshot};

/// How often an instance publishes its counts of a running step.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

impl Controller {
    /// Whether this controller is one instance of a fleet.
    pub(super) fn in_fleet(&self) -> bool {
        self.fleet.is_some()
    }

    /// The view of `route` last answered (`null` before the first).
    pub(super) fn last_view(&self, route: &str) -> serde_json::Value {
        self.last_views
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(route)
            .cloned()
            .unwrap_or_default()
    }

    pub(super) fn remember_view(&self, route: &str, view: &serde_json::Value) {
        self.last_views
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(route.to_string(), view.clone());
    }

    /// Runs `future` to its end on this (blocking) thread.
    fn block_on<F: Future>(&self, future: F) -> Option<F::Output> {
        self.handle.as_ref().map(|handle| handle.block_on(future))
    }

    /// Whether this instance runs `route`'s canary (always, outside a fleet).
    pub(super) fn controls(&self, route: &str) -> bool {
        self.fleet.as_ref().is_none_or(|f| f.runs_canary(route))
    }

    /// Refuses an admin action on a canary another instance runs.
    pub(super) fn check_controller(&self, route: &str) -> Result<(), super::CanaryError> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        match fleet.canary_controller(route) {
            Some(who) if who == fleet.instance() => Ok(()),
            Some(who) => Err(super::CanaryError::WrongState(format!(
                "the canary of route `{route}` is run by instance {who}: send canary actions to its admin API"
            ))),
            None => Err(super::CanaryError::WrongState(format!(
                "no instance runs the canary of route `{route}` yet: try again in a moment"
            ))),
        }
    }

    /// A canary weight change: through the fleet (fenced by this instance's
    /// controller key) in a fleet, on this instance otherwise.
    pub(super) fn apply_change(
        &self,
        route: &str,
        change: Change,
        caller: Option<&Caller>,
    ) -> Result<u64, ChangeError> {
        let Some(fleet) = &self.fleet else {
            let applied = match caller {
                Some(caller) => self.state.apply_by(change, caller),
                None => self.state.apply(change),
            };
            return applied.map(|applied| applied.revision);
        };
        match self.block_on(fleet.write_canary(route, change, caller.cloned())) {
            Some(Ok(applied)) => Ok(applied.revision),
            Some(Err(FleetError::Change(e))) => Err(e),
            Some(Err(e)) => Err(ChangeError::Invalid(e.to_string())),
            None => Err(ChangeError::Invalid("no runtime for the fleet".into())),
        }
    }

    /// Saves the runs this instance controls to etcd.
    pub(super) fn save_shared(&self, runs: &HashMap<String, Run>) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        for (route, run) in runs {
            if !fleet.runs_canary(route) {
                continue;
            }
            let Ok(state) = serde_json::to_vec(&SavedRun::of(route, run)) else {
                continue;
            };
            match self.block_on(fleet.save_canary(route, state)) {
                Some(Ok(())) | None => {}
                Some(Err(error)) => {
                    tracing::warn!(%route, %error, "fleet: cannot save the canary state");
                }
            }
        }
    }

    /// Follows the state the controllers saved, for every canary route this
    /// instance does not control (and one it has just taken over with no run
    /// of its own): same phase and step keep the run and its counts; another
    /// step starts counting now.
    pub(super) fn follow_shared(&self, runs: &mut HashMap<String, Run>, snapshot: &Snapshot) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        for route in &snapshot.routes {
            let Some(config) = route.config.canary.as_ref() else {
                continue;
            };
            let name = route.name();
            if fleet.runs_canary(name) && runs.contains_key(name) {
                continue;
            }
            let Some(saved) = fleet
                .canary_state(name)
                .and_then(|bytes| serde_json::from_slice::<SavedRun>(&bytes).ok())
            else {
                continue;
            };
            if saved.plan != StepPlan::of(config) || saved.step >= saved.plan.steps.len() {
                continue;
            }
            let same = runs.get(name).is_some_and(|run| {
                run.phase == saved.phase
                    && run.step == saved.step
                    && run.step_revision == saved.step_revision
                    && run.passed == saved.passed
            });
            if same {
                if let Some(run) = runs.get_mut(name) {
                    run.reason = saved.reason;
                }
                continue;
            }
            let mut run = Run::new(
                route,
                saved.plan,
                saved.phase,
                saved.step,
                snapshot.revision,
            );
            run.step_revision = saved.step_revision;
            run.reason = saved.reason;
            run.passed = saved.passed;
            run.announced = Some((run.phase, run.step));
            runs.insert(name.to_string(), run);
        }
    }

    /// Publishes this instance's counts of every running step (at most
    /// every [`PUBLISH_EVERY`]).
    pub(super) fn publish_counts(&self, runs: &mut HashMap<String, Run>, snapshot: &Snapshot) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        for (name, run) in runs.iter_mut() {
            if run.phase != CanaryPhase::Running
                || run.published.is_some_and(|at| at.elapsed() < PUBLISH_EVERY)
            {
                continue;
            }
            let Some(route) = snapshot.route(name) else {
                continue;
            };
            let Ok(counts) = serde_json::to_vec(&run.counts(route)) else {
                continue;
            };
            run.published = Some(Instant::now());
            if let Some(Err(error)) = self.block_on(fleet.publish_canary_stats(name, counts)) {
                tracing::debug!(route = %name, %error, "fleet: cannot publish canary counts");
            }
        }
    }

    /// The step's counts over the fleet: this instance's plus every other
    /// instance's published counts of the same step.
    pub(super) fn fleet_counts(&self, route: &crate::control::Route, run: &Run) -> StepCounts {
        let mut counts = run.counts(route);
        if let Some(fleet) = &self.fleet {
            for bytes in fleet.canary_stats(route.name()) {
                if let Ok(theirs) = serde_json::from_slice::<StepCounts>(&bytes)
                    && theirs.step_revision == run.step_revision
                {
                    counts.add(&theirs);
                }
            }
        }
        counts
    }
}
