//! Protocol test kit: a private CA that issues certificates (rcgen), a fake
//! backend that speaks HTTP/1.1, h2c and TLS with ALPN and also serves
//! WebSocket and gRPC echo services, a hand-made gRPC client on hyper's h2, a
//! TLS probe that reports the negotiated ALPN and the certificate's names, and
//! a raw HTTP/1.x connection for the corner cases clients usually smooth over.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sluicegate::upstream::tls::NoVerification;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{ChannelBody, PATIENCE, Reply, TestBody, TestDir, empty, full};

/// The gRPC services of [`ProtocolBackend`].
pub const GRPC_SAY: &str = "/echo.Echo/Say";
pub const GRPC_COUNT: &str = "/echo.Echo/Count";
/// Never answers (for deadline tests).
pub const GRPC_STALL: &str = "/echo.Echo/Stall";

fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A private CA in a fresh [`TestDir`]; `ca.pem` is written at once and every
/// certificate it issues lands next to it.
pub struct Pki {
    pub dir: TestDir,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate and its key, as PEM files and as DER.
#[derive(Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = TestDir::new(tag);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("sluicegate test CA {tag}"),
        );
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        dir.write("ca.pem", &issuer.pem());
        Pki { dir, issuer }
    }

    /// `ca.pem`, the CA certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.file("ca.pem")
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Issues a certificate for `names` (DNS names, `*.wildcards` or IPs),
    /// written as `{stem}.pem` and `{stem}.key`.
    pub fn leaf(&self, stem: &str, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].clone());
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let (cert_name, key_name) = (format!("{stem}.pem"), format!("{stem}.key"));
        self.dir.write(&cert_name, &cert.pem());
        self.dir.write(&key_name, &key.serialize_pem());
        Leaf {
            cert: self.dir.file(&cert_name),
            key: self.dir.file(&key_name),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// The usual server certificate: `localhost` and 127.0.0.1.
    pub fn localhost(&self) -> Leaf {
        self.leaf("localhost", &["localhost", "127.0.0.1"])
    }

    /// A client config that trusts only this CA and offers `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).expect("add CA root");
        let mut config = ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

impl Leaf {
    /// A server config with this certificate, offering `alpn` (empty: no ALPN).
    pub fn server_config(&self, alpn: &[&[u8]]) -> ServerConfig {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .expect("server certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A `[[listeners]]` table terminating TLS with this certificate.
    pub fn listener(&self) -> String {
        self.listener_at("127.0.0.1:0")
    }

    /// The same at placeholder address `addr` (`TestProxy` binds its own;
    /// two listeners need two different placeholders).
    pub fn listener_at(&self, addr: &str) -> String {
        format!(
            "[[listeners]]\naddr = \"{addr}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            self.cert.display(),
            self.key.display()
        )
    }

    /// `{ cert = "…", key = "…" }` for a listener's `sni` list.
    pub fn pair(&self) -> String {
        format!(
            "{{ cert = \"{}\", key = \"{}\" }}",
            self.cert.display(),
            self.key.display()
        )
    }
}

// ---------------------------------------------------------------------------
// Config text
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// The protocol backend
// ---------------------------------------------------------------------------

/// A fake backend on 127.0.0.1:0 that speaks HTTP/1.1 and h2c, or TLS with
/// ALPN (`h2` and/or `http/1.1`), and answers by what the request is:
///
/// - a WebSocket upgrade (HTTP/1.1, key and version 13 required, else 400):
///   echoes each text message as `"{name}: {text}"`;
/// - `content-type: application/grpc`: [`GRPC_SAY`] echoes its one message,
///   [`GRPC_COUNT`] with message `N` streams the messages `1`..`N`, both
///   ending with trailers `grpc-status: 0`, `grpc-message: OK` and
///   `x-backend: NAME`; [`GRPC_STALL`] never answers; others: status 12;
/// - `/trailers`: reads the body and its trailers and answers, chunked,
///   `received N bytes; trailers [name=value, …]` with trailers
///   `x-echo-{name}` for each request trailer and `x-response-trailer: done`
///   (declared in a `Trailer` header);
/// - `/chunked`: a body of unknown length (`chunk-1chunk-2`);
/// - `/sized/{n}`: `n` bytes with an explicit `Content-Length`;
/// - `/gate/{n}`: holds the request until `n` requests wait at the gate;
/// - anything else: JSON of what it saw ([`Seen`]).
///
/// Every answer carries `x-backend: NAME`.
pub struct ProtocolBackend {
    pub name: String,
    pub addr: SocketAddr,
    state: Arc<ProtocolState>,
    accept_loop: JoinHandle<()>,
}

struct ProtocolState {
    name: String,
    connections: AtomicUsize,
    hits: AtomicUsize,
    websockets: AtomicUsize,
    at_gate: AtomicUsize,
    gate: Notify,
}

/// What one connection negotiated.
#[derive(Debug, Clone, Default)]
struct ConnInfo {
    tls: bool,
    alpn: Option<String>,
    sni: Option<String>,
}

impl ProtocolBackend {
    /// Cleartext: HTTP/1.1 and h2c with prior knowledge.
    pub async fn cleartext(name: &str) -> ProtocolBackend {
        ProtocolBackend::start(name, None).await
    }

    /// TLS with `leaf`, offering ALPN `h2` and `http/1.1`.
    pub async fn tls(name: &str, leaf: &Leaf) -> ProtocolBackend {
        ProtocolBackend::tls_with_alpn(name, leaf, &[b"h2", b"http/1.1"]).await
    }

    /// TLS with `leaf`, offering exactly `alpn`.
    pub async fn tls_with_alpn(name: &str, leaf: &Leaf, alpn: &[&[u8]]) -> ProtocolBackend {
        let acceptor = TlsAcceptor::from(Arc::new(leaf.server_config(alpn)));
        ProtocolBackend::start(name, Some(acceptor)).await
    }

    async fn start(name: &str, tls: Option<TlsAcceptor>) -> ProtocolBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind protocol backend");
        let addr = listener.local_addr().expect("protocol backend addr");
        let state = Arc::new(ProtocolState {
            name: name.to_string(),
            connections: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
            websockets: AtomicUsize::new(0),
            at_gate: AtomicUsize::new(0),
            gate: Notify::new(),
        });
        let accept_state = Arc::clone(&state);
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&accept_state);
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve_backend_conn(stream, ConnInfo::default(), state).await,
                        Some(acceptor) => {
                            // Untrusting clients abort the handshake: part of some tests.
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let (_, session) = stream.get_ref();
                            let info = ConnInfo {
                                tls: true,
                                alpn: session
                                    .alpn_protocol()
                                    .map(|p| String::from_utf8_lossy(p).into_owned()),
                                sni: session.server_name().map(str::to_string),
                            };
                            serve_backend_conn(stream, info, state).await;
                        }
                    }
                });
            }
        });
        ProtocolBackend {
            name: name.to_string(),
            addr,
            state,
            accept_loop,
        }
    }

    /// `127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// `https://127.0.0.1:port`.
    pub fn https_endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `https://localhost:port`.
    pub fn https_localhost(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests received (counted when their headers arrive).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// WebSocket sessions opened.
    pub fn websockets(&self) -> usize {
        self.state.websockets.load(Ordering::SeqCst)
    }
}

