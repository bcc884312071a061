//! The service manager's notification protocol (sd_notify(3)), for systemd
//! `Type=notify`: one datagram of `KEY=VALUE` lines to the unix socket named
//! by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). Without
//! the variable nothing is sent; a failed send is logged and changes nothing.
//!
//! - `READY=1` once the listeners are bound and the config is live;
//! - `RELOADING=1` with `MONOTONIC_USEC=` when a reload starts, `READY=1`
//!   when it is over (applied or refused);
//! - `STOPPING=1` when graceful shutdown starts;
//! - on a SIGUSR2 upgrade, the old process sends `MAINPID=<new pid>` once the
//!   new one is ready, and from then on nothing (its drain is not the
//!   service stopping); the new one sends `MAINPID=<own pid>` with its
//!   `READY=1`, which systemd accepts with `NotifyAccess=all`.

use std::sync::atomic::{AtomicBool, Ordering};

/// The variable naming the socket.
pub const SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Set once this process has handed the service to a successor.
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// The listeners serve and the config is live.
pub fn ready(successor: bool) {
    if successor {
        send(&format!("MAINPID={}\nREADY=1", std::process::id()));
    } else {
        send("READY=1");
    }
}

/// A reload starts.
pub fn reloading() {
    match monotonic_usec() {
        Some(usec) => send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")),
        None => send("RELOADING=1"),
    }
}

/// A reload is over, whatever came of it: the service runs (on the new
/// config or the old one).
pub fn reloaded() {
    send("READY=1");
}

/// Graceful shutdown starts.
pub fn stopping() {
    send("STOPPING=1");
}

/// The process `pid` serves in this one's place: the service manager follows
/// it, and this process says nothing more.
pub fn hand_over(pid: u32) {
    send(&format!("MAINPID={pid}"));
    HANDED_OVER.store(true, Ordering::Relaxed);
}

fn send(message: &str) {
    if HANDED_OVER.load(Ordering::Relaxed) {
        return;
    }
    let Some(target) = std::env::var_os(SOCKET_ENV) else {
        return;
    };
    if let Err(error) = send_to(&target, message) {
        tracing::warn!(
            socket = %target.to_string_lossy(),
            %error,
            "cannot notify the service manager"
        );
    }
}

#[cfg(unix)]
fn send_to(target: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::net::UnixDatagram;

    let socket = UnixDatagram::unbound()?;
    let bytes = target.as_bytes();
    match bytes.strip_prefix(b"@") {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(name) => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt as _;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &addr)?;
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Some(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "abstract socket names need Linux",
            ));
        }
        None => {
            socket.send_to(message.as_bytes(), std::path::Path::new(target))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn send_to(_: &std::ffi::OsStr, _: &str) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "NOTIFY_SOCKET needs unix sockets",
    ))
}

/// CLOCK_MONOTONIC in microseconds, which systemd compares with its own.
#[cfg(unix)]
fn monotonic_usec() -> Option<u64> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).ok()?;
    let micros = u64::try_from(now.tv_nsec).ok()? / 1_000;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(not(unix))]
fn monotonic_usec() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_time_moves_forward() {
        let first = monotonic_usec().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = monotonic_usec().unwrap();
        assert!(second >= first + 1_000, "{first} then {second}");
    }

    #[test]
    fn a_message_reaches_a_path_and_an_abstract_socket() {
        use std::os::unix::net::UnixDatagram;
        let dir = std::env::temp_dir().join(format!("sg-notify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let bound = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = bound.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt as _;
            let name = format!("sg-notify-unit-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
            let abstract_socket = UnixDatagram::bind_addr(&addr).unwrap();
            send_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
            let n = abstract_socket.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
