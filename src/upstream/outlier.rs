//! Passive ejection: an endpoint whose real requests keep failing is taken
//! out for a while, doubling on each ejection in a row.
//!
//! Three rules bound it (issue 14, section 4):
//! - it never leaves a set of endpoints that must keep serving with none
//!   available ([`EjectionGuard`]): then the endpoint stays in, failing
//!   requests and all, rather than turn them into 503s;
//! - a passing active check ends it ([`Endpoint::end_ejection`]);
//! - every snapshot's outlier settings apply to the running ejection
//!   ([`Endpoint::set_ejection_rules`]): off lifts it, shorter shortens it.
//!
//! The request path reads one relaxed flag (`Health::ejected`); everything
//! else here sits behind the endpoint's `Health::outlier` mutex and is
//! touched only when an ejection starts, ends or is re-evaluated.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Endpoint;
use crate::config::OutlierConfig;

/// Ejections are decided one at a time, so two endpoints failing together
/// cannot each count on the other as the one left serving.
static DECIDING: Mutex<()> = Mutex::new(());

/// Back-off doublings stop here (`base × 2¹⁶` is past any sane maximum).
const MAX_DOUBLINGS: u32 = 16;

/// Endpoints of which at least one must stay available: a route's, when a
/// backend with none left fails over to the others (`failover = true`), or
/// one backend's, when its share would get 503 (`failover = false`).
#[derive(Debug)]
pub struct EjectionGuard {
    /// How the log names it: route `web`, or backend `blue` of route `web`.
    name: String,
    /// Weak: endpoints hold their guards, and a cycle would keep removed
    /// endpoints (and their pools) alive.
    endpoints: Vec<Weak<Endpoint>>,
}

impl EjectionGuard {
    /// A guard called `name` (as the log shows it) over `endpoints`.
    pub fn new<'a>(
        name: String,
        endpoints: impl IntoIterator<Item = &'a Arc<Endpoint>>,
    ) -> Arc<EjectionGuard> {
        Arc::new(EjectionGuard {
            name,
            endpoints: endpoints.into_iter().map(Arc::downgrade).collect(),
        })
    }

    /// Whether an endpoint other than `endpoint` can take requests now.
    fn has_other_available(&self, endpoint: &Endpoint) -> bool {
        self.endpoints.iter().any(|weak| {
            weak.upgrade()
                .is_some_and(|e| !std::ptr::eq(Arc::as_ptr(&e), endpoint) && e.available())
        })
    }
}

impl fmt::Display for EjectionGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// What a snapshot tells an endpoint about its ejection: the guards it is
/// in and the bounds the backends listing it put on ejections.
///
/// An endpoint listed by several backends (of one route or several) has one
/// health state for all of them, so it takes the most lenient of their
/// settings: no ejection if any of them turns ejection off, and none longer
/// than the shortest any of them would give. Each request's own backend
/// still sets how many failures in a row eject (`consecutive_failures`).
#[derive(Debug, Default)]
pub struct EjectionRules {
    /// `None` until a backend is added.
    limits: Option<Limits>,
    guards: Vec<Arc<EjectionGuard>>,
}

/// The most lenient of several backends' outlier settings.
#[derive(Debug, Clone, Copy)]
struct Limits {
    enabled: bool,
    base: Duration,
    max: Duration,
}

impl Limits {
    fn of(config: &OutlierConfig) -> Limits {
        Limits {
            enabled: config.consecutive_failures > 0,
            base: config.base_ejection,
            max: config.max_ejection,
        }
    }

    fn period(self, repeat: u32) -> Duration {
        self.base
            .saturating_mul(1 << repeat.min(MAX_DOUBLINGS))
            .min(self.max)
    }
}

