//! The differential comparison of `tests/differential.rs` for arbitrary bytes:
//! each input is sent on a fresh client connection to a proxy with the
//! HTTP/1.1 fast path on and to one with it off (hyper's path), each in
//! front of its own recording origin; what the clients got back and what the
//! origins parsed must be the same facts (the normalisation is the test's:
//! `tests/support/differential.rs`, included here by path, as is the origin).
//!
//! The proxies and origins start once, in a runtime made on the first input.
//! The origins answer with `connection: close`, so every request has its own
//! upstream connection and bytes a proxy leaves after a request are recorded
//! with that input; [`RecordingOrigin::clear`] between inputs makes a late
//! event of an earlier input count for nothing.
#![no_main]

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sluicegate::config::{Config, Format};
use sluicegate::edge::{self, Listeners};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

#[path = "../../tests/support/recording_origin.rs"]
#[allow(dead_code)]
mod recording_origin;

#[path = "../../tests/support/differential.rs"]
#[allow(dead_code)]
mod differential;

use differential::{
    Observation, PROXY_TIMEOUT, Timing, differences, exchange, head_hints, proxy_config,
};
use recording_origin::{OriginMode, RecordingOrigin, show};

/// Longer than the proxy's timeouts, so both paths reach their answer;
/// the grace is for an answer to bytes `head_hints` could not count (a
/// shorter one made a loaded machine's late 400 look like a difference).
const TIMING: Timing = Timing {
    overall: Duration::from_millis(PROXY_TIMEOUT.as_millis() as u64 + 500),
    grace: Duration::from_millis(200),
};
const ORIGIN_SETTLE: Duration = Duration::from_millis(300);
/// Inputs larger than this are skipped (the head limit is 64 KiB).
const MAX_INPUT: usize = 256 * 1024;

/// One proxy with its own origin.
struct Side {
    origin: RecordingOrigin,
    addr: SocketAddr,
}

struct Harness {
    runtime: Runtime,
    fast: Side,
    hyper: Side,
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (fast, hyper) = runtime.block_on(async { (start(true).await, start(false).await) });
    Harness {
        runtime,
        fast,
        hyper,
    }
});

async fn start(fast_path: bool) -> Side {
    let origin = RecordingOrigin::start(OriginMode::Close).await;
    let text = proxy_config(origin.addr, fast_path);
    let config = Config::parse(&text, "fuzz.toml", Format::Toml).expect("fuzz config is valid");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy listener");
    let addr = listener.local_addr().expect("proxy listener addr");
    let listeners = Listeners {
        data: vec![listener],
        admin: None,
    };
    tokio::spawn(edge::run(config, listeners, std::future::pending::<()>()));
    Side { origin, addr }
}

async fn observe(side: &Side, data: &[u8], heads: &[bool]) -> Observation {
    let client = exchange(side.addr, data, heads, TIMING).await;
    side.origin.wait_closed(ORIGIN_SETTLE).await;
    Observation {
        client,
        origin: side.origin.events(),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() || data.len() > MAX_INPUT {
        return;
    }
    let harness = &*HARNESS;
    let heads = head_hints(data);
    let (fast, hyper) = harness.runtime.block_on(async {
        harness.fast.origin.clear();
        harness.hyper.origin.clear();
        tokio::join!(
            observe(&harness.fast, data, &heads),
            observe(&harness.hyper, data, &heads)
        )
    });
    let found = differences(&fast, &hyper, ["fast", "hyper"]);
    assert!(
        found.is_empty(),
        "the fast path and hyper's path differ on {}:\n  {}",
        show(data),
        found.join("\n  ")
    );
});
