//! Hostile-input kit: a raw socket that sends what real clients never would, a
//! backend that records every byte it is sent, backends that misbehave on cue,
//! hand-written HTTP/2 frames, good clients that keep asking during an attack,
//! and fd / RSS readings of this (the proxy's) process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use super::{PATIENCE, TestBody, empty, eventually, full};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Raw HTTP/1 client
// ---------------------------------------------------------------------------

/// What came back on a raw connection.
#[derive(Debug)]
pub struct RawOutcome {
    pub bytes: Vec<u8>,
    /// The proxy closed (FIN or RST) before the quiet period ran out.
    pub closed: bool,
    /// How long from the last byte written until the close (or the quiet end).
    pub elapsed: Duration,
}

impl RawOutcome {
    /// The status code of every response head in the bytes, in order.
    pub fn statuses(&self) -> Vec<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        let mut statuses = Vec::new();
        let mut rest = text.as_ref();
        while let Some(at) = rest.find("HTTP/1.") {
            let line = &rest[at..];
            if let Some(code) = line.get(9..12).and_then(|c| c.parse::<u16>().ok()) {
                statuses.push(code);
            }
            rest = &rest[at + 7..];
        }
        statuses
    }

    /// The first response's status, if any response came.
    pub fn status(&self) -> Option<u16> {
        self.statuses().first().copied()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// A short description for assertion messages.
    pub fn describe(&self) -> String {
        let text = self.text();
        let head: String = text.chars().take(300).collect();
        format!(
            "statuses {:?}, closed {}, after {:?}: {head:?}",
            self.statuses(),
            self.closed,
            self.elapsed
        )
    }
}

/// Sends `request` on a fresh connection, then reads until the proxy closes
/// or nothing arrives for `quiet`.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], quiet: Duration) -> RawOutcome {
    let mut stream = TcpStream::connect(addr).await.expect("connect to proxy");
    stream.set_nodelay(true).expect("nodelay");
    // The proxy may close while we still write (it refused the head early).
    let _ = stream.write_all(request).await;
    read_until_quiet(&mut stream, quiet).await
}

/// Reads until close or until nothing arrives for `quiet`.
pub async fn read_until_quiet(stream: &mut TcpStream, quiet: Duration) -> RawOutcome {
    let start = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let closed = loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    RawOutcome {
        bytes,
        closed,
        elapsed: start.elapsed(),
    }
}

/// Waits up to `limit` for the peer to close `stream`, discarding what it
/// sends; returns how long that took, or `None` when it stayed open.
pub async fn wait_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

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

// ---------------------------------------------------------------------------
// Good clients
// ---------------------------------------------------------------------------

/// How a good client reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoodMode {
    /// Half the workers on one keep-alive connection each, half on a fresh
    /// connection per request.
    Mixed,
    /// Every worker on a keep-alive connection opened before the attack.
    KeepAlive,
    /// One HTTP/2 connection per worker.
    H2,
}

/// Workers that GET `path` through the proxy in a loop while an attack runs.
pub struct GoodClients {
    started: Instant,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<GoodReport>>,
}

/// What the good clients saw.
#[derive(Debug, Default)]
pub struct GoodReport {
    pub ok: usize,
    pub failed: usize,
    /// The first few failures.
    pub failures: Vec<String>,
    /// The slowest successful request.
    pub slowest: Duration,
}

impl GoodReport {
    /// Asserts that every good request succeeded and that there were some.
    pub fn assert_all_ok(&self, case: &str) {
        println!(
            "FIGURE {case}: good clients {}/{} ok, slowest {:?}",
            self.ok,
            self.ok + self.failed,
            self.slowest
        );
        assert_eq!(
            self.failed,
            0,
            "{case}: {} of {} good requests failed during the attack: {:?}",
            self.failed,
            self.ok + self.failed,
            self.failures
        );
        assert!(
            self.ok >= 5,
            "{case}: only {} good requests ran during the attack",
            self.ok
        );
    }
}

/// How long one good request may take before it counts as failed.
pub const GOOD_REQUEST_LIMIT: Duration = Duration::from_secs(3);