impl EjectionRules {
    /// The endpoint is listed by a backend with these outlier settings.
    pub fn add_backend(&mut self, config: &OutlierConfig) {
        let next = Limits::of(config);
        self.limits = Some(match self.limits {
            None => next,
            Some(limits) => Limits {
                enabled: limits.enabled && next.enabled,
                base: limits.base.min(next.base),
                max: limits.max.min(next.max),
            },
        });
    }

    /// The endpoint is in `guard`'s set. Guards are added route by route,
    /// so a repeat (an endpoint listed twice in one guard) can only be the
    /// last one added: checking that one keeps a snapshot with an endpoint
    /// shared by N routes linear in N, not quadratic.
    pub fn add_guard(&mut self, guard: &Arc<EjectionGuard>) {
        if !self.guards.last().is_some_and(|g| Arc::ptr_eq(g, guard)) {
            self.guards.push(Arc::clone(guard));
        }
    }
}

/// An endpoint's ejection state, behind `Health::outlier`.
#[derive(Debug, Default)]
pub(super) struct Outlier {
    rules: EjectionRules,
    current: Option<Ejection>,
}

/// A running ejection.
#[derive(Debug)]
struct Ejection {
    since: Instant,
    period: Duration,
    /// Earlier ejections in a row, for recomputing `period` under new settings.
    repeat: u32,
    /// Wakes this ejection's timer when `period` shrank or the ejection ended.
    wake: Arc<Notify>,
}

impl Ejection {
    fn deadline(&self) -> Instant {
        self.since + self.period
    }
}

impl Endpoint {
    fn outlier(&self) -> MutexGuard<'_, Outlier> {
        // Every write under this lock leaves the state whole.
        self.health
            .outlier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `failures` in a row reached `policy.consecutive_failures`: ejects the
    /// endpoint, unless the snapshot's rules say no, or it is the last
    /// available endpoint of one of its guards (logged at warn, once until a
    /// request succeeds).
    pub(super) fn eject(self: &Arc<Self>, policy: &OutlierConfig, failures: u32) {
        let deciding = DECIDING.lock().unwrap_or_else(PoisonError::into_inner);
        let mut outlier = self.outlier();
        let limits = outlier.rules.limits;
        // A request that began under an older snapshot may still pass the
        // old settings: the newest ones decide.
        if outlier.current.is_some() || limits.is_some_and(|l| !l.enabled) {
            return;
        }
        if let Some(guard) = outlier
            .rules
            .guards
            .iter()
            .find(|g| !g.has_other_available(self))
        {
            if !self.health.refused.swap(true, Ordering::Relaxed) {
                tracing::warn!(endpoint = %self.addr, failures, last_available_of = %guard, "not ejecting endpoint after consecutive failures: it is the last available one");
            }
            return;
        }
        self.health.refused.store(false, Ordering::Relaxed);
        self.health.failures.store(0, Ordering::Relaxed);
        let repeat = self.health.ejections.fetch_add(1, Ordering::Relaxed);
        let own = Limits::of(policy).period(repeat);
        let period = limits.map_or(own, |l| own.min(l.period(repeat)));
        let wake = Arc::new(Notify::new());
        outlier.current = Some(Ejection {
            since: Instant::now(),
            period,
            repeat,
            wake: Arc::clone(&wake),
        });
        // Set before `DECIDING` is released: the next decision must see it.
        self.health.ejected.store(true, Ordering::Relaxed);
        drop(outlier);
        drop(deciding);
        tracing::warn!(endpoint = %self.addr, ?period, failures, "ejecting endpoint after consecutive failures");
        self.close_idle();
        self.changes.notify_one();
        tokio::spawn(ejection_timer(Arc::downgrade(self), wake));
    }

    /// Ends a running ejection now (a passing active check).
    pub(super) fn end_ejection(&self, reason: &'static str) {
        let mut outlier = self.outlier();
        self.lift(&mut outlier, reason);
    }

