//! A small etcd v3 client over etcd's JSON gateway (`POST /v3/...`), on
//! hyper's HTTP/1.1 client connections, with the timeouts and member
//! failover etcd's own clients leave to the caller.
//!
//! Why the gateway rather than gRPC (`etcd-client`): no code generation or
//! `protoc` at build time, one HTTP stack in the binary, and every call's
//! timeout, retry and member rotation in plain sight here. The gateway is
//! part of every etcd v3 server (3.4 and later serve `/v3/`). Keys and
//! values travel base64-encoded; 64-bit numbers as JSON strings.
//!
//! Each unary call has [`CALL_TIMEOUT`]; a failure moves to the next member
//! and tries again, up to once per member, within the caller's deadline. A
//! watch is one long response on its own connection ([`Watch`]); its caller
//! resumes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::pem;
use crate::config::{EtcdUrl, FleetConfig};

/// One unary call to one member.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1000);
/// Dialling a member (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Largest response read from a unary call.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No member answered in time.
    #[error("etcd is unreachable: {0}")]
    Unreachable(String),
    /// A member answered with an error (etcd's gRPC code and message).
    #[error("etcd refused the call: {message} (code {code})")]
    Refused { code: i64, message: String },
    /// A watch's start revision was compacted away.
    #[error("revision {0} was compacted")]
    Compacted(i64),
    #[error("unexpected answer from etcd: {0}")]
    Protocol(String),
}

/// gRPC code etcd uses for an expired or missing auth token.
const UNAUTHENTICATED: i64 = 16;

/// The header of every etcd answer.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Header {
    /// etcd's cluster id is any 64-bit value.
    #[serde(default, deserialize_with = "uint")]
    pub cluster_id: u64,
    #[serde(default, deserialize_with = "int")]
    pub revision: i64,
}

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

#[derive(Deserialize)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int")]
    create_revision: i64,
    #[serde(default, deserialize_with = "int")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "int")]
    lease: i64,
}

impl RawKv {
    fn decode(self) -> Result<Kv, EtcdError> {
        let key = BASE64
            .decode(&self.key)
            .map_err(|e| EtcdError::Protocol(format!("key: {e}")))?;
        Ok(Kv {
            key: String::from_utf8_lossy(&key).into_owned(),
            value: BASE64
                .decode(&self.value)
                .map_err(|e| EtcdError::Protocol(format!("value: {e}")))?,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: self.lease,
        })
    }
}

/// One event of a watch: a put (with the new value) or a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub delete: bool,
    pub kv: Kv,
}

/// A comparison of a transaction.
#[derive(Debug, Clone)]
pub enum Compare {
    /// The key's `mod_revision` is this (0: the key does not exist).
    ModRevision(String, i64),
    /// The key's value is exactly this.
    Value(String, Vec<u8>),
}

impl Compare {
    /// The key compared.
    pub fn key(&self) -> &str {
        match self {
            Compare::ModRevision(key, _) | Compare::Value(key, _) => key,
        }
    }

    /// Whether `kv` (the key as read; `None`: absent) satisfies this.
    pub fn holds(&self, kv: Option<&Kv>) -> bool {
        match (self, kv) {
            (Compare::ModRevision(_, 0), None) => true,
            (Compare::ModRevision(_, revision), Some(kv)) => kv.mod_revision == *revision,
            (Compare::Value(_, value), Some(kv)) => kv.value == *value,
            _ => false,
        }
    }
}

/// An operation of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    Delete(String),
    /// Reads one key.
    Get(String),
    /// Reads every key starting with this.
    RangePrefix(String),
}

/// A transaction's answer.
#[derive(Debug)]
pub struct TxnAnswer {
    pub header: Header,
    pub succeeded: bool,
    /// The keys read by `Get` and `RangePrefix` operations of the branch taken, in order.
    pub ranges: Vec<Vec<Kv>>,
}

