//! Waiting from a deploy script (SPEC §7): `canary start|resume|approve
//! ROUTE --wait` sends the action, prints the dashboard URL, then polls the
//! route and prints one line per step or state change until the canary ends;
//! `status --wait-revision N` polls until revision N is applied (in a
//! fleet, by every instance). How a wait ends is a [`WaitEnd`],
//! whose exit code the script branches on.
//!
//! Connection errors (a proxy restarting, say) are retried until the
//! timeout, each new one told on stderr; refusals (404, 401) end the wait.

use std::io::Write;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::client::{Client, Token};
use super::format::{decode, format_answer, format_confirmation, format_percent};
use super::{
    API_PREFIX, ApiCall, CanaryAction, CtlArgs, CtlCommand, CtlError, encode_component,
    pretty_json, route_path,
};
use crate::control::admin::api::{FleetAnswer, RouteAnswer};

/// Between two looks at the API: short enough to see every step of a
/// canary whose interval is a second.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Between two tries while the API cannot be reached.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What a command waits for, if it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait<'a> {
    /// The canary of `route`, after `action`, to end.
    Canary {
        action: CanaryAction,
        route: &'a str,
        timeout: Option<Duration>,
    },
    /// The proxy's applied revision to reach `revision`.
    Revision {
        revision: u64,
        timeout: Option<Duration>,
    },
}

impl<'a> Wait<'a> {
    pub(super) fn of(command: &'a CtlCommand) -> Result<Option<Wait<'a>>, CtlError> {
        Ok(match command {
            CtlCommand::Canary {
                action,
                route,
                wait: true,
                timeout,
            } => {
                if !action.can_wait() {
                    return Err(CtlError::Usage(format!(
                        "--wait goes with canary start, resume or approve, not {}",
                        action.as_str()
                    )));
                }
                Some(Wait::Canary {
                    action: *action,
                    route,
                    timeout: *timeout,
                })
            }
            CtlCommand::Status {
                wait_revision: Some(revision),
                timeout,
                ..
            } => Some(Wait::Revision {
                revision: *revision,
                timeout: *timeout,
            }),
            _ => None,
        })
    }

    fn timeout(self) -> Option<Duration> {
        match self {
            Wait::Canary { timeout, .. } | Wait::Revision { timeout, .. } => timeout,
        }
    }
}

/// How a `ctl` run ended without an error; [`WaitEnd::exit_code`] is its
/// exit status (errors are 1), as `ctl canary --help` documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum WaitEnd {
    /// Done: the canary succeeded, the revision is applied, or nothing was waited for.
    Reached,
    /// The canary failed and was rolled back.
    Failed,
    /// An operator aborted the canary.
    Aborted,
    /// The canary will not end by itself any more: why.
    Stopped(String),
    /// The timeout passed first: what was last seen.
    TimedOut(String),
}

impl WaitEnd {
    pub(super) fn exit_code(&self) -> u8 {
        match self {
            WaitEnd::Reached => 0,
            WaitEnd::Failed | WaitEnd::Stopped(_) => 1,
            WaitEnd::Aborted => 2,
            WaitEnd::TimedOut(_) => 3,
        }
    }

    /// What to say on stderr, if anything (a step line has said the rest).
    pub(super) fn message(&self) -> Option<&str> {
        match self {
            WaitEnd::Stopped(why) | WaitEnd::TimedOut(why) => Some(why),
            _ => None,
        }
    }
}

/// Where a canary is, read from the route's `canary` view.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Progress {
    pub(super) state: String,
    /// 1-based; `None` while idle.
    pub(super) step: Option<u64>,
    pub(super) steps: Option<usize>,
    /// The canary backend's weight, in percent.
    pub(super) weight: Option<f64>,
    pub(super) reason: Option<String>,
}

