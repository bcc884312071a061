//! Hostile-input kit: a raw socket that sends what real clients never would, a
//! backend that records every byte it is sent, backends that misbehave on cue,
//! hand-written HTTP/2 frames, good clients that keep asking during an attack,
//! and fd / RSS readings of this (the proxy's) process.

pub mod backends;
pub mod h2;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::PATIENCE;
use super::body::{TestBody, empty};

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

/// Reads one response head (up to `limit`) and returns its status; `None`
/// when the proxy closed first or the time ran out.
pub async fn read_status(stream: &mut TcpStream, limit: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    RawOutcome {
        bytes,
        closed: false,
        elapsed: Duration::ZERO,
    }
    .status()
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