/// The good clients run at least this long, so even a short attack is
/// measured against a fair number of requests.
pub const GOOD_MIN_RUN: Duration = Duration::from_millis(300);

impl GoodClients {
    /// Starts `workers` clients (their connections are open when this returns).
    pub async fn start(
        addr: SocketAddr,
        host: &str,
        path: &str,
        workers: usize,
        mode: GoodMode,
    ) -> GoodClients {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let fresh = mode == GoodMode::Mixed && i % 2 == 1;
            let mut client = if fresh {
                None
            } else {
                Some(
                    GoodConn::connect(addr, mode == GoodMode::H2)
                        .await
                        .expect("good client connects before the attack"),
                )
            };
            let (stop, host, path) = (Arc::clone(&stop), host.to_string(), path.to_string());
            let h2 = mode == GoodMode::H2;
            handles.push(tokio::spawn(async move {
                let mut report = GoodReport::default();
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let outcome = tokio::time::timeout(GOOD_REQUEST_LIMIT, async {
                        let mut conn = match client.take() {
                            Some(conn) => conn,
                            None => GoodConn::connect(addr, h2).await?,
                        };
                        let status = conn.get(&host, &path).await?;
                        if !fresh {
                            client = Some(conn);
                        }
                        Ok::<_, String>(status)
                    })
                    .await;
                    match outcome {
                        Ok(Ok(StatusCode::OK)) => {
                            report.ok += 1;
                            report.slowest = report.slowest.max(started.elapsed());
                        }
                        other => {
                            report.failed += 1;
                            if report.failures.len() < 5 {
                                report.failures.push(format!("{other:?}"));
                            }
                            if !fresh && client.is_none() {
                                client = GoodConn::connect(addr, h2).await.ok();
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                report
            }));
        }
        GoodClients {
            started: Instant::now(),
            stop,
            workers: handles,
        }
    }

    /// Stops the workers (after [`GOOD_MIN_RUN`] at least) and adds up what
    /// they saw.
    pub async fn finish(self) -> GoodReport {
        let ran = self.started.elapsed();
        if ran < GOOD_MIN_RUN {
            tokio::time::sleep(GOOD_MIN_RUN - ran).await;
        }
        self.stop.store(true, Ordering::SeqCst);
        let mut total = GoodReport::default();
        for worker in self.workers {
            let report = worker.await.expect("good client panicked");
            total.ok += report.ok;
            total.failed += report.failed;
            total.slowest = total.slowest.max(report.slowest);
            for f in report.failures {
                if total.failures.len() < 5 {
                    total.failures.push(f);
                }
            }
        }
        total
    }
}

enum GoodConn {
    H1(hyper::client::conn::http1::SendRequest<TestBody>),
    H2(hyper::client::conn::http2::SendRequest<TestBody>),
}

impl GoodConn {
    async fn connect(addr: SocketAddr, h2: bool) -> Result<GoodConn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(GoodConn::H2(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(GoodConn::H1(sender))
        }
    }

    async fn get(&mut self, host: &str, path: &str) -> Result<StatusCode, String> {
        let resp = match self {
            GoodConn::H1(sender) => {
                let req = Request::get(path)
                    .header(http::header::HOST, host)
                    .body(empty())
                    .expect("valid request");
                sender.ready().await.map_err(|e| format!("ready: {e}"))?;
                sender.send_request(req).await
            }
            GoodConn::H2(sender) => {
                let req = Request::get(format!("http://{host}{path}"))
                    .version(http::Version::HTTP_2)
                    .body(empty())
                    .expect("valid request");
                sender.ready().await.map_err(|e| format!("ready: {e}"))?;
                sender.send_request(req).await
            }
        }
        .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok(status)
    }
}

// ---------------------------------------------------------------------------
// Process readings
// ---------------------------------------------------------------------------

/// Open file descriptors of this process (the proxy runs in it).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// Resident set size of this process, in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// fd count and RSS at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub fds: usize,
    pub rss_kib: u64,
}

impl Reading {
    pub fn now() -> Reading {
        Reading {
            fds: open_fds(),
            rss_kib: rss_kib(),
        }
    }

