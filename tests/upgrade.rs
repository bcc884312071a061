//! Zero-downtime binary upgrade: SIGUSR2 makes the running binary start a new
//! one on the same listening sockets and drain; clients never see a failure.
#![cfg(unix)]

pub mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::origin::Origin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One GET of `path` on a new connection: `Ok` on a 200, else what went wrong.
async fn get_ok(addr: SocketAddr, path: &str) -> Result<(), String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: upgrade.test\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if reply.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            let head = reply.split(|&b| b == b'\r').next().unwrap_or_default();
            Err(format!("reply: {:?}", String::from_utf8_lossy(head)))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| "no reply within 5 s".to_string())?
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Starts `sluicegate run` and returns it with a channel of its stderr lines.
fn start(config: &std::path::Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(["run", "-c"])
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("SG_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluicegate");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The first log line containing `needle`, within a few seconds.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line with `{needle}`: {e}"),
        }
    }
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(key)
        .map(|i| i + key.len())
        .expect("field in log line");
    line[start..].split_whitespace().next().unwrap_or("")
}

/// Kills the sluicegate processes it holds when dropped (also when the test
/// fails), those still running this test's config (not a reused pid).
struct Reaper(Mutex<Vec<u32>>, String);

impl Reaper {
    fn add(&self, pid: u32) {
        self.0.lock().unwrap().push(pid);
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in self.0.lock().map(|p| p.clone()).unwrap_or_default() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains(&self.1) {
                continue;
            }
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sigusr2_upgrades_under_load_fail_no_request() {
    let blue = Origin::new("blue").start().await;
    let dir = std::env::temp_dir().join(format!("sg-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin.token"), "upgrade-test-token\n").unwrap();
    let config = dir.join("sluicegate.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\
             [[routes]]\nname = \"web\"\nbackends = [{{ name = \"blue\", endpoints = [\"{}\"] }}]\n",
            blue.addr
        ),
    )
    .unwrap();

    let (mut old, lines) = start(&config);
    // Whatever happens below, no sluicegate this test started outlives it.
    let started = Reaper(Mutex::new(vec![old.id()]), config.display().to_string());
    let (mut addr, mut admin) = (None, None);
    while addr.is_none() || admin.is_none() {
        let line = wait_for_line(&lines, "listening addr=");
        let bound: SocketAddr = field(&line, "addr=").parse().expect("listening address");
        let slot = if line.contains("admin") {
            &mut admin
        } else {
            &mut addr
        };
        *slot = Some(bound);
    }
    let (addr, admin) = (addr.unwrap(), admin.unwrap());
    get_ok(addr, "/")
        .await
        .expect("proxy serves before the upgrade");
    get_ok(admin, "/healthz")
        .await
        .expect("admin serves before the upgrade");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut load = Vec::new();
    // Three clients of the data plane and one of the admin API (a pipeline
    // asking for health while the binary is replaced).
    let targets = [(addr, "/"), (addr, "/"), (addr, "/"), (admin, "/healthz")];
    for (target, path) in targets {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get_ok(target, path).await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(why) => failures.lock().unwrap().push(format!("{path}: {why}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(old.id(), "USR2");
    let handed_over = wait_for_line(&lines, "the new process is serving");
    let new_pid: u32 = field(&handed_over, "pid=").parse().expect("new pid");
    started.add(new_pid);
    let status = tokio::task::spawn_blocking(move || old.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "the old process drains and exits 0: {status}"
    );
    // A second upgrade, from the process the first one started: its
    // inherited sockets must not stand in the way of passing them on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(new_pid, "USR2");
    let handed_over = wait_for_line(&lines, "the new process is serving");
    let newest_pid: u32 = field(&handed_over, "pid=").parse().expect("newest pid");
    started.add(newest_pid);
    assert_ne!(newest_pid, new_pid);
    let proc_dir = format!("/proc/{new_pid}");
    support::eventually_async("the second process to drain and exit", || async {
        let state = std::fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its new parent to reap it.
        state.is_empty() || state.contains(") Z ")
    })
    .await;
    let before_after = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    signal(newest_pid, "TERM");
    let _ = std::fs::remove_dir_all(&dir);

    let ok = ok.load(Ordering::Relaxed);
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests out of {}: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    assert!(
        ok > before_after,
        "the new process kept serving after the old one exited"
    );
    assert!(ok >= 50, "enough load to mean something: {ok}");
}
