//! Protocol adapters: each moves bytes for one protocol and calls the
//! exchange core for every decision.
//! - [`hyper_path`]: hyper's HTTP/1.1 and HTTP/2 service.
//! - [`fast_path`]: the hand-written HTTP/1.1 keep-alive path.
//! - [`tunnel`]: WebSocket and other upgrades (HTTP/1.1 and RFC 8441).

pub mod fast_path;
pub mod hyper_path;
pub mod tunnel;
