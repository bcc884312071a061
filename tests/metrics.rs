//! Prometheus metrics, the stats endpoint and the access log (SPEC §4): real
//! traffic through the proxy, then the figures scraped from the admin
//! listener must equal what was sent; open tunnels in their gauge; and the
//! real `promtool check metrics` clean on a scrape after traffic.

pub mod support;

use std::net::SocketAddr;
use std::process::Stdio;

use http::{Method, Request, StatusCode, Version};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use support::admin::FileProxy;
use support::body::{TestBody, empty};
use support::client::{get, sample, scrape};
use support::config_text::{H1Path, LISTENER, backend, backend_with, listener_on, route};
use support::grpc::ws_echo;
use support::origin::{Answers, Origin, RunningOrigin};
use support::{PATIENCE, eventually_async};

const HOST_NAME: &str = "metrics.test";

/// Route `web`: blue 90 / green 10, passive ejection off (some tests send 5xx
/// on purpose).
fn two_backends(
    listener: &str,
    blue: &RunningOrigin,
    green: &RunningOrigin,
    extra_tables: &str,
) -> String {
    let no_ejection = "    [routes.backends.outlier]\n    consecutive_failures = 0\n";
    format!(
        "{listener}{extra_tables}{}",
        route(
            "web",
            "",
            "",
            &[
                format!("{}{no_ejection}", backend("blue", Some("90"), &[blue.addr])),
                format!(
                    "{}{no_ejection}",
                    backend("green", Some("10"), &[green.addr])
                ),
            ],
        )
    )
}

fn requests(text: &str, backend: &str, code: &str) -> f64 {
    sample(
        text,
        "sluicegate_requests_total",
        &[("route", "web"), ("backend", backend), ("code", code)],
    )
    .unwrap_or_else(|| panic!("no requests_total for {backend} {code} in\n{text}"))
}

