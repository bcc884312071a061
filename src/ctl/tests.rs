//! Tests of argument parsing and the command → request mapping, and
//! end-to-end runs of `execute` against a fake admin server.

use super::*;
use clap::Parser;

#[derive(Debug, Parser)]
struct TestCli {
    #[command(flatten)]
    ctl: CtlArgs,
}

pub(super) fn parse(argv: &[&str]) -> Result<CtlArgs, clap::Error> {
    let argv = std::iter::once("ctl").chain(argv.iter().copied());
    TestCli::try_parse_from(argv).map(|cli| cli.ctl)
}

pub(super) fn flag_token(value: &str) -> Option<Token> {
    Some(Token {
        value: value.to_string(),
        source: TokenSource::Flag,
    })
}

// ---- BACKEND=PCT ----

#[test]
fn backend_weight_parses_whole_and_two_decimal_percents() {
    let weight = |backend: &str, basis_points| BackendWeight {
        backend: backend.to_string(),
        basis_points,
    };
    assert_eq!(parse_backend_weight("blue=75"), Ok(weight("blue", 7500)));
    assert_eq!(
        parse_backend_weight("green=12.5"),
        Ok(weight("green", 1250))
    );
    assert_eq!(parse_backend_weight("g=0.01"), Ok(weight("g", 1)));
    assert_eq!(parse_backend_weight("g=100.00"), Ok(weight("g", 10_000)));
    assert_eq!(parse_backend_weight("g=0"), Ok(weight("g", 0)));
    assert_eq!(parse_backend_weight("g=25%"), Ok(weight("g", 2500)));
}

#[test]
fn malformed_backend_weights_are_rejected() {
    for bad in [
        "blue",
        "=75",
        "blue=",
        "blue=abc",
        "blue=-5",
        "blue=1e2",
        "blue=100.01",
        "blue=101",
        "blue=12.345",
        "blue=75.",
        "blue=.5",
        "blue=NaN",
        "blue= 75",
    ] {
        assert!(parse_backend_weight(bad).is_err(), "{bad} was accepted");
    }
    let message = parse_backend_weight("blue").unwrap_err();
    assert!(message.contains("BACKEND=PCT"), "{message}");
}

#[test]
fn set_with_a_malformed_weight_fails_at_parse_time() {
    let err = parse(&["set", "web", "blue=75", "green"]).unwrap_err();
    assert!(err.to_string().contains("BACKEND=PCT"), "{err}");
    assert!(
        parse(&["set", "web"]).is_err(),
        "set needs at least one weight"
    );
}

#[test]
fn set_body_sends_whole_percents_as_integers() {
    let args = parse(&[
        "set",
        "web",
        "blue=75",
        "green=12.5",
        "red=12.5",
        "--reason",
        "shift",
        "--if-revision",
        "12",
    ])
    .unwrap();
    let call = ApiCall::for_command(&args.command).unwrap();
    assert_eq!(call.method, Method::PUT);
    assert_eq!(call.path, "/api/v1/routes/web/weights");
    let body = call.body.unwrap().to_string();
    assert_eq!(
        body,
        r#"{"weights":{"blue":75,"green":12.5,"red":12.5},"reason":"shift","if_revision":12}"#
    );
}

#[test]
fn set_with_a_repeated_backend_fails_before_any_request() {
    let args = parse(&["set", "web", "blue=50", "blue=50"]).unwrap();
    let err = ApiCall::for_command(&args.command).unwrap_err();
    assert!(err.to_string().contains("more than once"), "{err}");
}

#[test]
fn global_flags_work_after_the_subcommand() {
    let args = parse(&["status", "web", "--json", "--admin", "http://h:1"]).unwrap();
    assert!(args.json);
    assert_eq!(args.admin, "http://h:1");
    let args = parse(&["status"]).unwrap();
    assert_eq!(args.admin, DEFAULT_ADMIN_URL);
}

// ---- URLs ----

#[test]
fn endpoints_are_percent_encoded_into_one_segment() {
    assert_eq!(encode_component("127.0.0.1:8082"), "127.0.0.1%3A8082");
    assert_eq!(encode_component("a/b c"), "a%2Fb%20c");
    assert_eq!(encode_component("[::1]:80"), "%5B%3A%3A1%5D%3A80");
    assert_eq!(encode_component("web-1_x.~"), "web-1_x.~");
    assert_eq!(encode_component("é"), "%C3%A9");
    let args = parse(&["drain", "web", "green", "https://10.0.0.5:8443"]).unwrap();
    let call = ApiCall::for_command(&args.command).unwrap();
    assert_eq!(
        call.path,
        "/api/v1/routes/web/backends/green/endpoints/https%3A%2F%2F10.0.0.5%3A8443/drain"
    );
}

