//! This instance's registration: `P/instances/NAME` under a lease of
//! `lease_ttl`, renewed and rewritten every third of it and soon after each
//! new snapshot of this instance (weights, reload, failover), so the fleet view shows every instance's
//! applied revision and weights. A dead instance leaves the view when its
//! lease runs out; a stopped one revokes it and leaves at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Fleet;
use super::etcd::{CALL_TIMEOUT, Op};

/// The least time between two registrations written for applied changes.
const MIN_GAP: Duration = Duration::from_millis(500);

pub(super) async fn run(fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) {
    let period = fleet.config.lease_ttl / 3;
    // Rewritten soon after a snapshot change (weights, reload, failover),
    // not on every etcd revision: registrations would wake each other.
    let mut applied = fleet.state.subscribe();
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            next = Instant::now() + period;
            if let Err(error) = register(&fleet).await {
                tracing::debug!(%error, "fleet: registration failed; trying again");
            }
        }
        if let Err(error) = fleet.contest().await {
            tracing::debug!(%error, "fleet: bidding for canary controllers failed");
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            // A canary route without a controller: bid now.
            _ = fleet.contest.notified() => {}
            _ = applied.changed() => {
                // Let a burst of changes settle into one write.
                tokio::select! {
                    _ = tokio::time::sleep(MIN_GAP) => {}
                    _ = stop.changed() => break,
                }
                next = Instant::now();
            }
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    let lease = fleet.lease.swap(0, Ordering::Relaxed);
    if lease != 0 {
        let _ = tokio::time::timeout(CALL_TIMEOUT, fleet.etcd.revoke(lease)).await;
    }
}

/// Renews (or takes) the lease and writes this instance's record under it.
async fn register(fleet: &Fleet) -> Result<(), String> {
    let mut lease = fleet.lease.load(Ordering::Relaxed);
    if lease != 0
        && !fleet
            .etcd
            .keep_alive(lease)
            .await
            .map_err(|e| e.to_string())?
    {
        lease = 0;
    }
    if lease == 0 {
        lease = fleet
            .etcd
            .grant(fleet.config.lease_ttl)
            .await
            .map_err(|e| e.to_string())?;
        fleet.lease.store(lease, Ordering::Relaxed);
    }
    let record = serde_json::to_vec(&fleet.record()).map_err(|e| e.to_string())?;
    let put = Op::Put {
        key: fleet.keys.instance(fleet.instance()),
        value: record,
        lease,
    };
    fleet
        .etcd
        .txn(&[], &[put], &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