async fn requests_are_counted_per_backend_and_status_class(path: H1Path) {
    let (blue, green) = (
        Origin::new("blue").start().await,
        Origin::new("green").start().await,
    );
    let proxy = FileProxy::start(&two_backends(&listener_on(path), &blue, &green, "")).await;

    for _ in 0..100 {
        assert_eq!(get(proxy.addr, HOST_NAME, "/").await.status, StatusCode::OK);
    }
    for _ in 0..20 {
        let status = get(proxy.addr, HOST_NAME, "/status/503").await.status;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    for _ in 0..10 {
        let status = get(proxy.addr, HOST_NAME, "/status/404").await.status;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    let text = scrape(&proxy).await;
    // Smooth WRR at 90/10 is exact on every run of 10 requests.
    assert_eq!(requests(&text, "blue", "2xx"), 90.0);
    assert_eq!(requests(&text, "green", "2xx"), 10.0);
    assert_eq!(requests(&text, "blue", "5xx"), 18.0);
    assert_eq!(requests(&text, "green", "5xx"), 2.0);
    assert_eq!(requests(&text, "blue", "4xx"), 9.0);
    assert_eq!(requests(&text, "green", "4xx"), 1.0);
    let labels = [("route", "web"), ("backend", "blue")];
    assert_eq!(
        sample(&text, "sluicegate_request_duration_seconds_count", &labels),
        Some(117.0)
    );
    let within_10s = [("route", "web"), ("backend", "blue"), ("le", "10")];
    assert_eq!(
        sample(
            &text,
            "sluicegate_request_duration_seconds_bucket",
            &within_10s
        ),
        Some(117.0)
    );
    assert!(text.contains("# TYPE sluicegate_request_duration_seconds histogram"));
    assert!(sample(&text, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0));
}

async fn unmatched_requests_are_counted_without_route(path: H1Path) {
    let blue = Origin::new("blue").start().await;
    let config = format!(
        "{}{}",
        listener_on(path),
        route(
            "web",
            &format!("host = \"{HOST_NAME}\""),
            "",
            &[backend("blue", None, &[blue.addr])],
        )
    );
    let proxy = FileProxy::start(&config).await;
    for _ in 0..3 {
        let status = get(proxy.addr, "elsewhere.test", "/").await.status;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let text = scrape(&proxy).await;
    let unmatched = [("route", ""), ("backend", ""), ("code", "4xx")];
    assert_eq!(
        sample(&text, "sluicegate_requests_total", &unmatched),
        Some(3.0)
    );
}

async fn weight_and_revision_gauges_follow_admin_changes(path: H1Path) {
    let (blue, green) = (
        Origin::new("blue").start().await,
        Origin::new("green").start().await,
    );
    let proxy = FileProxy::start(&two_backends(&listener_on(path), &blue, &green, "")).await;
    let weight = |text: &str, backend: &str, kind: &str| {
        sample(
            text,
            "sluicegate_backend_weight",
            &[("route", "web"), ("backend", backend), ("kind", kind)],
        )
    };
    let text = scrape(&proxy).await;
    assert_eq!(weight(&text, "green", "desired"), Some(10.0));
    assert_eq!(weight(&text, "blue", "effective"), Some(90.0));

    let (status, _) = proxy
        .put_weights("web", &[("blue", 25.5), ("green", 74.5)])
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = scrape(&proxy).await;
    assert_eq!(weight(&text, "green", "desired"), Some(74.5));
    assert_eq!(weight(&text, "blue", "effective"), Some(25.5));
    let revision = proxy.revision().await as f64;
    assert_eq!(
        sample(&text, "sluicegate_config_revision", &[]),
        Some(revision)
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(&text, "sluicegate_build_info", &[("version", version)]),
        Some(1.0)
    );
}

async fn health_gauges_and_failovers_follow_a_dead_backend(path: H1Path) {
    let blue = RunningOrigin::switchable("blue").await;
    let green = RunningOrigin::switchable("green").await;
    let health = support::config_text::FAST_HEALTH;
    let config = format!(
        "{}{}",
        listener_on(path),
        route(
            "web",
            "",
            "",
            &[
                format!("{}{health}", backend("blue", Some("50"), &[blue.addr])),
                format!("{}{health}", backend("green", Some("50"), &[green.addr])),
            ],
        )
    );
    let proxy = FileProxy::start(&config).await;
    let green_endpoint = green.addr.to_string();
    let healthy = |text: &str| {
        sample(
            text,
            "sluicegate_endpoint_healthy",
            &[
                ("route", "web"),
                ("backend", "green"),
                ("endpoint", &green_endpoint),
            ],
        )
    };
    assert_eq!(healthy(&scrape(&proxy).await), Some(1.0));

    green.set_health(500);
    eventually_async("green to be reported unhealthy", || async {
        let text = scrape(&proxy).await;
        healthy(&text) == Some(0.0)
            && sample(
                &text,
                "sluicegate_backend_weight",
                &[("route", "web"), ("backend", "blue"), ("kind", "effective")],
            ) == Some(100.0)
    })
    .await;
    let text = scrape(&proxy).await;
    let green_labels = [("route", "web"), ("backend", "green")];
    assert_eq!(
        sample(&text, "sluicegate_failovers_total", &green_labels),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluicegate_backend_weight",
            &[("route", "web"), ("backend", "green"), ("kind", "desired")]
        ),
        Some(50.0)
    );

    green.set_health(200);
    eventually_async("green to be healthy again", || async {
        healthy(&scrape(&proxy).await) == Some(1.0)
    })
    .await;
}

async fn retries_are_counted_against_the_failed_backend(path: H1Path) {
    let blue = Origin::new("blue").start().await;
    // Nothing listens here: every connect is refused.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let config = format!(
        "{}{}",
        listener_on(path),
        route(
            "web",
            "",
            "retries = 2",
            &[backend("blue", None, &[dead, blue.addr])],
        )
    );
    let proxy = FileProxy::start(&config).await;
    for _ in 0..4 {
        assert_eq!(get(proxy.addr, HOST_NAME, "/").await.status, StatusCode::OK);
    }
    let text = scrape(&proxy).await;
    let retries = sample(
        &text,
        "sluicegate_upstream_retries_total",
        &[("route", "web"), ("backend", "blue")],
    )
    .expect("retries counter");
    // Round-robin sends half of the first attempts to the dead endpoint.
    assert_eq!(retries, 2.0);
    assert_eq!(requests(&text, "blue", "2xx"), 4.0);
}

async fn reloads_are_counted_ok_and_error(path: H1Path) {
    let (blue, green) = (
        Origin::new("blue").start().await,
        Origin::new("green").start().await,
    );
    let proxy = FileProxy::start(&two_backends(&listener_on(path), &blue, &green, "")).await;
    let reloads = |text: &str, result: &str| {
        sample(
            text,
            "sluicegate_config_reloads_total",
            &[("result", result)],
        )
    };

    proxy.write_config_raw("this is not = = toml");
    let (status, _) = proxy
        .admin_send(Method::POST, "/api/v1/reload", None, Some(&proxy.token))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    eventually_async("the refused reload to be counted", || async {
        reloads(&scrape(&proxy).await, "error").is_some_and(|n| n >= 1.0)
    })
    .await;

    let changed = two_backends(&listener_on(path), &blue, &green, "")
        .replace("weight = 90", "weight = 80")
        .replace("weight = 10", "weight = 20");
    proxy.write_config(&changed);
    proxy
        .wait_for_weights("web", &[("blue", 80.0), ("green", 20.0)])
        .await;
    let text = scrape(&proxy).await;
    assert!(reloads(&text, "ok").is_some_and(|n| n >= 1.0), "{text}");
}

async fn stats_endpoint_counts_the_current_interval(path: H1Path) {
    let (blue, green) = (
        Origin::new("blue").start().await,
        Origin::new("green").start().await,
    );
    let proxy = FileProxy::start(&two_backends(&listener_on(path), &blue, &green, "")).await;
    for _ in 0..10 {
        get(proxy.addr, HOST_NAME, "/").await;
    }
    get(proxy.addr, HOST_NAME, "/status/500").await;

    let (status, stats) = proxy.admin_get("/api/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["interval_seconds"], 10);
    let count = |backend: &str, field: &str| -> u64 {
        let view = &stats["routes"]["web"]["backends"][backend];
        // The requests may straddle an interval boundary.
        let last = view["points"]
            .as_array()
            .and_then(|p| p.last())
            .map_or(0, |p| p[field].as_u64().unwrap_or(0));
        last + view["current"][field].as_u64().unwrap_or(0)
    };
    assert_eq!(count("blue", "requests") + count("green", "requests"), 11);
    assert_eq!(count("blue", "requests"), 10);
    assert_eq!(count("blue", "errors"), 1);
    let points: &Vec<Value> = stats["routes"]["web"]["backends"]["green"]["points"]
        .as_array()
        .expect("points");
    assert!(points.len() >= 80, "15 minutes of points: {}", points.len());
    assert!(
        points
            .windows(2)
            .all(|w| w[0]["t"].as_u64() < w[1]["t"].as_u64())
    );
}

async fn access_log_file_gets_one_json_line_per_request(path: H1Path) {
    let (blue, green) = (
        Origin::new("blue").start().await,
        Origin::new("green").start().await,
    );
    let table = "[access_log]\nformat = \"json\"\npath = \"access.log\"\n\n";
    let proxy = FileProxy::start(&two_backends(&listener_on(path), &blue, &green, table)).await;
    for _ in 0..10 {
        assert_eq!(
            get(proxy.addr, HOST_NAME, "/download/1000").await.status,
            StatusCode::OK
        );
    }
    let path = proxy.dir.file("access.log");
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
            .collect()
    };
    eventually_async("10 access log lines", || async { lines().len() == 10 }).await;
    let lines = lines();
    let blue_lines = lines.iter().filter(|l| l["backend"] == "blue").count();
    assert_eq!(blue_lines, 9);
    for line in &lines {
        assert_eq!(line["status"], 200);
        assert_eq!(line["route"], "web");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["path"], "/download/1000");
        assert_eq!(line["host"], HOST_NAME);
        assert_eq!(line["bytes"], 1000);
        assert_eq!(line["retries"], 0);
        assert_eq!(line["client"], "127.0.0.1");
        assert!(
            line["endpoint"]
                .as_str()
                .is_some_and(|e| e.starts_with("127.0.0.1:"))
        );
        assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
        assert!(line["revision"].as_u64().is_some_and(|r| r >= 1));
    }
}

