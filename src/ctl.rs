//! `sluicegate ctl`: the command-line client of the admin API (SPEC §1, §3).
//!
//! [`main`] resolves the token and runs one command on a current-thread
//! runtime. The work is in `execute`: turn the command into one HTTP request,
//! send it over a fresh HTTP/1.1 connection, and format the JSON answer as a
//! table (or pretty JSON with `--json`). Tests drive `execute` against a fake
//! admin server, so no binary has to be spawned.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// Where `ctl` looks for the admin API unless `--admin` says otherwise.
const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9901";
/// The environment variable read for the token when `--token` is absent.
const TOKEN_ENV: &str = "SLUICEGATE_ADMIN_TOKEN";
/// The token file sluicegate generates in its working directory (SPEC §3).
const TOKEN_FILE_NAME: &str = "sluicegate-admin.token";
const API_PREFIX: &str = "/api/v1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Covers the whole exchange; a reload re-reads and validates the config file.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `sluicegate ctl`.
#[derive(Debug, Args)]
#[command(
    after_help = "Token: --token, else --token-file, else $SLUICEGATE_ADMIN_TOKEN, else ./sluicegate-admin.token if it exists.\n\nExamples:\n  sluicegate ctl status\n  sluicegate ctl set web blue=75 green=25 --reason \"more green\"\n  sluicegate ctl promote web green\n  sluicegate ctl rollback web\n  sluicegate ctl history --route web --limit 10\n  sluicegate ctl --json status web | jq '.route.backends'"
)]
pub struct CtlArgs {
    /// Base URL of the admin API (http:// only).
    #[arg(long, global = true, value_name = "URL", default_value = DEFAULT_ADMIN_URL)]
    admin: String,
    /// Bearer token for the admin API.
    #[arg(long, global = true, value_name = "T")]
    token: Option<String>,
    /// File holding the token (default ./sluicegate-admin.token when it exists).
    #[arg(long, global = true, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Print the server's JSON answer, pretty-printed, instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Show routes: backends, desired and effective weights, endpoint health, canary.
    Status {
        /// Only this route.
        route: Option<String>,
    },
    /// Set a route's weights, e.g. `set web blue=75 green=25`.
    Set {
        /// Route name.
        route: String,
        /// Percent per backend, up to 2 decimals.
        #[arg(value_name = "BACKEND=PCT", required = true, value_parser = parse_backend_weight)]
        weights: Vec<BackendWeight>,
        /// Why, recorded in the history.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Refuse (409) unless the current revision is N.
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// Send 100% of a route's traffic to one backend.
    Promote {
        /// Route name.
        route: String,
        /// Backend to get 100%.
        backend: String,
        /// Why, recorded in the history.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Restore the route's weights of its previous revision (or of --to-revision).
    Rollback {
        /// Route name.
        route: String,
        /// Restore the weights this route had at revision N.
        #[arg(long, value_name = "N")]
        to_revision: Option<u64>,
    },
    /// List revisions, newest first.
    History {
        /// At most N revisions (server default 50).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Only revisions older than revision N (the page after this one).
        #[arg(long, value_name = "N")]
        before: Option<u64>,
        /// Only revisions of this route.
        #[arg(long, value_name = "ROUTE")]
        route: Option<String>,
    },
    /// Re-read the config file now.
    Reload,
    /// Control a route's canary: start, pause, resume, abort (back to baseline 100).
    Canary {
        action: CanaryAction,
        /// Route name.
        route: String,
    },
    /// Stop new requests to an endpoint; in-flight ones finish.
    Drain(EndpointArgs),
    /// Let a drained endpoint take new requests again.
    Undrain(EndpointArgs),
}

/// One endpoint of a backend of a route.
#[derive(Debug, Args)]
struct EndpointArgs {
    /// Route name.
    route: String,
    /// Backend the endpoint belongs to.
    backend: String,
    /// host:port as in the config.
    endpoint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CanaryAction {
    Start,
    Pause,
    Resume,
    Abort,
}

impl CanaryAction {
    fn as_str(self) -> &'static str {
        match self {
            CanaryAction::Start => "start",
            CanaryAction::Pause => "pause",
            CanaryAction::Resume => "resume",
            CanaryAction::Abort => "abort",
        }
    }
}

/// One `BACKEND=PCT` argument of `set`; basis points keep the 2 decimals exact.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BackendWeight {
    backend: String,
    basis_points: u32,
}

fn parse_backend_weight(arg: &str) -> Result<BackendWeight, String> {
    let Some((backend, percent)) = arg.split_once('=') else {
        return Err("expected BACKEND=PCT, like blue=75".to_string());
    };
    if backend.is_empty() {
        return Err("the backend name before '=' is empty".to_string());
    }
    let basis_points = parse_percent(percent).ok_or_else(|| {
        format!("{percent:?} is not a percent from 0 to 100 with at most 2 decimals")
    })?;
    Ok(BackendWeight {
        backend: backend.to_string(),
        basis_points,
    })
}

/// `75`, `12.5`, `0.01`, `75%` → basis points; no signs, exponents or 3rd decimal.
fn parse_percent(text: &str) -> Option<u32> {
    let text = text.strip_suffix('%').unwrap_or(text);
    let (whole, fraction) = match text.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (text, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 3 || fraction.len() > 2 {
        return None;
    }
    if !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let whole: u32 = whole.parse().ok()?;
    let hundredths: u32 = format!("{fraction:0<2}").parse().ok()?;
    let basis_points = whole * 100 + hundredths;
    (basis_points <= 10_000).then_some(basis_points)
}

/// Whole percents go out as integers (`75`), others as decimals (`12.5`).
fn percent_json(basis_points: u32) -> Value {
    if basis_points.is_multiple_of(100) {
        json!(basis_points / 100)
    } else {
        json!(f64::from(basis_points) / 100.0)
    }
}

/// Everything that can go wrong in one `ctl` run; each is one clear message.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad arguments, found before any request.
    #[error("{0}")]
    Usage(String),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot read the token file {}: {source}", .path.display())]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach the admin API at {url}: {reason} (is sluicegate running? --admin)")]
    Unreachable { url: String, reason: String },
    #[error("the admin API at {url} did not answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error(
        "unauthorized: pass --token, set SLUICEGATE_ADMIN_TOKEN, or run where sluicegate-admin.token is{}",
        rejected_note(.sent.as_ref())
    )]
    Unauthorized { sent: Option<TokenSource> },
    /// The server refused the request: its status, message and detail lines.
    #[error("{}", api_error_text(*.status, .message, .details))]
    Api {
        status: StatusCode,
        message: String,
        details: Vec<String>,
    },
    #[error("unexpected answer from the admin API: {0}")]
    Protocol(String),
}