#[test]
fn commands_map_to_the_admin_api() {
    let path = |argv: &[&str]| {
        let call = ApiCall::for_command(&parse(argv).unwrap().command).unwrap();
        (call.method, call.path, call.body.map(|b| b.to_string()))
    };
    assert_eq!(
        path(&["status"]),
        (Method::GET, "/api/v1/routes".into(), None)
    );
    assert_eq!(
        path(&["promote", "web", "green"]),
        (
            Method::POST,
            "/api/v1/routes/web/promote".into(),
            Some(r#"{"backend":"green"}"#.into())
        )
    );
    assert_eq!(
        path(&["rollback", "web"]),
        (
            Method::POST,
            "/api/v1/routes/web/rollback".into(),
            Some("{}".into())
        )
    );
    assert_eq!(
        path(&["rollback", "web", "--to-revision", "7"]).2,
        Some(r#"{"to_revision":7}"#.into())
    );
    assert_eq!(
        path(&["history", "--limit", "5", "--route", "a b"]).1,
        "/api/v1/history?limit=5&route=a%20b"
    );
    assert_eq!(path(&["history"]).1, "/api/v1/history");
    assert_eq!(
        path(&["history", "--before", "9"]).1,
        "/api/v1/history?before=9"
    );
    assert_eq!(
        path(&["promote", "web", "green", "--reason", "ok"]).2,
        Some(r#"{"backend":"green","reason":"ok"}"#.into())
    );
    assert_eq!(
        path(&["reload"]),
        (Method::POST, "/api/v1/reload".into(), None)
    );
    assert_eq!(
        path(&["undrain", "web", "green", "127.0.0.1:8082"]).1,
        "/api/v1/routes/web/backends/green/endpoints/127.0.0.1%3A8082/undrain"
    );
    assert_eq!(
        path(&["canary", "pause", "web"]).1,
        "/api/v1/routes/web/canary/pause"
    );
    assert!(parse(&["canary", "explode", "web"]).is_err());
    assert!(parse(&["history", "--limit", "0"]).is_err());
}

// ---- end to end against a fake admin server ----

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

const TOKEN: &str = "s3cret";

/// What the fake server saw: method, path and query, body.
type Seen = Arc<Mutex<Vec<(Method, String, String)>>>;

/// Answers canned JSON like the admin API; every request needs `TOKEN`.
async fn fake_admin() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Seen::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let log = Arc::clone(&log);
                    async move { Ok::<_, Infallible>(fake_answer(req, &log).await) }
                });
                let _ = server_http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen)
}

async fn fake_answer(req: Request<Incoming>, seen: &Seen) -> hyper::Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().to_string();
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    let body = req.into_body().collect().await.unwrap().to_bytes();
    seen.lock().unwrap().push((
        method.clone(),
        path.clone(),
        String::from_utf8_lossy(&body).into_owned(),
    ));
    let route = json!({"name": "web", "host": null, "path_prefix": "/", "override": true,
        "canary": null, "backends": [
            {"name": "blue", "desired_weight": 75.0, "effective_weight": 75.0,
             "endpoints": [{"address": "127.0.0.1:8081", "healthy": true, "draining": false}]},
            {"name": "green", "desired_weight": 25.0, "effective_weight": 25.0,
             "endpoints": [{"address": "127.0.0.1:8082", "healthy": true, "draining": true}]}]});
    let (status, answer) = if !authorized {
        (401, json!({"error": "unauthorized"}))
    } else {
        match (method.as_str(), path.as_str()) {
            ("GET", "/api/v1/routes") => (200, json!({"revision": 13, "routes": [route]})),
            ("GET", "/api/v1/routes/nope") => (404, json!({"error": "unknown route \"nope\""})),
            ("PUT", "/api/v1/routes/web/weights") => (200, json!({"revision": 14, "route": route})),
            ("POST", "/api/v1/routes/web/canary/start") => {
                let mut route = route.clone();
                route["canary"] = json!({"state": "running", "step": 1, "steps": [10.0, 100.0],
                    "weight": 10.0, "reason": "started"});
                (200, json!({"revision": 14, "route": route}))
            }
            ("GET", "/api/v1/routes/web") => {
                let mut route = route.clone();
                route["canary"] = json!({"state": "succeeded", "step": 2, "steps": [10.0, 100.0],
                    "weight": 100.0, "reason": "promoted: step 2/2: 100 % passed"});
                (200, json!({"revision": 15, "route": route}))
            }
            ("POST", "/api/v1/reload") => (
                422,
                json!({"error": "invalid config", "errors": [
                "sluicegate.toml:3:5: routes[0].backends: weights sum to 90, not 100",
                "sluicegate.toml:9:1: listeners: at least one listener is needed"]}),
            ),
            ("POST", "/api/v1/routes/web/backends/green/endpoints/127.0.0.1%3A8082/drain") => {
                (200, json!({"revision": 14, "route": route}))
            }
            _ => (
                404,
                json!({"error": format!("no such endpoint: {method} {path}")}),
            ),
        }
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp
}

