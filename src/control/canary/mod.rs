//! The automated canary controller (`[routes.canary]`, SPEC §2–§4): walks a
//! route's canary backend through its `steps`, judges each step on
//! sluicegate's own per-backend statistics, and goes back to the baseline by
//! itself on the first failed check.
//!
//! One task ([`spawn`]) calls [`Controller::tick`] every `interval / 10`
//! (50 ms to 1 s). A tick looks at each running canary: it measures the step's
//! window (canary responses and 5xx from the backend's totals, both backends'
//! p99 from their latency series, all since the step began) and hands it to
//! the pure [`judge`]. A pass moves to the next step as a new revision with
//! source `canary`; a pass of the last step (100 %) ends in `succeeded`; a fail
//! sets baseline 100 / canary 0 as a revision and ends in `failed`.
//! Admin calls ([`Controller::act_by`]) start, pause, resume, abort and
//! approve; a weight change they make records the caller as its actor
//! (steps made by the ticks stay actor `canary`).
//!
//! Deploy pipelines (SPEC §7):
//! - A step listed in `approve_at` is judged as usual; its pass puts the run
//!   in `awaiting_approval` (weights held, no judging) until an `approve`
//!   moves it on as a normal step change. A pause while waiting comes back
//!   waiting on resume; the wait is saved like any other state.
//! - `[[routes.canary.gates]]` are called before each step after the first,
//!   in a task of their own (`gates`): the run stays `running` (its reason
//!   says it is checking gates) and a later tick takes their answers. All
//!   2xx: the step begins; anything else fails the canary like a failed
//!   judge, the reason naming the gate.
//! - Every state or step change is told to the `[[notify]]` receivers.
//! - After a canary ended, a weight change not made by it (admin, file)
//!   turns its state to `idle` with the revision in the reason: the view
//!   never claims `succeeded` for weights someone has changed since.
//!
//! Choices worth knowing:
//! - Another hand on the wheel pauses the canary: a weight change of the route
//!   not made by the canary (admin set/promote/rollback, or a reload that
//!   changes the route's weights in the file) pauses it with the reason, so
//!   the controller never fights an operator. Resume re-applies the step's
//!   weights; abort goes to the baseline. Failover revisions do not count:
//!   they move effective weights, not the desired ones the canary sets.
//! - State is kept by route name across reloads. A reload that removes the
//!   route or its `[routes.canary]` drops it; one that changes `baseline`,
//!   `canary` or `steps` stops it (state `idle`, weights left as they are);
//!   new thresholds, `interval` or `min_requests` apply from the next tick.
//! - With a state file, the canary state is saved beside it
//!   (`NAME.canary.json`), so a restart resumes at the same step (its window
//!   starts again).
//! - No lock is held across an `.await`: a tick is synchronous. The
//!   controller's lock is taken before the state's writer lock, never after.
//!
//! This file holds the controller (actions and ticks); `plan` the
//! `StepPlan` and [`CanaryPhase`]; `run` a run and its measurement; `judge`
//! the pure verdict; `steps` how a run moves on (gates, approvals, notify);
//! `gates` the gate calls; `view` the JSON view; `saved` the file beside the
//! state file.

mod gates;
mod judge;
mod plan;
mod run;
mod saved;
mod shared;
mod steps;
mod view;

pub use judge::{StepWindow, Verdict, judge};
pub use plan::CanaryPhase;

use gates::StepChange;
use plan::{StepPlan, step_weights};
use run::Run;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{CanaryConfig, Weight};
use crate::control::fleet::Fleet;
use crate::control::history::{Caller, Revision, Source, WeightMap};
use crate::control::{Backend, Change, ChangeError, Route, State};

/// Bounds of the tick period (`interval / 10`).
pub const MIN_TICK: Duration = Duration::from_millis(50);
pub const MAX_TICK: Duration = Duration::from_secs(1);

/// What an operator asks of a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Pause,
    Resume,
    Abort,
    /// Lets a canary awaiting approval go on to its next step.
    Approve,
}