fn rejected_note(sent: Option<&TokenSource>) -> String {
    match sent {
        Some(source) => format!(" (the token from {source} was rejected)"),
        None => " (no token was sent)".to_string(),
    }
}

fn api_error_text(status: StatusCode, message: &str, details: &[String]) -> String {
    let mut text = format!("{status}: {message}");
    for line in details {
        text.push('\n');
        text.push_str(line);
    }
    text
}

/// The bearer token and where it came from (named in 401 messages).
#[derive(Clone, PartialEq, Eq)]
struct Token {
    value: String,
    source: TokenSource,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// Where the token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Flag,
    Env,
    File(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Flag => f.write_str("--token"),
            TokenSource::Env => write!(f, "${TOKEN_ENV}"),
            TokenSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `--token`, else `--token-file`, else the environment, else the default
/// file if it exists: explicit flags win over the environment. Empty values
/// count as absent; a named file must be readable and hold a token.
fn resolve_token(
    flag: Option<&str>,
    env: Option<&str>,
    token_file: Option<&Path>,
    default_file: &Path,
) -> Result<Option<Token>, CtlError> {
    let given = |value: Option<&str>, source: TokenSource| {
        let value = value?.trim();
        (!value.is_empty()).then(|| Token {
            value: value.to_string(),
            source,
        })
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| CtlError::TokenFile {
            path: path.to_path_buf(),
            source,
        })
    };
    if let Some(token) = given(flag, TokenSource::Flag) {
        return Ok(Some(token));
    }
    if let Some(path) = token_file {
        let text = read(path)?;
        return given(Some(&text), TokenSource::File(path.to_path_buf()))
            .map(Some)
            .ok_or_else(|| CtlError::Usage(format!("the token file {} is empty", path.display())));
    }
    if let Some(token) = given(env, TokenSource::Env) {
        return Ok(Some(token));
    }
    if default_file.is_file() {
        let text = read(default_file)?;
        return Ok(given(
            Some(&text),
            TokenSource::File(default_file.to_path_buf()),
        ));
    }
    Ok(None)
}

/// Runs one `ctl` command.
pub fn main(args: CtlArgs) -> ExitCode {
    let env_token = std::env::var(TOKEN_ENV).ok();
    let token = resolve_token(
        args.token.as_deref(),
        env_token.as_deref(),
        args.token_file.as_deref(),
        Path::new(TOKEN_FILE_NAME),
    );
    let result = match token {
        Ok(token) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(execute(&args, token)),
            Err(e) => Err(CtlError::Runtime(e)),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(text) => {
            use std::io::Write as _;
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluicegate ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `args.command` against `args.admin` and returns what to print.
async fn execute(args: &CtlArgs, token: Option<Token>) -> Result<String, CtlError> {
    let client = Client::new(&args.admin, token)?;
    let call = ApiCall::for_command(&args.command)?;
    let body = client.send(&call).await?;
    if args.json {
        let answer: Value = decode(&body)?;
        let mut text =
            serde_json::to_string_pretty(&answer).map_err(|e| CtlError::Protocol(e.to_string()))?;
        text.push('\n');
        return Ok(text);
    }
    format_answer(&args.command, &body)
}

/// One request to the admin API.
#[derive(Debug, PartialEq)]
struct ApiCall {
    method: Method,
    /// Path and query under the base URL, starting with `/api/v1`.
    path: String,
    body: Option<Value>,
}

impl ApiCall {
    fn for_command(command: &CtlCommand) -> Result<ApiCall, CtlError> {
        let get = |path: String| ApiCall {
            method: Method::GET,
            path,
            body: None,
        };
        let post = |path: String, body: Option<Value>| ApiCall {
            method: Method::POST,
            path,
            body,
        };
        let call = match command {
            CtlCommand::Status { route: None } => get(format!("{API_PREFIX}/routes")),
            CtlCommand::Status { route: Some(route) } => get(route_path(route)?),
            CtlCommand::Set {
                route,
                weights,
                reason,
                if_revision,
            } => {
                let mut map = serde_json::Map::new();
                for weight in weights {
                    let value = percent_json(weight.basis_points);
                    if map.insert(weight.backend.clone(), value).is_some() {
                        return Err(CtlError::Usage(format!(
                            "backend {:?} is given more than once",
                            weight.backend
                        )));
                    }
                }
                let mut body = json!({ "weights": map });
                if let Some(reason) = reason {
                    body["reason"] = json!(reason);
                }
                if let Some(revision) = if_revision {
                    body["if_revision"] = json!(revision);
                }
                ApiCall {
                    method: Method::PUT,
                    path: format!("{}/weights", route_path(route)?),
                    body: Some(body),
                }
            }
            CtlCommand::Promote {
                route,
                backend,
                reason,
            } => {
                let mut body = json!({ "backend": non_empty(backend, "backend")? });
                if let Some(reason) = reason {
                    body["reason"] = json!(reason);
                }
                post(format!("{}/promote", route_path(route)?), Some(body))
            }
            CtlCommand::Rollback { route, to_revision } => {
                let body = match to_revision {
                    Some(revision) => json!({ "to_revision": revision }),
                    None => json!({}),
                };
                post(format!("{}/rollback", route_path(route)?), Some(body))
            }
            CtlCommand::History {
                limit,
                before,
                route,
            } => {
                let mut query = Vec::new();
                if let Some(limit) = limit {
                    query.push(format!("limit={limit}"));
                }
                if let Some(before) = before {
                    query.push(format!("before={before}"));
                }
                if let Some(route) = route {
                    query.push(format!("route={}", encode_component(route)));
                }
                let mut path = format!("{API_PREFIX}/history");
                if !query.is_empty() {
                    path = format!("{path}?{}", query.join("&"));
                }
                get(path)
            }
            CtlCommand::Reload => post(format!("{API_PREFIX}/reload"), None),
            CtlCommand::Canary { action, route } => post(
                format!("{}/canary/{}", route_path(route)?, action.as_str()),
                None,
            ),
            CtlCommand::Drain(target) => post(endpoint_path(target, "drain")?, None),
            CtlCommand::Undrain(target) => post(endpoint_path(target, "undrain")?, None),
        };
        Ok(call)
    }
}

fn endpoint_path(target: &EndpointArgs, action: &str) -> Result<String, CtlError> {
    Ok(format!(
        "{}/backends/{}/endpoints/{}/{action}",
        route_path(&target.route)?,
        encode_component(non_empty(&target.backend, "backend")?),
        encode_component(non_empty(&target.endpoint, "endpoint")?),
    ))
}

fn route_path(route: &str) -> Result<String, CtlError> {
    let route = non_empty(route, "route")?;
    Ok(format!("{API_PREFIX}/routes/{}", encode_component(route)))
}

fn non_empty<'a>(value: &'a str, what: &str) -> Result<&'a str, CtlError> {
    if value.is_empty() {
        return Err(CtlError::Usage(format!("the {what} name is empty")));
    }
    Ok(value)
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a
/// value (`127.0.0.1:8082`, `a/b`) stays one path segment or query value.
fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The admin API's address and the token sent with every request.
struct Client {
    /// As the user gave it, for messages.
    url: String,
    /// `host:port`, for connecting and the Host header.
    authority: String,
    /// Path the API is mounted under, without a trailing slash (usually empty).
    base_path: String,
    token: Option<Token>,
}

impl Client {
    fn new(url: &str, token: Option<Token>) -> Result<Client, CtlError> {
        let bad = |why: &str| CtlError::Usage(format!("--admin {url:?}: {why}"));
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(bad("only http:// URLs are supported")),
            None => url,
        };
        if rest.contains(['?', '#']) {
            return Err(bad("a query or fragment is not allowed"));
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        let parsed: http::uri::Authority = authority
            .parse()
            .map_err(|_| bad("expected http://HOST:PORT"))?;
        if authority.contains('@') {
            return Err(bad("user info is not allowed"));
        }
        let port = parsed.port_u16().unwrap_or(80);
        Ok(Client {
            url: url.to_string(),
            authority: format!("{}:{port}", parsed.host()),
            base_path: path.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// Sends `call` and returns the JSON body of a 2xx, or the error it means.
    async fn send(&self, call: &ApiCall) -> Result<Bytes, CtlError> {
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(call))
            .await
            .map_err(|_| CtlError::Timeout {
                url: self.url.clone(),
            })??;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return match json {
                Some(_) => Ok(body),
                None => Err(CtlError::Protocol(format!(
                    "{status} with a body that is not JSON"
                ))),
            };
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(CtlError::Unauthorized {
                sent: self.token.as_ref().map(|t| t.source.clone()),
            });
        }
        Err(api_error(status, json.as_ref(), &body))
    }

    async fn exchange(&self, call: &ApiCall) -> Result<(StatusCode, Bytes), CtlError> {
        let unreachable = |reason: String| CtlError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| unreachable("connect timed out".to_string()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });

        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(format!("{}{}", self.base_path, call.path))
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.value));
        }
        let body = match &call.body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| CtlError::Usage(format!("cannot build the request: {e}")))?;