/// The end of the range of keys that start with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// An etcd cluster reached through its members' JSON gateways.
pub struct Etcd {
    members: Vec<EtcdUrl>,
    /// The member tried first.
    current: AtomicUsize,
    tls: Option<TlsConnector>,
    auth: Option<(String, String)>,
    token: std::sync::Mutex<Option<String>>,
    /// One kept connection (its member's index), reused by unary calls.
    idle: std::sync::Mutex<Option<(usize, http1::SendRequest<Full<Bytes>>)>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

/// A stream that is TCP or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Etcd {
    /// A client for `config`'s members: reads its TLS files and the
    /// password's environment variable.
    pub fn new(config: &FleetConfig) -> Result<Etcd, String> {
        let tls = if config.etcd.iter().any(|u| u.https) {
            Some(tls_connector(config)?)
        } else {
            None
        };
        let auth = match &config.auth {
            Some(auth) => {
                let password = std::env::var(&auth.password_env).map_err(|_| {
                    format!(
                        "fleet.password_env: environment variable `{}` is not set",
                        auth.password_env
                    )
                })?;
                Some((auth.username.clone(), password))
            }
            None => None,
        };
        Ok(Etcd {
            members: config.etcd.clone(),
            current: AtomicUsize::new(0),
            tls,
            auth,
            token: std::sync::Mutex::new(None),
            idle: std::sync::Mutex::new(None),
        })
    }