    /// Applies a new snapshot's rules, to the running ejection too: lifted
    /// when ejection is now off or its shorter period has passed, cut short
    /// when the period is shorter now. A longer period does not extend it.
    pub fn set_ejection_rules(&self, rules: EjectionRules) {
        let mut outlier = self.outlier();
        outlier.rules = rules;
        let Some(limits) = outlier.rules.limits else {
            return;
        };
        let Some(ejection) = outlier.current.as_mut() else {
            return;
        };
        if !limits.enabled {
            self.lift(&mut outlier, "ejection turned off");
            return;
        }
        let period = limits.period(ejection.repeat);
        if period >= ejection.period {
            return;
        }
        ejection.period = period;
        if ejection.deadline() <= Instant::now() {
            self.lift(&mut outlier, "ejection period shortened");
        } else {
            tracing::info!(endpoint = %self.addr, ?period, "ejection period shortened");
            ejection.wake.notify_one();
        }
    }

    /// The running ejection's deadline, if it is still the one `wake`
    /// belongs to and has not passed; a passed one is lifted here.
    fn ejection_deadline(&self, wake: &Arc<Notify>) -> Option<Instant> {
        let mut outlier = self.outlier();
        let ejection = outlier
            .current
            .as_ref()
            .filter(|e| Arc::ptr_eq(&e.wake, wake))?;
        let deadline = ejection.deadline();
        if deadline > Instant::now() {
            return Some(deadline);
        }
        self.lift(&mut outlier, "ejection period over");
        None
    }

    fn lift(&self, outlier: &mut Outlier, reason: &'static str) {
        let Some(ejection) = outlier.current.take() else {
            return;
        };
        self.health.ejected.store(false, Ordering::Relaxed);
        ejection.wake.notify_one();
        tracing::info!(endpoint = %self.addr, reason, "ejection over: trying the endpoint again");
        self.changes.notify_one();
    }
}

