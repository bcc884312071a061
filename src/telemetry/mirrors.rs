//! A route's mirroring counters, concurrency limit and last mismatches, kept
//! across reloads; the mirror itself is [`crate::exchange::mirror`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Weight;
use crate::telemetry::{BackendMetrics, MirrorOutcome};

/// Mismatches kept per route.
const RECENT_MISMATCHES: usize = 50;

/// A route's mirroring state, kept across reloads.
#[derive(Debug)]
pub struct MirrorState {
    sampled: AtomicU64,
    limit: Arc<Semaphore>,
    pub max_concurrent: u32,
    counts: [AtomicU64; 4],
    recent: Mutex<VecDeque<Mismatch>>,
}

/// One copy whose answer differed from the primary's.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    #[serde(with = "crate::clock::rfc3339")]
    pub time: SystemTime,
    pub method: String,
    pub path: String,
    pub primary_status: u16,
    pub mirror_status: u16,
    /// Whether the bodies differed (only known with `compare = true`).
    pub body_differs: bool,
}

impl MirrorState {
    /// A new state allowing `max_concurrent` copies in flight.
    pub fn new(max_concurrent: u32) -> MirrorState {
        MirrorState {
            sampled: AtomicU64::new(0),
            limit: Arc::new(Semaphore::new(max_concurrent as usize)),
            max_concurrent,
            counts: Default::default(),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether this request is in the mirrored share: exact over every
    /// 10,000 requests, spread evenly (1 % = every 100th).
    #[inline]
    pub fn sample(&self, percent: Weight) -> bool {
        let n = self.sampled.fetch_add(1, Ordering::Relaxed);
        let p = u64::from(percent.0);
        (n + 1) * p / 10_000 != n * p / 10_000
    }

    /// A slot for one more copy, unless the limit is reached.
    pub fn try_start(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.limit).try_acquire_owned().ok()
    }

    /// Counts an outcome here and in the metrics.
    pub fn record(&self, outcome: MirrorOutcome, metrics: &BackendMetrics) {
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
        metrics.record_mirror(outcome);
    }

    pub(crate) fn remember(&self, mismatch: Mismatch) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_MISMATCHES {
                recent.pop_front();
            }
            recent.push_back(mismatch);
        }
    }

    /// Outcome counts: match, mismatch, error, skipped.
    pub fn counts(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }

    /// The last mismatches, newest first.
    pub fn mismatches(&self) -> Vec<Mismatch> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_exact_and_spread() {
        let state = MirrorState::new(1);
        let picked = (0..1000).filter(|_| state.sample(Weight(500))).count();
        assert_eq!(picked, 50);
        let state = MirrorState::new(1);
        let first: Vec<bool> = (0..40).map(|_| state.sample(Weight(500))).collect();
        assert_eq!(first.iter().filter(|p| **p).count(), 2);
        assert!(!state.sample(Weight(0)));
        let all = MirrorState::new(1);
        assert!((0..100).all(|_| all.sample(Weight(10_000))));
    }

    #[test]
    fn the_limit_bounds_copies_in_flight() {
        let state = MirrorState::new(2);
        let a = state.try_start();
        let b = state.try_start();
        assert!(a.is_some() && b.is_some());
        assert!(state.try_start().is_none());
        drop(a);
        assert!(state.try_start().is_some());
    }
}
