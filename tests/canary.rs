//! The automated canary (SPEC §2 `[routes.canary]`, §3 canary endpoints, §4
//! `sluicegate_canary_weight`): real backends, real traffic through the
//! proxy, and the canary driven through the admin API and `sluicegate ctl`.

pub mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use support::admin::{FileProxy, describe_output, weight_map};
use support::body::{TestBody, full};
use support::canary::{
    Traffic, act, assert_at, assert_weights, canary_action, canary_revisions, canary_table,
    reasons, state_is, view, wait_for,
};
use support::client::{Http1Client, get_request};
use support::config_text::{LISTENER, backend, route};
use support::origin::Origin;

/// The `[routes.canary]` for blue → green in three steps of 200 ms, with a
/// p99 ratio of 100.
fn canary() -> String {
    canary_table(100, "")
}

/// Route `plain` (no canary, path /plain) then route `web`: blue 100 /
/// green 0 with `canary` appended; passive ejection off, so a failing canary
/// is judged on its errors rather than removed.
fn config(blue: SocketAddr, green: SocketAddr, canary: &str) -> String {
    let no_ejection = "    [routes.backends.outlier]\n    consecutive_failures = 0\n";
    let plain = route(
        "plain",
        "path_prefix = \"/plain\"",
        "",
        &[backend("blue", None, &[blue])],
    );
    let web = route(
        "web",
        "",
        "",
        &[
            format!("{}{no_ejection}", backend("blue", Some("100"), &[blue])),
            format!("{}{no_ejection}", backend("green", Some("0"), &[green])),
        ],
    );
    format!("{LISTENER}{plain}{web}{canary}")
}

/// A backend on 127.0.0.1:0 that answers every request with `status`.
struct StatusBackend {
    addr: SocketAddr,
    accept_loop: JoinHandle<()>,
}

impl StatusBackend {
    async fn start(name: &'static str, status: StatusCode) -> StatusBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accept_loop = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(move |_req: Request<Incoming>| async move {
                        let mut resp: Response<TestBody> = Response::new(full(name));
                        *resp.status_mut() = status;
                        resp.headers_mut()
                            .insert("x-backend", HeaderValue::from_static(name));
                        Ok::<_, Infallible>(resp)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        StatusBackend { addr, accept_loop }
    }
}

