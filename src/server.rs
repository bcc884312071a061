//! Listeners, the accept loop, per-connection serving and graceful shutdown.
//!
//! [`run`] takes already-bound listeners (tests bind port 0) and a shutdown
//! future. On shutdown it stops accepting, closes the listeners, asks every
//! connection to finish its in-flight requests, and waits for them up to
//! `timeouts.shutdown_grace`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::access_log::AccessLog;
use crate::admin::{self, Admin, Token};
use crate::canary;
use crate::config::{Config, Limits, Timeouts};
use crate::error::ServerError;
use crate::health;
use crate::proxy::{self, ClientInfo};
use crate::reload::Reloader;
use crate::state::State;
use crate::telemetry::ConnectionSlot;
use crate::tls::CertStore;

/// Bound sockets: the data-plane listeners, in config order, and the admin one.
#[derive(Debug)]
pub struct Listeners {
    pub data: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds every address of `config`: its listeners and the admin listener.
    pub async fn bind(config: &Config) -> io::Result<Listeners> {
        let mut data = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            data.push(bind(listener.addr).await?);
        }
        let admin = Some(bind(config.admin.addr).await?);
        Ok(Listeners { data, admin })
    }
}

async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serves `config` on `listeners` until `shutdown` resolves, then drains:
/// `/readyz` turns 503, listeners close, in-flight requests finish (up to
/// `timeouts.shutdown_grace`). Also runs the admin API and, for a config read
/// from a file, reloads on file change and SIGHUP.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    run_then(config, listeners, shutdown, || {}).await
}

