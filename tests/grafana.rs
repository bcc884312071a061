//! The Grafana dashboard (deploy/grafana/sluicegate.json) against a real
//! Prometheus (Debian's `/usr/bin/prometheus`): Prometheus scrapes a live
//! sluicegate's admin `/metrics` every second while traffic (some of it 5xx),
//! a weight change, a reload and a failover go through; then every PromQL
//! expression of every panel, and the route variable's query, must return
//! data. A panel whose query names a metric or label that does not exist
//! fails here.

pub mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use support::admin::{FileProxy, TestDir};
use support::client::{get, sample, scrape};
use support::config_text::{FAST_HEALTH, LISTENER, backend, free_addr, route};
use support::origin::{Origin, RunningOrigin};
use support::{PATIENCE, eventually_async};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const HOST_NAME: &str = "grafana.test";

/// What the dashboard's `$__rate_interval` stands for here: ten scrapes.
const RATE_INTERVAL: &str = "10s";

/// How long Prometheus may take to start and gather enough samples.
const GATHER_LIMIT: Duration = Duration::from_secs(60);

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/sluicegate.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, those nested in collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            stack.extend(nested);
        }
        out.push(panel);
    }
    out
}

/// (panel title, expression) for every query of every panel.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel `{title}` has no query");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel `{title}`: a target without expr"));
            out.push((title.clone(), expr.to_string()));
        }
    }
    out
}

/// The expression as Grafana sends it with every route selected.
fn as_sent(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("${route}", ".*")
        .replace("$route", ".*")
}

#[test]
fn the_dashboard_takes_its_data_source_as_an_input_and_covers_the_spec_metrics() {
    let dashboard = dashboard();
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let mut ids = std::collections::BTreeSet::new();
    for panel in panels(&dashboard) {
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "duplicate id"
        );
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{panel}");
            for target in panel["targets"].as_array().expect("targets") {
                assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}");
            }
        }
    }
    let all: String = expressions(&dashboard)
        .into_iter()
        .map(|(_, e)| e)
        .collect::<Vec<_>>()
        .join("\n");
    for metric in [
        "sluicegate_requests_total",
        "sluicegate_request_duration_seconds_bucket",
        "sluicegate_backend_weight",
        "sluicegate_canary_weight",
        "sluicegate_config_reloads_total",
        "sluicegate_failovers_total",
        "sluicegate_endpoint_healthy",
        "sluicegate_build_info",
    ] {
        assert!(all.contains(metric), "no panel shows {metric}");
    }
}

/// A Prometheus server on a free loopback port, scraping `target` every
/// second, its data in `dir`; killed when dropped.
struct Prometheus {
    addr: SocketAddr,
    _child: tokio::process::Child,
}