        let lost = |e: hyper::Error| CtlError::Protocol(format!("{}: {e}", self.url));
        let response = sender.send_request(request).await.map_err(lost)?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(lost)?;
        Ok((status, body.to_bytes()))
    }
}

/// `{"error": "...", "errors": [...]}` → message and detail lines; a body
/// that is not JSON hints that `--admin` points at something else.
fn api_error(status: StatusCode, json: Option<&Value>, body: &[u8]) -> CtlError {
    let message = json.and_then(|j| j.get("error")).and_then(Value::as_str);
    let details = json
        .and_then(|j| j.get("errors"))
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let message = match message {
        Some(message) => message.to_string(),
        None => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(200).collect();
            let what = if text.is_empty() {
                "no error message".to_string()
            } else {
                format!("{text:?}")
            };
            format!("{what} (not an admin API answer; is --admin the admin address?)")
        }
    };
    CtlError::Api {
        status,
        message,
        details,
    }
}

// The answers' shapes (SPEC §3). Unknown fields are ignored so a newer
// server still works with this client.

#[derive(Debug, Deserialize)]
struct RoutesAnswer {
    revision: u64,
    routes: Vec<RouteView>,
}

#[derive(Debug, Deserialize)]
struct RouteAnswer {
    revision: Option<u64>,
    route: RouteView,
}

#[derive(Debug, Deserialize)]
struct RouteView {
    name: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default, rename = "override")]
    admin_override: bool,
    #[serde(default)]
    backends: Vec<BackendView>,
    #[serde(default)]
    canary: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct BackendView {
    name: String,
    desired_weight: f64,
    effective_weight: f64,
    #[serde(default)]
    endpoints: Vec<EndpointView>,
}

#[derive(Debug, Deserialize)]
struct EndpointView {
    address: String,
    healthy: bool,
    #[serde(default)]
    draining: bool,
}