    /// Every key that starts with `prefix`, and the revision they were read at.
    pub async fn get_prefix(&self, prefix: &str) -> Result<(Header, Vec<Kv>), EtcdError> {
        let body = json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))});
        let answer = self.call("/v3/kv/range", &body).await?;
        Ok((header(&answer)?, kvs(&answer)?))
    }

    /// Applies `success` if every comparison holds, else `failure`, atomically.
    pub async fn txn(
        &self,
        compare: &[Compare],
        success: &[Op],
        failure: &[Op],
    ) -> Result<TxnAnswer, EtcdError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::ModRevision(key, revision) => json!({
                    "key": b64(key.as_bytes()), "target": "MOD", "result": "EQUAL",
                    "mod_revision": revision.to_string(),
                }),
                Compare::Value(key, value) => json!({
                    "key": b64(key.as_bytes()), "target": "VALUE", "result": "EQUAL",
                    "value": b64(value),
                }),
            })
            .collect();
        let ops = |ops: &[Op]| -> Vec<Value> {
            ops.iter()
                .map(|op| match op {
                    Op::Put { key, value, lease } => json!({"request_put": {
                        "key": b64(key.as_bytes()), "value": b64(value), "lease": lease.to_string(),
                    }}),
                    Op::Delete(key) => {
                        json!({"request_delete_range": {"key": b64(key.as_bytes())}})
                    }
                    Op::Get(key) => json!({"request_range": {"key": b64(key.as_bytes())}}),
                    Op::RangePrefix(prefix) => json!({"request_range": {
                        "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)),
                    }}),
                })
                .collect()
        };
        let body = json!({"compare": compare, "success": ops(success), "failure": ops(failure)});
        let answer = self.call("/v3/kv/txn", &body).await?;
        let ranges = answer
            .get("responses")
            .and_then(Value::as_array)
            .map(|responses| {
                responses
                    .iter()
                    .filter_map(|r| r.get("response_range"))
                    .map(kvs)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(TxnAnswer {
            header: header(&answer)?,
            succeeded: answer
                .get("succeeded")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            ranges,
        })
    }

    /// A new lease of `ttl`; returns its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let body = json!({"TTL": ttl.as_secs().max(1).to_string()});
        let answer = self.call("/v3/lease/grant", &body).await?;
        int_field(&answer, "ID")
    }

    /// Renews `lease`; `Ok(false)` when it has expired (or never was).
    pub async fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        let body = json!({"ID": lease.to_string()});
        let answer = self.call("/v3/lease/keepalive", &body).await?;
        let result = answer.get("result").unwrap_or(&answer);
        Ok(int_field(result, "TTL").unwrap_or(0) > 0)
    }

    /// Ends `lease` now: its keys are deleted.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        let body = json!({"ID": lease.to_string()});
        match self.call("/v3/lease/revoke", &body).await {
            Ok(_) => Ok(()),
            // Already gone.
            Err(EtcdError::Refused { code: 5, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Compacts the history up to `revision` (tests and operators).
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let body = json!({"revision": revision.to_string(), "physical": true});
        self.call("/v3/kv/compaction", &body).await.map(|_| ())
    }

    /// Watches every key under `prefix` from `start_revision` on, on the
    /// member tried first. Created with `hasleader`, and checked by the
    /// caller's own reads, so a member cut off from quorum is noticed.
    pub async fn watch(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<(Watch, usize), EtcdError> {
        let body = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let mut last = EtcdError::Unreachable("no etcd member configured".into());
        for _ in 0..self.members.len() {
            let index = self.current.load(Ordering::Relaxed) % self.members.len();
            let attempt = async {
                let mut sender = self.dial(index).await?;
                let req = self.request(index, "/v3/watch", &body, true)?;
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| EtcdError::Unreachable(e.to_string()))?;
                if resp.status() != StatusCode::OK {
                    return Err(EtcdError::Unreachable(format!(
                        "watch answered {}",
                        resp.status()
                    )));
                }
                Ok((sender, resp.into_body()))
            };
            match tokio::time::timeout(CALL_TIMEOUT, attempt).await {
                Ok(Ok((sender, body))) => {
                    let mut watch = Watch {
                        body,
                        buffer: BytesMut::new(),
                        _sender: sender,
                    };
                    // The first message says whether the watch was created.
                    match tokio::time::timeout(CALL_TIMEOUT, watch.next()).await {
                        Ok(Ok(WatchMessage::Created)) => return Ok((watch, index)),
                        Ok(Ok(WatchMessage::Events(..))) => {
                            return Err(EtcdError::Protocol("events before creation".into()));
                        }
                        Ok(Err(e @ EtcdError::Compacted(_))) => return Err(e),
                        Ok(Err(e)) => last = e,
                        Err(_) => last = EtcdError::Unreachable("watch creation timed out".into()),
                    }
                }
                Ok(Err(e @ EtcdError::Refused { .. })) => return Err(e),
                Ok(Err(e)) => last = e,
                Err(_) => last = EtcdError::Unreachable("watch timed out".into()),
            }
            self.rotate(index);
        }
        Err(last)
    }

    /// Reads `key` on member `index` only (a linearizable read, so it fails
    /// on a member without quorum); a failure moves on from that member.
    pub async fn heartbeat(&self, index: usize, key: &str) -> Result<Header, EtcdError> {
        let body = json!({"key": b64(key.as_bytes())});
        let result =
            tokio::time::timeout(CALL_TIMEOUT, self.call_member(index, "/v3/kv/range", &body))
                .await
                .unwrap_or_else(|_| Err(EtcdError::Unreachable("heartbeat timed out".into())));
        match result {
            Ok(answer) => header(&answer),
            Err(e) => {
                self.rotate(index);
                Err(e)
            }
        }
    }

    /// Moves on from member `index` after a failure.
    fn rotate(&self, index: usize) {
        let _ = self.current.compare_exchange(
            index,
            (index + 1) % self.members.len().max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// One unary call, on each member in turn until one answers.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let mut last = EtcdError::Unreachable("no etcd member configured".into());
        let mut reauthenticated = false;
        let mut tries = 0;
        while tries < self.members.len() {
            let index = self.current.load(Ordering::Relaxed) % self.members.len();
            match tokio::time::timeout(CALL_TIMEOUT, self.call_member(index, path, body)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(EtcdError::Refused { code, .. }))
                    if code == UNAUTHENTICATED && self.auth.is_some() && !reauthenticated =>
                {
                    reauthenticated = true;
                    if let Ok(mut token) = self.token.lock() {
                        *token = None;
                    }
                    continue;
                }
                // etcd said no: another member would say the same.
                Ok(Err(e @ EtcdError::Refused { .. })) => return Err(e),
                Ok(Err(e)) => last = e,
                Err(_) => last = EtcdError::Unreachable(format!("{path} timed out")),
            }
            tries += 1;
            self.rotate(index);
        }
        Err(last)
    }

    async fn call_member(
        &self,
        index: usize,
        path: &str,
        body: &Value,
    ) -> Result<Value, EtcdError> {
        if self.auth.is_some() && self.current_token().is_none() {
            self.authenticate(index).await?;
        }
        let req = self.request(index, path, body, false)?;
        let resp = self.send(index, req).await?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| EtcdError::Unreachable(e.to_string()))?
            .to_bytes();
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| EtcdError::Protocol(e.to_string()))?;
        if status != StatusCode::OK || value.get("error").is_some() {
            return Err(refusal(&value, status));
        }
        Ok(value)
    }

    async fn authenticate(&self, index: usize) -> Result<(), EtcdError> {
        let Some((name, password)) = &self.auth else {
            return Ok(());
        };
        let body = json!({"name": name, "password": password});
        let req = self.request(index, "/v3/auth/authenticate", &body, false)?;
        let resp = self.send(index, req).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| EtcdError::Unreachable(e.to_string()))?
            .to_bytes();
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| EtcdError::Protocol(e.to_string()))?;
        if status != StatusCode::OK {
            return Err(refusal(&value, status));
        }
        let token = value
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| EtcdError::Protocol("authenticate gave no token".into()))?;
        if let Ok(mut slot) = self.token.lock() {
            *slot = Some(token.to_string());
        }
        Ok(())
    }

    fn current_token(&self) -> Option<String> {
        self.token.lock().ok().and_then(|t| t.clone())
    }

    fn request(
        &self,
        index: usize,
        path: &str,
        body: &Value,
        watch: bool,
    ) -> Result<Request<Full<Bytes>>, EtcdError> {
        let member = &self.members[index];
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, member.authority.as_str())
            .header(header::CONTENT_TYPE, "application/json");
        if watch {
            // gRPC metadata through the gateway: refuse a watch on a member without a leader.
            builder = builder.header("grpc-metadata-hasleader", "true");
        }
        if let Some(token) = self.current_token() {
            builder = builder.header(header::AUTHORIZATION, token);
        }
        builder
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| EtcdError::Protocol(e.to_string()))
    }

    /// Sends on the kept connection to `index`, or a new one.
    async fn send(
        &self,
        index: usize,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, EtcdError> {
        let kept = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.take())
            .filter(|(i, sender)| *i == index && !sender.is_closed());
        let mut sender = match kept {
            Some((_, sender)) => sender,
            None => self.dial(index).await?,
        };
        sender
            .ready()
            .await
            .map_err(|e| EtcdError::Unreachable(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| EtcdError::Unreachable(e.to_string()))?;
        if let Ok(mut idle) = self.idle.lock() {
            *idle = Some((index, sender));
        }
        Ok(resp)
    }

    async fn dial(&self, index: usize) -> Result<http1::SendRequest<Full<Bytes>>, EtcdError> {
        let member = &self.members[index];
        let unreachable = |e: &dyn std::fmt::Display| {
            EtcdError::Unreachable(format!("{}: {e}", member.authority))
        };
        let connect = async {
            let tcp = TcpStream::connect(member.authority.as_str())
                .await
                .map_err(|e| unreachable(&e))?;
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn Stream> = match (&self.tls, member.https) {
                (Some(tls), true) => {
                    let name =
                        ServerName::try_from(member.host.clone()).map_err(|e| unreachable(&e))?;
                    Box::new(tls.connect(name, tcp).await.map_err(|e| unreachable(&e))?)
                }
                _ => Box::new(tcp),
            };
            Ok::<_, EtcdError>(stream)
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable(&"connect timed out"))??;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// A watch's messages, one JSON object per line of one long response.
pub struct Watch {
    body: Incoming,
    buffer: BytesMut,
    /// Kept so the connection lives as long as the watch.
    _sender: http1::SendRequest<Full<Bytes>>,
}

/// What one watch message says.
#[derive(Debug)]
pub enum WatchMessage {
    Created,
    Events(Header, Vec<Event>),
}

impl Watch {
    /// The next message; an error ends the watch.
    pub async fn next(&mut self) -> Result<WatchMessage, EtcdError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if let Some(message) = watch_message(text)? {
                    return Ok(message);
                }
                continue;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                        if self.buffer.len() > MAX_RESPONSE {
                            return Err(EtcdError::Protocol("watch message too large".into()));
                        }
                    }
                }
                Some(Err(e)) => return Err(EtcdError::Unreachable(e.to_string())),
                None => return Err(EtcdError::Unreachable("the watch ended".into())),
            }
        }
    }
}