impl Drop for StatusBackend {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// `sluicegate_canary_weight{route="web"}` from /metrics.
async fn canary_weight_metric(proxy: &FileProxy) -> Option<f64> {
    let (status, body) = proxy.admin_send(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    body.as_str()?.lines().find_map(|line| {
        line.strip_prefix("sluicegate_canary_weight{route=\"web\"} ")
            .and_then(|v| v.parse().ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_through_every_step() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = FileProxy::start(&config(blue.addr, green.addr, &canary())).await;
    let idle = view(&proxy).await;
    assert_eq!(idle["state"], "idle", "{idle}");
    assert_eq!(idle["steps"], serde_json::json!([10.0, 50.0, 100.0]));
    assert_eq!(canary_weight_metric(&proxy).await, Some(0.0));

    let started = act(&proxy, "start").await;
    assert_eq!(started["state"], "running", "{started}");
    assert_eq!(
        (started["step"].as_u64(), started["weight"].as_f64()),
        (Some(1), Some(10.0))
    );
    assert_weights(&proxy, 90.0, 10.0).await;
    let traffic = Traffic::start(proxy.addr);

    let done = wait_for(&proxy, "succeeded", |v| v["state"] != "running").await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["step"], 3, "{done}");
    assert!(
        traffic.sent.load(Ordering::Relaxed) > 0,
        "the client got answers"
    );
    drop(traffic);
    assert_weights(&proxy, 0.0, 100.0).await;
    let revisions = canary_revisions(&proxy).await;
    let reasons = reasons(&revisions);
    assert_eq!(
        reasons.len(),
        3,
        "one canary revision per step: {reasons:?}"
    );
    for (index, (reason, green)) in reasons.iter().zip([10.0, 50.0, 100.0]).enumerate() {
        assert!(
            reason.starts_with(&format!("canary step {}/3: {green} %", index + 1)),
            "{reasons:?}"
        );
        assert_eq!(revisions[index]["weights"]["green"], green);
    }
    assert!(reasons[1].contains("error rate 0.00 %"), "{reasons:?}");
    assert_eq!(canary_weight_metric(&proxy).await, Some(100.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_returning_500s_is_rolled_back_to_the_baseline() {
    let blue = Origin::new("blue").start().await;
    let green = StatusBackend::start("green", StatusCode::INTERNAL_SERVER_ERROR).await;
    let proxy = FileProxy::start(&config(blue.addr, green.addr, &canary())).await;

    act(&proxy, "start").await;
    let _traffic = Traffic::start(proxy.addr);
    let done = wait_for(&proxy, "rolled back", |v| v["state"] != "running").await;

    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["step"], 1);
    assert_eq!(done["error_rate"], 1.0, "{done}");
    assert_weights(&proxy, 100.0, 0.0).await;
    let reasons = reasons(&canary_revisions(&proxy).await);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[1].starts_with("canary rolled back at step 1/3: 10 %: error rate 100.00 %"),
        "{reasons:?}"
    );
    assert_eq!(canary_weight_metric(&proxy).await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_traffic_the_canary_stays_at_step_one() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = FileProxy::start(&config(blue.addr, green.addr, &canary())).await;

    let started = act(&proxy, "start").await;
    let step_started = started["step_started"].as_str().expect("step_started");
    let step_started = humantime::parse_rfc3339(step_started).expect("RFC 3339 step_started");
    // Five intervals (25 ticks) after the step began, it must still wait.
    let judged_by = step_started + Duration::from_secs(1);
    wait_for(&proxy, "past five intervals", |view| {
        assert_eq!(view["state"], "running", "{view}");
        assert_eq!(view["step"], 1, "{view}");
        SystemTime::now() > judged_by
    })
    .await;
    // Read after that moment: the controller has looked many times since.
    let view = view(&proxy).await;
    assert_at(&view, "running", 1);
    assert_eq!(view["step_requests"], 0, "{view}");
    assert!(
        view["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("0 of 5"),
        "{view}"
    );
    assert_eq!(canary_revisions(&proxy).await.len(), 1);
    assert_weights(&proxy, 90.0, 10.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_abort_through_the_api() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    // Steps of 1 s: the test aborts at step 2 long before it could pass.
    let slow_steps = canary().replace("\"200ms\"", "\"1s\"");
    let proxy = FileProxy::start(&config(blue.addr, green.addr, &slow_steps)).await;

    act(&proxy, "start").await;
    let paused = act(&proxy, "pause").await;
    assert_eq!(paused["state"], "paused", "{paused}");
    // Paused, traffic does not move it on.
    let traffic = Traffic::start(proxy.addr);
    let until = SystemTime::now() + Duration::from_millis(1500);
    wait_for(&proxy, "paused past an interval", |view| {
        assert_eq!(view["state"], "paused", "{view}");
        SystemTime::now() > until
    })
    .await;
    assert_eq!(act(&proxy, "resume").await["state"], "running");
    let second = wait_for(&proxy, "at step 2", |v| v["step"] == 2).await;
    assert_eq!(second["state"], "running", "{second}");
    drop(traffic);

    let aborted = act(&proxy, "abort").await;
    assert_eq!(aborted["state"], "aborted", "{aborted}");
    assert_weights(&proxy, 100.0, 0.0).await;
    let reasons = reasons(&canary_revisions(&proxy).await);
    let last = reasons.last().expect("a canary revision");
    assert!(
        last.starts_with("canary aborted through the admin API at step"),
        "{reasons:?}"
    );
    // Finished, it can start again.
    assert_eq!(act(&proxy, "start").await["step"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_actions_that_do_not_fit_are_refused() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = FileProxy::start(&config(blue.addr, green.addr, &canary())).await;

    let expect = |(status, body): (StatusCode, Value), wanted: StatusCode, words: &str| {
        assert_eq!(status, wanted, "{body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{message:?} lacks {words:?}");
    };
    expect(
        canary_action(&proxy, "nope", "start").await,
        StatusCode::NOT_FOUND,
        "no route called `nope`",
    );
    expect(
        canary_action(&proxy, "plain", "start").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no [routes.canary]",
    );
    expect(
        canary_action(&proxy, "web", "explode").await,
        StatusCode::NOT_FOUND,
        "no such canary action",
    );
    for action in ["pause", "resume", "abort"] {
        expect(
            canary_action(&proxy, "web", action).await,
            StatusCode::CONFLICT,
            "is idle",
        );
    }
    let (status, _) = proxy
        .admin_send(Method::POST, "/api/v1/routes/web/canary/start", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(view(&proxy).await["state"], "idle");

    act(&proxy, "start").await;
    expect(
        canary_action(&proxy, "web", "start").await,
        StatusCode::CONFLICT,
        "is running",
    );
    expect(
        canary_action(&proxy, "web", "resume").await,
        StatusCode::CONFLICT,
        "only a paused canary resumes",
    );
    let (status, body) = proxy
        .admin_send(Method::GET, "/api/v1/routes/web/canary/start", None, None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    // The plain route's view has no canary at all.
    assert_eq!(proxy.route("plain").await["route"]["canary"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_weight_change_pauses_the_canary() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = FileProxy::start(&config(blue.addr, green.addr, &canary())).await;

    act(&proxy, "start").await;
    let (status, body) = proxy
        .put_weights("web", &[("blue", 70.0), ("green", 30.0)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let paused = wait_for(&proxy, "paused", state_is("paused")).await;
    let reason = paused["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("outside the canary") && reason.contains("admin"),
        "{reason}"
    );
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 70.0), ("green", 30.0)]),
        "the canary leaves the operator's weights alone"
    );
    act(&proxy, "resume").await;
    assert_weights(&proxy, 90.0, 10.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_brings_the_canary_back_at_its_step() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    // Steps of 1 s: the test pauses at step 2 long before it could pass.
    let slow_steps = canary().replace("\"200ms\"", "\"1s\"");
    let proxy = FileProxy::start_with_state_file(&config(blue.addr, green.addr, &slow_steps)).await;

    act(&proxy, "start").await;
    let traffic = Traffic::start(proxy.addr);
    wait_for(&proxy, "at step 2", |v| v["step"] == 2).await;
    drop(traffic);
    assert_eq!(act(&proxy, "pause").await["step"], 2);

    let proxy = proxy.restart().await;
    let paused = view(&proxy).await;
    assert_at(&paused, "paused", 2);
    assert_weights(&proxy, 50.0, 50.0).await;
    assert_eq!(act(&proxy, "resume").await["step"], 2);

    // A running canary comes back running, its window started again.
    let before_restart = SystemTime::now();
    let proxy = proxy.restart().await;
    let running = view(&proxy).await;
    assert_at(&running, "running", 2);
    let step_started =
        humantime::parse_rfc3339(running["step_started"].as_str().unwrap_or_default())
            .expect("RFC 3339 step_started");
    // step_started is shown in whole milliseconds.
    assert!(
        step_started + Duration::from_millis(1) > before_restart,
        "{running}"
    );
}

// ---------------------------------------------------------------------------
// `sluicegate ctl canary` against a running proxy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_canary_commands_drive_a_running_proxy() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = FileProxy::start(&config(blue.addr, green.addr, &canary())).await;

    let output = proxy.ctl(&proxy.token, &["canary", "start", "web"]).await;
    assert!(output.status.success(), "{}", describe_output(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("web: blue=90 green=10"),
        "{}",
        describe_output(&output)
    );
    assert!(
        stdout.contains("web: canary running, step 1"),
        "{}",
        describe_output(&output)
    );

    let output = proxy
        .ctl(&proxy.token, &["--json", "canary", "pause", "web"])
        .await;
    assert!(output.status.success(), "{}", describe_output(&output));
    let answer: Value = serde_json::from_slice(&output.stdout).expect("--json prints JSON");
    assert_eq!(answer["route"]["canary"]["state"], "paused", "{answer}");

    let output = proxy.ctl(&proxy.token, &["canary", "pause", "web"]).await;
    assert!(!output.status.success(), "{}", describe_output(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("only a running canary pauses"),
        "{}",
        describe_output(&output)
    );

    let output = proxy.ctl(&proxy.token, &["canary", "resume", "web"]).await;
    assert!(output.status.success(), "{}", describe_output(&output));
    let output = proxy.ctl(&proxy.token, &["canary", "abort", "web"]).await;
    assert!(output.status.success(), "{}", describe_output(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("web: canary aborted, step 1"),
        "{}",
        describe_output(&output)
    );

    let output = proxy.ctl(&proxy.token, &["status", "web"]).await;
    assert!(output.status.success(), "{}", describe_output(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("  canary: aborted, step 1"),
        "{}",
        describe_output(&output)
    );
    let output = proxy.ctl(&proxy.token, &["canary", "start", "plain"]).await;
    assert!(!output.status.success(), "{}", describe_output(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no [routes.canary]"),
        "{}",
        describe_output(&output)
    );
}

/// A backend on 127.0.0.1:0 that reads each request and resets two
/// connections in five (RST before any answer); the others get a 200 and
/// the connection closes.
struct ResettingBackend {
    addr: SocketAddr,
    resets: Arc<AtomicUsize>,
    accept_loop: JoinHandle<()>,
}

impl ResettingBackend {
    async fn start() -> ResettingBackend {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let resets = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&resets);
        let accept_loop = tokio::spawn(async move {
            let mut accepted = 0usize;
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted += 1;
                let reset = accepted % 5 < 2;
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if reset {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.set_zero_linger();
                        return;
                    }
                    let answer =
                        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\ngreen";
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        ResettingBackend {
            addr,
            resets,
            accept_loop,
        }
    }
}

impl Drop for ResettingBackend {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_resetting_connections_fails_at_its_first_step_unseen_by_clients() {
    let blue = Origin::new("blue").start().await;
    let green = ResettingBackend::start().await;
    let canary_config = canary().replace(
        "min_requests = 5",
        "min_requests = 20\n  max_error_rate = 0.05",
    );
    let proxy = FileProxy::start(&config(blue.addr, green.addr, &canary_config)).await;

    act(&proxy, "start").await;
    // Every client request must come back 200: the retries on blue save them.
    let client_errors = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (errors, answered) = (Arc::clone(&client_errors), Arc::clone(&answered));
        let addr = proxy.addr;
        tokio::spawn(async move {
            loop {
                let mut client = Http1Client::connect(addr).await;
                while let Ok(resp) = client.send_streaming(get_request("canary.test", "/")).await {
                    if resp.status() != StatusCode::OK {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                    if resp.into_body().collect().await.is_err() {
                        errors.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let done = wait_for(&proxy, "ended", |v| v["state"] != "running").await;
    traffic.abort();

    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["step"], 1, "{done}");
    assert!(green.resets.load(Ordering::SeqCst) > 0);
    assert!(answered.load(Ordering::SeqCst) > 0);
    assert_eq!(
        client_errors.load(Ordering::SeqCst),
        0,
        "clients saw errors"
    );
    let reasons = reasons(&canary_revisions(&proxy).await);
    assert!(
        reasons.last().is_some_and(|r| r
            .starts_with("canary rolled back at step 1/3: 10 %: error rate")
            && r.contains("attempts) is above 5.00 %")),
        "{reasons:?}"
    );
}
