//! `FaultyBackend`: a fake HTTP/1.1 backend whose behaviour the test switches
//! at run time — health status, the status of every other answer, connection
//! resets, killed and restarted on the same port — and that counts every
//! request by method and path.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use super::{PATIENCE, TestBody, full};

/// The path that answers with the switchable health status.
pub const HEALTH_PATH: &str = "/healthz";

/// A backend on 127.0.0.1 that the test can break and mend.
///
/// Paths: [`HEALTH_PATH`] → the status set by [`FaultyBackend::set_health`]
/// (200 at start); `/hold` → 200 once the test calls
/// [`FaultyBackend::release_holds`]; anything else → the status set by
/// [`FaultyBackend::set_status`] (200 at start) with the name as body.
/// Every answer carries `x-backend: NAME`. In reset mode every request is read
/// to its end, counted, and then the connection is reset (RST) without an answer.
pub struct FaultyBackend {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    /// The accept loop; it owns the listener and every open connection.
    serving: Option<JoinHandle<()>>,
}

struct Shared {
    name: String,
    health: AtomicU16,
    /// The status of every answer but the health check's.
    status: AtomicU16,
    reset: AtomicBool,
    /// Requests seen, by (method, path), counted when their headers arrive.
    seen: Mutex<HashMap<(String, String), usize>>,
    holds_released: AtomicBool,
    release: Notify,
}

impl FaultyBackend {
    /// Starts on a free port, healthy and answering normally.
    pub async fn start(name: &str) -> FaultyBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind faulty backend");
        let addr = listener.local_addr().expect("faulty backend addr");
        let shared = Arc::new(Shared {
            name: name.to_string(),
            health: AtomicU16::new(200),
            status: AtomicU16::new(200),
            reset: AtomicBool::new(false),
            seen: Mutex::new(HashMap::new()),
            holds_released: AtomicBool::new(false),
            release: Notify::new(),
        });
        let serving = Some(tokio::spawn(serve(listener, Arc::clone(&shared))));
        FaultyBackend {
            name: name.to_string(),
            addr,
            shared,
            serving,
        }
    }

    /// `host:port` as written in a config's `endpoints`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// The status [`HEALTH_PATH`] answers with from now on.
    pub fn set_health(&self, status: u16) {
        self.shared.health.store(status, Ordering::SeqCst);
    }

    /// The status every request but a health check gets from now on.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Reset mode: read each request, then reset the connection without answering.
    pub fn set_reset(&self, reset: bool) {
        self.shared.reset.store(reset, Ordering::SeqCst);
    }

    /// Lets every `/hold` request, waiting now or later, answer.
    pub fn release_holds(&self) {
        self.shared.holds_released.store(true, Ordering::SeqCst);
        self.shared.release.notify_waiters();
    }

    /// Stops accepting, closes the listener (new connects are refused) and
    /// resets every open connection. Returns once the port is closed.
    pub async fn kill(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
            // Resolves once the task is dropped, with its listener and connections.
            let _ = serving.await;
        }
    }

    /// Listens again on the same address after [`FaultyBackend::kill`].
    pub async fn restart(&mut self) {
        assert!(self.serving.is_none(), "{} is already running", self.name);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                // Once closed, the port may serve for a while as some client
                // socket's ephemeral port: wait for that connection to end.
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => panic!("rebind {} on {}: {e}", self.name, self.addr),
            }
        };
        self.serving = Some(tokio::spawn(serve(listener, Arc::clone(&self.shared))));
    }

    /// How many `method path` requests arrived.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.seen()
            .get(&(method.to_string(), path.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests that were not health checks.
    pub fn requests(&self) -> usize {
        self.seen()
            .iter()
            .filter(|((_, path), _)| path != HEALTH_PATH)
            .map(|(_, n)| n)
            .sum()
    }

    /// Health checks received.
    pub fn health_checks(&self) -> usize {
        self.count("GET", HEALTH_PATH)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), usize>> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for FaultyBackend {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }
}

/// Accepts until aborted; dropping it drops the listener and, through the
/// `JoinSet`, every connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Closing the socket sends RST instead of FIN: a reset, or a crash.
        let _ = stream.set_zero_linger();
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let reset = Arc::new(Notify::new());
            let reset_conn = Arc::clone(&reset);
            let service =
                service_fn(move |req| handle(Arc::clone(&shared), Arc::clone(&reset_conn), req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = reset.notified() => {}
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

async fn handle(
    shared: Arc<Shared>,
    reset: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    {
        let mut seen = shared
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *seen
            .entry((req.method().to_string(), path.clone()))
            .or_insert(0) += 1;
    }
    // Read the whole request body: in reset mode so the request has certainly
    // arrived before the reset, otherwise so the connection can be kept alive.
    let _ = req.into_body().collect().await;
    if shared.reset.load(Ordering::SeqCst) {
        reset.notify_one();
        // The connection task drops this future along with the connection.
        std::future::pending::<()>().await;
    }
    let status = if path == HEALTH_PATH {
        &shared.health
    } else {
        &shared.status
    };
    let status = StatusCode::from_u16(status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if path == "/hold" {
        loop {
            let released = shared.release.notified();
            if shared.holds_released.load(Ordering::SeqCst) {
                break;
            }
            released.await;
        }
    }
    let mut resp = Response::new(full(shared.name.clone()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "x-backend",
        HeaderValue::from_str(&shared.name).expect("backend name is a header value"),
    );
    Ok(resp)
}