/// One line of a watch; `None` for messages that say nothing to act on.
fn watch_message(text: &[u8]) -> Result<Option<WatchMessage>, EtcdError> {
    let value: Value =
        serde_json::from_slice(text).map_err(|e| EtcdError::Protocol(e.to_string()))?;
    if value.get("error").is_some() {
        return Err(refusal(
            value.get("error").unwrap_or(&value),
            StatusCode::OK,
        ));
    }
    let Some(result) = value.get("result") else {
        return Ok(None);
    };
    let compacted = int_field(result, "compact_revision").unwrap_or(0);
    if compacted > 0 {
        return Err(EtcdError::Compacted(compacted));
    }
    if result.get("canceled").and_then(Value::as_bool) == Some(true) {
        let reason = result
            .get("cancel_reason")
            .and_then(Value::as_str)
            .unwrap_or("canceled");
        return Err(EtcdError::Unreachable(format!("watch canceled: {reason}")));
    }
    if result.get("created").and_then(Value::as_bool) == Some(true) {
        return Ok(Some(WatchMessage::Created));
    }
    let header = header(result)?;
    let events = result
        .get("events")
        .and_then(Value::as_array)
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    let kv: RawKv =
                        serde_json::from_value(e.get("kv").cloned().unwrap_or_default())
                            .map_err(|e| EtcdError::Protocol(e.to_string()))?;
                    Ok(Event {
                        delete: e.get("type").and_then(Value::as_str) == Some("DELETE"),
                        kv: kv.decode()?,
                    })
                })
                .collect::<Result<Vec<_>, EtcdError>>()
        })
        .transpose()?
        .unwrap_or_default();
    // A progress notice has no events; it still moves the revision on.
    Ok(Some(WatchMessage::Events(header, events)))
}

