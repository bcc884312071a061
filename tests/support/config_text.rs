//! Config text rendered around the fake backends' real addresses.

use std::net::SocketAddr;

use super::origin::RunningOrigin;

/// One data listener; the address is a placeholder, `TestProxy` binds its own.
pub const LISTENER: &str = "[[listeners]]\naddr = \"127.0.0.1:0\"\n";

/// The two ways a listener serves plain HTTP/1.1: sluicegate's fast path
/// or hyper. Behaviour tests run on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H1Path {
    Fast,
    Hyper,
}

pub const BOTH_PATHS: [H1Path; 2] = [H1Path::Fast, H1Path::Hyper];

/// One data listener serving plain HTTP/1.1 on `path`.
pub fn listener_on(path: H1Path) -> String {
    format!("{LISTENER}http1_fast_path = {}\n", path == H1Path::Fast)
}

/// A `[routes.backends.health]` table that flips an endpoint after one check
/// (every 50 ms): for tests that break and mend backends.
pub const FAST_HEALTH: &str = "    [routes.backends.health]\n    path = \"/healthz\"\n    interval = \"50ms\"\n    timeout = \"100ms\"\n    unhealthy_threshold = 1\n    healthy_threshold = 1\n";

/// A `[timeouts]` table, e.g. `timeouts(&[("response_headers", "300ms")])`.
pub fn timeouts(entries: &[(&str, &str)]) -> String {
    let mut text = String::from("\n[timeouts]\n");
    for (key, value) in entries {
        text.push_str(&format!("{key} = \"{value}\"\n"));
    }
    text
}

/// A `[[routes.backends]]` entry; `weight` is written verbatim ("99.99").
pub fn backend(name: &str, weight: Option<&str>, endpoints: &[SocketAddr]) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    let mut text = format!("\n  [[routes.backends]]\n  name = \"{name}\"\n");
    if let Some(weight) = weight {
        text.push_str(&format!("  weight = {weight}\n"));
    }
    text.push_str(&format!("  endpoints = [{}]\n", endpoints.join(", ")));
    text
}

/// A `[[routes]]` entry. `matcher` is the inside of the `match` inline table
/// (`host = "a.example.com"`), empty for none; `extra` holds route-level lines
/// such as `retries = 0`.
pub fn route(name: &str, matcher: &str, extra: &str, backends: &[String]) -> String {
    let mut text = format!("\n[[routes]]\nname = \"{name}\"\n");
    if !matcher.is_empty() {
        text.push_str(&format!("match = {{ {matcher} }}\n"));
    }
    if !extra.is_empty() {
        text.push_str(extra);
        text.push('\n');
    }
    for backend in backends {
        text.push_str(backend);
    }
    text
}

/// A whole config: one listener and route `web` splitting between two fake
/// backends by the given weights, each backend named after its fake.
pub fn two_backend_config(
    weight_a: &str,
    a: &RunningOrigin,
    weight_b: &str,
    b: &RunningOrigin,
) -> String {
    two_backend_config_on(LISTENER, weight_a, a, weight_b, b)
}

/// [`two_backend_config`] behind `listener` (e.g. [`listener_on`]).
pub fn two_backend_config_on(
    listener: &str,
    weight_a: &str,
    a: &RunningOrigin,
    weight_b: &str,
    b: &RunningOrigin,
) -> String {
    let backends = [
        backend(&a.name, Some(weight_a), &[a.addr]),
        backend(&b.name, Some(weight_b), &[b.addr]),
    ];
    format!("{listener}{}", route("web", "", "", &backends))
}

/// A whole config: one listener and route `web` with one backend on these fakes.
pub fn single_backend_config(name: &str, fakes: &[&RunningOrigin]) -> String {
    single_backend_config_on(LISTENER, name, fakes)
}

/// [`single_backend_config`] behind `listener` (e.g. [`listener_on`]).
pub fn single_backend_config_on(listener: &str, name: &str, fakes: &[&RunningOrigin]) -> String {
    let addrs: Vec<SocketAddr> = fakes.iter().map(|f| f.addr).collect();
    format!(
        "{listener}{}",
        route("web", "", "", &[backend(name, None, &addrs)])
    )
}

/// A free port for a server this test starts next (nginx): bound to learn
/// it, then released for that server to bind.
pub async fn free_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr")
}

/// An address on which nothing listens: a socket bound to a free port and
/// never put to listening, so connects to it are refused. It stays bound
/// for the rest of the test binary (leaked on purpose): a released port
/// could be taken by another test's listener running in parallel, and the
/// "dead" endpoint would then answer.
pub async fn dead_addr() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    std::mem::forget(socket);
    addr
}
/// A `[[routes.backends]]` entry with endpoints written verbatim
/// (`"https://127.0.0.1:4443"`) and extra key lines (`protocol = "h2c"`).
pub fn backend_with(
    name: &str,
    weight: Option<&str>,
    endpoints: &[String],
    extra: &[&str],
) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let mut text = format!("\n  [[routes.backends]]\n  name = \"{name}\"\n");
    if let Some(weight) = weight {
        text.push_str(&format!("  weight = {weight}\n"));
    }
    text.push_str(&format!("  endpoints = [{}]\n", endpoints.join(", ")));
    for line in extra {
        text.push_str(&format!("  {line}\n"));
    }
    text
}
