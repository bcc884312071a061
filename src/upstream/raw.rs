//! Plain-TCP HTTP/1.1 connections for the fast path ([`crate::adapters::fast_path`]): the
//! fast path writes and reads the bytes itself, so the pool holds bare
//! sockets, not hyper connections.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::Endpoint;
use crate::config::UpstreamProtocol;
use crate::error::UpstreamError;

/// Idle sockets kept per endpoint; more are closed when returned.
const MAX_IDLE: usize = 128;

/// The idle sockets of one endpoint, most recently returned last.
#[derive(Debug, Default)]
pub(super) struct RawPool {
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    since: Instant,
}

impl RawPool {
    pub(super) fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Keeps the idle sockets for which `keep(returned at)` holds.
    pub(super) fn retain(&self, keep: impl Fn(Instant) -> bool) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|i| keep(i.since));
        }
    }

    fn pop(&self) -> Option<Idle> {
        self.idle.lock().ok()?.pop()
    }
}

/// Whether an idle socket is still open: its peer has not closed it (EOF),
/// reset it or sent anything unasked. Costs no system call unless the
/// socket became readable while idle, which is exactly when it is suspect.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A socket to an endpoint; `reused` when it came from the pool, where the
/// endpoint may have closed it meanwhile (the keep-alive race).
#[derive(Debug)]
pub struct RawConn {
    pub stream: TcpStream,
    pub reused: bool,
}

impl Endpoint {
    /// Whether the fast path can talk to this endpoint: cleartext HTTP/1.1.
    pub fn speaks_plain_http1(&self) -> bool {
        !self.addr.tls
            && matches!(
                self.transport.protocol,
                UpstreamProtocol::Http1 | UpstreamProtocol::Auto
            )
    }

    /// An idle socket that is still open and not idle too long, or a new
    /// one within `connect_timeout`.
    pub async fn raw_connection(
        self: &Arc<Self>,
        connect_timeout: Duration,
    ) -> Result<RawConn, UpstreamError> {
        while let Some(idle) = self.raw.pop() {
            if self.idle_expired(idle.since) {
                // The rest were returned earlier still.
                self.raw.clear();
                break;
            }
            if still_open(&idle.stream) {
                return Ok(RawConn {
                    stream: idle.stream,
                    reused: true,
                });
            }
        }
        let connect = TcpStream::connect(self.authority());
        let stream = tokio::time::timeout(connect_timeout, connect)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(RawConn {
            stream,
            reused: false,
        })
    }

    /// Gives back a socket whose last response was read to its end.
    pub fn return_raw(&self, stream: TcpStream) {
        if self.is_draining() {
            return;
        }
        if let Ok(mut idle) = self.raw.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }
}