/// A WebSocket opened through the proxy with an HTTP/1.1 Upgrade.
async fn ws_http1(addr: SocketAddr) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
    let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("WebSocket handshake through the proxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// A WebSocket opened through the proxy with an HTTP/2 extended CONNECT
/// (RFC 8441); the sender keeps the h2 connection alive.
async fn ws_h2(
    addr: SocketAddr,
) -> (
    http2::SendRequest<TestBody>,
    WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect to proxy");
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri("http://ws.test/ws")
        .header("sec-websocket-version", "13")
        .body(empty())
        .expect("extended CONNECT");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    sender.ready().await.expect("h2 connection ready");
    let resp = sender.send_request(req).await.expect("CONNECT sent");
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "extended CONNECT is answered 200"
    );
    let upgraded = hyper::upgrade::on(resp).await.expect("h2 tunnel");
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    (sender, ws)
}

fn tunnels_open(text: &str, backend: &str) -> Option<f64> {
    sample(
        text,
        "sluicegate_tunnels_open",
        &[("route", "web"), ("backend", backend)],
    )
}

// One path only: tunnels are WebSocket over HTTP/1.1 and extended CONNECT over h2.
#[tokio::test]
async fn open_tunnels_are_counted_until_they_close() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let green = Origin::new("green")
        .answer(Answers::Protocols)
        .start()
        .await;
    let config = format!(
        "{LISTENER}{}",
        route(
            "web",
            "",
            "",
            &[
                backend_with("blue", Some("100"), &[blue.endpoint()], &[]),
                backend_with("green", Some("0"), &[green.endpoint()], &[]),
            ],
        )
    );
    let proxy = FileProxy::start(&config).await;
    let text = scrape(&proxy).await;
    assert_eq!(tunnels_open(&text, "blue"), Some(0.0), "{text}");
    assert!(
        text.contains("# TYPE sluicegate_tunnels_open gauge"),
        "{text}"
    );

    let mut upgraded = ws_http1(proxy.addr).await;
    assert_eq!(ws_echo(&mut upgraded, "one").await, "blue: one");
    assert_eq!(tunnels_open(&scrape(&proxy).await, "blue"), Some(1.0));

    let (h2_connection, mut extended) = ws_h2(proxy.addr).await;
    assert_eq!(ws_echo(&mut extended, "two").await, "blue: two");
    assert_eq!(tunnels_open(&scrape(&proxy).await, "blue"), Some(2.0));

    upgraded
        .close(None)
        .await
        .expect("close the HTTP/1.1 WebSocket");
    drop(upgraded);
    eventually_async("the HTTP/1.1 tunnel to leave the gauge", || async {
        tunnels_open(&scrape(&proxy).await, "blue") == Some(1.0)
    })
    .await;

    // The client goes away without a close frame: the h2 connection drops.
    drop(extended);
    drop(h2_connection);
    eventually_async("the h2 tunnel to leave the gauge", || async {
        tunnels_open(&scrape(&proxy).await, "blue") == Some(0.0)
    })
    .await;
    assert_eq!(tunnels_open(&scrape(&proxy).await, "green"), Some(0.0));
}

