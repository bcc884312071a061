//! Weighted choice of a backend: smooth weighted round-robin in basis points.
//!
//! The smooth WRR sequence (as in NGINX) for a set of weights is periodic, so
//! it is computed once per snapshot into a [`Schedule`] covering one cycle and
//! indexed by a per-route atomic counter. Picking is then one `fetch_add` and
//! one array read: no lock, and the split is exact over every full cycle
//! (90/10 gives exactly 9 + 1 in each 10 requests; 99.99/0.01 exactly 1 in
//! 10,000).

use std::sync::atomic::{AtomicU64, Ordering};

/// One cycle of the smooth weighted round-robin sequence.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    slots: Box<[u16]>,
}

impl Schedule {
    /// Builds the cycle for `weights` (basis points, one per backend, at most
    /// 65,536 backends). All-zero weights give an empty schedule.
    pub fn new(weights: &[u32]) -> Schedule {
        let divisor = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
        if divisor == 0 {
            return Schedule::default();
        }
        let reduced: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
        let total: i64 = reduced.iter().sum();
        let mut current = vec![0i64; reduced.len()];
        let mut slots = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            let mut best = 0;
            for (i, w) in reduced.iter().enumerate() {
                current[i] += w;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            slots.push(u16::try_from(best).unwrap_or(u16::MAX));
        }
        Schedule {
            slots: slots.into_boxed_slice(),
        }
    }

    /// The backend for the `n`th request, `None` when every weight is zero.
    #[inline]
    pub fn pick(&self, n: u64) -> Option<usize> {
        let len = self.slots.len() as u64;
        if len == 0 {
            return None;
        }
        self.slots.get((n % len) as usize).map(|&i| usize::from(i))
    }

