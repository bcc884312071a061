//! The verdict on one canary step: a pure function of what the step has seen
//! and the route's `[routes.canary]` thresholds, so it is tested without
//! clocks, sockets or a proxy.

use std::time::Duration;

use crate::config::CanaryConfig;

/// What one step has seen so far: the judge's whole input.
#[derive(Debug, Clone, PartialEq)]
pub struct StepWindow {
    /// How long the step has counted towards its interval (a resume restarts it).
    pub elapsed: Duration,
    /// Attempts sent to the canary backend since the step began (a request
    /// retried elsewhere counts its canary attempt).
    pub canary_requests: u64,
    /// Of those, failed: a 5xx answer, or an exchange that failed (reset,
    /// timeout), even when a retry on another backend saved the request.
    pub canary_errors: u64,
    pub canary_p99_ms: Option<f64>,
    /// `None` when the baseline served nothing in the window.
    pub baseline_p99_ms: Option<f64>,
    /// Whether any endpoint of the canary backend can take a request.
    pub canary_available: bool,
}

impl StepWindow {
    /// Failed canary attempts per attempt; `None` before the first response.
    pub fn error_rate(&self) -> Option<f64> {
        (self.canary_requests > 0)
            .then(|| (self.canary_errors as f64 / self.canary_requests as f64).min(1.0))
    }

    /// `error rate 0.20 %, p99 12 ms vs 10 ms`: the figures a step was judged on.
    pub fn figures(&self) -> String {
        let mut text = match self.error_rate() {
            Some(rate) => format!("error rate {}", percent_text(rate)),
            None => "no requests".to_string(),
        };
        match (self.canary_p99_ms, self.baseline_p99_ms) {
            (Some(canary), Some(baseline)) => {
                text.push_str(&format!(
                    ", p99 {} vs {}",
                    ms_text(canary),
                    ms_text(baseline)
                ));
            }
            (Some(canary), None) => {
                text.push_str(&format!(", p99 {}, no baseline traffic", ms_text(canary)));
            }
            (None, _) => {}
        }
        text
    }
}

/// What to do with a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough time or data yet; why, for the operator.
    Wait(String),
    /// Every check passed and the step has lasted its interval.
    Pass,
    /// A check failed: which one, with the figures.
    Fail(String),
}

/// Judges a step. A failed check fails at once (as soon as `min_requests`
/// canary responses are in, or whenever the canary has no available
/// endpoint); a pass needs `min_requests` (at least one: never promote on no
/// data) and the whole `interval`.
pub fn judge(config: &CanaryConfig, window: &StepWindow) -> Verdict {
    if !window.canary_available {
        return Verdict::Fail(format!(
            "canary backend `{}` has no available endpoint",
            config.canary
        ));
    }
    let needed = config.min_requests.max(1);
    if window.canary_requests < needed {
        return Verdict::Wait(format!(
            "waiting for canary traffic: {} of {needed} requests",
            window.canary_requests
        ));
    }
    let rate = window.error_rate().unwrap_or(0.0);
    if rate > config.max_error_rate {
        return Verdict::Fail(format!(
            "error rate {} ({} of {} attempts) is above {}",
            percent_text(rate),
            window.canary_errors,
            window.canary_requests,
            percent_text(config.max_error_rate)
        ));
    }
    // Without baseline traffic there is nothing to compare with: the p99 check passes.
    if let (Some(canary), Some(baseline)) = (window.canary_p99_ms, window.baseline_p99_ms) {
        let floor = config.latency_floor.as_secs_f64() * 1000.0;
        let limit = config.max_p99_ratio * baseline.max(floor);
        if canary > limit {
            let counted = if baseline < floor {
                format!(", counted as the latency floor {}", ms_text(floor))
            } else {
                String::new()
            };
            return Verdict::Fail(format!(
                "p99 {} is above {} × the baseline's p99 {}{counted} (limit {})",
                ms_text(canary),
                config.max_p99_ratio,
                ms_text(baseline),
                ms_text(limit)
            ));
        }
    }
    if window.elapsed < config.interval {
        let left = config.interval.saturating_sub(window.elapsed);
        return Verdict::Wait(format!(
            "checks pass so far ({}); the step's interval ends in {:.1} s",
            window.figures(),
            left.as_secs_f64()
        ));
    }
    Verdict::Pass
}

/// A rate as a percent with two decimals: `0.20 %`.
pub fn percent_text(rate: f64) -> String {
    format!("{:.2} %", rate * 100.0)
}

