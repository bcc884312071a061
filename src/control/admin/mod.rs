//! The admin API (SPEC §3) on its own listener (accepted by the edge's one
//! accept loop): routes and weights, history,
//! reload, health. Every request that changes state needs the bearer token;
//! reads need it too unless the listener is on loopback.
//!
//! [`handle`] is the one entry: token check, then the route table
//! (`routes`), then the endpoint's function (`handlers`), whose answers are
//! the wire types of [`api`].

pub mod api;
pub mod auth;
mod call;
mod dashboard;
mod handlers;
pub mod openapi;
mod refusals;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;

use crate::config::Role;
use crate::control::canary::{self, CanaryError};
use crate::control::fleet::{Fleet, FleetError};
use crate::control::history::Caller;
use crate::control::reload::Reloader;
use crate::control::{Applied, Change, ChangeError, State};
pub use auth::{Credentials, Keyring, Token};
use routes::{Access, Handler, Lookup};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 64 * 1024;

/// What the admin handlers share.
#[derive(Debug)]
pub struct Admin {
    pub state: Arc<State>,
    pub reloader: Option<Arc<Reloader>>,
    /// The tokens callers may present, with their names and roles.
    pub keys: Arc<Keyring>,
    /// The admin listener requires client certificates (mTLS) and has no
    /// named tokens: a verified certificate may do everything, its subject
    /// the actor.
    pub certificate_actors: bool,
    /// Reads without a token are allowed only on a loopback listener.
    pub open_reads: bool,
    /// Set when shutdown starts: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// The automated canaries.
    pub canary: Arc<canary::Controller>,
    /// In fleet mode: weight changes go through the fleet's etcd.
    pub fleet: Option<Arc<Fleet>>,
}

impl Admin {
    /// Applies a change: a weight change through the fleet in fleet mode,
    /// everything else (and everything outside a fleet) on this instance.
    async fn apply(&self, change: Change, caller: Caller) -> Result<Applied, AdminError> {
        let shared = matches!(
            change,
            Change::SetWeights { .. }
                | Change::Promote { .. }
                | Change::Rollback { .. }
                | Change::Reset { .. }
                | Change::DropZone { .. }
        );
        match &self.fleet {
            Some(fleet) if shared => Ok(fleet.write_by(change, caller).await?),
            _ => Ok(self.state.apply_by(change, &caller)?),
        }
    }
}

type AdminResponse = Response<Full<Bytes>>;

/// A refusal: its status and the [`api::ApiError`] body.
#[derive(Debug)]
struct AdminError {
    status: StatusCode,
    body: api::ApiError,
    /// For a 405: the methods the path takes.
    allow: Vec<Method>,
}

impl AdminError {
    fn new(status: StatusCode, message: impl Into<String>) -> AdminError {
        AdminError {
            status,
            body: api::ApiError {
                error: message.into(),
                errors: Vec::new(),
            },
            allow: Vec::new(),
        }
    }

    /// One line each, e.g. every error of an invalid config.
    fn with_details(mut self, details: Vec<String>) -> AdminError {
        self.body.errors = details;
        self
    }
}

