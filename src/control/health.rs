//! Active health checks and failover.
//!
//! One manager task keeps one check task per endpoint that has a
//! `[routes.backends.health]` (shared by every route using that endpoint) and
//! turns availability flips — from checks, passive ejection or drain — into a
//! new snapshot with effective weights moved to the healthy groups.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, header};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{EndpointAddr, HealthConfig, Transport};
use crate::control::{Snapshot, State};
use crate::upstream::Endpoint;
use crate::upstream::UpstreamBody;

/// Starts the manager; it runs until `stop`.
pub fn spawn(state: Arc<State>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut revisions = state.subscribe();
        let changes = state.endpoint_changes();
        let mut checks = Checks::default();
        checks.sync(&state.snapshot_full());
        state.refresh_health();
        loop {
            tokio::select! {
                changed = revisions.changed() => {
                    if changed.is_err() { break }
                    checks.sync(&state.snapshot_full());
                }
                () = changes.notified() => {
                    state.refresh_health();
                }
                _ = stop.changed() => break,
            }
        }
        checks.stop_all();
    })
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
