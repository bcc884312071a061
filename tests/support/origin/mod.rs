//! The fake origin: one builder, one running type.
//!
//! ```ignore
//! let blue = Origin::new("blue").start().await;                       // canned paths, h1 + h2c
//! let web = Origin::new("web").http1().answer(Answers::Switchable).start().await;
//! let grpc = Origin::new("g").answer(Answers::Protocols).tls(&leaf).start().await;
//! let idle = Origin::new("idle").answer(Answers::CloseIdleOnCue).start().await;
//! ```
//!
//! Every [`RunningOrigin`] listens on 127.0.0.1:0, counts connections and
//! requests (by method and path too), sets `x-backend: NAME` on its answers,
//! can be killed and restarted on the same port, and stops when dropped.
//! What it answers is chosen with [`Answers`]; how it speaks with
//! [`Origin::http1`], [`Origin::tls`] and [`Origin::alpn`].
//!
//! Kept apart on purpose, because their point is exact bytes that a hyper
//! server would smooth over:
//! - `recording_origin` (`RecordingOrigin`): parses raw HTTP/1.1 by hand and
//!   records every field as sent, for the differential suite; the fuzz target
//!   includes that file by path, so it depends on std, tokio and httparse only;
//! - `h2_origin` (`H2Origin`): sends exact HTTP/2 frames (REFUSED_STREAM,
//!   GOAWAY with a chosen last stream id and code) through the `h2` crate;
//! - `hostile::backends` (`RecordingBackend`, `ScriptedBackend`): a tee of
//!   every raw byte received, and raw sockets that misbehave mid-message;
//! - `nginx` (`Nginx`): the real thing.

mod idle;
mod paths;
mod protocols;
mod switchable;

pub use paths::Echo;
pub use protocols::{GRPC_COUNT, GRPC_SAY, GRPC_STALL, Seen};
pub use switchable::HEALTH_PATH;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::tls::Leaf;
use super::{PATIENCE, eventually};

/// What an origin answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Answers {
    /// Canned paths (see `paths.rs`): `/` and anything unknown → the name;
    /// `/echo` → JSON of the request ([`Echo`]); `/slow/{ms}`;
    /// `/status/{code}`; `/upload` → byte count of the streamed body;
    /// `/download/{bytes}` → that many bytes in 64 KiB chunks; `/hold` →
    /// `first`, then `last` once the test calls [`RunningOrigin::release`];
    /// `/hop-headers` → an answer carrying hop-by-hop headers.
    #[default]
    Paths,
    /// Switched at run time (see `switchable.rs`): [`HEALTH_PATH`] → the
    /// status of [`RunningOrigin::set_health`]; `/hold` → held until
    /// [`RunningOrigin::release_holds`]; anything else → the status of
    /// [`RunningOrigin::set_status`] with the name as body; in reset mode
    /// ([`RunningOrigin::set_reset`]) each request is read, counted, and the
    /// connection reset. Sockets close with RST, and [`RunningOrigin::kill`]
    /// resets open connections too: a crash.
    Switchable,
    /// WebSocket and gRPC echo, trailers, chunked and sized bodies, a gate;
    /// otherwise JSON of what was seen ([`Seen`]); see `protocols.rs`.
    Protocols,
    /// `200 ok` on kept-alive connections, written by hand; on
    /// [`RunningOrigin::close_idle`] every connection between requests is
    /// closed, as nginx does on reload and Node.js after its keep-alive timeout.
    CloseIdleOnCue,
}

/// A fake origin to start: see the module doc.
#[must_use = "an origin does nothing until started"]
pub struct Origin {
    name: String,
    answers: Answers,
    http1_only: bool,
    tls: Option<(Leaf, Vec<Vec<u8>>)>,
    /// With TLS: client certificates this CA signed are required.
    client_ca: Option<rustls_pki_types::CertificateDer<'static>>,
}

impl Origin {
    /// Canned [`Answers::Paths`], HTTP/1.1 and h2c with prior knowledge.
    pub fn new(name: &str) -> Origin {
        Origin {
            name: name.to_string(),
            answers: Answers::default(),
            http1_only: false,
            tls: None,
            client_ca: None,
        }
    }

    pub fn answer(mut self, answers: Answers) -> Origin {
        self.answers = answers;
        self
    }

    /// HTTP/1.1 only (no h2c).
    pub fn http1(mut self) -> Origin {
        self.http1_only = true;
        self
    }

    /// TLS with `leaf`, offering ALPN `h2` and `http/1.1`.
    pub fn tls(self, leaf: &Leaf) -> Origin {
        self.tls_alpn(leaf, &[b"h2", b"http/1.1"])
    }

