//! The test kit: fake origins (and a real nginx), a `TestProxy` on port 0,
//! clients, and config text rendered around the origins' real addresses.
//!
//! Every test file declares `pub mod support;` and imports what it uses by
//! path (`use support::origin::Origin;`). The module is `pub` so the kit is
//! a library's public API inside each test crate: an item one test binary
//! does not use is not dead code there, while a private helper nobody calls
//! still warns.
//!
//! - [`origin`]: the fake origin builder (`Origin`) and `RunningOrigin`;
//!   the raw-byte origins kept apart are listed in its doc: [`recording_origin`],
//!   [`h2_origin`], [`hostile`]'s backends, [`nginx`];
//! - [`proxy`]: sluicegate on port-0 listeners; [`admin`]: started from a file,
//!   with the admin API; [`canary`]: the canary driven through that API,
//!   its view and history, and traffic to give its steps requests;
//! - [`client`]: hyper clients (HTTP/1.1, h2c), raw-socket exchanges and the
//!   metrics scrape; [`raw`]: a raw HTTP/1.x connection; [`grpc`]: gRPC and
//!   WebSocket clients; [`tls`]: a private CA and TLS clients;
//! - [`config_text`]: config text, the two HTTP/1.1 paths; [`body`]: bodies;
//! - [`differential`]: the two-paths comparison; [`hostile`]: the hostile kit;
//! - [`etcd`]: a real etcd cluster (and a relay to cut one instance off) for fleet tests.

pub mod admin;
pub mod body;
pub mod canary;
pub mod client;
pub mod config_text;
pub mod differential;
pub mod etcd;
pub mod grpc;
pub mod h2_origin;
pub mod hostile;
pub mod nginx;
pub mod origin;
pub mod proxy;
pub mod raw;
pub mod recording_origin;
pub mod tls;
pub mod webhook;

// `admin.rs` and the body of `tests/admin_api.rs` (kept by the admin API's
// owners) reach these at the kit's root, as `super::` and `support::`.
pub use admin::{desired_weights, reply_json};
pub use body::{empty, full};
pub use client::{Http1Client, Reply, get};
pub use proxy::TestProxy;
pub use raw::{RawConn, RawHead};

use std::future::Future;
use std::time::Duration;

/// Runs each listed `async fn NAME(path: H1Path)` as two tests, `fast_path::NAME`
/// and `hyper_path::NAME`: the same behaviour on both HTTP/1.1 paths. The tests
/// run on a two-thread runtime; with a leading `current_thread;`, on tokio's
/// default (current-thread) one.
#[macro_export]
macro_rules! on_both_paths {
    (current_thread; $($name:ident),* $(,)?) => {
        $crate::on_both_paths!(@paths [tokio::test] $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        $crate::on_both_paths!(
            @paths [tokio::test(flavor = "multi_thread", worker_threads = 2)] $($name),*
        );
    };
    (@paths [$test:meta] $($name:ident),*) => {
        mod fast_path {
            $(
                #[$test]
                async fn $name() {
                    super::$name($crate::support::config_text::H1Path::Fast).await;
                }
            )*
        }
        mod hyper_path {
            $(
                #[$test]
                async fn $name() {
                    super::$name($crate::support::config_text::H1Path::Hyper).await;
                }
            )*
        }
    };
}

/// How long a helper waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Waits (up to [`PATIENCE`]) until `check` holds, polling every few milliseconds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (up to [`PATIENCE`]) until the async `check` holds, polling every few
/// milliseconds; returns how long it took.
pub async fn eventually_async<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}
