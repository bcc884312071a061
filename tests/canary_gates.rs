//! Progressive delivery for deploy pipelines (SPEC §7): approval steps,
//! gates and `[[notify]]` webhooks, with real backends, real traffic through
//! the proxy and real webhook receivers on 127.0.0.1:0; and the canary's
//! actor and state after it ended.

pub mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use support::admin::FileProxy;
use support::canary::{
    Traffic, act, assert_at, assert_weights, canary_action, canary_table, history, state_is, view,
    wait_for,
};
use support::config_text::{LISTENER, backend, route};
use support::origin::Origin;
use support::webhook::{Answer, WebhookReceiver};

/// `[[routes.canary.gates]]` at `url`.
fn gate(url: &str, timeout: &str) -> String {
    format!("\n  [[routes.canary.gates]]\n  url = \"{url}\"\n  timeout = \"{timeout}\"\n")
}

/// Route `web`, blue 100 / green 0 on `b`, with the `[routes.canary]` of
/// [`canary_table`] (p99 ratio 1000: this machine is loaded) ending in
/// `extra` (approve_at, gates); then `tail` (top-level tables such as
/// `[[notify]]`).
fn config(b: &Backends, extra: &str, tail: &str) -> String {
    let web = route(
        "web",
        "",
        "",
        &[
            backend("blue", Some("100"), &[b.blue.addr]),
            backend("green", Some("0"), &[b.green.addr]),
        ],
    );
    format!("{LISTENER}{web}{}\n{tail}", canary_table(1000, extra))
}

/// `[[notify]]` at `url`.
fn notify(url: &str, extra: &str) -> String {
    format!("\n[[notify]]\nurl = \"{url}\"\n{extra}\n")
}

struct Backends {
    blue: support::origin::RunningOrigin,
    green: support::origin::RunningOrigin,
}

async fn backends() -> Backends {
    Backends {
        blue: Origin::new("blue").start().await,
        green: Origin::new("green").start().await,
    }
}

