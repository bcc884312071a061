//! A coarse wall clock: Unix seconds kept in an atomic by a background
//! thread, so the request path (the `Date` header, the stats series' 10 s
//! slot) does not read the system clock per request.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the clock is refreshed: the value lags by at most this.
const TICK: Duration = Duration::from_millis(100);

static NOW: AtomicU64 = AtomicU64::new(0);
/// Whether the ticker thread runs (set once).
static TICKER: OnceLock<bool> = OnceLock::new();

fn read() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The current Unix time in whole seconds (at most [`TICK`] late).
pub fn unix_secs() -> u64 {
    let ticking = TICKER.get_or_init(|| {
        NOW.store(read(), Ordering::Relaxed);
        let started = std::thread::Builder::new()
            .name("sluicegate-clock".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(TICK);
                    NOW.store(read(), Ordering::Relaxed);
                }
            });
        if started.is_err() {
            tracing::warn!("cannot start the clock thread: reading the system clock instead");
        }
        started.is_ok()
    });
    if *ticking {
        NOW.load(Ordering::Relaxed)
    } else {
        read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_system_clock() {
        let secs = unix_secs();
        assert!(secs.abs_diff(read()) <= 1, "{secs} vs {}", read());
    }
}

/// Serde for a time as RFC 3339 text in whole seconds (history, views).
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}
