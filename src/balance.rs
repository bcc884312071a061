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

#[cfg(test)]
mod tests {
    use super::*;

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
