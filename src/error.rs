//! Error types. Every error the request path can meet maps to one status code.

use http::StatusCode;

/// Why a request could not be proxied; each maps to one status code (SPEC §5).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("no endpoint is available for this request")]
    NoEndpoint,
    #[error("upstream failed: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("CONNECT is only supported as an HTTP/2 extended CONNECT (WebSocket)")]
    Connect,
    #[error("the upstream did not switch protocols")]
    NotUpgraded,
    #[error("the request body could not be read")]
    RequestBody,
    /// RFC 9112 §3.2: no `Host` on HTTP/1.1, or more than one.
    #[error("{0}")]
    BadRequest(&'static str),
    /// `TRACE` is refused: it would echo credentials back (XST).
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ProxyError {
    /// The status sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(e) => e.status(),
            ProxyError::Connect => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NotUpgraded => StatusCode::BAD_GATEWAY,
            ProxyError::RequestBody | ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// What the client is told: general terms, never an internal error's
    /// text (that goes to the log and the access log).
    pub fn public_message(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route matches this request",
            ProxyError::NoEndpoint => "no healthy upstream",
            ProxyError::Upstream(e) => e.public_message(),
            ProxyError::Connect => {
                "CONNECT is only supported as an HTTP/2 extended CONNECT (WebSocket)"
            }
            ProxyError::NotUpgraded => "the upstream did not switch protocols",
            ProxyError::RequestBody => "the request body could not be read",
            ProxyError::BadRequest(why) => why,
            ProxyError::MethodNotAllowed => "method not allowed",
        }
    }

    /// The gRPC status for a gRPC client: UNIMPLEMENTED (12) for no route,
    /// DEADLINE_EXCEEDED (4) for timeouts, UNAVAILABLE (14) otherwise.
    pub fn grpc_status(&self) -> u16 {
        match self.status() {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => 12,
            StatusCode::GATEWAY_TIMEOUT => 4,
            _ => 14,
        }
    }
}

/// A failure talking to one upstream endpoint.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
    #[error("the backend speaks only HTTP/2 (protocol = h2): upgrades need HTTP/1.1")]
    UpgradeOverH2,
    #[error("no response headers within the response_headers timeout")]
    ResponseTimeout,
    #[error("request failed: {0}")]
    Request(hyper::Error),
    /// A reused (kept-alive) connection failed before any response byte:
    /// the keep-alive race. The upstream may have seen the request, so only
    /// a request that is safe to repeat goes again; never the endpoint's fault.
    #[error("a kept-alive connection closed before answering: {0}")]
    StaleConnection(BoxError),
    /// The upstream certainly did not process the request: an HTTP/2 stream
    /// above a GOAWAY's last stream id or refused (RFC 9113 §8.7), or a
    /// reused connection found closed before any byte was written. Safe to
    /// send again, whatever the method; never the endpoint's fault.
    #[error("the upstream did not process the request: {0}")]
    Unprocessed(BoxError),
    #[error("the client's request body failed: {0}")]
    ClientBody(hyper::Error),
    /// Another attempt was allowed, but the streamed request body already
    /// went out with the last one and cannot be sent again.
    #[error("the request body was sent already and cannot be sent again")]
    BodySpent,
    /// The fast path ([`crate::adapters::fast_path`]): the exchange failed on the socket.
    #[error("request failed: {0}")]
    Io(std::io::Error),
    /// The fast path: the upstream's response head cannot be forwarded.
    #[error("{0}")]
    InvalidResponse(#[from] InvalidResponse),
}

/// The source of an upstream error, whichever request path met it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl UpstreamError {
    /// What the client is told (see [`ProxyError::public_message`]).
    pub fn public_message(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "upstream connect failed",
            UpstreamError::ConnectTimeout => "upstream connect timed out",
            UpstreamError::Tls(_) => "upstream TLS handshake failed",
            UpstreamError::Handshake(_) => "upstream handshake failed",
            UpstreamError::UpgradeOverH2 => "the upstream cannot take an upgrade",
            UpstreamError::ResponseTimeout => "upstream response timed out",
            UpstreamError::InvalidResponse(_) => "invalid response from the upstream",
            UpstreamError::ClientBody(_) => "the request body could not be read",
            UpstreamError::Request(_)
            | UpstreamError::BodySpent
            | UpstreamError::StaleConnection(_)
            | UpstreamError::Unprocessed(_)
            | UpstreamError::Io(_) => "upstream request failed",
        }
    }

    /// Whether the endpoint is to blame, for passive health (ejection): not
    /// for the keep-alive race, an unprocessed (refused) request, an upgrade
    /// an HTTP/2 endpoint cannot take, or the client's own body.
    pub fn blames_endpoint(&self) -> bool {
        !matches!(
            self,
            UpstreamError::StaleConnection(_)
                | UpstreamError::Unprocessed(_)
                | UpstreamError::UpgradeOverH2
                | UpstreamError::ClientBody(_)
                | UpstreamError::BodySpent
        )
    }

    /// 504 for timeouts (like NGINX, a connect timeout too), 502 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether nothing reached the upstream, so another endpoint may be tried
    /// for any request, idempotent or not.
    pub fn nothing_sent(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_)
                | UpstreamError::ConnectTimeout
                | UpstreamError::Tls(_)
                | UpstreamError::Handshake(_)
                | UpstreamError::UpgradeOverH2
        )
    }
}

/// Failures that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0} listeners given for {1} configured")]
    ListenerCount(usize, usize),
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot open the access log {0}")]
    AccessLog(String),
    #[error("admin API: {0}")]
    Admin(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("fleet: {0}")]
    Fleet(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// An upstream response head that cannot be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid response from the upstream: {0}")]
pub struct InvalidResponse(pub &'static str);