impl Progress {
    /// `None` for a route without `[routes.canary]` (`null`).
    pub(super) fn of(canary: &Value) -> Option<Progress> {
        let fields = canary.as_object()?;
        Some(Progress {
            state: fields.get("state")?.as_str()?.to_string(),
            step: fields.get("step").and_then(Value::as_u64),
            steps: fields.get("steps").and_then(Value::as_array).map(Vec::len),
            weight: fields.get("weight").and_then(Value::as_f64),
            reason: fields
                .get("reason")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// Same state and step: nothing worth a new line.
    fn same_place(&self, other: &Progress) -> bool {
        self.state == other.state && self.step == other.step
    }

    /// `step 2/3`, `step -/3` while idle.
    fn step_text(&self) -> String {
        let step = self.step.map_or_else(|| "-".to_string(), |s| s.to_string());
        let steps = self
            .steps
            .map_or_else(|| "?".to_string(), |s| s.to_string());
        format!("step {step}/{steps}")
    }

    /// One line: time, state, step N/M, canary weight, reason.
    pub(super) fn line(&self, time: SystemTime) -> String {
        let weight = self
            .weight
            .map_or_else(|| "-".to_string(), |w| format!("{} %", format_percent(w)));
        let mut line = format!(
            "{}  {}  {}  weight {weight}",
            humantime::format_rfc3339_seconds(time),
            self.state,
            self.step_text()
        );
        if let Some(reason) = &self.reason {
            line.push_str("  ");
            line.push_str(reason);
        }
        line
    }

    /// The same, as one JSON object (`--json`).
    fn json_line(&self, time: SystemTime) -> String {
        json!({
            "time": humantime::format_rfc3339_seconds(time).to_string(),
            "state": self.state,
            "step": self.step,
            "steps": self.steps,
            "weight": self.weight,
            "reason": self.reason,
        })
        .to_string()
    }

    /// How the wait ends in this state; `None` while the canary goes on
    /// (running, paused, awaiting approval, or a state this client does not know).
    pub(super) fn end(&self, route: &str) -> Option<WaitEnd> {
        match self.state.as_str() {
            "succeeded" => Some(WaitEnd::Reached),
            "failed" => Some(WaitEnd::Failed),
            "aborted" => Some(WaitEnd::Aborted),
            "idle" => Some(WaitEnd::Stopped(format!(
                "the canary of {route} went idle: a reload changed its backends or steps, \
                 which ends a run"
            ))),
            _ => None,
        }
    }
}

/// stdout for answers and step lines, stderr for retries; each line is
/// flushed at once, so a CI log shows it when it happens.
pub(super) struct Printer<O, E> {
    pub(super) out: O,
    pub(super) err: E,
}

impl<O: Write, E: Write> Printer<O, E> {
    pub(super) fn new(out: O, err: E) -> Printer<O, E> {
        Printer { out, err }
    }

    /// Prints `text` (newline-terminated or not) on stdout. A closed pipe
    /// (`| head`) is not worth failing a deploy for.
    fn print(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = self.out.write_all(b"\n");
        }
        let _ = self.out.flush();
    }

    fn warn(&mut self, text: &str) {
        let _ = writeln!(self.err, "sluicegate ctl: {text}");
        let _ = self.err.flush();
    }
}

/// Runs `args.command`, which waits for `wait` (see [`Wait::of`]).
pub(super) async fn execute<O: Write, E: Write>(
    args: &CtlArgs,
    wait: Wait<'_>,
    token: Option<Token>,
    printer: &mut Printer<O, E>,
) -> Result<WaitEnd, CtlError> {
    let deadline = wait.timeout().map(|t| Instant::now() + t);
    let client = args.client(token)?;
    let call = ApiCall::for_command(&args.command)?;
    match wait {
        Wait::Canary { route, .. } => {
            let answer = client.send(&call).await?;
            let first: RouteAnswer = decode(&answer)?;
            let dashboard = format!("{}/#route={}", client.page_url(), encode_component(route));
            if args.json {
                // One line, like the step lines after it.
                printer.print(&decode::<Value>(&answer)?.to_string());
                printer.print(&json!({ "dashboard": dashboard }).to_string());
            } else {
                printer.print(&format_confirmation(&first));
                printer.print(&format!("dashboard: {dashboard}"));
            }
            wait_for_canary(&client, route, first, deadline, wait, args.json, printer).await
        }
        Wait::Revision { revision, .. } => {
            #[derive(Deserialize)]
            struct Applied {
                revision: u64,
            }
            let mut applied = None;
            let reached = poll(&client, &call, deadline, printer, |body, _| {
                let seen: Applied = decode(body)?;
                applied = Some(seen.revision);
                Ok((seen.revision >= revision).then(|| body.to_vec()))
            })
            .await?;
            let Some(body) = reached else {
                let applied = applied.map_or_else(|| "unknown".to_string(), |r| r.to_string());
                return Ok(WaitEnd::TimedOut(format!(
                    "timed out after {} waiting for revision {revision} (applied: {applied})",
                    timeout_text(wait)
                )));
            };
            let behind = wait_for_fleet(&client, revision, deadline, printer).await?;
            if !behind.is_empty() {
                return Ok(WaitEnd::TimedOut(format!(
                    "timed out after {} waiting for revision {revision} on every instance \
                     of the fleet (behind: {})",
                    timeout_text(wait),
                    behind.join(", ")
                )));
            }
            let text = if args.json {
                pretty_json(&body)?
            } else {
                format_answer(&args.command, &body)?
            };
            printer.print(&text);
            Ok(WaitEnd::Reached)
        }
    }
}

/// In fleet mode, waits until every instance of the fleet view has applied
/// `revision` too (a change is answered once the instance that took it has
/// applied it; the others follow through etcd). Returns the instances still
/// behind when the deadline passed; none out of fleet mode (`/fleet` is 404).
async fn wait_for_fleet<O: Write, E: Write>(
    client: &Client,
    revision: u64,
    deadline: Option<Instant>,
    printer: &mut Printer<O, E>,
) -> Result<Vec<String>, CtlError> {
    let call = ApiCall {
        method: http::Method::GET,
        path: format!("{API_PREFIX}/fleet"),
        body: None,
    };
    let mut behind = Vec::new();
    let waited = poll(client, &call, deadline, printer, |body, _| {
        behind = instances_behind(&decode(body)?, revision);
        Ok(behind.is_empty().then_some(()))
    })
    .await;
    match waited {
        Ok(_) => Ok(behind),
        Err(CtlError::Api { status, .. }) if status == http::StatusCode::NOT_FOUND => {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// `b at 12`: the instances of the fleet view that have not applied
/// `revision` yet. Those marked not connected count too: a registration is
/// written through etcd, so one saying so is only stale (written before the
/// instance connected); an instance really cut off leaves the view when its
/// lease runs out.
pub(super) fn instances_behind(fleet: &FleetAnswer, revision: u64) -> Vec<String> {
    fleet
        .instances
        .iter()
        .filter(|i| i.applied_revision < revision)
        .map(|i| format!("{} at {}", i.instance, i.applied_revision))
        .collect()
}

/// Prints `first` and every later change of the canary of `route` until
/// it ends or the deadline passes.
async fn wait_for_canary<O: Write, E: Write>(
    client: &Client,
    route: &str,
    first: RouteAnswer,
    deadline: Option<Instant>,
    wait: Wait<'_>,
    json: bool,
    printer: &mut Printer<O, E>,
) -> Result<WaitEnd, CtlError> {
    let get = ApiCall {
        method: http::Method::GET,
        path: route_path(route)?,
        body: None,
    };
    let mut shown: Option<Progress> = None;
    let mut see = |answer: &RouteAnswer, printer: &mut Printer<O, E>| {
        let Some(progress) = Progress::of(&answer.route.canary) else {
            return Some(WaitEnd::Stopped(format!(
                "route {route} has no [routes.canary] (any more)"
            )));
        };
        if shown.as_ref().is_none_or(|s| !s.same_place(&progress)) {
            let now = SystemTime::now();
            if json {
                printer.print(&progress.json_line(now));
            } else {
                printer.print(&progress.line(now));
                if progress.state == "awaiting_approval" {
                    printer.print(&format!(
                        "  waiting for an approval: sluicegate ctl canary approve {route}"
                    ));
                }
            }
            shown = Some(progress.clone());
        }
        progress.end(route)
    };
    if let Some(end) = see(&first, printer) {
        return Ok(end);
    }
    let ended = poll(client, &get, deadline, printer, |body, printer| {
        let answer: RouteAnswer = decode(body)?;
        Ok(see(&answer, printer))
    })
    .await?;
    Ok(ended.unwrap_or_else(|| {
        let last = shown.map_or_else(
            || "nothing seen".to_string(),
            |p| format!("{}, {}", p.state, p.step_text()),
        );
        WaitEnd::TimedOut(format!(
            "timed out after {} waiting for the canary of {route} ({last}); it goes on",
            timeout_text(wait)
        ))
    }))
}

/// `90s`, `10m`: the timeout as the user may have written it.
fn timeout_text(wait: Wait<'_>) -> String {
    wait.timeout().map_or_else(
        || "no limit".to_string(),
        |t| humantime::format_duration(t).to_string(),
    )
}

/// Sends `call` every [`POLL_INTERVAL`] until `look` finds what it waits
/// for in a 2xx answer (`Some`), or `deadline` passes (`None`). Errors of
/// the connection are retried, each new one told on stderr; refusals end it.
async fn poll<O: Write, E: Write, T>(
    client: &Client,
    call: &ApiCall,
    deadline: Option<Instant>,
    printer: &mut Printer<O, E>,
    mut look: impl FnMut(&[u8], &mut Printer<O, E>) -> Result<Option<T>, CtlError>,
) -> Result<Option<T>, CtlError> {
    let mut pause = Duration::ZERO;
    let mut last_error: Option<String> = None;
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            return Ok(None);
        }
        tokio::time::sleep(left.map_or(pause, |left| pause.min(left))).await;
        let send = client.send(call);
        let sent = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, send).await {
                Ok(sent) => sent,
                Err(_) => return Ok(None),
            },
            None => send.await,
        };
        match sent {
            Ok(body) => {
                if last_error.take().is_some() {
                    printer.warn("the admin API answers again");
                }
                if let Some(found) = look(&body, printer)? {
                    return Ok(Some(found));
                }
                pause = POLL_INTERVAL;
            }
            Err(e) if retried(&e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    printer.warn(&format!("{text}; retrying"));
                    last_error = Some(text);
                }
                pause = RETRY_INTERVAL;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Errors of reaching the API, not answers of it: worth another try.
fn retried(error: &CtlError) -> bool {
    match error {
        CtlError::Unreachable { .. } | CtlError::Timeout { .. } | CtlError::Protocol(_) => true,
        CtlError::Api { status, .. } => status.is_server_error(),
        _ => false,
    }
}
