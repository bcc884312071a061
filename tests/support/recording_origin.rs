//! `RecordingOrigin`: a raw-TCP HTTP/1.1 origin that records exactly what it
//! parsed, for the differential suite (`tests/differential.rs`) and the
//! `h1_differential` fuzz target, which includes this file by path: it
//! depends on nothing but std, tokio and httparse.
//!
//! Each connection is parsed with httparse (head) and by hand (body, by
//! `Content-Length` or chunked), one request after the other. Every request
//! is answered `200` with a two-byte body; bytes that cannot be parsed are
//! recorded as [`OriginEvent::Unparsable`] and answered `400` and a close;
//! a connection that ends (or is still open when looked at) with a partial
//! request is recorded as [`OriginEvent::Incomplete`]. Bytes the proxy
//! sends past a request's end are parsed as the next request, so a body the
//! proxy forwarded without its framing shows up as what it is.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Header fields parsed per request head; more is [`OriginEvent::Unparsable`].
const MAX_FIELDS: usize = 512;

/// One header field as the origin parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginField {
    /// Lower-cased, for comparing.
    pub name: String,
    /// As it was on the wire.
    pub spelled: String,
    pub value: Vec<u8>,
}

/// One request as the origin parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRequest {
    pub method: String,
    pub target: String,
    /// The minor version: 1 for HTTP/1.1.
    pub version: u8,
    /// Every header field, in order.
    pub fields: Vec<OriginField>,
    /// The body, chunked framing removed.
    pub body: Vec<u8>,
    /// `Some` when the body came chunked: its trailer fields.
    pub trailers: Option<Vec<OriginField>>,
    /// The request's bytes, head and body, as they came.
    pub raw: Vec<u8>,
}

impl OriginRequest {
    /// Every value of the field `name` (lower-case), in order.
    pub fn values(&self, name: &str) -> Vec<&[u8]> {
        self.fields
            .iter()
            .filter(|f| f.name == name)
            .map(|f| f.value.as_slice())
            .collect()
    }
}

/// What the origin saw, in the order it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginEvent {
    /// A whole request; it was answered 200.
    Request(OriginRequest),
    /// Bytes that are not a request; answered 400, then the connection was
    /// closed. `raw` is everything from the start of the bad request on.
    Unparsable { reason: String, raw: Vec<u8> },
    /// The connection ended, or was still open when looked at, with these
    /// bytes of a request not yet complete; `head` when its head was.
    Incomplete {
        raw: Vec<u8>,
        head: Option<Box<OriginRequest>>,
    },
}

/// How the origin answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginMode {
    /// Keeps the connection open for the next request.
    KeepAlive,
    /// `connection: close`, then closes: every request on its own upstream
    /// connection (the fuzz target, which never restarts its origins).
    Close,
}

/// A raw-TCP origin on 127.0.0.1:0 that records every request it parses.
pub struct RecordingOrigin {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept_loop: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    /// Events of the current generation, with the connection they came on.
    events: Mutex<Vec<(usize, OriginEvent)>>,
    /// Connections still open: their generation and the bytes not yet parsed.
    open: Mutex<Vec<Open>>,
    accepted: AtomicUsize,
    /// Bumped by [`RecordingOrigin::clear`]; a connection of an older
    /// generation records nothing.
    generation: AtomicU64,
}

struct Open {
    conn: usize,
    generation: u64,
    pending: Arc<Mutex<Vec<u8>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RecordingOrigin {
    pub async fn start(mode: OriginMode) -> RecordingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind recording origin");
        let addr = listener.local_addr().expect("recording origin addr");
        let shared = Arc::new(Shared::default());
        let accept_shared = Arc::clone(&shared);
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let conn = accept_shared.accepted.fetch_add(1, Ordering::SeqCst);
                let generation = accept_shared.generation.load(Ordering::SeqCst);
                let pending = Arc::new(Mutex::new(Vec::new()));
                lock(&accept_shared.open).push(Open {
                    conn,
                    generation,
                    pending: Arc::clone(&pending),
                });
                let shared = Arc::clone(&accept_shared);
                tokio::spawn(async move {
                    let recorder = Recorder {
                        shared: &shared,
                        conn,
                        generation,
                    };
                    serve(stream, mode, &recorder, &pending).await;
                    lock(&shared.open).retain(|o| o.conn != conn);
                });
            }
        });
        RecordingOrigin {
            addr,
            shared,
            accept_loop,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections of the current generation still open.
    pub fn open(&self) -> usize {
        let generation = self.shared.generation.load(Ordering::SeqCst);
        lock(&self.shared.open)
            .iter()
            .filter(|o| o.generation == generation)
            .count()
    }

    /// Waits up to `limit` until no connection of the current generation is
    /// open; false when some still are.
    pub async fn wait_closed(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.open() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// Everything seen so far, in order; then, for each connection still
    /// open with bytes not yet parsed, those as [`OriginEvent::Incomplete`].
    pub fn events(&self) -> Vec<OriginEvent> {
        let mut events: Vec<OriginEvent> = lock(&self.shared.events)
            .iter()
            .map(|(_, e)| e.clone())
            .collect();
        let generation = self.shared.generation.load(Ordering::SeqCst);
        for open in lock(&self.shared.open).iter() {
            let pending = lock(&open.pending).clone();
            if open.generation == generation && !pending.is_empty() {
                events.push(incomplete(pending));
            }
        }
        events
    }

    /// Forgets what was recorded; connections open now record nothing more.
    pub fn clear(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.shared.events).clear();
    }
}

