//! The canned answers of [`Answers::Paths`](super::Answers::Paths): the name,
//! an echo of the request, slow and chosen-status answers, streamed uploads and
//! downloads, a held body, hop-by-hop response headers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Shared;
use crate::support::body::{ChannelBody, GeneratedBody, TestBody, full};

pub(super) async fn serve<S>(stream: S, state: Arc<Shared>, http1_only: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(Arc::clone(&state), req));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if http1_only {
        builder = builder.http1_only();
    }
    // Clients hanging up mid-request are part of some tests.
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(
    state: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    state.count(&req);
    let path = req.uri().path().to_string();
    let (status, body) = if path == "/echo" {
        (StatusCode::OK, full(echo_json(&req).to_string()))
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        (StatusCode::OK, full(state.name.clone()))
    } else if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        (status, full(state.name.clone()))
    } else if path == "/upload" {
        let mut body = req.into_body();
        let mut total: u64 = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Ok(text_response(
                    StatusCode::BAD_REQUEST,
                    &state.name,
                    "body error",
                ));
            };
            if let Some(data) = frame.data_ref() {
                total += data.len() as u64;
                state
                    .upload_progress
                    .fetch_add(data.len() as u64, Ordering::SeqCst);
            }
        }
        (StatusCode::OK, full(total.to_string()))
    } else if let Some(len) = path.strip_prefix("/download/") {
        let len: u64 = len.parse().unwrap_or(0);
        (StatusCode::OK, GeneratedBody::sized(len).boxed())
    } else if path == "/hold" {
        let (tx, body) = ChannelBody::new();
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tx.send(Frame::data(Bytes::from_static(b"first"))).await;
            state.release.notified().await;
            let _ = tx.send(Frame::data(Bytes::from_static(b"last"))).await;
        });
        (StatusCode::OK, body.boxed())
    } else if path == "/hop-headers" {
        let mut resp = text_response(StatusCode::OK, &state.name, &state.name);
        let headers = resp.headers_mut();
        headers.insert("connection", HeaderValue::from_static("x-resp-hop"));
        headers.insert("x-resp-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert("x-resp-end-to-end", HeaderValue::from_static("kept"));
        return Ok(resp);
    } else {
        (StatusCode::OK, full(state.name.clone()))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "x-backend",
        HeaderValue::from_str(&state.name).expect("backend name is a header value"),
    );
    Ok(resp)
}

fn text_response(status: StatusCode, backend: &str, text: &str) -> Response<TestBody> {
    let mut resp = Response::new(full(text.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "x-backend",
        HeaderValue::from_str(backend).expect("backend name is a header value"),
    );
    resp
}

fn echo_json(req: &Request<Incoming>) -> serde_json::Value {
    let mut headers: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for (name, value) in req.headers() {
        let entry = headers
            .entry(name.as_str().to_string())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(values) = entry {
            values.push(
                String::from_utf8_lossy(value.as_bytes())
                    .into_owned()
                    .into(),
            );
        }
    }
    serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    })
}

/// What a backend's `/echo` saw.
#[derive(Debug)]
pub struct Echo {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: HashMap<String, Vec<String>>,
}

impl Echo {
    pub fn parse(body: &[u8]) -> Echo {
        let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "echo body is not JSON ({e}): {}",
                String::from_utf8_lossy(body)
            )
        });
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_string();
        let headers = value["headers"]
            .as_object()
            .expect("echo headers object")
            .iter()
            .map(|(name, values)| {
                let values = values
                    .as_array()
                    .expect("echo header values")
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect();
                (name.clone(), values)
            })
            .collect();
        Echo {
            method: text("method"),
            path: text("path"),
            version: text("version"),
            headers,
        }
    }

    /// Every value of header `name` (lower-case), in order.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers.get(name).cloned().unwrap_or_default()
    }

    /// All values of `name` joined as one list, the way a comma-separated header reads.
    pub fn joined(&self, name: &str) -> String {
        self.header(name).join(", ")
    }
}
