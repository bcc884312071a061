//! Health checks, failover, retries and drain under load (SPEC §2 health keys,
//! §3 drain, §5): backends are broken and mended while clients keep sending,
//! and the clients must not notice.

pub mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use support::admin::{FileProxy, weight_map};
use support::body::full;
use support::client::{Http1Client, get, get_request, send};
use support::config_text::{H1Path, backend, listener_on, route, timeouts};
use support::origin::RunningOrigin;
use support::proxy::TestProxy;
use support::raw::RawConn;
use support::{eventually, eventually_async};

const HOST_NAME: &str = "failover.test";

/// Active checks every 100 ms; two results in a row flip an endpoint.
const INTERVAL: Duration = Duration::from_millis(100);
const CHECK_TIMEOUT: Duration = Duration::from_millis(100);
const THRESHOLD: u32 = 2;
const HEALTH: &str = r#"    [routes.backends.health]
    path = "/healthz"
    interval = "100ms"
    timeout = "100ms"
    unhealthy_threshold = 2
    healthy_threshold = 2
"#;

/// Scheduling headroom on a busy 2-core machine for "within N ms" assertions.
const SLACK: Duration = Duration::from_secs(1);

/// A `[[routes.backends]]` entry on these fakes, followed by `tables`
/// (`[routes.backends.health]`, `[routes.backends.outlier]`).
fn group(name: &str, weight: Option<&str>, fakes: &[&RunningOrigin], tables: &str) -> String {
    let addrs: Vec<SocketAddr> = fakes.iter().map(|f| f.addr).collect();
    format!("{}{tables}", backend(name, weight, &addrs))
}

/// One listener and route `web` (route-level lines in `extra`) over `groups`.
fn config(path: H1Path, extra: &str, groups: &[String]) -> String {
    format!("{}{}", listener_on(path), route("web", "", extra, groups))
}

fn outlier(lines: &str) -> String {
    format!("    [routes.backends.outlier]\n{lines}\n")
}

/// Failures in a row that eject under [`long_ejection`].
const FAILURES: usize = 3;

/// Ejection after [`FAILURES`] failures, for a minute: far longer than any
/// test waits, so an endpoint back within a test was not back by the clock.
fn long_ejection() -> String {
    outlier("    consecutive_failures = 3\n    base_ejection = \"60s\"\n    max_ejection = \"60s\"")
}

/// Checks every 100 ms that never fail often enough to mark an endpoint down
/// (so a dead one is out only by passive ejection) and pass at once.
const LENIENT_HEALTH: &str = r#"    [routes.backends.health]
    path = "/healthz"
    interval = "100ms"
    timeout = "100ms"
    unhealthy_threshold = 1000
    healthy_threshold = 1
"#;

// ---------------------------------------------------------------------------
// Continuous load

/// Keep-alive clients sending `GET /` in a loop until stopped, recording every
/// answer that is not a 200 (or no answer at all) as a failure.
struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<LoadStats>,
    clients: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct LoadStats {
    done: AtomicUsize,
    failures: Mutex<Vec<String>>,
    by_backend: Mutex<HashMap<String, usize>>,
}

/// What a [`Load`] saw from start to stop.
#[derive(Debug)]
struct LoadReport {
    total: usize,
    failures: Vec<String>,
    by_backend: HashMap<String, usize>,
}

impl LoadReport {
    fn served_by(&self, name: &str) -> usize {
        self.by_backend.get(name).copied().unwrap_or(0)
    }