/// Milliseconds, one decimal below 10: `1.2 ms`, `45 ms`.
pub fn ms_text(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Weight;

    fn config() -> CanaryConfig {
        CanaryConfig {
            baseline: "blue".into(),
            canary: "green".into(),
            steps: vec![Weight(100), Weight(1000), Weight(10_000)],
            interval: Duration::from_secs(60),
            min_requests: 100,
            max_error_rate: 0.01,
            max_p99_ratio: 1.5,
            latency_floor: Duration::from_millis(2),
            approve_at: Vec::new(),
            gates: Vec::new(),
        }
    }

    fn window() -> StepWindow {
        StepWindow {
            elapsed: Duration::from_secs(60),
            canary_requests: 100,
            canary_errors: 0,
            canary_p99_ms: Some(10.0),
            baseline_p99_ms: Some(10.0),
            canary_available: true,
        }
    }

    fn fails(v: &Verdict, words: &str) -> bool {
        matches!(v, Verdict::Fail(why) if why.contains(words))
    }

    #[test]
    fn a_good_step_passes_once_interval_and_requests_are_in() {
        assert_eq!(judge(&config(), &window()), Verdict::Pass);
    }

    #[test]
    fn no_traffic_waits_however_long_the_step_ran() {
        let mut w = window();
        w.canary_requests = 0;
        w.canary_p99_ms = None;
        w.elapsed = Duration::from_secs(3600);
        assert!(matches!(judge(&config(), &w), Verdict::Wait(why) if why.contains("0 of 100")));
        // min_requests = 0 still needs one response.
        let mut c = config();
        c.min_requests = 0;
        assert!(matches!(judge(&c, &w), Verdict::Wait(_)));
        w.canary_requests = 1;
        w.canary_p99_ms = Some(1.0);
        assert_eq!(judge(&c, &w), Verdict::Pass);
    }

    #[test]
    fn a_step_waits_for_its_interval_even_with_enough_requests() {
        let mut w = window();
        w.elapsed = Duration::from_secs(59);
        assert!(matches!(judge(&config(), &w), Verdict::Wait(why) if why.contains("1.0 s")));
    }

    #[test]
    fn too_many_errors_fail_as_soon_as_min_requests_are_in() {
        let mut w = window();
        w.elapsed = Duration::from_secs(1);
        w.canary_errors = 5;
        let verdict = judge(&config(), &w);
        assert!(
            fails(&verdict, "error rate 5.00 % (5 of 100 attempts)"),
            "{verdict:?}"
        );
        // Exactly at the limit passes.
        w.canary_errors = 1;
        w.elapsed = Duration::from_secs(60);
        assert_eq!(judge(&config(), &w), Verdict::Pass);
        // Before min_requests the errors are not judged yet.
        w.canary_requests = 50;
        w.canary_errors = 50;
        assert!(matches!(judge(&config(), &w), Verdict::Wait(_)));
    }

    #[test]
    fn a_slow_canary_fails_on_the_p99_ratio() {
        let mut w = window();
        w.canary_p99_ms = Some(30.0);
        assert!(fails(&judge(&config(), &w), "p99 30 ms is above 1.5"));
        w.canary_p99_ms = Some(15.0);
        assert_eq!(judge(&config(), &w), Verdict::Pass);
    }

    #[test]
    fn p99_passes_on_the_canary_alone_without_baseline_traffic() {
        let mut w = window();
        w.baseline_p99_ms = None;
        w.canary_p99_ms = Some(5000.0);
        assert_eq!(judge(&config(), &w), Verdict::Pass);
    }

    #[test]
    fn sub_millisecond_baselines_count_as_the_floor() {
        let mut w = window();
        w.baseline_p99_ms = Some(0.2);
        w.canary_p99_ms = Some(2.9);
        assert_eq!(judge(&config(), &w), Verdict::Pass);
        w.canary_p99_ms = Some(3.1);
        assert!(fails(
            &judge(&config(), &w),
            "p99 3.1 ms is above 1.5 × the baseline's p99 0.2 ms, counted as the latency floor 2.0 ms (limit 3.0 ms)"
        ));
    }

    #[test]
    fn the_latency_floor_is_the_routes_setting() {
        let mut w = window();
        w.baseline_p99_ms = Some(0.2);
        w.canary_p99_ms = Some(7.0);
        let mut c = config();
        assert!(fails(&judge(&c, &w), "latency floor 2.0 ms"));
        c.latency_floor = Duration::from_millis(5);
        assert_eq!(judge(&c, &w), Verdict::Pass);
        c.latency_floor = Duration::from_millis(1);
        w.canary_p99_ms = Some(1.6);
        assert!(fails(&judge(&c, &w), "floor 1.0 ms (limit 1.5 ms)"));
        w.baseline_p99_ms = Some(9.0);
        w.canary_p99_ms = Some(14.0);
        let reason = judge(&c, &w);
        assert!(fails(&reason, "p99 14 ms"));
        assert!(!fails(&reason, "floor"), "{reason:?}");
    }

    #[test]
    fn an_unavailable_canary_fails_whatever_the_figures() {
        let mut w = window();
        w.canary_available = false;
        w.canary_requests = 0;
        assert!(fails(&judge(&config(), &w), "no available endpoint"));
    }

    #[test]
    fn figures_read_like_a_sentence() {
        let mut w = window();
        w.canary_requests = 1000;
        w.canary_errors = 2;
        w.canary_p99_ms = Some(12.3);
        w.baseline_p99_ms = Some(9.87);
        assert_eq!(w.figures(), "error rate 0.20 %, p99 12 ms vs 9.9 ms");
        w.baseline_p99_ms = None;
        assert_eq!(
            w.figures(),
            "error rate 0.20 %, p99 12 ms, no baseline traffic"
        );
    }
}
