//! The answers of [`Answers::Switchable`](super::Answers::Switchable): health
//! status, the status of every other answer, and connection resets, switched
//! by the test at run time; `/hold` waits for the test's release.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use super::Shared;
use crate::support::body::{TestBody, full};

/// The path that answers with the switchable health status.
pub const HEALTH_PATH: &str = "/healthz";

pub(super) async fn serve<S>(stream: S, shared: Arc<Shared>, http1_only: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let reset = Arc::new(Notify::new());
    let reset_conn = Arc::clone(&reset);
    let service = service_fn(move |req| handle(Arc::clone(&shared), Arc::clone(&reset_conn), req));
    let io = TokioIo::new(stream);
    let conn = async {
        if http1_only {
            let _ = http1::Builder::new().serve_connection(io, service).await;
        } else {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await;
        }
    };
    tokio::select! {
        () = conn => {}
        () = reset.notified() => {}
    }
}

async fn handle(
    shared: Arc<Shared>,
    reset: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    shared.count(&req);
    // Read the whole request body: in reset mode so the request has certainly
    // arrived before the reset, otherwise so the connection can be kept alive.
    let _ = req.into_body().collect().await;
    if shared.reset.load(Ordering::SeqCst) {
        reset.notify_one();
        // The connection task drops this future along with the connection.
        std::future::pending::<()>().await;
    }
    let status = if path == HEALTH_PATH {
        &shared.health
    } else {
        &shared.status
    };
    let status = StatusCode::from_u16(status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if path == "/hold" {
        loop {
            let released = shared.holds.notified();
            if shared.holds_released.load(Ordering::SeqCst) {
                break;
            }
            released.await;
        }
    }
    let mut resp = Response::new(full(shared.name.clone()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "x-backend",
        HeaderValue::from_str(&shared.name).expect("backend name is a header value"),
    );
    Ok(resp)
}
