//! The answers of [`Answers::Protocols`](super::Answers::Protocols), by what
//! the request is:
//!
//! - a WebSocket upgrade (HTTP/1.1, key and version 13 required, else 400):
//!   echoes each text message as `"{name}: {text}"`;
//! - `content-type: application/grpc`: [`GRPC_SAY`] echoes its one message,
//!   [`GRPC_COUNT`] with message `N` streams the messages `1`..`N`, both
//!   ending with trailers `grpc-status: 0`, `grpc-message: OK` and
//!   `x-backend: NAME`; [`GRPC_STALL`] never answers; others: status 12;
//! - `/trailers`: reads the body and its trailers and answers, chunked,
//!   `received N bytes; trailers [name=value, …]` with trailers
//!   `x-echo-{name}` for each request trailer and `x-response-trailer: done`
//!   (declared in a `Trailer` header);
//! - `/chunked`: a body of unknown length (`chunk-1chunk-2`);
//! - `/sized/{n}`: `n` bytes with an explicit `Content-Length`;
//! - `/gate/{n}`: holds the request until `n` requests wait at the gate;
//! - anything else: JSON of what it saw ([`Seen`]).
//!
//! Every answer carries `x-backend: NAME`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{ConnInfo, Shared};
use crate::support::PATIENCE;
use crate::support::body::{ChannelBody, TestBody, empty, full};
use crate::support::client::Reply;
use crate::support::grpc::{grpc_frame, grpc_messages};

/// The gRPC services.
pub const GRPC_SAY: &str = "/echo.Echo/Say";
pub const GRPC_COUNT: &str = "/echo.Echo/Count";
/// Never answers (for deadline tests).
pub const GRPC_STALL: &str = "/echo.Echo/Stall";

pub(super) async fn serve<S>(stream: S, info: ConnInfo, state: Arc<Shared>, http1_only: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let service = service_fn(move |req| {
        let (state, info) = (Arc::clone(&state), Arc::clone(&info));
        async move { Ok::<_, Infallible>(answer(state, &info, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if http1_only {
        builder = builder.http1_only();
    }
    // The proxy hanging up mid-request is part of some tests.
    let _ = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await;
}

async fn answer(state: Arc<Shared>, info: &ConnInfo, req: Request<Incoming>) -> Response<TestBody> {
    state.count(&req);
    let path = req.uri().path().to_string();
    let mut resp = if is_websocket_upgrade(&req) {
        websocket(Arc::clone(&state), req)
    } else if is_grpc(req.headers()) {
        grpc(&state.name, req).await
    } else if path == "/trailers" {
        trailers(req).await
    } else if path == "/chunked" {
        let (tx, body) = ChannelBody::with_capacity(8);
        tokio::spawn(async move {
            for chunk in ["chunk-1", "chunk-2"] {
                let _ = tx.send(Frame::data(Bytes::from(chunk))).await;
            }
        });
        Response::new(body.boxed())
    } else if let Some(n) = path.strip_prefix("/sized/") {
        let n: usize = n.parse().unwrap_or(0);
        let mut resp = Response::new(full(vec![b's'; n]));
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(n));
        resp
    } else if let Some(n) = path.strip_prefix("/gate/") {
        let want: usize = n.parse().unwrap_or(1);
        gate(&state, want).await;
        Response::new(full(state.name.clone()))
    } else {
        let seen = Seen::of(&state.name, info, &req);
        Response::new(full(seen.to_json()))
    };
    resp.headers_mut().insert(
        "x-backend",
        HeaderValue::from_str(&state.name).expect("backend name is a header value"),
    );
    resp
}

/// Holds until `want` requests are waiting here (or [`PATIENCE`] passed).
async fn gate(state: &Shared, want: usize) {
    let arrived = state.at_gate.fetch_add(1, Ordering::SeqCst) + 1;
    if arrived >= want {
        state.gate.notify_waiters();
        return;
    }
    let wait = async {
        loop {
            let notified = state.gate.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if state.at_gate.load(Ordering::SeqCst) >= want {
                return;
            }
            notified.await;
        }
    };
    let _ = tokio::time::timeout(PATIENCE, wait).await;
}

/// What the backend saw of one request (the body of its default answer).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Seen {
    pub backend: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    pub method: String,
    pub path: String,
    /// The URI's scheme and authority (HTTP/2 `:scheme`, `:authority`).
    pub scheme: Option<String>,
    pub authority: Option<String>,
    /// Every `Host` header value.
    pub host: Vec<String>,
    /// Every `TE` header value.
    pub te: Vec<String>,
    pub tls: bool,
    pub alpn: Option<String>,
    pub sni: Option<String>,
    /// Every header, name → values.
    pub headers: HashMap<String, Vec<String>>,
}

impl Seen {
    fn of<B>(backend: &str, info: &ConnInfo, req: &Request<B>) -> Seen {
        let values = |name: &http::HeaderName| -> Vec<String> {
            req.headers()
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect()
        };
        let mut headers: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in req.headers() {
            headers
                .entry(name.as_str().to_string())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        Seen {
            backend: backend.to_string(),
            version: format!("{:?}", req.version()),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            scheme: req.uri().scheme_str().map(str::to_string),
            authority: req.uri().authority().map(|a| a.to_string()),
            host: values(&HOST),
            te: values(&TE),
            tls: info.tls,
            alpn: info.alpn.clone(),
            sni: info.sni.clone(),
            headers,
        }
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("seen as JSON")
    }

    /// Parses the body of a [`ProtocolBackend`]'s default answer.
    pub fn parse(body: &[u8]) -> Seen {
        serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "not a ProtocolBackend answer ({e}): {}",
                String::from_utf8_lossy(body)
            )
        })
    }

    /// Asserts a 200 and parses its body.
    pub fn of_reply(reply: &Reply) -> Seen {
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "proxy reply: {}",
            reply.text()
        );
        Seen::parse(&reply.body)
    }

    /// Every value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers.get(name).cloned().unwrap_or_default()
    }
}

