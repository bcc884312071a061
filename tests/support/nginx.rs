//! `Nginx`: the system's real nginx as an h2c (prior knowledge) origin, in a
//! temp dir of its own (config, pid, logs, temp paths), killed on drop.
//!
//! nginx ends an HTTP/2 connection after `keepalive_requests` requests with a
//! GOAWAY: the real-world source of unprocessed streams.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::Method;
use tokio::net::TcpStream;

use super::PATIENCE;
use super::admin::TestDir;
use super::config_text::free_addr;

/// Where Debian puts nginx; `PATH` is searched too.
const DEBIAN_NGINX: &str = "/usr/sbin/nginx";

/// The access log's line: connection number, request number on it, method, status.
const LOG_FORMAT: &str = "$connection $connection_requests $request_method $status";

/// A running nginx serving `GET`/`POST /` with `200 ok\n` over h2c.
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: TestDir,
}

impl Nginx {
    /// Starts nginx on a free port; it sends GOAWAY after `keepalive_requests`
    /// requests on a connection. Panics, saying how to install it, when there
    /// is no nginx.
    pub async fn start_h2c(keepalive_requests: u32) -> Nginx {
        let binary = nginx_binary();
        let listen_suffix = listen_suffix(&binary);
        let dir = TestDir::new("nginx");
        let addr = free_addr().await;
        let conf = config(&dir.path, addr, listen_suffix, keepalive_requests);
        dir.write("nginx.conf", &conf);
        let mut command = Command::new(&binary);
        command
            // -p and -e: the compiled-in prefix and error log (/var/log/nginx)
            // are never touched, not even before the config is read.
            .arg("-p")
            .arg(&dir.path)
            .arg("-e")
            .arg(dir.file("error.log"))
            .arg("-c")
            .arg(dir.file("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut nginx = Nginx { addr, child, dir };
        nginx.wait_listening().await;
        nginx
    }

    /// `host:port`, as a sluicegate endpoint.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// How many connections nginx served requests on (each but the last one
    /// it ended with a GOAWAY after `keepalive_requests`).
    pub fn connections(&self) -> usize {
        let mut ids: Vec<String> = self
            .access_log()
            .iter()
            .filter_map(|line| line.split(' ').next().map(str::to_owned))
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    }

    /// How many `method` requests nginx answered with 200.
    pub fn answered(&self, method: &Method) -> usize {
        self.access_log()
            .iter()
            .filter(|line| {
                let mut fields = line.split(' ').skip(2);
                fields.next() == Some(method.as_str()) && fields.next() == Some("200")
            })
            .count()
    }

    /// The access log's lines: `connection request_on_it method status`.
    fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.file("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.file("error.log")).unwrap_or_default()
    }

    async fn wait_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "nginx exited at start ({status}); error.log:\n{}",
                    self.error_log()
                );
            }
            if TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not listen on {} within {PATIENCE:?}; error.log:\n{}",
                self.addr,
                self.error_log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nginx executable, or a panic that says what to install.
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    std::iter::once(PathBuf::from(DEBIAN_NGINX))
        .chain(on_path)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed (looked at {DEBIAN_NGINX} and on PATH): these tests \
                 use a real nginx as the HTTP/2 origin. Install it (`apt-get install nginx`; \
                 .ci/run does so through SYSTEM_PACKAGES)."
            )
        })
}

/// How `listen` turns on HTTP/2: nginx 1.25.1 moved it to `http2 on;`.
fn listen_suffix(binary: &Path) -> &'static str {
    let output = Command::new(binary)
        .arg("-v")
        .output()
        .unwrap_or_else(|e| panic!("{} -v: {e}", binary.display()));
    // "nginx version: nginx/1.22.1" on stderr.
    let text = String::from_utf8_lossy(&output.stderr);
    let version: Vec<u32> = text
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.parse().ok())
        .collect();
    if version.as_slice() >= [1, 25, 1].as_slice() {
        ";\n        http2 on"
    } else {
        " http2"
    }
}

fn config(dir: &Path, addr: SocketAddr, listen_suffix: &str, keepalive_requests: u32) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    log_format counts '{LOG_FORMAT}';
    access_log {dir}/access.log counts;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests {keepalive_requests};

    server {{
        listen {addr}{listen_suffix};
        location / {{
            return 200 "ok\n";
        }}
    }}
}}
"#
    )
}
