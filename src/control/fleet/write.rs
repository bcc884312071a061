//! Writes to the fleet: an admin change becomes one etcd transaction that
//! moves the revision counter from the number this instance last read to
//! the next one (`compare mod_revision`), puts the route's weights and the
//! history entry, and drops the entry that falls out of the kept history.
//! A lost race is read again and retried (409 when the caller named the
//! revision it expected); an answer lost on the way is resolved by looking
//! for the write's request id in the history, so a retry never applies a
//! change twice. The answer waits until this instance has applied the write.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Fleet;
use super::etcd::{Compare, EtcdError, Op};
use super::keys::{WeightsRecord, counter_number, parse_revision};
use crate::control::history::{Caller, MAX_HISTORY, Revision, Source, WeightMap};
use crate::control::{Applied, Change, ChangeError};

/// A write answers within this, applied or not (SPEC: 503 within 2 s).
const WRITE_DEADLINE: Duration = Duration::from_millis(1800);
/// Lost races retried before giving up.
const MAX_ATTEMPTS: usize = 8;
/// Routes seeded per transaction (etcd allows 128 operations in one).
const SEED_CHUNK: usize = 30;

/// Why a fleet write failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// 503: etcd cannot be reached (or too busy); nothing changed.
    #[error(
        "the fleet's etcd is unreachable ({0}): the change was not made, the weights in force stay"
    )]
    Unavailable(String),
    /// 503: sent, but no answer came in time: it may yet be applied.
    #[error(
        "the fleet's etcd did not answer in time: the change may or may not be made; see the history before trying again"
    )]
    Unanswered,
    /// This instance no longer runs the route's canary controller: another
    /// instance took over (its lease ran out meanwhile).
    #[error("this instance no longer runs the canary controller of route `{0}`")]
    NotController(String),
    /// 503: written, but this instance has not applied it in time.
    #[error("written to the fleet as revision {0}, not applied on this instance yet")]
    NotApplied(u64),
}

impl From<EtcdError> for FleetError {
    fn from(e: EtcdError) -> FleetError {
        FleetError::Unavailable(e.to_string())
    }
}

/// What one write puts in etcd.
struct Plan {
    route: String,
    zone: Option<String>,
    /// `None`: drop the zone's weights.
    weights: Option<WeightMap>,
    previous: Option<WeightMap>,
    source: Source,
    reason: String,
    if_revision: Option<u64>,
}

impl Fleet {
    /// Makes a weight change (set, promote, rollback, reset, drop a zone)
    /// for the whole fleet; answers once applied here.
    pub async fn write(&self, change: Change) -> Result<Applied, FleetError> {
        self.write_attributed(change, None, None).await
    }

    /// [`Fleet::write`] of an admin caller, recorded as the revision's actor.
    pub async fn write_by(&self, change: Change, caller: Caller) -> Result<Applied, FleetError> {
        self.write_attributed(change, None, Some(caller)).await
    }

    /// [`Fleet::write`] attributed to `caller`, made only while this
    /// instance holds `fence`'s controller key as it last saw it (a canary
    /// controller's writes) when there is one.
    pub(super) async fn write_attributed(
        &self,
        change: Change,
        fence: Option<Compare>,
        caller: Option<Caller>,
    ) -> Result<Applied, FleetError> {
        if !self.connected() {
            return Err(FleetError::Unavailable("not connected".into()));
        }
        let deadline = Instant::now() + WRITE_DEADLINE;
        let write = self.write_until(change, fence, caller, deadline);
        match tokio::time::timeout_at(deadline, write).await {
            Ok(result) => result,
            Err(_) => Err(FleetError::Unanswered),
        }
    }

