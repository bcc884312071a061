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
//! Admin calls ([`Controller::act`]) start, pause, resume and abort.
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
//! `judge` (judge.rs) holds the verdict; `saved` (saved.rs) the file beside
//! the state file.

mod judge;
mod saved;

pub use judge::{P99_FLOOR_MS, StepWindow, Verdict, judge};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{CanaryConfig, TOTAL_WEIGHT, Weight};
use crate::control::history::{Revision, Source, WeightMap};
use crate::control::{Backend, Change, ChangeError, Route, State};
use crate::telemetry::stats::{self, Summary};

/// Bounds of the tick period (`interval / 10`).
pub const MIN_TICK: Duration = Duration::from_millis(50);
pub const MAX_TICK: Duration = Duration::from_secs(1);

/// Where a route's canary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Idle,
    Running,
    Paused,
    Succeeded,
    Failed,
    Aborted,
}

impl Phase {
    /// The name in the API: `idle`, `running`, … `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
        }
    }

    /// Running or paused: a canary in progress.
    fn in_progress(self) -> bool {
        matches!(self, Phase::Running | Phase::Paused)
    }
}

/// What an operator asks of a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Pause,
    Resume,
    Abort,
}

impl Action {
    /// `start`, `pause`, `resume` or `abort`.
    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "start" => Some(Action::Start),
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "abort" => Some(Action::Abort),
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

/// The backends and steps (basis points) a run follows; a reload that
/// changes them ends the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Plan {
    baseline: String,
    canary: String,
    steps: Vec<u32>,
}

impl Plan {
    fn of(config: &CanaryConfig) -> Plan {
        Plan {
            baseline: config.baseline.clone(),
            canary: config.canary.clone(),
            steps: config.steps.iter().map(|w| w.0).collect(),
        }
    }

    /// The canary's weight at step `index`.
    fn weight(&self, index: usize) -> Weight {
        Weight(self.steps.get(index).copied().unwrap_or(0))
    }

    /// `3/6: 25 %`.
    fn step_text(&self, index: usize) -> String {
        format!(
            "{}/{}: {} %",
            index + 1,
            self.steps.len(),
            self.weight(index)
        )
    }
}

/// One route's canary.
#[derive(Debug)]
struct Run {
    plan: Plan,
    phase: Phase,
    /// Index into `plan.steps` of the step in force.
    step: usize,
    /// Wall-clock start of the step, for the API.
    step_started: SystemTime,
    /// When the step's interval started counting (a resume restarts it).
    clock_started: Instant,
    /// Where the step's window starts in the backends' counters.
    marks: Marks,
    /// The window at the latest tick.
    last: Option<StepWindow>,
    reason: String,
    /// Revisions up to this one are accounted for: a later weight change of
    /// the route not made by the canary pauses it.
    seen_revision: u64,
}

/// The canary's totals and both backends' latency series when a step began.
#[derive(Debug, Clone)]
struct Marks {
    canary_totals: (u64, u64),
    interval: u64,
    canary_latency: Option<Summary>,
    baseline_latency: Option<Summary>,
}

impl Marks {
    fn take(route: &Route, plan: &Plan) -> Marks {
        let interval = stats::current_interval();
        let latency = |name: &str| {
            route
                .backend(name)
                .map(|b| b.metrics.series.summary(interval, interval + 1))
        };
        Marks {
            canary_totals: route
                .backend(&plan.canary)
                .map_or((0, 0), |b| b.metrics.totals()),
            interval,
            canary_latency: latency(&plan.canary),
            baseline_latency: latency(&plan.baseline),
        }
    }
}

impl Run {
    fn new(route: &Route, plan: Plan, phase: Phase, step: usize, seen_revision: u64) -> Run {
        let marks = Marks::take(route, &plan);
        Run {
            plan,
            phase,
            step,
            step_started: SystemTime::now(),
            clock_started: Instant::now(),
            marks,
            last: None,
            reason: String::new(),
            seen_revision,
        }
    }

