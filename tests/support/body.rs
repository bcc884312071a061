//! Request and response bodies: generated, channel-fed, and a byte counter.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::sync::mpsc;

/// The body type every helper sends and every fake origin answers with.
pub type TestBody = BoxBody<Bytes, Infallible>;

/// Streamed bodies come in pieces of this size.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// The bytes of every streamed chunk; static so streaming allocates nothing per chunk.
static CHUNK: [u8; CHUNK_SIZE] = [b'x'; CHUNK_SIZE];

pub fn empty() -> TestBody {
    Empty::new().boxed()
}

pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into()).boxed()
}

/// `len` bytes of `x`, produced chunk by chunk without ever holding them all.
pub struct GeneratedBody {
    remaining: u64,
    /// Announce the length (Content-Length) or leave it open (chunked).
    exact_length: bool,
}

impl GeneratedBody {
    pub fn sized(len: u64) -> GeneratedBody {
        GeneratedBody {
            remaining: len,
            exact_length: true,
        }
    }

    pub fn chunked(len: u64) -> GeneratedBody {
        GeneratedBody {
            remaining: len,
            exact_length: false,
        }
    }
}

impl Body for GeneratedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK_SIZE as u64);
        self.remaining -= n;
        let chunk = Bytes::from_static(&CHUNK).slice(..n as usize);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact_length {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

/// A body fed by the test through a channel, frame by frame (data, and
/// trailers for the protocol tests); it ends when the sender is dropped.
pub struct ChannelBody {
    rx: mpsc::Receiver<Frame<Bytes>>,
}

impl ChannelBody {
    /// A channel of 4 frames.
    pub fn new() -> (mpsc::Sender<Frame<Bytes>>, ChannelBody) {
        ChannelBody::with_capacity(4)
    }

    pub fn with_capacity(frames: usize) -> (mpsc::Sender<Frame<Bytes>>, ChannelBody) {
        let (tx, rx) = mpsc::channel(frames);
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

/// Reads a body to its end, counting the bytes without keeping them.
pub async fn count_body_bytes<B>(mut body: B) -> u64
where
    B: Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        if let Some(data) = frame.data_ref() {
            total += bytes::Buf::remaining(data) as u64;
        }
    }
    total
}
