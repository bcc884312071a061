//! The admin API (SPEC §3) on its own listener: routes and weights, history,
//! reload, health. Every request that changes state needs the bearer token;
//! reads need it too unless the listener is on loopback.

pub mod auth;
mod dashboard;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::canary::{self, CanaryError};
use crate::control::history::{Source, WeightMap};
use crate::control::reload::Reloader;
use crate::control::{ChangeError, Route, State};
use crate::edge::connection::{self, Tracker};
pub use auth::{Credentials, Token};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 64 * 1024;

/// History page size when none is asked for, and the most one page holds.
const HISTORY_PAGE: usize = 50;
const HISTORY_PAGE_MAX: usize = 1000;

/// What the admin handlers share.
#[derive(Debug)]
pub struct Admin {
    pub state: Arc<State>,
    pub reloader: Option<Arc<Reloader>>,
    pub token: Token,
    /// Reads without a token are allowed only on a loopback listener.
    pub open_reads: bool,
    /// Set when shutdown starts: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// The automated canaries.
    pub canary: Arc<canary::Controller>,
}

type AdminResponse = Response<Full<Bytes>>;

/// An admin API error: a status and `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> ApiError {
        let status = match e {
            ChangeError::UnknownRoute(_)
            | ChangeError::UnknownBackend { .. }
            | ChangeError::UnknownEndpoint { .. } => StatusCode::NOT_FOUND,
            ChangeError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ChangeError::Conflict { .. } => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<CanaryError> for ApiError {
    fn from(e: CanaryError) -> ApiError {
        let status = match e {
            CanaryError::UnknownRoute(_) => StatusCode::NOT_FOUND,
            CanaryError::NotConfigured(_) | CanaryError::Invalid(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            CanaryError::WrongState(_) => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Serves the admin API on `listener` until `stop`, then lets open admin
/// connections finish their requests (up to `timeouts.shutdown_grace`), so a
/// pipeline calling the API during a restart or upgrade gets its answer.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut stop: watch::Receiver<bool>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    let connections = Tracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let (timeouts, limits) = {
            let snapshot = admin.state.snapshot();
            (snapshot.config.timeouts, snapshot.config.limits)
        };
        let admin = Arc::clone(&admin);
        let (stop, tracked) = (stop.clone(), connections.track());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(handle(&admin, peer, req).await) }
            });
            if let Err(error) =
                connection::serve(stream, bytes::Bytes::new(), service, timeouts, limits, stop)
                    .await
            {
                tracing::debug!(%peer, %error, "admin connection ended with an error");
            }
            drop(tracked);
        });
    }
    drop(listener);
    let grace = admin.state.snapshot().config.timeouts.shutdown_grace;
    if !connections.wait(grace).await {
        tracing::warn!(?grace, "admin requests still open after the grace period");
    }
}

/// One admin request: authorise, route, answer JSON. HEAD is answered as
/// GET would be, the body left out.
pub async fn handle(admin: &Admin, peer: SocketAddr, req: Request<Incoming>) -> AdminResponse {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = route_request(admin, req).await;
    let mut response = match result {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    };
    if method == Method::HEAD {
        response = without_body(response);
    }
    if method != Method::GET && method != Method::HEAD {
        tracing::info!(%peer, %method, %path, status = response.status().as_u16(), "admin request");
    }
    response
}

