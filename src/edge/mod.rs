//! Listeners, the accept loop, per-connection serving and graceful shutdown.
//!
//! [`run`] takes already-bound listeners (tests bind port 0) and a shutdown
//! future. On shutdown it stops accepting, closes the listeners, asks every
//! connection to finish its in-flight requests, and waits for them up to
//! `timeouts.shutdown_grace`.

pub mod connection;
pub mod notify;
pub mod tls;
#[cfg(unix)]
pub mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::adapters::fast_path;
use crate::adapters::hyper_path;
use crate::config::{Config, Limits, Timeouts};
use crate::control::State;
use crate::control::admin::{self, Admin, Keyring, Token};
use crate::control::canary;
use crate::control::fleet::Fleet;
use crate::control::health;
use crate::control::reload::{Announce, Reloader};
use crate::edge::tls::CertStore;
use crate::error::ServerError;
use crate::exchange::decide::ClientInfo;
use crate::exchange::forwarding;
use crate::telemetry::ConnectionSlot;
use crate::telemetry::access_log::AccessLog;
use connection::{Tracked, Tracker};

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

/// How long shutdown waits for the fleet tasks to withdraw this instance.
const FLEET_GOODBYE: std::time::Duration = std::time::Duration::from_secs(2);

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
    let keys = if listeners.admin.is_some() {
        let (keys, generated) = Keyring::resolve(&config.admin).map_err(ServerError::Admin)?;
        if let Some(path) = generated {
            tracing::info!(path = %path.display(), "generated an admin token (mode 0600)");
        }
        keys
    } else {
        Keyring::single(Token::random().map_err(ServerError::Admin)?)
    };
    let keys = Arc::new(keys);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let certificate_actors = config.admin.tokens.is_empty()
        && config
            .admin
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
    let admin_tls = config
        .admin
        .tls
        .as_ref()
        .map(|files| {
            let store = Arc::new(CertStore::load(files)?);
            Ok::<_, String>((Arc::clone(&store), crate::edge::tls::acceptor(store)?))
        })
        .transpose()
        .map_err(ServerError::Tls)?;
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
    let mut state = State::try_new(config).map_err(|e| ServerError::Tls(e.to_string()))?;
    if let Some(log) = access_log {
        state.set_access_log(log);
    }
    let state = Arc::new(state);
    let (stop_tx, stop_rx) = watch::channel(false);
    let reloader = source.map(|path| {
        let reloader = Reloader::new(path, Arc::clone(&state), loaded).announcing(Announce {
            start: notify::reloading,
            done: notify::reloaded,
        });
        Arc::new(reloader)
    });
    if let Some(reloader) = &reloader {
        if let Err(error) = reloader.watch(stop_rx.clone()) {
            tracing::warn!(path = %reloader.path().display(), %error, "cannot watch the config file; reload with SIGHUP or the admin API");
        }
        #[cfg(unix)]
        if let Err(error) = reloader.reload_on_sighup(stop_rx.clone()) {
            tracing::warn!(%error, "cannot listen for SIGHUP");
        }
    }
    let fleet = Fleet::new(Arc::clone(&state)).map_err(ServerError::Fleet)?;
    let fleet_tasks = fleet
        .as_ref()
        .map(|f| f.spawn(stop_rx.clone()))
        .unwrap_or_default();
    let canaries = Arc::new(canary::Controller::with_fleet(
        Arc::clone(&state),
        fleet.clone(),
    ));
    let admin = Arc::new(Admin {
        state: Arc::clone(&state),
        reloader,
        keys: Arc::clone(&keys),
        certificate_actors,
        open_reads: admin_loopback,
        draining: AtomicBool::new(false),
        canary: Arc::clone(&canaries),
        fleet,
    });
    // The admin listener stays open until the data listeners are done, so a
    // pipeline calling the API during a restart or upgrade gets its answer.
    let admin_connections = Tracker::new();
    keys.watch(stop_rx.clone());
    let admin_store = admin_tls.as_ref().map(|(store, _)| Arc::clone(store));
    let admin_acceptor = admin_tls.map(|(_, acceptor)| acceptor);
    let admin_task = listeners.admin.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, tls = admin_acceptor.is_some(), "admin API listening");
        }
        tokio::spawn(accept_loop(
            listener,
            Serves::Admin(Arc::clone(&admin), admin_acceptor),
            Arc::clone(&state),
            stop_rx.clone(),
            admin_connections.track(),
        ))
    });
    let health = health::spawn(Arc::clone(&state), stop_rx.clone());
    let canary_task = canary::spawn(canaries, stop_rx.clone());
    let cert_reload = tokio::spawn(reload_certificates(
        Arc::clone(&state),
        tls.clone(),
        admin_store,
        stop_rx.clone(),
    ));
    let upkeep_state = Arc::clone(&state);
    let upkeep = tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::telemetry::UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            upkeep_state.telemetry().upkeep();
            let snapshot = upkeep_state.snapshot();
            let endpoints = snapshot.routes.iter().flat_map(|r| &r.backends);
            for endpoint in endpoints.flat_map(|b| &b.endpoints) {
                endpoint.close_expired();
            }
        }
    });
    let acceptors = tls
        .iter()
        .map(|store| {
            store
                .as_ref()
                .map(|s| crate::edge::tls::acceptor(Arc::clone(s)))
                .transpose()
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(ServerError::Tls)?;
    let draining = Arc::clone(&admin);
    let delay = state.snapshot().config.timeouts.shutdown_delay;
    #[cfg(unix)]
    notify::ready(upgrade::is_successor());
    #[cfg(not(unix))]
    notify::ready(false);
    ready();
    let result = serve(
        state,
        listeners.data.into_iter().zip(acceptors).collect(),
        async move {
            shutdown.await;
            notify::stopping();
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
    // A stopped instance leaves the fleet view at once (its lease revoked).
    for task in fleet_tasks {
        let _ = tokio::time::timeout(FLEET_GOODBYE, task).await;
    }
    if let Some(task) = admin_task {
        let _ = task.await;
        let grace = admin.state.snapshot().config.timeouts.shutdown_grace;
        if !admin_connections.wait(grace).await {
            tracing::warn!(?grace, "admin requests still open after the grace period");
        }
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
    admin: Option<Arc<CertStore>>,
    mut stop: watch::Receiver<bool>,
) {
    if stores.iter().all(Option::is_none) && admin.is_none() {
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
        if let (Some(store), Some(files)) = (&admin, &config.admin.tls) {
            store.reload(files);
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
    let connections = Tracker::new();
    let mut accept_loops = Vec::new();
    for (index, (listener, tls)) in listeners.into_iter().enumerate() {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, tls = tls.is_some(), "listening");
        }
        accept_loops.push(tokio::spawn(accept_loop(
            listener,
            Serves::Data { index, tls },
            Arc::clone(&state),
            stop_rx.clone(),
            connections.track(),
        )));
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = stop_tx.send(true);
    for task in accept_loops {
        let _ = task.await;
    }
    let grace = state.snapshot().config.timeouts.shutdown_grace;
    if !connections.wait(grace).await {
        tracing::warn!(?grace, "grace period over with requests still in flight");
    }
    Ok(())
}

/// What a listener's connections are served with.
enum Serves {
    /// The data plane: the listener's place in the config (for its
    /// settings) and, for TLS, its acceptor.
    Data {
        index: usize,
        tls: Option<TlsAcceptor>,
    },
    /// The admin API and, for TLS, its acceptor.
    Admin(Arc<Admin>, Option<TlsAcceptor>),
}

/// The one accept loop, for data and admin listeners alike: accepts until
/// `stop`, each connection holding a clone of `done` until it ends.
async fn accept_loop(
    listener: TcpListener,
    serves: Serves,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    done: Tracked,
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
        match &serves {
            Serves::Data { index, tls } => {
                accept_data(stream, peer, *index, tls.as_ref(), &state, &stop, &done);
            }
            Serves::Admin(admin, tls) => {
                accept_admin(stream, peer, admin, tls.as_ref(), &state, &stop, &done);
            }
        }
    }
}

/// Starts serving a data-plane connection: the connection limit, the fast
/// path's part of the decision, TLS.
fn accept_data(
    stream: TcpStream,
    peer: SocketAddr,
    index: usize,
    tls: Option<&TlsAcceptor>,
    state: &Arc<State>,
    stop: &watch::Receiver<bool>,
    done: &Tracked,
) {
    let (timeouts, limits, fast_h1) = {
        let config = &state.snapshot().config;
        let fast_h1 = fast_path::takes_connection(config.listeners.get(index), None);
        (config.timeouts, config.limits, fast_h1)
    };
    let Some(slot) = state
        .telemetry()
        .try_open_connection(limits.max_connections)
    else {
        tracing::debug!(%peer, max = limits.max_connections, "connection limit reached: closing");
        drop(stream);
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut conn = Accepted {
        client: ClientInfo::new(peer),
        state: Arc::clone(state),
        timeouts,
        limits,
        stop: stop.clone(),
        fast_h1,
        _done: done.clone(),
        _slot: slot,
    };
    match tls {
        None => {
            tokio::spawn(serve_connection(stream, conn));
        }
        Some(acceptor) => {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not finish its handshake in time, or
                // sends garbage, is dropped without touching anyone else.
                match tokio::time::timeout(timeouts.client_headers, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        conn.client.tls = true;
                        conn.client.client_cert =
                            crate::edge::tls::client_subject(stream.get_ref().1)
                                .and_then(|subject| forwarding::client_cert_value(&subject));
                        let alpn = stream.get_ref().1.alpn_protocol();
                        conn.fast_h1 &= fast_path::takes_connection(None, alpn);
                        serve_connection(stream, conn).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    }
}

/// Starts serving an admin connection: TLS when configured (the handshake
/// within `client_headers`), then hyper with the same timeouts and limits,
/// each request to [`admin::handle`].
fn accept_admin(
    stream: TcpStream,
    peer: SocketAddr,
    admin: &Arc<Admin>,
    tls: Option<&TlsAcceptor>,
    state: &Arc<State>,
    stop: &watch::Receiver<bool>,
    done: &Tracked,
) {
    let (timeouts, limits) = {
        let config = &state.snapshot().config;
        (config.timeouts, config.limits)
    };
    let admin = Arc::clone(admin);
    let (stop, done) = (stop.clone(), done.clone());
    let tls = tls.cloned();
    tokio::spawn(async move {
        let _done = done;
        let serve = |subject: Option<Arc<str>>| {
            let caller = Arc::new(admin::Peer {
                addr: peer,
                subject,
            });
            service_fn(move |req| {
                let (admin, caller) = (Arc::clone(&admin), Arc::clone(&caller));
                async move { Ok::<_, Infallible>(admin::handle(&admin, &caller, req).await) }
            })
        };
        let served = match tls {
            None => {
                let service = serve(None);
                connection::serve_hyper(stream, Bytes::new(), service, timeouts, limits, stop).await
            }
            Some(acceptor) => {
                match tokio::time::timeout(timeouts.client_headers, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let service = serve(crate::edge::tls::client_subject(stream.get_ref().1));
                        connection::serve_hyper(
                            stream,
                            Bytes::new(),
                            service,
                            timeouts,
                            limits,
                            stop,
                        )
                        .await
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "admin TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "admin TLS handshake timed out");
                        return;
                    }
                }
            }
        };
        if let Err(error) = served {
            tracing::debug!(%peer, %error, "admin connection ended with an error");
        }
    });
}

/// What one client connection is served with.
struct Accepted {
    client: ClientInfo,
    state: Arc<State>,
    timeouts: Timeouts,
    limits: Limits,
    stop: watch::Receiver<bool>,
    /// Try the HTTP/1.1 fast path first (not after ALPN chose h2).
    fast_h1: bool,
    /// Held until the connection ends: shutdown waits for it.
    _done: Tracked,
    /// Counts the connection against `max_connections`.
    _slot: ConnectionSlot,
}

/// Serves one client connection (HTTP/1.1 or h2c prior knowledge) until it
/// closes, is idle for `client_idle`, or shutdown asks it to finish.
async fn serve_connection<S>(mut stream: S, conn_info: Accepted)
where
    S: AsyncRead + AsyncWrite + fast_path::Readable + Unpin + Send + 'static,
{
    let Accepted {
        client,
        state,
        timeouts,
        limits,
        mut stop,
        fast_h1,
        _done,
        _slot,
    } = conn_info;
    let buffered = if fast_h1 {
        let fast = fast_path::Client {
            state: &state,
            info: client.clone(),
            timeouts,
            limits,
            stop: &mut stop,
        };
        match fast_path::serve(&mut stream, fast).await {
            fast_path::Outcome::Closed => return,
            fast_path::Outcome::Handoff(buffered) => buffered,
        }
    } else {
        Bytes::new()
    };
    let peer = client.peer;
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        let client = client.clone();
        // Boxed: hyper moves a service future several times (HTTP/2 spawns
        // each stream's into a task); a pointer moves for less than its
        // 4 KiB (memmove was ~10 % of an h2c run's samples).
        Box::pin(async move { Ok::<_, Infallible>(hyper_path::handle(&state, client, req).await) })
    });
    // Boxed: an idle fast-path connection's task need not hold room for
    // hyper's connection state, only the rare hand-over pays for it.
    let hyper = Box::pin(connection::serve_hyper(
        stream, buffered, service, timeouts, limits, stop,
    ));
    if let Err(error) = hyper.await {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}
