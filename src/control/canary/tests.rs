//! The controller's state machine on a real [`State`], with traffic recorded
//! straight into the backends' metrics and tokio's paused clock.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use super::*;
use crate::config::{Config, Format};
use crate::control::Change;

const INTERVAL: Duration = Duration::from_secs(10);

/// Applies `config` as a reload of the file would.
fn apply_file(state: &State, config: Config) {
    let prepared = crate::control::prepare(config).unwrap();
    state.apply(Change::ApplyFile(Box::new(prepared))).unwrap();
}

fn config(extra_backend: &str, canary: bool) -> Config {
    let canary = if canary {
        "[routes.canary]\nbaseline = \"blue\"\ncanary = \"green\"\nsteps = [10, 50, 100]\ninterval = \"10s\"\nmin_requests = 5\n"
    } else {
        ""
    };
    let toml = format!(
        r#"
[[listeners]]
addr = "127.0.0.1:0"
[[routes]]
name = "web"
{canary}
  [[routes.backends]]
  name = "blue"
  weight = 90
  endpoints = ["127.0.0.1:1"]
  [[routes.backends]]
  name = "green"
  weight = 10
  endpoints = ["127.0.0.1:2"]
{extra_backend}
[[routes]]
name = "plain"
match = {{ path_prefix = "/plain" }}
backends = [{{ name = "a", endpoints = ["127.0.0.1:3"] }}]
"#
    );
    Config::parse(&toml, "test.toml", Format::Toml).unwrap()
}

/// An admin weight change through the change pipeline; its revision.
fn set_weights(state: &State, route: &str, weights: WeightMap, reason: &str) -> u64 {
    state
        .apply(Change::SetWeights {
            route: route.into(),
            weights,
            if_revision: None,
            source: Source::Admin,
            reason: reason.into(),
            zone: None,
        })
        .unwrap()
        .revision
}

fn controller() -> (Arc<State>, Controller) {
    let state = Arc::new(State::new(config("", true)));
    let controller = Controller::new(Arc::clone(&state));
    (state, controller)
}

/// `n` responses of `backend` of route `web`, `errors` of them 500.
fn traffic(state: &State, backend: &str, n: u64, errors: u64, latency: Duration) {
    let snapshot = state.snapshot_full();
    let metrics = &snapshot
        .route("web")
        .unwrap()
        .backend(backend)
        .unwrap()
        .metrics;
    for i in 0..n {
        let status = if i < errors {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        // One attempt per response, as `Attempts::settle` records it.
        metrics.record_attempt(status.is_server_error());
        metrics.record(status, latency);
    }
}

fn view(state: &State, controller: &Controller) -> Value {
    controller.view(state.snapshot().route("web").unwrap())
}

fn weights(state: &State) -> Vec<(String, f64)> {
    let snapshot = state.snapshot_full();
    snapshot
        .route("web")
        .unwrap()
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.weight.percent()))
        .collect()
}

fn split(blue: f64, green: f64) -> Vec<(String, f64)> {
    vec![("blue".into(), blue), ("green".into(), green)]
}

fn canary_revisions(state: &State) -> Vec<Revision> {
    let (revisions, _) = state.history(100, None, Some("web"));
    revisions
        .into_iter()
        .rev()
        .filter(|r| r.source == Source::Canary)
        .collect()
}

/// Healthy traffic for both backends, enough for a step.
fn good_traffic(state: &State) {
    traffic(state, "green", 5, 0, Duration::from_millis(1));
    traffic(state, "blue", 20, 0, Duration::from_millis(1));
}