impl Drop for ProtocolBackend {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn serve_backend_conn<S>(stream: S, info: ConnInfo, state: Arc<ProtocolState>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let service = service_fn(move |req| {
        let (state, info) = (Arc::clone(&state), Arc::clone(&info));
        async move { Ok::<_, Infallible>(answer(state, &info, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    // The proxy hanging up mid-request is part of some tests.
    let _ = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await;
}

async fn answer(
    state: Arc<ProtocolState>,
    info: &ConnInfo,
    req: Request<Incoming>,
) -> Response<TestBody> {
    state.hits.fetch_add(1, Ordering::SeqCst);
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
async fn gate(state: &ProtocolState, want: usize) {
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

fn websocket(state: Arc<ProtocolState>, mut req: Request<Incoming>) -> Response<TestBody> {
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

/// Sends `text` and returns the next text message.
pub async fn ws_echo<S>(ws: &mut WebSocketStream<S>, text: &str) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::text(text))
        .await
        .expect("send WebSocket message");
    let next = tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(reply))) => return reply.as_str().to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    });
    next.await.expect("WebSocket echo within PATIENCE")
}

// ---------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// One length-prefixed gRPC message (uncompressed).
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(message.len()).expect("message fits a gRPC frame"));
    buf.put_slice(message);
    buf.freeze()
}

/// Splits a gRPC body into its messages; panics on a torn frame.
pub fn grpc_messages(mut body: Bytes) -> Vec<Bytes> {
    let mut messages = Vec::new();
    while body.has_remaining() {
        assert!(body.len() >= 5, "torn gRPC frame header: {body:?}");
        let compressed = body.get_u8();
        assert_eq!(compressed, 0, "compressed gRPC message");
        let len = body.get_u32() as usize;
        assert!(
            body.len() >= len,
            "torn gRPC message: want {len}, have {}",
            body.len()
        );
        messages.push(body.split_to(len));
    }
    messages
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

/// A gRPC call's outcome, read to the end.
#[derive(Debug)]
pub struct GrpcReply {
    pub http_status: StatusCode,
    pub headers: HeaderMap,
    pub messages: Vec<String>,
    /// Empty for a trailers-only answer.
    pub trailers: HeaderMap,
}

impl GrpcReply {
    /// `grpc-status` from the trailers, or from the headers of a
    /// trailers-only answer.
    pub fn grpc_status(&self) -> Option<String> {
        self.status_field("grpc-status")
    }

    pub fn grpc_message(&self) -> Option<String> {
        self.status_field("grpc-message")
    }

    fn status_field(&self, name: &str) -> Option<String> {
        self.trailers
            .get(name)
            .or_else(|| self.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// A trailer's value.
    pub fn trailer(&self, name: &str) -> Option<String> {
        self.trailers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    pub fn content_type(&self) -> Option<String> {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A gRPC client on one HTTP/2 connection (h2c or TLS), hand-made on hyper.
pub struct GrpcClient {
    sender: hyper::client::conn::http2::SendRequest<TestBody>,
    scheme: &'static str,
    authority: String,
}

impl GrpcClient {
    /// h2c with prior knowledge; `authority` is sent as `:authority`.
    pub async fn h2c(addr: SocketAddr, authority: &str) -> GrpcClient {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        GrpcClient::handshake(stream, "http", authority).await
    }

    /// TLS trusting `pki`'s CA, SNI and verified name `server_name`, ALPN h2.
    pub async fn tls(
        addr: SocketAddr,
        pki: &Pki,
        server_name: &str,
        authority: &str,
    ) -> GrpcClient {
        let stream = tls_connect(addr, pki, server_name, &[b"h2"]).await;
        assert_eq!(
            stream.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "the proxy negotiates h2"
        );
        GrpcClient::handshake(stream, "https", authority).await
    }

    async fn handshake<S>(stream: S, scheme: &'static str, authority: &str) -> GrpcClient
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        GrpcClient {
            sender,
            scheme,
            authority: authority.to_string(),
        }
    }

    /// Calls `method` (`/pkg.Service/Method`) with `messages` and reads the
    /// whole answer: messages, then trailers.
    pub async fn call(&mut self, method: &str, messages: &[&str]) -> GrpcReply {
        let mut body = BytesMut::new();
        for message in messages {
            body.extend_from_slice(&grpc_frame(message.as_bytes()));
        }
        let req = Request::builder()
            .method(Method::POST)
            .version(Version::HTTP_2)
            .uri(format!("{}://{}{method}", self.scheme, self.authority))
            .header(CONTENT_TYPE, "application/grpc")
            .header(TE, "trailers")
            .body(full(body.freeze()))
            .expect("valid gRPC request");
        let call = async {
            self.sender.ready().await.expect("h2 connection ready");
            let resp = self.sender.send_request(req).await.expect("gRPC request");
            let (parts, mut body) = resp.into_parts();
            let mut data = BytesMut::new();
            let mut trailers = HeaderMap::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.expect("gRPC response frame");
                match frame.into_data() {
                    Ok(chunk) => data.extend_from_slice(&chunk),
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            trailers.extend(t);
                        }
                    }
                }
            }
            let messages = grpc_messages(data.freeze())
                .into_iter()
                .map(|m| String::from_utf8_lossy(&m).into_owned())
                .collect();
            GrpcReply {
                http_status: parts.status,
                headers: parts.headers,
                messages,
                trailers,
            }
        };
        tokio::time::timeout(PATIENCE, call)
            .await
            .expect("gRPC call within PATIENCE")
    }
}

// ---------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// TLS clients
// ---------------------------------------------------------------------------

/// A TLS connection to `addr` trusting only `pki`'s CA, with SNI and verified
/// name `server_name`, offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    pki: &Pki,
    server_name: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect to proxy");
    let name = ServerName::try_from(server_name.to_string()).expect("valid server name");
    TlsConnector::from(Arc::new(pki.client_config(alpn)))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the proxy")
}

/// What a TLS handshake showed: the ALPN the server picked and the names of
/// the certificate it presented (DNS names, then IPs).
#[derive(Debug)]
pub struct TlsProbe {
    pub alpn: Option<String>,
    pub names: Vec<String>,
    pub stream: tokio_rustls::client::TlsStream<TcpStream>,
}

/// Handshakes with `addr` sending SNI `server_name` (an IP sends none) and
/// offering `alpn`; accepts any certificate so the test can look at it.
pub async fn tls_probe(addr: SocketAddr, server_name: &str, alpn: &[&[u8]]) -> TlsProbe {
    let provider = ring();
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification::new(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect to proxy");
    let name = ServerName::try_from(server_name.to_string()).expect("valid server name");
    let stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the proxy");
    let (_, session) = stream.get_ref();
    let alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let names = session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|leaf| subject_alt_names(leaf))
        .unwrap_or_default();
    TlsProbe {
        alpn,
        names,
        stream,
    }
}

/// The subjectAltName entries of a DER certificate: DNS names as written,
/// IP addresses formatted. A minimal DER walk, enough for rcgen's output.
pub fn subject_alt_names(der: &[u8]) -> Vec<String> {
    // OID 2.5.29.17, subjectAltName.
    const SAN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x11];
    let Some(at) = der.windows(SAN_OID.len()).position(|w| w == SAN_OID) else {
        return Vec::new();
    };
    let mut rest = &der[at + SAN_OID.len()..];
    // An optional `critical` BOOLEAN, then the OCTET STRING holding the value.
    let Some((mut tag, mut value, mut after)) = der_tlv(rest) else {
        return Vec::new();
    };
    if tag == 0x01 {
        rest = after;
        let Some(next) = der_tlv(rest) else {
            return Vec::new();
        };
        (tag, value, after) = next;
    }
    let _ = after;
    if tag != 0x04 {
        return Vec::new();
    }
    let Some((0x30, mut names, _)) = der_tlv(value) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some((tag, content, next)) = der_tlv(names) {
        match tag {
            0x82 => out.push(String::from_utf8_lossy(content).into_owned()),
            0x87 if content.len() == 4 => {
                let octets: [u8; 4] = content.try_into().expect("4 bytes");
                out.push(std::net::Ipv4Addr::from(octets).to_string());
            }
            0x87 if content.len() == 16 => {
                let octets: [u8; 16] = content.try_into().expect("16 bytes");
                out.push(std::net::Ipv6Addr::from(octets).to_string());
            }
            _ => {}
        }
        names = next;
    }
    out
}

/// One DER tag-length-value: (tag, content, what follows).
fn der_tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, buf) = buf.split_first()?;
    let (&first, mut buf) = buf.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || buf.len() < count {
            return None;
        }
        let len = buf[..count]
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        buf = &buf[count..];
        len
    };
    if buf.len() < len {
        return None;
    }
    Some((tag, &buf[..len], &buf[len..]))
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.x
// ---------------------------------------------------------------------------