async fn run_ctl(url: &str, token: Option<Token>, argv: &[&str]) -> Result<String, CtlError> {
    let mut full = vec!["--admin", url];
    full.extend_from_slice(argv);
    execute(&parse(&full).unwrap(), token).await
}

#[tokio::test]
async fn status_and_set_work_against_an_admin_server() {
    let (url, seen) = fake_admin().await;
    let text = run_ctl(&url, flag_token(TOKEN), &["status"]).await.unwrap();
    assert!(
        text.contains("  blue     75       75         1/1\n"),
        "{text}"
    );
    assert!(
        text.contains("  draining: green 127.0.0.1:8082\n"),
        "{text}"
    );

    let text = run_ctl(
        &url,
        flag_token(TOKEN),
        &["set", "web", "blue=75", "green=25", "--reason", "r"],
    )
    .await
    .unwrap();
    assert_eq!(text, "web: blue=75 green=25 (revision 14)\n");
    let (method, path, body) = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (method, path.as_str()),
        (Method::PUT, "/api/v1/routes/web/weights")
    );
    assert_eq!(body, r#"{"weights":{"blue":75,"green":25},"reason":"r"}"#);
}

#[tokio::test]
async fn json_flag_prints_the_servers_answer() {
    let (url, _) = fake_admin().await;
    let text = run_ctl(&url, flag_token(TOKEN), &["--json", "status"])
        .await
        .unwrap();
    let printed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(printed["revision"], 13);
    assert!(text.contains("\n  \"revision\": 13"), "not pretty: {text}");
}

#[tokio::test]
async fn wrong_token_says_how_to_pass_one() {
    let (url, _) = fake_admin().await;
    let err = run_ctl(&url, flag_token("wrong"), &["status"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unauthorized: pass --token, set SLUICEGATE_ADMIN_TOKEN, or run where \
         sluicegate-admin.token is (the token from --token was rejected)"
    );
    let err = run_ctl(&url, None, &["status"]).await.unwrap_err();
    assert!(err.to_string().ends_with("(no token was sent)"), "{err}");
}

#[tokio::test]
async fn invalid_reload_prints_each_config_error_on_its_own_line() {
    let (url, _) = fake_admin().await;
    let err = run_ctl(&url, flag_token(TOKEN), &["reload"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "422 Unprocessable Entity: invalid config\n\
         sluicegate.toml:3:5: routes[0].backends: weights sum to 90, not 100\n\
         sluicegate.toml:9:1: listeners: at least one listener is needed"
    );
}

#[tokio::test]
async fn unknown_route_prints_the_servers_message() {
    let (url, _) = fake_admin().await;
    let err = run_ctl(&url, flag_token(TOKEN), &["status", "nope"])
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "404 Not Found: unknown route \"nope\"");
}

#[tokio::test]
async fn drain_sends_the_endpoint_as_one_encoded_segment() {
    let (url, seen) = fake_admin().await;
    let text = run_ctl(
        &url,
        flag_token(TOKEN),
        &["drain", "web", "green", "127.0.0.1:8082"],
    )
    .await
    .unwrap();
    assert_eq!(text, "web: draining green 127.0.0.1:8082\n");
    let (_, path, _) = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        path,
        "/api/v1/routes/web/backends/green/endpoints/127.0.0.1%3A8082/drain"
    );
}

#[tokio::test]
async fn a_closed_port_says_sluicegate_may_not_be_running() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = run_ctl(&url, None, &["status"]).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot reach the admin API at {url}: ")),
        "{text}"
    );
    assert!(text.ends_with("(is sluicegate running? --admin)"), "{text}");
}