#[derive(Debug, Deserialize)]
struct HistoryAnswer {
    revisions: Vec<RevisionView>,
    #[serde(default)]
    next_before: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct RevisionView {
    revision: u64,
    time: String,
    #[serde(default)]
    route: Option<String>,
    /// `None` for a change of the whole config.
    #[serde(default)]
    weights: Option<WeightList>,
    source: String,
    #[serde(default)]
    reason: Option<String>,
}

/// A JSON map of backend → percent, in the server's order.
#[derive(Debug, Default)]
struct WeightList(Vec<(String, f64)>);

impl<'de> Deserialize<'de> for WeightList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> serde::de::Visitor<'de> for ListVisitor {
            type Value = WeightList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of backend name to percent")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<WeightList, A::Error> {
                let mut weights = Vec::new();
                while let Some(entry) = map.next_entry::<String, f64>()? {
                    weights.push(entry);
                }
                Ok(WeightList(weights))
            }
        }
        deserializer.deserialize_map(ListVisitor)
    }
}

#[derive(Debug, Deserialize)]
struct ReloadAnswer {
    revision: u64,
    changed: bool,
    /// Not in SPEC §3, but sent by the server: names of the changed routes.
    #[serde(default)]
    routes_changed: Vec<String>,
}

/// Typed answers are read from the bytes, not a `Value`, to keep the
/// server's backend order in weight maps.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CtlError> {
    serde_json::from_slice(body).map_err(|e| CtlError::Protocol(e.to_string()))
}

/// The human-readable output of `command` for the server's `answer`.
fn format_answer(command: &CtlCommand, answer: &[u8]) -> Result<String, CtlError> {
    Ok(match command {
        CtlCommand::Status { route: None } => {
            let answer: RoutesAnswer = decode(answer)?;
            format_status(Some(answer.revision), &answer.routes)
        }
        CtlCommand::Status { route: Some(_) } => {
            let answer: RouteAnswer = decode(answer)?;
            format_status(answer.revision, std::slice::from_ref(&answer.route))
        }
        CtlCommand::Set { .. } | CtlCommand::Promote { .. } | CtlCommand::Rollback { .. } => {
            let answer: RouteAnswer = decode(answer)?;
            format_confirmation(&answer)
        }
        CtlCommand::Canary { .. } => {
            let answer: RouteAnswer = decode(answer)?;
            let mut text = format_confirmation(&answer);
            let canary = match &answer.route.canary {
                Some(canary) if !canary.is_null() => format_canary(canary),
                _ => "none".to_string(),
            };
            let _ = writeln!(text, "{}: canary {canary}", answer.route.name);
            text
        }
        CtlCommand::Drain(target) | CtlCommand::Undrain(target) => {
            let answer: RouteAnswer = decode(answer)?;
            let what = match command {
                CtlCommand::Drain(_) => "draining",
                _ => "taking new requests again:",
            };
            format!(
                "{}: {what} {} {}\n",
                answer.route.name, target.backend, target.endpoint
            )
        }
        CtlCommand::History { .. } => format_history(&decode(answer)?),
        CtlCommand::Reload => {
            let answer: ReloadAnswer = decode(answer)?;
            let change = match (answer.changed, answer.routes_changed.is_empty()) {
                (false, _) => ", nothing changed".to_string(),
                (true, true) => String::new(),
                (true, false) => format!(", changed: {}", answer.routes_changed.join(" ")),
            };
            format!("config reloaded{change} (revision {})\n", answer.revision)
        }
    })
}

/// `web: blue=75 green=25 (revision 14)`, plus the effective weights when
/// failover or drain make them differ.
fn format_confirmation(answer: &RouteAnswer) -> String {
    let route = &answer.route;
    let desired = weights_text(route.backends.iter().map(|b| (&b.name, b.desired_weight)));
    let mut text = format!("{}: {desired}", route.name);
    if let Some(revision) = answer.revision {
        let _ = write!(text, " (revision {revision})");
    }
    if route
        .backends
        .iter()
        .any(|b| b.desired_weight != b.effective_weight)
    {
        let effective = weights_text(route.backends.iter().map(|b| (&b.name, b.effective_weight)));
        let _ = write!(text, "; effective now {effective}");
    }
    text.push('\n');
    text
}

