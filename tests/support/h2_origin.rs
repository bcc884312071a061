//! `H2Origin`: an h2c (prior knowledge) origin built on the `h2` crate, for
//! the frames a test needs exactly: a REFUSED_STREAM, a GOAWAY before any
//! stream, a GOAWAY with an error code after a stream. Every other request
//! gets `200 ok`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use h2::Reason;
use http::Response;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What the origin does wrong, once: on its first connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2Fault {
    /// The first stream is reset with REFUSED_STREAM; the connection stays.
    RefuseFirstStream,
    /// GOAWAY (last stream id 0, NO_ERROR) right after the handshake: no
    /// stream on it is processed.
    GoAwayAtOnce,
    /// The first stream is received, then GOAWAY (last stream id: that
    /// stream, INTERNAL_ERROR) and the connection is closed without an
    /// answer: the stream may have been processed.
    GoAwayWithErrorAfterFirstStream,
}

/// An origin on 127.0.0.1 that counts connections and streams received.
pub struct H2Origin {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    /// The accept loop; it owns every connection.
    _serving: JoinSet<()>,
}

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    streams: AtomicUsize,
}

impl H2Origin {
    pub async fn start(fault: H2Fault) -> H2Origin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind h2 origin");
        let addr = listener.local_addr().expect("h2 origin addr");
        let counts = Arc::new(Counts::default());
        let mut serving = JoinSet::new();
        let shared = Arc::clone(&counts);
        serving.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let first = shared.connections.fetch_add(1, Ordering::Relaxed) == 0;
                let fault = first.then_some(fault);
                connections.spawn(serve(stream, fault, Arc::clone(&shared)));
            }
        });
        H2Origin {
            addr,
            counts,
            _serving: serving,
        }
    }

    /// `host:port`, as a sluicegate endpoint.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::Relaxed)
    }

    /// Streams (requests) received, answered or not.
    pub fn streams(&self) -> usize {
        self.counts.streams.load(Ordering::Relaxed)
    }
}

async fn serve(stream: TcpStream, fault: Option<H2Fault>, counts: Arc<Counts>) {
    let Ok(mut conn) = h2::server::handshake(stream).await else {
        return;
    };
    if fault == Some(H2Fault::GoAwayAtOnce) {
        conn.abrupt_shutdown(Reason::NO_ERROR);
    }
    let mut first = true;
    while let Some(Ok((_request, mut respond))) = conn.accept().await {
        counts.streams.fetch_add(1, Ordering::Relaxed);
        match fault.filter(|_| std::mem::take(&mut first)) {
            Some(H2Fault::RefuseFirstStream) => respond.send_reset(Reason::REFUSED_STREAM),
            Some(H2Fault::GoAwayWithErrorAfterFirstStream) => {
                conn.abrupt_shutdown(Reason::INTERNAL_ERROR);
            }
            _ => {
                if let Ok(mut body) = respond.send_response(Response::new(()), false) {
                    let _ = body.send_data(Bytes::from_static(b"ok\n"), true);
                }
            }
        }
    }
    // Closed on our side: hold the socket, so unread client bytes do not
    // turn the close into a reset that could overtake the GOAWAY.
    let _socket = conn;
    std::future::pending::<()>().await
}
