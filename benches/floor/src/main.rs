//! The floor of the peer benchmark: the least a hyper 1 forwarder can do.
//!
//! No routing, no health, no retries, no metrics, no timeouts: accept, rewrite
//! the URI for the upstream, drop the `Connection` header (so the client's
//! `Connection: close` does not close pooled upstream connections), send with
//! hyper-util's legacy client (pooled keep-alive, HTTP/1.1), stream the
//! response back. With two upstreams, every tenth request goes to the second
//! (90/10 by a counter).
//!
//! Usage: `sluicegate-floor LISTEN UPSTREAM [UPSTREAM2] [--xff] [--auto]`
//!
//! - `--xff`: add `X-Forwarded-For` with the client address (off by default, so
//!   the callgrind breakdown can price it).
//! - `--auto`: serve HTTP/1.1 and h2c (prior knowledge) on the listener with
//!   hyper-util's `auto` builder, as sluicegate does; by default HTTP/1.1 only
//!   with hyper's own `http1` builder.
//!
//! The runtime is the multi-thread one, as in sluicegate: pinned to one core
//! it has one worker.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{Either, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, HeaderName, HeaderValue};
use hyper::http::uri::Authority;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

type ProxyBody = Either<Incoming, Empty<Bytes>>;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

struct Floor {
    client: Client<HttpConnector, Incoming>,
    upstreams: Vec<Authority>,
    counter: AtomicU64,
    xff: bool,
}

impl Floor {
    /// 90/10 over two upstreams, or the only one.
    fn pick(&self) -> &Authority {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let i = if self.upstreams.len() > 1 && n % 10 == 9 {
            1
        } else {
            0
        };
        &self.upstreams[i]
    }
}

async fn forward(
    floor: Arc<Floor>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let mut uri = Uri::builder()
        .scheme("http")
        .authority(floor.pick().clone());
    uri = match req.uri().path_and_query() {
        Some(pq) => uri.path_and_query(pq.clone()),
        None => uri.path_and_query("/"),
    };
    let Ok(uri) = uri.build() else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    *req.uri_mut() = uri;
    // h2c requests go upstream as HTTP/1.1; the client sets Host from the URI
    // when the request has none.
    *req.version_mut() = Version::HTTP_11;
    req.headers_mut().remove(CONNECTION);
    if floor.xff
        && let Ok(value) = HeaderValue::from_str(&peer.ip().to_string())
    {
        req.headers_mut().insert(X_FORWARDED_FOR, value);
    }
    match floor.client.request(req).await {
        Ok(resp) => Ok(resp.map(Either::Left)),
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

fn status(code: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Empty::new()));
    *resp.status_mut() = code;
    resp
}

async fn serve(listener: TcpListener, floor: Arc<Floor>, h2c: bool) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let floor = Arc::clone(&floor);
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(Arc::clone(&floor), peer, req));
            let io = TokioIo::new(stream);
            let _ = if h2c {
                auto::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await
                    .map_err(drop)
            } else {
                http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                    .map_err(drop)
            };
        });
    }
}

/// Resolves on Ctrl-C or SIGTERM, so profilers see a clean exit.
async fn shutdown() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut positional = Vec::new();
    let (mut xff, mut h2c) = (false, false);
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--xff" => xff = true,
            "--auto" => h2c = true,
            _ => positional.push(arg),
        }
    }
    let usage = "usage: sluicegate-floor LISTEN UPSTREAM [UPSTREAM2] [--xff] [--auto]";
    if !(2..=3).contains(&positional.len()) {
        eprintln!("{usage}");
        return ExitCode::from(2);
    }
    let upstreams: Result<Vec<Authority>, _> = positional[1..]
        .iter()
        .map(|s| s.parse::<Authority>())
        .collect();
    let Ok(upstreams) = upstreams else {
        eprintln!("bad upstream address\n{usage}");
        return ExitCode::from(2);
    };
    let listener = match TcpListener::bind(&positional[0]).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", positional[0]);
            return ExitCode::FAILURE;
        }
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let floor = Arc::new(Floor {
        client: Client::builder(TokioExecutor::new()).build(connector),
        upstreams,
        counter: AtomicU64::new(0),
        xff,
    });
    tokio::select! {
        () = serve(listener, floor, h2c) => {}
        () = shutdown() => {}
    }
    ExitCode::SUCCESS
}