impl Action {
    /// `start`, `pause`, `resume`, `abort` or `approve`.
    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "start" => Some(Action::Start),
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "abort" => Some(Action::Abort),
            "approve" => Some(Action::Approve),
            _ => None,
        }
    }
}

/// Why an action was refused; each maps to one admin API status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanaryError {
    /// 404.
    #[error("no route called `{0}`")]
    UnknownRoute(String),
    /// 422.
    #[error("route `{0}` has no [routes.canary] in the config")]
    NotConfigured(String),
    /// 422: the route's weights or health do not allow it.
    #[error("{0}")]
    Invalid(String),
    /// 409: the action does not fit the canary's state.
    #[error("{0}")]
    WrongState(String),
}

/// The canary controller of one proxy: the state of every route's canary.
#[derive(Debug)]
pub struct Controller {
    state: Arc<State>,
    runs: Mutex<HashMap<String, Run>>,
    /// Woken by an action so the task picks up a new tick period at once.
    wake: Notify,
    /// Where the canary state is saved (beside the state file), if anywhere.
    saved: Option<PathBuf>,
    /// In a fleet: the canary is shared (`shared`).
    fleet: Option<Arc<Fleet>>,
    /// The runtime the fleet's calls run on, from the controller's thread.
    handle: Option<tokio::runtime::Handle>,
    /// In a fleet: each route's latest view, answered while the runs are busy.
    last_views: Mutex<HashMap<String, serde_json::Value>>,
}

impl Controller {
    /// A controller for `state`, restoring canaries saved beside its state file.
    pub fn new(state: Arc<State>) -> Controller {
        Controller::with_fleet(state, None)
    }

    /// A controller for `state`; in a fleet, one whose canaries are shared
    /// with the fleet's other instances (and not restored from a file).
    pub fn with_fleet(state: Arc<State>, fleet: Option<Arc<Fleet>>) -> Controller {
        let saved = state
            .snapshot()
            .config
            .admin
            .state_file
            .as_deref()
            .map(saved::path_beside);
        let controller = Controller {
            state,
            runs: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            saved,
            handle: fleet
                .as_ref()
                .and_then(|_| tokio::runtime::Handle::try_current().ok()),
            fleet,
            last_views: Mutex::new(HashMap::new()),
        };
        if !controller.in_fleet() {
            controller.restore();
        }
        controller
    }

    /// Carries out `action` on `route`'s canary.
    pub fn act(&self, route: &str, action: Action) -> Result<(), CanaryError> {
        self.act_by(route, action, None)
    }

