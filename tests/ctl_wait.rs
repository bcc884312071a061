//! Waiting from a deploy script (SPEC §7): `ctl canary start ROUTE --wait`
//! and `ctl status --wait-revision N`, run as the real binary against a real
//! proxy with real backends and traffic sent by the test; each exit status
//! (0 succeeded, 1 failed, 2 aborted, 3 timed out) on its own canary.

pub mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use http::StatusCode;

use support::admin::{FileProxy, describe_output};
use support::canary::{Traffic, canary_action, view};
use support::config_text::two_backend_config;
use support::origin::{Answers, Origin, RunningOrigin};

/// blue → green in two steps. Each step lasts at least `interval`, long
/// enough for ctl (looking every 200 ms) to see both; the p99 ratio is
/// loose because the test machine is loaded.
const CANARY: &str = r#"
  [routes.canary]
  baseline = "blue"
  canary = "green"
  steps = [50, 100]
  interval = "1s"
  min_requests = 3
  max_p99_ratio = 1000
"#;

/// How long a whole canary may take here (it needs about 2 s), under the
/// 30 s `FileProxy::ctl` gives a run.
const CANARY_LIMIT: &str = "25s";

/// `ctl canary start web --wait` within [`CANARY_LIMIT`].
const START_AND_WAIT: [&str; 6] = [
    "canary",
    "start",
    "web",
    "--wait",
    "--timeout",
    CANARY_LIMIT,
];

async fn proxy_for(blue: &RunningOrigin, green: &RunningOrigin) -> FileProxy {
    FileProxy::start(&format!(
        "{}{CANARY}",
        two_backend_config("100", blue, "0", green)
    ))
    .await
}

/// Requests through `proxy` (for `a.test`, 2 ms apart), until dropped.
fn traffic(proxy: &FileProxy) -> Traffic {
    Traffic::start_with(proxy.addr, "a.test", Duration::from_millis(2))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}",
        describe_output(output)
    );
}

