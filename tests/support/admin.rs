//! `FileProxy`: sluicegate started from a config FILE in a fresh temp dir, with
//! the admin API on its own port-0 listener, a token file, optionally a state
//! file; plus a small admin API client that reads answers either as JSON
//! `Value`s (to poke at odd shapes) or as the crate's own wire types
//! (`sluicegate::control::admin::api`), the ones the server writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use sluicegate::config::Config;
use sluicegate::control::admin::api::{ApiError, HistoryPage, RouteAnswer, RoutesAnswer};

use super::{Http1Client, RawConn, RawHead, Reply, TestProxy, empty, eventually_async, full, get};

/// File names inside the temp dir.
pub const CONFIG_FILE: &str = "sluicegate.toml";
pub const TOKEN_FILE: &str = "admin.token";
pub const STATE_FILE: &str = "state.json";

/// A fresh, uniquely named directory under the system temp dir, removed on drop.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "sluicegate-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create test dir {}: {e}", path.display()));
        TestDir { path }
    }

    /// The path of `name` inside the dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` (truncating it in place if it exists).
    pub fn write(&self, name: &str, contents: &str) {
        let path = self.file(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// The names of the files in the dir, sorted.
    pub fn file_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.path)
            .unwrap_or_else(|e| panic!("read dir {}: {e}", self.path.display()))
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A proxy started from `CONFIG_FILE` in a [`TestDir`], so `config.source` is
/// set and reloads work, with the admin API on its own port-0 listener.
///
/// Config bodies passed in hold listeners and routes only; the `[admin]`
/// table (`token_file`, and `state_file` when asked for) is appended here.
pub struct FileProxy {
    pub proxy: TestProxy,
    pub dir: TestDir,
    /// The first data listener.
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub token: String,
    pub config_path: PathBuf,
    state_file: bool,
}

impl FileProxy {
    /// Starts from `body` with a token file and no state file.
    pub async fn start(body: &str) -> FileProxy {
        FileProxy::start_in(TestDir::new("admin"), body, false).await
    }

    /// Starts from `body` with a token file and `state_file = "state.json"`.
    pub async fn start_with_state_file(body: &str) -> FileProxy {
        FileProxy::start_in(TestDir::new("state"), body, true).await
    }

    /// Starts from `body` with one named token (`[[admin.tokens]]`, role
    /// admin), so the history records `name` as the actor of its changes.
    pub async fn start_with_named_token(body: &str, name: &str) -> FileProxy {
        let dir = TestDir::new("named");
        let token = unique_token();
        dir.write(TOKEN_FILE, &format!("{token}\n"));
        dir.write(
            CONFIG_FILE,
            &format!(
                "{body}\n[[admin.tokens]]\nname = \"{name}\"\nrole = \"admin\"\ntoken_file = \"{TOKEN_FILE}\"\n"
            ),
        );
        FileProxy::launch(dir, token, false).await
    }

    /// Starts in `dir` (which may already hold files, e.g. a state file).
    pub async fn start_in(dir: TestDir, body: &str, state_file: bool) -> FileProxy {
        let token = unique_token();
        dir.write(TOKEN_FILE, &format!("{token}\n"));
        dir.write(CONFIG_FILE, &config_text(body, state_file));
        FileProxy::launch(dir, token, state_file).await
    }

    async fn launch(dir: TestDir, token: String, state_file: bool) -> FileProxy {
        let config_path = dir.file(CONFIG_FILE);
        let config = Config::load(&config_path).unwrap_or_else(|e| {
            let text = std::fs::read_to_string(&config_path).unwrap_or_default();
            panic!("test config is invalid:\n{e}\n--- config ---\n{text}")
        });
        let proxy = TestProxy::start_config(config, true).await;
        let admin_addr = proxy.admin_addr.expect("admin listener");
        let proxy = FileProxy {
            addr: proxy.addr,
            admin_addr,
            proxy,
            dir,
            token,
            config_path,
            state_file,
        };
        // `edge::run` runs in a spawned task: once the admin API answers, it
        // has set up the file watcher, so later edits of the file are seen.
        eventually_async("the admin API to answer /readyz", || async {
            proxy.admin_send(Method::GET, "/readyz", None, None).await.0 == StatusCode::OK
        })
        .await;
        proxy
    }

    /// Shuts down and starts again from the same dir (config, token and state
    /// files as they are now); the ports change.
    pub async fn restart(self) -> FileProxy {
        self.restart_then(None).await
    }

    /// Shuts down, rewrites the config file to `body` while stopped, and
    /// starts again.
    pub async fn restart_with_config(self, body: &str) -> FileProxy {
        let text = self.config_text(body);
        self.restart_then(Some(text)).await
    }

    async fn restart_then(self, new_config: Option<String>) -> FileProxy {
        let FileProxy {
            proxy,
            dir,
            token,
            state_file,
            ..
        } = self;
        proxy
            .shutdown()
            .await
            .expect("edge::run returned an error on shutdown");
        if let Some(text) = new_config {
            dir.write(CONFIG_FILE, &text);
        }
        FileProxy::launch(dir, token, state_file).await
    }

    /// Runs the real `sluicegate ctl ARGS` against this proxy with `token`
    /// (from the proxy's dir, the token in the environment cleared).
    pub async fn ctl(&self, token: &str, args: &[&str]) -> Output {
        let mut command = self.ctl_command(token, args);
        tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .expect("ctl did not finish within 30 s")
            .expect("run sluicegate ctl")
    }

    /// The command [`ctl`](Self::ctl) runs, for a test that reads its
    /// output while it runs.
    pub fn ctl_command(&self, token: &str, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluicegate"));
        command
            .arg("ctl")
            .arg("--admin")
            .arg(format!("http://{}", self.admin_addr))
            .arg("--token")
            .arg(token)
            .args(args)
            .env_remove("SLUICEGATE_ADMIN_TOKEN")
            // No generated token file to find there.
            .current_dir(&self.dir.path)
            .kill_on_drop(true);
        command
    }

    /// `body` with this proxy's `[admin]` table appended.
    pub fn config_text(&self, body: &str) -> String {
        config_text(body, self.state_file)
    }

    /// Rewrites the config file in place (truncate and write, same inode).
    pub fn write_config(&self, body: &str) {
        self.write_config_raw(&self.config_text(body));
    }

    /// Rewrites the config file in place with exactly `text`.
    pub fn write_config_raw(&self, text: &str) {
        self.dir.write(CONFIG_FILE, text);
    }

    /// Writes a temp file in the same dir and renames it over the config file.
    pub fn replace_config(&self, body: &str) {
        self.replace_config_bytes(self.config_text(body).as_bytes());
    }

    /// Replaces the config file with exactly `bytes`, atomically (temp file and
    /// rename), so the file watcher never reads half of it.
    pub fn replace_config_bytes(&self, bytes: &[u8]) {
        let tmp = self.dir.file(".sluicegate.toml.tmp");
        std::fs::write(&tmp, bytes).expect("write temp config");
        std::fs::rename(&tmp, &self.config_path).expect("rename over the config file");
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.file(STATE_FILE)
    }

    /// GET with the token; the body as JSON (or a JSON string for text bodies).
    pub async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        self.admin_send(Method::GET, path, None, Some(&self.token))
            .await
    }

    /// Sends `json_body` (none: empty body) with `Authorization: Bearer TOKEN`
    /// when `token` is given.
    pub async fn admin_send(
        &self,
        method: Method,
        path: &str,
        json_body: Option<&Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let body = json_body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
        let reply = self.admin_raw(method, path, body, token).await;
        (reply.status, reply_json(&reply))
    }

    /// Sends `body` verbatim (as `application/json`) and returns the whole reply.
    pub async fn admin_raw(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        token: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.admin_addr.to_string());
        if !body.is_empty() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(token) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = if body.is_empty() { empty() } else { full(body) };
        let req = req.body(body).expect("valid admin request");
        Http1Client::connect(self.admin_addr).await.send(req).await
    }

    /// Sends `METHOD path` with no body on a fresh connection that closes
    /// after it, and returns the head and every byte after it as sent, so a
    /// HEAD answer that carries a body shows.
    pub async fn admin_wire(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> (RawHead, Vec<u8>) {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.admin_addr
        );
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        let mut conn = RawConn::connect(self.admin_addr).await;
        conn.send(request.as_bytes()).await;
        let head = conn.read_head().await;
        (head, conn.read_to_close().await)
    }

    /// PUT /api/v1/routes/{route}/weights with the token.
    pub async fn put_weights(&self, route: &str, weights: &[(&str, f64)]) -> (StatusCode, Value) {
        let map: serde_json::Map<String, Value> = weights
            .iter()
            .map(|(name, pct)| ((*name).to_string(), Value::from(*pct)))
            .collect();
        let body = serde_json::json!({ "weights": map });
        self.admin_send(
            Method::PUT,
            &format!("/api/v1/routes/{route}/weights"),
            Some(&body),
            Some(&self.token),
        )
        .await
    }

    /// GET /api/v1/routes/{route}, asserting 200.
    pub async fn route(&self, route: &str) -> Value {
        let (status, body) = self.admin_get(&format!("/api/v1/routes/{route}")).await;
        assert_eq!(status, StatusCode::OK, "GET route {route}: {body}");
        body
    }

    /// GET `path` with the token, asserting 200, the answer read as `T`
    /// (one of the `api` types) from the body's bytes.
    pub async fn admin_read<T: DeserializeOwned>(&self, path: &str) -> T {
        let reply = self
            .admin_raw(Method::GET, path, Bytes::new(), Some(&self.token))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "GET {path}: {}", reply.text());
        parse_answer(&reply)
    }

    /// GET /api/v1/routes.
    pub async fn routes_answer(&self) -> RoutesAnswer {
        self.admin_read("/api/v1/routes").await
    }

    /// GET /api/v1/routes/{route}.
    pub async fn route_answer(&self, route: &str) -> RouteAnswer {
        self.admin_read(&format!("/api/v1/routes/{route}")).await
    }

    /// GET /api/v1/history with `query` (`""`, or `"limit=2&before=9"`).
    pub async fn history_page(&self, query: &str) -> HistoryPage {
        let path = match query {
            "" => "/api/v1/history".to_string(),
            query => format!("/api/v1/history?{query}"),
        };
        self.admin_read(&path).await
    }

    /// Sends like [`FileProxy::admin_send`] and expects a refusal: its status
    /// and `{"error": …}` body.
    pub async fn admin_refusal(
        &self,
        method: Method,
        path: &str,
        json_body: Option<&Value>,
        token: Option<&str>,
    ) -> (StatusCode, ApiError) {
        let body = json_body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
        let reply = self.admin_raw(method, path, body, token).await;
        assert!(
            !reply.status.is_success(),
            "{path}: expected a refusal, got {} {}",
            reply.status,
            reply.text()
        );
        (reply.status, parse_answer(&reply))
    }

    /// The desired weights of `route`, by backend name.
    pub async fn weights(&self, route: &str) -> BTreeMap<String, f64> {
        self.route_answer(route)
            .await
            .route
            .backends
            .into_iter()
            .map(|b| (b.name, b.desired_weight))
            .collect()
    }

    /// The revision GET /api/v1/routes reports.
    pub async fn revision(&self) -> u64 {
        self.routes_answer().await.revision
    }

    /// Polls (up to `PATIENCE`) until `route`'s desired weights are `expected`;
    /// returns how long that took.
    pub async fn wait_for_weights(&self, route: &str, expected: &[(&str, f64)]) -> Duration {
        let expected = weight_map(expected);
        eventually_async(
            &format!("route {route} to have weights {expected:?}"),
            || {
                let expected = expected.clone();
                async move { self.weights(route).await == expected }
            },
        )
        .await
    }

    /// The backend that answers a GET / on a fresh connection.
    pub async fn next_backend(&self) -> String {
        let reply = get(self.addr, "reload.test", "/").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "proxy reply: {}",
            reply.text()
        );
        reply.backend().expect("x-backend header")
    }
}

