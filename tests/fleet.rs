//! Fleet mode (docs/FLEET.md) against a real etcd started by each test on
//! loopback: weights, history and membership shared by several sluicegate
//! instances, and what happens when etcd is slow, cut off, compacted or gone.

pub mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use sluicegate::control::admin::api::{FleetAnswer, HistoryPage};
use support::admin::{FileProxy, TestDir};
use support::config_text::two_backend_config;
use support::etcd::{EtcdCluster, Relay, fleet_table};
use support::origin::{Origin, RunningOrigin};
use support::{eventually_async, get};

/// One fleet's origins: every instance routes `web` to the same blue and green.
struct Origins {
    blue: RunningOrigin,
    green: RunningOrigin,
}

impl Origins {
    async fn start() -> Origins {
        Origins {
            blue: Origin::new("blue").start().await,
            green: Origin::new("green").start().await,
        }
    }

    /// A config body for one instance: `web` at blue 90 / green 10 in its file.
    fn body(&self, fleet: &str) -> String {
        format!(
            "{}\n{fleet}",
            two_backend_config("90", &self.blue, "10", &self.green)
        )
    }
}

/// A unique prefix per test, so tests sharing nothing never collide.
fn prefix(test: &str) -> String {
    format!("/sg-test/{test}-{}", std::process::id())
}