    async fn write_until(
        &self,
        change: Change,
        fence: Option<Compare>,
        caller: Option<Caller>,
        deadline: Instant,
    ) -> Result<Applied, FleetError> {
        let request_id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let mut answer_lost = false;
        for _ in 0..MAX_ATTEMPTS {
            let plan = self.plan(&change)?;
            let (number, counter_mod) = *self.counter_lock();
            if answer_lost && let Some(done) = self.find_request(&request_id).await? {
                return self.answered(done, &plan.route, deadline).await;
            }
            if let Some(expected) = plan.if_revision
                && expected != number
            {
                return Err(ChangeError::Conflict {
                    expected,
                    current: number,
                }
                .into());
            }
            let next = number + 1;
            let record = Revision {
                revision: next,
                time: SystemTime::now(),
                route: Some(plan.route.clone()),
                weights: plan.weights.clone(),
                previous: plan.previous.clone(),
                source: plan.source,
                reason: plan.reason.clone(),
                instance: Some(self.instance().to_string()),
                zone: plan.zone.clone(),
                request_id: Some(request_id.clone()),
                actor: caller.as_ref().map(|c| c.actor.clone()),
                client: caller.as_ref().and_then(|c| c.client.clone()),
            };
            let weights_key = self.keys.weights(&plan.route, plan.zone.as_deref());
            let mut ops = vec![
                self.put_counter(next),
                put(self.keys.history(next), to_json(&record)?),
            ];
            ops.push(match &plan.weights {
                Some(weights) => put(
                    weights_key,
                    to_json(&WeightsRecord {
                        weights: weights.clone(),
                        revision: next,
                    })?,
                ),
                None => Op::Delete(weights_key),
            });
            if next > MAX_HISTORY as u64 {
                ops.push(Op::Delete(self.keys.history(next - MAX_HISTORY as u64)));
            }
            let mut compare = vec![Compare::ModRevision(self.keys.revision(), counter_mod)];
            let mut failure = vec![Op::Get(self.keys.revision())];
            if let Some(fence) = &fence {
                compare.push(fence.clone());
                failure.push(Op::Get(fence.key().to_string()));
            }
            match self.etcd.txn(&compare, &ops, &failure).await {
                Ok(answer) if answer.succeeded => {
                    *self.counter_lock() = (next, answer.header.revision);
                    return self
                        .answered((next, answer.header.revision), &plan.route, deadline)
                        .await;
                }
                Ok(answer) => {
                    if let Some(fence) = &fence
                        && !fence.holds(answer.ranges.get(1).and_then(|r| r.first()))
                    {
                        return Err(FleetError::NotController(plan.route));
                    }
                    // Another write won: read the counter it left and go again.
                    if let Some(kv) = answer.ranges.first().and_then(|r| r.first()) {
                        *self.counter_lock() = (counter_number(&kv.value), kv.mod_revision);
                    }
                }
                Err(EtcdError::Unreachable(_)) => answer_lost = true,
                Err(e) => return Err(e.into()),
            }
        }
        Err(FleetError::Unavailable(
            "too many concurrent writes: try again".into(),
        ))
    }

    /// What `change` writes, resolved against this instance's routes.
    fn plan(&self, change: &Change) -> Result<Plan, FleetError> {
        if let Change::DropZone { route, zone } = change {
            let snapshot = self.state.snapshot();
            if snapshot.route(route).is_none() {
                return Err(ChangeError::UnknownRoute(route.clone()).into());
            }
            return Ok(Plan {
                route: route.clone(),
                zone: Some(zone.clone()),
                weights: None,
                previous: snapshot.route(route).map(crate::control::Route::weights),
                source: Source::Admin,
                reason: format!("zone {zone}: back to the fleet-wide weights"),
                if_revision: None,
            });
        }
        let resolved = self.state.resolve(change)?;
        let reason = match &resolved.zone {
            Some(zone) => format!("zone {zone}: {}", resolved.reason),
            None => resolved.reason,
        };
        Ok(Plan {
            route: resolved.route,
            zone: resolved.zone,
            weights: Some(resolved.weights),
            previous: resolved.previous,
            source: resolved.source,
            reason,
            if_revision: resolved.if_revision,
        })
    }

