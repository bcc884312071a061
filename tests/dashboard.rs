//! The dashboard on a real admin listener: the page and its assets are served
//! without a token under a strict CSP, and a person's path through it — open
//! the page, enter the token, move green to 50 % with the slider, apply —
//! driven in Debian's headless Chromium by `tests/browser/dashboard.mjs`; and
//! in fleet mode, the fleet panel listing every instance (`fleet.mjs`); what
//! a deploy pipeline leans on — the `#route=` link, the token check, local
//! times, time axes, the history's pills (`pipeline.mjs`) — and a canary
//! approved from its panel (`approve.mjs`).

pub mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY};
use http::{Method, StatusCode};

use support::admin::{FileProxy, weight_map};
use support::config_text::{LISTENER, backend, route, two_backend_config};
use support::origin::{Origin, RunningOrigin};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// How long the browser script may take, start-up of Chromium included.
const BROWSER_LIMIT: Duration = Duration::from_secs(120);

const CHROMIUM: &str = "/usr/bin/chromium";

async fn blue_green(
    blue_weight: &str,
    green_weight: &str,
) -> (RunningOrigin, RunningOrigin, FileProxy) {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = FileProxy::start(&two_backend_config(
        blue_weight,
        &blue,
        green_weight,
        &green,
    ))
    .await;
    (blue, green, proxy)
}

fn header(reply: &support::client::Reply, name: impl http::header::AsHeaderName) -> String {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_page_and_assets_are_served_without_a_token_under_a_strict_csp() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;

    for (path, content_type, needle) in [
        (
            "/",
            "text/html; charset=utf-8",
            "<script src=\"/assets/app.js\"",
        ),
        (
            "/assets/app.js",
            "text/javascript; charset=utf-8",
            "/api/v1",
        ),
        ("/assets/app.css", "text/css; charset=utf-8", ".bk-green"),
    ] {
        let reply = proxy.admin_raw(Method::GET, path, Bytes::new(), None).await;

        assert_eq!(reply.status, StatusCode::OK, "GET {path}: {}", reply.text());
        assert_eq!(reply.content_type(), content_type, "GET {path}");
        assert_eq!(header(&reply, CONTENT_SECURITY_POLICY), CSP, "GET {path}");
        assert_eq!(header(&reply, "x-content-type-options"), "nosniff");
        assert_eq!(header(&reply, "referrer-policy"), "no-referrer");
        assert_eq!(header(&reply, CACHE_CONTROL), "no-cache");
        assert!(reply.text().contains(needle), "GET {path}: no {needle}");
        assert!(
            !reply.text().contains(&proxy.token),
            "GET {path} gives the token away"
        );
    }

    let missing = proxy
        .admin_raw(Method::GET, "/assets/nope.js", Bytes::new(), None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // The page needs no token; changing state still does.
    let (status, _) = proxy
        .admin_send(
            Method::POST,
            "/api/v1/routes/web/promote",
            Some(&serde_json::json!({ "backend": "green" })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Where the screenshot goes: `$CARGO_TARGET_DIR/dashboard.png`, else `target/`.
fn screenshot_path() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| manifest.join("target"), |dir| manifest.join(dir));
    target.join("dashboard.png")
}

/// Fails (never skips) when the browser test's tools are missing.
fn require_browser_tools(browser_dir: &Path) {
    let hint = "run `bash .ci/run` (it installs chromium and runs `npm ci` in tests/browser), \
                or `apt-get install chromium` and `cd tests/browser && npm ci`";
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|out| out.status.success()),
        "`node` is not on PATH: the dashboard browser test needs it; {hint}"
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the dashboard browser test needs Debian's chromium; {hint}"
    );
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "{}/node_modules/playwright-core is missing; {hint}",
        browser_dir.display()
    );
}

