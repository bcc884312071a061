//! `[[routes.canary.gates]]`: webhooks asked before each step after the
//! first. The calls run as one task of their own ([`Gating`]); the run waits
//! in its phase while they do, and the controller's tick picks up their
//! results, so a slow gate holds up neither other canaries, nor the admin
//! API, nor a runtime thread.

use std::time::SystemTime;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::config::GateConfig;
use crate::control::history::Caller;
use crate::control::webhook::{self, Outcome};

/// One gate's answer for one step, as the canary view shows it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GateResult {
    pub(super) url: String,
    /// 1-based: the step about to begin.
    pub(super) step: usize,
    /// The canary's percent at that step.
    pub(super) weight: f64,
    pub(super) outcome: Outcome,
    /// `HTTP 200 in 12 ms`, `timed out after 10s`.
    pub(super) detail: String,
    pub(super) time: SystemTime,
}

impl GateResult {
    pub(super) fn passed(&self) -> bool {
        self.outcome.is_success()
    }

    /// One entry of the view's `gates`.
    pub(super) fn view(&self) -> Value {
        json!({
            "url": self.url,
            "step": self.step,
            "weight": self.weight,
            "passed": self.passed(),
            "detail": self.detail,
            "time": humantime::format_rfc3339_millis(self.time).to_string(),
        })
    }
}

/// What the gates are told: `{"route", "step", "weight", "baseline", "canary"}`.
#[derive(Debug, Clone)]
pub(super) struct GateAsk {
    pub(super) route: String,
    pub(super) step: usize,
    pub(super) weight: f64,
    pub(super) baseline: String,
    pub(super) canary: String,
}

/// A move to the next step, as the revision that makes it will record it.
#[derive(Debug, Clone)]
pub(super) struct StepChange {
    /// Index of the step about to begin.
    pub(super) next: usize,
    /// The reason of the revision that begins it.
    pub(super) reason: String,
    /// Who asked for it (an approval), recorded on that revision.
    pub(super) caller: Option<Caller>,
}

/// The gates' calls before one step change, under way or answered.
#[derive(Debug)]
pub(super) struct Gating {
    pub(super) change: StepChange,
    /// Every gate passed; the step change itself is still to be made (a
    /// conflicting revision retries it at the next tick).
    pub(super) passed: bool,
    answers: oneshot::Receiver<Vec<GateResult>>,
    task: AbortHandle,
}

impl Drop for Gating {
    fn drop(&mut self) {
        // A pause, abort or new step no longer needs the answers.
        self.task.abort();
    }
}

impl Gating {
    /// Calls every gate at once in a task of its own; `None` outside a runtime.
    pub(super) fn start(gates: &[GateConfig], ask: GateAsk, change: StepChange) -> Option<Gating> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let (tx, answers) = oneshot::channel();
        let gates = gates.to_vec();
        let task = handle.spawn(async move {
            let body = json!({
                "route": ask.route,
                "step": ask.step,
                "weight": ask.weight,
                "baseline": ask.baseline,
                "canary": ask.canary,
            });
            let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
            let mut calls = tokio::task::JoinSet::new();
            for (index, gate) in gates.iter().cloned().enumerate() {
                let body = body.clone();
                calls.spawn(async move {
                    let (outcome, took) = webhook::post_json(&gate.url, body, gate.timeout).await;
                    (index, gate, outcome, took)
                });
            }
            let mut results = Vec::with_capacity(gates.len());
            while let Some(joined) = calls.join_next().await {
                // A call that panicked leaves `tx` unsent: the check fails.
                let Ok((index, gate, outcome, took)) = joined else {
                    return;
                };
                let detail = match &outcome {
                    Outcome::Answered(status) => {
                        format!("HTTP {} in {} ms", status.as_u16(), took.as_millis())
                    }
                    other => other.describe(),
                };
                results.push((
                    index,
                    GateResult {
                        url: gate.url.text.clone(),
                        step: ask.step,
                        weight: ask.weight,
                        outcome,
                        detail,
                        time: SystemTime::now(),
                    },
                ));
            }
            results.sort_by_key(|(index, _)| *index);
            let _ = tx.send(results.into_iter().map(|(_, r)| r).collect());
        });
        Some(Gating {
            change,
            passed: false,
            answers,
            task: task.abort_handle(),
        })
    }

    /// The gates' answers once they are all in; `Some(Err)` when the task
    /// ended without them.
    pub(super) fn answers(&mut self) -> Option<Result<Vec<GateResult>, String>> {
        match self.answers.try_recv() {
            Ok(results) => Some(Ok(results)),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => {
                Some(Err("the gate calls ended without an answer".into()))
            }
        }
    }
}
