//! The request body sent upstream: the client's stream, or bytes we made.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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