/// [`run`], calling `ready` once everything that can fail at start-up (token,
/// certificates, access log) has succeeded and the listeners serve.
pub async fn run_then(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(),
) -> Result<(), ServerError> {
    check_supported(&config, &listeners)?;
    // Without an admin listener nothing can use a token: don't write one.
    let token = if listeners.admin.is_some() {
        let (token, generated) = Token::resolve(&config.admin).map_err(ServerError::Admin)?;
        if let Some(path) = generated {
            tracing::info!(path = %path.display(), "generated an admin token (mode 0600)");
        }
        token
    } else {
        Token::random().map_err(ServerError::Admin)?
    };
    let admin_loopback = listeners
        .admin
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .is_some_and(|a| a.ip().is_loopback());
    let tls = tls_stores(&config)?;
    let (source, loaded) = (config.source.clone(), config.source_hash);
    let access_log = config
        .access_log
        .as_ref()
        .map(|c| {
            AccessLog::start(c).map_err(|e| {
                let path = c
                    .path
                    .as_ref()
                    .map_or("stdout".into(), |p| p.display().to_string());
                ServerError::AccessLog(format!("{path}: {e}"))
            })
        })
        .transpose()?;
    let mut state = State::new(config);
    if let Some(log) = access_log {
        state.set_access_log(log);
    }
    let state = Arc::new(state);
    let (stop_tx, stop_rx) = watch::channel(false);
    let reloader = source.map(|path| Arc::new(Reloader::new(path, Arc::clone(&state), loaded)));
    if let Some(reloader) = &reloader {
        if let Err(error) = reloader.watch(stop_rx.clone()) {
            tracing::warn!(path = %reloader.path().display(), %error, "cannot watch the config file; reload with SIGHUP or the admin API");
        }
        #[cfg(unix)]
        if let Err(error) = reloader.reload_on_sighup(stop_rx.clone()) {
            tracing::warn!(%error, "cannot listen for SIGHUP");
        }
    }
    let canaries = Arc::new(canary::Controller::new(Arc::clone(&state)));
    let admin = Arc::new(Admin {
        state: Arc::clone(&state),
        reloader,
        token,
        open_reads: admin_loopback,
        draining: AtomicBool::new(false),
        canary: Arc::clone(&canaries),
    });
    let admin_task = listeners
        .admin
        .map(|listener| tokio::spawn(admin::serve(listener, Arc::clone(&admin), stop_rx.clone())));
    let health = health::spawn(Arc::clone(&state), stop_rx.clone());
    let canary_task = canary::spawn(canaries, stop_rx.clone());
    let cert_reload = tokio::spawn(reload_certificates(
        Arc::clone(&state),
        tls.clone(),
        stop_rx.clone(),
    ));
    let telemetry = Arc::clone(state.telemetry());
    let upkeep = tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::telemetry::UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            telemetry.upkeep();
        }
    });
    let acceptors = tls
        .iter()
        .map(|store| {
            store
                .as_ref()
                .map(|s| crate::tls::acceptor(Arc::clone(s)))
                .transpose()
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(ServerError::Tls)?;
    let draining = Arc::clone(&admin);
    let delay = state.snapshot().config.timeouts.shutdown_delay;
    ready();
    let result = serve(
        state,
        listeners.data.into_iter().zip(acceptors).collect(),
        async move {
            shutdown.await;
            // Readiness fails first so an outer balancer stops sending, then the
            // listeners close after `shutdown_delay`.
            draining.draining.store(true, Ordering::Relaxed);
            if !delay.is_zero() {
                tracing::info!(
                    ?delay,
                    "readyz now 503; closing listeners after the shutdown delay"
                );
                tokio::time::sleep(delay).await;
            }
        },
    )
    .await;
    health.abort();
    canary_task.abort();
    cert_reload.abort();
    upkeep.abort();
    let _ = stop_tx.send(true);
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    result
}

/// Refuses listeners that do not match the config, rather than half-serving.
fn check_supported(config: &Config, listeners: &Listeners) -> Result<(), ServerError> {
    if listeners.data.len() != config.listeners.len() {
        return Err(ServerError::ListenerCount(
            listeners.data.len(),
            config.listeners.len(),
        ));
    }
    Ok(())
}

/// The certificate store of each listener (`None` for plain ones).
type TlsStores = Vec<Option<Arc<CertStore>>>;

fn tls_stores(config: &Config) -> Result<TlsStores, ServerError> {
    config
        .listeners
        .iter()
        .map(|l| {
            l.tls
                .as_ref()
                .map(|files| CertStore::load(files).map(Arc::new))
                .transpose()
        })
        .collect::<Result<_, _>>()
        .map_err(ServerError::Tls)
}

/// After every new revision, re-reads certificate files that changed.
async fn reload_certificates(
    state: Arc<State>,
    stores: TlsStores,
    mut stop: watch::Receiver<bool>,
) {
    if stores.iter().all(Option::is_none) {
        return;
    }
    let mut revisions = state.subscribe();
    loop {
        tokio::select! {
            changed = revisions.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
        }
        let config = Arc::clone(&state.snapshot().config);
        for (store, listener) in stores.iter().zip(&config.listeners) {
            if let (Some(store), Some(files)) = (store, &listener.tls) {
                store.reload(files);
            }
        }
    }
}

/// A listener and, for TLS, its acceptor.
pub type Listener = (TcpListener, Option<TlsAcceptor>);

/// Accepts on every listener until `shutdown`, then waits for connections.
pub async fn serve(
    state: Arc<State>,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection holds a sender; when all are gone, recv() returns None.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut accept_loops = Vec::new();
    for (listener, tls) in listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, tls = tls.is_some(), "listening");
        }
        accept_loops.push(tokio::spawn(accept_loop(
            listener,
            tls,
            Arc::clone(&state),
            stop_rx.clone(),
            done_tx.clone(),
        )));
    }
    drop(done_tx);
    shutdown.await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = stop_tx.send(true);
    for task in accept_loops {
        let _ = task.await;
    }
    let grace = state.snapshot().config.timeouts.shutdown_grace;
    if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
        tracing::warn!(?grace, "grace period over with requests still in flight");
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let (timeouts, limits) = {
            let snapshot = state.snapshot();
            (snapshot.config.timeouts, snapshot.config.limits)
        };
        let Some(slot) = state
            .telemetry()
            .try_open_connection(limits.max_connections)
        else {
            tracing::debug!(%peer, max = limits.max_connections, "connection limit reached: closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            client: ClientInfo { peer, tls: false },
            state: Arc::clone(&state),
            timeouts,
            limits,
            stop: stop.clone(),
            _done: done.clone(),
            _slot: slot,
        };
        match &tls {
            None => {
                tokio::spawn(serve_connection(stream, conn));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not finish its handshake in time, or
                    // sends garbage, is dropped without touching anyone else.
                    match tokio::time::timeout(timeouts.client_headers, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            conn.client.tls = true;
                            serve_connection(stream, conn).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// What one client connection is served with.
struct Connection {
    client: ClientInfo,
    state: Arc<State>,
    timeouts: Timeouts,
    limits: Limits,
    stop: watch::Receiver<bool>,
    /// Held until the connection ends: shutdown waits for every sender.
    _done: mpsc::Sender<()>,
    /// Counts the connection against `max_connections`.
    _slot: ConnectionSlot,
}

/// Serves one client connection (HTTP/1.1 or h2c prior knowledge) until it
/// closes, is idle for `client_idle`, or shutdown asks it to finish.
async fn serve_connection<S>(stream: S, conn_info: Connection)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Connection {
        client,
        state,
        timeouts,
        limits,
        mut stop,
        _done,
        _slot,
    } = conn_info;
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(proxy::handle(&state, client, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.client_headers)
        .max_headers(limits.max_request_headers)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut finishing = false;
    // Set on shutdown for a connection that has not sent a byte yet: it was
    // accepted from the queue just now and its request is on the way.
    let mut first_request_deadline: Option<Instant> = None;
    loop {
        let idle_deadline = activity.last() + timeouts.client_idle;
        let wake =
            first_request_deadline.map_or(idle_deadline, |_| Instant::now() + FIRST_BYTE_POLL);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(peer = %client.peer, %error, "client connection ended with an error");
                }
                break;
            }
            _ = stop.changed(), if !finishing && first_request_deadline.is_none() => {
                if activity.has_read() {
                    finishing = true;
                    conn.as_mut().graceful_shutdown();
                } else {
                    first_request_deadline = Some(Instant::now() + FIRST_REQUEST_GRACE);
                }
            }
            _ = tokio::time::sleep_until(wake), if !finishing => {
                let first_request_due = first_request_deadline
                    .is_some_and(|deadline| activity.has_read() || Instant::now() >= deadline);
                if first_request_due || activity.last() + timeouts.client_idle <= Instant::now() {
                    finishing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// On shutdown, how long a just-accepted connection may take to send its
/// first byte before it is closed, and how often that is looked at.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);
const FIRST_BYTE_POLL: Duration = Duration::from_millis(5);

/// When a connection last moved a byte, for the idle timeout.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    read_any: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            read_any: AtomicBool::new(false),
        }
    }

    fn has_read(&self) -> bool {
        self.read_any.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records activity on every read and write.
struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
            if !this.activity.read_any.load(Ordering::Relaxed) {
                this.activity.read_any.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            this.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            this.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