/// `sluicegate run -c FILE` as a real process in `dir` (one a test can SIGKILL).
fn run_process(dir: &TestDir, file: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .arg("run")
        .arg("-c")
        .arg(dir.file(file))
        .current_dir(&dir.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start sluicegate")
}

async fn start_instance(
    origins: &Origins,
    urls: &[String],
    prefix: &str,
    name: &str,
    zone: Option<&str>,
) -> FileProxy {
    FileProxy::start_with_state_file(&origins.body(&fleet_table(urls, prefix, name, zone))).await
}

async fn put(proxy: &FileProxy, body: Value) -> (StatusCode, Value) {
    proxy
        .admin_send(
            Method::PUT,
            "/api/v1/routes/web/weights",
            Some(&body),
            Some(&proxy.token),
        )
        .await
}

async fn fleet(proxy: &FileProxy) -> FleetAnswer {
    proxy.admin_read("/api/v1/fleet").await
}

async fn connected(proxy: &FileProxy) -> bool {
    proxy.admin_get("/api/v1/routes").await.1["fleet"]["connected"] == json!(true)
}

async fn wait_connected(proxy: &FileProxy) {
    eventually_async("the instance to connect to etcd", || connected(proxy)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_instance_reaches_the_others_traffic_with_gap_free_revisions() {
    let etcd = EtcdCluster::start(1).await;
    let origins = Origins::start().await;
    let prefix = prefix("propagation");
    let a = start_instance(&origins, &etcd.urls(), &prefix, "a", None).await;
    let b = start_instance(&origins, &etcd.urls(), &prefix, "b", None).await;
    wait_connected(&a).await;
    wait_connected(&b).await;
    // Seeded once from whichever file came first: blue 90 / green 10.
    eventually_async("both instances to apply the seeded weights", || async {
        a.revision().await > 0 && a.revision().await == b.revision().await
    })
    .await;
    let start = a.revision().await;
    for i in 0..100u64 {
        let (winner, weights) = if i % 2 == 0 {
            ("green", json!({"blue": 0, "green": 100}))
        } else {
            ("blue", json!({"blue": 100, "green": 0}))
        };
        let (status, answer) = put(&a, json!({ "weights": weights })).await;
        assert_eq!(status, StatusCode::OK, "change {i}: {answer}");
        assert_eq!(answer["revision"], json!(start + i + 1), "gap-free numbers");
        eventually_async(&format!("change {i} to steer b's next request"), || async {
            get(b.addr, "fleet.test", "/").await.backend().as_deref() == Some(winner)
        })
        .await;
    }
    let history: HistoryPage = b.admin_read("/api/v1/history?limit=1000").await;
    let numbers: Vec<u64> = history.revisions.iter().map(|r| r.revision).collect();
    let expected: Vec<u64> = (1..=start + 100).rev().collect();
    assert_eq!(numbers, expected, "b holds the fleet's one history");
    assert_eq!(
        history.revisions[0].instance.as_deref(),
        Some("a"),
        "each revision names the instance that made it"
    );
    let seeds = history
        .revisions
        .iter()
        .filter(|r| r.reason.starts_with("seeded"))
        .count();
    assert_eq!(seeds, 1, "two instances seed a route once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writes_naming_the_same_revision_make_one_change_and_one_conflict() {
    let etcd = EtcdCluster::start(1).await;
    let origins = Origins::start().await;
    let prefix = prefix("conflict");
    let a = start_instance(&origins, &etcd.urls(), &prefix, "a", None).await;
    let b = start_instance(&origins, &etcd.urls(), &prefix, "b", None).await;
    wait_connected(&a).await;
    wait_connected(&b).await;
    eventually_async("both instances at one revision", || async {
        a.revision().await == b.revision().await && a.revision().await > 0
    })
    .await;
    let revision = a.revision().await;
    let body_a = json!({"weights": {"blue": 70, "green": 30}, "if_revision": revision});
    let body_b = json!({"weights": {"blue": 40, "green": 60}, "if_revision": revision});
    let ((status_a, _), (status_b, _)) = tokio::join!(put(&a, body_a), put(&b, body_b));
    let mut statuses = [status_a, status_b];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    // Without if_revision, concurrent writes are retried: both land.
    let ((s1, r1), (s2, r2)) = tokio::join!(
        put(&a, json!({"weights": {"blue": 10, "green": 90}})),
        put(&b, json!({"weights": {"blue": 20, "green": 80}}))
    );
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{r1} {r2}");
    let mut numbers = [r1["revision"].as_u64(), r2["revision"].as_u64()];
    numbers.sort();
    assert_eq!(numbers, [Some(revision + 2), Some(revision + 3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_weights_reach_only_that_zone_and_dropping_them_returns_to_the_fleet_weights() {
    let etcd = EtcdCluster::start(1).await;
    let origins = Origins::start().await;
    let prefix = prefix("zones");
    let eu = start_instance(&origins, &etcd.urls(), &prefix, "eu-1", Some("eu")).await;
    let us = start_instance(&origins, &etcd.urls(), &prefix, "us-1", Some("us")).await;
    wait_connected(&eu).await;
    wait_connected(&us).await;
    let (status, answer) = put(
        &us,
        json!({"weights": {"blue": 0, "green": 100}, "zone": "eu"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    eu.wait_for_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;
    let (status, _) = put(&us, json!({"weights": {"blue": 50, "green": 50}})).await;
    assert_eq!(status, StatusCode::OK);
    us.wait_for_weights("web", &[("blue", 50.0), ("green", 50.0)])
        .await;
    // The zone's own weights still win there.
    assert_eq!(
        eu.weights("web").await,
        support::admin::weight_map(&[("blue", 0.0), ("green", 100.0)])
    );
    let (status, answer) = eu
        .admin_send(
            Method::DELETE,
            "/api/v1/routes/web/weights?zone=eu",
            None,
            Some(&eu.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    eu.wait_for_weights("web", &[("blue", 50.0), ("green", 50.0)])
        .await;
    let view = fleet(&us).await;
    let names: Vec<&str> = view.instances.iter().map(|i| i.instance.as_str()).collect();
    assert_eq!(names, ["eu-1", "us-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_gone_traffic_keeps_the_last_weights_writes_fail_fast_and_a_restart_serves_them()
{
    let mut etcd = EtcdCluster::start(1).await;
    let origins = Origins::start().await;
    let prefix = prefix("gone");
    let a = start_instance(&origins, &etcd.urls(), &prefix, "a", None).await;
    wait_connected(&a).await;
    let (status, _) = put(&a, json!({"weights": {"blue": 0, "green": 100}})).await;
    assert_eq!(status, StatusCode::OK);
    etcd.kill_all();
    eventually_async("the instance to notice etcd is gone", || async {
        !connected(&a).await
    })
    .await;
    let (_, metrics) = a.admin_get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .unwrap_or("")
            .contains("sluicegate_fleet_connected 0"),
        "{metrics}"
    );
    for _ in 0..10 {
        assert_eq!(
            get(a.addr, "fleet.test", "/").await.backend().as_deref(),
            Some("green")
        );
    }
    let started = Instant::now();
    let (status, answer) = put(&a, json!({"weights": {"blue": 100, "green": 0}})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| e.contains("etcd")),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // A restart with etcd still gone serves the last applied weights (state file).
    let a = a.restart().await;
    assert!(!connected(&a).await);
    assert_eq!(
        get(a.addr, "fleet.test", "/").await.backend().as_deref(),
        Some("green")
    );
    // etcd back: the instance reconnects and writes work again.
    etcd.restart(0).await;
    wait_connected(&a).await;
    let (status, answer) = put(&a, json!({"weights": {"blue": 100, "green": 0}})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_during_a_compaction_catches_up_on_every_change() {
    let etcd = EtcdCluster::start(1).await;
    let origins = Origins::start().await;
    let prefix = prefix("compaction");
    let relay = Relay::start(etcd.members[0].client).await;
    let a = start_instance(&origins, &etcd.urls(), &prefix, "a", None).await;
    let b = start_instance(&origins, &[relay.url()], &prefix, "b", None).await;
    wait_connected(&a).await;
    wait_connected(&b).await;
    relay.cut();
    eventually_async("b to notice it is cut off", || async {
        !connected(&b).await
    })
    .await;
    for percent in [10, 20, 30, 40] {
        let (status, _) = put(
            &a,
            json!({"weights": {"blue": 100 - percent, "green": percent}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let client = etcd.client();
    let (header, _) = client.get_prefix(&prefix).await.expect("read etcd");
    client.compact(header.revision).await.expect("compact");
    relay.restore();
    wait_connected(&b).await;
    b.wait_for_weights("web", &[("blue", 60.0), ("green", 40.0)])
        .await;
    assert_eq!(b.revision().await, a.revision().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_etcd_leader_under_load_fails_no_request_and_writes_come_back() {
    let mut etcd = EtcdCluster::start(3).await;
    let origins = Origins::start().await;
    let prefix = prefix("leader");
    let a = Arc::new(start_instance(&origins, &etcd.urls(), &prefix, "a", None).await);
    wait_connected(&a).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (a, stop, sent, failed) = (
            Arc::clone(&a),
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&failed),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let reply = get(a.addr, "fleet.test", "/").await;
                sent.fetch_add(1, Ordering::Relaxed);
                if reply.status != StatusCode::OK {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader = etcd.leader().await;
    etcd.kill(leader);
    let killed = Instant::now();
    let mut written = None;
    while killed.elapsed() < Duration::from_secs(15) {
        let (status, _) = put(&a, json!({"weights": {"blue": 30, "green": 70}})).await;
        if status == StatusCode::OK {
            written = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load task");
    let written = written.expect("writes work again after the leader died");
    assert!(
        written < Duration::from_secs(10),
        "writes came back after {written:?}"
    );
    assert!(sent.load(Ordering::Relaxed) > 10);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "proxied requests failed");
    a.wait_for_weights("web", &[("blue", 30.0), ("green", 70.0)])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_register_and_a_stopped_or_dead_one_leaves_the_view() {
    let etcd = EtcdCluster::start(1).await;
    let origins = Origins::start().await;
    let prefix = prefix("members");
    let a = start_instance(&origins, &etcd.urls(), &prefix, "a", None).await;
    let b = start_instance(&origins, &etcd.urls(), &prefix, "b", None).await;
    eventually_async("a to see b", || async {
        fleet(&a).await.instances.len() == 2
    })
    .await;
    let view = fleet(&a).await;
    let b_view = view
        .instances
        .iter()
        .find(|i| i.instance == "b")
        .expect("b listed");
    assert_eq!(b_view.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(b_view.routes["web"].healthy["blue"], "1/1", "{b_view:?}");
    // A stopped instance revokes its lease: gone at once.
    b.proxy.shutdown().await.expect("b stops");
    let gone = eventually_async("a to drop b", || async {
        fleet(&a).await.instances.len() == 1
    })
    .await;
    assert!(gone < Duration::from_secs(2), "took {gone:?}");
    // A dead one (SIGKILL: no revoke) leaves within its lease_ttl (3 s).
    let dir = TestDir::new("fleet-dead");
    let text = format!(
        "[[listeners]]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\ntoken_file = \"token\"\n{}\n[[routes]]\nname = \"web\"\n  [[routes.backends]]\n  name = \"blue\"\n  endpoints = [\"{}\"]\n",
        fleet_table(&etcd.urls(), &prefix, "dead", None),
        origins.blue.endpoint(),
    );
    dir.write("dead.toml", &text);
    dir.write("token", "dead-instance-token\n");
    let mut child = run_process(&dir, "dead.toml");
    eventually_async("a to see the third instance", || async {
        fleet(&a)
            .await
            .instances
            .iter()
            .any(|i| i.instance == "dead")
    })
    .await;
    let view = fleet(&a).await;
    let dead = view
        .instances
        .iter()
        .find(|i| i.instance == "dead")
        .expect("listed");
    assert_eq!(
        dead.routes["web"].weights_from, "file",
        "its `web` has other backends: it keeps its file's weights"
    );
    child.kill().await.expect("SIGKILL");
    let left = eventually_async("a to drop the dead instance", || async {
        !fleet(&a)
            .await
            .instances
            .iter()
            .any(|i| i.instance == "dead")
    })
    .await;
    assert!(left < Duration::from_secs(5), "took {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_value_in_etcd_is_refused_and_reported_not_applied() {
    let etcd = EtcdCluster::start(1).await;
    let origins = Origins::start().await;
    let prefix = prefix("invalid");
    let a = start_instance(&origins, &etcd.urls(), &prefix, "a", None).await;
    wait_connected(&a).await;
    let (status, _) = put(&a, json!({"weights": {"blue": 25, "green": 75}})).await;
    assert_eq!(status, StatusCode::OK);
    let client = etcd.client();
    let key = format!("{prefix}/weights/web");
    let broken = sluicegate::control::fleet::etcd::Op::Put {
        key,
        value: b"{\"weights\": {\"blue\": 250}}".to_vec(),
        lease: 0,
    };
    client
        .txn(&[], &[broken], &[])
        .await
        .expect("write a bad value");
    eventually_async("the bad value to be reported", || async {
        fleet(&a)
            .await
            .problems
            .iter()
            .any(|p| p.contains("refused"))
    })
    .await;
    assert_eq!(
        a.weights("web").await,
        support::admin::weight_map(&[("blue", 25.0), ("green", 75.0)])
    );
    assert_eq!(get(a.addr, "fleet.test", "/").await.status, StatusCode::OK);
}

/// `[routes.canary]` for blue → green in three quick steps.
/// Latency is not what these tests judge: a loaded machine must not fail them.
const CANARY: &str = "[routes.canary]\nbaseline = \"blue\"\ncanary = \"green\"\nsteps = [10, 50, 100]\ninterval = \"400ms\"\nmin_requests = 5\nmax_p99_ratio = 1000\n";

/// `GET /api/v1/routes/web` on a loopback admin listener (reads need no token there).
async fn canary_view(admin: SocketAddr) -> Value {
    let reply = get(admin, "admin", "/api/v1/routes/web").await;
    serde_json::from_slice::<Value>(&reply.body).unwrap_or_default()["route"]["canary"].clone()
}

async fn canary_action(admin: SocketAddr, token: &str, action: &str) -> StatusCode {
    let req = http::Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/routes/web/canary/{action}"))
        .header(http::header::HOST, admin.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(support::empty())
        .expect("request");
    support::Http1Client::connect(admin)
        .await
        .send(req)
        .await
        .status
}

/// How the test stops the first canary controller.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// SIGKILL: it is gone.
    Kill,
    /// SIGSTOP past its lease, then SIGCONT: it wakes up an old controller.
    Freeze,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_canary_controller_judges_the_fleets_traffic_and_another_takes_over_when_it_is_killed()
{
    canary_takeover(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_controller_paused_past_its_lease_cannot_write_when_it_wakes_up() {
    canary_takeover(Stop::Freeze).await;
}

async fn canary_takeover(how: Stop) {
    let etcd = EtcdCluster::start(1).await;
    let origins = Origins::start().await;
    let prefix = prefix("canary");
    // The first instance, a real process we can SIGKILL, takes the controller.
    let dir = TestDir::new("fleet-canary");
    let admin = support::config_text::free_addr().await;
    let text = format!(
        "{}\n{CANARY}\n[admin]\naddr = \"{admin}\"\ntoken_file = \"token\"\n{}",
        two_backend_config("100", &origins.blue, "0", &origins.green),
        fleet_table(&etcd.urls(), &prefix, "first", None)
    );
    dir.write("first.toml", &text);
    dir.write("token", "first-token\n");
    let mut first = run_process(&dir, "first.toml");
    eventually_async(
        "the first instance to take the canary controller",
        || async {
            let Ok(Ok(stream)) = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(admin),
            )
            .await
            else {
                return false;
            };
            drop(stream);
            let reply = get(admin, "admin", "/api/v1/fleet").await;
            serde_json::from_slice::<FleetAnswer>(&reply.body).is_ok_and(|answer| {
                answer
                    .instances
                    .iter()
                    .any(|i| i.instance == "first" && i.canary_controller == ["web".to_string()])
            })
        },
    )
    .await;
    let body = format!(
        "{}\n{CANARY}\n{}",
        two_backend_config("100", &origins.blue, "0", &origins.green),
        fleet_table(&etcd.urls(), &prefix, "second", None)
    );
    let second = FileProxy::start(&body).await;
    wait_connected(&second).await;
    eventually_async(
        "the first instance to run the canary controller",
        || async {
            fleet(&second)
                .await
                .instances
                .iter()
                .any(|i| i.instance == "first" && i.canary_controller == ["web".to_string()])
        },
    )
    .await;
    // Only the controller takes canary actions. The second instance may
    // learn who holds the controller key a moment after the registration
    // shows it: until then it says to try again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (status, refusal) = loop {
        let (status, refusal) = second
            .admin_send(
                Method::POST,
                "/api/v1/routes/web/canary/start",
                None,
                Some(&second.token),
            )
            .await;
        let not_yet = refusal["error"]
            .as_str()
            .is_some_and(|e| e.contains("try again in a moment"));
        if !not_yet || tokio::time::Instant::now() > deadline {
            break (status, refusal);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, StatusCode::CONFLICT, "{refusal}");
    assert!(
        refusal["error"]
            .as_str()
            .is_some_and(|e| e.contains("first")),
        "{refusal}"
    );
    assert_eq!(
        canary_action(admin, "first-token", "start").await,
        StatusCode::OK
    );
    // Traffic reaches the second instance only: the controller can judge the
    // steps only on the counts the second instance publishes.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (addr, stop) = (second.addr, Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let reply = get(addr, "fleet.test", "/").await;
                assert_eq!(reply.status, StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    eventually_async(
        "the canary to reach step 2 on the controller's word",
        || async { canary_view(admin).await["step"] == json!(2) },
    )
    .await;
    let pid = first.id().expect("the first instance's pid").to_string();
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {name} {pid}");
    };
    match how {
        Stop::Kill => first.kill().await.expect("SIGKILL the controller"),
        Stop::Freeze => signal("-STOP"),
    }
    let killed = Instant::now();
    let mut view = Value::Null;
    while killed.elapsed() < Duration::from_secs(30) {
        view = canary_view(second.admin_addr).await;
        if view["state"] == json!("succeeded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if how == Stop::Freeze {
        // The old controller wakes up believing it still runs the canary at
        // step 2: its writes must be refused by their fence.
        let before = second.revision().await;
        signal("-CONT");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let history: HistoryPage = second.admin_read("/api/v1/history?route=web").await;
        let after: Vec<_> = history
            .revisions
            .iter()
            .filter(|r| r.revision > before)
            .map(|r| (r.revision, r.instance.clone(), r.reason.clone()))
            .collect();
        assert!(after.is_empty(), "the woken controller wrote: {after:?}");
        let woken = canary_view(admin).await;
        assert_eq!(woken["controller"], json!("second"), "{woken}");
    }
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    assert_eq!(view["state"], json!("succeeded"), "{view}");
    second
        .wait_for_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;
    let answer = fleet(&second).await;
    let me = answer
        .instances
        .iter()
        .find(|i| i.instance == "second")
        .expect("listed");
    assert_eq!(
        me.canary_controller,
        ["web"],
        "the second instance took over"
    );
    let history: HistoryPage = second.admin_read("/api/v1/history?route=web").await;
    let steps: Vec<&str> = history
        .revisions
        .iter()
        .filter(|r| r.reason.starts_with("canary step"))
        .filter_map(|r| r.instance.as_deref())
        .collect();
    assert!(
        steps.contains(&"first") && steps.contains(&"second"),
        "{steps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_awaiting_approval_waits_fleet_wide_until_its_controller_approves() {
    let etcd = EtcdCluster::start(1).await;
    let origins = Origins::start().await;
    let prefix = prefix("approve");
    let body = |name: &str| {
        format!(
            "{}\n{CANARY}approve_at = [10]\n{}",
            two_backend_config("100", &origins.blue, "0", &origins.green),
            fleet_table(&etcd.urls(), &prefix, name, None)
        )
    };
    let first = FileProxy::start(&body("first")).await;
    wait_connected(&first).await;
    eventually_async(
        "the first instance to run the canary controller",
        || async {
            fleet(&first)
                .await
                .instances
                .iter()
                .any(|i| i.instance == "first" && i.canary_controller == ["web".to_string()])
        },
    )
    .await;
    let second = FileProxy::start(&body("second")).await;
    wait_connected(&second).await;
    let (status, answer) = approval_action(&first, "start").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (addr, stop) = (second.addr, Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                get(addr, "fleet.test", "/").await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for proxy in [&first, &second] {
        eventually_async("the canary to await its approval", || async {
            canary_view(proxy.admin_addr).await["state"] == "awaiting_approval"
        })
        .await;
    }
    // Looks of the controller pass with traffic flowing: nothing moves.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for proxy in [&first, &second] {
        let view = canary_view(proxy.admin_addr).await;
        assert_eq!(
            (view["state"].as_str(), view["step"].as_u64()),
            (Some("awaiting_approval"), Some(1)),
            "{view}"
        );
        assert_eq!(
            proxy.weights("web").await,
            support::admin::weight_map(&[("blue", 90.0), ("green", 10.0)])
        );
    }
    let (status, refusal) = approval_action(&second, "approve").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "only the controller approves: {refusal}"
    );
    let (status, answer) = approval_action(&first, "approve").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    eventually_async("the second instance to follow step 2", || async {
        canary_view(second.admin_addr).await["step"] == json!(2)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
}

/// POST /api/v1/routes/web/canary/{action} with the proxy's token.
async fn approval_action(proxy: &FileProxy, action: &str) -> (StatusCode, Value) {
    let path = format!("/api/v1/routes/web/canary/{action}");
    proxy
        .admin_send(Method::POST, &path, None, Some(&proxy.token))
        .await
}