/// A step line of stdout shows `state` at `step`.
fn assert_line(output: &Output, state: &str, step: &str) {
    let line = format!("  {state}  step {step}  weight ");
    assert!(
        text(&output.stdout).lines().any(|l| l.contains(&line)),
        "no step line with `{line}`: {}",
        describe_output(output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_0_when_the_canary_succeeds_and_prints_the_url_and_each_step() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = proxy_for(&blue, &green).await;
    let _traffic = traffic(&proxy);

    let output = proxy.ctl(&proxy.token, &START_AND_WAIT).await;

    assert_exit(&output, 0);
    let stdout = text(&output.stdout);
    let url = format!("dashboard: http://{}/#route=web", proxy.admin_addr);
    assert!(stdout.lines().any(|l| l == url), "no `{url}`: {stdout}");
    assert_line(&output, "running", "1/2");
    assert_line(&output, "running", "2/2");
    assert_line(&output, "succeeded", "2/2");
    assert!(stdout.contains("weight 100 %  promoted"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_1_when_the_canary_fails() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green")
        .answer(Answers::Switchable)
        .start()
        .await;
    green.set_status(500);
    let proxy = proxy_for(&blue, &green).await;
    let _traffic = traffic(&proxy);

    let output = proxy.ctl(&proxy.token, &START_AND_WAIT).await;

    assert_exit(&output, 1);
    assert_line(&output, "failed", "1/2");
    assert_eq!(proxy.weights("web").await["green"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_2_when_the_canary_is_aborted_meanwhile() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = proxy_for(&blue, &green).await;

    // No traffic: the canary waits at step 1 until the abort.
    let abort = async {
        support::eventually_async("the canary to run", || async {
            view(&proxy).await["state"] == "running"
        })
        .await;
        let (status, body) = canary_action(&proxy, "web", "abort").await;
        assert_eq!(status, StatusCode::OK, "abort: {body}");
    };
    let (output, ()) = tokio::join!(proxy.ctl(&proxy.token, &START_AND_WAIT), abort);

    assert_exit(&output, 2);
    assert_line(&output, "running", "1/2");
    assert_line(&output, "aborted", "1/2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_3_when_the_timeout_passes_first() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = proxy_for(&blue, &green).await;

    // No traffic: the canary never leaves step 1.
    let started = Instant::now();
    let output = proxy
        .ctl(
            &proxy.token,
            &["canary", "start", "web", "--wait", "--timeout", "1s"],
        )
        .await;

    assert_exit(&output, 3);
    assert!(started.elapsed() < Duration::from_secs(15));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("timed out after 1s waiting for the canary of web (running, step 1/2)"),
        "{stderr}"
    );
    // Timing out leaves the canary where it is.
    assert_eq!(view(&proxy).await["state"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_wait_revision_returns_once_the_revision_lands_and_3_on_timeout() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = FileProxy::start(&two_backend_config("90", &blue, "10", &green)).await;
    let next = (proxy.revision().await + 1).to_string();

    let change = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, body) = proxy
            .put_weights("web", &[("blue", 50.0), ("green", 50.0)])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    };
    let args = ["status", "--wait-revision", &next, "--timeout", "30s"];
    let (output, ()) = tokio::join!(proxy.ctl(&proxy.token, &args), change);
    assert_exit(&output, 0);
    let stdout = text(&output.stdout);
    assert!(
        stdout.starts_with(&format!("revision {next}\n")),
        "{stdout}"
    );
    assert!(stdout.contains("  green    50 "), "{stdout}");

    let far = (proxy.revision().await + 5).to_string();
    let started = Instant::now();
    let output = proxy
        .ctl(
            &proxy.token,
            &["status", "--wait-revision", &far, "--timeout", "500ms"],
        )
        .await;
    assert_exit(&output, 3);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        text(&output.stderr).contains(&format!("waiting for revision {far} (applied: {next})")),
        "{}",
        describe_output(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_goes_on_through_an_approval_step_once_approved_from_another_call() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let canary = CANARY.replace(
        "steps = [50, 100]",
        "steps = [50, 100]\n  approve_at = [50]",
    );
    let proxy = FileProxy::start(&format!(
        "{}{canary}",
        two_backend_config("100", &blue, "0", &green)
    ))
    .await;
    let _traffic = traffic(&proxy);

    // Approved once ctl has shown the wait (its stdout read as it runs), so
    // the test does not depend on ctl's poll catching a short wait.
    let mut child = proxy
        .ctl_command(&proxy.token, &START_AND_WAIT)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sluicegate ctl");
    let stdout = child.stdout.take().expect("ctl stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut printed = String::new();
    let mut approved = false;
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read ctl stdout") {
            printed.push_str(&line);
            printed.push('\n');
            if !approved && line.contains("  awaiting_approval  step 1/2  weight ") {
                let output = proxy.ctl(&proxy.token, &["canary", "approve", "web"]).await;
                assert_exit(&output, 0);
                approved = true;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("ctl --wait did not finish within 30 s");
    let mut output = child.wait_with_output().await.expect("ctl exit");
    output.stdout = printed.into_bytes();

    assert!(
        approved,
        "ctl never showed the wait: {}",
        describe_output(&output)
    );
    assert_exit(&output, 0);
    assert!(
        text(&output.stdout).contains("sluicegate ctl canary approve web"),
        "{}",
        describe_output(&output)
    );
    assert_line(&output, "succeeded", "2/2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_wait_revision_returns_once_every_instance_reports_it_applied() {
    let etcd = support::etcd::EtcdCluster::start(1).await;
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let prefix = format!("/sg-test/ctl-wait-{}", std::process::id());
    let mut instances = Vec::new();
    for name in ["a", "b"] {
        let body = format!(
            "{}\n{}",
            two_backend_config("90", &blue, "10", &green),
            support::etcd::fleet_table(&etcd.urls(), &prefix, name, None)
        );
        instances.push(FileProxy::start(&body).await);
    }
    let (a, b) = (&instances[0], &instances[1]);
    for instance in [a, b] {
        support::eventually_async("the instance to connect to etcd", || async {
            instance.admin_get("/api/v1/routes").await.1["fleet"]["connected"] == true
        })
        .await;
    }
    let (status, body) = a
        .put_weights("web", &[("blue", 50.0), ("green", 50.0)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let revision = body["revision"].as_u64().expect("revision").to_string();

    let args = ["status", "--wait-revision", &revision, "--timeout", "20s"];
    for instance in [a, b] {
        let output = instance.ctl(&instance.token, &args).await;
        assert_exit(&output, 0);
        assert!(
            text(&output.stdout).contains("  green    50 "),
            "{}",
            describe_output(&output)
        );
    }
    let fleet = b.admin_get("/api/v1/fleet").await.1;
    for instance in fleet["instances"].as_array().expect("instances") {
        assert!(
            instance["applied_revision"].as_u64() >= Some(revision.parse().expect("number")),
            "{fleet}"
        );
    }
}