impl From<ChangeError> for AdminError {
    fn from(e: ChangeError) -> AdminError {
        let status = match e {
            ChangeError::UnknownRoute(_)
            | ChangeError::UnknownBackend { .. }
            | ChangeError::UnknownEndpoint { .. } => StatusCode::NOT_FOUND,
            ChangeError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ChangeError::Conflict { .. } => StatusCode::CONFLICT,
            ChangeError::NeedsFleet(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        AdminError::new(status, e.to_string())
    }
}

impl From<FleetError> for AdminError {
    fn from(e: FleetError) -> AdminError {
        match e {
            FleetError::Change(e) => e.into(),
            e @ FleetError::NotController(_) => {
                AdminError::new(StatusCode::CONFLICT, e.to_string())
            }
            e @ (FleetError::Unavailable(_)
            | FleetError::Unanswered
            | FleetError::NotApplied(_)) => {
                AdminError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

impl From<CanaryError> for AdminError {
    fn from(e: CanaryError) -> AdminError {
        let status = match e {
            CanaryError::UnknownRoute(_) => StatusCode::NOT_FOUND,
            CanaryError::NotConfigured(_) | CanaryError::Invalid(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            CanaryError::WrongState(_) => StatusCode::CONFLICT,
        };
        AdminError::new(status, e.to_string())
    }
}

/// Who is on the other end of an admin connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The subject of the client certificate the TLS handshake verified.
    pub subject: Option<Arc<str>>,
}

/// One admin request: refuse a wrong token, find the route, check access,
/// answer. HEAD is answered as GET would be, the body left out. Generic over
/// the body so any listener's connection can hand its requests here.
pub async fn handle<B>(admin: &Admin, peer: &Peer, req: Request<B>) -> AdminResponse
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut actor = None;
    let mut response = match dispatch(admin, peer, req, &mut actor).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    };
    if method == Method::HEAD {
        response = without_body(response);
    }
    let status = response.status();
    if status == http::StatusCode::UNAUTHORIZED {
        // Any method: guessing tokens with GETs shows too, but a flood of
        // guesses does not flood the log.
        refusals::refused(peer.addr, &method, &path, status.as_u16());
    } else if method != Method::GET && method != Method::HEAD {
        let actor = actor.as_deref().unwrap_or("-");
        tracing::info!(peer = %peer.addr, %actor, %method, %path, status = response.status().as_u16(), "admin request");
    }
    response
}

/// The role a route needs; `None` for the open ones.
fn needed_role(access: Access, method: &Method) -> Option<Role> {
    match access {
        Access::Open => None,
        Access::Admin => Some(Role::Admin),
        Access::Token if method == Method::GET || method == Method::HEAD => Some(Role::Read),
        Access::Token => Some(Role::Operate),
    }
}

async fn dispatch<B>(
    admin: &Admin,
    peer: &Peer,
    req: Request<B>,
    actor: &mut Option<String>,
) -> Result<AdminResponse, AdminError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Checked before anything else: a token that is presented and wrong is
    // refused everywhere, on the probes and the dashboard too (SPEC §3).
    let credentials = admin.keys.check(req.headers()).await;
    let caller = match credentials {
        Credentials::Wrong => {
            return Err(AdminError::new(
                StatusCode::UNAUTHORIZED,
                "wrong bearer token (Authorization: Bearer TOKEN)",
            ));
        }
        Credentials::Valid { name, role } => Some((name, role)),
        Credentials::Missing => peer
            .subject
            .as_ref()
            .filter(|_| admin.certificate_actors)
            .map(|subject| (subject.to_string(), Role::Admin)),
    };
    *actor = caller.as_ref().map(|(name, _)| name.clone());
    let segments = routes::segments(req.uri().path());
    let query = req.uri().query().unwrap_or("").to_string();
    let found = routes::lookup(req.method(), &segments, &query);
    let open = matches!(&found, Lookup::Found(route, _) if route.access == Access::Open);
    // Unknown paths and wrong methods are told apart only to a caller who
    // may call the API at all.
    let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
    if !open && caller.is_none() && !(is_read && admin.open_reads) {
        return Err(AdminError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer TOKEN)",
        ));
    }
    if let (Lookup::Found(route, _), Some((name, role))) = (&found, &caller)
        && let Some(needed) = needed_role(route.access, req.method())
        && *role < needed
    {
        return Err(AdminError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token `{name}` has role {}; this call needs {}",
                role.as_str(),
                needed.as_str()
            ),
        ));
    }
    let caller = Caller {
        actor: caller.map_or_else(|| "admin".to_string(), |(name, _)| name),
        client: Some(peer.addr.to_string()),
    };
    let (route, call) = match found {
        Lookup::Found(route, call) => (route, call),
        Lookup::WrongMethod(allow) => {
            return Err(AdminError {
                allow,
                ..AdminError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
            });
        }
        Lookup::NotFound => {
            return Err(AdminError::new(
                StatusCode::NOT_FOUND,
                "no such admin endpoint",
            ));
        }
    };
    match route.handler {
        Handler::Plain(handler) => handler(admin, &call),
        Handler::Canary(handler) => {
            let (route, action) = handler(admin, &call)?;
            let controller = Arc::clone(&admin.canary);
            let asked = route.clone();
            tokio::task::spawn_blocking(move || controller.act_by(&asked, action, Some(&caller)))
                .await
                .map_err(|_| {
                    AdminError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the canary action failed",
                    )
                })??;
            handlers::route_answer(admin, &route, None)
        }
        Handler::Change(handler) => {
            let body = read_body(req).await?;
            let (route, change) = handler(admin, &call, &body)?;
            let applied = admin.apply(change, caller).await?;
            handlers::route_answer(admin, &route, Some(applied.revision))
        }
    }
}

/// The request body, at most [`MAX_BODY`] bytes.
async fn read_body<B>(req: Request<B>) -> Result<Bytes, AdminError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let collected = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            AdminError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {MAX_BODY} bytes"),
            )
        })?;
    Ok(collected.to_bytes())
}

fn error_response(e: &AdminError) -> AdminResponse {
    let mut resp = json_response(e.status, &e.body);
    let headers = resp.headers_mut();
    if e.status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if !e.allow.is_empty() {
        let allow: Vec<&str> = e.allow.iter().map(Method::as_str).collect();
        if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
            headers.insert(header::ALLOW, value);
        }
    }
    resp
}

/// The answer to HEAD: the GET answer's status and header fields, its
/// `Content-Length` included, and no body.
fn without_body(resp: AdminResponse) -> AdminResponse {
    let (mut head, body) = resp.into_parts();
    if let Some(length) = http_body::Body::size_hint(&body).exact() {
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Response::from_parts(head, Full::new(Bytes::new()))
}

fn metrics_response(text: String) -> AdminResponse {
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

fn json_ok(body: &impl Serialize) -> AdminResponse {
    json_response(StatusCode::OK, body)
}

fn json_response(status: StatusCode, body: &impl Serialize) -> AdminResponse {
    let mut text = serde_json::to_vec_pretty(body).unwrap_or_else(|_| b"{}".to_vec());
    text.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn text_response(status: StatusCode, text: &'static str) -> AdminResponse {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}
