//! One route's canary run and its measurement: the marks taken when a step
//! began and the step's window (requests, errors, p99s) measured from them.

use std::time::SystemTime;

use tokio::time::Instant;

use super::gates::{GateResult, Gating};
use super::judge::StepWindow;
use super::plan::{CanaryPhase, StepPlan};
use crate::control::{Backend, Route};
use crate::telemetry::stats::{self, Summary};

/// One route's canary.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) plan: StepPlan,
    pub(super) phase: CanaryPhase,
    /// Index into `plan.steps` of the step in force.
    pub(super) step: usize,
    /// Wall-clock start of the step, for the API.
    pub(super) step_started: SystemTime,
    /// When the step's interval started counting (a resume restarts it).
    pub(super) clock_started: Instant,
    /// Where the step's window starts in the backends' counters.
    pub(super) marks: Marks,
    /// The window at the latest tick.
    pub(super) last: Option<StepWindow>,
    pub(super) reason: String,
    /// Revisions up to this one are accounted for: a later weight change of
    /// the route not made by the canary pauses it.
    pub(super) seen_revision: u64,
    /// In a fleet: the revision that began the step, which tags every
    /// instance's published counts of it.
    pub(super) step_revision: u64,
    /// In a fleet: when this instance last published its counts.
    pub(super) published: Option<Instant>,
    /// The step in force passed and waits for an approval (phase
    /// `awaiting_approval`, or `paused` while waiting).
    pub(super) passed: bool,
    /// The gates' calls before the next step, while they are under way.
    pub(super) gating: Option<Gating>,
    /// The latest result of each gate in this run.
    pub(super) gates: Vec<GateResult>,
    /// The phase and step last told to `[[notify]]` receivers.
    pub(super) announced: Option<(CanaryPhase, usize)>,
}

/// One instance's counts of a step's window, as published to the fleet.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct StepCounts {
    /// The revision that began the step counted.
    pub step_revision: u64,
    pub canary_requests: u64,
    pub canary_errors: u64,
    pub canary_latency: Option<Summary>,
    pub baseline_latency: Option<Summary>,
}

impl StepCounts {
    /// Adds another instance's counts of the same step.
    pub(super) fn add(&mut self, other: &StepCounts) {
        self.canary_requests += other.canary_requests;
        self.canary_errors += other.canary_errors;
        for (mine, theirs) in [
            (&mut self.canary_latency, &other.canary_latency),
            (&mut self.baseline_latency, &other.baseline_latency),
        ] {
            match (mine.as_mut(), theirs) {
                (Some(mine), Some(theirs)) => mine.add(theirs),
                (None, Some(theirs)) => *mine = Some(theirs.clone()),
                _ => {}
            }
        }
    }
}

/// The canary's attempt totals and both backends' latency series when a step began.
#[derive(Debug, Clone)]
pub(super) struct Marks {
    pub(super) canary_totals: (u64, u64),
    pub(super) interval: u64,
    pub(super) canary_latency: Option<Summary>,
    pub(super) baseline_latency: Option<Summary>,
}

impl Marks {
    pub(super) fn take(route: &Route, plan: &StepPlan) -> Marks {
        let interval = stats::current_interval();
        let latency = |name: &str| {
            route
                .backend(name)
                .map(|b| b.metrics.series.summary(interval, interval + 1))
        };
        Marks {
            canary_totals: route
                .backend(&plan.canary)
                .map_or((0, 0), |b| b.metrics.attempt_totals()),
            interval,
            canary_latency: latency(&plan.canary),
            baseline_latency: latency(&plan.baseline),
        }
    }
}

impl Run {
    pub(super) fn new(
        route: &Route,
        plan: StepPlan,
        phase: CanaryPhase,
        step: usize,
        seen_revision: u64,
    ) -> Run {
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
            step_revision: seen_revision,
            published: None,
            passed: false,
            gating: None,
            gates: Vec::new(),
            announced: None,
        }
    }

    /// Keeps `results` as each gate's latest.
    pub(super) fn record_gates(&mut self, results: Vec<GateResult>) {
        for result in results {
            match self.gates.iter_mut().find(|g| g.url == result.url) {
                Some(kept) => *kept = result,
                None => self.gates.push(result),
            }
        }
    }

    /// This instance's counts of the step's window now.
    pub(super) fn counts(&self, route: &Route) -> StepCounts {
        let canary = route.backend(&self.plan.canary);
        let (attempts, errors) = canary.map_or((0, 0), |b| b.metrics.attempt_totals());
        let requests = attempts.saturating_sub(self.marks.canary_totals.0);
        let errors = errors
            .saturating_sub(self.marks.canary_totals.1)
            .min(requests);
        let current = stats::current_interval();
        let start = self.marks.interval;
        // The series keeps 15 minutes: past that the window is its last 15 minutes.
        let mark_kept = current.saturating_sub(start) < stats::SLOTS as u64;
        let latency = |backend: Option<&Backend>, mark: &Option<Summary>| {
            let total = backend?.metrics.series.summary(start, current + 1);
            Some(match mark {
                Some(mark) if mark_kept => total.since(mark),
                _ => total,
            })
        };
        StepCounts {
            step_revision: self.step_revision,
            canary_requests: requests,
            canary_errors: errors,
            canary_latency: latency(canary, &self.marks.canary_latency),
            baseline_latency: latency(
                route.backend(&self.plan.baseline),
                &self.marks.baseline_latency,
            ),
        }
    }

    /// The step's window now, from `counts` (this instance's, or the fleet's sum).
    pub(super) fn window(&self, route: &Route, counts: &StepCounts, now: Instant) -> StepWindow {
        StepWindow {
            elapsed: now.saturating_duration_since(self.clock_started),
            canary_requests: counts.canary_requests,
            canary_errors: counts.canary_errors.min(counts.canary_requests),
            canary_p99_ms: counts.canary_latency.as_ref().and_then(Summary::p99_ms),
            baseline_p99_ms: counts.baseline_latency.as_ref().and_then(Summary::p99_ms),
            canary_available: route
                .backend(&self.plan.canary)
                .is_some_and(Backend::any_available),
        }
    }

    /// The step's window now, on this instance's counts.
    pub(super) fn measure(&self, route: &Route, now: Instant) -> StepWindow {
        self.window(route, &self.counts(route), now)
    }

    /// Starts step `index` now.
    pub(super) fn begin_step(&mut self, route: &Route, index: usize) {
        self.step = index;
        self.published = None;
        self.passed = false;
        self.gating = None;
        self.step_started = SystemTime::now();
        self.clock_started = Instant::now();
        self.marks = Marks::take(route, &self.plan);
        self.last = None;
    }
}