/// Sleeps until the ejection's deadline, re-reading it whenever it moves,
/// and lifts it then. Holds the endpoint weakly: a removed one just goes.
async fn ejection_timer(endpoint: Weak<Endpoint>, wake: Arc<Notify>) {
    loop {
        let Some(deadline) = endpoint.upgrade().and_then(|e| e.ejection_deadline(&wake)) else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::EndpointAddr, upstream::Transport};

    fn endpoint(port: u16) -> Arc<Endpoint> {
        let addr = EndpointAddr {
            tls: false,
            host: "127.0.0.1".to_string(),
            port,
        };
        Arc::new(Endpoint::new(
            addr,
            Transport::default(),
            Arc::new(Notify::new()),
        ))
    }

    fn policy(consecutive_failures: u32, base: u64, max: u64) -> OutlierConfig {
        OutlierConfig {
            consecutive_failures,
            base_ejection: Duration::from_secs(base),
            max_ejection: Duration::from_secs(max),
        }
    }

    /// Both endpoints in one guard, with `config` for both.
    fn pair(config: &OutlierConfig) -> (Arc<Endpoint>, Arc<Endpoint>) {
        let (a, b) = (endpoint(1), endpoint(2));
        let guard = EjectionGuard::new("route `web`".to_string(), [&a, &b]);
        for e in [&a, &b] {
            e.set_ejection_rules(rules(config, &guard));
        }
        (a, b)
    }

    fn rules(config: &OutlierConfig, guard: &Arc<EjectionGuard>) -> EjectionRules {
        let mut rules = EjectionRules::default();
        rules.add_backend(config);
        rules.add_guard(guard);
        rules
    }

    fn fail(endpoint: &Arc<Endpoint>, config: &OutlierConfig, times: u32) {
        for _ in 0..times {
            endpoint.record_failure(config);
        }
    }

    /// Lets the timer task run (time is paused: it jumps to the next timer).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn last_available_endpoint_of_a_guard_is_not_ejected() {
        let config = policy(3, 30, 300);
        let (a, b) = pair(&config);
        fail(&a, &config, 3);
        assert_eq!(a.state(), "ejected");
        fail(&b, &config, 10);
        assert_eq!(b.state(), "up", "the last one stays in");
        assert!(b.health.refused.load(Ordering::Relaxed));
        b.record_success();
        assert!(!b.health.refused.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_ends_after_its_period_and_doubles_in_a_row() {
        let config = policy(1, 10, 15);
        let (a, _b) = pair(&config);
        fail(&a, &config, 1);
        tokio::time::sleep(Duration::from_millis(9_990)).await;
        assert_eq!(a.state(), "ejected");
        tokio::time::sleep(Duration::from_millis(20)).await;
        settle().await;
        assert_eq!(a.state(), "up");
        // The second in a row: 20 s, capped at 15 s.
        fail(&a, &config, 1);
        tokio::time::sleep(Duration::from_millis(14_990)).await;
        assert_eq!(a.state(), "ejected");
        tokio::time::sleep(Duration::from_millis(20)).await;
        settle().await;
        assert_eq!(a.state(), "up");
    }

    #[tokio::test(start_paused = true)]
    async fn passing_check_ends_an_ejection() {
        let config = policy(1, 60, 60);
        let (a, _b) = pair(&config);
        fail(&a, &config, 1);
        a.record_check(true, 2, 2);
        assert_eq!(a.state(), "up");
        settle().await;
        assert_eq!(a.state(), "up");
    }

    #[tokio::test(start_paused = true)]
    async fn rules_turning_ejection_off_lift_it_and_shorter_ones_cut_it_short() {
        let config = policy(1, 60, 60);
        let (a, b) = pair(&config);
        let guard = EjectionGuard::new("route `web`".to_string(), [&a, &b]);
        fail(&a, &config, 1);
        a.set_ejection_rules(rules(&policy(0, 60, 60), &guard));
        assert_eq!(a.state(), "up", "turned off");

        a.set_ejection_rules(rules(&config, &guard));
        fail(&a, &config, 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        a.set_ejection_rules(rules(&policy(1, 5, 5), &guard));
        assert_eq!(a.state(), "ejected", "5 s from the start, 4 s to go");
        tokio::time::sleep(Duration::from_millis(3_990)).await;
        assert_eq!(a.state(), "ejected");
        tokio::time::sleep(Duration::from_millis(20)).await;
        settle().await;
        assert_eq!(a.state(), "up", "the timer woke at the new deadline");

        // A period already over ends at once.
        fail(&a, &config, 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        a.set_ejection_rules(rules(&policy(1, 1, 1), &guard));
        assert_eq!(a.state(), "up");
    }

    #[tokio::test(start_paused = true)]
    async fn shared_endpoint_takes_the_most_lenient_settings() {
        let (a, b) = (endpoint(1), endpoint(2));
        let guard = EjectionGuard::new("route `web`".to_string(), [&a, &b]);
        let strict = policy(1, 60, 60);
        let mut shared = rules(&strict, &guard);
        shared.add_backend(&policy(0, 60, 60));
        a.set_ejection_rules(shared);
        fail(&a, &strict, 5);
        assert_eq!(a.state(), "up", "one backend listing it has ejection off");

        let mut shared = rules(&strict, &guard);
        shared.add_backend(&policy(5, 2, 4));
        a.set_ejection_rules(shared);
        fail(&a, &strict, 1);
        assert_eq!(a.state(), "ejected");
        tokio::time::sleep(Duration::from_millis(2_010)).await;
        settle().await;
        assert_eq!(a.state(), "up", "the shorter base applies");
    }

    #[tokio::test(start_paused = true)]
    async fn removed_endpoint_is_not_kept_alive_by_its_ejection() {
        let config = policy(1, 60, 60);
        let (a, b) = pair(&config);
        fail(&a, &config, 1);
        let weak = Arc::downgrade(&a);
        drop((a, b));
        settle().await;
        assert!(weak.upgrade().is_none());
    }
}