/// A response head as it came off the wire.
#[derive(Debug, Clone)]
pub struct RawHead {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
}

impl RawHead {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    }
}

/// A response body as it came off the wire, chunked framing removed.
#[derive(Debug, Clone, Default)]
pub struct RawBody {
    pub data: Vec<u8>,
    /// Trailer fields of a chunked body, lower-case names.
    pub trailers: Vec<(String, String)>,
}

impl RawBody {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A plain TCP connection speaking HTTP/1.x by hand; every read gives up
/// after [`PATIENCE`].
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        stream.set_nodelay(true).expect("nodelay");
        RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to proxy");
    }

    /// Reads more bytes into the buffer; false at end of stream.
    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk))
            .await
            .expect("proxy answered within PATIENCE")
            .unwrap_or(0);
        if n == 0 {
            self.eof = true;
            return false;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        true
    }

    /// The bytes up to and including the next CRLF.
    async fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..at + 2).collect();
                return String::from_utf8_lossy(&line[..at]).into_owned();
            }
            assert!(
                self.fill().await,
                "connection closed mid-line; had {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    async fn exactly(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill().await,
                "connection closed with {} of {n} bytes",
                self.buf.len()
            );
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one response head (status line and headers).
    pub async fn read_head(&mut self) -> RawHead {
        let status_line = self.line().await;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        assert!(
            version.starts_with("HTTP/1."),
            "not an HTTP/1.x status line: {status_line:?}"
        );
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status code in {status_line:?}"));
        let headers = self.fields().await;
        RawHead {
            version,
            status,
            headers,
        }
    }

    /// Header or trailer fields up to the empty line.
    async fn fields(&mut self) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                return fields;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("malformed field line {line:?}"));
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }

    /// Reads the body `head` announces: chunked, by Content-Length, or to the
    /// end of the connection. `no_body` for HEAD answers and 1xx/204/304.
    pub async fn read_body(&mut self, head: &RawHead, no_body: bool) -> RawBody {
        if no_body {
            return RawBody::default();
        }
        if head.is_chunked() {
            let mut data = Vec::new();
            loop {
                let size_line = self.line().await;
                let size = size_line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
                if size == 0 {
                    let trailers = self.fields().await;
                    return RawBody { data, trailers };
                }
                data.extend(self.exactly(size).await);
                let crlf = self.exactly(2).await;
                assert_eq!(crlf, b"\r\n", "chunk not followed by CRLF");
            }
        }
        if let Some(len) = head.header("content-length") {
            let len: usize = len.parse().expect("numeric content-length");
            return RawBody {
                data: self.exactly(len).await,
                trailers: Vec::new(),
            };
        }
        RawBody {
            data: self.read_to_close().await,
            trailers: Vec::new(),
        }
    }

    /// Everything until the peer closes (panics after [`PATIENCE`]).
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// Whether the peer closed the connection with nothing more to read.
    pub async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }

    /// Bytes read but not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}
