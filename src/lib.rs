//! sluicegate: a reverse proxy that splits live HTTP traffic between versions
//! of a service (blue/green, canary) by exact weights.
//!
//! # Map of the code
//! The folders follow the data path; each layer imports only from its own
//! and those below it (checked by `tests/layers.rs`), top first:
//! - [`demo`], [`ctl`] (and `main.rs`): the built-in demo; `sluicegate ctl`,
//!   the admin API client, which shares only the admin API's wire types.
//! - [`edge`]: listeners and the accept loop (data and admin), one client
//!   connection's lifecycle, TLS termination, binary upgrade, the service
//!   manager's notifications (sd_notify).
//! - [`adapters`]: hyper's path (HTTP/1.1 and HTTP/2), the HTTP/1.1 fast path
//!   and tunnels; each moves bytes for its protocol and nothing else.
//! - [`exchange`]: the protocol-neutral core: forwarding rules, the backend
//!   choice, the one attempt policy, counting and logging the outcome, the
//!   response body, mirroring.
//! - [`control`]: the one `ArcSwap` snapshot and the one change pipeline;
//!   history and the state file, health checks and failover, reloads, the
//!   canary controller, webhooks (canary gates, `[[notify]]`), the admin API.
//! - [`upstream`]: endpoints, connection pools (hyper's and raw sockets),
//!   passive ejection, client TLS.
//! - [`telemetry`]: Prometheus metrics, the in-memory series, the access log,
//!   mirror counters.
//! - [`config`]: the file (TOML or YAML) → validated, pure data, every error
//!   located by file, line, column and field.
//! - [`error`], [`clock`]: leaves that import nothing of the crate.
//!
//! # How a request flows
//! [`edge`] accepts a connection and hands it to the fast path or hyper; the
//! adapter loads the current snapshot once, checks the `Host` rules, matches
//! a route, asks [`exchange::decide`] for a backend, writes the forwarded
//! message by [`exchange::forwarding`]'s rules, sends it through
//! [`exchange::attempt::Attempts`] (endpoint, retries, passive health, each
//! attempt's outcome counted for its backend, which the canary judges) and
//! streams the answer back; [`exchange::outcome::Ledger`] counts and logs it
//! once, for the backend that answered.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod clock;
pub mod config;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod edge;
pub mod error;
pub mod exchange;
pub mod telemetry;
pub mod upstream;