/// The series (sample lines) of `text` for which `keep` holds.
fn series_where(text: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && keep(l))
        .map(str::to_string)
        .collect()
}

// One path only: which series exist does not depend on the path traffic took.
#[tokio::test]
async fn no_placeholder_series_for_unmatched_requests_until_one_comes() {
    let (blue, green) = (
        Origin::new("blue").start().await,
        Origin::new("green").start().await,
    );
    let config = format!(
        "{LISTENER}{}",
        route(
            "web",
            &format!("host = \"{HOST_NAME}\""),
            "",
            &[
                backend("blue", Some("90"), &[blue.addr]),
                backend("green", Some("10"), &[green.addr]),
            ],
        )
    );
    let proxy = FileProxy::start(&config).await;
    for _ in 0..10 {
        assert_eq!(get(proxy.addr, HOST_NAME, "/").await.status, StatusCode::OK);
    }
    let text = scrape(&proxy).await;
    let placeholders = series_where(&text, |l| l.contains("backend=\"\""));
    assert!(
        placeholders.is_empty(),
        "series without a backend before any unmatched request: {placeholders:?}"
    );

    assert_eq!(
        get(proxy.addr, "elsewhere.test", "/").await.status,
        StatusCode::NOT_FOUND
    );
    let text = scrape(&proxy).await;
    let unmatched = series_where(&text, |l| l.contains("route=\"\""));
    let names: Vec<&str> = unmatched
        .iter()
        .filter_map(|l| l.split('{').next())
        .collect();
    // The 4xx it got and its latency: no other class, no retries, failovers,
    // mirror outcomes or tunnels for a request that reached no backend.
    assert!(
        names.iter().all(|n| [
            "sluicegate_requests_total",
            "sluicegate_request_duration_seconds_bucket",
            "sluicegate_request_duration_seconds_sum",
            "sluicegate_request_duration_seconds_count",
        ]
        .contains(n)),
        "{unmatched:?}"
    );
    assert_eq!(
        series_where(&text, |l| l
            .starts_with("sluicegate_requests_total{route=\"\"")),
        vec!["sluicegate_requests_total{route=\"\",backend=\"\",code=\"4xx\"} 1".to_string()]
    );
}

