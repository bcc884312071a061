//! Shared test harness: fake backends (and a real nginx), a `TestProxy` on port 0,
//! small HTTP clients and helpers that render config text around the backends'
//! real addresses.
//!
//! Every test file pulls this in with `mod support;` and uses a part of it.
#![allow(dead_code, unused_imports)]

mod admin;
mod backend;
mod body;
mod client;
mod config_text;
mod differential;
mod faults;
mod h2_origin;
mod hostile;
mod idle_origin;
mod nginx;
mod protocols;
mod proxy;
mod recording_origin;

#[allow(unused_imports)]
pub use admin::*;
pub use backend::*;
pub use body::*;
pub use client::*;
pub use config_text::*;
#[allow(unused_imports)]
pub use differential::*;
#[allow(unused_imports)]
pub use faults::*;
#[allow(unused_imports)]
pub use h2_origin::*;
#[allow(unused_imports)]
pub use hostile::*;
#[allow(unused_imports)]
pub use idle_origin::*;
pub use nginx::*;
#[allow(unused_imports)]
pub use protocols::*;
pub use proxy::*;
#[allow(unused_imports)]
pub use recording_origin::*;

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// The body type every helper sends and every fake backend answers with.
pub type TestBody = BoxBody<Bytes, Infallible>;

/// Streamed bodies come in pieces of this size.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// The bytes of every streamed chunk; static so streaming allocates nothing per chunk.
static CHUNK: [u8; CHUNK_SIZE] = [b'x'; CHUNK_SIZE];

/// Runs each listed `async fn NAME(path: H1Path)` as two tests, `fast_path::NAME`
/// and `hyper_path::NAME`: the same behaviour on both HTTP/1.1 paths.
#[macro_export]
macro_rules! on_both_paths {
    ($($name:ident),* $(,)?) => {
        mod fast_path {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::H1Path::Fast).await;
                }
            )*
        }
        mod hyper_path {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::H1Path::Hyper).await;
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
