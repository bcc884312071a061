//! In-memory time series per backend: requests, errors and a latency
//! histogram in 10-second slots for the last 15 minutes. The dashboard draws
//! them and the canary controller judges its steps on them, with no
//! Prometheus needed.
//!
//! Recording is a few relaxed atomic adds into the slot of the current
//! interval; the first request of a new interval clears the slot it reuses
//! (a request racing with that clear may be lost, which a graph can bear).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Length of one slot.
pub const INTERVAL_SECS: u64 = 10;
/// Slots kept: 15 minutes.
pub const SLOTS: usize = 90;
/// Latency buckets: four per doubling from 100 µs; the last one is open.
const BUCKETS: usize = 72;
const FIRST_BUCKET_MICROS: f64 = 100.0;

/// The series of one backend; memory is taken at its first request.
#[derive(Debug, Default)]
pub struct Series {
    slots: OnceLock<Box<[Slot]>>,
}

#[derive(Debug)]
struct Slot {
    /// Which interval (unix seconds / INTERVAL_SECS) the counts belong to.
    interval: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU32; BUCKETS],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            interval: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// One interval as reported: counts and the 99th percentile latency.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Point {
    /// Unix seconds at the end of the interval.
    pub t: u64,
    pub requests: u64,
    pub errors: u64,
    /// `None` when the interval had no requests.
    pub p99_ms: Option<f64>,
}

/// Counts over a window of intervals.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    /// Requests per latency bucket (JSON: a list, shorter lists padded).
    #[serde(with = "buckets")]
    latency: [u64; BUCKETS],
}

/// The latency buckets as a JSON list (fleet instances publish them).
mod buckets {
    use super::BUCKETS;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(latency: &[u64; BUCKETS], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(latency.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u64; BUCKETS], D::Error> {
        let list = Vec::<u64>::deserialize(d)?;
        if list.len() > BUCKETS {
            return Err(serde::de::Error::custom("too many latency buckets"));
        }
        let mut latency = [0; BUCKETS];
        latency[..list.len()].copy_from_slice(&list);
        Ok(latency)
    }
}

impl Summary {
    /// Errors per request; 0 with no requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The 99th percentile latency in milliseconds (upper edge of its bucket).
    pub fn p99_ms(&self) -> Option<f64> {
        quantile_ms(&self.latency, 0.99)
    }

    /// Adds `other`'s counts (another instance's window of the same step).
    pub fn add(&mut self, other: &Summary) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine += theirs;
        }
    }

    /// What was added since `earlier`, a summary of the same window taken
    /// before (the canary's step windows start mid-interval).
    pub fn since(&self, earlier: &Summary) -> Summary {
        let mut latency = self.latency;
        for (now, before) in latency.iter_mut().zip(&earlier.latency) {
            *now = now.saturating_sub(*before);
        }
        Summary {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency,
        }
    }
}

/// The current interval number.
pub fn current_interval() -> u64 {
    crate::clock::unix_secs() / INTERVAL_SECS
}

impl Series {
    fn slots(&self) -> &[Slot] {
        self.slots
            .get_or_init(|| (0..SLOTS).map(|_| Slot::new()).collect())
    }

    /// Records one finished request.
    #[inline]
    pub fn record(&self, latency: Duration, error: bool) {
        self.record_at(current_interval(), latency, error);
    }