/// Runs `node tests/browser/SCRIPT` with `env`, within [`BROWSER_LIMIT`], and
/// fails with its output unless it exits 0.
async fn run_browser_script(browser_dir: &Path, script: &str, env: &[(&str, String)]) {
    let mut command = tokio::process::Command::new("node");
    command
        .arg(browser_dir.join(script))
        .current_dir(browser_dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(BROWSER_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {BROWSER_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("cannot run node tests/browser/{script}: {e}"));
    assert!(
        output.status.success(),
        "{script} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_moves_green_to_half_in_the_browser() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    require_browser_tools(&browser_dir);
    let (blue, green, proxy) = blue_green("90", "10").await;
    for _ in 0..40 {
        let reply = support::client::get(proxy.addr, "a.test", "/").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "proxy reply: {}",
            reply.text()
        );
    }
    assert_eq!(blue.hits() + green.hits(), 40);
    let screenshot = screenshot_path();
    let _ = std::fs::remove_file(&screenshot);

    run_browser_script(
        &browser_dir,
        "dashboard.mjs",
        &[
            (
                "SLUICEGATE_ADMIN_URL",
                format!("http://{}", proxy.admin_addr),
            ),
            ("SLUICEGATE_ADMIN_TOKEN", proxy.token.clone()),
            ("SCREENSHOT", screenshot.display().to_string()),
        ],
    )
    .await;
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 50.0), ("green", 50.0)])
    );
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_panel_lists_every_instance_in_fleet_mode() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    require_browser_tools(&browser_dir);
    let etcd = support::etcd::EtcdCluster::start(1).await;
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let prefix = format!("/sg-test/dashboard-{}", std::process::id());
    let canary = "[routes.canary]\nbaseline = \"blue\"\ncanary = \"green\"\nsteps = [10, 100]\n";
    let mut instances = Vec::new();
    for name in ["a", "b"] {
        let body = format!(
            "{}\n{canary}\n{}",
            two_backend_config("90", &blue, "10", &green),
            support::etcd::fleet_table(&etcd.urls(), &prefix, name, None)
        );
        instances.push(FileProxy::start(&body).await);
    }
    let screenshot = screenshot_path().with_file_name("dashboard-fleet.png");
    run_browser_script(
        &browser_dir,
        "fleet.mjs",
        &[
            (
                "SLUICEGATE_ADMIN_URL",
                format!("http://{}", instances[1].admin_addr),
            ),
            ("SLUICEGATE_ADMIN_TOKEN", instances[1].token.clone()),
            ("SLUICEGATE_INSTANCES", "a,b".to_string()),
            ("SCREENSHOT", screenshot.display().to_string()),
        ],
    )
    .await;
}

/// Route `plain` (path /plain), then route `web`: blue/green with
/// `canary` (a `[routes.canary]` table) appended.
fn two_routes(blue: &RunningOrigin, green: &RunningOrigin, canary: &str) -> String {
    let plain = route(
        "plain",
        "path_prefix = \"/plain\"",
        "",
        &[backend("blue", None, &[blue.addr])],
    );
    let web = route(
        "web",
        "",
        "",
        &[
            backend("blue", Some("100"), &[blue.addr]),
            backend("green", Some("0"), &[green.addr]),
        ],
    );
    format!("{LISTENER}{plain}{web}{canary}")
}

async fn start_canary(proxy: &FileProxy) {
    let (status, body) = proxy
        .admin_send(
            Method::POST,
            "/api/v1/routes/web/canary/start",
            None,
            Some(&proxy.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "canary start: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_link_token_check_local_times_and_history_pills_work_in_the_browser() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    require_browser_tools(&browser_dir);
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    // A canary that stays at its first step: no traffic, a long interval.
    let canary = "  [routes.canary]\n  baseline = \"blue\"\n  canary = \"green\"\n  \
                  steps = [10, 100]\n  interval = \"10m\"\n  min_requests = 1000\n  \
                  max_p99_ratio = 1000\n";
    let proxy = FileProxy::start(&two_routes(&blue, &green, canary)).await;
    start_canary(&proxy).await;

    run_browser_script(
        &browser_dir,
        "pipeline.mjs",
        &[
            (
                "SLUICEGATE_ADMIN_URL",
                format!("http://{}", proxy.admin_addr),
            ),
            ("SLUICEGATE_ADMIN_TOKEN", proxy.token.clone()),
            ("SLUICEGATE_ROUTE", "web".to_string()),
            (
                "SCREENSHOT",
                screenshot_path()
                    .with_file_name("dashboard-pipeline.png")
                    .display()
                    .to_string(),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_a_waiting_canary_and_sees_its_gate_in_the_browser() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    require_browser_tools(&browser_dir);
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let gate = Origin::new("gate").start().await;
    let canary = format!(
        "  [routes.canary]\n  baseline = \"blue\"\n  canary = \"green\"\n  \
         steps = [50, 100]\n  approve_at = [50]\n  interval = \"300ms\"\n  \
         min_requests = 3\n  max_p99_ratio = 1000\n  \
         [[routes.canary.gates]]\n  url = \"http://{}/check\"\n  timeout = \"5s\"\n",
        gate.addr
    );
    let proxy = FileProxy::start(&two_routes(&blue, &green, &canary)).await;
    start_canary(&proxy).await;
    let addr = proxy.addr;
    let traffic = tokio::spawn(async move {
        loop {
            let reply = support::client::get(addr, "a.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    run_browser_script(
        &browser_dir,
        "approve.mjs",
        &[
            (
                "SLUICEGATE_ADMIN_URL",
                format!("http://{}", proxy.admin_addr),
            ),
            ("SLUICEGATE_ADMIN_TOKEN", proxy.token.clone()),
            ("SLUICEGATE_ROUTE", "web".to_string()),
        ],
    )
    .await;
    traffic.abort();
    assert_eq!(proxy.weights("web").await["green"], 100.0);
    assert!(gate.hits() >= 1, "the gate was never called");
}
