//! The helper commands, run as the real binary: `completions`, `man` and
//! `probe` (against real listeners on port 0).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn sluicegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(args)
        .output()
        .expect("run sluicegate")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const SUBCOMMANDS: [&str; 8] = [
    "run",
    "check",
    "demo",
    "ctl",
    "probe",
    "schema",
    "completions",
    "man",
];

#[test]
fn completions_name_every_subcommand_in_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&sluicegate(&["completions", shell]));
        for subcommand in SUBCOMMANDS {
            assert!(
                script.contains(subcommand),
                "{shell} completions lack `{subcommand}`"
            );
        }
        // ctl's own subcommands are completed too.
        assert!(
            script.contains("promote"),
            "{shell} completions lack `promote`"
        );
    }
}

#[test]
fn bash_accepts_the_bash_completions() {
    let script = stdout(&sluicegate(&["completions", "bash"]));
    let dir = std::env::temp_dir().join(format!("sluicegate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("sluicegate.bash");
    std::fs::write(&path, script).expect("write script");
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("run bash -n");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        checked.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn unknown_shell_is_refused() {
    let output = sluicegate(&["completions", "cmd.exe"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn man_page_is_roff_with_the_subcommands() {
    let page = stdout(&sluicegate(&["man"]));
    assert!(page.contains(".TH sluicegate 1"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for subcommand in SUBCOMMANDS {
        assert!(page.contains(subcommand), "man page lacks `{subcommand}`");
    }
}

/// A listener on port 0 that answers each connection with `status`.
fn answering(status: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    format!("http://{addr}/readyz")
}

#[test]
fn probe_exits_0_on_2xx() {
    let output = sluicegate(&["probe", &answering("200 OK")]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("200"));
}

#[test]
fn probe_exits_1_on_503_and_says_why() {
    let output = sluicegate(&["probe", &answering("503 Service Unavailable")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("503"));
}

#[test]
fn probe_exits_1_when_nothing_listens() {
    let url = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/", listener.local_addr().expect("addr"))
    };
    let output = sluicegate(&["probe", &url]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"));
}

#[test]
fn probe_gives_up_after_its_timeout() {
    // Accepts, then never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let started = Instant::now();
    let output = sluicegate(&["probe", "--timeout", "300ms", &url]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no answer within"));
    drop(listener);
}

#[test]
fn probe_refuses_https_and_bad_timeouts() {
    let output = sluicegate(&["probe", "https://127.0.0.1:1/"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let output = sluicegate(&["probe", "--timeout", "2", "http://127.0.0.1:1/"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}
