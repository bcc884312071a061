//! `[routes.mirror]` and `[routes.canary]` (with its approvals and gates):
//! what they name must be backends of the route; and `[[notify]]`, the
//! webhooks a deploy pipeline listens on.

use std::time::Duration;

use super::Checker;
use crate::config::*;

impl Checker<'_> {
    pub(super) fn mirror(
        &mut self,
        path: &str,
        raw: file::FileMirror,
        names: &[&str],
    ) -> Option<MirrorConfig> {
        let known = self.known_backend(&format!("{path}.backend"), &raw.backend, names);
        let percent = Weight::from_percent(raw.percent)
            .map_err(|e| self.error(&format!("{path}.percent"), e))
            .ok();
        let max_concurrent = raw.max_concurrent.unwrap_or(MIRROR_MAX_CONCURRENT);
        if max_concurrent == 0 {
            self.error(&format!("{path}.max_concurrent"), "must be at least 1");
        }
        Some(MirrorConfig {
            backend: known.then_some(raw.backend)?,
            percent: percent?,
            max_body: raw.max_body.unwrap_or(MIRROR_MAX_BODY),
            compare: raw.compare.unwrap_or(false),
            max_concurrent,
        })
    }

    pub(super) fn canary(
        &mut self,
        path: &str,
        raw: file::FileCanary,
        names: &[&str],
    ) -> Option<CanaryConfig> {
        let baseline_ok = self.known_backend(&format!("{path}.baseline"), &raw.baseline, names);
        let canary_ok = self.known_backend(&format!("{path}.canary"), &raw.canary, names);
        if baseline_ok && canary_ok && raw.baseline == raw.canary {
            self.error(
                &format!("{path}.canary"),
                "baseline and canary must be different backends",
            );
        }
        let steps_path = format!("{path}.steps");
        let mut steps = Vec::with_capacity(raw.steps.len());
        for (i, step) in raw.steps.iter().enumerate() {
            match Weight::from_percent(*step) {
                Ok(w) if w.0 == 0 => {
                    self.error(&format!("{steps_path}[{i}]"), "a step must be more than 0")
                }
                Ok(w) => {
                    if steps.last().is_some_and(|last: &Weight| *last >= w) {
                        self.error(
                            &format!("{steps_path}[{i}]"),
                            "steps must strictly increase",
                        );
                    }
                    steps.push(w);
                }
                Err(e) => self.error(&format!("{steps_path}[{i}]"), e),
            }
        }
        if steps.last() != Some(&Weight::FULL) {
            self.error(&steps_path, "steps must end at 100");
        }
        let max_error_rate = raw.max_error_rate.unwrap_or(0.01);
        if !(0.0..=1.0).contains(&max_error_rate) {
            self.error(&format!("{path}.max_error_rate"), "must be between 0 and 1");
        }
        let max_p99_ratio = raw.max_p99_ratio.unwrap_or(1.5);
        if !(max_p99_ratio.is_finite() && max_p99_ratio > 0.0) {
            self.error(&format!("{path}.max_p99_ratio"), "must be more than 0");
        }
        let mut approve_at = Vec::with_capacity(raw.approve_at.len());
        for (i, step) in raw.approve_at.iter().enumerate() {
            let at = format!("{path}.approve_at[{i}]");
            match Weight::from_percent(*step) {
                Ok(w) if steps.contains(&w) => approve_at.push(w),
                Ok(w) => self.error(
                    &at,
                    format!(
                        "{w} is not one of the steps ({})",
                        steps
                            .iter()
                            .map(Weight::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                Err(e) => self.error(&at, e),
            }
        }
        let gates = raw
            .gates
            .into_iter()
            .enumerate()
            .filter_map(|(i, gate)| {
                let at = format!("{path}.gates[{i}]");
                let url = self.webhook_url(&format!("{at}.url"), &gate.url);
                let timeout = self.duration(
                    &format!("{at}.timeout"),
                    gate.timeout.as_deref(),
                    DEFAULT_GATE_TIMEOUT,
                );
                Some(GateConfig { url: url?, timeout })
            })
            .collect();
        Some(CanaryConfig {
            baseline: raw.baseline,
            canary: raw.canary,
            steps,
            interval: self.duration(
                &format!("{path}.interval"),
                raw.interval.as_deref(),
                Duration::from_secs(60),
            ),
            min_requests: raw.min_requests.unwrap_or(100),
            max_error_rate,
            max_p99_ratio,
            latency_floor: self.duration(
                &format!("{path}.latency_floor"),
                raw.latency_floor.as_deref(),
                DEFAULT_LATENCY_FLOOR,
            ),
            approve_at,
            gates,
        })
    }

    pub(super) fn notify(&mut self, raw: Vec<file::FileNotify>) -> Vec<NotifyConfig> {
        raw.into_iter()
            .enumerate()
            .filter_map(|(i, receiver)| {
                let at = format!("notify[{i}]");
                let url = self.webhook_url(&format!("{at}.url"), &receiver.url);
                let (mut revisions, mut canary) =
                    (receiver.events.is_none(), receiver.events.is_none());
                for (j, event) in receiver.events.iter().flatten().enumerate() {
                    match event.as_str() {
                        "revision" => revisions = true,
                        "canary" => canary = true,
                        other => self.error(
                            &format!("{at}.events[{j}]"),
                            format!("unknown event `{other}` (events: revision, canary)"),
                        ),
                    }
                }
                let timeout = self.duration(
                    &format!("{at}.timeout"),
                    receiver.timeout.as_deref(),
                    DEFAULT_NOTIFY_TIMEOUT,
                );
                if timeout.is_zero() {
                    self.error(&format!("{at}.timeout"), "must be more than 0");
                }
                Some(NotifyConfig {
                    url: url?,
                    revisions,
                    canary,
                    timeout,
                })
            })
            .collect()
    }

    fn webhook_url(&mut self, path: &str, text: &str) -> Option<WebhookUrl> {
        WebhookUrl::parse(text)
            .map_err(|message| self.error(path, message))
            .ok()
    }

    fn known_backend(&mut self, path: &str, name: &str, names: &[&str]) -> bool {
        let known = names.contains(&name);
        if !known {
            self.error(
                path,
                format!(
                    "`{name}` is not a backend of this route (backends: {})",
                    names.join(", ")
                ),
            );
        }
        known
    }
}
