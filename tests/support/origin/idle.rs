//! The answers of [`Answers::CloseIdleOnCue`](super::Answers::CloseIdleOnCue):
//! HTTP/1.1 by hand, `200 ok` on kept-alive connections, and every connection
//! between requests closed when the test says so.

use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Shared;

pub(super) async fn serve<S>(mut stream: S, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut closes = shared.close_idle.subscribe();
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
        shared.hits.fetch_add(1, Ordering::SeqCst);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(ok).await.is_err() {
            return;
        }
    }
}
