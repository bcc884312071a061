//! Upstream endpoints: their health (active checks, passive ejection in
//! `outlier`, drain) and their connections (`conn`).

mod body;
mod conn;
mod outlier;
mod raw;
pub mod tls;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::sync::Notify;

use crate::config::{EndpointAddr, OutlierConfig};

pub use body::UpstreamBody;
use conn::Pool;
pub use conn::{HyperConn, PooledBody};
pub use outlier::{EjectionGuard, EjectionRules};
pub use raw::RawConn;
pub use tls::{TlsClients, Transport};

/// One upstream `host:port` with its connection pool and health.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: EndpointAddr,
    transport: Transport,
    authority: String,
    /// The name checked in TLS (`https://` endpoints only).
    server_name: Option<ServerName<'static>>,
    pool: Pool,
    /// Bare sockets for the HTTP/1.1 fast path.
    raw: raw::RawPool,
    health: Health,
    /// Woken whenever this endpoint's availability flips.
    changes: Arc<Notify>,
    /// `timeouts.upstream_idle` in milliseconds, set by every snapshot.
    idle_limit_ms: AtomicU64,
}

/// Health as seen by active checks, passive ejection and drain.
#[derive(Debug)]
struct Health {
    /// The active check's verdict; endpoints start healthy.
    check_up: AtomicBool,
    check_streak: AtomicU32,
    /// Passively ejected: mirrors `outlier`'s running ejection for the hot path.
    ejected: AtomicBool,
    /// Consecutive failures of real requests.
    failures: AtomicU32,
    /// Ejections in a row, for the growing back-off.
    ejections: AtomicU32,
    /// An ejection was refused (last available endpoint) and logged; cleared
    /// by a success, so the warning comes once per bad spell.
    refused: AtomicBool,
    /// Ejection rules and the running ejection ([`outlier`]).
    outlier: Mutex<outlier::Outlier>,
    draining: AtomicBool,
}

impl Endpoint {
    /// A new endpoint with an empty pool, spoken to as `transport` says;
    /// `changes` is woken when its availability flips.
    pub fn new(addr: EndpointAddr, transport: Transport, changes: Arc<Notify>) -> Endpoint {
        let server_name = addr
            .tls
            .then(|| ServerName::try_from(addr.host.clone()).ok())
            .flatten();
        if addr.tls
            && transport
                .tls
                .as_ref()
                .is_some_and(|t| t.insecure_skip_verify)
        {
            tracing::warn!(endpoint = %addr, "tls_insecure_skip_verify: this endpoint's certificate is not verified");
        }
        Endpoint {
            authority: addr.authority(),
            server_name,
            transport,
            addr,
            pool: Pool::default(),
            raw: raw::RawPool::default(),
            health: Health {
                check_up: AtomicBool::new(true),
                check_streak: AtomicU32::new(0),
                ejected: AtomicBool::new(false),
                failures: AtomicU32::new(0),
                ejections: AtomicU32::new(0),
                refused: AtomicBool::new(false),
                outlier: Mutex::default(),
                draining: AtomicBool::new(false),
            },
            changes,
            idle_limit_ms: AtomicU64::new(4_000),
        }
    }

    /// Pooled connections idle longer than `limit` are closed, not reused.
    pub fn set_idle_limit(&self, limit: Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.idle_limit_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether a connection pooled `since` has been idle too long to reuse.
    fn idle_expired(&self, since: Instant) -> bool {
        since.elapsed() > Duration::from_millis(self.idle_limit_ms.load(Ordering::Relaxed))
    }

    /// Closes pooled connections idle longer than the limit (called
    /// periodically, so an idle endpoint holds no stale sockets).
    pub fn close_expired(&self) {
        self.pool.retain(|since| !self.idle_expired(since));
        self.raw.retain(|since| !self.idle_expired(since));
    }

    /// Healthy (active check and passive ejection) and not draining: may
    /// take new requests.
    #[inline]
    pub fn available(&self) -> bool {
        self.is_healthy() && !self.is_draining()
    }

    /// Passing its active check and not ejected.
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.health.check_up.load(Ordering::Relaxed) && !self.health.ejected.load(Ordering::Relaxed)
    }

    /// `draining`, `ejected` (passive), `down` (failing its active check) or `up`.
    pub fn state(&self) -> &'static str {
        if self.is_draining() {
            "draining"
        } else if self.health.ejected.load(Ordering::Relaxed) {
            "ejected"
        } else if !self.health.check_up.load(Ordering::Relaxed) {
            "down"
        } else {
            "up"
        }
    }

    /// Drained: finishing in-flight requests, taking no new ones.
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.health.draining.load(Ordering::Relaxed)
    }

    /// Starts or ends a drain. Draining closes the idle connections at once.
    pub fn set_draining(&self, draining: bool) {
        if self.health.draining.swap(draining, Ordering::Relaxed) != draining {
            if draining {
                self.close_idle();
            }
            tracing::info!(endpoint = %self.addr, draining, "endpoint drain changed");
            self.changes.notify_one();
        }
    }

    /// Records an active check result; the verdict flips after `threshold`
    /// results in a row that disagree with it. A pass while the verdict is
    /// (or turns) healthy ends a passive ejection: the check sees the
    /// endpoint serve again, so it need not sit out its ejection.
    pub fn record_check(&self, passed: bool, healthy_threshold: u32, unhealthy_threshold: u32) {
        let up = self.health.check_up.load(Ordering::Relaxed);
        if passed == up {
            self.health.check_streak.store(0, Ordering::Relaxed);
        } else {
            let streak = self.health.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
            let threshold = if passed {
                healthy_threshold
            } else {
                unhealthy_threshold
            };
            if streak < threshold {
                return;
            }
            self.health.check_streak.store(0, Ordering::Relaxed);
            self.health.check_up.store(passed, Ordering::Relaxed);
            if passed {
                tracing::info!(endpoint = %self.addr, "health check passing: endpoint healthy");
            } else {
                tracing::warn!(endpoint = %self.addr, "health check failing: endpoint unhealthy");
            }
            self.changes.notify_one();
        }
        if passed && self.health.ejected.load(Ordering::Relaxed) {
            self.end_ejection("health check passed");
        }
    }

    /// A real request succeeded.
    #[inline]
    pub fn record_success(&self) {
        if self.health.failures.load(Ordering::Relaxed) != 0 {
            self.health.failures.store(0, Ordering::Relaxed);
            self.health.refused.store(false, Ordering::Relaxed);
        }
        if self.health.ejections.load(Ordering::Relaxed) != 0
            && !self.health.ejected.load(Ordering::Relaxed)
        {
            self.health.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A real request failed (connect error, reset, 5xx) on a backend with
    /// `policy`: after `consecutive_failures` in a row the endpoint is
    /// ejected for a while, within the rules of `outlier` (never the last
    /// available endpoint of a route, the newest snapshot's settings).
    pub fn record_failure(self: &Arc<Self>, policy: &OutlierConfig) {
        let failures = self.health.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if policy.consecutive_failures == 0
            || failures < policy.consecutive_failures
            || self.health.ejected.load(Ordering::Relaxed)
        {
            return;
        }
        self.eject(policy, failures);
    }

    /// How this endpoint is spoken to.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Closes every idle connection (drain, removal from config).
    pub fn close_idle(&self) {
        self.pool.clear();
        self.raw.clear();
    }
}
