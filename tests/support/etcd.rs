//! A real etcd cluster for the fleet tests: Debian's `etcd` binary, one or
//! three members on loopback ports picked free first (a member started on
//! port 0 cannot form a cluster), each in its own temp data dir; members are
//! killed when the cluster is dropped. Also a TCP relay that can cut one
//! instance off etcd while the others stay connected.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use sluicegate::config::{Config, Format};
use sluicegate::control::fleet::etcd::Etcd;

use super::PATIENCE;
use super::admin::TestDir;

/// One etcd member.
pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    dir: TestDir,
    initial_cluster: String,
}

/// A loopback port nobody listens on now.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

impl EtcdCluster {
    /// A cluster of `size` members, each answering `/health` before this returns.
    pub async fn start(size: usize) -> EtcdCluster {
        let dir = TestDir::new("etcd");
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            dir,
            initial_cluster,
        };
        for i in 0..size {
            cluster.spawn(i, "new");
        }
        for i in 0..size {
            cluster.wait_healthy(i).await;
        }
        cluster
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let data = self.dir.file(&format!("data-{i}"));
        let log = std::fs::File::create(self.dir.file(&format!("etcd-{i}.log"))).expect("log");
        let member = &mut self.members[i];
        let child = Command::new("etcd")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&data)
            .arg(format!("--listen-client-urls=http://{}", member.client))
            .arg(format!("--advertise-client-urls=http://{}", member.client))
            .arg(format!("--listen-peer-urls=http://{}", member.peer))
            .arg(format!(
                "--initial-advertise-peer-urls=http://{}",
                member.peer
            ))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=sluicegate-test")
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start etcd (Debian package etcd-server; .ci/run installs it): {e}")
            });
        member.child = Some(child);
    }

    async fn wait_healthy(&self, i: usize) {
        let addr = self.members[i].client;
        let deadline = tokio::time::Instant::now() + PATIENCE * 3;
        loop {
            if let Ok(Ok(reply)) =
                tokio::time::timeout(Duration::from_secs(1), try_get(addr, "/health")).await
                && reply.contains("\"health\":\"true\"")
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd member {i} did not become healthy; log:\n{}",
                std::fs::read_to_string(self.dir.file(&format!("etcd-{i}.log")))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every member's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client))
            .collect()
    }

    /// A `[fleet]` table for this cluster.
    pub fn fleet_table(&self, prefix: &str, instance: &str, zone: Option<&str>) -> String {
        fleet_table(&self.urls(), prefix, instance, zone)
    }

    /// A client of this cluster, from the library.
    pub fn client(&self) -> Etcd {
        let text = format!(
            "{}\n[[listeners]]\naddr = \"127.0.0.1:0\"\n",
            self.fleet_table("/any", "test-client", None)
        );
        let config = Config::parse(&text, "etcd.toml", Format::Toml).expect("fleet table parses");
        Etcd::new(&config.fleet.expect("fleet")).expect("etcd client")
    }

    /// The index of the member that leads now.
    pub async fn leader(&self) -> usize {
        for _ in 0..100 {
            for (i, member) in self.members.iter().enumerate() {
                if member.child.is_none() {
                    continue;
                }
                let Ok(Ok(status)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    try_post(member.client, "/v3/maintenance/status", "{}"),
                )
                .await
                else {
                    continue;
                };
                let Ok(status) = serde_json::from_str::<serde_json::Value>(&status) else {
                    continue;
                };
                let leader = status["leader"].as_str().unwrap_or("");
                if !leader.is_empty() && status["header"]["member_id"].as_str() == Some(leader) {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no etcd member leads");
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every member.
    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Starts member `i` again on its data dir and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i, "existing");
        self.wait_healthy(i).await;
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A `[fleet]` table for `urls`; a short lease so removal shows fast.
pub fn fleet_table(urls: &[String], prefix: &str, instance: &str, zone: Option<&str>) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let zone = zone.map_or(String::new(), |z| format!("zone = \"{z}\"\n"));
    format!(
        "[fleet]\netcd = [{}]\nprefix = \"{prefix}\"\ninstance = \"{instance}\"\n{zone}lease_ttl = \"3s\"\n",
        urls.join(", ")
    )
}

/// `GET path` on a fresh connection; the body, or why there is none (the
/// member may not listen yet).
async fn try_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

async fn try_post(addr: SocketAddr, path: &str, body: &str) -> Result<String, String> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, &request).await
}

async fn exchange(addr: SocketAddr, request: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string()))
}

/// A TCP relay in front of one etcd member: `cut` closes every relayed
/// connection and refuses new ones until `restore`.
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    changed: Arc<Notify>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let cut = Arc::new(AtomicBool::new(false));
        let changed = Arc::new(Notify::new());
        let (cut_flag, notify) = (Arc::clone(&cut), Arc::clone(&changed));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if cut_flag.load(Ordering::SeqCst) {
                    continue;
                }
                let (cut_flag, notify) = (Arc::clone(&cut_flag), Arc::clone(&notify));
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    loop {
                        let woken = notify.notified();
                        if cut_flag.load(Ordering::SeqCst) {
                            return;
                        }
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
                            _ = woken => {}
                        }
                    }
                });
            }
        });
        Relay { addr, cut, changed }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