impl Drop for RecordingOrigin {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

struct Recorder<'a> {
    shared: &'a Shared,
    conn: usize,
    generation: u64,
}

impl Recorder<'_> {
    fn record(&self, event: OriginEvent) {
        // Checked under the lock `clear` takes, so nothing stale slips in.
        let mut events = lock(&self.shared.events);
        if self.shared.generation.load(Ordering::SeqCst) == self.generation {
            events.push((self.conn, event));
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    mode: OriginMode,
    recorder: &Recorder<'_>,
    pending: &Mutex<Vec<u8>>,
) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match parse_request(&buf) {
            Parse::Done(req, used) => {
                let head = req.method == "HEAD";
                let close = mode == OriginMode::Close || asks_close(&req);
                buf.drain(..used);
                *lock(pending) = buf.clone();
                recorder.record(OriginEvent::Request(req));
                if stream.write_all(&answer(head, close)).await.is_err() {
                    break;
                }
                if close {
                    if !buf.is_empty() {
                        recorder.record(incomplete(std::mem::take(&mut buf)));
                    }
                    lock(pending).clear();
                    let _ = stream.shutdown().await;
                    return;
                }
                continue;
            }
            Parse::Invalid(reason) => {
                recorder.record(OriginEvent::Unparsable {
                    reason,
                    raw: std::mem::take(&mut buf),
                });
                lock(pending).clear();
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                let _ = stream.shutdown().await;
                return;
            }
            Parse::More => {}
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                *lock(pending) = buf.clone();
            }
        }
    }
    lock(pending).clear();
    if !buf.is_empty() {
        recorder.record(incomplete(buf));
    }
}

/// The origin's answer to every request it parsed.
fn answer(head: bool, close: bool) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-origin: recorded\r\n".to_vec();
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(b"ok");
    }
    out
}

fn asks_close(req: &OriginRequest) -> bool {
    req.values("connection")
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

fn incomplete(raw: Vec<u8>) -> OriginEvent {
    let head = match parse_head(&raw) {
        Ok(Some((req, _))) => Some(Box::new(req)),
        _ => None,
    };
    OriginEvent::Incomplete { raw, head }
}

enum Parse {
    Done(OriginRequest, usize),
    More,
    Invalid(String),
}

/// Where a request body ends.
enum Framing {
    Length(usize),
    Chunked,
}

/// One request at the start of `buf`.
fn parse_request(buf: &[u8]) -> Parse {
    if buf.is_empty() {
        return Parse::More;
    }
    let (mut req, head_len) = match parse_head(buf) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Parse::More,
        Err(reason) => return Parse::Invalid(reason),
    };
    let framing = match framing(&req) {
        Ok(framing) => framing,
        Err(reason) => return Parse::Invalid(reason),
    };
    let rest = &buf[head_len..];
    let used = match framing {
        Framing::Length(n) => {
            if rest.len() < n {
                return Parse::More;
            }
            req.body = rest[..n].to_vec();
            head_len + n
        }
        Framing::Chunked => match decode_chunked(rest) {
            Ok(Some(chunked)) => {
                req.body = chunked.body;
                req.trailers = Some(chunked.trailers);
                head_len + chunked.len
            }
            Ok(None) => return Parse::More,
            Err(reason) => return Parse::Invalid(format!("chunked body: {reason}")),
        },
    };
    req.raw = buf[..used].to_vec();
    Parse::Done(req, used)
}

/// A request head at the start of `buf`, body empty; `None` when partial.
fn parse_head(buf: &[u8]) -> Result<Option<(OriginRequest, usize)>, String> {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("request head: {e}")),
    };
    let fields = req.headers.iter().map(field).collect();
    Ok(Some((
        OriginRequest {
            method: req.method.unwrap_or_default().to_string(),
            target: req.path.unwrap_or_default().to_string(),
            version: req.version.unwrap_or_default(),
            fields,
            body: Vec::new(),
            trailers: None,
            raw: buf[..len].to_vec(),
        },
        len,
    )))
}