/// A proxy on `b` whose canary asks `gate_server` (within `timeout`) before
/// each step after the first, its canary started and traffic sent; returns
/// the proxy, the start's `canary` view and the traffic.
async fn start_gated(
    b: &Backends,
    gate_server: &WebhookReceiver,
    timeout: &str,
) -> (FileProxy, Value, Traffic) {
    let proxy = FileProxy::start(&config(b, &gate(&gate_server.url, timeout), "")).await;
    let started = act(&proxy, "start").await;
    let traffic = Traffic::start(proxy.addr);
    (proxy, started, traffic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_step_holds_the_weights_until_approved() {
    let b = backends().await;
    let body = config(&b, "  approve_at = [10]\n", "");
    let proxy = FileProxy::start(&body).await;

    let (status, refused) = canary_action(&proxy, "web", "approve").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "approve of an idle canary: {refused}"
    );
    assert!(refused["error"].as_str().is_some(), "{refused}");

    let started = act(&proxy, "start").await;
    assert_eq!(
        started["approve_at"],
        serde_json::json!([10.0]),
        "{started}"
    );
    let traffic = Traffic::start(proxy.addr);
    let waiting = wait_for(&proxy, "awaiting approval", state_is("awaiting_approval")).await;
    assert_eq!(waiting["step"], 1, "{waiting}");
    let revision = proxy.revision().await;
    // Many ticks (every 50 ms) and steps' worth of traffic pass: nothing moves.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let still = view(&proxy).await;
    assert_at(&still, "awaiting_approval", 1);
    assert_eq!(
        proxy.revision().await,
        revision,
        "no revision while waiting"
    );
    assert_weights(&proxy, 90.0, 10.0).await;

    let approved = act(&proxy, "approve").await;
    assert_at(&approved, "running", 2);
    assert_weights(&proxy, 50.0, 50.0).await;
    let step = &history(&proxy).await[0];
    assert_eq!(step["source"], "canary", "{step}");
    assert_eq!(
        step["actor"], "admin",
        "the approval's revision names its caller: {step}"
    );
    assert!(step["client"].as_str().is_some(), "{step}");
    let (status, refused) = canary_action(&proxy, "web", "approve").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "approve of a running canary: {refused}"
    );
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("running"),
        "{refused}"
    );
    wait_for(&proxy, "succeeded", state_is("succeeded")).await;
    drop(traffic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_for_an_approval_survives_a_restart() {
    let b = backends().await;
    let body = config(&b, "  approve_at = [50]\n", "");
    let proxy = FileProxy::start_with_state_file(&body).await;
    act(&proxy, "start").await;
    let traffic = Traffic::start(proxy.addr);
    wait_for(&proxy, "awaiting approval", state_is("awaiting_approval")).await;
    drop(traffic);

    let proxy = proxy.restart().await;
    let restored = view(&proxy).await;
    assert_at(&restored, "awaiting_approval", 2);
    assert_weights(&proxy, 50.0, 50.0).await;
    // A pause while waiting comes back waiting on resume.
    assert_eq!(act(&proxy, "pause").await["state"], "paused");
    assert_eq!(act(&proxy, "resume").await["state"], "awaiting_approval");
    let approved = act(&proxy, "approve").await;
    assert_eq!(approved["step"], 3, "{approved}");
    assert_weights(&proxy, 0.0, 100.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_answering_500_fails_the_canary_naming_the_gate() {
    let b = backends().await;
    let gate_server =
        WebhookReceiver::start(Answer::Status(StatusCode::INTERNAL_SERVER_ERROR)).await;
    let (proxy, _, traffic) = start_gated(&b, &gate_server, "2s").await;
    let failed = wait_for(&proxy, "failed", state_is("failed")).await;
    drop(traffic);
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("gate {} answered 500", gate_server.url)),
        "{reason}"
    );
    assert_weights(&proxy, 100.0, 0.0).await;
    let asked = gate_server.received();
    assert_eq!(
        asked.first(),
        Some(&serde_json::json!({
            "route": "web", "step": 2, "weight": 50.0, "baseline": "blue", "canary": "green"
        })),
        "{asked:?}"
    );
    let gates = failed["gates"].as_array().cloned().unwrap_or_default();
    assert_eq!(gates.len(), 1, "{failed}");
    assert_eq!(gates[0]["passed"], false, "{failed}");
    assert_eq!(gates[0]["step"], 2, "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_never_answers_fails_after_its_timeout_without_blocking_the_api() {
    let b = backends().await;
    let gate_server = WebhookReceiver::start(Answer::Never).await;
    let (proxy, _, traffic) = start_gated(&b, &gate_server, "1500ms").await;
    gate_server
        .wait_for("the gate to be called", |asked| asked["step"] == 2)
        .await;
    // While the gate is called, the admin API answers at once and the
    // canary waits in its phase.
    let asked_at = Instant::now();
    let checking = view(&proxy).await;
    assert!(
        asked_at.elapsed() < Duration::from_millis(1000),
        "the admin API waited for the gate: {:?}",
        asked_at.elapsed()
    );
    assert_eq!(checking["state"], "running", "{checking}");
    assert!(
        checking["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("gate"),
        "{checking}"
    );
    let failed = wait_for(&proxy, "failed", state_is("failed")).await;
    drop(traffic);
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "gate {} timed out after 1s 500ms",
            gate_server.url
        )),
        "{reason}"
    );
    assert_weights(&proxy, 100.0, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_answering_200_lets_the_canary_go_on_and_shows_in_the_view() {
    let b = backends().await;
    let gate_server = WebhookReceiver::start(Answer::Status(StatusCode::OK)).await;
    let (proxy, started, traffic) = start_gated(&b, &gate_server, "2s").await;
    assert_eq!(started["gates"], serde_json::json!([]), "{started}");
    let done = wait_for(&proxy, "succeeded", state_is("succeeded")).await;
    drop(traffic);
    let steps: Vec<Value> = gate_server
        .received()
        .iter()
        .map(|a| a["step"].clone())
        .collect();
    assert_eq!(steps, [2, 3], "one call before each step after the first");
    let gates = done["gates"].as_array().cloned().unwrap_or_default();
    assert_eq!(gates.len(), 1, "{done}");
    let latest = &gates[0];
    assert_eq!(latest["url"], gate_server.url.as_str(), "{latest}");
    assert_eq!(latest["step"], 3, "{latest}");
    assert_eq!(latest["weight"], 100.0, "{latest}");
    assert_eq!(latest["passed"], true, "{latest}");
    assert!(
        latest["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("HTTP 200 in "),
        "{latest}"
    );
    assert!(
        humantime::parse_rfc3339(latest["time"].as_str().unwrap_or_default()).is_ok(),
        "{latest}"
    );
    assert_weights(&proxy, 0.0, 100.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_receives_revision_and_canary_events_in_order() {
    let b = backends().await;
    let receiver = WebhookReceiver::start(Answer::Status(StatusCode::NO_CONTENT)).await;
    let canary_only = WebhookReceiver::start(Answer::Status(StatusCode::OK)).await;
    let tail = format!(
        "{}{}",
        notify(&receiver.url, ""),
        notify(&canary_only.url, "events = [\"canary\"]")
    );
    let body = config(&b, "", &tail);
    let proxy = FileProxy::start_with_named_token(&body, "deploy-bot").await;

    let (status, answer) = proxy
        .put_weights("web", &[("blue", 75.0), ("green", 25.0)])
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let set_revision = answer["revision"].as_u64().expect("revision");
    act(&proxy, "start").await;
    act(&proxy, "abort").await;
    let events = receiver
        .wait_for("the abort's canary event", |e| e["state"] == "aborted")
        .await;
    let kinds: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let what = match e["event"].as_str() {
                Some("revision") => e["source"].as_str(),
                _ => e["state"].as_str(),
            };
            (
                e["event"].as_str().unwrap_or_default().to_string(),
                what.unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("revision", "admin"),
        ("revision", "canary"),
        ("canary", "running"),
        ("revision", "canary"),
        ("canary", "aborted"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(kinds, expected, "{events:#?}");

    let set = &events[0];
    assert_eq!(set["route"], "web", "{set}");
    assert_eq!(set["revision"], set_revision, "{set}");
    assert_eq!(
        set["weights"],
        serde_json::json!({"blue": 75.0, "green": 25.0}),
        "{set}"
    );
    assert_eq!(set["actor"], "deploy-bot", "{set}");
    assert!(
        set["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{set}"
    );
    assert!(
        humantime::parse_rfc3339(set["time"].as_str().unwrap_or_default()).is_ok(),
        "{set}"
    );
    assert_eq!(
        set["text"],
        format!(
            "sluicegate: web revision {set_revision} (admin by deploy-bot): blue 75, green 25 — set blue=75 green=25"
        ),
        "{set}"
    );
    let started = &events[2];
    assert_eq!(started["step"], 1, "{started}");
    assert_eq!(started["weight"], 10.0, "{started}");
    assert!(
        started["text"]
            .as_str()
            .unwrap_or_default()
            .contains("web canary running at step 1"),
        "{started}"
    );
    let rollback = &events[3];
    assert_eq!(
        rollback["actor"], "deploy-bot",
        "the abort is the caller's: {rollback}"
    );
    assert_eq!(
        rollback["weights"],
        serde_json::json!({"blue": 100.0, "green": 0.0})
    );
    let aborted = &events[4];
    assert_eq!(aborted["weight"], 0.0, "{aborted}");
    assert!(
        aborted["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("aborted"),
        "{aborted}"
    );

    let canary_events = canary_only
        .wait_for("the abort's canary event", |e| e["state"] == "aborted")
        .await;
    assert!(
        canary_events.iter().all(|e| e["event"] == "canary"),
        "{canary_events:#?}"
    );
}

/// The `i`th of a run of admin PUTs on `proxy` that alternate green between
/// 10 and 20, asserting 200; how long it took to answer.
async fn put_alternating(proxy: &FileProxy, i: usize) -> Duration {
    let green = if i.is_multiple_of(2) { 10.0 } else { 20.0 };
    let started = Instant::now();
    let (status, body) = proxy
        .put_weights("web", &[("blue", 100.0 - green), ("green", green)])
        .await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    took
}

/// The p99 of `rounds` admin PUTs (alternating weights) on `proxy`.
async fn put_p99(proxy: &FileProxy, rounds: usize) -> Duration {
    let mut took = Vec::with_capacity(rounds);
    for i in 0..rounds {
        took.push(put_alternating(proxy, i).await);
    }
    took.sort();
    took[(rounds * 99).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_delays_no_admin_answer() {
    let b = backends().await;
    let live = WebhookReceiver::start(Answer::Status(StatusCode::OK)).await;
    let plain = FileProxy::start(&config(&b, "", "")).await;
    let dead = WebhookReceiver::start(Answer::Never).await;
    let tail = format!(
        "{}{}",
        notify(&live.url, ""),
        notify(&dead.url, "timeout = \"30s\"")
    );
    let with_dead = FileProxy::start(&config(&b, "", &tail)).await;

    let without = put_p99(&plain, 100).await;
    let with = put_p99(&with_dead, 100).await;
    println!("admin PUT p99: {without:?} without a receiver, {with:?} with one that never answers");
    assert!(
        with < Duration::from_millis(500),
        "a dead receiver delayed admin answers: p99 {with:?} (without: {without:?})"
    );
    dead.wait_for("the first event", |e| e["event"] == "revision")
        .await;
    // The other receiver, with its own queue, got every change, in order.
    let latest = with_dead.revision().await;
    let events = live
        .wait_for("the last change", |e| e["revision"] == latest)
        .await;
    let revisions: Vec<u64> = events
        .iter()
        .filter_map(|e| e["revision"].as_u64())
        .collect();
    let expected: Vec<u64> = (latest - 99..=latest).collect();
    assert_eq!(revisions, expected);
}

/// `sluicegate_notify_dropped_total{receiver="URL"}` on `proxy`'s /metrics.
async fn dropped(proxy: &FileProxy, url: &str) -> Option<f64> {
    let (status, body) = proxy.admin_get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap_or_default().to_string();
    let series = format!("sluicegate_notify_dropped_total{{receiver=\"{url}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_events_are_counted_when_the_queue_overflows_or_retries_run_out() {
    let b = backends().await;
    // Held by its first event for 3 × 30 s: the queue behind it fills.
    let dead = WebhookReceiver::start(Answer::Never).await;
    // Refuses connections: every attempt fails.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/hook", listener.local_addr().expect("addr"))
    };
    let tail = format!(
        "{}{}",
        notify(&dead.url, "timeout = \"30s\""),
        notify(&closed, "events = [\"canary\"]")
    );
    let proxy = FileProxy::start(&config(&b, "", &tail)).await;
    assert_eq!(
        dropped(&proxy, &dead.url).await,
        Some(0.0),
        "described before any drop"
    );

    let changes = sluicegate::control::notify::QUEUE + 50;
    for i in 0..changes {
        put_alternating(&proxy, i).await;
    }
    // One event is being delivered, QUEUE wait: the rest were dropped.
    let overflow = dropped(&proxy, &dead.url).await.unwrap_or_default();
    assert!(
        (49.0..=50.0).contains(&overflow),
        "{overflow} events dropped of {changes}"
    );
    // The closed receiver drops its one event once every attempt failed.
    assert_eq!(dropped(&proxy, &closed).await, Some(0.0));
    act(&proxy, "start").await;
    support::eventually_async("the attempts to run out", || async {
        dropped(&proxy, &closed).await == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_abort_through_the_api_records_the_token_name_as_actor() {
    let b = backends().await;
    let body = config(&b, "", "");
    let proxy = FileProxy::start_with_named_token(&body, "deploy-bot").await;
    act(&proxy, "start").await;
    act(&proxy, "abort").await;
    let revisions = history(&proxy).await;
    let (abort, start) = (&revisions[0], &revisions[1]);
    for revision in [abort, start] {
        assert_eq!(revision["source"], "canary", "{revision}");
        assert_eq!(revision["actor"], "deploy-bot", "{revision}");
        assert!(
            revision["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{revision}"
        );
    }
    assert_eq!(
        abort["weights"],
        serde_json::json!({"blue": 100.0, "green": 0.0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_change_after_the_canary_succeeded_shows_in_its_view() {
    let b = backends().await;
    let body = config(&b, "", "");
    let proxy = FileProxy::start(&body).await;
    act(&proxy, "start").await;
    let traffic = Traffic::start(proxy.addr);
    wait_for(&proxy, "succeeded", state_is("succeeded")).await;
    drop(traffic);
    // The controller's own steps are actor `canary`.
    let revisions = history(&proxy).await;
    assert_eq!(revisions[0]["actor"], "canary", "{}", revisions[0]);

    let (status, answer) = proxy
        .put_weights("web", &[("blue", 70.0), ("green", 30.0)])
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let after = wait_for(&proxy, "idle", state_is("idle")).await;
    assert_eq!(after["weight"], 30.0, "{after}");
    let reason = after["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("after the canary succeeded") && reason.contains("admin"),
        "{reason}"
    );
    // A new canary starts from there.
    assert_eq!(act(&proxy, "start").await["state"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_notify_applies_the_new_receivers() {
    let b = backends().await;
    let old = WebhookReceiver::start(Answer::Status(StatusCode::OK)).await;
    let new = WebhookReceiver::start(Answer::Status(StatusCode::OK)).await;
    let body = |url: &str| config(&b, "", &notify(url, ""));
    let proxy = FileProxy::start(&body(&old.url)).await;
    proxy
        .put_weights("web", &[("blue", 80.0), ("green", 20.0)])
        .await;
    old.wait_for("the first change", |e| e["weights"]["green"] == 20.0)
        .await;

    proxy.replace_config(&body(&new.url));
    let (status, answer) = proxy
        .admin_send(Method::POST, "/api/v1/reload", None, Some(&proxy.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    proxy
        .put_weights("web", &[("blue", 70.0), ("green", 30.0)])
        .await;
    new.wait_for("the change after the reload", |e| {
        e["weights"]["green"] == 30.0
    })
    .await;
    assert!(
        old.received().iter().all(|e| e["weights"]["green"] != 30.0),
        "the removed receiver still gets events: {:#?}",
        old.received()
    );
}
