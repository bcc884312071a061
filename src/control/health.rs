//! Active health checks and failover.
//!
//! One manager task keeps one check task per endpoint that has a
//! `[routes.backends.health]` (shared by every route using that endpoint) and
//! turns availability flips — from checks, passive ejection or drain — into a
//! [`Change::Failover`]: [`failovers`] says which routes' effective weights
//! move and why, and the change pipeline records and publishes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, header};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{EndpointAddr, HealthConfig};
use crate::control::history::WeightMap;
use crate::control::{Backend, Change, Snapshot, State, effective_weights};
use crate::upstream::{Endpoint, Transport, UpstreamBody};

/// Starts the manager; it runs until `stop`.
pub fn spawn(state: Arc<State>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut revisions = state.subscribe();
        let changes = state.endpoint_changes();
        let mut checks = Checks::default();
        checks.sync(&state.snapshot_full());
        let _ = state.apply(Change::Failover);
        loop {
            tokio::select! {
                changed = revisions.changed() => {
                    if changed.is_err() { break }
                    checks.sync(&state.snapshot_full());
                }
                () = changes.notified() => {
                    let _ = state.apply(Change::Failover);
                }
                _ = stop.changed() => break,
            }
        }
        checks.stop_all();
    })
}

/// One route's effective weights moving because a backend lost, or got
/// back, every available endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub route: String,
    /// The effective weights from now on.
    pub effective: WeightMap,
    /// The effective weights in `snapshot`.
    pub previous: WeightMap,
    pub reason: String,
}

/// The failovers `snapshot` is behind on: routes where a backend's
/// availability now differs from when the snapshot was built. Counts each
/// backend that just lost its last endpoint in `sluicegate_failovers_total`,
/// so call it only to apply the result.
pub fn failovers(snapshot: &Snapshot) -> Vec<Failover> {
    let mut found = Vec::new();
    for route in &snapshot.routes {
        let now: Vec<bool> = route.backends.iter().map(Backend::any_available).collect();
        let before: Vec<bool> = route.backends.iter().map(|b| b.available).collect();
        if now == before {
            continue;
        }
        let desired: Vec<_> = route.backends.iter().map(|b| b.weight).collect();
        let effective = effective_weights(&desired, &now, route.config.failover);
        let effective = WeightMap(
            route
                .backends
                .iter()
                .map(|b| b.name.clone())
                .zip(effective)
                .collect(),
        );
        for ((backend, was), is) in route.backends.iter().zip(&before).zip(&now) {
            if *was && !*is {
                backend.metrics.record_failover();
            }
        }
        let down: Vec<&str> = route
            .backends
            .iter()
            .zip(&now)
            .filter(|(_, up)| !**up)
            .map(|(b, _)| b.name.as_str())
            .collect();
        found.push(Failover {
            route: route.name().to_string(),
            effective,
            previous: route.effective_weights(),
            reason: failover_reason(&down, route.config.failover),
        });
    }
    found
}

/// Why effective weights moved, given the backends now `down`.
fn failover_reason(down: &[&str], failover: bool) -> String {
    if down.is_empty() {
        "every backend available again".to_string()
    } else if failover {
        format!(
            "no available endpoint in {}: share moved to available backends",
            down.join(", ")
        )
    } else {
        format!(
            "no available endpoint in {} (failover off: its share gets 503)",
            down.join(", ")
        )
    }
}

/// An endpoint's identity: the same address is two endpoints when two
/// backends speak to it differently.
type EndpointKey = (EndpointAddr, Transport);

/// The running check tasks, by endpoint.
#[derive(Default)]
struct Checks {
    running: HashMap<EndpointKey, (HealthConfig, JoinHandle<()>)>,
}

impl Checks {
    /// Starts checks for new endpoints, stops those no longer configured and
    /// restarts those whose settings changed.
    #[expect(
        clippy::mutable_key_type,
        reason = "a Transport hashes only its immutable settings, not the TLS session cache inside"
    )]
    fn sync(&mut self, snapshot: &Snapshot) {
        let mut wanted: HashMap<EndpointKey, (HealthConfig, Arc<Endpoint>)> = HashMap::new();
        for backend in snapshot.routes.iter().flat_map(|r| &r.backends) {
            let Some(health) = &backend.health else {
                continue;
            };
            for endpoint in &backend.endpoints {
                wanted
                    .entry((endpoint.addr.clone(), endpoint.transport().clone()))
                    .or_insert_with(|| (health.clone(), Arc::clone(endpoint)));
            }
        }
        self.running.retain(|key, (config, task)| {
            let keep = wanted.get(key).is_some_and(|(wanted, _)| wanted == config);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (config, endpoint)) in wanted {
            self.running.entry(key).or_insert_with(|| {
                let task = tokio::spawn(check_loop(endpoint, config.clone()));
                (config, task)
            });
        }
    }

    fn stop_all(&mut self) {
        for (_, (_, task)) in self.running.drain() {
            task.abort();
        }
    }
}

/// Probes `endpoint` every `interval` (±10 % jitter, first probe at a random
/// point of the first interval so checks do not fire in lock-step).
async fn check_loop(endpoint: Arc<Endpoint>, config: HealthConfig) {
    tokio::time::sleep(config.interval.mul_f64(fastrand::f64())).await;
    loop {
        let passed = probe(&endpoint, &config).await;
        endpoint.record_check(passed, config.healthy_threshold, config.unhealthy_threshold);
        let jitter = 0.9 + fastrand::f64() * 0.2;
        tokio::time::sleep(config.interval.mul_f64(jitter)).await;
    }
}

/// One `GET path`: healthy on 2xx or 3xx within `timeout`.
async fn probe(endpoint: &Arc<Endpoint>, config: &HealthConfig) -> bool {
    let attempt = async {
        let conn = endpoint.connection(config.timeout).await.ok()?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(config.path.as_str())
            .header(header::HOST, endpoint.authority())
            .header(header::USER_AGENT, "sluicegate-health-check")
            .body(UpstreamBody::empty())
            .ok()?;
        let resp = conn.send(req, config.timeout).await.ok()?;
        let ok = resp.status().is_success() || resp.status().is_redirection();
        // Read the body so the connection can go back to the pool.
        let _ = resp.into_body().collect().await;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(config.timeout, attempt).await,
        Ok(Some(true))
    )
}

/// How long a client should wait before retrying when nothing is available.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
