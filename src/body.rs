//! Body types of the request path, as enums rather than boxes so that
//! forwarding allocates nothing per request for the body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::PooledBody;

/// A request body sent upstream: the client's stream, or bytes we made.
#[derive(Debug)]
pub enum UpstreamBody {
    Incoming(Incoming),
    Bytes(Option<Bytes>),
}

impl UpstreamBody {
    /// No body (health checks).
    pub fn empty() -> Self {
        UpstreamBody::Bytes(None)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Incoming(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Bytes(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Incoming(body) => body.is_end_stream(),
            UpstreamBody::Bytes(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Incoming(body) => body.size_hint(),
            UpstreamBody::Bytes(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// A response body sent to the client: the upstream's stream, or a short
/// message sluicegate made itself.
#[derive(Debug)]
pub enum ProxyBody {
    Upstream(PooledBody),
    Bytes(Option<Bytes>),
}

impl ProxyBody {
    /// A body of `text`.
    pub fn text(text: impl Into<Bytes>) -> Self {
        ProxyBody::Bytes(Some(text.into()))
    }

    /// No body.
    pub fn empty() -> Self {
        ProxyBody::Bytes(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Bytes(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Bytes(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Bytes(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
