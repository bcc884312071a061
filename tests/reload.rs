//! Hot reload (SPEC §2, §3): a change to the config file, in place or by
//! rename, applies within moments; an invalid file keeps the running config;
//! `POST /api/v1/reload` re-reads the file; file and admin changes combine as
//! the SPEC says; and no request fails across many reloads and API changes.

pub mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use support::admin::{FileProxy, weight_map};
use support::client::{Http1Client, get_request};
use support::config_text::{LISTENER, backend, route, two_backend_config};
use support::origin::{Origin, RunningOrigin};

/// A reload should show within this; the target is 200 ms, the slack is for
/// loaded CI machines.
const RELOAD_LIMIT: Duration = Duration::from_secs(2);

struct Setup {
    blue: RunningOrigin,
    green: RunningOrigin,
    proxy: FileProxy,
}

impl Setup {
    async fn start(blue_weight: &str, green_weight: &str) -> Setup {
        let blue = Origin::new("blue").start().await;
        let green = Origin::new("green").start().await;
        let proxy = FileProxy::start(&two_backend_config(
            blue_weight,
            &blue,
            green_weight,
            &green,
        ))
        .await;
        Setup { blue, green, proxy }
    }

    /// The config body with route `web` at these weights.
    fn body(&self, blue_weight: &str, green_weight: &str) -> String {
        two_backend_config(blue_weight, &self.blue, green_weight, &self.green)
    }
}