    /// Waits until the fd count is back to at most `slack` above this
    /// reading, prints the figure and returns the reading after.
    pub async fn settles(&self, case: &str, slack: usize) -> Reading {
        let limit = self.fds + slack;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while open_fds() > limit && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = Reading::now();
        println!(
            "FIGURE {case}: fds {} -> {}, rss {} -> {} KiB",
            self.fds, after.fds, self.rss_kib, after.rss_kib
        );
        assert!(
            after.fds <= limit,
            "{case}: fd leak: {} open before, {} after",
            self.fds,
            after.fds
        );
        after
    }
}

// ---------------------------------------------------------------------------
// HTTP/2 by hand
// ---------------------------------------------------------------------------

/// The client connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types and flags (RFC 9113 §6).
pub mod frames {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    /// Error codes.
    pub const CANCEL: u32 = 0x8;
}

/// One frame: 9-byte header and payload.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame payload fits");
    assert!(len < 1 << 24, "frame payload over 16 MiB");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix, the high bits of the first byte
/// set to `flags` (RFC 7541 §5.1).
pub fn hpack_int(flags: u8, n: u32, value: usize) -> Vec<u8> {
    let max = (1usize << n) - 1;
    if value < max {
        return vec![flags | value as u8];
    }
    let mut out = vec![flags | max as u8];
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
    out
}

/// An HPACK string literal, not Huffman-coded.
pub fn hpack_str(text: &[u8]) -> Vec<u8> {
    let mut out = hpack_int(0, 7, text.len());
    out.extend_from_slice(text);
    out
}

/// A literal field, new name, not indexed.
pub fn hpack_literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(hpack_str(name.as_bytes()));
    out.extend(hpack_str(value));
    out
}

/// A literal field, new name, added to the dynamic table.
pub fn hpack_literal_indexed(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x40];
    out.extend(hpack_str(name.as_bytes()));
    out.extend(hpack_str(value));
    out
}

/// The header block of `METHOD http://authority/path` (static-table names).
pub fn hpack_request(method: &str, authority: &str, path: &str) -> Vec<u8> {
    let mut out = match method {
        "GET" => vec![0x82],
        "POST" => vec![0x83],
        other => {
            let mut m = hpack_int(0x00, 4, 2);
            m.extend(hpack_str(other.as_bytes()));
            m
        }
    };
    out.push(0x86); // :scheme http
    out.extend(hpack_int(0x00, 4, 4)); // :path, literal value
    out.extend(hpack_str(path.as_bytes()));
    out.extend(hpack_int(0x00, 4, 1)); // :authority, literal value
    out.extend(hpack_str(authority.as_bytes()));
    out
}

/// What the server did on a raw HTTP/2 connection.
#[derive(Debug, Default, Clone)]
pub struct H2Seen {
    pub settings: usize,
    pub settings_acks: usize,
    /// GOAWAY error code.
    pub goaway: Option<u32>,
    /// RST_STREAM frames: (stream, error code).
    pub resets: Vec<(u32, u32)>,
    /// Response heads: (stream, status), status 0 when the encoding is not
    /// one this reader decodes.
    pub responses: Vec<(u32, u16)>,
    pub data_bytes: usize,
    pub closed: bool,
}

/// A raw HTTP/2 cleartext connection: the test writes frames, a task reads.
pub struct H2Raw {
    writer: OwnedWriteHalf,
    seen: Arc<Mutex<H2Seen>>,
    reader: JoinHandle<()>,
    /// Bytes written so far.
    pub written: usize,
    /// A write failed: the proxy closed or reset the connection.
    pub write_failed: bool,
}