fn weights_text<'a>(weights: impl Iterator<Item = (&'a String, f64)>) -> String {
    weights
        .map(|(name, percent)| format!("{name}={}", format_percent(percent)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One block per route: name and match, a backend table, then notes.
fn format_status(revision: Option<u64>, routes: &[RouteView]) -> String {
    let mut text = String::new();
    if let Some(revision) = revision {
        let _ = writeln!(text, "revision {revision}");
    }
    if routes.is_empty() {
        text.push_str("no routes\n");
    }
    for route in routes {
        let host = match &route.host {
            Some(host) => format!("host {host}"),
            None => "any host".to_string(),
        };
        let prefix = route.path_prefix.as_deref().unwrap_or("/");
        let _ = writeln!(text, "\n{}  {host}, prefix {prefix}", route.name);
        let rows: Vec<Vec<String>> = route
            .backends
            .iter()
            .map(|backend| {
                vec![
                    backend.name.clone(),
                    format_percent(backend.desired_weight),
                    format_percent(backend.effective_weight),
                    endpoints_summary(&backend.endpoints),
                ]
            })
            .collect();
        text.push_str(&table(
            "  ",
            &["BACKEND", "DESIRED", "EFFECTIVE", "ENDPOINTS"],
            &rows,
        ));
        for backend in &route.backends {
            for endpoint in &backend.endpoints {
                if !endpoint.healthy {
                    let _ = writeln!(text, "  unhealthy: {} {}", backend.name, endpoint.address);
                }
                if endpoint.draining {
                    let _ = writeln!(text, "  draining: {} {}", backend.name, endpoint.address);
                }
            }
        }
        if route.admin_override {
            text.push_str("  override: admin\n");
        }
        if let Some(canary) = route.canary.as_ref().filter(|c| !c.is_null()) {
            let _ = writeln!(text, "  canary: {}", format_canary(canary));
        }
    }
    text
}

/// `healthy/total`, and how many drain.
fn endpoints_summary(endpoints: &[EndpointView]) -> String {
    let healthy = endpoints.iter().filter(|e| e.healthy).count();
    let draining = endpoints.iter().filter(|e| e.draining).count();
    let mut text = format!("{healthy}/{}", endpoints.len());
    if draining > 0 {
        let _ = write!(text, ", {draining} draining");
    }
    text
}

/// `running, step 2, weight 5`, then any other plain fields the server sends.
fn format_canary(canary: &Value) -> String {
    let Some(fields) = canary.as_object() else {
        return scalar_text(canary, false);
    };
    let mut parts = Vec::new();
    if let Some(state) = fields.get("state") {
        parts.push(scalar_text(state, false));
    }
    for (key, value) in fields {
        if key == "state" || value.is_object() || value.is_array() || value.is_null() {
            continue;
        }
        let is_percent = key.contains("weight") || key.contains("percent");
        parts.push(format!("{key} {}", scalar_text(value, is_percent)));
    }
    parts.join(", ")
}

fn scalar_text(value: &Value, is_percent: bool) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if is_percent => n.as_f64().map_or_else(|| n.to_string(), format_percent),
        other => other.to_string(),
    }
}

fn format_history(answer: &HistoryAnswer) -> String {
    if answer.revisions.is_empty() {
        return "no revisions\n".to_string();
    }
    let rows: Vec<Vec<String>> = answer
        .revisions
        .iter()
        .map(|r| {
            vec![
                r.revision.to_string(),
                r.time.clone(),
                r.route.clone().unwrap_or_else(|| "-".to_string()),
                r.source.clone(),
                r.weights.as_ref().map_or_else(
                    || "-".to_string(),
                    |w| weights_text(w.0.iter().map(|(name, pct)| (name, *pct))),
                ),
                r.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut text = table(
        "",
        &["REV", "TIME", "ROUTE", "SOURCE", "WEIGHTS", "REASON"],
        &rows,
    );
    if let Some(before) = answer.next_before {
        let _ = writeln!(text, "(older revisions: --before {before})");
    }
    text
}

/// Percents with at most 2 decimals and no trailing zeros: 90, 12.5, 0.01.
fn format_percent(value: f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// Left-aligned columns two spaces apart, each line prefixed by `indent`.
fn table(indent: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = indent.to_string();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    fn parse(argv: &[&str]) -> Result<CtlArgs, clap::Error> {
        let argv = std::iter::once("ctl").chain(argv.iter().copied());
        TestCli::try_parse_from(argv).map(|cli| cli.ctl)
    }

    fn flag_token(value: &str) -> Option<Token> {
        Some(Token {
            value: value.to_string(),
            source: TokenSource::Flag,
        })
    }

    // ---- BACKEND=PCT ----

    #[test]
    fn backend_weight_parses_whole_and_two_decimal_percents() {
        let weight = |backend: &str, basis_points| BackendWeight {
            backend: backend.to_string(),
            basis_points,
        };
        assert_eq!(parse_backend_weight("blue=75"), Ok(weight("blue", 7500)));
        assert_eq!(
            parse_backend_weight("green=12.5"),
            Ok(weight("green", 1250))
        );
        assert_eq!(parse_backend_weight("g=0.01"), Ok(weight("g", 1)));
        assert_eq!(parse_backend_weight("g=100.00"), Ok(weight("g", 10_000)));
        assert_eq!(parse_backend_weight("g=0"), Ok(weight("g", 0)));
        assert_eq!(parse_backend_weight("g=25%"), Ok(weight("g", 2500)));
    }

    #[test]
    fn malformed_backend_weights_are_rejected() {
        for bad in [
            "blue",
            "=75",
            "blue=",
            "blue=abc",
            "blue=-5",
            "blue=1e2",
            "blue=100.01",
            "blue=101",
            "blue=12.345",
            "blue=75.",
            "blue=.5",
            "blue=NaN",
            "blue= 75",
        ] {
            assert!(parse_backend_weight(bad).is_err(), "{bad} was accepted");
        }
        let message = parse_backend_weight("blue").unwrap_err();
        assert!(message.contains("BACKEND=PCT"), "{message}");
    }

    #[test]
    fn set_with_a_malformed_weight_fails_at_parse_time() {
        let err = parse(&["set", "web", "blue=75", "green"]).unwrap_err();
        assert!(err.to_string().contains("BACKEND=PCT"), "{err}");
        assert!(
            parse(&["set", "web"]).is_err(),
            "set needs at least one weight"
        );
    }

    #[test]
    fn set_body_sends_whole_percents_as_integers() {
        let args = parse(&[
            "set",
            "web",
            "blue=75",
            "green=12.5",
            "red=12.5",
            "--reason",
            "shift",
            "--if-revision",
            "12",
        ])
        .unwrap();
        let call = ApiCall::for_command(&args.command).unwrap();
        assert_eq!(call.method, Method::PUT);
        assert_eq!(call.path, "/api/v1/routes/web/weights");
        let body = call.body.unwrap().to_string();
        assert_eq!(
            body,
            r#"{"if_revision":12,"reason":"shift","weights":{"blue":75,"green":12.5,"red":12.5}}"#
        );
    }

    #[test]
    fn set_with_a_repeated_backend_fails_before_any_request() {
        let args = parse(&["set", "web", "blue=50", "blue=50"]).unwrap();
        let err = ApiCall::for_command(&args.command).unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let args = parse(&["status", "web", "--json", "--admin", "http://h:1"]).unwrap();
        assert!(args.json);
        assert_eq!(args.admin, "http://h:1");
        let args = parse(&["status"]).unwrap();
        assert_eq!(args.admin, DEFAULT_ADMIN_URL);
    }

    // ---- URLs ----

    #[test]
    fn endpoints_are_percent_encoded_into_one_segment() {
        assert_eq!(encode_component("127.0.0.1:8082"), "127.0.0.1%3A8082");
        assert_eq!(encode_component("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_component("[::1]:80"), "%5B%3A%3A1%5D%3A80");
        assert_eq!(encode_component("web-1_x.~"), "web-1_x.~");
        assert_eq!(encode_component("é"), "%C3%A9");
        let args = parse(&["drain", "web", "green", "https://10.0.0.5:8443"]).unwrap();
        let call = ApiCall::for_command(&args.command).unwrap();
        assert_eq!(
            call.path,
            "/api/v1/routes/web/backends/green/endpoints/https%3A%2F%2F10.0.0.5%3A8443/drain"
        );
    }

    #[test]
    fn commands_map_to_the_admin_api() {
        let path = |argv: &[&str]| {
            let call = ApiCall::for_command(&parse(argv).unwrap().command).unwrap();
            (call.method, call.path, call.body.map(|b| b.to_string()))
        };
        assert_eq!(
            path(&["status"]),
            (Method::GET, "/api/v1/routes".into(), None)
        );
        assert_eq!(
            path(&["promote", "web", "green"]),
            (
                Method::POST,
                "/api/v1/routes/web/promote".into(),
                Some(r#"{"backend":"green"}"#.into())
            )
        );
        assert_eq!(
            path(&["rollback", "web"]),
            (
                Method::POST,
                "/api/v1/routes/web/rollback".into(),
                Some("{}".into())
            )
        );
        assert_eq!(
            path(&["rollback", "web", "--to-revision", "7"]).2,
            Some(r#"{"to_revision":7}"#.into())
        );
        assert_eq!(
            path(&["history", "--limit", "5", "--route", "a b"]).1,
            "/api/v1/history?limit=5&route=a%20b"
        );
        assert_eq!(path(&["history"]).1, "/api/v1/history");
        assert_eq!(
            path(&["history", "--before", "9"]).1,
            "/api/v1/history?before=9"
        );
        assert_eq!(
            path(&["promote", "web", "green", "--reason", "ok"]).2,
            Some(r#"{"backend":"green","reason":"ok"}"#.into())
        );
        assert_eq!(
            path(&["reload"]),
            (Method::POST, "/api/v1/reload".into(), None)
        );
        assert_eq!(
            path(&["undrain", "web", "green", "127.0.0.1:8082"]).1,
            "/api/v1/routes/web/backends/green/endpoints/127.0.0.1%3A8082/undrain"
        );
        assert_eq!(
            path(&["canary", "pause", "web"]).1,
            "/api/v1/routes/web/canary/pause"
        );
        assert!(parse(&["canary", "explode", "web"]).is_err());
        assert!(parse(&["history", "--limit", "0"]).is_err());
    }

    #[test]
    fn admin_urls_are_parsed_or_refused() {
        let client = Client::new("http://127.0.0.1:9901", None).unwrap();
        assert_eq!(
            (client.authority.as_str(), client.base_path.as_str()),
            ("127.0.0.1:9901", "")
        );
        let client = Client::new("http://localhost/admin/", None).unwrap();
        assert_eq!(
            (client.authority.as_str(), client.base_path.as_str()),
            ("localhost:80", "/admin")
        );
        let client = Client::new("[::1]:9901", None).unwrap();
        assert_eq!(client.authority, "[::1]:9901");
        for bad in [
            "https://127.0.0.1:9901",
            "http://",
            "http://u:p@h:1",
            "http://h:1/?x",
        ] {
            assert!(Client::new(bad, None).is_err(), "{bad} was accepted");
        }
    }

    // ---- tables ----

    fn sample_route() -> Value {
        json!({
            "name": "web", "host": "shop.example.com", "path_prefix": "/", "override": true,
            "backends": [
                {"name": "blue", "desired_weight": 87.5, "effective_weight": 100.0, "endpoints": [
                    {"address": "127.0.0.1:8081", "healthy": true, "draining": false},
                    {"address": "127.0.0.1:8083", "healthy": true, "draining": true}]},
                {"name": "green", "desired_weight": 12.5, "effective_weight": 0.0, "endpoints": [
                    {"address": "127.0.0.1:8082", "healthy": false, "draining": false}]}
            ],
            "canary": {"state": "running", "step": 2, "weight": 5.0}
        })
    }

    #[test]
    fn percents_print_without_trailing_zeros() {
        assert_eq!(format_percent(90.0), "90");
        assert_eq!(format_percent(12.5), "12.5");
        assert_eq!(format_percent(0.01), "0.01");
        assert_eq!(format_percent(100.0), "100");
        assert_eq!(format_percent(0.0), "0");
        assert_eq!(format_percent(-0.0), "0");
        assert_eq!(format_percent(33.333333), "33.33");
    }

    #[test]
    fn status_prints_a_block_per_route() {
        let args = parse(&["status"]).unwrap();
        let answer = json!({"revision": 13, "routes": [sample_route(), {
            "name": "api", "host": null, "path_prefix": "/api", "override": false,
            "backends": [{"name": "v1", "desired_weight": 100.0, "effective_weight": 100.0,
                "endpoints": [{"address": "10.0.0.1:80", "healthy": true, "draining": false}]}],
            "canary": null
        }]});
        let text = format_answer(&args.command, answer.to_string().as_bytes()).unwrap();
        let expected = "\
revision 13

web  host shop.example.com, prefix /
  BACKEND  DESIRED  EFFECTIVE  ENDPOINTS
  blue     87.5     100        2/2, 1 draining
  green    12.5     0          0/1
  draining: blue 127.0.0.1:8083
  unhealthy: green 127.0.0.1:8082
  override: admin
  canary: running, step 2, weight 5

api  any host, prefix /api
  BACKEND  DESIRED  EFFECTIVE  ENDPOINTS
  v1       100      100        1/1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn history_prints_one_row_per_revision_in_the_servers_backend_order() {
        let args = parse(&["history"]).unwrap();
        // Raw text: the weights' key order (green before blue) must survive.
        let answer = r#"{"revisions": [
            {"revision": 14, "time": "2026-11-23T10:00:00Z", "route": "web",
             "weights": {"green": 25.0, "blue": 75.0}, "previous": {"green": 10.0, "blue": 90.0},
             "source": "admin", "reason": "more green"},
            {"revision": 1, "time": "2026-11-23T09:00:00Z", "route": null,
             "weights": null, "previous": null, "source": "file", "reason": ""}
        ], "next_before": 1}"#;
        let text = format_answer(&args.command, answer.as_bytes()).unwrap();
        let expected = "\
REV  TIME                  ROUTE  SOURCE  WEIGHTS           REASON
14   2026-11-23T10:00:00Z  web    admin   green=25 blue=75  more green
1    2026-11-23T09:00:00Z  -      file    -
(older revisions: --before 1)
";
        assert_eq!(text, expected);
        let empty = br#"{"revisions": [], "next_before": null}"#;
        assert_eq!(
            format_answer(&args.command, empty).unwrap(),
            "no revisions\n"
        );
    }

    #[test]
    fn mutations_print_a_one_line_confirmation() {
        let args = parse(&["set", "web", "blue=75", "green=25"]).unwrap();
        let answer = json!({"revision": 14, "route": {"name": "web", "host": null, "path_prefix": "/",
            "override": true, "canary": null, "backends": [
                {"name": "blue", "desired_weight": 75.0, "effective_weight": 75.0, "endpoints": []},
                {"name": "green", "desired_weight": 25.0, "effective_weight": 25.0, "endpoints": []}]}});
        let text = format_answer(&args.command, answer.to_string().as_bytes()).unwrap();
        assert_eq!(text, "web: blue=75 green=25 (revision 14)\n");

        let answer = json!({"revision": 15, "route": sample_route()});
        let text = format_answer(&args.command, answer.to_string().as_bytes()).unwrap();
        assert_eq!(
            text,
            "web: blue=87.5 green=12.5 (revision 15); effective now blue=100 green=0\n"
        );

        let reload = parse(&["reload"]).unwrap();
        let text =
            format_answer(&reload.command, br#"{"revision": 15, "changed": false}"#).unwrap();
        assert_eq!(text, "config reloaded, nothing changed (revision 15)\n");
        let answer = br#"{"revision": 16, "changed": true, "routes_changed": ["web", "api"]}"#;
        let text = format_answer(&reload.command, answer).unwrap();
        assert_eq!(text, "config reloaded, changed: web api (revision 16)\n");
    }

    #[test]
    fn an_answer_of_the_wrong_shape_is_a_protocol_error() {
        let args = parse(&["status"]).unwrap();
        let err = format_answer(&args.command, br#"{"routes": "nope"}"#).unwrap_err();
        assert!(matches!(err, CtlError::Protocol(_)), "{err:?}");
    }

    // ---- token ----

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("sluicegate-ctl-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn token_comes_from_flag_then_token_file_then_env_then_default_file() {
        let dir = TempDir::new("token-order");
        let named = dir.0.join("named.token");
        let default = dir.0.join(TOKEN_FILE_NAME);
        std::fs::write(&named, "from-named\n").unwrap();
        std::fs::write(&default, "  from-default \n").unwrap();
        let value = |t: Result<Option<Token>, CtlError>| t.unwrap().map(|t| (t.value, t.source));

        assert_eq!(
            value(resolve_token(Some("f"), Some("e"), Some(&named), &default)),
            Some(("f".into(), TokenSource::Flag))
        );
        assert_eq!(
            value(resolve_token(None, Some("e"), Some(&named), &default)),
            Some(("from-named".into(), TokenSource::File(named.clone())))
        );
        assert_eq!(
            value(resolve_token(None, Some("e"), None, &default)),
            Some(("e".into(), TokenSource::Env))
        );
        assert_eq!(
            value(resolve_token(Some(""), Some(" "), Some(&named), &default)),
            Some(("from-named".into(), TokenSource::File(named.clone())))
        );
        assert_eq!(
            value(resolve_token(None, None, None, &default)),
            Some(("from-default".into(), TokenSource::File(default.clone())))
        );
        std::fs::remove_file(&default).unwrap();
        assert_eq!(value(resolve_token(None, None, None, &default)), None);
    }

    #[test]
    fn a_named_token_file_must_exist_and_hold_a_token() {
        let dir = TempDir::new("token-file");
        let missing = dir.0.join("missing.token");
        let err = resolve_token(None, None, Some(&missing), &missing).unwrap_err();
        assert!(
            err.to_string().contains("cannot read the token file"),
            "{err}"
        );
        let empty = dir.0.join("empty.token");
        std::fs::write(&empty, "\n").unwrap();
        let err = resolve_token(None, None, Some(&empty), &missing).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn token_is_redacted_in_debug_output() {
        let text = format!("{:?}", flag_token("s3cret"));
        assert!(!text.contains("s3cret"), "{text}");
    }

    // ---- end to end against a fake admin server ----

    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use hyper::body::Incoming;
    use hyper::server::conn::http1 as server_http1;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    const TOKEN: &str = "s3cret";

    /// What the fake server saw: method, path and query, body.
    type Seen = Arc<Mutex<Vec<(Method, String, String)>>>;

    /// Answers canned JSON like the admin API; every request needs `TOKEN`.
    async fn fake_admin() -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Seen::default();
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let log = Arc::clone(&log);
                        async move { Ok::<_, Infallible>(fake_answer(req, &log).await) }
                    });
                    let _ = server_http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (url, seen)
    }

    async fn fake_answer(req: Request<Incoming>, seen: &Seen) -> hyper::Response<Full<Bytes>> {
        let method = req.method().clone();
        let path = req.uri().to_string();
        let authorized = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
        let body = req.into_body().collect().await.unwrap().to_bytes();
        seen.lock().unwrap().push((
            method.clone(),
            path.clone(),
            String::from_utf8_lossy(&body).into_owned(),
        ));
        let route = json!({"name": "web", "host": null, "path_prefix": "/", "override": true,
            "canary": null, "backends": [
                {"name": "blue", "desired_weight": 75.0, "effective_weight": 75.0,
                 "endpoints": [{"address": "127.0.0.1:8081", "healthy": true, "draining": false}]},
                {"name": "green", "desired_weight": 25.0, "effective_weight": 25.0,
                 "endpoints": [{"address": "127.0.0.1:8082", "healthy": true, "draining": true}]}]});
        let (status, answer) = if !authorized {
            (401, json!({"error": "unauthorized"}))
        } else {
            match (method.as_str(), path.as_str()) {
                ("GET", "/api/v1/routes") => (200, json!({"revision": 13, "routes": [route]})),
                ("GET", "/api/v1/routes/nope") => (404, json!({"error": "unknown route \"nope\""})),
                ("PUT", "/api/v1/routes/web/weights") => {
                    (200, json!({"revision": 14, "route": route}))
                }
                ("POST", "/api/v1/reload") => (
                    422,
                    json!({"error": "invalid config", "errors": [
                    "sluicegate.toml:3:5: routes[0].backends: weights sum to 90, not 100",
                    "sluicegate.toml:9:1: listeners: at least one listener is needed"]}),
                ),
                ("POST", "/api/v1/routes/web/backends/green/endpoints/127.0.0.1%3A8082/drain") => {
                    (200, json!({"route": route}))
                }
                _ => (
                    404,
                    json!({"error": format!("no such endpoint: {method} {path}")}),
                ),
            }
        };
        let mut resp = hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        resp
    }

    async fn run_ctl(url: &str, token: Option<Token>, argv: &[&str]) -> Result<String, CtlError> {
        let mut full = vec!["--admin", url];
        full.extend_from_slice(argv);
        execute(&parse(&full).unwrap(), token).await
    }

    #[tokio::test]
    async fn status_and_set_work_against_an_admin_server() {
        let (url, seen) = fake_admin().await;
        let text = run_ctl(&url, flag_token(TOKEN), &["status"]).await.unwrap();
        assert!(
            text.contains("  blue     75       75         1/1\n"),
            "{text}"
        );
        assert!(
            text.contains("  draining: green 127.0.0.1:8082\n"),
            "{text}"
        );

        let text = run_ctl(
            &url,
            flag_token(TOKEN),
            &["set", "web", "blue=75", "green=25", "--reason", "r"],
        )
        .await
        .unwrap();
        assert_eq!(text, "web: blue=75 green=25 (revision 14)\n");
        let (method, path, body) = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            (method, path.as_str()),
            (Method::PUT, "/api/v1/routes/web/weights")
        );
        assert_eq!(body, r#"{"reason":"r","weights":{"blue":75,"green":25}}"#);
    }

    #[tokio::test]
    async fn json_flag_prints_the_servers_answer() {
        let (url, _) = fake_admin().await;
        let text = run_ctl(&url, flag_token(TOKEN), &["--json", "status"])
            .await
            .unwrap();
        let printed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(printed["revision"], 13);
        assert!(text.contains("\n  \"revision\": 13"), "not pretty: {text}");
    }

    #[tokio::test]
    async fn wrong_token_says_how_to_pass_one() {
        let (url, _) = fake_admin().await;
        let err = run_ctl(&url, flag_token("wrong"), &["status"])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unauthorized: pass --token, set SLUICEGATE_ADMIN_TOKEN, or run where \
             sluicegate-admin.token is (the token from --token was rejected)"
        );
        let err = run_ctl(&url, None, &["status"]).await.unwrap_err();
        assert!(err.to_string().ends_with("(no token was sent)"), "{err}");
    }

    #[tokio::test]
    async fn invalid_reload_prints_each_config_error_on_its_own_line() {
        let (url, _) = fake_admin().await;
        let err = run_ctl(&url, flag_token(TOKEN), &["reload"])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "422 Unprocessable Entity: invalid config\n\
             sluicegate.toml:3:5: routes[0].backends: weights sum to 90, not 100\n\
             sluicegate.toml:9:1: listeners: at least one listener is needed"
        );
    }

    #[tokio::test]
    async fn unknown_route_prints_the_servers_message() {
        let (url, _) = fake_admin().await;
        let err = run_ctl(&url, flag_token(TOKEN), &["status", "nope"])
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "404 Not Found: unknown route \"nope\"");
    }

    #[tokio::test]
    async fn drain_sends_the_endpoint_as_one_encoded_segment() {
        let (url, seen) = fake_admin().await;
        let text = run_ctl(
            &url,
            flag_token(TOKEN),
            &["drain", "web", "green", "127.0.0.1:8082"],
        )
        .await
        .unwrap();
        assert_eq!(text, "web: draining green 127.0.0.1:8082\n");
        let (_, path, _) = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            path,
            "/api/v1/routes/web/backends/green/endpoints/127.0.0.1%3A8082/drain"
        );
    }

    #[tokio::test]
    async fn a_closed_port_says_sluicegate_may_not_be_running() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let err = run_ctl(&url, None, &["status"]).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot reach the admin API at {url}: ")),
            "{text}"
        );
        assert!(text.ends_with("(is sluicegate running? --admin)"), "{text}");
    }

    #[tokio::test]
    async fn a_non_json_error_hints_at_the_wrong_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service_fn(|_req: Request<Incoming>| async {
                let mut resp = hyper::Response::new(Full::new(Bytes::from("no route matches\n")));
                *resp.status_mut() = StatusCode::NOT_FOUND;
                Ok::<_, Infallible>(resp)
            });
            let _ = server_http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let err = run_ctl(&url, None, &["status"]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "404 Not Found: \"no route matches\" (not an admin API answer; is --admin the admin address?)"
        );
    }
}
