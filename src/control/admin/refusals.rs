//! Logging refused admin calls (a wrong or missing token) without letting a
//! flood of them flood the log: the first [`PER_SECOND`] of each second are
//! logged one by one, the rest counted and logged as one line when the next
//! refusal comes in a later second.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals logged one by one per second.
pub const PER_SECOND: u32 = 10;

/// The current one-second window.
struct Window {
    began: Instant,
    logged: u32,
    /// Refusals past `PER_SECOND` in this window, not logged yet.
    held: u64,
}

static WINDOW: Mutex<Option<Window>> = Mutex::new(None);

/// Logs a refused admin call (warn), or counts it when this second has had
/// [`PER_SECOND`] already.
pub fn refused(peer: SocketAddr, method: &http::Method, path: &str, status: u16) {
    let Some((log, held_before)) = WINDOW
        .lock()
        .ok()
        .map(|mut w| admit(&mut w, Instant::now()))
    else {
        return;
    };
    if held_before > 0 {
        tracing::warn!(
            refused = held_before,
            "more admin requests refused in the last second (not logged one by one)"
        );
    }
    if log {
        tracing::warn!(%peer, %method, %path, status, "admin request refused");
    }
}

/// One refusal at `now`: whether to log it, and how many refusals of an
/// ended window were held back (to log as one line).
fn admit(window: &mut Option<Window>, now: Instant) -> (bool, u64) {
    let fresh = Window {
        began: now,
        logged: 0,
        held: 0,
    };
    let current = window.get_or_insert(fresh);
    let mut held_before = 0;
    if now.duration_since(current.began) >= Duration::from_secs(1) {
        held_before = current.held;
        *current = Window {
            began: now,
            logged: 0,
            held: 0,
        };
    }
    if current.logged < PER_SECOND {
        current.logged += 1;
        (true, held_before)
    } else {
        current.held += 1;
        (false, held_before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_ten_a_second_and_the_rest_as_one_line() {
        let mut window = None;
        let start = Instant::now();
        let first: Vec<(bool, u64)> = (0..25).map(|_| admit(&mut window, start)).collect();
        assert!(first[..10].iter().all(|&(log, held)| log && held == 0));
        assert!(first[10..].iter().all(|&(log, held)| !log && held == 0));
        let next = admit(&mut window, start + Duration::from_millis(1_001));
        assert_eq!(next, (true, 15), "the 15 held back are reported once");
        assert_eq!(
            admit(&mut window, start + Duration::from_millis(1_002)),
            (true, 0)
        );
    }
}
