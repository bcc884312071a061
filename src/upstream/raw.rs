//! Plain-TCP HTTP/1.1 connections for the fast path ([`crate::h1`]): the
//! fast path writes and reads the bytes itself, so the pool holds bare
//! sockets, not hyper connections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;

use super::Endpoint;
use crate::config::UpstreamProtocol;
use crate::error::UpstreamError;

/// Idle sockets kept per endpoint; more are closed when returned.
const MAX_IDLE: usize = 128;

/// The idle sockets of one endpoint.
#[derive(Debug, Default)]
pub(super) struct RawPool {
    idle: Mutex<Vec<TcpStream>>,
}

impl RawPool {
    pub(super) fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
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

    /// An idle socket, or a new one within `connect_timeout`.
    pub async fn raw_connection(
        self: &Arc<Self>,
        connect_timeout: Duration,
    ) -> Result<RawConn, UpstreamError> {
        let idle = self.raw.idle.lock().ok().and_then(|mut idle| idle.pop());
        if let Some(stream) = idle {
            return Ok(RawConn {
                stream,
                reused: true,
            });
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
            idle.push(stream);
        }
    }
}