    /// Carries out `action` on `route`'s canary for an admin `caller`, who is
    /// recorded on the revisions it makes.
    pub fn act_by(
        &self,
        route: &str,
        action: Action,
        caller: Option<&Caller>,
    ) -> Result<(), CanaryError> {
        let snapshot = self.state.snapshot_full();
        let r = snapshot
            .route(route)
            .ok_or_else(|| CanaryError::UnknownRoute(route.to_string()))?;
        self.check_controller(route)?;
        let config = r
            .config
            .canary
            .as_ref()
            .ok_or_else(|| CanaryError::NotConfigured(route.to_string()))?;
        let plan = StepPlan::of(config);
        let mut runs = self.lock();
        // A run that followed an older config counts as idle.
        let run = runs.get_mut(route).filter(|run| run.plan == plan);
        let phase = run.as_ref().map_or(CanaryPhase::Idle, |run| run.phase);
        let wrong_state = |what: &str| {
            CanaryError::WrongState(format!(
                "the canary of route `{route}` is {}: {what}",
                phase.as_str()
            ))
        };
        match (action, run) {
            (Action::Start, Some(_)) if phase.in_progress() => {
                return Err(wrong_state("pause, resume or abort it first"));
            }
            (Action::Start, _) => {
                let run = self.start(r, plan, caller)?;
                runs.insert(route.to_string(), run);
            }
            (Action::Pause, Some(run))
                if matches!(phase, CanaryPhase::Running | CanaryPhase::AwaitingApproval) =>
            {
                run.phase = CanaryPhase::Paused;
                run.gating = None;
                run.reason = format!(
                    "paused through the admin API at step {}",
                    run.plan.step_text(run.step)
                );
                tracing::info!(%route, step = run.step + 1, "canary paused");
            }
            (Action::Pause, _) => {
                return Err(wrong_state(
                    "only a running canary pauses (or one awaiting approval)",
                ));
            }
            (Action::Resume, Some(run)) if phase == CanaryPhase::Paused => {
                self.resume(r, run, caller)?;
            }
            (Action::Resume, _) => return Err(wrong_state("only a paused canary resumes")),
            (Action::Abort, Some(run)) if phase.in_progress() => {
                let reason = format!(
                    "canary aborted through the admin API at step {}",
                    run.plan.step_text(run.step)
                );
                self.finish(r, run, CanaryPhase::Aborted, reason, caller)
                    .map_err(CanaryError::Invalid)?;
            }
            (Action::Abort, _) => {
                return Err(wrong_state(
                    "only a running, awaiting or paused canary aborts",
                ));
            }
            (Action::Approve, Some(run)) if phase == CanaryPhase::AwaitingApproval => {
                let next = run.step + 1;
                let change = StepChange {
                    next,
                    reason: format!(
                        "canary step {} (approved by {})",
                        run.plan.step_text(next),
                        caller.map_or("the admin API", |c| c.actor.as_str())
                    ),
                    caller: caller.cloned(),
                };
                tracing::info!(%route, step = run.step + 1, "canary approved");
                run.passed = false;
                run.phase = CanaryPhase::Running;
                self.go_on(r, None, config, run, change);
            }
            (Action::Approve, _) => {
                return Err(wrong_state("only a canary awaiting approval is approved"));
            }
        }
        self.save(&runs);
        self.announce(&mut runs, &self.state.snapshot_full());
        self.wake.notify_one();
        Ok(())
    }

    fn start(
        &self,
        route: &Route,
        plan: StepPlan,
        caller: Option<&Caller>,
    ) -> Result<Run, CanaryError> {
        if !route
            .backend(&plan.canary)
            .is_some_and(Backend::any_available)
        {
            return Err(CanaryError::Invalid(format!(
                "canary backend `{}` has no available endpoint",
                plan.canary
            )));
        }
        // Every step must fit next to the other backends' weights, not just the first.
        for index in 0..plan.steps.len() {
            step_weights(route, &plan, plan.weight(index)).map_err(CanaryError::Invalid)?;
        }
        let weights = step_weights(route, &plan, plan.weight(0)).map_err(CanaryError::Invalid)?;
        let reason = format!("canary step {} (started)", plan.step_text(0));
        let revision = self
            .apply_weights(route.name(), weights, None, reason, caller)
            .map_err(change_error)?;
        tracing::info!(
            route = route.name(),
            steps = plan.steps.len(),
            "canary started"
        );
        let mut run = Run::new(route, plan, CanaryPhase::Running, 0, revision);
        run.reason = "started".to_string();
        Ok(run)
    }

    /// Running again from the paused step: its weights back if someone changed
    /// them, its interval from the start, its counters kept; or waiting for
    /// its approval again when it was paused while waiting.
    fn resume(
        &self,
        route: &Route,
        run: &mut Run,
        caller: Option<&Caller>,
    ) -> Result<(), CanaryError> {
        let weights = step_weights(route, &run.plan, run.plan.weight(run.step))
            .map_err(CanaryError::Invalid)?;
        run.seen_revision = if route.weights() == weights {
            self.state.revision()
        } else {
            let reason = format!("canary step {} (resumed)", run.plan.step_text(run.step));
            self.apply_weights(route.name(), weights, None, reason, caller)
                .map_err(change_error)?
        };
        if run.passed {
            run.phase = CanaryPhase::AwaitingApproval;
            run.reason = format!(
                "resumed: step {} passed, waiting for an approval",
                run.plan.step_text(run.step)
            );
        } else {
            run.phase = CanaryPhase::Running;
            run.clock_started = Instant::now();
            run.reason = "resumed".to_string();
        }
        tracing::info!(route = route.name(), step = run.step + 1, "canary resumed");
        Ok(())
    }