    /// TLS with `leaf`, offering exactly `alpn`.
    pub fn tls_alpn(mut self, leaf: &Leaf, alpn: &[&[u8]]) -> Origin {
        let alpn = alpn.iter().map(|p| p.to_vec()).collect();
        self.tls = Some((leaf.clone(), alpn));
        self
    }

    /// With TLS: require a client certificate signed by `ca`.
    pub fn require_client_cert(mut self, ca: &super::tls::Pki) -> Origin {
        self.client_ca = Some(ca.ca_der());
        self
    }

    pub async fn start(self) -> RunningOrigin {
        assert!(
            self.answers != Answers::CloseIdleOnCue || self.tls.is_none(),
            "an idle-closing origin speaks cleartext HTTP/1.1 only"
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake origin");
        let addr = listener.local_addr().expect("fake origin addr");
        let client_ca = self.client_ca;
        let tls = self.tls.map(|(leaf, alpn)| {
            let alpn: Vec<&[u8]> = alpn.iter().map(Vec::as_slice).collect();
            TlsAcceptor::from(Arc::new(leaf.server_config_for(&alpn, client_ca.as_ref())))
        });
        let shared = Arc::new(Shared::new(&self.name));
        let serve = Arc::new(Serve {
            answers: self.answers,
            http1_only: self.http1_only,
            tls,
        });
        let serving = Some(tokio::spawn(accept(
            listener,
            Arc::clone(&shared),
            Arc::clone(&serve),
        )));
        RunningOrigin {
            name: self.name,
            addr,
            shared,
            serve,
            serving,
        }
    }
}

/// A started [`Origin`]; dropping it stops accepting (and, for
/// [`Answers::Switchable`], resets its connections).
pub struct RunningOrigin {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    serve: Arc<Serve>,
    /// The accept loop; it owns the listener.
    serving: Option<JoinHandle<()>>,
}

impl RunningOrigin {
    /// Shorthand for `Origin::new(name).start()`: canned paths, h1 + h2c.
    pub async fn start(name: &str) -> RunningOrigin {
        Origin::new(name).start().await
    }

    /// Shorthand for an HTTP/1.1 [`Answers::Switchable`] origin: health and
    /// answers set by the test, killed and restarted at will.
    pub async fn switchable(name: &str) -> RunningOrigin {
        Origin::new(name)
            .http1()
            .answer(Answers::Switchable)
            .start()
            .await
    }

    /// `host:port` as written in a config's `endpoints`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// `https://127.0.0.1:port`.
    pub fn https_endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `https://localhost:port`.
    pub fn https_localhost(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Requests received: counted when their headers arrive (for
    /// [`Answers::CloseIdleOnCue`], once the whole request is read).
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// TCP connections open now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// How many `method path` requests arrived.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.shared
            .seen()
            .get(&(method.to_string(), path.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests that were not health checks ([`HEALTH_PATH`]).
    pub fn requests(&self) -> usize {
        self.shared
            .seen()
            .iter()
            .filter(|((_, path), _)| path != HEALTH_PATH)
            .map(|(_, n)| n)
            .sum()
    }

    /// Health checks received.
    pub fn health_checks(&self) -> usize {
        self.count("GET", HEALTH_PATH)
    }

    /// Bytes of `/upload` bodies received so far ([`Answers::Paths`]).
    pub fn upload_progress(&self) -> u64 {
        self.shared.upload_progress.load(Ordering::SeqCst)
    }

    /// Lets one `/hold` answer finish ([`Answers::Paths`]).
    pub fn release(&self) {
        self.shared.release.notify_one();
    }

    /// The status [`HEALTH_PATH`] answers with from now on ([`Answers::Switchable`]).
    pub fn set_health(&self, status: u16) {
        self.shared.health.store(status, Ordering::SeqCst);
    }

    /// The status of every other answer from now on ([`Answers::Switchable`]).
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Reset mode: read each request, then reset the connection without
    /// answering ([`Answers::Switchable`]).
    pub fn set_reset(&self, reset: bool) {
        self.shared.reset.store(reset, Ordering::SeqCst);
    }

    /// Lets every `/hold` request, waiting now or later, answer ([`Answers::Switchable`]).
    pub fn release_holds(&self) {
        self.shared.holds_released.store(true, Ordering::SeqCst);
        self.shared.holds.notify_waiters();
    }

    /// WebSocket sessions opened ([`Answers::Protocols`]).
    pub fn websockets(&self) -> usize {
        self.shared.websockets.load(Ordering::SeqCst)
    }

    /// Closes every idle connection and waits until all are closed
    /// ([`Answers::CloseIdleOnCue`]).
    pub async fn close_idle(&self) {
        self.shared
            .close_idle
            .send_modify(|generation| *generation += 1);
        eventually("the origin to close its idle connections", || {
            self.open() == 0
        })
        .await;
    }

    /// Stops accepting and closes the listener (new connects are refused);
    /// [`Answers::Switchable`] resets every open connection too. Returns once
    /// the port is closed.
    pub async fn kill(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
            // Resolves once the task is dropped, with its listener.
            let _ = serving.await;
        }
    }

    /// Listens again on the same address after [`RunningOrigin::kill`].
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
        self.serving = Some(tokio::spawn(accept(
            listener,
            Arc::clone(&self.shared),
            Arc::clone(&self.serve),
        )));
    }
}

impl Drop for RunningOrigin {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }
}

/// How connections are served; fixed at start.
struct Serve {
    answers: Answers,
    http1_only: bool,
    tls: Option<TlsAcceptor>,
}

/// Counters and switches, shared by the running origin and its connections.
struct Shared {
    name: String,
    connections: AtomicUsize,
    open: AtomicUsize,
    hits: AtomicUsize,
    /// Requests seen, by (method, path), counted when their headers arrive.
    seen: Mutex<HashMap<(String, String), usize>>,
    upload_progress: AtomicU64,
    release: Notify,
    health: AtomicU16,
    status: AtomicU16,
    reset: AtomicBool,
    holds_released: AtomicBool,
    holds: Notify,
    websockets: AtomicUsize,
    at_gate: AtomicUsize,
    gate: Notify,
    close_idle: watch::Sender<u64>,
}

impl Shared {
    fn new(name: &str) -> Shared {
        Shared {
            name: name.to_string(),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
            seen: Mutex::new(HashMap::new()),
            upload_progress: AtomicU64::new(0),
            release: Notify::new(),
            health: AtomicU16::new(200),
            status: AtomicU16::new(200),
            reset: AtomicBool::new(false),
            holds_released: AtomicBool::new(false),
            holds: Notify::new(),
            websockets: AtomicUsize::new(0),
            at_gate: AtomicUsize::new(0),
            gate: Notify::new(),
            close_idle: watch::channel(0).0,
        }
    }