/// `/trailers`: echoes the request trailers and adds one of its own.
async fn trailers(req: Request<Incoming>) -> Response<TestBody> {
    let mut body = req.into_body();
    let mut received = 0usize;
    let mut request_trailers = HeaderMap::new();
    while let Some(Ok(frame)) = body.frame().await {
        match frame.into_data() {
            Ok(data) => received += data.len(),
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    request_trailers.extend(trailers);
                }
            }
        }
    }
    let mut response_trailers = HeaderMap::new();
    for (name, value) in &request_trailers {
        let echoed = http::HeaderName::from_bytes(format!("x-echo-{name}").as_bytes())
            .expect("echo trailer name");
        response_trailers.append(echoed, value.clone());
    }
    response_trailers.insert("x-response-trailer", HeaderValue::from_static("done"));
    let declared: Vec<&str> = response_trailers.keys().map(|k| k.as_str()).collect();
    let declared = HeaderValue::from_str(&declared.join(", ")).expect("trailer header");
    let seen_trailers: Vec<String> = request_trailers
        .iter()
        .map(|(name, value)| format!("{name}={}", String::from_utf8_lossy(value.as_bytes())))
        .collect();
    let text = format!(
        "received {received} bytes; trailers [{}]",
        seen_trailers.join(", ")
    );
    let (tx, body) = ChannelBody::with_capacity(8);
    tokio::spawn(async move {
        let _ = tx.send(Frame::data(Bytes::from(text))).await;
        let _ = tx.send(Frame::trailers(response_trailers)).await;
    });
    let mut resp = Response::new(body.boxed());
    resp.headers_mut().insert(http::header::TRAILER, declared);
    resp
}

// ---------------------------------------------------------------------------
// WebSocket echo
// ---------------------------------------------------------------------------

fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    let has_token = |name: http::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    req.version() == Version::HTTP_11
        && has_token(http::header::CONNECTION, "upgrade")
        && has_token(http::header::UPGRADE, "websocket")
}

fn websocket(state: Arc<Shared>, mut req: Request<Incoming>) -> Response<TestBody> {
    let key = req.headers().get("sec-websocket-key").cloned();
    let version_ok = req
        .headers()
        .get("sec-websocket-version")
        .is_some_and(|v| v == "13");
    let Some(key) = key.filter(|_| version_ok) else {
        let mut resp = Response::new(full("WebSocket handshake needs a key and version 13"));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        state.websockets.fetch_add(1, Ordering::SeqCst);
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            let reply = match message {
                Message::Text(text) => Message::text(format!("{}: {}", state.name, text.as_str())),
                Message::Binary(data) => Message::Binary(data),
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept)
        .body(empty())
        .expect("101 response")
}

// ---------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

async fn grpc(name: &str, req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return grpc_trailers_only(13, "request body error"),
    };
    let request = grpc_messages(body);
    let replies: Vec<Bytes> = match path.as_str() {
        GRPC_SAY => request,
        GRPC_COUNT => {
            let n: usize = request
                .first()
                .and_then(|m| std::str::from_utf8(m).ok())
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            (1..=n).map(|i| Bytes::from(i.to_string())).collect()
        }
        GRPC_STALL => std::future::pending().await,
        _ => return grpc_trailers_only(12, "unknown method"),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("grpc-message", HeaderValue::from_static("OK"));
    trailers.insert(
        "x-backend",
        HeaderValue::from_str(name).expect("backend name is a header value"),
    );
    let (tx, body) = ChannelBody::with_capacity(8);
    tokio::spawn(async move {
        for reply in replies {
            if tx.send(Frame::data(grpc_frame(&reply))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Frame::trailers(trailers)).await;
    });
    let mut resp = Response::new(body.boxed());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    resp
}

fn grpc_trailers_only(status: u16, message: &'static str) -> Response<TestBody> {
    let mut resp = Response::new(empty());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(status));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    resp
}