    /// Baseline back to 100 % (canary 0) and the run ends in `phase`.
    fn finish(
        &self,
        route: &Route,
        run: &mut Run,
        phase: CanaryPhase,
        reason: String,
        caller: Option<&Caller>,
    ) -> Result<(), String> {
        let weights = step_weights(route, &run.plan, Weight(0))?;
        let revision = self
            .apply_weights(route.name(), weights, None, reason.clone(), caller)
            .map_err(|e| e.to_string())?;
        run.seen_revision = revision;
        run.gating = None;
        run.passed = false;
        run.phase = phase;
        run.reason = reason;
        Ok(())
    }

    /// Looks at every running canary once; returns how long to wait before
    /// the next look.
    pub fn tick(&self) -> Duration {
        let mut runs = self.lock();
        let mut changed = false;
        let snapshot = self.state.snapshot_full();
        runs.retain(|name, run| {
            let config = snapshot.route(name).and_then(|r| r.config.canary.as_ref());
            let Some(config) = config else {
                tracing::info!(route = %name, "route or its [routes.canary] removed: canary dropped");
                changed = true;
                return false;
            };
            let plan = StepPlan::of(config);
            if run.plan != plan {
                if run.phase.in_progress() {
                    tracing::warn!(route = %name, "[routes.canary] backends or steps changed: canary stopped");
                    run.reason = format!(
                        "stopped at step {}: the config's [routes.canary] backends or steps changed; weights left as they are",
                        run.plan.step_text(run.step)
                    );
                    run.phase = CanaryPhase::Idle;
                    run.gating = None;
                    run.passed = false;
                    run.plan = plan;
                    changed = true;
                } else {
                    changed = true;
                    return false;
                }
            }
            true
        });
        self.follow_shared(&mut runs, &snapshot);
        for (name, run) in runs.iter_mut() {
            if !self.controls(name) {
                continue;
            }
            if run.phase.ended() {
                changed |= self.notice_after_end(name, run);
                continue;
            }
            if !matches!(
                run.phase,
                CanaryPhase::Running | CanaryPhase::AwaitingApproval
            ) {
                continue;
            }
            // Fresh each time: a step of another route may have just changed it.
            let snapshot = self.state.snapshot_full();
            let Some(route) = snapshot.route(name) else {
                continue;
            };
            let Some(config) = route.config.canary.as_ref() else {
                continue;
            };
            changed |= self.advance(route, snapshot.revision, config, run);
        }
        if changed {
            self.save(&runs);
        }
        self.announce(&mut runs, &self.state.snapshot_full());
        self.publish_counts(&mut runs, &self.state.snapshot_full());
        drop(runs);
        tick_period(&snapshot.routes)
    }

    /// One look at a running canary; true when its state changed.
    fn advance(&self, route: &Route, revision: u64, config: &CanaryConfig, run: &mut Run) -> bool {
        if revision > run.seen_revision {
            if let Some(foreign) = self.foreign_change(route.name(), run.seen_revision, revision) {
                run.phase = CanaryPhase::Paused;
                run.gating = None;
                run.reason = format!(
                    "paused at step {}: revision {} ({}: {}) changed the route's weights outside the canary; resume re-applies the step, abort goes back to the baseline",
                    run.plan.step_text(run.step),
                    foreign.revision,
                    source_text(foreign.source),
                    foreign.reason
                );
                tracing::warn!(
                    route = route.name(),
                    revision = foreign.revision,
                    "weights changed outside the canary: canary paused"
                );
                return true;
            }
            run.seen_revision = revision;
        }
        if run.phase == CanaryPhase::AwaitingApproval {
            return false;
        }
        if run.gating.is_some() {
            return self.follow_gates(route, revision, run);
        }
        let window = if self.in_fleet() {
            run.window(route, &self.fleet_counts(route, run), Instant::now())
        } else {
            run.measure(route, Instant::now())
        };
        let verdict = judge(config, &window);
        let figures = window.figures();
        run.last = Some(window);
        match verdict {
            Verdict::Wait(why) => {
                run.reason = why;
                false
            }
            Verdict::Pass if run.step + 1 >= run.plan.steps.len() => {
                run.phase = CanaryPhase::Succeeded;
                run.reason = format!(
                    "promoted: step {} passed ({figures})",
                    run.plan.step_text(run.step)
                );
                tracing::info!(route = route.name(), %figures, "canary promoted");
                true
            }
            Verdict::Pass => {
                let next = run.step + 1;
                let step = run.plan.step_text(run.step);
                if config.approve_at.contains(&run.plan.weight(run.step)) {
                    run.phase = CanaryPhase::AwaitingApproval;
                    run.passed = true;
                    run.reason = format!(
                        "step {step} passed ({figures}): waiting for an approval (POST /api/v1/routes/{}/canary/approve)",
                        route.name()
                    );
                    tracing::info!(route = route.name(), %figures, "canary step passed: awaiting approval");
                    return true;
                }
                let change = StepChange {
                    next,
                    reason: format!("canary step {} ({figures})", run.plan.step_text(next)),
                    caller: None,
                };
                self.go_on(route, Some(revision), config, run, change)
            }
            Verdict::Fail(why) => {
                let reason = format!(
                    "canary rolled back at step {}: {why}",
                    run.plan.step_text(run.step)
                );
                self.fail(route, run, reason, why)
            }
        }
    }

