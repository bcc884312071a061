//! Zero-downtime binary upgrade: on SIGUSR2 the running process starts the
//! binary on disk again with the same arguments, handing it the listening
//! sockets (`LISTEN_FDS`, the systemd socket-activation convention, with
//! `LISTEN_FDS_FIRST_FD`). The new process serves from the same kernel
//! sockets — connections waiting in the accept queue included — and says
//! `ready` on a pipe of its own (`SLUICEGATE_READY_FD`; its stdout stays the
//! old one's, so an access log to stdout carries on); only then does the old
//! one stop accepting and drain.
//! At no point is the port closed, so no client sees a refused connection.

use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::net::TcpListener;

/// The line a new process writes to its ready pipe once it serves.
pub const READY_LINE: &str = "sluicegate: ready";

/// The inherited fd number of the ready pipe's write end.
pub const READY_FD_ENV: &str = "SLUICEGATE_READY_FD";

/// Set in the new process so it announces readiness on stdout.
pub const UPGRADE_ENV: &str = "SLUICEGATE_UPGRADE";

/// Inherited fds are placed consecutively, starting at least this far
/// above the highest fd open now.
const FD_GAP: i32 = 64;

/// How long the old process waits for the new one to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Listeners handed over by a previous process, in order, if any.
pub fn inherited_listeners() -> io::Result<Option<Vec<TcpListener>>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut listeners = Vec::with_capacity(fds.len());
    for i in 0..fds.len() {
        let listener = fds
            .take_tcp_listener(i)?
            .ok_or_else(|| io::Error::other(format!("inherited fd {i} is not a TCP listener")))?;
        listener.set_nonblocking(true)?;
        listeners.push(TcpListener::from_std(listener)?);
    }
    Ok(Some(listeners))
}

/// Whether this process was started by an upgrade.
pub fn is_successor() -> bool {
    std::env::var_os(UPGRADE_ENV).is_some()
}

/// Tells the old process this one is serving.
pub fn announce_ready() {
    if !is_successor() {
        return;
    }
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        println!("{READY_LINE}");
        return;
    };
    // Opening the inherited descriptor through /proc needs no unsafe code.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
        .and_then(|mut pipe| {
            use std::io::Write as _;
            writeln!(pipe, "{READY_LINE}")
        });
    if let Err(error) = written {
        tracing::error!(%error, "cannot tell the previous process that this one is ready");
    }
}

/// Duplicates of the listening sockets, kept to hand to a successor.
pub fn keep(listeners: &[&TcpListener]) -> io::Result<Vec<OwnedFd>> {
    listeners
        .iter()
        .map(|l| l.as_fd().try_clone_to_owned())
        .collect()
}

/// Starts the binary on disk with this process's arguments and `sockets`,
/// and waits until it says it is ready. Blocking: call from a blocking task.
pub fn start_successor(sockets: &[OwnedFd]) -> io::Result<u32> {
    let (ready_read, ready_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let mut inherited: Vec<&OwnedFd> = sockets.iter().collect();
    inherited.push(&ready_write);
    let (first_fd, passed) = pass_consecutive(&inherited)?;
    let ready_fd = first_fd + i32::try_from(sockets.len()).map_err(io::Error::other)?;
    let exe = binary_on_disk()?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("LISTEN_FDS", sockets.len().to_string())
        .env("LISTEN_FDS_FIRST_FD", first_fd.to_string())
        .env(READY_FD_ENV, ready_fd.to_string())
        .env_remove("LISTEN_PID")
        .env(UPGRADE_ENV, "1")
        .stdin(Stdio::null())
        .spawn()?;
    // The child has its copies now; ours must not linger open, or a child
    // that dies before it is ready would never close the pipe.
    drop(passed);
    drop(ready_write);
    let pid = child.id();
    let ready_pipe = std::fs::File::from(ready_read);
    // Read on a thread so the wait can time out.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ready = BufReader::new(ready_pipe)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.trim() == READY_LINE);
        let _ = ready_tx.send(ready);
    });
    match ready_rx.recv_timeout(READY_TIMEOUT) {
        Ok(true) => {
            super::notify::hand_over(pid);
            Ok(pid)
        }
        Ok(false) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait()?;
            Err(io::Error::other(format!(
                "the new process exited before it was ready: {status}"
            )))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(io::Error::other(format!(
                "the new process was not ready within {READY_TIMEOUT:?}: stopped it"
            )))
        }
    }
}

/// Duplicates `fds` to consecutive numbers without close-on-exec, above
/// every fd open now (a process started by an upgrade holds its inherited
/// fds low in that range: a fixed number would be taken the second time).
fn pass_consecutive(fds: &[&OwnedFd]) -> io::Result<(i32, Vec<OwnedFd>)> {
    for _attempt in 0..3 {
        let highest = std::fs::read_dir("/proc/self/fd")?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .max()
            .unwrap_or(2);
        let first = highest + FD_GAP;
        let mut passed = Vec::with_capacity(fds.len());
        let mut consecutive = true;
        for (i, fd) in fds.iter().enumerate() {
            let want = first + i32::try_from(i).map_err(io::Error::other)?;
            let dup = rustix::io::fcntl_dupfd_cloexec(fd, want)?;
            if std::os::fd::AsRawFd::as_raw_fd(&dup) != want {
                // Another thread opened one of these meanwhile: try higher.
                consecutive = false;
                break;
            }
            rustix::io::fcntl_setfd(&dup, rustix::io::FdFlags::empty())?;
            passed.push(dup);
        }
        if consecutive {
            return Ok((first, passed));
        }
    }
    Err(io::Error::other(
        "cannot place the listeners on consecutive fds",
    ))
}

/// The path of this binary as installed now. After `mv new-build sluicegate`
/// the running image is unlinked and Linux reports its path with a
/// " (deleted)" suffix: the file at the plain path is the new build.
fn binary_on_disk() -> io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => std::path::PathBuf::from(path),
        None => exe,
    })
}