impl Prometheus {
    async fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "this test needs {PROMETHEUS}: `apt-get install -y --no-install-recommends \
             prometheus` (.ci/run installs it)"
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: sluicegate\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr = free_addr().await;
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = tokio::process::Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            addr,
            _child: child,
        }
    }

    /// GET `path_and_query` on the HTTP API; the status and JSON answer.
    async fn get(&self, path_and_query: &str) -> Option<(StatusCode, Value)> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
        let req = Request::get(format!("http://{}{path_and_query}", self.addr))
            .body(Empty::new())
            .ok()?;
        let resp = tokio::time::timeout(PATIENCE, client.request(req))
            .await
            .ok()?
            .ok()?;
        let status = resp.status();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// The result of an instant query, or Prometheus' error.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let (status, answer) = self
            .get(&format!("/api/v1/query?query={}", encode(expr)))
            .await
            .ok_or("no answer from Prometheus")?;
        if status != StatusCode::OK || answer["status"] != "success" {
            return Err(format!("{status}: {answer}"));
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A sample's value in a vector result (`[time, "value"]`).
fn value_of(series: &Value) -> Option<f64> {
    series["value"][1].as_str()?.parse().ok()
}

fn web_route(blue: &RunningOrigin, green: &RunningOrigin, blue_weight: u32) -> String {
    let green_weight = 100 - blue_weight;
    let no_ejection = "    [routes.backends.outlier]\n    consecutive_failures = 0\n";
    let delivery = "\n  [routes.mirror]\n  backend = \"green\"\n  percent = 50\n\n  \
                    [routes.canary]\n  baseline = \"blue\"\n  canary = \"green\"\n  \
                    steps = [10, 50, 100]\n  interval = \"1m\"\n";
    let blue_weight = blue_weight.to_string();
    let green_weight = green_weight.to_string();
    let web = route(
        "web",
        "",
        "",
        &[
            format!(
                "{}{no_ejection}",
                backend("blue", Some(&blue_weight), &[blue.addr])
            ),
            format!(
                "{}{no_ejection}{FAST_HEALTH}",
                backend("green", Some(&green_weight), &[green.addr])
            ),
        ],
    );
    format!("{LISTENER}{web}{delivery}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_returns_data_from_a_real_prometheus() {
    let blue = Origin::new("blue").start().await;
    let green = RunningOrigin::switchable("green").await;
    let proxy = FileProxy::start(&web_route(&blue, &green, 90)).await;
    // Its own directory: the proxy watches its config's.
    let prometheus_dir = TestDir::new("prometheus");
    let prometheus = Prometheus::start(&prometheus_dir.file(""), proxy.admin_addr).await;

    // Traffic from now until the queries are done: mostly 200, some 503.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, addr) = (Arc::clone(&stop), proxy.addr);
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let path = if n.is_multiple_of(5) {
                    "/status/503"
                } else {
                    "/"
                };
                get(addr, HOST_NAME, path).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // A weight change, a reload and a failover and recovery of green.
    let (status, _) = proxy
        .put_weights("web", &[("blue", 80.0), ("green", 20.0)])
        .await;
    assert_eq!(status, StatusCode::OK);
    proxy.write_config(&web_route(&blue, &green, 70));
    proxy
        .wait_for_weights("web", &[("blue", 70.0), ("green", 30.0)])
        .await;
    green.set_health(500);
    let failovers = [("route", "web"), ("backend", "green")];
    eventually_async("green to fail over", || async {
        sample(
            &scrape(&proxy).await,
            "sluicegate_failovers_total",
            &failovers,
        ) == Some(1.0)
    })
    .await;
    green.set_health(200);
    eventually_async("green to be back", || async {
        sample(
            &scrape(&proxy).await,
            "sluicegate_backend_weight",
            &[
                ("route", "web"),
                ("backend", "green"),
                ("kind", "effective"),
            ],
        ) == Some(30.0)
    })
    .await;

    // Enough scrapes for a rate over RATE_INTERVAL, and traffic in all of them.
    let deadline = tokio::time::Instant::now() + GATHER_LIMIT;
    loop {
        let gathered = prometheus
            .query("count_over_time(sluicegate_config_revision[1m])")
            .await
            .ok()
            .and_then(|r| r.first().and_then(value_of));
        if gathered.is_some_and(|n| n >= 12.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus did not gather 12 scrapes within {GATHER_LIMIT:?} (log: {})",
            std::fs::read_to_string(prometheus_dir.file("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let dashboard = dashboard();
    let mut empty = Vec::new();
    for (title, expr) in expressions(&dashboard) {
        let sent = as_sent(&expr);
        match prometheus.query(&sent).await {
            Ok(result)
                if result
                    .iter()
                    .any(|s| value_of(s).is_some_and(f64::is_finite)) => {}
            Ok(result) => empty.push(format!("`{title}`: {sent} → {result:?}")),
            Err(error) => empty.push(format!("`{title}`: {sent} → error {error}")),
        }
    }
    // The route variable's query, label_values(sluicegate_backend_weight, route).
    let (status, routes) = prometheus
        .get("/api/v1/label/route/values?match[]=sluicegate_backend_weight")
        .await
        .expect("label values answer");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(routes["data"], serde_json::json!(["web"]), "{routes}");
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
    assert!(
        empty.is_empty(),
        "panel queries without data:\n{}",
        empty.join("\n")
    );
}