    /// Waits for this instance to apply the write `(revision, etcd revision)`.
    async fn answered(
        &self,
        (revision, etcd_revision): (u64, i64),
        route: &str,
        deadline: Instant,
    ) -> Result<Applied, FleetError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if self.applied_at_least(etcd_revision, left).await {
            Ok(Applied {
                revision,
                routes_changed: vec![route.to_string()],
            })
        } else {
            Err(FleetError::NotApplied(revision))
        }
    }

    /// The write with `request_id`, if it reached the history: its revision
    /// and the etcd revision that wrote it.
    async fn find_request(&self, request_id: &str) -> Result<Option<(u64, i64)>, FleetError> {
        let (_, history) = self.etcd.get_prefix(&self.keys.history_prefix()).await?;
        Ok(history.iter().rev().find_map(|kv| {
            let revision = parse_revision(&kv.value).ok()?;
            (revision.request_id.as_deref() == Some(request_id))
                .then_some((revision.revision, kv.mod_revision))
        }))
    }

    /// Seeds `missing` routes' fleet-wide weights (from this instance's
    /// file) that no other instance has seeded meanwhile; returns how many.
    pub(super) async fn seed(
        &self,
        missing: Vec<(String, WeightMap)>,
    ) -> Result<usize, FleetError> {
        let mut seeded = 0;
        for chunk in missing.chunks(SEED_CHUNK) {
            let mut chunk: Vec<&(String, WeightMap)> = chunk.iter().collect();
            for _ in 0..MAX_ATTEMPTS {
                if chunk.is_empty() {
                    break;
                }
                let (number, counter_mod) = *self.counter_lock();
                let mut compare = vec![Compare::ModRevision(self.keys.revision(), counter_mod)];
                let mut ops = vec![self.put_counter(number + chunk.len() as u64)];
                let mut failure = vec![Op::Get(self.keys.revision())];
                for (i, (route, weights)) in chunk.iter().enumerate() {
                    let revision = number + 1 + i as u64;
                    let key = self.keys.weights(route, None);
                    compare.push(Compare::ModRevision(key.clone(), 0));
                    failure.push(Op::Get(key.clone()));
                    let record = WeightsRecord {
                        weights: weights.clone(),
                        revision,
                    };
                    ops.push(put(key, to_json(&record)?));
                    let entry = Revision {
                        revision,
                        time: SystemTime::now(),
                        route: Some(route.clone()),
                        weights: Some(weights.clone()),
                        previous: None,
                        source: Source::File,
                        reason: format!("seeded from the file of instance {}", self.instance()),
                        instance: Some(self.instance().to_string()),
                        zone: None,
                        request_id: None,
                        actor: None,
                        client: None,
                    };
                    ops.push(put(self.keys.history(revision), to_json(&entry)?));
                }
                let answer = self.etcd.txn(&compare, &ops, &failure).await?;
                if answer.succeeded {
                    seeded += chunk.len();
                    *self.counter_lock() = (number + chunk.len() as u64, answer.header.revision);
                    break;
                }
                if let Some(kv) = answer.ranges.first().and_then(|r| r.first()) {
                    *self.counter_lock() = (counter_number(&kv.value), kv.mod_revision);
                }
                // Drop the routes another instance seeded meanwhile.
                let present: Vec<bool> = answer
                    .ranges
                    .iter()
                    .skip(1)
                    .map(|r| !r.is_empty())
                    .collect();
                let mut index = 0;
                chunk.retain(|_| {
                    let keep = !present.get(index).copied().unwrap_or(false);
                    index += 1;
                    keep
                });
            }
        }
        Ok(seeded)
    }

    fn put_counter(&self, number: u64) -> Op {
        put(self.keys.revision(), number.to_string().into_bytes())
    }
}

fn put(key: String, value: Vec<u8>) -> Op {
    Op::Put {
        key,
        value,
        lease: 0,
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<Vec<u8>, FleetError> {
    serde_json::to_vec(value).map_err(|e| FleetError::Unavailable(e.to_string()))
}