#[tokio::test]
async fn a_non_json_error_hints_at_the_wrong_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = service_fn(|_req: Request<Incoming>| async {
            let mut resp = hyper::Response::new(Full::new(Bytes::from("no route matches\n")));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            Ok::<_, Infallible>(resp)
        });
        let _ = server_http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    let err = run_ctl(&url, None, &["status"]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "404 Not Found: \"no route matches\" (not an admin API answer; is --admin the admin address?)"
    );
}

// ---- waiting ----

use std::time::SystemTime;

use wait::{Printer, Progress};

#[test]
fn wait_flags_parse_and_go_with_their_commands() {
    let args = parse(&["canary", "start", "web", "--wait", "--timeout", "90s"]).unwrap();
    assert_eq!(
        wait::Wait::of(&args.command).unwrap(),
        Some(wait::Wait::Canary {
            action: CanaryAction::Start,
            route: "web",
            timeout: Some(Duration::from_secs(90)),
        })
    );
    let args = parse(&["canary", "approve", "web", "--wait"]).unwrap();
    assert!(matches!(
        wait::Wait::of(&args.command).unwrap(),
        Some(wait::Wait::Canary { timeout: None, .. })
    ));
    let args = parse(&["status", "--wait-revision", "14", "--timeout", "10m"]).unwrap();
    assert_eq!(
        wait::Wait::of(&args.command).unwrap(),
        Some(wait::Wait::Revision {
            revision: 14,
            timeout: Some(Duration::from_secs(600)),
        })
    );
    assert_eq!(
        wait::Wait::of(&parse(&["canary", "start", "web"]).unwrap().command).unwrap(),
        None
    );
    let pause = parse(&["canary", "pause", "web", "--wait"]).unwrap();
    let err = wait::Wait::of(&pause.command).unwrap_err();
    assert!(
        err.to_string().contains("start, resume or approve"),
        "{err}"
    );
    // --timeout needs the wait it limits, and a duration with a unit.
    assert!(parse(&["canary", "start", "web", "--timeout", "90s"]).is_err());
    assert!(parse(&["status", "--timeout", "90s"]).is_err());
    assert!(parse(&["canary", "start", "web", "--wait", "--timeout", "90"]).is_err());
}

#[test]
fn approve_maps_to_its_endpoint() {
    let call =
        ApiCall::for_command(&parse(&["canary", "approve", "web"]).unwrap().command).unwrap();
    assert_eq!(
        (call.method, call.path.as_str(), call.body),
        (Method::POST, "/api/v1/routes/web/canary/approve", None)
    );
}

#[test]
fn canary_states_map_to_exit_codes() {
    let progress = |state: &str| Progress {
        state: state.to_string(),
        step: Some(1),
        steps: Some(2),
        weight: Some(10.0),
        reason: None,
    };
    let code = |state: &str| progress(state).end("web").map(|end| end.exit_code());
    assert_eq!(code("succeeded"), Some(0));
    assert_eq!(code("failed"), Some(1));
    assert_eq!(code("aborted"), Some(2));
    assert_eq!(code("idle"), Some(1));
    for waiting in ["running", "paused", "awaiting_approval", "something_new"] {
        assert_eq!(code(waiting), None, "{waiting} ended the wait");
    }
    let idle = progress("idle").end("web").unwrap();
    assert!(idle.message().unwrap().contains("went idle"), "{idle:?}");
    assert_eq!(WaitEnd::Reached.exit_code(), 0);
    assert_eq!(WaitEnd::TimedOut("t".into()).exit_code(), 3);
    assert_eq!(WaitEnd::Stopped("s".into()).exit_code(), 1);
    assert_eq!(WaitEnd::Aborted.message(), None);
}

#[test]
fn a_step_line_has_time_state_step_weight_and_reason() {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_220_191);
    let view = json!({"state": "running", "step": 2, "steps": [10.0, 50.0, 100.0],
        "weight": 50.0, "step_requests": 3, "reason": "checks pass so far"});
    let progress = Progress::of(&view).unwrap();
    assert_eq!(
        progress.line(time),
        "2026-12-02T14:03:11Z  running  step 2/3  weight 50 %  checks pass so far"
    );
    let idle = Progress::of(
        &json!({"state": "idle", "step": null, "steps": [12.5, 100.0],
        "weight": 0.0, "reason": null}),
    )
    .unwrap();
    assert_eq!(
        idle.line(time),
        "2026-12-02T14:03:11Z  idle  step -/2  weight 0 %"
    );
    assert_eq!(Progress::of(&Value::Null), None);
}

