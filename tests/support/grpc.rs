//! gRPC and WebSocket clients: a hand-made gRPC client on hyper's h2 (h2c
//! or TLS), gRPC message framing, and a WebSocket echo round trip.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::PATIENCE;
use super::body::{TestBody, full};
use super::tls::{Pki, tls_connect};

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