    /// The step's window now.
    fn measure(&self, route: &Route, now: Instant) -> StepWindow {
        let canary = route.backend(&self.plan.canary);
        let (responses, errors) = canary.map_or((0, 0), |b| b.metrics.totals());
        let requests = responses.saturating_sub(self.marks.canary_totals.0);
        let errors = errors
            .saturating_sub(self.marks.canary_totals.1)
            .min(requests);
        let current = stats::current_interval();
        let start = self.marks.interval;
        // The series keeps 15 minutes: past that the window is its last 15 minutes.
        let mark_kept = current.saturating_sub(start) < stats::SLOTS as u64;
        let latency = |backend: Option<&Backend>, mark: &Option<Summary>| {
            let total = backend?.metrics.series.summary(start, current + 1);
            let window = match mark {
                Some(mark) if mark_kept => total.since(mark),
                _ => total,
            };
            window.p99_ms()
        };
        StepWindow {
            elapsed: now.saturating_duration_since(self.clock_started),
            canary_requests: requests,
            canary_errors: errors,
            canary_p99_ms: latency(canary, &self.marks.canary_latency),
            baseline_p99_ms: latency(
                route.backend(&self.plan.baseline),
                &self.marks.baseline_latency,
            ),
            canary_available: canary.is_some_and(Backend::any_available),
        }
    }

    /// Starts step `index` now.
    fn begin_step(&mut self, route: &Route, index: usize) {
        self.step = index;
        self.step_started = SystemTime::now();
        self.clock_started = Instant::now();
        self.marks = Marks::take(route, &self.plan);
        self.last = None;
    }
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
}