async fn run_wait(url: &str, argv: &[&str]) -> (Result<WaitEnd, CtlError>, String, String) {
    let mut full = vec!["--admin", url];
    full.extend_from_slice(argv);
    let mut printer = Printer::new(Vec::new(), Vec::new());
    let args = parse(&full).unwrap();
    let wait = wait::Wait::of(&args.command)
        .unwrap()
        .expect("a command that waits");
    let end = wait::execute(&args, wait, flag_token(TOKEN), &mut printer).await;
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (end, text(printer.out), text(printer.err))
}

#[tokio::test]
async fn canary_wait_prints_the_dashboard_url_and_each_change() {
    let (url, seen) = fake_admin().await;
    let (end, out, err) = run_wait(&url, &["canary", "start", "web", "--wait"]).await;
    assert_eq!(end.unwrap(), WaitEnd::Reached, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "web: blue=75 green=25 (revision 14)", "{out}");
    assert_eq!(lines[1], format!("dashboard: {url}/#route=web"), "{out}");
    assert!(
        lines[2].ends_with("  running  step 1/2  weight 10 %  started"),
        "{out}"
    );
    assert!(
        lines[3].ends_with("  succeeded  step 2/2  weight 100 %  promoted: step 2/2: 100 % passed"),
        "{out}"
    );
    assert_eq!(lines.len(), 4, "{out}");
    let paths: Vec<String> = seen.lock().unwrap().iter().map(|s| s.1.clone()).collect();
    assert_eq!(
        paths,
        ["/api/v1/routes/web/canary/start", "/api/v1/routes/web"]
    );
}

#[tokio::test]
async fn revision_wait_ends_when_reached_or_times_out() {
    let (url, _) = fake_admin().await;
    let (end, out, _) = run_wait(&url, &["status", "--wait-revision", "13"]).await;
    assert_eq!(end.unwrap(), WaitEnd::Reached);
    assert!(out.starts_with("revision 13\n"), "{out}");

    let started = std::time::Instant::now();
    let (end, out, _) = run_wait(
        &url,
        &["status", "--wait-revision", "14", "--timeout", "300ms"],
    )
    .await;
    let end = end.unwrap();
    assert_eq!(end.exit_code(), 3, "{end:?}");
    assert!(end.message().unwrap().contains("applied: 13"), "{end:?}");
    assert_eq!(out, "");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn revision_wait_retries_while_the_api_cannot_be_reached() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (end, _, err) = run_wait(
        &url,
        &["status", "--wait-revision", "1", "--timeout", "1500ms"],
    )
    .await;
    assert_eq!(end.unwrap().exit_code(), 3);
    assert_eq!(
        err.matches("cannot reach the admin API").count(),
        1,
        "{err}"
    );
    assert!(err.contains("retrying"), "{err}");
}

#[tokio::test]
async fn canary_wait_with_json_prints_one_object_a_line() {
    let (url, _) = fake_admin().await;
    let (end, out, _) = run_wait(&url, &["--json", "canary", "start", "web", "--wait"]).await;
    assert_eq!(end.unwrap(), WaitEnd::Reached);
    let lines: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0]["revision"], 14);
    assert_eq!(lines[1]["dashboard"], format!("{url}/#route=web"));
    assert_eq!(
        (&lines[2]["state"], &lines[2]["step"], &lines[2]["steps"]),
        (&json!("running"), &json!(1), &json!(2))
    );
    assert_eq!(lines[3]["state"], "succeeded");
    assert_eq!(lines[3]["weight"], 100.0);
    assert!(lines[3]["time"].as_str().unwrap().ends_with('Z'), "{out}");
}

#[test]
fn in_a_fleet_the_instances_behind_are_named() {
    let instance = |name: &str, connected: bool, applied: u64| {
        json!({"instance": name, "version": "0.1.0", "connected": connected,
            "applied_revision": applied, "last_seen": "2026-12-02T14:03:11Z", "routes": {}})
    };
    let fleet: crate::control::admin::api::FleetAnswer = serde_json::from_value(json!({
        "instances": [instance("a", true, 14), instance("b", true, 12), instance("c", false, 3)]
    }))
    .unwrap();
    assert_eq!(wait::instances_behind(&fleet, 14), ["b at 12", "c at 3"]);
    assert_eq!(wait::instances_behind(&fleet, 3), Vec::<String>::new());
}
