//! The service manager's notification protocol (systemd `Type=notify`): the
//! real binary, started with `NOTIFY_SOCKET` naming a datagram socket this
//! test binds, says READY=1 once it serves, RELOADING=1 … READY=1 around each
//! reload, STOPPING=1 on SIGTERM, and hands MAINPID to the process a SIGUSR2
//! upgrade starts. No systemd needed.
#![cfg(target_os = "linux")]

pub mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixDatagram;

use support::PATIENCE;
use support::origin::{Origin, RunningOrigin};

/// A test's directory, config and notify socket.
struct Setup {
    dir: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn new(tag: &str, blue: &RunningOrigin) -> Setup {
        let dir = std::env::temp_dir().join(format!("sg-notify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        std::fs::write(dir.join("admin.token"), "notify-test-token\n").expect("token");
        let config = dir.join("sluicegate.toml");
        let setup = Setup { dir, config };
        setup.write_config(blue, 100);
        setup
    }

    /// Route `web`: blue at `blue_weight`, `spare` (same origin) the rest.
    fn write_config(&self, blue: &RunningOrigin, blue_weight: u32) {
        let text = format!(
            "[[listeners]]\naddr = \"127.0.0.1:0\"\n\n[admin]\naddr = \"127.0.0.1:0\"\n\
             token_file = \"admin.token\"\n\n[[routes]]\nname = \"web\"\n\
             backends = [\n  {{ name = \"blue\", weight = {blue_weight}, endpoints = [\"{addr}\"] }},\n  \
             {{ name = \"spare\", weight = {spare}, endpoints = [\"{addr}\"] }},\n]\n",
            addr = blue.addr,
            spare = 100 - blue_weight,
        );
        self.replace_config(&text);
    }

    /// Replaces the config file at once (write and rename), so the watcher
    /// never reads half a file.
    fn replace_config(&self, text: &str) {
        let staged = self.dir.join("staged.toml.tmp");
        std::fs::write(&staged, text).expect("write config");
        std::fs::rename(&staged, &self.config).expect("rename config");
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test's end of the notify socket.
struct Notifications(UnixDatagram);

impl Notifications {
    fn at_path(path: &Path) -> Notifications {
        Notifications(UnixDatagram::bind(path).expect("bind the notify socket"))
    }

    fn at_abstract_name(name: &str) -> Notifications {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).expect("name");
        let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind @name");
        socket.set_nonblocking(true).expect("nonblocking");
        Notifications(UnixDatagram::from_std(socket).expect("tokio socket"))
    }

    /// The next datagram, within [`PATIENCE`].
    async fn next(&self) -> String {
        self.within(PATIENCE)
            .await
            .expect("a notification within PATIENCE")
    }

    async fn within(&self, limit: Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(limit, self.0.recv(&mut buf))
            .await
            .ok()?
            .expect("recv on the notify socket");
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// A started `sluicegate run` with its stderr lines; killed when dropped.
struct Sluicegate {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Processes started by upgrades, killed with this one.
    successors: Mutex<Vec<u32>>,
}

impl Sluicegate {
    fn start(config: &Path, notify_socket: &str) -> Sluicegate {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
            .args(["run", "-c"])
            .arg(config)
            .env("NOTIFY_SOCKET", notify_socket)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluicegate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Sluicegate {
            child,
            lines,
            successors: Mutex::new(Vec::new()),
        }
    }

    /// The first log line containing `needle`, within [`PATIENCE`].
    fn line_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with `{needle}`: {e}"),
            }
        }
    }

    /// The data listener's address, from the log.
    fn data_addr(&self) -> SocketAddr {
        loop {
            let line = self.line_with("listening addr=");
            if !line.contains("admin") {
                return field(&line, "addr=").parse().expect("listening address");
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to [`PATIENCE`]) for the process to exit; whether it exited 0.
    async fn exits_cleanly(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sluicegate did not exit within PATIENCE"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Sluicegate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self
            .successors
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
        {
            // Only a process still running sluicegate (not a reused pid).
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("sluicegate") {
                signal(pid, "KILL");
            }
        }
    }
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(key).map(|i| i + key.len()).expect("field");
    line[start..].split_whitespace().next().unwrap_or("")
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// One GET / on a new connection, no retry: whether it was a 200.
async fn answers(addr: SocketAddr) -> bool {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: notify.test\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.ok()?;
        Some(reply.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// A RELOADING=1 message's MONOTONIC_USEC, checked to lie between `before`
/// and now.
fn reloading_at(message: &str, before: u64) -> u64 {
    let mut lines = message.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{message:?}");
    let usec: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {message:?}"));
    assert!(
        (before..=monotonic_usec()).contains(&usec),
        "MONOTONIC_USEC={usec} is not CLOCK_MONOTONIC now ({before}…)"
    );
    usec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_and_stopping_reach_the_notify_socket() {
    let blue = Origin::new("blue").start().await;
    let setup = Setup::new("path", &blue);
    let socket_path = setup.dir.join("notify.sock");
    let notifications = Notifications::at_path(&socket_path);
    let mut proxy = Sluicegate::start(&setup.config, &socket_path.to_string_lossy());

    assert_eq!(notifications.next().await, "READY=1");
    let addr = proxy.data_addr();
    assert!(answers(addr).await, "the port answers once READY=1 is sent");

    // SIGHUP, even of an unchanged file: RELOADING=1, then READY=1.
    let before = monotonic_usec();
    signal(proxy.pid(), "HUP");
    let first = reloading_at(&notifications.next().await, before);
    assert_eq!(notifications.next().await, "READY=1");

    // A changed file, seen by the watcher.
    let before = monotonic_usec();
    setup.write_config(&blue, 50);
    let second = reloading_at(&notifications.next().await, before);
    assert!(second > first);
    assert_eq!(notifications.next().await, "READY=1");
    proxy.line_with("config reloaded");
    assert!(answers(addr).await, "serves on the reloaded config");

    // A refused file still ends the reload with READY=1: the old config serves.
    setup.replace_config("this is not = = toml");
    let before = monotonic_usec();
    reloading_at(&notifications.next().await, before);
    assert_eq!(notifications.next().await, "READY=1");
    proxy.line_with("config reload refused");

    signal(proxy.pid(), "TERM");
    assert_eq!(notifications.next().await, "STOPPING=1");
    assert!(proxy.exits_cleanly().await, "exit 0 after SIGTERM");
    assert_eq!(
        notifications.within(Duration::from_millis(200)).await,
        None,
        "nothing after STOPPING=1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_the_main_pid_to_the_new_process_on_an_abstract_socket() {
    let blue = Origin::new("blue").start().await;
    let setup = Setup::new("upgrade", &blue);
    let name = format!("sg-notify-upgrade-{}", std::process::id());
    let notifications = Notifications::at_abstract_name(&name);
    let mut old = Sluicegate::start(&setup.config, &format!("@{name}"));
    assert_eq!(notifications.next().await, "READY=1");
    let addr = old.data_addr();
    assert!(answers(addr).await);

    signal(old.pid(), "USR2");
    let handed_over = old.line_with("the new process is serving");
    let new_pid: u32 = field(&handed_over, "pid=").parse().expect("new pid");
    if let Ok(mut successors) = old.successors.lock() {
        successors.push(new_pid);
    }
    // The new process announces itself as the main one, and the old one
    // points the service manager at it; in either order.
    let mut seen = vec![notifications.next().await, notifications.next().await];
    seen.sort();
    assert_eq!(
        seen,
        vec![
            format!("MAINPID={new_pid}"),
            format!("MAINPID={new_pid}\nREADY=1")
        ]
    );
    assert!(
        old.exits_cleanly().await,
        "the old process drains and exits 0"
    );
    assert_eq!(
        notifications.within(Duration::from_millis(300)).await,
        None,
        "the old process's drain is not the service stopping"
    );
    assert!(answers(addr).await, "the new process serves");

    // The new process reloads and stops like the first one did.
    let before = monotonic_usec();
    signal(new_pid, "HUP");
    reloading_at(&notifications.next().await, before);
    assert_eq!(notifications.next().await, "READY=1");
    signal(new_pid, "TERM");
    assert_eq!(notifications.next().await, "STOPPING=1");
}