    fn assert_no_failures(&self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed; first ones: {:?}",
            self.failures.len(),
            self.total,
            &self.failures[..self.failures.len().min(5)]
        );
    }
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LoadStats::default());
        let clients = (0..clients)
            .map(|_| tokio::spawn(load_client(addr, Arc::clone(&stop), Arc::clone(&stats))))
            .collect();
        Load {
            stop,
            stats,
            clients,
        }
    }

    fn completed(&self) -> usize {
        self.stats.done.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests have completed.
    async fn wait_for_more(&self, n: usize) {
        let target = self.completed() + n;
        eventually(&format!("{n} more requests under load"), || {
            self.completed() >= target
        })
        .await;
    }

    async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.expect("load client panicked");
        }
        let failures = self.stats.failures.lock().unwrap().clone();
        let by_backend = self.stats.by_backend.lock().unwrap().clone();
        LoadReport {
            total: self.stats.done.load(Ordering::SeqCst),
            failures,
            by_backend,
        }
    }
}

async fn load_client(addr: SocketAddr, stop: Arc<AtomicBool>, stats: Arc<LoadStats>) {
    let mut client: Option<Http1Client> = None;
    while !stop.load(Ordering::SeqCst) {
        let conn = match client.as_mut() {
            Some(conn) => conn,
            None => client.insert(Http1Client::connect(addr).await),
        };
        let outcome = match conn.send_streaming(get_request(HOST_NAME, "/")).await {
            Err(e) => Err(format!("no response: {e}")),
            Ok(resp) => {
                let status = resp.status();
                let backend = resp
                    .headers()
                    .get("x-backend")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("<none>")
                    .to_string();
                match resp.into_body().collect().await {
                    Err(e) => Err(format!("{status}, body cut: {e}")),
                    Ok(_) if status != StatusCode::OK => Err(format!("{status} from {backend}")),
                    Ok(_) => Ok(backend),
                }
            }
        };
        match outcome {
            Ok(backend) => {
                *stats.by_backend.lock().unwrap().entry(backend).or_insert(0) += 1;
            }
            Err(failure) => {
                stats.failures.lock().unwrap().push(failure);
                client = None;
            }
        }
        stats.done.fetch_add(1, Ordering::SeqCst);
        // Continuous but not a busy loop: the health checks share the 2 cores.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ---------------------------------------------------------------------------
// Admin API views

/// GET /api/v1/routes/web → the `route` object.
async fn web_route(proxy: &FileProxy) -> Value {
    proxy.route("web").await["route"].clone()
}

/// The effective weight of every backend, by name.
fn effective(route: &Value) -> BTreeMap<String, f64> {
    route["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("no backends in {route}"))
        .iter()
        .map(|b| {
            let name = b["name"].as_str().expect("backend name").to_string();
            let weight = b["effective_weight"]
                .as_f64()
                .unwrap_or_else(|| panic!("no effective_weight in {b}"));
            (name, weight)
        })
        .collect()
}

/// The JSON view of `fake`'s endpoint in `backend`.
fn endpoint_view<'a>(route: &'a Value, backend: &str, fake: &RunningOrigin) -> &'a Value {
    route["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["name"] == backend))
        .and_then(|b| b["endpoints"].as_array())
        .and_then(|es| es.iter().find(|e| e["address"] == fake.endpoint().as_str()))
        .unwrap_or_else(|| panic!("no endpoint {} in {backend}: {route}", fake.endpoint()))
}

fn healthy(route: &Value, backend: &str, fake: &RunningOrigin) -> bool {
    endpoint_view(route, backend, fake)["healthy"]
        .as_bool()
        .expect("healthy flag")
}

/// `up`, `down`, `ejected` or `draining`.
fn state<'a>(route: &'a Value, backend: &str, fake: &RunningOrigin) -> &'a str {
    endpoint_view(route, backend, fake)["state"]
        .as_str()
        .expect("endpoint state")
}

fn draining(route: &Value, backend: &str, fake: &RunningOrigin) -> bool {
    endpoint_view(route, backend, fake)["draining"]
        .as_bool()
        .expect("draining flag")
}

/// Polls the API until `check` holds for route `web`; returns how long it took.
async fn wait_for_route(proxy: &FileProxy, what: &str, check: impl Fn(&Value) -> bool) -> Duration {
    eventually_async(what, || async { check(&web_route(proxy).await) }).await
}

