//! What the canary controller asks of the fleet. Per canary route, one
//! instance holds `P/canary/ROUTE/controller` under its lease and runs the
//! controller: it judges the fleet's traffic (every instance publishes its
//! counts of the step in force), and its weight changes and saved state are
//! written only while it still holds that key as it took it, so an old
//! controller that was paused past its lease cannot write. When it dies, its
//! lease ends, the key goes, and another instance takes it and carries on
//! from the saved state.

use super::Fleet;
use super::etcd::{Compare, Op};
use super::write::FleetError;
use crate::control::history::Caller;
use crate::control::{Applied, Change};

impl Fleet {
    /// The instance running `route`'s canary controller, if any.
    pub fn canary_controller(&self, route: &str) -> Option<String> {
        self.view()
            .controllers
            .get(route)
            .map(|(who, _)| who.clone())
    }

    /// Whether this instance runs `route`'s canary controller.
    pub fn runs_canary(&self, route: &str) -> bool {
        self.canary_controller(route).as_deref() == Some(self.instance())
    }

    /// `route`'s canary state as its controller last saved it.
    pub fn canary_state(&self, route: &str) -> Option<Vec<u8>> {
        self.view().canary_states.get(route).cloned()
    }

    /// The other instances' published counts of `route`'s canary step.
    pub fn canary_stats(&self, route: &str) -> Vec<Vec<u8>> {
        let view = self.view();
        view.canary_stats
            .get(route)
            .map(|by_instance| {
                by_instance
                    .iter()
                    .filter(|(instance, _)| instance.as_str() != self.instance())
                    .map(|(_, stats)| stats.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The fence of `route`'s controller writes: its key as this instance holds it.
    fn fence(&self, route: &str) -> Result<Compare, FleetError> {
        match self.view().controllers.get(route) {
            Some((who, revision)) if who == self.instance() => {
                Ok(Compare::ModRevision(self.keys.controller(route), *revision))
            }
            _ => Err(FleetError::NotController(route.to_string())),
        }
    }

    /// A weight change of `route`'s canary, made only while this instance
    /// runs its controller.
    /// `caller`: the admin caller of a canary action, recorded as the actor.
    pub async fn write_canary(
        &self,
        route: &str,
        change: Change,
        caller: Option<Caller>,
    ) -> Result<Applied, FleetError> {
        let fence = self.fence(route)?;
        self.write_attributed(change, Some(fence), caller).await
    }

    /// Saves `route`'s canary state, only while this instance runs its controller.
    pub async fn save_canary(&self, route: &str, state: Vec<u8>) -> Result<(), FleetError> {
        let fence = self.fence(route)?;
        let put = Op::Put {
            key: self.keys.canary_state(route),
            value: state,
            lease: 0,
        };
        let answer = self.etcd.txn(&[fence], &[put], &[]).await?;
        if answer.succeeded {
            Ok(())
        } else {
            Err(FleetError::NotController(route.to_string()))
        }
    }

    /// Publishes this instance's counts of `route`'s canary step, under its
    /// lease (they go when it does).
    pub async fn publish_canary_stats(
        &self,
        route: &str,
        stats: Vec<u8>,
    ) -> Result<(), FleetError> {
        let lease = self.lease();
        if lease == 0 {
            return Err(FleetError::Unavailable("no lease yet".into()));
        }
        let put = Op::Put {
            key: self.keys.canary_stats(route, self.instance()),
            value: stats,
            lease,
        };
        self.etcd.txn(&[], &[put], &[]).await?;
        Ok(())
    }

    /// Bids for the controller of every canary route that has none: the key
    /// is created under this instance's lease only if it does not exist.
    pub(super) async fn contest(&self) -> Result<(), FleetError> {
        let lease = self.lease();
        if lease == 0 {
            return Ok(());
        }
        let snapshot = self.state.snapshot_full();
        let free: Vec<String> = {
            let view = self.view();
            snapshot
                .routes
                .iter()
                .filter(|r| r.config.canary.is_some())
                .map(|r| r.name().to_string())
                .filter(|name| !view.controllers.contains_key(name))
                .collect()
        };
        for route in free {
            let key = self.keys.controller(&route);
            let put = Op::Put {
                key: key.clone(),
                value: self.instance().as_bytes().to_vec(),
                lease,
            };
            let answer = self
                .etcd
                .txn(&[Compare::ModRevision(key, 0)], &[put], &[])
                .await?;
            if answer.succeeded {
                tracing::info!(%route, "fleet: this instance now runs the route's canary controller");
            }
        }
        Ok(())
    }
}