    /// Length of one cycle.
    pub fn cycle_len(&self) -> usize {
        self.slots.len()
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A schedule plus the counter that walks it.
#[derive(Debug, Default)]
pub struct WeightedPicker {
    schedule: Schedule,
    next: AtomicU64,
}

impl WeightedPicker {
    /// A picker over `weights` (basis points).
    pub fn new(weights: &[u32]) -> WeightedPicker {
        WeightedPicker {
            schedule: Schedule::new(weights),
            next: AtomicU64::new(0),
        }
    }

    /// The next backend index, `None` when every weight is zero.
    #[inline]
    pub fn pick(&self) -> Option<usize> {
        self.schedule
            .pick(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// Sticky buckets: the key space is cut into 10,000 buckets (one per basis
/// point) and each backend owns one contiguous range, sized by its weight,
/// in config order. Growing the last backend's weight moves the boundary
/// down, so only clients of the backend before it move, and only towards it;
/// nobody moves back or around.
#[derive(Debug, Clone, Default)]
pub struct StickyRanges {
    /// The exclusive end of each backend's range.
    ends: Box<[u32]>,
}

/// Buckets in the key space: one per basis point.
pub const BUCKETS: u32 = crate::config::TOTAL_WEIGHT;

impl StickyRanges {
    /// Ranges for `weights` (basis points, summing to [`BUCKETS`]).
    pub fn new(weights: &[u32]) -> StickyRanges {
        let mut end = 0u32;
        StickyRanges {
            ends: weights
                .iter()
                .map(|w| {
                    end = end.saturating_add(*w);
                    end
                })
                .collect(),
        }
    }

    /// The backend owning `bucket`; `None` for an all-zero route.
    #[inline]
    pub fn owner(&self, bucket: u32) -> Option<usize> {
        let index = self.ends.partition_point(|end| *end <= bucket);
        (index < self.ends.len()).then_some(index)
    }
}

/// The bucket of a sticky key: a bucket number as sluicegate writes it in its
/// cookie, or else the xxh3 hash of the key.
#[inline]
pub fn bucket_of(key: &[u8]) -> u32 {
    if let Some(bucket) = std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.parse::<u32>().ok())
        .filter(|b| *b < BUCKETS)
    {
        return bucket;
    }
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(BUCKETS)) as u32
}

/// A random bucket for a client without a sticky cookie.
pub fn random_bucket() -> u32 {
    fastrand::u32(..BUCKETS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_ranges_follow_weights_in_order() {
        let ranges = StickyRanges::new(&[9000, 1000]);
        assert_eq!(ranges.owner(0), Some(0));
        assert_eq!(ranges.owner(8999), Some(0));
        assert_eq!(ranges.owner(9000), Some(1));
        assert_eq!(ranges.owner(9999), Some(1));
        // A zero weight owns nothing.
        let ranges = StickyRanges::new(&[10_000, 0]);
        assert_eq!(ranges.owner(9999), Some(0));
        let ranges = StickyRanges::new(&[0, 10_000]);
        assert_eq!(ranges.owner(0), Some(1));
        assert_eq!(StickyRanges::new(&[0, 0]).owner(0), None);
    }

    #[test]
    fn growing_the_canary_only_moves_clients_towards_it() {
        let steps = [0u32, 100, 500, 1000, 2500, 5000, 10_000];
        for pair in steps.windows(2) {
            let before = StickyRanges::new(&[10_000 - pair[0], pair[0]]);
            let after = StickyRanges::new(&[10_000 - pair[1], pair[1]]);
            for bucket in 0..BUCKETS {
                let (b, a) = (before.owner(bucket), after.owner(bucket));
                assert!(b == a || (b == Some(0) && a == Some(1)), "bucket {bucket}");
            }
        }
    }

    #[test]
    fn ten_thousand_keys_stay_on_the_canary_as_it_grows() {
        let buckets: Vec<u32> = (0..10_000)
            .map(|user| bucket_of(format!("user-{user}").as_bytes()))
            .collect();
        let mut on_canary = vec![false; buckets.len()];
        for canary in [1000u32, 2000, 5000] {
            let ranges = StickyRanges::new(&[10_000 - canary, canary]);
            let mut count = 0;
            for (key, bucket) in buckets.iter().enumerate() {
                let now = ranges.owner(*bucket) == Some(1);
                assert!(
                    now || !on_canary[key],
                    "key {key} left the canary at {canary}"
                );
                on_canary[key] = now;
                count += usize::from(now);
            }
            let share = count as f64 / 100.0;
            let want = f64::from(canary) / 100.0;
            assert!(
                (share - want).abs() <= 1.5,
                "{share} % on the canary, want {want} %"
            );
        }
    }

    #[test]
    fn keys_hash_evenly_and_bucket_numbers_are_kept() {
        assert_eq!(bucket_of(b"1234"), 1234);
        assert_ne!(bucket_of(b"12345"), 12345);
        let mut low = 0;
        for user in 0..10_000 {
            if bucket_of(format!("user-{user}").as_bytes()) < 1000 {
                low += 1;
            }
        }
        assert!((800..1200).contains(&low), "{low} of 10000 in 10 %");
    }

    fn counts(weights: &[u32], requests: u64) -> Vec<u64> {
        let schedule = Schedule::new(weights);
        let mut counts = vec![0; weights.len()];
        for n in 0..requests {
            counts[schedule.pick(n).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn split_is_exact_over_a_cycle() {
        assert_eq!(counts(&[9000, 1000], 100), vec![90, 10]);
        assert_eq!(counts(&[9999, 1], 10_000), vec![9999, 1]);
        assert_eq!(counts(&[5000, 5000], 100), vec![50, 50]);
        assert_eq!(counts(&[10_000, 0], 100), vec![100, 0]);
        assert_eq!(counts(&[3333, 3333, 3334], 10_000), vec![3333, 3333, 3334]);
    }

    #[test]
    fn sequence_is_smooth() {
        // 90/10 must not send the 10 % in a burst: one green in every ten.
        let schedule = Schedule::new(&[9000, 1000]);
        assert_eq!(schedule.cycle_len(), 10);
        let greens = (0..10).filter(|n| schedule.pick(*n) == Some(1)).count();
        assert_eq!(greens, 1);
        let s = Schedule::new(&[5000, 5000]);
        assert_ne!(s.pick(0), s.pick(1));
    }

    #[test]
    fn all_zero_picks_nothing() {
        assert_eq!(Schedule::new(&[0, 0]).pick(0), None);
        assert_eq!(WeightedPicker::new(&[]).pick(), None);
    }
}