/// A command's exit code and output, for assertion messages.
pub fn describe_output(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `body` plus the `[admin]` table of a [`FileProxy`].
pub fn config_text(body: &str, state_file: bool) -> String {
    let mut text = format!("{body}\n[admin]\ntoken_file = \"{TOKEN_FILE}\"\n");
    if state_file {
        text.push_str(&format!("state_file = \"{STATE_FILE}\"\n"));
    }
    text
}

/// `[("blue", 75.0)]` as a map.
pub fn weight_map(weights: &[(&str, f64)]) -> BTreeMap<String, f64> {
    weights
        .iter()
        .map(|(name, pct)| ((*name).to_string(), *pct))
        .collect()
}

/// The `desired_weight` of every backend of a route's JSON view.
pub fn desired_weights(route: &Value) -> BTreeMap<String, f64> {
    route["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("no backends in {route}"))
        .iter()
        .map(|b| {
            let name = b["name"].as_str().expect("backend name").to_string();
            let weight = b["desired_weight"]
                .as_f64()
                .unwrap_or_else(|| panic!("no desired_weight in {b}"));
            (name, weight)
        })
        .collect()
}

/// A reply body as the wire type `T`, panicking with the body when it is
/// not one.
pub fn parse_answer<T: DeserializeOwned>(reply: &Reply) -> T {
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
        panic!(
            "not a {}: {e}\n{}",
            std::any::type_name::<T>(),
            reply.text()
        )
    })
}

/// A reply body as JSON; a body that is not JSON becomes a JSON string.
pub fn reply_json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|_| Value::String(reply.text()))
}

fn unique_token() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "t{:x}{:x}{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
