//! What a canary run follows and where it is: the [`StepPlan`] (backends
//! and steps from `[routes.canary]`), the [`CanaryPhase`], and the weights
//! of a step.

use serde::{Deserialize, Serialize};

use crate::config::{CanaryConfig, TOTAL_WEIGHT, Weight};
use crate::control::Route;
use crate::control::history::WeightMap;

/// Where a route's canary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryPhase {
    Idle,
    Running,
    /// An `approve_at` step passed: weights held, no judging, until approved.
    AwaitingApproval,
    Paused,
    Succeeded,
    Failed,
    Aborted,
}

impl CanaryPhase {
    /// The name in the API: `idle`, `running`, … `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryPhase::Idle => "idle",
            CanaryPhase::Running => "running",
            CanaryPhase::AwaitingApproval => "awaiting_approval",
            CanaryPhase::Paused => "paused",
            CanaryPhase::Succeeded => "succeeded",
            CanaryPhase::Failed => "failed",
            CanaryPhase::Aborted => "aborted",
        }
    }

    /// Running, awaiting approval or paused: a canary in progress.
    pub(super) fn in_progress(self) -> bool {
        matches!(
            self,
            CanaryPhase::Running | CanaryPhase::AwaitingApproval | CanaryPhase::Paused
        )
    }

    /// Succeeded, failed or aborted: a canary that ended.
    pub(super) fn ended(self) -> bool {
        matches!(
            self,
            CanaryPhase::Succeeded | CanaryPhase::Failed | CanaryPhase::Aborted
        )
    }
}

/// The backends and steps (basis points) a run follows; a reload that
/// changes them ends the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StepPlan {
    pub(super) baseline: String,
    pub(super) canary: String,
    pub(super) steps: Vec<u32>,
}

impl StepPlan {
    pub(super) fn of(config: &CanaryConfig) -> StepPlan {
        StepPlan {
            baseline: config.baseline.clone(),
            canary: config.canary.clone(),
            steps: config.steps.iter().map(|w| w.0).collect(),
        }
    }

    /// The canary's weight at step `index`.
    pub(super) fn weight(&self, index: usize) -> Weight {
        Weight(self.steps.get(index).copied().unwrap_or(0))
    }

    /// `3/6: 25 %`.
    pub(super) fn step_text(&self, index: usize) -> String {
        format!(
            "{}/{}: {} %",
            index + 1,
            self.steps.len(),
            self.weight(index)
        )
    }
}

/// The route's weights with the canary at `canary_weight`, the baseline
/// taking the rest and every other backend keeping its desired weight.
pub(super) fn step_weights(
    route: &Route,
    plan: &StepPlan,
    canary_weight: Weight,
) -> Result<WeightMap, String> {
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