    fn record_at(&self, interval: u64, latency: Duration, error: bool) {
        let slot = &self.slots()[(interval % SLOTS as u64) as usize];
        if slot.interval.load(Ordering::Relaxed) != interval
            && slot.interval.swap(interval, Ordering::Relaxed) != interval
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
            for bucket in &slot.latency {
                bucket.store(0, Ordering::Relaxed);
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// The last [`SLOTS`] finished intervals before `now`, oldest first.
    pub fn points(&self, now: u64) -> Vec<Point> {
        let first = now.saturating_sub(SLOTS as u64);
        (first..now).map(|interval| self.point(interval)).collect()
    }

    /// Interval `interval` (it may still be in progress).
    pub fn point(&self, interval: u64) -> Point {
        let summary = self.summary(interval, interval + 1);
        Point {
            t: (interval + 1) * INTERVAL_SECS,
            requests: summary.requests,
            errors: summary.errors,
            p99_ms: summary.p99_ms(),
        }
    }

    /// Counts over intervals `from..to` (those still kept).
    pub fn summary(&self, from: u64, to: u64) -> Summary {
        let mut summary = Summary {
            requests: 0,
            errors: 0,
            latency: [0; BUCKETS],
        };
        let Some(slots) = self.slots.get() else {
            return summary;
        };
        let from = from.max(to.saturating_sub(SLOTS as u64));
        for interval in from..to {
            let slot = &slots[(interval % SLOTS as u64) as usize];
            if slot.interval.load(Ordering::Relaxed) != interval {
                continue;
            }
            summary.requests += slot.requests.load(Ordering::Relaxed);
            summary.errors += slot.errors.load(Ordering::Relaxed);
            for (sum, bucket) in summary.latency.iter_mut().zip(&slot.latency) {
                *sum += u64::from(bucket.load(Ordering::Relaxed));
            }
        }
        summary
    }
}

/// The bucket of a latency: 0 below 100 µs, then four per doubling.
fn bucket_of(latency: Duration) -> usize {
    let micros = latency.as_secs_f64() * 1e6;
    if micros < FIRST_BUCKET_MICROS {
        return 0;
    }
    let index = ((micros / FIRST_BUCKET_MICROS).log2() * 4.0).floor() as usize + 1;
    index.min(BUCKETS - 1)
}

/// The upper edge of bucket `index`, in milliseconds.
fn bucket_upper_ms(index: usize) -> f64 {
    FIRST_BUCKET_MICROS * 2f64.powf(index as f64 / 4.0) / 1000.0
}

fn quantile_ms(latency: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = latency.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (index, count) in latency.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(bucket_upper_ms(index));
        }
    }
    Some(bucket_upper_ms(BUCKETS - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_a_quarter_doubling() {
        assert_eq!(bucket_of(Duration::from_micros(50)), 0);
        assert_eq!(bucket_of(Duration::from_micros(100)), 1);
        assert_eq!(bucket_of(Duration::from_micros(200)), 5);
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
        // A latency is never above its bucket's upper edge.
        for micros in [150u64, 1_000, 12_345, 2_000_000] {
            let index = bucket_of(Duration::from_micros(micros));
            assert!(bucket_upper_ms(index) * 1000.0 >= micros as f64);
            assert!(bucket_upper_ms(index) * 1000.0 < micros as f64 * 1.2);
        }
    }

    #[test]
    fn p99_and_error_rate_over_a_window() {
        let series = Series::default();
        for i in 0..1000u64 {
            let latency = if i < 990 { 2 } else { 500 };
            series.record_at(7, Duration::from_millis(latency), i % 100 == 0);
        }
        series.record_at(8, Duration::from_millis(1), false);
        let step = series.summary(7, 8);
        assert_eq!(step.requests, 1000);
        assert_eq!(step.errors, 10);
        assert!((step.error_rate() - 0.01).abs() < 1e-9);
        let p99 = step.p99_ms().unwrap();
        assert!((2.0..2.4).contains(&p99), "p99 {p99}");
        assert_eq!(series.summary(7, 9).requests, 1001);
    }

    #[test]
    fn since_leaves_what_came_after_the_mark() {
        let series = Series::default();
        for _ in 0..10 {
            series.record_at(7, Duration::from_millis(500), true);
        }
        let mark = series.summary(7, 8);
        for _ in 0..100 {
            series.record_at(7, Duration::from_millis(2), false);
        }
        series.record_at(8, Duration::from_millis(2), false);
        let window = series.summary(7, 9).since(&mark);
        assert_eq!((window.requests, window.errors), (101, 0));
        assert!(window.p99_ms().unwrap() < 3.0);
    }

    #[test]
    fn a_reused_slot_starts_from_zero() {
        let series = Series::default();
        series.record_at(3, Duration::from_millis(1), true);
        series.record_at(3 + SLOTS as u64, Duration::from_millis(1), false);
        let points = series.points(4 + SLOTS as u64);
        assert_eq!(points.len(), SLOTS);
        let last = points.last().unwrap();
        assert_eq!((last.requests, last.errors), (1, 0));
        assert_eq!(points[0].p99_ms, None);
    }
}