/// Sends GETs, each of which must succeed (retried on another endpoint), until
/// `fake`'s endpoint in `backend` is ejected by their failures.
async fn eject_by_failures(proxy: &FileProxy, backend: &str, fake: &RunningOrigin) {
    eventually_async(&format!("{} to be ejected", fake.name), || async {
        let reply = get(proxy.addr, HOST_NAME, "/").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        state(&web_route(proxy).await, backend, fake) == "ejected"
    })
    .await;
}

/// Sends GETs until one is served by `fake`; returns how long it took.
async fn until_served_by(proxy: &FileProxy, fake: &RunningOrigin) -> Duration {
    eventually_async(&format!("{} to serve again", fake.name), || async {
        get(proxy.addr, HOST_NAME, "/").await.backend().as_deref() == Some(fake.name.as_str())
    })
    .await
}

/// `n` GETs, all answered 200 by `fake`.
async fn all_served_by(proxy: &FileProxy, fake: &RunningOrigin, n: usize) {
    for _ in 0..n {
        let reply = get(proxy.addr, HOST_NAME, "/").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.backend().as_deref(), Some(fake.name.as_str()));
    }
}

async fn post_reload(proxy: &FileProxy) {
    let (status, body) = proxy
        .admin_send(Method::POST, "/api/v1/reload", None, Some(&proxy.token))
        .await;
    assert_eq!(status, StatusCode::OK, "reload: {body}");
}

/// POST …/backends/{backend}/endpoints/{addr, percent-encoded}/{drain|undrain}.
async fn set_drain(proxy: &FileProxy, backend: &str, fake: &RunningOrigin, action: &str) -> Value {
    let encoded = fake.endpoint().replace(':', "%3A");
    let path = format!("/api/v1/routes/web/backends/{backend}/endpoints/{encoded}/{action}");
    let (status, body) = proxy
        .admin_send(Method::POST, &path, None, Some(&proxy.token))
        .await;
    assert_eq!(status, StatusCode::OK, "POST {path}: {body}");
    body["route"].clone()
}

// ---------------------------------------------------------------------------
// Tests

async fn cutover_zero_failures_when_green_health_fails(path: H1Path) {
    let blue = RunningOrigin::switchable("blue").await;
    let green = RunningOrigin::switchable("green").await;
    let proxy = FileProxy::start(&config(
        path,
        "",
        &[
            group("blue", Some("90"), &[&blue], HEALTH),
            group("green", Some("10"), &[&green], HEALTH),
        ],
    ))
    .await;
    eventually("both backends to be health-checked", || {
        blue.health_checks() > 0 && green.health_checks() > 0
    })
    .await;
    let load = Load::start(proxy.addr, 4);
    load.wait_for_more(200).await;
    assert!(
        green.requests() > 0,
        "green gets its 10 % before the cutover"
    );

    green.set_health(500);
    let took = wait_for_route(
        &proxy,
        "green unhealthy and effective weights blue 100 / green 0",
        |r| {
            !healthy(r, "green", &green)
                && effective(r) == weight_map(&[("blue", 100.0), ("green", 0.0)])
        },
    )
    .await;
    let bound = INTERVAL * THRESHOLD + CHECK_TIMEOUT + SLACK;
    assert!(took < bound, "the cutover took {took:?}, over {bound:?}");
    let route = web_route(&proxy).await;
    assert!(healthy(&route, "blue", &blue), "{route}");
    let desired = support::admin::desired_weights(&route);
    assert_eq!(desired, weight_map(&[("blue", 90.0), ("green", 10.0)]));

    // Requests that loaded the old snapshot may still land; after that, none.
    load.wait_for_more(100).await;
    let green_after_cutover = green.requests();
    load.wait_for_more(300).await;
    assert_eq!(
        green.requests(),
        green_after_cutover,
        "an unhealthy backend still gets requests"
    );

    green.set_health(200);
    wait_for_route(&proxy, "green healthy again at 90/10", |r| {
        healthy(r, "green", &green)
            && effective(r) == weight_map(&[("blue", 90.0), ("green", 10.0)])
    })
    .await;
    eventually("green to get traffic again", || {
        green.requests() >= green_after_cutover + 10
    })
    .await;

    let report = load.stop().await;
    report.assert_no_failures();
    assert!(
        report.served_by("blue") > report.served_by("green"),
        "{report:?}"
    );

    let (status, history) = proxy
        .admin_get("/api/v1/history?route=web&limit=1000")
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let failovers: Vec<&Value> = history["revisions"]
        .as_array()
        .expect("revisions")
        .iter()
        .filter(|r| r["source"] == "failover")
        .collect();
    assert!(
        failovers.len() >= 2,
        "expected failover revisions for the cutover and the recovery: {history}"
    );
    assert!(
        failovers
            .iter()
            .any(|r| r["weights"]["blue"] == 100.0 && r["weights"]["green"] == 0.0),
        "no failover revision moving green's share to blue: {history}"
    );
    for revision in &failovers {
        assert_eq!(revision["actor"], "failover", "{revision}");
        assert!(revision.get("client").is_none(), "{revision}");
    }
}