async fn post_reload(proxy: &FileProxy) -> (StatusCode, Value) {
    proxy
        .admin_send(Method::POST, "/api/v1/reload", None, Some(&proxy.token))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_edit_in_place_is_applied_quickly() {
    let s = Setup::start("100", "0").await;
    assert_eq!(s.proxy.next_backend().await, "blue");
    let revision = s.proxy.revision().await;

    let start = Instant::now();
    s.proxy.write_config(&s.body("0", "100"));
    s.proxy
        .wait_for_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;
    let latency = start.elapsed();

    eprintln!("reload latency (in-place edit): {latency:?}");
    assert!(latency < RELOAD_LIMIT, "reload took {latency:?}");
    assert!(s.proxy.revision().await > revision);
    for _ in 0..5 {
        assert_eq!(s.proxy.next_backend().await, "green");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_rename_is_applied() {
    let s = Setup::start("100", "0").await;
    assert_eq!(s.proxy.next_backend().await, "blue");

    let start = Instant::now();
    s.proxy.replace_config(&s.body("0", "100"));
    s.proxy
        .wait_for_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;
    let latency = start.elapsed();

    eprintln!("reload latency (atomic rename): {latency:?}");
    assert!(latency < RELOAD_LIMIT, "reload took {latency:?}");
    for _ in 0..5 {
        assert_eq!(s.proxy.next_backend().await, "green");
    }

    // And again: the watch follows the new file, not the replaced inode.
    s.proxy.replace_config(&s.body("100", "0"));
    s.proxy
        .wait_for_weights("web", &[("blue", 100.0), ("green", 0.0)])
        .await;
    assert_eq!(s.proxy.next_backend().await, "blue");
}

/// `FILE:LINE:COL: message` with FILE the config path.
fn assert_located(error: &str, file: &str) {
    let rest = error
        .strip_prefix(file)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or_else(|| panic!("error does not start with `{file}:`: {error}"));
    let mut parts = rest.splitn(3, ':');
    let line = parts.next().unwrap_or_default();
    let column = parts.next().unwrap_or_default();
    let message = parts.next().unwrap_or_default();
    assert!(
        line.parse::<u32>().is_ok_and(|n| n > 0),
        "bad line in {error}"
    );
    assert!(
        column.parse::<u32>().is_ok_and(|n| n > 0),
        "bad column in {error}"
    );
    assert!(
        message.starts_with(' ') && message.trim().len() > 3,
        "bad message in {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_file_keeps_old_config() {
    let s = Setup::start("100", "0").await;
    let mut keep_alive = Http1Client::connect(s.proxy.addr).await;
    assert_eq!(
        keep_alive.get("a.test", "/").await.backend().as_deref(),
        Some("blue")
    );
    let revision = s.proxy.revision().await;
    let file = s.proxy.config_path.display().to_string();

    for broken in [
        // Weights that sum to 110: valid TOML, invalid config.
        s.proxy.config_text(&s.body("50", "60")),
        // Not TOML at all.
        s.proxy
            .config_text(&s.body("0", "100"))
            .replace("weight = 0", "weight = = 0"),
    ] {
        s.proxy.write_config_raw(&broken);

        // Whatever the watcher made of it, the old config keeps serving.
        let window = Instant::now() + Duration::from_millis(300);
        let mut served = 0;
        while Instant::now() < window {
            let reply = keep_alive.get("a.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.backend().as_deref(), Some("blue"));
            assert_eq!(s.proxy.next_backend().await, "blue");
            served += 1;
        }
        assert!(served > 0);
        assert_eq!(
            s.proxy.weights("web").await,
            weight_map(&[("blue", 100.0), ("green", 0.0)])
        );
        assert_eq!(s.proxy.revision().await, revision);

        let (status, body) = post_reload(&s.proxy).await;

        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["error"].as_str().is_some(), "{body}");
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array: {body}"));
        assert!(!errors.is_empty(), "{body}");
        for error in errors {
            assert_located(error.as_str().expect("error string"), &file);
        }
        assert_eq!(s.proxy.revision().await, revision);
        assert_eq!(s.proxy.next_backend().await, "blue");
    }

    // Fixing the file applies it.
    s.proxy.write_config(&s.body("0", "100"));
    s.proxy
        .wait_for_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;
    assert_eq!(
        keep_alive.get("a.test", "/").await.backend().as_deref(),
        Some("green")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_endpoint_applies_a_changed_file() {
    let s = Setup::start("100", "0").await;
    let revision = s.proxy.revision().await;
    s.proxy.replace_config(&s.body("0", "100"));

    let (status, body) = post_reload(&s.proxy).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let reported = body["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("no revision: {body}"));
    assert!(reported > revision, "{body}");
    // Applied by the time the endpoint answers (by it, or the watcher before it).
    assert_eq!(
        s.proxy.weights("web").await,
        weight_map(&[("blue", 0.0), ("green", 100.0)])
    );
    assert_eq!(s.proxy.next_backend().await, "green");

    // Reloading an unchanged file is fine and changes no weights.
    let (status, body) = post_reload(&s.proxy).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], false, "{body}");
    assert_eq!(s.proxy.next_backend().await, "green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_of_weights_wins_over_an_earlier_admin_change() {
    let s = Setup::start("100", "0").await;
    let (status, body) = s
        .proxy
        .put_weights("web", &[("blue", 50.0), ("green", 50.0)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.proxy.route("web").await["route"]["override"], true);

    s.proxy.replace_config(&s.body("0", "100"));
    s.proxy
        .wait_for_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;

    assert_eq!(s.proxy.route("web").await["route"]["override"], false);
    for _ in 0..5 {
        assert_eq!(s.proxy.next_backend().await, "green");
    }
    let (status, history) = s.proxy.admin_get("/api/v1/history?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history["revisions"][0]["source"], "file", "{history}");
    assert_eq!(history["revisions"][0]["route"], "web", "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_leaves_a_routes_weights_alone_keeps_the_admin_change() {
    let s = Setup::start("100", "0").await;
    let (status, body) = s
        .proxy
        .put_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.proxy.next_backend().await, "green");

    // Same weights for `web`, but a new route in front of it and a route-level change.
    let extra = route(
        "extra",
        "path_prefix = \"/extra/\"",
        "",
        &[backend("blue", None, &[s.blue.addr])],
    );
    let web = route(
        "web",
        "",
        "retries = 1",
        &[
            backend("blue", Some("100"), &[s.blue.addr]),
            backend("green", Some("0"), &[s.green.addr]),
        ],
    );
    s.proxy.replace_config(&format!("{LISTENER}{extra}{web}"));
    let (status, body) = post_reload(&s.proxy).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, routes) = s.proxy.admin_get("/api/v1/routes").await;
    assert_eq!(status, StatusCode::OK, "{routes}");
    let names: Vec<&str> = routes["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["extra", "web"], "the new file is in force");
    assert_eq!(
        s.proxy.weights("web").await,
        weight_map(&[("blue", 0.0), ("green", 100.0)])
    );
    assert_eq!(s.proxy.route("web").await["route"]["override"], true);
    for _ in 0..5 {
        assert_eq!(s.proxy.next_backend().await, "green");
    }
}

/// Sends GET / over one keep-alive connection until `stop`; returns the
/// number of good replies and a description of every failure.
async fn client_loop(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let mut client = Http1Client::connect(addr).await;
    let mut ok = 0;
    let mut failures = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match client.send_streaming(get_request("reload.test", "/")).await {
            Ok(resp) => {
                let status = resp.status();
                let backend = resp
                    .headers()
                    .get("x-backend")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match resp.into_body().collect().await {
                    Ok(_)
                        if status == StatusCode::OK
                            && matches!(backend.as_deref(), Some("blue" | "green")) =>
                    {
                        ok += 1;
                    }
                    Ok(body) => failures.push(format!(
                        "{status} from {backend:?}: {}",
                        String::from_utf8_lossy(&body.to_bytes())
                    )),
                    Err(e) => failures.push(format!("body error: {e}")),
                }
            }
            Err(e) => {
                failures.push(format!("request error: {e}"));
                client = Http1Client::connect(addr).await;
            }
        }
    }
    (ok, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_failed_requests_across_reloads_and_api_changes() {
    let s = Setup::start("80", "20").await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client_loop(s.proxy.addr, Arc::clone(&stop))))
        .collect();
    let started = Instant::now();

    for i in 0..50 {
        let (file_blue, file_green) = if i % 2 == 0 {
            (20.0, 80.0)
        } else {
            (80.0, 20.0)
        };
        let body = s.body(&file_blue.to_string(), &file_green.to_string());
        // Alternate editors: in place and write-then-rename.
        if i % 2 == 0 {
            s.proxy.write_config(&body);
        } else {
            s.proxy.replace_config(&body);
        }
        s.proxy
            .wait_for_weights("web", &[("blue", file_blue), ("green", file_green)])
            .await;

        let admin_green = if i % 2 == 0 { 40.0 } else { 60.0 };
        let (status, reply) = s
            .proxy
            .put_weights(
                "web",
                &[("blue", 100.0 - admin_green), ("green", admin_green)],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    let elapsed = started.elapsed();

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut failures = Vec::new();
    for client in clients {
        let (ok, failed) = client.await.expect("client task");
        total += ok;
        failures.extend(failed);
    }
    eprintln!(
        "{total} requests across 50 file reloads and 50 API changes in {elapsed:?}; {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert!(total >= 100, "only {total} requests went through");
    assert!(s.blue.hits() > 0 && s.green.hits() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connection_survives_reload() {
    let s = Setup::start("100", "0").await;
    let mut client = Http1Client::connect(s.proxy.addr).await;
    let reply = client.get("a.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.backend().as_deref(), Some("blue"));

    s.proxy.replace_config(&s.body("0", "100"));
    s.proxy
        .wait_for_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;

    // Same connection: `send` fails if the proxy closed it.
    let reply = client.get("a.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.backend().as_deref(), Some("green"));

    let (status, body) = post_reload(&s.proxy).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply = client.get("a.test", "/").await;
    assert_eq!(reply.backend().as_deref(), Some("green"));
}