    /// The newest weight change of `route` in revisions `after+1..=upto` that
    /// the canary did not make (failover moves effective weights only).
    fn foreign_change(&self, route: &str, after: u64, upto: u64) -> Option<Revision> {
        let limit = usize::try_from(upto.saturating_sub(after)).unwrap_or(usize::MAX);
        let (revisions, _) = self.state.history(
            limit.min(crate::control::history::MAX_HISTORY),
            Some(upto + 1),
            Some(route),
        );
        revisions.into_iter().find(|r| {
            r.revision > after
                && r.weights.is_some()
                && !matches!(r.source, Source::Canary | Source::Failover)
        })
    }

    /// Sets `route`'s weights as a canary revision.
    fn apply_weights(
        &self,
        route: &str,
        weights: WeightMap,
        if_revision: Option<u64>,
        reason: String,
        caller: Option<&Caller>,
    ) -> Result<u64, ChangeError> {
        let change = Change::SetWeights {
            route: route.to_string(),
            weights,
            if_revision,
            source: Source::Canary,
            reason,
            zone: None,
        };
        self.apply_change(route, change, caller)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Run>> {
        // The map stays consistent between statements; a panic elsewhere
        // should not stop every later canary action.
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the controller's task; it runs until `stop`.
pub fn spawn(controller: Arc<Controller>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    if controller.in_fleet() {
        // In a fleet a tick waits for etcd: it runs on a blocking thread.
        let handle = tokio::runtime::Handle::current();
        return tokio::task::spawn_blocking(move || {
            loop {
                let period = controller.tick();
                let stopped = handle.block_on(async {
                    tokio::select! {
                        () = tokio::time::sleep(period) => false,
                        () = controller.wake.notified() => false,
                        _ = stop.changed() => true,
                    }
                });
                if stopped || *stop.borrow() {
                    break;
                }
            }
        });
    }
    tokio::spawn(async move {
        loop {
            let period = controller.tick();
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = controller.wake.notified() => {}
                _ = stop.changed() => break,
            }
        }
    })
}

/// `interval / 10` of the quickest canary, within [`MIN_TICK`]..=[`MAX_TICK`].
fn tick_period(routes: &[Arc<Route>]) -> Duration {
    routes
        .iter()
        .filter_map(|r| r.config.canary.as_ref())
        .map(|c| (c.interval / 10).clamp(MIN_TICK, MAX_TICK))
        .min()
        .unwrap_or(MAX_TICK)
}

fn change_error(e: ChangeError) -> CanaryError {
    match e {
        ChangeError::UnknownRoute(route) => CanaryError::UnknownRoute(route),
        other => CanaryError::Invalid(other.to_string()),
    }
}

fn source_text(source: Source) -> &'static str {
    match source {
        Source::File => "file",
        Source::Admin => "admin",
        Source::Canary => "canary",
        Source::Failover => "failover",
    }
}

#[cfg(test)]
mod tests;
