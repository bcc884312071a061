//! `TestProxy`: sluicegate's `edge::run` on port-0 listeners.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use sluicegate::config::{Config, Format};
use sluicegate::edge::{self, Listeners};
use sluicegate::error::ServerError;

use super::PATIENCE;

/// sluicegate's `edge::run` on port-0 listeners, stopped through a oneshot.
pub struct TestProxy {
    /// The first data listener.
    pub addr: SocketAddr,
    /// Every data listener, in config order.
    pub addrs: Vec<SocketAddr>,
    /// The admin listener, when started with one ([`TestProxy::start_config`]).
    pub admin_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    run: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestProxy {
    /// Parses `toml`, binds 127.0.0.1:0 for each `[[listeners]]` and starts serving.
    pub async fn start(toml: &str) -> TestProxy {
        let config = Config::parse(toml, "test.toml", Format::Toml)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n--- config ---\n{toml}"));
        TestProxy::start_config(config, false).await
    }

    /// Serves an already loaded `config`: binds 127.0.0.1:0 for each
    /// `[[listeners]]` and, with `admin`, for the admin API too.
    pub async fn start_config(config: Config, admin: bool) -> TestProxy {
        let mut data = Vec::with_capacity(config.listeners.len());
        for _ in &config.listeners {
            data.push(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind proxy listener"),
            );
        }
        let addrs: Vec<SocketAddr> = data
            .iter()
            .map(|l| l.local_addr().expect("proxy listener addr"))
            .collect();
        let admin = if admin {
            Some(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind admin listener"),
            )
        } else {
            None
        };
        let admin_addr = admin
            .as_ref()
            .map(|l| l.local_addr().expect("admin listener addr"));
        let (tx, rx) = oneshot::channel::<()>();
        // Dropping the TestProxy drops the sender, which also stops the server.
        let shutdown = async move {
            let _ = rx.await;
        };
        let listeners = Listeners { data, admin };
        let run = tokio::spawn(edge::run(config, listeners, shutdown));
        TestProxy {
            addr: addrs[0],
            addrs,
            admin_addr,
            shutdown: Some(tx),
            run: Some(run),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Resolves the shutdown future without waiting for `run` to return.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Whether `run` has returned.
    pub fn has_stopped(&self) -> bool {
        self.run.as_ref().is_none_or(|run| run.is_finished())
    }

    /// Waits up to `limit` for `run` to return and hands back its result.
    pub async fn wait_stopped(&mut self, limit: Duration) -> Result<(), ServerError> {
        let run = self.run.take().expect("run already awaited");
        match tokio::time::timeout(limit, run).await {
            Ok(joined) => joined.expect("edge::run panicked"),
            Err(_) => panic!("edge::run did not return within {limit:?} after shutdown"),
        }
    }

    /// Triggers shutdown and waits (up to [`PATIENCE`]) for `run` to return.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.begin_shutdown();
        self.wait_stopped(PATIENCE).await
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}