fn error_response(e: &ApiError) -> AdminResponse {
    let mut body = json!({ "error": e.message });
    if !e.details.is_empty() {
        body["errors"] = json!(e.details);
    }
    let mut resp = json_response(e.status, &body);
    if e.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

/// The answer to HEAD: the GET answer's status and header fields, its
/// `Content-Length` included, and no body.
fn without_body(resp: AdminResponse) -> AdminResponse {
    let (mut head, body) = resp.into_parts();
    if let Some(length) = http_body::Body::size_hint(&body).exact() {
        head.headers
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    }
    Response::from_parts(head, Full::new(Bytes::new()))
}

async fn route_request(admin: &Admin, req: Request<Incoming>) -> Result<AdminResponse, ApiError> {
    let segments: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
    // HEAD takes the GET path; `handle` drops the body.
    let method = if is_read {
        Method::GET
    } else {
        req.method().clone()
    };
    // Checked before anything else: a token that is presented and wrong is
    // refused everywhere, on the probes and the dashboard too (SPEC §3).
    let credentials = admin.token.check(req.headers());
    if credentials == Credentials::Wrong {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong bearer token (Authorization: Bearer TOKEN)",
        ));
    }
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => return Ok(text_response(StatusCode::OK, "ok\n")),
        // The page holds nothing secret: it asks for the token the API calls need.
        (&Method::GET, [] | ["assets", _]) => {
            return dashboard::asset(&segments)
                .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such dashboard file"));
        }
        (&Method::GET, ["readyz"]) => {
            return Ok(if admin.draining.load(Ordering::Relaxed) {
                text_response(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text_response(StatusCode::OK, "ready\n")
            });
        }
        _ => {}
    }
    let allowed = credentials == Credentials::Valid || (is_read && admin.open_reads);
    if !allowed {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer TOKEN)",
        ));
    }
    let query = req.uri().query().unwrap_or("").to_string();
    if method == Method::GET && segments.as_slice() == ["metrics"] {
        return Ok(metrics(admin));
    }
    let api = match segments.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no such admin endpoint",
            ));
        }
    };
    match (method, api) {
        (Method::GET, ["routes"]) => {
            let snapshot = admin.state.snapshot_full();
            let routes: Vec<Value> = snapshot
                .routes
                .iter()
                .map(|r| route_view(admin, r))
                .collect();
            Ok(json_ok(
                &json!({ "revision": snapshot.revision, "routes": routes }),
            ))
        }
        (Method::GET, ["routes", route]) => route_reply(admin, route, None),
        (Method::PUT, ["routes", route, "weights"]) => {
            let body: WeightsBody = read_json(req).await?;
            let reason = body.reason.unwrap_or_default();
            let revision = admin.state.set_weights(
                route,
                &body.weights,
                body.if_revision,
                Source::Admin,
                &reason,
            )?;
            route_reply(admin, route, Some(revision))
        }
        (Method::POST, ["routes", route, "promote"]) => {
            let body: PromoteBody = read_json(req).await?;
            let revision =
                admin
                    .state
                    .promote(route, &body.backend, body.reason.as_deref().unwrap_or(""))?;
            route_reply(admin, route, Some(revision))
        }
        (Method::POST, ["routes", route, "rollback"]) => {
            let body: RollbackBody = read_json(req).await?;
            let revision = admin.state.rollback(route, body.to_revision)?;
            route_reply(admin, route, Some(revision))
        }
        (
            Method::POST,
            [
                "routes",
                route,
                "backends",
                backend,
                "endpoints",
                endpoint,
                action @ ("drain" | "undrain"),
            ],
        ) => {
            admin
                .state
                .drain(route, backend, endpoint, *action == "drain")?;
            route_reply(admin, route, None)
        }
        (Method::GET, ["routes", route, "mirror"]) => {
            mirror_view(admin, route).map(|v| json_ok(&v))
        }
        (Method::POST, ["routes", route, "canary", action]) => {
            let action = canary::Action::parse(action).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no such canary action (start, pause, resume, abort)",
                )
            })?;
            admin.canary.act(route, action)?;
            route_reply(admin, route, None)
        }
        (Method::GET, ["history"]) => history(admin, &query),
        (Method::GET, ["stats"]) => Ok(json_ok(&stats(admin))),
        (Method::POST, ["reload"]) => reload(admin),
        (
            _,
            ["routes"]
            | ["routes", _]
            | ["routes", _, "weights" | "promote" | "rollback"]
            | ["routes", _, "canary", _]
            | ["history"]
            | ["reload"],
        ) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed here",
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such admin endpoint",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsBody {
    weights: WeightMap,
    reason: Option<String>,
    if_revision: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    backend: String,
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to_revision: Option<u64>,
}

/// Reads a JSON body of at most [`MAX_BODY`]; an empty body reads as `{}`.
async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {MAX_BODY} bytes"),
            )
        })?
        .to_bytes();
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        // Syntax errors are 400; a well-formed body with wrong fields or values is 422.
        let status = if e.is_syntax() || e.is_eof() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        ApiError::new(status, format!("invalid JSON body: {e}"))
    })
}

