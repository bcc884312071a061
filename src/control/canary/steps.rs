//! How a run moves on: to its next step, through the gates when the route
//! has any ([`Controller::go_on`]); back to the baseline when a gate says
//! no; what a weight change after the end does to its state; and telling
//! `[[notify]]` receivers of each state or step change.

use std::collections::HashMap;

use super::gates::{GateAsk, Gating, StepChange};
use super::plan::step_weights;
use super::{CanaryPhase, Controller, Run, source_text};
use crate::config::CanaryConfig;
use crate::control::{ChangeError, Route, Snapshot};

impl Controller {
    /// Moves `run` on to step `next`: through its gates first when the
    /// route has any, else at once. True when the run's state changed.
    pub(super) fn go_on(
        &self,
        route: &Route,
        revision: Option<u64>,
        config: &CanaryConfig,
        run: &mut Run,
        change: StepChange,
    ) -> bool {
        if config.gates.is_empty() {
            return self.enter_step(route, revision, run, &change);
        }
        let next = change.next;
        let ask = GateAsk {
            route: route.name().to_string(),
            step: next + 1,
            weight: run.plan.weight(next).percent(),
            baseline: run.plan.baseline.clone(),
            canary: run.plan.canary.clone(),
        };
        match Gating::start(&config.gates, ask, change) {
            Some(gating) => {
                run.gating = Some(gating);
                run.reason = format!(
                    "checking {} gate{} before step {}",
                    config.gates.len(),
                    if config.gates.len() == 1 { "" } else { "s" },
                    run.plan.step_text(next)
                );
            }
            None => {
                run.phase = CanaryPhase::Paused;
                run.reason = "paused: no runtime to call the gates on".to_string();
            }
        }
        true
    }

    /// A run whose gates are being called: nothing until they all answered;
    /// then the next step, or a rollback when one did not answer 2xx.
    pub(super) fn follow_gates(&self, route: &Route, revision: u64, run: &mut Run) -> bool {
        let Some(gating) = run.gating.as_mut() else {
            return false;
        };
        if !gating.passed {
            let results = match gating.answers() {
                None => return false,
                Some(Ok(results)) => results,
                Some(Err(why)) => {
                    let reason = format!(
                        "canary rolled back at step {}: {why}",
                        run.plan.step_text(run.step)
                    );
                    return self.fail(route, run, reason, why);
                }
            };
            let failed = results
                .iter()
                .find(|r| !r.passed())
                .map(|r| format!("gate {} {}", r.url, r.outcome.describe()));
            gating.passed = failed.is_none();
            let next = gating.change.next;
            run.record_gates(results);
            if let Some(why) = failed {
                let reason = format!(
                    "canary rolled back before step {}: {why}",
                    run.plan.step_text(next)
                );
                return self.fail(route, run, reason, why);
            }
        }
        let Some(gating) = run.gating.as_ref() else {
            return false;
        };
        let change = gating.change.clone();
        self.enter_step(route, Some(revision), run, &change)
    }

    /// Fails the run: back to the baseline, state `failed`.
    pub(super) fn fail(&self, route: &Route, run: &mut Run, reason: String, why: String) -> bool {
        tracing::warn!(route = route.name(), %why, "canary failed: rolling back");
        if let Err(e) = self.finish(route, run, CanaryPhase::Failed, reason, None) {
            run.phase = CanaryPhase::Paused;
            run.reason = format!("{why}; the rollback failed: {e}");
            tracing::error!(route = route.name(), error = %e, "canary rollback failed");
        }
        true
    }

    /// Sets the weights of the step `change` moves to (refused when anything changed since
    /// `revision`: the next tick looks again). True when the state changed.
    fn enter_step(
        &self,
        route: &Route,
        revision: Option<u64>,
        run: &mut Run,
        change: &StepChange,
    ) -> bool {
        let next = change.next;
        let weights = match step_weights(route, &run.plan, run.plan.weight(next)) {
            Ok(weights) => weights,
            Err(why) => {
                run.gating = None;
                run.phase = CanaryPhase::Paused;
                run.reason = format!("paused: cannot go to step {}: {why}", next + 1);
                return true;
            }
        };
        let reason = change.reason.clone();
        match self.apply_weights(
            route.name(),
            weights,
            revision,
            reason,
            change.caller.as_ref(),
        ) {
            Ok(new_revision) => {
                run.begin_step(route, next);
                run.seen_revision = new_revision;
                run.step_revision = new_revision;
                run.reason = format!("step {} began", run.plan.step_text(next));
                true
            }
            Err(ChangeError::Conflict { .. }) => false,
            Err(e) => {
                run.gating = None;
                run.phase = CanaryPhase::Paused;
                run.reason = format!("paused: cannot go to step {}: {e}", next + 1);
                true
            }
        }
    }

    /// A canary that ended: a later weight change not made by it turns its
    /// state to `idle` (true then), so the view says what holds now.
    pub(super) fn notice_after_end(&self, route: &str, run: &mut Run) -> bool {
        let revision = self.state.revision();
        if revision <= run.seen_revision {
            return false;
        }
        let foreign = self.foreign_change(route, run.seen_revision, revision);
        run.seen_revision = revision;
        let Some(foreign) = foreign else {
            return false;
        };
        run.reason = format!(
            "weights changed by {} after the canary {}: revision {} ({}: {})",
            foreign.actor(),
            run.phase.as_str(),
            foreign.revision,
            source_text(foreign.source),
            foreign.reason
        );
        run.phase = CanaryPhase::Idle;
        true
    }

    /// Tells the `[[notify]]` receivers of every run this instance controls
    /// whose state or step changed since last told.
    pub(super) fn announce(&self, runs: &mut HashMap<String, Run>, snapshot: &Snapshot) {
        for (name, run) in runs.iter_mut() {
            let now = (run.phase, run.step);
            if run.announced == Some(now) || !self.controls(name) {
                continue;
            }
            run.announced = Some(now);
            let weight = snapshot
                .route(name)
                .and_then(|r| r.backend(&run.plan.canary))
                .map_or(0.0, |b| b.weight.percent());
            let step = (run.phase != CanaryPhase::Idle).then_some(run.step + 1);
            self.state
                .notifier()
                .canary(name, run.phase.as_str(), step, weight, &run.reason);
        }
    }
}
