//! Backends for hostile cases: one that records every byte and request it
//! gets, and raw ones that misbehave as a [`Script`] says.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use super::lock;
use crate::support::body::{TestBody, full};
use crate::support::eventually;

// ---------------------------------------------------------------------------
// Recording backend
// ---------------------------------------------------------------------------

/// One request as the recording backend's HTTP/1.1 parser saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// Every header line, names lower-case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The body ended with an error (the proxy cut it off).
    pub body_error: bool,
}

impl SeenRequest {
    /// Every value of `name` (lower-case).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An HTTP/1.1 backend that keeps every byte it was sent and every request its
/// parser saw; answers `200 recorded` with `x-backend: NAME`.
pub struct RecordingBackend {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Recorded>,
    accept_loop: JoinHandle<()>,
}

#[derive(Default)]
struct Recorded {
    requests: Mutex<Vec<SeenRequest>>,
    /// The bytes received, one entry per connection.
    raw: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
}

impl RecordingBackend {
    pub async fn start(name: &str) -> RecordingBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind recording backend");
        let addr = listener.local_addr().expect("recording backend addr");
        let shared = Arc::new(Recorded::default());
        let accept_shared = Arc::clone(&shared);
        let backend_name = name.to_string();
        let accept_loop = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let raw = Arc::new(Mutex::new(Vec::new()));
                lock(&accept_shared.raw).push(Arc::clone(&raw));
                let shared = Arc::clone(&accept_shared);
                let name = backend_name.clone();
                connections.spawn(async move {
                    let io = TokioIo::new(Tee { inner: stream, raw });
                    let service =
                        service_fn(move |req| record(Arc::clone(&shared), name.clone(), req));
                    // Room for what the proxy adds to a request at the client's limit.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .max_headers(300)
                        .serve_connection(io, service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        RecordingBackend {
            name: name.to_string(),
            addr,
            shared,
            accept_loop,
        }
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn hits(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Every byte received, connections one after the other.
    pub fn raw(&self) -> Vec<u8> {
        lock(&self.shared.raw)
            .iter()
            .flat_map(|c| lock(c).clone())
            .collect()
    }

    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw()).into_owned()
    }

    /// Forgets what was recorded so far.
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
        lock(&self.shared.raw).clear();
    }
}

impl Drop for RecordingBackend {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn record(
    shared: Arc<Recorded>,
    name: String,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let (body, body_error) = match body.collect().await {
        Ok(collected) => (collected.to_bytes(), false),
        Err(_) => (Bytes::new(), true),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    lock(&shared.requests).push(SeenRequest {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        headers,
        body,
        body_error,
    });
    let mut resp = Response::new(full("recorded"));
    resp.headers_mut().insert(
        "x-backend",
        http::HeaderValue::from_str(&name).expect("backend name is a header value"),
    );
    Ok(resp)
}

/// A stream that copies every byte read into `raw`.
struct Tee {
    inner: TcpStream,
    raw: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Tee {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        lock(&this.raw).extend_from_slice(&buf.filled()[before..]);
        result
    }
}

impl AsyncWrite for Tee {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------
// Scripted (misbehaving) backend
// ---------------------------------------------------------------------------

/// What a [`ScriptedBackend`] does once it has read a request head.
#[derive(Debug, Clone)]
pub enum Script {
    /// Never answers; reads until the proxy gives up and closes.
    Silent,
    /// A head announcing `declared` body bytes (chunked: one chunk of
    /// `sent`), `sent` bytes of body, then a reset.
    HalfThenReset {
        declared: usize,
        sent: usize,
        chunked: bool,
    },
    /// Writes these bytes, then waits for the proxy to close.
    Raw(Vec<u8>),
    /// A status line followed by this many bytes of header lines, unending.
    HugeHeaders(usize),
    /// A head announcing 10 MiB, 64 KiB of body, then nothing until
    /// [`ScriptedBackend::kill`] resets every connection.
    StreamUntilKilled,
    /// Answers the first request on a connection with keep-alive; on the
    /// next one it reads the head and closes without answering (the upstream
    /// closed its idle connection just as the proxy reused it).
    KeepAliveThenClose,
}

/// A raw TCP backend that misbehaves as its [`Script`] says and counts
/// connections and requests.
pub struct ScriptedBackend {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    /// Connections whose peer (the proxy) went away, or that we reset.
    pub closed: Arc<AtomicUsize>,
    /// Request heads read, as `METHOD target`.
    pub heads: Arc<Mutex<Vec<String>>>,
    kill: Arc<Notify>,
    killed: Arc<AtomicBool>,
    accept_loop: JoinHandle<()>,
}

impl ScriptedBackend {
    pub async fn start(script: Script) -> ScriptedBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind scripted backend");
        let addr = listener.local_addr().expect("scripted backend addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let kill = Arc::new(Notify::new());
        let killed = Arc::new(AtomicBool::new(false));
        let ctx = ScriptCtx {
            script,
            closed: Arc::clone(&closed),
            heads: Arc::clone(&heads),
            kill: Arc::clone(&kill),
            killed: Arc::clone(&killed),
        };
        let counted = Arc::clone(&accepted);
        let accept_loop = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let ctx = ctx.clone();
                connections.spawn(async move {
                    ctx.serve(stream).await;
                    ctx.closed.fetch_add(1, Ordering::SeqCst);
                });
                while connections.try_join_next().is_some() {}
            }
        });
        ScriptedBackend {
            addr,
            accepted,
            closed,
            heads,
            kill,
            killed,
            accept_loop,
        }
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn heads(&self) -> Vec<String> {
        lock(&self.heads).clone()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Resets every connection that waits in [`Script::StreamUntilKilled`].
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.kill.notify_waiters();
    }

    /// Waits until every accepted connection has been closed.
    pub async fn all_closed(&self, what: &str) {
        eventually(what, || self.closed() >= self.accepted()).await;
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

#[derive(Clone)]
struct ScriptCtx {
    script: Script,
    closed: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    kill: Arc<Notify>,
    killed: Arc<AtomicBool>,
}

impl ScriptCtx {
    async fn serve(&self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let mut pending = Vec::new();
        let mut served = 0usize;
        loop {
            let Some(head) = read_head(&mut stream, &mut pending).await else {
                return;
            };
            lock(&self.heads).push(head.line.clone());
            // Drop the request body (the proxy sends a Content-Length one).
            let mut body_left = head.content_length.saturating_sub(pending.len());
            pending.drain(..head.content_length.min(pending.len()));
            while body_left > 0 {
                let mut buf = vec![0u8; body_left.min(64 * 1024)];
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => body_left -= n,
                }
            }
            match &self.script {
                Script::Silent => return drain_until_closed(&mut stream).await,
                Script::HalfThenReset {
                    declared,
                    sent,
                    chunked,
                } => {
                    let head = if *chunked {
                        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_string()
                    } else {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {declared}\r\n\r\n")
                    };
                    let mut out = head.into_bytes();
                    if *chunked {
                        out.extend_from_slice(format!("{sent:x}\r\n").as_bytes());
                    }
                    out.extend(std::iter::repeat_n(b'h', *sent));
                    if *chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    let _ = stream.write_all(&out).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return reset(stream);
                }
                Script::Raw(bytes) => {
                    let _ = stream.write_all(bytes).await;
                    return drain_until_closed(&mut stream).await;
                }
                Script::HugeHeaders(total) => {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
                    let line = format!("x-pad: {}\r\n", "p".repeat(1000));
                    let mut written = 0;
                    while written < *total {
                        if stream.write_all(line.as_bytes()).await.is_err() {
                            return;
                        }
                        written += line.len();
                    }
                    let _ = stream.write_all(b"\r\n").await;
                    return drain_until_closed(&mut stream).await;
                }
                Script::StreamUntilKilled => {
                    let killed = self.kill.notified();
                    let mut out =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", 10 << 20)
                            .into_bytes();
                    out.extend(std::iter::repeat_n(b's', 64 * 1024));
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                    if !self.killed.load(Ordering::SeqCst) {
                        killed.await;
                    }
                    return reset(stream);
                }
                Script::KeepAliveThenClose => {
                    if served > 0 {
                        // Closed just as the request arrived: no answer.
                        return;
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-backend: race\r\n\r\nok";
                    if stream.write_all(ok).await.is_err() {
                        return;
                    }
                }
            }
            served += 1;
        }
    }
}

/// A request head read off a raw connection.
struct RawRequestHead {
    line: String,
    content_length: usize,
}

/// Reads one request head; `pending` keeps bytes read past it.
async fn read_head(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<RawRequestHead> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            let text = String::from_utf8_lossy(&head);
            let mut lines = text.split("\r\n");
            let first = lines.next().unwrap_or_default();
            let line = first.rsplit_once(' ').map_or(first, |(l, _)| l).to_string();
            let content_length = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            return Some(RawRequestHead {
                line,
                content_length,
            });
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

async fn drain_until_closed(stream: &mut TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Closes with RST instead of FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