impl Controller {
    /// A controller for `state`, restoring canaries saved beside its state file.
    pub fn new(state: Arc<State>) -> Controller {
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
        };
        controller.restore();
        controller
    }

    /// Carries out `action` on `route`'s canary.
    pub fn act(&self, route: &str, action: Action) -> Result<(), CanaryError> {
        let snapshot = self.state.snapshot_full();
        let r = snapshot
            .route(route)
            .ok_or_else(|| CanaryError::UnknownRoute(route.to_string()))?;
        let config = r
            .config
            .canary
            .as_ref()
            .ok_or_else(|| CanaryError::NotConfigured(route.to_string()))?;
        let plan = Plan::of(config);
        let mut runs = self.lock();
        // A run that followed an older config counts as idle.
        let run = runs.get_mut(route).filter(|run| run.plan == plan);
        let phase = run.as_ref().map_or(Phase::Idle, |run| run.phase);
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
                let run = self.start(r, plan)?;
                runs.insert(route.to_string(), run);
            }
            (Action::Pause, Some(run)) if phase == Phase::Running => {
                run.phase = Phase::Paused;
                run.reason = format!(
                    "paused through the admin API at step {}",
                    run.plan.step_text(run.step)
                );
                tracing::info!(%route, step = run.step + 1, "canary paused");
            }
            (Action::Pause, _) => return Err(wrong_state("only a running canary pauses")),
            (Action::Resume, Some(run)) if phase == Phase::Paused => self.resume(r, run)?,
            (Action::Resume, _) => return Err(wrong_state("only a paused canary resumes")),
            (Action::Abort, Some(run)) if phase.in_progress() => {
                let reason = format!(
                    "canary aborted through the admin API at step {}",
                    run.plan.step_text(run.step)
                );
                self.finish(r, run, Phase::Aborted, reason)
                    .map_err(CanaryError::Invalid)?;
            }
            (Action::Abort, _) => {
                return Err(wrong_state("only a running or paused canary aborts"));
            }
        }
        self.save(&runs);
        self.wake.notify_one();
        Ok(())
    }

    fn start(&self, route: &Route, plan: Plan) -> Result<Run, CanaryError> {
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
            .apply_weights(route.name(), weights, None, reason)
            .map_err(change_error)?;
        tracing::info!(
            route = route.name(),
            steps = plan.steps.len(),
            "canary started"
        );
        let mut run = Run::new(route, plan, Phase::Running, 0, revision);
        run.reason = "started".to_string();
        Ok(run)
    }

    /// Running again from the paused step: its weights back if someone changed
    /// them, its interval from the start, its counters kept.
    fn resume(&self, route: &Route, run: &mut Run) -> Result<(), CanaryError> {
        let weights = step_weights(route, &run.plan, run.plan.weight(run.step))
            .map_err(CanaryError::Invalid)?;
        run.seen_revision = if route.weights() == weights {
            self.state.revision()
        } else {
            let reason = format!("canary step {} (resumed)", run.plan.step_text(run.step));
            self.apply_weights(route.name(), weights, None, reason)
                .map_err(change_error)?
        };
        run.phase = Phase::Running;
        run.clock_started = Instant::now();
        run.reason = "resumed".to_string();
        tracing::info!(route = route.name(), step = run.step + 1, "canary resumed");
        Ok(())
    }

    /// Baseline back to 100 % (canary 0) and the run ends in `phase`.
    fn finish(
        &self,
        route: &Route,
        run: &mut Run,
        phase: Phase,
        reason: String,
    ) -> Result<(), String> {
        let weights = step_weights(route, &run.plan, Weight(0))?;
        let revision = self
            .apply_weights(route.name(), weights, None, reason.clone())
            .map_err(|e| e.to_string())?;
        run.seen_revision = revision;
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
            let plan = Plan::of(config);
            if run.plan != plan {
                if run.phase.in_progress() {
                    tracing::warn!(route = %name, "[routes.canary] backends or steps changed: canary stopped");
                    run.reason = format!(
                        "stopped at step {}: the config's [routes.canary] backends or steps changed; weights left as they are",
                        run.plan.step_text(run.step)
                    );
                    run.phase = Phase::Idle;
                    run.plan = plan;
                    changed = true;
                } else {
                    changed = true;
                    return false;
                }
            }
            true
        });
        for (name, run) in runs.iter_mut() {
            if run.phase != Phase::Running {
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
        drop(runs);
        tick_period(&snapshot.routes)
    }

    /// One look at a running canary; true when its state changed.
    fn advance(&self, route: &Route, revision: u64, config: &CanaryConfig, run: &mut Run) -> bool {
        if revision > run.seen_revision {
            if let Some(foreign) = self.foreign_change(route.name(), run.seen_revision, revision) {
                run.phase = Phase::Paused;
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
        let window = run.measure(route, Instant::now());
        let verdict = judge(config, &window);
        let figures = window.figures();
        run.last = Some(window);
        match verdict {
            Verdict::Wait(why) => {
                run.reason = why;
                false
            }
            Verdict::Pass if run.step + 1 >= run.plan.steps.len() => {
                run.phase = Phase::Succeeded;
                run.reason = format!(
                    "promoted: step {} passed ({figures})",
                    run.plan.step_text(run.step)
                );
                tracing::info!(route = route.name(), %figures, "canary promoted");
                true
            }
            Verdict::Pass => {
                let next = run.step + 1;
                let weights = match step_weights(route, &run.plan, run.plan.weight(next)) {
                    Ok(weights) => weights,
                    Err(why) => {
                        run.phase = Phase::Paused;
                        run.reason = format!("paused: cannot go to step {}: {why}", next + 1);
                        return true;
                    }
                };
                let reason = format!("canary step {} ({figures})", run.plan.step_text(next));
                // If anything changed since `revision`, look again at the next tick.
                match self.apply_weights(route.name(), weights, Some(revision), reason) {
                    Ok(new_revision) => {
                        run.begin_step(route, next);
                        run.seen_revision = new_revision;
                        run.reason = format!("step {} began", run.plan.step_text(next));
                        true
                    }
                    Err(ChangeError::Conflict { .. }) => false,
                    Err(e) => {
                        run.phase = Phase::Paused;
                        run.reason = format!("paused: cannot go to step {}: {e}", next + 1);
                        true
                    }
                }
            }
            Verdict::Fail(why) => {
                let reason = format!(
                    "canary rolled back at step {}: {why}",
                    run.plan.step_text(run.step)
                );
                tracing::warn!(route = route.name(), %why, "canary failed: rolling back");
                if let Err(e) = self.finish(route, run, Phase::Failed, reason) {
                    run.phase = Phase::Paused;
                    run.reason = format!("{why}; the rollback failed: {e}");
                    tracing::error!(route = route.name(), error = %e, "canary rollback failed");
                }
                true
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

    /// The `canary` field of a route's JSON view; `null` without `[routes.canary]`.
    pub fn view(&self, route: &Route) -> Value {
        let Some(config) = route.config.canary.as_ref() else {
            return Value::Null;
        };
        let plan = Plan::of(config);
        let steps: Vec<f64> = config.steps.iter().map(|w| w.percent()).collect();
        let weight = route.backend(&config.canary).map(|b| b.weight.percent());
        let runs = self.lock();
        let run = runs.get(route.name()).filter(|run| run.plan == plan);
        let phase = run.map_or(Phase::Idle, |run| run.phase);
        let started = run.filter(|_| phase != Phase::Idle);
        let last = started.and_then(|run| run.last.as_ref());
        json!({
            "state": phase.as_str(),
            "step": started.map(|run| run.step + 1),
            "steps": steps,
            "weight": weight,
            "step_started": started
                .map(|run| humantime::format_rfc3339_millis(run.step_started).to_string()),
            "step_requests": started.map(|_| last.map_or(0, |w| w.canary_requests)),
            "min_requests": config.min_requests,
            "error_rate": last.and_then(StepWindow::error_rate),
            "p99_ms": last.and_then(|w| w.canary_p99_ms).map(round_ms),
            "baseline_p99_ms": last.and_then(|w| w.baseline_p99_ms).map(round_ms),
            "reason": run.map(|run| run.reason.as_str()).filter(|r| !r.is_empty()),
        })
    }

    /// Sets `route`'s weights as a canary revision.
    fn apply_weights(
        &self,
        route: &str,
        weights: WeightMap,
        if_revision: Option<u64>,
        reason: String,
    ) -> Result<u64, ChangeError> {
        self.state
            .apply(Change::SetWeights {
                route: route.to_string(),
                weights,
                if_revision,
                source: Source::Canary,
                reason,
            })
            .map(|applied| applied.revision)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Run>> {
        // The map stays consistent between statements; a panic elsewhere
        // should not stop every later canary action.
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the controller's task; it runs until `stop`.
pub fn spawn(controller: Arc<Controller>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
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
fn tick_period(routes: &[Route]) -> Duration {
    routes
        .iter()
        .filter_map(|r| r.config.canary.as_ref())
        .map(|c| (c.interval / 10).clamp(MIN_TICK, MAX_TICK))
        .min()
        .unwrap_or(MAX_TICK)
}

/// The route's weights with the canary at `canary_weight`, the baseline
/// taking the rest and every other backend keeping its desired weight.
fn step_weights(route: &Route, plan: &Plan, canary_weight: Weight) -> Result<WeightMap, String> {
    let others: u32 = route
        .backends
        .iter()
        .filter(|b| b.name != plan.baseline && b.name != plan.canary)
        .map(|b| b.weight.0)
        .sum();
    let baseline = TOTAL_WEIGHT
        .checked_sub(others + canary_weight.0)
        .ok_or_else(|| {
            format!(
                "the route's other backends hold {} %, so `{}` cannot get {} %: set them to 0 first",
                Weight(others),
                plan.canary,
                canary_weight
            )
        })?;
    Ok(WeightMap(
        route
            .backends
            .iter()
            .map(|b| {
                let weight = if b.name == plan.canary {
                    canary_weight
                } else if b.name == plan.baseline {
                    Weight(baseline)
                } else {
                    b.weight
                };
                (b.name.clone(), weight)
            })
            .collect(),
    ))
}

/// A p99 (the upper edge of a histogram bucket) to 0.01 ms.
fn round_ms(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
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
