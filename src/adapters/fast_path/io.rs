//! The fast path's I/O helpers: reads from the client that wait for data,
//! shutdown or a deadline; I/O bounded by the connection's one timer; the
//! upstream's response head read and rewritten; where a response body ends.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

use super::chunked::Chunked;
use super::head::{self, Framing, Response};
use super::{Head, MAX_RESPONSE_HEAD, READ_ROOM, ReadFailure, Reply};
use crate::error::{InvalidResponse, UpstreamError};

pub(super) enum Read {
    Data,
    /// Shutdown started.
    Stop,
    /// EOF, an error or the deadline.
    Closed,
}

impl From<std::io::Result<usize>> for Read {
    fn from(read: std::io::Result<usize>) -> Read {
        match read {
            Ok(0) | Err(_) => Read::Closed,
            Ok(_) => Read::Data,
        }
    }
}

/// Polls `io` once: its output if it is ready now, else `None` (dropping it;
/// a read or write that is not ready has done nothing).
pub(super) async fn now_or_never<F: Future>(io: F) -> Option<F::Output> {
    let mut io = std::pin::pin!(io);
    std::future::poll_fn(|cx| {
        Poll::Ready(match io.as_mut().poll(cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        })
    })
    .await
}

/// A client stream that can wait until it has bytes to read without a
/// buffer to read them into: an idle connection holds none.
pub trait Readable {
    /// Ready to read (or closed). May wake without data.
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl Readable for TcpStream {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        TcpStream::readable(self)
    }
}

impl Readable for tokio_rustls::server::TlsStream<TcpStream> {
    /// The TCP socket's readiness: a read that found nothing to return has
    /// left no plaintext buffered in rustls.
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        self.get_ref().0.readable()
    }
}

/// Waits, holding no buffer, until `stream` may have bytes, shutdown
/// starts, or `deadline`: [`Read::Data`] means "try a read" (it may find
/// nothing yet).
pub(super) async fn wait_readable<S: Readable>(
    stream: &S,
    deadline: Pin<&mut Sleep>,
    stop: Option<&mut watch::Receiver<bool>>,
) -> Read {
    tokio::select! {
        biased;
        ready = stream.readable() => match ready {
            Ok(()) => Read::Data,
            Err(_) => Read::Closed,
        },
        () = stop_changed(stop) => Read::Stop,
        () = deadline => Read::Closed,
    }
}

/// Shutdown starting, when it is watched (never otherwise).
async fn stop_changed(stop: Option<&mut watch::Receiver<bool>>) {
    match stop {
        Some(stop) => {
            let _ = stop.changed().await;
        }
        None => std::future::pending().await,
    }
}

pub(super) async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    deadline: Pin<&mut Sleep>,
    stop: Option<&mut watch::Receiver<bool>>,
) -> Read {
    tokio::select! {
        biased;
        read = stream.read_buf(buf) => Read::from(read),
        () = stop_changed(stop) => Read::Stop,
        () = deadline => Read::Closed,
    }
}

/// Runs `io` to its end within `limit` (`None` when it took longer). The
/// timer is only armed when `io` cannot finish at once: most reads and
/// writes of a proxied exchange can.
pub(super) async fn within<F: Future>(
    io: F,
    mut timer: Pin<&mut Sleep>,
    limit: Duration,
) -> Option<F::Output> {
    let mut io = std::pin::pin!(io);
    let now = std::future::poll_fn(|cx| {
        Poll::Ready(match io.as_mut().poll(cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        })
    })
    .await;
    if now.is_some() {
        return now;
    }
    timer.as_mut().reset((Instant::now() + limit).into());
    tokio::select! {
        biased;
        out = io => Some(out),
        () = timer => None,
    }
}

/// Reads the upstream's response head into `resp`, skipping 1xx interim
/// responses, and writes the client's head for it into `out`.
pub(super) async fn read_response(
    upstream: &mut TcpStream,
    resp: &mut BytesMut,
    out: &mut Vec<u8>,
    reply: &Reply<'_>,
) -> Result<Head, ReadFailure> {
    loop {
        resp.reserve(READ_ROOM);
        let error = match upstream.read_buf(resp).await {
            Ok(0) => std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ),
            Err(error) => error,
            Ok(_) => match parse_head(resp, out, reply) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => continue,
                Err(e) => return Err(ReadFailure::Upstream(e.into())),
            },
        };
        return Err(if resp.is_empty() {
            ReadFailure::Lost(error)
        } else {
            ReadFailure::Upstream(UpstreamError::Io(error))
        });
    }
}

/// Parses what `resp` holds: a final head (written for the client into
/// `out`), or `None` when more is needed; 1xx interim heads are dropped.
pub(super) fn parse_head(
    resp: &mut BytesMut,
    out: &mut Vec<u8>,
    reply: &Reply<'_>,
) -> Result<Option<Head>, InvalidResponse> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; head::MAX_RESPONSE_HEADERS];
        match head::parse_response(resp, &mut headers, reply.head_request)? {
            Response::Final(head) => {
                let status =
                    StatusCode::from_u16(head.status).map_err(|_| InvalidResponse("bad status"))?;
                out.clear();
                head::write_client_head(out, &head, reply.cookie, reply.close);
                return Ok(Some(Head {
                    status,
                    framing: head.framing,
                    reusable: head.reusable,
                    len: head.len,
                }));
            }
            Response::Interim(len) => resp.advance(len),
            Response::Partial if resp.len() > MAX_RESPONSE_HEAD => {
                return Err(InvalidResponse("response head too large"));
            }
            Response::Partial => return Ok(None),
        }
    }
}

/// Where a response body ends.
pub(super) enum BodyLeft {
    Empty,
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

impl BodyLeft {
    pub(super) fn new(framing: Framing) -> BodyLeft {
        match framing {
            Framing::Empty => BodyLeft::Empty,
            Framing::Length(n) => BodyLeft::Length(n),
            Framing::Chunked => BodyLeft::Chunked(Chunked::new()),
            Framing::UntilClose => BodyLeft::UntilClose,
        }
    }

    pub(super) fn done(&self) -> bool {
        match self {
            BodyLeft::Empty => true,
            BodyLeft::Length(left) => *left == 0,
            BodyLeft::Chunked(chunked) => chunked.is_done(),
            BodyLeft::UntilClose => false,
        }
    }

    /// How many of `data`'s bytes belong to the body.
    pub(super) fn take(&mut self, data: &[u8]) -> Result<usize, super::chunked::InvalidChunked> {
        Ok(match self {
            BodyLeft::Empty => 0,
            BodyLeft::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= n as u64;
                n
            }
            BodyLeft::Chunked(chunked) => chunked.feed(data)?,
            BodyLeft::UntilClose => data.len(),
        })
    }
}