fn field(h: &httparse::Header<'_>) -> OriginField {
    OriginField {
        name: h.name.to_ascii_lowercase(),
        spelled: h.name.to_string(),
        value: h.value.to_vec(),
    }
}

/// RFC 9112 §6.3 for a request: `Transfer-Encoding` must end in chunked and
/// wins; `Content-Length` values must agree; neither means no body.
fn framing(req: &OriginRequest) -> Result<Framing, String> {
    let codings: Vec<&[u8]> = req
        .values("transfer-encoding")
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect();
    if !req.values("transfer-encoding").is_empty() {
        return match codings.last() {
            Some(last) if last.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err("transfer-encoding does not end in chunked".into()),
        };
    }
    let mut length: Option<usize> = None;
    for value in req.values("content-length") {
        for item in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            let n = std::str::from_utf8(item)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| format!("bad content-length {:?}", show(value)))?;
            if length.is_some_and(|l| l != n) {
                return Err("differing content-length values".into());
            }
            length = Some(n);
        }
    }
    Ok(Framing::Length(length.unwrap_or(0)))
}

/// A chunked body, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    pub body: Vec<u8>,
    pub trailers: Vec<OriginField>,
    /// Bytes of the encoding, up to and including the final CRLF.
    pub len: usize,
}

/// Decodes the chunked body at the start of `buf` (RFC 9112 §7.1), strictly:
/// CRLF line ends, hex sizes, extensions skipped. `None` when incomplete.
pub fn decode_chunked(buf: &[u8]) -> Result<Option<Chunked>, String> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find_crlf(&buf[at..]) else {
            return if buf.len() - at > 4096 {
                Err("chunk size line too long".into())
            } else {
                Ok(None)
            };
        };
        let line = &buf[at..at + line_end];
        let size_part = line.split(|&b| b == b';').next().unwrap_or(&[]);
        let size_text = std::str::from_utf8(size_part.trim_ascii_end())
            .map_err(|_| format!("chunk size {:?}", show(line)))?;
        if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("chunk size {:?}", show(line)));
        }
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("chunk size {:?}", show(line)))?;
        at += line_end + 2;
        if size == 0 {
            break;
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += size + 2;
    }
    // Trailer section: fields up to an empty line.
    let mut trailers = Vec::new();
    loop {
        let Some(line_end) = find_crlf(&buf[at..]) else {
            return Ok(None);
        };
        let line = &buf[at..at + line_end];
        at += line_end + 2;
        if line.is_empty() {
            return Ok(Some(Chunked {
                body,
                trailers,
                len: at,
            }));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!("trailer line {:?}", show(line)));
        };
        let name = std::str::from_utf8(&line[..colon])
            .map_err(|_| format!("trailer name {:?}", show(line)))?;
        trailers.push(OriginField {
            name: name.to_ascii_lowercase(),
            spelled: name.to_string(),
            value: line[colon + 1..].trim_ascii().to_vec(),
        });
    }
}

/// The data of a chunked body that stopped part way: every chunk's bytes
/// as far as they came (chunk sizes are the sender's choice; this is not).
pub fn chunked_data_so_far(buf: &[u8]) -> Vec<u8> {
    let mut at = 0;
    let mut data = Vec::new();
    while let Some(line_end) = find_crlf(&buf[at..]) {
        let line = &buf[at..at + line_end];
        let size_part = line.split(|&b| b == b';').next().unwrap_or(&[]);
        let Some(size) = std::str::from_utf8(size_part.trim_ascii_end())
            .ok()
            .and_then(|t| usize::from_str_radix(t, 16).ok())
        else {
            break;
        };
        at += line_end + 2;
        if size == 0 {
            break;
        }
        let end = (at + size).min(buf.len());
        data.extend_from_slice(&buf[at..end]);
        at = end + 2;
        if at > buf.len() {
            break;
        }
    }
    data
}

/// Whether a request's framing is chunked (its last transfer coding).
pub fn is_chunked(req: &OriginRequest) -> bool {
    matches!(framing(req), Ok(Framing::Chunked))
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Bytes for a message: printable ASCII as is, the rest escaped; a long run
/// is cut, with its length and a hash, so two texts are equal exactly when
/// the bytes are.
pub fn show(bytes: &[u8]) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    const LIMIT: usize = 72;
    let mut text: String = bytes
        .iter()
        .take(LIMIT)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > LIMIT {
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        text.push_str(&format!(
            "…({} bytes, hash {:016x})",
            bytes.len(),
            hasher.finish()
        ));
    }
    text
}