    fn seen(&self) -> MutexGuard<'_, HashMap<(String, String), usize>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one request whose head arrived.
    fn count<B>(&self, req: &http::Request<B>) {
        self.hits.fetch_add(1, Ordering::SeqCst);
        *self
            .seen()
            .entry((req.method().to_string(), req.uri().path().to_string()))
            .or_insert(0) += 1;
    }
}

/// What one connection negotiated.
#[derive(Debug, Clone, Default)]
struct ConnInfo {
    tls: bool,
    alpn: Option<String>,
    sni: Option<String>,
}

/// Keeps [`Shared::open`] right however a connection task ends.
struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts until aborted. [`Answers::Switchable`] connections live in a
/// `JoinSet` dropped with this task; the others outlive it, as they always have.
async fn accept(listener: TcpListener, shared: Arc<Shared>, serve: Arc<Serve>) {
    let mut owned = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        let open = OpenConnection(Arc::clone(&shared));
        let connection = connection(stream, Arc::clone(&shared), Arc::clone(&serve));
        let connection = async move {
            let _open = open;
            connection.await;
        };
        if serve.answers == Answers::Switchable {
            owned.spawn(connection);
            // Reap finished connections so the set does not grow without bound.
            while owned.try_join_next().is_some() {}
        } else {
            tokio::spawn(connection);
        }
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, serve: Arc<Serve>) {
    if serve.answers == Answers::Switchable {
        // Closing the socket sends RST instead of FIN: a reset, or a crash.
        let _ = stream.set_zero_linger();
        let _ = stream.set_nodelay(true);
    }
    match &serve.tls {
        None => speak(stream, ConnInfo::default(), shared, &serve).await,
        Some(acceptor) => {
            // Untrusting clients abort the handshake: part of some tests.
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let (_, session) = stream.get_ref();
            let info = ConnInfo {
                tls: true,
                alpn: session
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
                sni: session.server_name().map(str::to_string),
            };
            speak(stream, info, shared, &serve).await;
        }
    }
}

async fn speak<S>(stream: S, info: ConnInfo, shared: Arc<Shared>, serve: &Serve)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match serve.answers {
        Answers::Paths => paths::serve(stream, shared, serve.http1_only).await,
        Answers::Switchable => switchable::serve(stream, shared, serve.http1_only).await,
        Answers::Protocols => protocols::serve(stream, info, shared, serve.http1_only).await,
        Answers::CloseIdleOnCue => idle::serve(stream, &shared).await,
    }
}
