//! `sluicegate ctl`: the command-line client of the admin API (SPEC §1, §3).
//!
//! [`main`] resolves the token and runs one command on a current-thread
//! runtime. The work is in `execute`: turn the command into one HTTP request,
//! send it over a fresh HTTP/1.1 connection, and format the JSON answer as a
//! table (or pretty JSON with `--json`). Tests drive `execute` against a fake
//! admin server, so no binary has to be spawned.
//!
//! - `client`: the admin URL, the token, the HTTP/1.1 exchange and [`CtlError`].
//! - `format`: how the answers print (tables, one-line confirmations); their
//!   shapes are the server's own wire types, [`crate::control::admin::api`].
//! - `wait`: `--wait` of `canary start|resume|approve` and `status
//!   --wait-revision`: poll the API, print each change, end with an exit
//!   code a deploy script can branch on ([`wait::WaitEnd`]).
//! - [`probe`]: `sluicegate probe URL`, a plain GET for container health
//!   checks (not the admin API: any HTTP server).
//! - `tests` (tests.rs): argument parsing, the command → request mapping, and
//!   end-to-end runs against a fake admin server.

mod client;
mod format;
pub mod probe;
#[cfg(test)]
mod tests;
mod wait;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use http::Method;
use serde::Serialize;
use serde_json::Value;

use crate::config::{Weight, parse_duration};
use crate::control::admin::api::WeightMap;
use crate::control::admin::api::{self, PromoteBody, RollbackBody, WeightsBody};
use client::{Client, Token, resolve_token};
pub use client::{CtlError, TokenSource};
use format::{decode, format_answer};
use wait::WaitEnd;