async fn killed_backend_under_load_has_zero_failed_get_requests(path: H1Path) {
    let blue = RunningOrigin::switchable("blue").await;
    let mut green = RunningOrigin::switchable("green").await;
    // No active checks: only passive ejection (5 failures in a row) notices.
    // Short ejections so the restarted green comes back within the test.
    let green_outlier = outlier("    base_ejection = \"200ms\"\n    max_ejection = \"800ms\"");
    let proxy = FileProxy::start(&config(
        path,
        "",
        &[
            group("blue", Some("50"), &[&blue], ""),
            group("green", Some("50"), &[&green], &green_outlier),
        ],
    ))
    .await;
    let load = Load::start(proxy.addr, 4);
    load.wait_for_more(100).await;
    assert!(green.requests() > 0 && blue.requests() > 0);

    green.kill().await;
    assert!(
        TcpStream::connect(green.addr).await.is_err(),
        "a killed backend refuses connections"
    );
    wait_for_route(
        &proxy,
        "green ejected and effective weights blue 100 / green 0",
        |r| {
            !healthy(r, "green", &green)
                && effective(r) == weight_map(&[("blue", 100.0), ("green", 0.0)])
        },
    )
    .await;
    load.wait_for_more(200).await;

    green.restart().await;
    let before_restart = green.requests();
    eventually("the restarted green to get traffic again", || {
        green.requests() > before_restart + 10
    })
    .await;
    wait_for_route(&proxy, "green healthy again at 50/50", |r| {
        healthy(r, "green", &green)
            && effective(r) == weight_map(&[("blue", 50.0), ("green", 50.0)])
    })
    .await;

    let report = load.stop().await;
    report.assert_no_failures();
    assert!(report.served_by("green") > 0 && report.served_by("blue") > 0);
}

