//! The automated canary seen from outside (SPEC §2 `[routes.canary]`, §3
//! canary endpoints): its config table, its actions and view through the
//! admin API of a [`FileProxy`], assertions on that view and on the weights,
//! route `web`'s history, and [`Traffic`] through the proxy to give its
//! steps requests to judge.
//!
//! The helpers that read the view, weights or history read route `web`, the
//! route the canary tests' configs put the canary on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::admin::{FileProxy, weight_map};
use super::client::{Http1Client, get_request};

/// How long a whole canary may take on a busy machine (three steps of
/// 200 ms need about 1 s): how long [`wait_for`] waits.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A `[routes.canary]` table: blue → green in steps of 10, 50 and 100 % of
/// 200 ms each, a step judged once it has 5 requests; `extra` lines (e.g.
/// `approve_at`, gates) go at its end. Tests give a loose `max_p99_ratio`:
/// loopback latencies jitter on a busy test machine, and the p99 check has
/// its unit tests.
pub fn canary_table(max_p99_ratio: u32, extra: &str) -> String {
    format!(
        r#"
  [routes.canary]
  baseline = "blue"
  canary = "green"
  steps = [10, 50, 100]
  interval = "200ms"
  min_requests = 5
  max_p99_ratio = {max_p99_ratio}
{extra}"#
    )
}

/// POST /api/v1/routes/{route}/canary/{action} with the token.
pub async fn canary_action(proxy: &FileProxy, route: &str, action: &str) -> (StatusCode, Value) {
    proxy
        .admin_send(
            Method::POST,
            &format!("/api/v1/routes/{route}/canary/{action}"),
            None,
            Some(&proxy.token),
        )
        .await
}

/// [`canary_action`] on route `web`, asserting 200; the route's `canary` view.
pub async fn act(proxy: &FileProxy, action: &str) -> Value {
    let (status, body) = canary_action(proxy, "web", action).await;
    assert_eq!(status, StatusCode::OK, "canary {action}: {body}");
    body["route"]["canary"].clone()
}

/// Route `web`'s `canary` view.
pub async fn view(proxy: &FileProxy) -> Value {
    proxy.route("web").await["route"]["canary"].clone()
}

/// Polls (up to [`DEADLINE`]) until route `web`'s canary view satisfies
/// `done`; returns the view then.
pub async fn wait_for(proxy: &FileProxy, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let view = view(proxy).await;
        if done(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the canary to be {what}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that a canary view is in `state` at step `step`.
#[track_caller]
pub fn assert_at(view: &Value, state: &str, step: u64) {
    assert_eq!(
        (view["state"].as_str(), view["step"].as_u64()),
        (Some(state), Some(step)),
        "{view}"
    );
}

/// For [`wait_for`]: the view's `state` is `state`.
pub fn state_is(state: &'static str) -> impl Fn(&Value) -> bool {
    move |view| view["state"] == state
}

/// Asserts route `web`'s weights: `blue` on backend `blue`, `green` on `green`.
pub async fn assert_weights(proxy: &FileProxy, blue: f64, green: f64) {
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", blue), ("green", green)])
    );
}

/// Route `web`'s revisions, newest first.
pub async fn history(proxy: &FileProxy) -> Vec<Value> {
    let (status, body) = proxy
        .admin_get("/api/v1/history?route=web&limit=1000")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["revisions"].as_array().expect("revisions").clone()
}

/// Route `web`'s revisions with source `canary`, oldest first.
pub async fn canary_revisions(proxy: &FileProxy) -> Vec<Value> {
    let mut revisions: Vec<Value> = history(proxy)
        .await
        .into_iter()
        .filter(|r| r["source"] == "canary")
        .collect();
    revisions.reverse();
    revisions
}

/// The `reason` of each revision, in the same order.
pub fn reasons(revisions: &[Value]) -> Vec<String> {
    revisions
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A client sending GET / through the proxy, one request after another
/// (reconnecting when a connection ends), until dropped.
pub struct Traffic {
    /// How many answers came back whole.
    pub sent: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Traffic {
    /// Requests for host `canary.test`, 1 ms apart, to `addr`.
    pub fn start(addr: SocketAddr) -> Traffic {
        Traffic::start_with(addr, "canary.test", Duration::from_millis(1))
    }

    /// Requests for `host` to `addr`, `pause` apart.
    pub fn start_with(addr: SocketAddr, host: &'static str, pause: Duration) -> Traffic {
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&sent);
        let task = tokio::spawn(async move {
            loop {
                let mut client = Http1Client::connect(addr).await;
                while let Ok(resp) = client.send_streaming(get_request(host, "/")).await {
                    if resp.into_body().collect().await.is_err() {
                        break;
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                }
            }
        });
        Traffic { sent, task }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.task.abort();
    }
}
