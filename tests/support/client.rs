//! HTTP/1.1 keep-alive and h2c prior-knowledge clients.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::admin::FileProxy;
use super::body::{TestBody, empty};
use super::origin::Echo;

/// A response read to its end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    async fn read(resp: Response<Incoming>) -> Reply {
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("read response body").to_bytes();
        Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `x-backend` header the fake backends set.
    pub fn backend(&self) -> Option<String> {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    pub fn content_type(&self) -> String {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    pub fn echo(&self) -> Echo {
        assert_eq!(self.status, StatusCode::OK, "echo failed: {}", self.text());
        Echo::parse(&self.body)
    }
}

/// A GET request in origin form with this Host header.
pub fn get_request(host: &str, path: &str) -> Request<TestBody> {
    Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(HOST, host)
        .body(empty())
        .expect("valid request")
}

/// One HTTP/1.1 keep-alive connection, reused request after request.
pub struct Http1Client {
    sender: hyper::client::conn::http1::SendRequest<TestBody>,
}

impl Http1Client {
    pub async fn connect(addr: SocketAddr) -> Http1Client {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Http1Client { sender }
    }

    /// Sends `req` and returns the response head with its body still streaming.
    pub async fn send_streaming(
        &mut self,
        req: Request<TestBody>,
    ) -> hyper::Result<Response<Incoming>> {
        self.sender.ready().await?;
        self.sender.send_request(req).await
    }

    pub async fn send(&mut self, req: Request<TestBody>) -> Reply {
        let resp = self.send_streaming(req).await.expect("send request");
        Reply::read(resp).await
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        self.send(get_request(host, path)).await
    }
}

/// GET over a fresh HTTP/1.1 connection with this Host header.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    Http1Client::connect(addr).await.get(host, path).await
}

/// Sends `req` over a fresh HTTP/1.1 connection.
pub async fn send(addr: SocketAddr, req: Request<TestBody>) -> Reply {
    Http1Client::connect(addr).await.send(req).await
}

/// One HTTP/2 cleartext connection with prior knowledge; clones share it.
#[derive(Clone)]
pub struct H2Client {
    sender: hyper::client::conn::http2::SendRequest<TestBody>,
}

impl H2Client {
    pub async fn connect(addr: SocketAddr) -> H2Client {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2c handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2Client { sender }
    }

    /// GET with `host` as the :authority.
    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        let req = Request::builder()
            .method(Method::GET)
            .version(Version::HTTP_2)
            .uri(format!("http://{host}{path}"))
            .body(empty())
            .expect("valid request");
        self.send(req).await
    }

    /// Sends `req` (an absolute URI: its authority is the :authority).
    pub async fn send(&mut self, req: Request<TestBody>) -> Reply {
        self.sender.ready().await.expect("h2 connection ready");
        let resp = self.sender.send_request(req).await.expect("h2 request");
        Reply::read(resp).await
    }
}

/// Counts replies by their `x-backend` header (`"<none>"` when missing).
pub fn tally<'a>(replies: impl IntoIterator<Item = &'a Reply>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for reply in replies {
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "unexpected reply: {}",
            reply.text()
        );
        let name = reply.backend().unwrap_or_else(|| "<none>".to_string());
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// Scrapes `/metrics` (a read: no token needed on loopback).
pub async fn scrape(proxy: &FileProxy) -> String {
    let (status, body) = proxy.admin_send(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    body.as_str().expect("metrics are text").to_string()
}

/// The value of the sample `name` whose labels are exactly `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let found: BTreeMap<&str, &str> = label_text
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            (found == wanted).then(|| value.parse().ok()).flatten()
        })
}