#[tokio::test(start_paused = true)]
async fn a_good_canary_walks_every_step_to_promoted() {
    let (state, controller) = controller();
    assert_eq!(view(&state, &controller)["state"], "idle");
    controller.act("web", Action::Start).unwrap();
    assert_eq!(weights(&state), split(90.0, 10.0));
    let v = view(&state, &controller);
    assert_eq!(
        (v["state"].as_str(), v["step"].as_u64()),
        (Some("running"), Some(1))
    );
    assert_eq!(v["steps"], json!([10.0, 50.0, 100.0]));

    for (step, green) in [(2, 50.0), (3, 100.0)] {
        good_traffic(&state);
        controller.tick();
        assert_eq!(
            view(&state, &controller)["step"],
            step - 1,
            "the interval is not over"
        );
        tokio::time::advance(INTERVAL).await;
        controller.tick();
        assert_eq!(weights(&state), split(100.0 - green, green));
        assert_eq!(view(&state, &controller)["step"], step);
    }
    good_traffic(&state);
    tokio::time::advance(INTERVAL).await;
    controller.tick();
    let v = view(&state, &controller);
    assert_eq!(v["state"], "succeeded", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("step 3/3"), "{v}");
    assert_eq!(weights(&state), split(0.0, 100.0));

    let reasons: Vec<String> = canary_revisions(&state)
        .into_iter()
        .map(|r| r.reason)
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0], "canary step 1/3: 10 % (started)");
    assert!(
        reasons[2].starts_with("canary step 3/3: 100 % (error rate 0.00 %, p99"),
        "{reasons:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_traffic_never_promotes() {
    let (state, controller) = controller();
    controller.act("web", Action::Start).unwrap();
    traffic(&state, "blue", 1000, 0, Duration::from_millis(1));
    for _ in 0..100 {
        tokio::time::advance(Duration::from_secs(60)).await;
        controller.tick();
    }
    let v = view(&state, &controller);
    assert_eq!(
        (v["state"].as_str(), v["step"].as_u64()),
        (Some("running"), Some(1))
    );
    assert_eq!(v["step_requests"], 0);
    assert!(v["reason"].as_str().unwrap().contains("0 of 5"), "{v}");
    assert_eq!(canary_revisions(&state).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn errors_roll_back_without_waiting_for_the_interval() {
    let (state, controller) = controller();
    controller.act("web", Action::Start).unwrap();
    traffic(&state, "green", 4, 4, Duration::from_millis(1));
    controller.tick();
    assert_eq!(
        view(&state, &controller)["state"],
        "running",
        "min_requests not in yet"
    );
    traffic(&state, "green", 1, 0, Duration::from_millis(1));
    controller.tick();
    let v = view(&state, &controller);
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error_rate"], 0.8);
    assert_eq!(weights(&state), split(100.0, 0.0));
    let last = canary_revisions(&state).pop().unwrap();
    assert!(
        last.reason.contains("rolled back at step 1/3")
            && last.reason.contains("error rate 80.00 %"),
        "{}",
        last.reason
    );
    // A finished canary can start again.
    controller.act("web", Action::Start).unwrap();
    assert_eq!(weights(&state), split(90.0, 10.0));
}

#[tokio::test(start_paused = true)]
async fn a_slow_canary_rolls_back() {
    let (state, controller) = controller();
    controller.act("web", Action::Start).unwrap();
    traffic(&state, "blue", 100, 0, Duration::from_millis(10));
    traffic(&state, "green", 5, 0, Duration::from_millis(30));
    controller.tick();
    let v = view(&state, &controller);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("p99"), "{v}");
}

#[tokio::test(start_paused = true)]
async fn pause_stops_the_clock_and_resume_restarts_the_interval() {
    let (state, controller) = controller();
    controller.act("web", Action::Start).unwrap();
    good_traffic(&state);
    tokio::time::advance(INTERVAL - Duration::from_secs(1)).await;
    controller.act("web", Action::Pause).unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    controller.tick();
    assert_eq!(view(&state, &controller)["state"], "paused");
    controller.act("web", Action::Resume).unwrap();
    tokio::time::advance(INTERVAL - Duration::from_secs(1)).await;
    controller.tick();
    let v = view(&state, &controller);
    assert_eq!(
        (v["state"].as_str(), v["step"].as_u64()),
        (Some("running"), Some(1))
    );
    // The counters kept: no new traffic is needed.
    assert_eq!(v["step_requests"], 5);
    tokio::time::advance(Duration::from_secs(1)).await;
    controller.tick();
    assert_eq!(view(&state, &controller)["step"], 2);
    // Resuming without a weight change adds no revision.
    assert_eq!(canary_revisions(&state).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_weight_change_outside_the_canary_pauses_it() {
    let (state, controller) = controller();
    controller.act("web", Action::Start).unwrap();
    // Failover and other routes' changes do not count.
    set_weights(
        &state,
        "plain",
        WeightMap(vec![("a".into(), Weight::FULL)]),
        "",
    );
    controller.tick();
    assert_eq!(view(&state, &controller)["state"], "running");
    let manual = WeightMap(vec![
        ("blue".into(), Weight(5000)),
        ("green".into(), Weight(5000)),
    ]);
    let revision = set_weights(&state, "web", manual, "by hand");
    controller.tick();
    let v = view(&state, &controller);
    assert_eq!(v["state"], "paused", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("revision {revision} (admin: by hand)")),
        "{reason}"
    );
    assert_eq!(
        weights(&state),
        split(50.0, 50.0),
        "the canary leaves the operator's weights"
    );
    controller.act("web", Action::Resume).unwrap();
    assert_eq!(weights(&state), split(90.0, 10.0));
    let last = canary_revisions(&state).pop().unwrap();
    assert_eq!(last.reason, "canary step 1/3: 10 % (resumed)");
    controller.tick();
    assert_eq!(view(&state, &controller)["state"], "running");
}

#[tokio::test(start_paused = true)]
async fn abort_goes_back_to_the_baseline() {
    let (state, controller) = controller();
    controller.act("web", Action::Start).unwrap();
    good_traffic(&state);
    tokio::time::advance(INTERVAL).await;
    controller.tick();
    assert_eq!(weights(&state), split(50.0, 50.0));
    controller.act("web", Action::Abort).unwrap();
    assert_eq!(weights(&state), split(100.0, 0.0));
    let v = view(&state, &controller);
    assert_eq!(
        (v["state"].as_str(), v["step"].as_u64()),
        (Some("aborted"), Some(2))
    );
    assert_eq!(
        canary_revisions(&state).pop().unwrap().reason,
        "canary aborted through the admin API at step 2/3: 50 %"
    );
}

#[tokio::test(start_paused = true)]
async fn actions_that_do_not_fit_are_refused() {
    let (_state, controller) = controller();
    let wrong = |r: Result<(), CanaryError>| matches!(r, Err(CanaryError::WrongState(_)));
    assert!(wrong(controller.act("web", Action::Pause)));
    assert!(wrong(controller.act("web", Action::Resume)));
    assert!(wrong(controller.act("web", Action::Abort)));
    assert_eq!(
        controller.act("nope", Action::Start),
        Err(CanaryError::UnknownRoute("nope".into()))
    );
    assert_eq!(
        controller.act("plain", Action::Start),
        Err(CanaryError::NotConfigured("plain".into()))
    );
    controller.act("web", Action::Start).unwrap();
    assert!(wrong(controller.act("web", Action::Start)));
    assert!(wrong(controller.act("web", Action::Resume)));
    controller.act("web", Action::Pause).unwrap();
    assert!(wrong(controller.act("web", Action::Pause)));
    assert!(wrong(controller.act("web", Action::Start)));
    controller.act("web", Action::Abort).unwrap();
    assert!(wrong(controller.act("web", Action::Abort)));
}

#[tokio::test(start_paused = true)]
async fn start_needs_room_for_every_step_next_to_other_backends() {
    let red =
        "  [[routes.backends]]\n  name = \"red\"\n  weight = 0\n  endpoints = [\"127.0.0.1:4\"]\n";
    let mut config = config(red, true);
    let state = Arc::new(State::new(config.clone()));
    let controller = Controller::new(Arc::clone(&state));
    // red at 0 keeps 0.
    controller.act("web", Action::Start).unwrap();
    controller.act("web", Action::Abort).unwrap();
    let held = WeightMap(vec![
        ("blue".into(), Weight(9000)),
        ("red".into(), Weight(1000)),
    ]);
    set_weights(&state, "web", held, "");
    let refused = controller.act("web", Action::Start);
    assert!(
        matches!(&refused, Err(CanaryError::Invalid(why)) if why.contains("other backends hold 10 %")),
        "{refused:?}"
    );
    // The canary must have somewhere to send traffic.
    Arc::make_mut(&mut config.routes[0]).backends[1]
        .endpoints
        .clear();
    apply_file(&state, config);
    let refused = controller.act("web", Action::Start);
    assert!(
        matches!(&refused, Err(CanaryError::Invalid(why)) if why.contains("no available endpoint")),
        "{refused:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_canary_unless_it_removes_or_reshapes_it() {
    let (state, controller) = controller();
    controller.act("web", Action::Start).unwrap();
    // Same file: the canary's override stays and so does the canary.
    apply_file(&state, config("", true));
    controller.tick();
    assert_eq!(view(&state, &controller)["state"], "running");
    // New steps: stopped where it was.
    let mut reshaped = config("", true);
    if let Some(canary) = Arc::make_mut(&mut reshaped.routes[0]).canary.as_mut() {
        canary.steps = vec![Weight(2000), Weight::FULL];
    }
    apply_file(&state, reshaped);
    controller.tick();
    let v = view(&state, &controller);
    assert_eq!(v["state"], "idle", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("steps changed"),
        "{v}"
    );
    controller.act("web", Action::Start).unwrap();
    assert_eq!(weights(&state), split(80.0, 20.0));
    // Removed: gone, and `null` in the view.
    apply_file(&state, config("", false));
    controller.tick();
    assert_eq!(view(&state, &controller), Value::Null);
    assert!(controller.lock().is_empty());
}

#[test]
fn the_tick_is_a_tenth_of_the_quickest_interval_within_bounds() {
    let mut config = config("", true);
    let period = |config: &Config| {
        let state = State::new(config.clone());
        tick_period(&state.snapshot().routes)
    };
    assert_eq!(period(&config), Duration::from_secs(1));
    if let Some(canary) = Arc::make_mut(&mut config.routes[0]).canary.as_mut() {
        canary.interval = Duration::from_millis(200);
    }
    assert_eq!(period(&config), MIN_TICK);
    if let Some(canary) = Arc::make_mut(&mut config.routes[0]).canary.as_mut() {
        canary.interval = Duration::from_secs(5);
    }
    assert_eq!(period(&config), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn a_restart_restores_the_step_or_pauses_when_the_weights_differ() {
    let dir = std::env::temp_dir().join(format!("sg-canary-saved-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state_file = dir.join("state.json");
    let mut config = config("", true);
    config.admin.state_file = Some(state_file.clone());
    let state = Arc::new(State::new(config.clone()));
    let controller = Controller::new(Arc::clone(&state));
    controller.act("web", Action::Start).unwrap();
    good_traffic(&state);
    tokio::time::advance(INTERVAL).await;
    controller.tick();
    assert_eq!(weights(&state), split(50.0, 50.0));
    drop((controller, state));

    // Weights restored from the state file: running at step 2.
    let state = Arc::new(State::new(config.clone()));
    let controller = Controller::new(Arc::clone(&state));
    let v = view(&state, &controller);
    assert_eq!(
        (v["state"].as_str(), v["step"].as_u64()),
        (Some("running"), Some(2)),
        "{v}"
    );
    drop((controller, state));

    // Without the state file the weights are the file's: paused, with why.
    std::fs::remove_file(&state_file).unwrap();
    let state = Arc::new(State::new(config));
    let controller = Controller::new(Arc::clone(&state));
    let v = view(&state, &controller);
    assert_eq!(
        (v["state"].as_str(), v["step"].as_u64()),
        (Some("paused"), Some(2)),
        "{v}"
    );
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("not those of step 2/3"),
        "{v}"
    );
    controller.act("web", Action::Resume).unwrap();
    assert_eq!(weights(&state), split(50.0, 50.0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_approval_step_waits_and_another_hand_still_pauses_it() {
    let mut config = config("", true);
    if let Some(canary) = Arc::make_mut(&mut config.routes[0]).canary.as_mut() {
        canary.approve_at = vec![Weight(1000)];
    }
    let state = Arc::new(State::new(config));
    let controller = Controller::new(Arc::clone(&state));
    let refused = controller.act("web", Action::Approve).unwrap_err();
    assert!(matches!(refused, CanaryError::WrongState(_)), "{refused}");
    controller.act("web", Action::Start).unwrap();
    good_traffic(&state);
    tokio::time::advance(INTERVAL).await;
    controller.tick();
    let v = view(&state, &controller);
    assert_eq!(
        (v["state"].as_str(), v["step"].as_u64()),
        (Some("awaiting_approval"), Some(1)),
        "{v}"
    );
    assert_eq!(v["approve_at"], json!([10.0]));
    for _ in 0..5 {
        good_traffic(&state);
        tokio::time::advance(INTERVAL).await;
        controller.tick();
    }
    assert_eq!(view(&state, &controller)["state"], "awaiting_approval");
    assert_eq!(weights(&state), split(90.0, 10.0));

    set_weights(
        &state,
        "web",
        WeightMap(vec![("blue".into(), Weight::FULL)]),
        "hotfix",
    );
    controller.tick();
    let v = view(&state, &controller);
    assert_eq!(v["state"], "paused", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("hotfix"), "{v}");
    controller.act("web", Action::Resume).unwrap();
    assert_eq!(view(&state, &controller)["state"], "awaiting_approval");
    assert_eq!(weights(&state), split(90.0, 10.0));

    let caller = Caller {
        actor: "release-manager".into(),
        client: Some("127.0.0.1:5000".into()),
    };
    controller
        .act_by("web", Action::Approve, Some(&caller))
        .unwrap();
    assert_eq!(weights(&state), split(50.0, 50.0));
    let step = canary_revisions(&state).pop().unwrap();
    assert_eq!(step.actor(), "release-manager");
    assert_eq!(
        step.reason,
        "canary step 2/3: 50 % (approved by release-manager)"
    );
    // The controller's own next step is the canary's.
    good_traffic(&state);
    tokio::time::advance(INTERVAL).await;
    controller.tick();
    assert_eq!(canary_revisions(&state).pop().unwrap().actor(), "canary");
}

#[test]
fn a_canary_state_file_of_an_older_version_still_parses() {
    let old = r#"[{"route": "web", "plan": {"baseline": "blue", "canary": "green", "steps": [1000, 5000, 10000]},
        "phase": "running", "step": 1, "reason": "step 2/3: 50 % began", "step_revision": 7}]"#;
    let saved: Vec<saved::SavedRun> = serde_json::from_str(old).unwrap();
    assert_eq!(
        (saved[0].phase, saved[0].passed),
        (CanaryPhase::Running, false)
    );
    let waiting = old.replace("\"running\"", "\"awaiting_approval\"");
    let saved: Vec<saved::SavedRun> = serde_json::from_str(&waiting).unwrap();
    assert_eq!(saved[0].phase, CanaryPhase::AwaitingApproval);
}
