//! An HTTP/1.1 origin that closes its idle keep-alive connections when told
//! to, as nginx does on a graceful reload and hypercorn or Node.js do after
//! their keep-alive timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::eventually;

/// Answers every request `200 ok` on kept-alive connections; on
/// [`IdleClosingOrigin::close_idle`] it closes every connection that is
/// between requests.
pub struct IdleClosingOrigin {
    pub addr: SocketAddr,
    open: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
    close: watch::Sender<u64>,
    accept_loop: JoinHandle<()>,
}

impl IdleClosingOrigin {
    pub async fn start() -> IdleClosingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let open = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let (close, closes) = watch::channel(0u64);
        let (counted, answered) = (Arc::clone(&open), Arc::clone(&served));
        let accept_loop = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (open, served, closes) =
                    (Arc::clone(&counted), Arc::clone(&answered), closes.clone());
                tokio::spawn(async move {
                    serve(stream, &served, closes).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        IdleClosingOrigin {
            addr,
            open,
            served,
            close,
            accept_loop,
        }
    }

    /// Requests answered so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Closes every idle connection and waits until they are all closed.
    pub async fn close_idle(&self) {
        self.close.send_modify(|generation| *generation += 1);
        eventually("the origin to close its idle connections", || {
            self.open() == 0
        })
        .await;
    }
}

impl Drop for IdleClosingOrigin {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn serve(mut stream: TcpStream, served: &AtomicUsize, mut closes: watch::Receiver<u64>) {
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    closes.mark_unchanged();
    loop {
        // Between requests: close when told to.
        while pending.is_empty() {
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                },
                _ = closes.changed() => return,
            }
        }
        let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .filter_map(|l| l.strip_prefix("content-length:"))
            .find_map(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while pending.len() < end + 4 + length {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        pending.drain(..end + 4 + length);
        served.fetch_add(1, Ordering::SeqCst);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(ok).await.is_err() {
            return;
        }
    }
}