// One path only: mirroring always takes the hyper path.
#[tokio::test]
async fn mirror_series_exist_only_for_the_mirror_backend_of_a_mirrored_route() {
    let (blue, green) = (
        Origin::new("blue").start().await,
        Origin::new("green").start().await,
    );
    let echo = Origin::new("echo").start().await;
    let plain = route(
        "plain",
        "path_prefix = \"/plain\"",
        "",
        &[backend("echo", None, &[echo.addr])],
    );
    let mirror = "\n  [routes.mirror]\n  backend = \"green\"\n  percent = 100\n";
    let web = two_backends(LISTENER, &blue, &green, "").replacen(LISTENER, "", 1);
    let proxy = FileProxy::start(&format!("{LISTENER}{plain}{web}{mirror}")).await;

    let text = scrape(&proxy).await;
    let mirror_series =
        |text: &str| series_where(text, |l| l.starts_with("sluicegate_mirror_total{"));
    let at_start = mirror_series(&text);
    assert_eq!(
        at_start.len(),
        4,
        "four outcomes of web's green: {at_start:?}"
    );
    assert!(
        at_start
            .iter()
            .all(|l| l.contains("route=\"web\",backend=\"green\"") && l.ends_with(" 0")),
        "{at_start:?}"
    );

    for _ in 0..10 {
        get(proxy.addr, HOST_NAME, "/").await;
        get(proxy.addr, HOST_NAME, "/plain").await;
    }
    let mirrored = |text: &str| {
        ["match", "mismatch", "error", "skipped"]
            .iter()
            .filter_map(|outcome| {
                sample(
                    text,
                    "sluicegate_mirror_total",
                    &[("route", "web"), ("backend", "green"), ("outcome", outcome)],
                )
            })
            .sum::<f64>()
    };
    eventually_async("the ten mirrored copies to be counted", || async {
        mirrored(&scrape(&proxy).await) == 10.0
    })
    .await;
    let after = mirror_series(&scrape(&proxy).await);
    assert_eq!(after.len(), 4, "still only web's green: {after:?}");
}

/// Runs the real `promtool check metrics` on `text`; its complaints, if any.
async fn promtool_complaints(text: &str) -> Option<String> {
    let spawned = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot run `promtool` ({e}): this test needs it on PATH; on Debian \
             `apt-get install -y --no-install-recommends prometheus` (.ci/run installs it)"
        ),
    };
    let mut stdin = child.stdin.take().expect("promtool stdin");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("write the metrics to promtool");
    drop(stdin);
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("promtool finished within PATIENCE")
        .expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (!output.status.success() || !said.trim().is_empty())
        .then(|| format!("promtool exit {:?}:\n{said}", output.status.code()))
}

// One path only: it checks the exposition format, whatever path the traffic took.
#[tokio::test]
async fn metrics_pass_promtool_check_after_traffic() {
    let (blue, green) = (
        Origin::new("blue").start().await,
        Origin::new("green").start().await,
    );
    let echo = Origin::new("echo").answer(Answers::Protocols).start().await;
    // A WebSocket route first, then `web` with a canary (gauge) and a mirror.
    let ws_route = route(
        "sockets",
        "path_prefix = \"/ws\"",
        "",
        &[backend_with("echo", None, &[echo.endpoint()], &[])],
    );
    let extras = "\n  [routes.mirror]\n  backend = \"green\"\n  percent = 100\n\n  \
                  [routes.canary]\n  baseline = \"blue\"\n  canary = \"green\"\n  \
                  steps = [10, 50, 100]\n  interval = \"1m\"\n";
    let web = two_backends(LISTENER, &blue, &green, "").replacen(LISTENER, "", 1);
    let config = format!("{LISTENER}{ws_route}{web}{extras}");
    let proxy = FileProxy::start(&config).await;

    for path in ["/", "/status/503", "/status/404", "/download/100"] {
        for _ in 0..10 {
            get(proxy.addr, HOST_NAME, path).await;
        }
    }

    let (status, _) = proxy
        .put_weights("web", &[("blue", 80.0), ("green", 20.0)])
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut ws = ws_http1(proxy.addr).await;
    assert_eq!(ws_echo(&mut ws, "hi").await, "echo: hi");

    let text = scrape(&proxy).await;
    for family in [
        "sluicegate_requests_total",
        "sluicegate_request_duration_seconds_bucket",
        "sluicegate_backend_weight",
        "sluicegate_endpoint_healthy",
        "sluicegate_mirror_total",
        "sluicegate_canary_weight",
        "sluicegate_connections_refused_total",
        "sluicegate_tunnels_open",
        "sluicegate_open_connections",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(family)),
            "no {family} series in\n{text}"
        );
    }
    if let Some(complaints) = promtool_complaints(&text).await {
        panic!("{complaints}\n--- /metrics ---\n{text}");
    }
}

on_both_paths!(
    current_thread;
    requests_are_counted_per_backend_and_status_class,
    unmatched_requests_are_counted_without_route,
    weight_and_revision_gauges_follow_admin_changes,
    health_gauges_and_failovers_follow_a_dead_backend,
    retries_are_counted_against_the_failed_backend,
    reloads_are_counted_ok_and_error,
    stats_endpoint_counts_the_current_interval,
    access_log_file_gets_one_json_line_per_request,
);
