//! Shared test harness: fake backends, a `TestProxy` on port 0, small HTTP clients
//! and helpers that render config text around the backends' real addresses.
//!
//! Every test file pulls this in with `mod support;` and uses a part of it.
#![allow(dead_code)]

mod backend;
mod body;
mod client;
mod config_text;
mod proxy;

pub use backend::*;
pub use body::*;
pub use client::*;
pub use config_text::*;
pub use proxy::*;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// The body type every helper sends and every fake backend answers with.
pub type TestBody = BoxBody<Bytes, Infallible>;

/// Streamed bodies come in pieces of this size.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// The bytes of every streamed chunk; static so streaming allocates nothing per chunk.
static CHUNK: [u8; CHUNK_SIZE] = [b'x'; CHUNK_SIZE];

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