/// Where `ctl` looks for the admin API unless `--admin` says otherwise.
const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9901";
/// The environment variable read for the token when `--token` is absent.
const TOKEN_ENV: &str = "SLUICEGATE_ADMIN_TOKEN";
/// The token file sluicegate generates in its working directory (SPEC §3).
const TOKEN_FILE_NAME: &str = "sluicegate-admin.token";
const API_PREFIX: &str = api::PREFIX;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Covers the whole exchange; a reload re-reads and validates the config file.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `sluicegate ctl`.
#[derive(Debug, Args)]
#[command(
    after_help = "Token: --token, else --token-file, else $SLUICEGATE_ADMIN_TOKEN, else ./sluicegate-admin.token if it exists.\n\nExamples:\n  sluicegate ctl status\n  sluicegate ctl set web blue=75 green=25 --reason \"more green\"\n  sluicegate ctl promote web green\n  sluicegate ctl rollback web\n  sluicegate ctl canary start web --wait --timeout 30m\n  sluicegate ctl set web blue=0 green=100 --zone eu-west-1\n  sluicegate ctl fleet\n  sluicegate ctl history --route web --limit 10\n  sluicegate ctl --json status web | jq '.route.backends'"
)]
pub struct CtlArgs {
    /// Base URL of the admin API (http:// or https://).
    #[arg(long, global = true, value_name = "URL", default_value = DEFAULT_ADMIN_URL)]
    admin: String,
    /// For https://: the CA certificate (PEM) that signed the admin's (default: system roots).
    #[arg(long, global = true, value_name = "FILE", env = "SLUICEGATE_ADMIN_CA")]
    ca: Option<PathBuf>,
    /// For an mTLS admin listener: the client certificate chain (PEM).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "SLUICEGATE_ADMIN_CERT"
    )]
    cert: Option<PathBuf>,
    /// For an mTLS admin listener: the client certificate's private key (PEM).
    #[arg(long, global = true, value_name = "FILE", env = "SLUICEGATE_ADMIN_KEY")]
    key: Option<PathBuf>,
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
    #[command(
        after_help = "--wait-revision N waits until the proxy has applied revision N or a later one (e.g. the revision `ctl set` printed), in fleet mode every instance too, then prints the status.\n\nExit status: 0 shown (or revision reached), 1 on an error, 3 when --timeout passed first."
    )]
    Status {
        /// Only this route.
        route: Option<String>,
        /// Wait until the applied revision is N or later (connection errors are retried).
        #[arg(long, value_name = "N")]
        wait_revision: Option<u64>,
        /// With --wait-revision: give up after D (e.g. 90s, 10m; default: no limit).
        #[arg(long, value_name = "D", value_parser = parse_duration, requires = "wait_revision")]
        timeout: Option<Duration>,
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
        /// In a fleet: set the weights of this zone's instances only.
        #[arg(long, value_name = "ZONE")]
        zone: Option<String>,
    },
    /// Drop admin weights: back to the file's weights (with --zone, in a
    /// fleet: drop that zone's weights, back to the fleet-wide ones).
    Reset {
        /// Route name.
        route: String,
        /// In a fleet: the zone whose weights to drop.
        #[arg(long, value_name = "ZONE")]
        zone: Option<String>,
    },
    /// In a fleet: every instance, with each route's desired and effective weights.
    Fleet,
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
    /// Control a route's canary: start, pause, resume, abort (back to baseline
    /// 100), approve (go on from an approval step).
    #[command(after_help = CANARY_HELP)]
    Canary {
        action: CanaryAction,
        /// Route name.
        route: String,
        /// With start, resume or approve: print the dashboard URL, then each
        /// step and state change until the canary ends (exit status below).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after D (e.g. 90s, 10m; default: no limit).
        #[arg(long, value_name = "D", value_parser = parse_duration, requires = "wait")]
        timeout: Option<Duration>,
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

/// `ctl canary --help`'s exit statuses: what a deploy script branches on.
const CANARY_HELP: &str = "\
With --wait, the exit status says how the canary ended:
  0  succeeded (the last step passed: the canary backend has 100 %)
  1  failed (rolled back to the baseline), or stopped: it went idle (a reload
     changed its backends or steps) or its route lost [routes.canary];
     also any error (refused action, unknown route, bad token)
  2  aborted (by an operator, e.g. `ctl canary abort` from another shell)
  3  --timeout passed first (the canary goes on; nothing is rolled back)
(Bad arguments exit 2 as well, before anything is sent.) A paused canary, or one awaiting approval, is waited for. Connection errors
are retried until the timeout, each new one told on stderr.

Examples:
  sluicegate ctl canary start web --wait --timeout 30m
  sluicegate ctl canary approve web --wait
  sluicegate ctl canary abort web";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CanaryAction {
    Start,
    Pause,
    Resume,
    Abort,
    Approve,
}