fn refusal(value: &Value, status: StatusCode) -> EtcdError {
    let message = value
        .get("message")
        .or_else(|| value.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("no message")
        .to_string();
    let code = int_field(value, "code").unwrap_or(i64::from(status.as_u16()));
    // No leader, or the member is shutting down: another member may do.
    if message.contains("no leader") || message.contains("stopped") || code == 14 {
        return EtcdError::Unreachable(message);
    }
    EtcdError::Refused { code, message }
}

fn header(answer: &Value) -> Result<Header, EtcdError> {
    serde_json::from_value(answer.get("header").cloned().unwrap_or_default())
        .map_err(|e| EtcdError::Protocol(e.to_string()))
}

fn kvs(answer: &Value) -> Result<Vec<Kv>, EtcdError> {
    let Some(list) = answer.get("kvs").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|kv| {
            serde_json::from_value::<RawKv>(kv.clone())
                .map_err(|e| EtcdError::Protocol(e.to_string()))?
                .decode()
        })
        .collect()
}

fn int_field(value: &Value, name: &str) -> Result<i64, EtcdError> {
    match value.get(name) {
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| EtcdError::Protocol(format!("`{name}` is not a number"))),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| EtcdError::Protocol(format!("`{name}` is not a whole number"))),
        _ => Err(EtcdError::Protocol(format!("no `{name}`"))),
    }
}

/// A 64-bit number written as a JSON string (protobuf's JSON mapping) or a number.
fn int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    number(deserializer)
}

/// An unsigned 64-bit number (etcd's cluster id), the same way.
fn uint<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    number(deserializer)
}

fn number<'de, D, N>(deserializer: D) -> Result<N, D::Error>
where
    D: Deserializer<'de>,
    N: Deserialize<'de> + std::str::FromStr,
    N::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number<N> {
        Text(String),
        Number(N),
    }
    match Number::<N>::deserialize(deserializer)? {
        Number::Text(text) => text.parse().map_err(serde::de::Error::custom),
        Number::Number(n) => Ok(n),
    }
}

/// TLS to etcd: `tls.ca` (or the system roots) and an optional client certificate.
fn tls_connector(config: &FleetConfig) -> Result<TlsConnector, String> {
    let tls = config.tls.as_ref();
    let roots = match tls.and_then(|t| t.ca.as_ref()) {
        Some(ca) => pem::ca_file(ca).map_err(|e| format!("fleet.tls.ca: {e}"))?,
        None => pem::system_roots().0,
    };
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let client = match tls.and_then(|t| Some((t.cert.as_ref()?, t.key.as_ref()?))) {
        Some((cert, key)) => {
            let chain = pem::cert_chain(cert).map_err(|e| format!("fleet.tls.cert: {e}"))?;
            let key = pem::private_key(key).map_err(|e| format!("fleet.tls.key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("fleet.tls: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(prefix_end("/sg/"), b"/sg0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn watch_lines_read_as_events_compaction_or_creation() {
        let created = br#"{"result":{"header":{"revision":"3"},"created":true}}"#;
        assert!(matches!(
            watch_message(created),
            Ok(Some(WatchMessage::Created))
        ));
        let events = br#"{"result":{"header":{"cluster_id":"14841639068965178418","revision":"4"},"events":[{"kv":{"key":"Zm9v","mod_revision":"4","value":"cXV4"}},{"type":"DELETE","kv":{"key":"YmFy","mod_revision":"4"}}]}}"#;
        let Ok(Some(WatchMessage::Events(header, events))) = watch_message(events) else {
            panic!("events expected");
        };
        assert_eq!(
            (header.cluster_id, header.revision),
            (14841639068965178418, 4)
        );
        assert_eq!(events[0].kv.key, "foo");
        assert_eq!(events[0].kv.value, b"qux");
        assert!(!events[0].delete && events[1].delete);
        let compacted = br#"{"result":{"header":{},"canceled":true,"compact_revision":"3"}}"#;
        assert!(matches!(
            watch_message(compacted),
            Err(EtcdError::Compacted(3))
        ));
    }
}
