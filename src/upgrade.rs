//! Zero-downtime binary upgrade: on SIGUSR2 the running process starts the
//! binary on disk again with the same arguments, handing it the listening
//! sockets (`LISTEN_FDS`, the systemd socket-activation convention, with
//! `LISTEN_FDS_FIRST_FD`). The new process serves from the same kernel
//! sockets — connections waiting in the accept queue included — and says
//! `ready` on its stdout; only then does the old one stop accepting and drain.
//! At no point is the port closed, so no client sees a refused connection.

use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::net::TcpListener;

/// The line a new process prints on stdout once it serves.
pub const READY_LINE: &str = "sluicegate: ready";

/// Set in the new process so it announces readiness on stdout.
pub const UPGRADE_ENV: &str = "SLUICEGATE_UPGRADE";

/// Inherited fds are moved up to here so they are consecutive.
const FIRST_FD: i32 = 1000;

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
    if is_successor() {
        println!("{READY_LINE}");
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
    // Consecutive fds without close-on-exec, so the child inherits exactly these.
    let mut passed = Vec::with_capacity(sockets.len());
    for (i, socket) in sockets.iter().enumerate() {
        let want = FIRST_FD + i32::try_from(i).map_err(io::Error::other)?;
        let dup = rustix::io::fcntl_dupfd_cloexec(socket, want)?;
        if std::os::fd::AsRawFd::as_raw_fd(&dup) != want {
            return Err(io::Error::other(format!(
                "fd {want} is taken: cannot pass the listeners"
            )));
        }
        rustix::io::fcntl_setfd(&dup, rustix::io::FdFlags::empty())?;
        passed.push(dup);
    }
    let exe = binary_on_disk()?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("LISTEN_FDS", sockets.len().to_string())
        .env("LISTEN_FDS_FIRST_FD", FIRST_FD.to_string())
        .env_remove("LISTEN_PID")
        .env(UPGRADE_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    // The child has its copies now; ours must not linger open.
    drop(passed);
    let pid = child.id();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout from the new process"))?;
    // Read on a thread so the wait can time out.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.trim() == READY_LINE);
        let _ = ready_tx.send(ready);
    });
    match ready_rx.recv_timeout(READY_TIMEOUT) {
        Ok(true) => Ok(pid),
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