async fn post_is_never_duplicated(path: H1Path) {
    let resetter = RunningOrigin::switchable("resetter").await;
    let good = RunningOrigin::switchable("good").await;
    resetter.set_reset(true);
    // Ejection off, so the resetting endpoint stays in the rotation.
    let proxy = TestProxy::start(&config(
        path,
        "retries = 2",
        &[group(
            "blue",
            None,
            &[&resetter, &good],
            &outlier("    consecutive_failures = 0"),
        )],
    ))
    .await;

    // Endpoints take turns, so some POSTs meet the resetting endpoint.
    let mut reset_posts = 0;
    for i in 0..6 {
        let path = format!("/post/{i}");
        let req = Request::builder()
            .method(Method::POST)
            .uri(&path)
            .header(HOST, HOST_NAME)
            .header(CONTENT_TYPE, "text/plain")
            .body(full(format!("order {i}")))
            .expect("valid request");
        let reply = send(proxy.addr, req).await;
        let (at_resetter, at_good) = (resetter.count("POST", &path), good.count("POST", &path));
        assert_eq!(
            at_resetter + at_good,
            1,
            "POST {path} reached the backends {} times (resetter {at_resetter}, good {at_good}); reply {} {}",
            at_resetter + at_good,
            reply.status,
            reply.text()
        );
        if at_resetter == 1 {
            reset_posts += 1;
            assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
        } else {
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.backend().as_deref(), Some("good"));
        }
    }
    assert!(reset_posts > 0, "no POST went to the resetting endpoint");

    // A GET without a body is safe to send again: the reset is retried.
    let mut reset_gets = 0;
    for i in 0..6 {
        let path = format!("/get/{i}");
        let reply = get(proxy.addr, HOST_NAME, &path).await;
        assert_eq!(reply.status, StatusCode::OK, "GET {path}: {}", reply.text());
        assert_eq!(reply.backend().as_deref(), Some("good"));
        assert_eq!(
            good.count("GET", &path),
            1,
            "GET {path} at the good endpoint"
        );
        reset_gets += resetter.count("GET", &path);
    }
    assert!(reset_gets > 0, "no GET met the resetting endpoint first");
}

