//! sluicegate: a reverse proxy that splits live HTTP traffic between versions
//! of a service (blue/green, canary) by exact weights.
//!
//! # Map of the code
//! - [`config`]: the file (TOML or YAML) → raw types → validated [`config::Config`],
//!   collecting every error with file, line, column and field.
//! - [`state`]: the one `ArcSwap` [`state::Snapshot`] of routes, backends and weights.
//! - [`server`]: listeners, accept loop, connection limits, shutdown.
//! - [`connection`]: one client connection (data plane or admin): HTTP/1.1 + h2,
//!   timeouts, header limits, graceful finish.
//! - [`h1`]: the HTTP/1.1 fast path: plain keep-alive requests proxied byte
//!   for byte on the client connection's task, the rest handed to hyper.
//! - [`proxy`]: the request path (route → backend → endpoint → forward → respond).
//! - [`balance`]: exact weighted choice (smooth WRR in basis points), sticky buckets.
//! - [`upstream`]: endpoints, health state, HTTP/1.1 pools and shared h2
//!   connections, upstream TLS.
//! - [`tunnel`]: WebSocket and other upgrades (HTTP/1.1 and RFC 8441).
//! - [`mirror`]: shadow copies and their comparison with the primary.
//! - [`health`]: active health checks and failover of effective weights.
//! - [`canary`]: the automated canary controller (steps, judging, rollback).
//! - [`telemetry`]: Prometheus metrics; [`stats`]: the in-memory series the
//!   dashboard and the canary read; [`access_log`]: one line per request.
//! - [`clock`]: a coarse wall clock (Unix seconds) for the request path.
//! - [`tls`]: TLS termination (rustls, ring), ALPN, SNI, certificate reload.
//! - [`body`]: the body types of the request path.
//! - [`forwarding`]: the header, framing and `Host` rules both request paths apply.
//! - [`error`]: error types; each proxy error maps to one status code.
//! - [`reload`]: config file watching (notify), SIGHUP and API reloads.
//! - [`history`]: numbered revisions of every change, and the state file.
//! - [`admin`]: the admin API, metrics and dashboard on their own listener,
//!   bearer-token auth.
//! - [`ctl`]: `sluicegate ctl`, the admin API client.
//! - `upgrade`: zero-downtime binary upgrade by handing listening sockets over (SIGUSR2).
//! - [`demo`]: the built-in blue/green demo.
//!
//! # How a request flows
//! `server` accepts a connection and hands each request to [`proxy::handle`],
//! which loads the current snapshot, matches a route, chooses a backend (an
//! override, the sticky bucket's owner, or the weighted pick) and an endpoint
//! round-robin, rewrites the headers, starts a mirror copy when sampled, sends
//! the request over a pooled upstream connection (retrying elsewhere when
//! safe), streams the response back and counts it for the backend.
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
