//! The `canary` field of a route's JSON view (admin API, dashboard).

use serde_json::{Value, json};

use super::Controller;
use super::gates::GateResult;
use super::judge::StepWindow;
use super::plan::{CanaryPhase, StepPlan};
use crate::control::Route;

impl Controller {
    /// The `canary` field of a route's JSON view; `null` without `[routes.canary]`.
    pub fn view(&self, route: &Route) -> Value {
        let Some(config) = route.config.canary.as_ref() else {
            return Value::Null;
        };
        let plan = StepPlan::of(config);
        let steps: Vec<f64> = config.steps.iter().map(|w| w.percent()).collect();
        let approve_at: Vec<f64> = config.approve_at.iter().map(|w| w.percent()).collect();
        let weight = route.backend(&config.canary).map(|b| b.weight.percent());
        // In a fleet, an action or a tick holds the runs while it waits for
        // etcd: answer with the last view then rather than block a runtime
        // thread (the wait itself needs those threads).
        let runs = if self.in_fleet() {
            match self.runs.try_lock() {
                Ok(runs) => runs,
                Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    return self.last_view(route.name());
                }
            }
        } else {
            self.lock()
        };
        let run = runs.get(route.name()).filter(|run| run.plan == plan);
        let phase = run.map_or(CanaryPhase::Idle, |run| run.phase);
        let started = run.filter(|_| phase != CanaryPhase::Idle);
        let last = started.and_then(|run| run.last.as_ref());
        let mut view = json!({
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
            "approve_at": approve_at,
            "gates": run.map_or_else(Vec::new, |run| run.gates.iter().map(GateResult::view).collect()),
        });
        drop(runs);
        if let Some(fleet) = &self.fleet
            && let Value::Object(map) = &mut view
        {
            map.insert(
                "controller".to_string(),
                fleet.canary_controller(route.name()).into(),
            );
            self.remember_view(route.name(), &view);
        }
        view
    }
}

/// A p99 (the upper edge of a histogram bucket) to 0.01 ms.
fn round_ms(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}