async fn no_healthy_endpoint_anywhere_is_503_with_retry_after(path: H1Path) {
    let blue = RunningOrigin::switchable("blue").await;
    let green = RunningOrigin::switchable("green").await;
    blue.set_health(500);
    green.set_health(500);
    let proxy = TestProxy::start(&format!(
        "{}{}",
        timeouts(&[("connect", "2s"), ("response_headers", "5s")]),
        config(
            path,
            "",
            &[
                group("blue", Some("90"), &[&blue], HEALTH),
                group("green", Some("10"), &[&green], HEALTH),
            ],
        )
    ))
    .await;
    eventually_async("every endpoint to be found unhealthy (503)", || async {
        get(proxy.addr, HOST_NAME, "/").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;

    let served = (blue.requests(), green.requests());
    let mut client = Http1Client::connect(proxy.addr).await;
    for _ in 0..20 {
        let start = Instant::now();
        let reply = client.get(HOST_NAME, "/").await;
        let took = start.elapsed();
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.text()
        );
        assert!(
            reply.headers.contains_key(RETRY_AFTER),
            "503 without Retry-After: {:?}",
            reply.headers
        );
        assert!(
            took < Duration::from_millis(250),
            "the 503 took {took:?}: it should not wait for anything"
        );
    }
    assert_eq!(
        (blue.requests(), green.requests()),
        served,
        "no request may reach an unhealthy backend"
    );
}

async fn failover_false_gives_503_for_the_down_group_share(path: H1Path) {
    let blue = RunningOrigin::switchable("blue").await;
    let green = RunningOrigin::switchable("green").await;
    green.set_health(500);
    let proxy = FileProxy::start(&config(
        path,
        "failover = false",
        &[
            group("blue", Some("50"), &[&blue], HEALTH),
            group("green", Some("50"), &[&green], HEALTH),
        ],
    ))
    .await;
    wait_for_route(&proxy, "green unhealthy", |r| !healthy(r, "green", &green)).await;
    let route = web_route(&proxy).await;
    assert_eq!(
        effective(&route),
        weight_map(&[("blue", 50.0), ("green", 50.0)]),
        "with failover off the weights stay: {route}"
    );

    let mut client = Http1Client::connect(proxy.addr).await;
    let (mut ok, mut unavailable) = (0, 0);
    for _ in 0..200 {
        let reply = client.get(HOST_NAME, "/").await;
        match reply.status {
            StatusCode::OK => {
                assert_eq!(reply.backend().as_deref(), Some("blue"));
                ok += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(
                    reply.headers.contains_key(RETRY_AFTER),
                    "{:?}",
                    reply.headers
                );
                unavailable += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert!(
        (80..=120).contains(&unavailable),
        "{unavailable} of 200 were 503, expected about half (blue served {ok})"
    );
    assert_eq!(blue.requests(), ok);
    assert_eq!(green.requests(), 0, "the unhealthy green got requests");
}

async fn drain_under_load(path: H1Path) {
    let one = RunningOrigin::switchable("one").await;
    let two = RunningOrigin::switchable("two").await;
    let proxy =
        FileProxy::start(&config(path, "", &[group("blue", None, &[&one, &two], "")])).await;
    let load = Load::start(proxy.addr, 4);
    load.wait_for_more(100).await;
    assert!(one.count("GET", "/") > 0 && two.count("GET", "/") > 0);

    // Park requests on the backends until one is in flight on `two`.
    let mut holds = Vec::new();
    while two.count("GET", "/hold") == 0 {
        assert!(holds.len() < 20, "no /hold request reached `two`");
        let addr = proxy.addr;
        holds.push(tokio::spawn(
            async move { get(addr, HOST_NAME, "/hold").await },
        ));
        let sent = holds.len();
        eventually("the /hold request to arrive", || {
            one.count("GET", "/hold") + two.count("GET", "/hold") == sent
        })
        .await;
    }

    let route = set_drain(&proxy, "blue", &two, "drain").await;
    assert!(draining(&route, "blue", &two), "{route}");
    assert!(!draining(&route, "blue", &one), "{route}");
    assert!(
        healthy(&route, "blue", &two),
        "draining is not unhealthy: {route}"
    );
    load.wait_for_more(100).await;
    let two_after_drain = two.count("GET", "/");
    load.wait_for_more(300).await;
    assert_eq!(
        two.count("GET", "/"),
        two_after_drain,
        "a drained endpoint still gets new requests"
    );
    assert!(
        holds.iter().all(|h| !h.is_finished()),
        "the parked requests should still be in flight"
    );

    one.release_holds();
    two.release_holds();
    for hold in holds {
        let reply = hold.await.expect("hold task");
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "in-flight /hold: {}",
            reply.text()
        );
    }

    set_drain(&proxy, "blue", &two, "undrain").await;
    eventually("the undrained endpoint to get traffic again", || {
        two.count("GET", "/") > two_after_drain + 10
    })
    .await;

    // A reload ends every drain.
    set_drain(&proxy, "blue", &two, "drain").await;
    load.wait_for_more(100).await;
    let two_drained_again = two.count("GET", "/");
    let (status, body) = proxy
        .admin_send(Method::POST, "/api/v1/reload", None, Some(&proxy.token))
        .await;
    assert_eq!(status, StatusCode::OK, "reload: {body}");
    let route = web_route(&proxy).await;
    assert!(
        !draining(&route, "blue", &two),
        "a reload undrains: {route}"
    );
    eventually("traffic to the endpoint after the reload", || {
        two.count("GET", "/") > two_drained_again + 10
    })
    .await;

    let report = load.stop().await;
    report.assert_no_failures();
}

async fn shutdown_delay_keeps_listening_while_readyz_is_503(path: H1Path) {
    const DELAY: Duration = Duration::from_secs(1);
    let blue = RunningOrigin::switchable("blue").await;
    let mut proxy = FileProxy::start(&format!(
        "{}{}",
        timeouts(&[("shutdown_delay", "1s"), ("shutdown_grace", "5s")]),
        config(path, "", &[group("blue", None, &[&blue], "")])
    ))
    .await;
    let readyz = async |proxy: &FileProxy| {
        proxy
            .admin_raw(Method::GET, "/readyz", bytes::Bytes::new(), None)
            .await
            .status
    };
    assert_eq!(readyz(&proxy).await, StatusCode::OK);

    let shutdown_at = Instant::now();
    proxy.proxy.begin_shutdown();
    eventually_async("readyz to turn 503", || async {
        readyz(&proxy).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    // Still within the delay: the data listener accepts and serves.
    let reply = get(proxy.addr, HOST_NAME, "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        shutdown_at.elapsed() < DELAY,
        "the checks above took longer than the delay; they prove nothing"
    );

    eventually_async("the listener to close after the delay", || async {
        TcpStream::connect(proxy.addr).await.is_err()
    })
    .await;
    assert!(
        shutdown_at.elapsed() >= DELAY,
        "the listener closed after {:?}, before shutdown_delay",
        shutdown_at.elapsed()
    );
    proxy
        .proxy
        .wait_stopped(Duration::from_secs(5))
        .await
        .expect("run returns Ok");
}

async fn sole_endpoint_is_never_ejected_and_serves_as_soon_as_it_recovers(path: H1Path) {
    let mut only = RunningOrigin::switchable("only").await;
    let proxy = FileProxy::start(&config(
        path,
        "",
        &[group("blue", None, &[&only], &long_ejection())],
    ))
    .await;
    assert_eq!(get(proxy.addr, HOST_NAME, "/").await.status, StatusCode::OK);

    // 5xx: every answer is the backend's own, never the proxy's 503.
    only.set_status(500);
    for _ in 0..FAILURES * 2 {
        let reply = get(proxy.addr, HOST_NAME, "/").await;
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            reply.text()
        );
    }
    let route = web_route(&proxy).await;
    assert_eq!(state(&route, "blue", &only), "up", "{route}");
    only.set_status(200);
    let reply = get(proxy.addr, HOST_NAME, "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // Connection refused: 502, never 503; the first request after the
    // restart is served.
    only.kill().await;
    for _ in 0..FAILURES * 2 {
        let reply = get(proxy.addr, HOST_NAME, "/").await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    }
    let route = web_route(&proxy).await;
    assert_eq!(state(&route, "blue", &only), "up", "{route}");
    only.restart().await;
    let reply = get(proxy.addr, HOST_NAME, "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.backend().as_deref(), Some("only"));
}

async fn one_of_two_endpoints_is_ejected_and_the_last_one_stays_in(path: H1Path) {
    let mut one = RunningOrigin::switchable("one").await;
    let two = RunningOrigin::switchable("two").await;
    let proxy = FileProxy::start(&config(
        path,
        "",
        &[group("blue", None, &[&one, &two], &long_ejection())],
    ))
    .await;
    one.kill().await;
    eject_by_failures(&proxy, "blue", &one).await;

    two.set_status(500);
    for _ in 0..FAILURES * 2 {
        let reply = get(proxy.addr, HOST_NAME, "/").await;
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the last endpoint answers, not the proxy's 503: {}",
            reply.text()
        );
    }
    let route = web_route(&proxy).await;
    assert_eq!(state(&route, "blue", &two), "up", "{route}");
    assert_eq!(state(&route, "blue", &one), "ejected", "{route}");

    // Ejection still works: `one`, back up, sits out its minute.
    two.set_status(200);
    one.restart().await;
    let before = one.requests();
    all_served_by(&proxy, &two, 20).await;
    assert_eq!(one.requests(), before, "an ejected endpoint got requests");
}

async fn passing_health_check_ends_an_ejection(path: H1Path) {
    let mut one = RunningOrigin::switchable("one").await;
    let two = RunningOrigin::switchable("two").await;
    let tables = format!("{LENIENT_HEALTH}{}", long_ejection());
    let proxy = FileProxy::start(&config(
        path,
        "",
        &[group("blue", None, &[&one, &two], &tables)],
    ))
    .await;
    one.kill().await;
    eject_by_failures(&proxy, "blue", &one).await;
    let checks = one.health_checks();

    one.restart().await;
    let took = wait_for_route(&proxy, "the passing check to end the ejection", |r| {
        state(r, "blue", &one) == "up"
    })
    .await;
    assert!(
        one.health_checks() > checks,
        "back after {took:?} without a check"
    );
    until_served_by(&proxy, &one).await;
}

async fn reload_turning_ejection_off_lifts_a_running_ejection(path: H1Path) {
    let mut one = RunningOrigin::switchable("one").await;
    let two = RunningOrigin::switchable("two").await;
    let addrs = [one.addr, two.addr];
    let body = |tables: &str| {
        config(
            path,
            "",
            &[format!("{}{tables}", backend("blue", None, &addrs))],
        )
    };
    let proxy = FileProxy::start(&body(&long_ejection())).await;
    one.kill().await;
    eject_by_failures(&proxy, "blue", &one).await;
    one.restart().await;
    let before = one.requests();
    all_served_by(&proxy, &two, 10).await;
    assert_eq!(one.requests(), before, "an ejected endpoint got requests");

    proxy.write_config(&body(&outlier("    consecutive_failures = 0")));
    post_reload(&proxy).await;
    let route = web_route(&proxy).await;
    assert_eq!(state(&route, "blue", &one), "up", "{route}");
    until_served_by(&proxy, &one).await;
}

async fn reload_with_a_shorter_ejection_cuts_a_running_one_short(path: H1Path) {
    let mut one = RunningOrigin::switchable("one").await;
    let two = RunningOrigin::switchable("two").await;
    let addrs = [one.addr, two.addr];
    let body = |tables: &str| {
        config(
            path,
            "",
            &[format!("{}{tables}", backend("blue", None, &addrs))],
        )
    };
    let proxy = FileProxy::start(&body(&long_ejection())).await;
    one.kill().await;
    eject_by_failures(&proxy, "blue", &one).await;
    one.restart().await;

    let short = outlier(
        "    consecutive_failures = 3\n    base_ejection = \"300ms\"\n    max_ejection = \"300ms\"",
    );
    proxy.write_config(&body(&short));
    post_reload(&proxy).await;
    wait_for_route(&proxy, "the shortened ejection to end", |r| {
        state(r, "blue", &one) == "up"
    })
    .await;
    until_served_by(&proxy, &one).await;
}

/// Ejection is for upstream failures: a client's body that breaks after the
/// request reached an endpoint is the client's fault. Two endpoints, so an
/// ejection could happen (a sole endpoint would be kept in regardless).
async fn broken_client_bodies_eject_no_endpoint(path: H1Path) {
    let one = RunningOrigin::switchable("one").await;
    let two = RunningOrigin::switchable("two").await;
    let proxy = FileProxy::start(&config(
        path,
        "",
        &[group("blue", None, &[&one, &two], &long_ejection())],
    ))
    .await;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {HOST_NAME}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    );
    let arrived = || one.count("POST", "/upload") + two.count("POST", "/upload");
    for sent in 1..=FAILURES * 4 {
        let mut conn = RawConn::connect(proxy.addr).await;
        conn.send(head.as_bytes()).await;
        eventually("the request to reach an endpoint", || arrived() == sent).await;
        conn.send(b"zz\r\nhello\r\n0\r\n\r\n").await;
        assert_eq!(conn.read_head().await.status, 400);
    }
    let route = web_route(&proxy).await;
    for fake in [&one, &two] {
        assert_eq!(state(&route, "blue", fake), "up", "{route}");
    }
}

on_both_paths!(
    cutover_zero_failures_when_green_health_fails,
    killed_backend_under_load_has_zero_failed_get_requests,
    post_is_never_duplicated,
    no_healthy_endpoint_anywhere_is_503_with_retry_after,
    failover_false_gives_503_for_the_down_group_share,
    drain_under_load,
    shutdown_delay_keeps_listening_while_readyz_is_503,
    sole_endpoint_is_never_ejected_and_serves_as_soon_as_it_recovers,
    one_of_two_endpoints_is_ejected_and_the_last_one_stays_in,
    passing_health_check_ends_an_ejection,
    reload_turning_ejection_off_lifts_a_running_ejection,
    reload_with_a_shorter_ejection_cuts_a_running_one_short,
    broken_client_bodies_eject_no_endpoint,
);