impl CanaryAction {
    fn as_str(self) -> &'static str {
        match self {
            CanaryAction::Start => "start",
            CanaryAction::Pause => "pause",
            CanaryAction::Resume => "resume",
            CanaryAction::Abort => "abort",
            CanaryAction::Approve => "approve",
        }
    }

    /// The actions after which there is a canary run to wait for.
    fn can_wait(self) -> bool {
        matches!(
            self,
            CanaryAction::Start | CanaryAction::Resume | CanaryAction::Approve
        )
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
            Ok(runtime) => runtime.block_on(run(&args, token)),
            Err(e) => Err(CtlError::Runtime(e)),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(end) => {
            if let Some(message) = end.message() {
                eprintln!("sluicegate ctl: {message}");
            }
            ExitCode::from(end.exit_code())
        }
        Err(e) => {
            eprintln!("sluicegate ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command, printing to stdout as it goes (a wait prints each
/// change when it sees it).
async fn run(args: &CtlArgs, token: Option<Token>) -> Result<WaitEnd, CtlError> {
    if let Some(wait) = wait::Wait::of(&args.command)? {
        let mut printer = wait::Printer::new(std::io::stdout(), std::io::stderr());
        return wait::execute(args, wait, token, &mut printer).await;
    }
    let text = execute(args, token).await?;
    use std::io::Write as _;
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(WaitEnd::Reached)
}

/// Runs `args.command` against `args.admin` and returns what to print.
async fn execute(args: &CtlArgs, token: Option<Token>) -> Result<String, CtlError> {
    let client = args.client(token)?;
    let call = ApiCall::for_command(&args.command)?;
    let body = client.send(&call).await?;
    if args.json {
        return pretty_json(&body);
    }
    format_answer(&args.command, &body)
}

impl CtlArgs {
    /// The admin API client of `--admin`, `--ca`, `--cert` and `--key`.
    fn client(&self, token: Option<Token>) -> Result<Client, CtlError> {
        Client::new(&self.admin, token)?.with_tls(&client::TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
    }
}

/// Pretty JSON text of `body`, newline-terminated (`--json`).
fn pretty_json(body: &[u8]) -> Result<String, CtlError> {
    let answer: Value = decode(body)?;
    let mut text =
        serde_json::to_string_pretty(&answer).map_err(|e| CtlError::Protocol(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// One request to the admin API.
#[derive(Debug, PartialEq)]
struct ApiCall {
    method: Method,
    /// Path and query under the base URL, starting with `/api/v1`.
    path: String,
    /// JSON text of one of the [`api`] request bodies.
    body: Option<String>,
}

/// The JSON text of a request body.
fn json_body(body: &impl Serialize) -> Result<Option<String>, CtlError> {
    serde_json::to_string(body)
        .map(Some)
        .map_err(|e| CtlError::Usage(format!("cannot write the request body: {e}")))
}

impl ApiCall {
    fn for_command(command: &CtlCommand) -> Result<ApiCall, CtlError> {
        let get = |path: String| ApiCall {
            method: Method::GET,
            path,
            body: None,
        };
        let post = |path: String, body: Option<String>| ApiCall {
            method: Method::POST,
            path,
            body,
        };
        let call = match command {
            CtlCommand::Status { route: None, .. } => get(format!("{API_PREFIX}/routes")),
            CtlCommand::Status {
                route: Some(route), ..
            } => get(route_path(route)?),
            CtlCommand::Set {
                route,
                weights,
                reason,
                if_revision,
                zone,
            } => {
                let mut map = WeightMap::default();
                for weight in weights {
                    if map.0.iter().any(|(name, _)| *name == weight.backend) {
                        return Err(CtlError::Usage(format!(
                            "backend {:?} is given more than once",
                            weight.backend
                        )));
                    }
                    map.0
                        .push((weight.backend.clone(), Weight(weight.basis_points)));
                }
                let body = WeightsBody {
                    weights: map,
                    reason: reason.clone(),
                    if_revision: *if_revision,
                    zone: zone.clone(),
                };
                ApiCall {
                    method: Method::PUT,
                    path: format!("{}/weights", route_path(route)?),
                    body: json_body(&body)?,
                }
            }
            CtlCommand::Promote {
                route,
                backend,
                reason,
            } => {
                let body = PromoteBody {
                    backend: non_empty(backend, "backend")?.to_string(),
                    reason: reason.clone(),
                };
                post(format!("{}/promote", route_path(route)?), json_body(&body)?)
            }
            CtlCommand::Rollback { route, to_revision } => {
                let body = RollbackBody {
                    to_revision: *to_revision,
                };
                post(
                    format!("{}/rollback", route_path(route)?),
                    json_body(&body)?,
                )
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
            CtlCommand::Reset { route, zone } => {
                let mut path = format!("{}/weights", route_path(route)?);
                if let Some(zone) = zone {
                    path = format!("{path}?zone={}", encode_component(non_empty(zone, "zone")?));
                }
                ApiCall {
                    method: Method::DELETE,
                    path,
                    body: None,
                }
            }
            CtlCommand::Fleet => get(format!("{API_PREFIX}/fleet")),
            CtlCommand::Reload => post(format!("{API_PREFIX}/reload"), None),
            CtlCommand::Canary { action, route, .. } => post(
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
