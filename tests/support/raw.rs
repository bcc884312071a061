//! A raw HTTP/1.x client connection, for the corner cases clients usually
//! smooth over: exact bytes out, the response head and body as they came off
//! the wire.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PATIENCE;

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

/// One response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Field names as sent, with their values.
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The whole message as it came, for framing checks.
    pub wire: Vec<u8>,
}

impl RawResponse {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response (Content-Length or chunked; field names as sent) from `stream`, keeping
/// whatever follows in `pending`.
pub async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> RawResponse {
    read_response_to(stream, pending, false).await
}

/// [`read_response`], for a HEAD request when `head` (no body follows).
pub async fn read_response_to(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    head: bool,
) -> RawResponse {
    let read = async {
        loop {
            if let Some(raw) = take_response(pending, head) {
                return raw;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = stream.read(&mut chunk).await.expect("read response");
            assert!(n > 0, "connection closed mid-response: {pending:?}");
            pending.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("a response within PATIENCE")
}

pub fn take_response(pending: &mut Vec<u8>, head: bool) -> Option<RawResponse> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(pending).expect("valid response head") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let status = resp.code.expect("status");
    let fields: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (body, end) = if head {
        (Vec::new(), head_len)
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut body = Vec::new();
        let mut at = head_len;
        loop {
            let rest = &pending[at..];
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at += line_end + 2;
            if size == 0 {
                // Trailer lines until an empty one.
                loop {
                    let rest = &pending[at..];
                    let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
                    at += line_end + 2;
                    if line_end == 0 {
                        break;
                    }
                }
                break;
            }
            if pending.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&pending[at..at + size]);
            at += size + 2;
        }
        (body, at)
    } else {
        let len: usize = get("content-length").map_or(0, |v| v.parse().expect("length"));
        if pending.len() < head_len + len {
            return None;
        }
        (pending[head_len..head_len + len].to_vec(), head_len + len)
    };
    let wire = pending.drain(..end).collect();
    Some(RawResponse {
        status,
        fields,
        body,
        wire,
    })
}

/// A kept-alive raw client connection that reads whole responses.
pub struct RawClient {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            pending: Vec::new(),
        }
    }

    /// Sends `request` and reads one response.
    pub async fn exchange(&mut self, request: &[u8]) -> RawResponse {
        self.stream.write_all(request).await.expect("send request");
        read_response(&mut self.stream, &mut self.pending).await
    }
}

/// One request on a fresh connection.
pub async fn once(addr: SocketAddr, request: &[u8]) -> RawResponse {
    RawClient::connect(addr).await.exchange(request).await
}
