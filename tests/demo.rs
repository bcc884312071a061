//! `sluicegate demo` as a user runs it: a real process on real ports; the
//! `ctl` commands it prints work from another directory, and a second demo
//! on the same ports fails without touching the first one's token file.

pub mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::admin::TestDir;

const TOKEN_FILE: &str = "sluicegate-admin.token";

/// Two different ports nobody listens on right now (bound to :0 together,
/// then released).
fn free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("local addr").port();
    (port(&a), port(&b))
}

/// A running `sluicegate demo`, killed on drop.
struct Demo {
    child: Child,
    /// Its standard output, line by line.
    lines: mpsc::Receiver<String>,
}

impl Demo {
    fn start(dir: &TestDir, port: u16, admin_port: u16) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
            .args(["demo", "--port", &port.to_string()])
            .args(["--admin-port", &admin_port.to_string()])
            .current_dir(&dir.path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sluicegate demo");
        let stdout = child.stdout.take().expect("demo stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Demo { child, lines }
    }

    /// Lines up to "Press Ctrl-C to stop." (printed once it serves).
    fn banner(&self) -> Vec<String> {
        let mut banner = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.starts_with("Press Ctrl-C") => return banner,
                Ok(line) => banner.push(line),
                Err(e) => panic!("demo printed no banner ({e}); got {banner:#?}"),
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn printed_ctl_commands_work_from_another_directory() {
    let dir = TestDir::new("demo-ctl");
    let elsewhere = TestDir::new("demo-elsewhere");
    let (port, admin_port) = free_ports();
    let demo = Demo::start(&dir, port, admin_port);
    let banner = demo.banner();
    let status = banner
        .iter()
        .map(|line| line.trim())
        .find(|line| line.ends_with(" status"))
        .unwrap_or_else(|| panic!("no `ctl … status` line in {banner:#?}"));
    assert!(
        status.starts_with('/') && status.contains(" ctl ") && status.contains("--token-file /"),
        "the command should name the binary and the token file by absolute path: {status}"
    );
    let output = Command::new("sh")
        .args(["-c", status])
        .current_dir(&elsewhere.path)
        .env_remove("SLUICEGATE_ADMIN_TOKEN")
        .output()
        .expect("run sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`{status}` failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("blue") && stdout.contains("green"),
        "{stdout}"
    );
}

#[test]
fn second_demo_on_taken_ports_fails_and_keeps_the_token_file() {
    let dir = TestDir::new("demo-twice");
    let (port, admin_port) = free_ports();
    let first = Demo::start(&dir, port, admin_port);
    first.banner();
    let token = std::fs::read_to_string(dir.file(TOKEN_FILE)).expect("first demo's token");

    let second = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(["demo", "--port", &port.to_string()])
        .args(["--admin-port", &admin_port.to_string()])
        .current_dir(&dir.path)
        .output()
        .expect("run the second demo");
    assert!(
        !second.status.success(),
        "the second demo should fail on taken ports"
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.file(TOKEN_FILE)).expect("token file after"),
        token,
        "the second demo replaced the running demo's token"
    );
    drop(first);
}