fn route_reply(
    admin: &Admin,
    name: &str,
    revision: Option<u64>,
) -> Result<AdminResponse, ApiError> {
    let snapshot = admin.state.snapshot_full();
    let route = snapshot
        .route(name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no route called `{name}`")))?;
    let revision = revision.unwrap_or(snapshot.revision);
    Ok(json_ok(
        &json!({ "revision": revision, "route": route_view(admin, route) }),
    ))
}

/// The JSON view of one route.
pub fn route_view(admin: &Admin, route: &Route) -> Value {
    let host = route.config.host.as_ref().map(|h| match h {
        crate::config::HostMatch::Exact(name) => name.clone(),
        crate::config::HostMatch::Suffix(suffix) => format!("*{suffix}"),
    });
    let backends: Vec<Value> = route
        .backends
        .iter()
        .map(|b| {
            let endpoints: Vec<Value> = b
                .endpoints
                .iter()
                .map(|e| {
                    json!({
                        "address": e.addr.to_string(),
                        "healthy": e.is_healthy(),
                        "draining": e.is_draining(),
                        "state": e.state(),
                    })
                })
                .collect();
            json!({
                "name": b.name,
                "desired_weight": b.weight.percent(),
                "effective_weight": b.effective.percent(),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({
        "name": route.name(),
        "host": host,
        "path_prefix": route.config.path_prefix,
        "override": admin.state.has_override(route.name()),
        "backends": backends,
        "canary": admin.canary.view(route),
    })
}

fn history(admin: &Admin, query: &str) -> Result<AdminResponse, ApiError> {
    let mut limit = HISTORY_PAGE;
    let mut before = None;
    let mut route = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        let number = || {
            value.parse::<u64>().map_err(|_| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("`{key}` must be a whole number"),
                )
            })
        };
        match key {
            "limit" => {
                limit = usize::try_from(number()?)
                    .unwrap_or(HISTORY_PAGE_MAX)
                    .clamp(1, HISTORY_PAGE_MAX)
            }
            "before" => before = Some(number()?),
            "route" => route = Some(value),
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("unknown query parameter `{key}` (limit, before, route)"),
                ));
            }
        }
    }
    let (revisions, next_before) = admin.state.history(limit, before, route.as_deref());
    Ok(json_ok(
        &json!({ "revisions": revisions, "next_before": next_before }),
    ))
}

/// `GET /api/v1/routes/{route}/mirror`: settings, outcome counts and the
/// last mismatches (newest first).
fn mirror_view(admin: &Admin, name: &str) -> Result<Value, ApiError> {
    let snapshot = admin.state.snapshot_full();
    let route = snapshot
        .route(name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no route called `{name}`")))?;
    let (Some(config), Some(state)) = (&route.config.mirror, &route.mirror) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("route `{name}` has no [routes.mirror]"),
        ));
    };
    let [matched, mismatched, errors, skipped] = state.counts();
    Ok(json!({
        "route": name,
        "backend": config.backend,
        "percent": config.percent.percent(),
        "compare": config.compare,
        "max_body": config.max_body,
        "max_concurrent": config.max_concurrent,
        "outcomes": {
            "match": matched,
            "mismatch": mismatched,
            "error": errors,
            "skipped": skipped,
        },
        "mismatches": state.mismatches(),
    }))
}

/// `GET /metrics`: Prometheus text format.
fn metrics(admin: &Admin) -> AdminResponse {
    let snapshot = admin.state.snapshot_full();
    let text = admin
        .state
        .telemetry()
        .render(|out| crate::control::gauges::render_gauges(out, &snapshot));
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// `GET /api/v1/stats`: per backend, the finished intervals of the last 15
/// minutes (`points`, oldest first) and the one in progress (`current`).
fn stats(admin: &Admin) -> Value {
    let snapshot = admin.state.snapshot_full();
    let now = crate::telemetry::stats::current_interval();
    let routes: serde_json::Map<String, Value> = snapshot
        .routes
        .iter()
        .map(|route| {
            let backends: serde_json::Map<String, Value> = route
                .backends
                .iter()
                .map(|b| {
                    let series = &b.metrics.series;
                    let view = json!({
                        "points": series.points(now),
                        "current": series.point(now),
                    });
                    (b.name.clone(), view)
                })
                .collect();
            (route.name().to_string(), json!({ "backends": backends }))
        })
        .collect();
    json!({
        "interval_seconds": crate::telemetry::stats::INTERVAL_SECS,
        "routes": routes,
    })
}

fn reload(admin: &Admin) -> Result<AdminResponse, ApiError> {
    let reloader = admin.reloader.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this proxy was not started from a config file",
        )
    })?;
    match reloader.reload() {
        Ok(applied) => Ok(json_ok(&json!({
            "revision": applied.revision,
            "changed": !applied.routes_changed.is_empty(),
            "routes_changed": applied.routes_changed,
        }))),
        Err(errors) => Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "invalid config: the running config stays".into(),
            details: errors.0.iter().map(ToString::to_string).collect(),
        }),
    }
}

fn json_ok(body: &Value) -> AdminResponse {
    json_response(StatusCode::OK, body)
}

fn json_response(status: StatusCode, body: &Value) -> AdminResponse {
    let mut text = serde_json::to_vec_pretty(body).unwrap_or_else(|_| b"{}".to_vec());
    text.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn text_response(status: StatusCode, text: &'static str) -> AdminResponse {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Decodes `%XX` escapes (endpoint addresses in paths); invalid ones stay as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("127.0.0.1%3A8081"), "127.0.0.1:8081");
        assert_eq!(percent_decode("https%3A%2F%2Fa%3A1"), "https://a:1");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