impl H2Raw {
    /// Connects, sends the preface and SETTINGS, and acknowledges the server's.
    pub async fn connect(addr: SocketAddr) -> H2Raw {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        stream.set_nodelay(true).expect("nodelay");
        let (mut reader, writer) = stream.into_split();
        let seen = Arc::new(Mutex::new(H2Seen::default()));
        let reader_seen = Arc::clone(&seen);
        let reader = tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                while buf.len() >= 9 {
                    let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                    if buf.len() < 9 + len {
                        break;
                    }
                    let frame: Vec<u8> = buf.drain(..9 + len).collect();
                    note_frame(&mut lock(&reader_seen), &frame);
                }
            }
            lock(&reader_seen).closed = true;
        });
        let mut raw = H2Raw {
            writer,
            seen,
            reader,
            written: 0,
            write_failed: false,
        };
        let mut hello = H2_PREFACE.to_vec();
        hello.extend(h2_frame(frames::SETTINGS, 0, 0, &[]));
        raw.send(&hello).await;
        let seen = Arc::clone(&raw.seen);
        eventually("the server's SETTINGS", || {
            let s = lock(&seen);
            s.settings > 0 || s.closed
        })
        .await;
        raw.send(&h2_frame(frames::SETTINGS, frames::ACK, 0, &[]))
            .await;
        raw
    }

    /// Writes `bytes`; returns false (and remembers) once the proxy has
    /// closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        if self.write_failed {
            return false;
        }
        match self.writer.write_all(bytes).await {
            Ok(()) => {
                self.written += bytes.len();
                true
            }
            Err(_) => {
                self.write_failed = true;
                false
            }
        }
    }

    pub fn seen(&self) -> H2Seen {
        lock(&self.seen).clone()
    }

    /// Waits up to `limit` for the server to close the connection (or to
    /// send GOAWAY); returns whether it did.
    pub async fn closed_within(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let seen = self.seen();
            if seen.closed || seen.goaway.is_some() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for H2Raw {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn note_frame(seen: &mut H2Seen, frame: &[u8]) {
    let (kind, flags) = (frame[3], frame[4]);
    let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
    let payload = &frame[9..];
    let code = |at: usize| {
        payload
            .get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    match kind {
        frames::SETTINGS if flags & frames::ACK != 0 => seen.settings_acks += 1,
        frames::SETTINGS => seen.settings += 1,
        frames::GOAWAY => seen.goaway = Some(code(4)),
        frames::RST_STREAM => seen.resets.push((stream, code(0))),
        frames::DATA => seen.data_bytes += payload.len(),
        frames::HEADERS => {
            let mut block = payload;
            // PADDED and PRIORITY flags.
            if flags & 0x8 != 0 {
                let pad = usize::from(block.first().copied().unwrap_or(0));
                block = block.get(1..block.len().saturating_sub(pad)).unwrap_or(&[]);
            }
            if flags & 0x20 != 0 {
                block = block.get(5..).unwrap_or(&[]);
            }
            seen.responses.push((stream, response_status(block)));
        }
        _ => {}
    }
}

/// The `:status` of a response header block when it comes first and is
/// either a static-table entry or a literal (plain or Huffman-coded digits).
fn response_status(block: &[u8]) -> u16 {
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    let Some(&first) = block.first() else {
        return 0;
    };
    if first & 0x80 != 0 {
        let index = usize::from(first & 0x7f);
        return index
            .checked_sub(8)
            .and_then(|i| STATIC.get(i))
            .copied()
            .unwrap_or(0);
    }
    let name_index = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if !(8..=14).contains(&name_index) {
        return 0;
    }
    let Some(&len_byte) = block.get(1) else {
        return 0;
    };
    let len = usize::from(len_byte & 0x7f);
    let Some(value) = block.get(2..2 + len) else {
        return 0;
    };
    let digits = if len_byte & 0x80 != 0 {
        huffman_digits(value)
    } else {
        String::from_utf8_lossy(value).into_owned()
    };
    digits.parse().unwrap_or(0)
}

/// Decodes a Huffman-coded string of decimal digits (RFC 7541 Appendix B:
/// `0`-`2` are 5-bit codes 0-2, `3`-`9` are 6-bit codes 25-31).
fn huffman_digits(bytes: &[u8]) -> String {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let value = |from: usize, n: usize| bits[from..from + n].iter().fold(0u8, |a, b| a << 1 | b);
    let mut out = String::new();
    let mut at = 0;
    while at + 5 <= bits.len() {
        let five = value(at, 5);
        if five <= 2 {
            out.push(char::from(b'0' + five));
            at += 5;
        } else if at + 6 <= bits.len() && (25..=31).contains(&value(at, 6)) {
            out.push(char::from(b'3' + value(at, 6) - 25));
            at += 6;
        } else {
            break;
        }
    }
    out
}
