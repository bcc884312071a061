//! `WebhookReceiver`: a small HTTP server on 127.0.0.1:0 that records the
//! JSON bodies POSTed to it (canary gates, `[[notify]]` receivers) and
//! answers each with a fixed status, or never.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::body::{TestBody, full};
use super::eventually;

/// How a [`WebhookReceiver`] answers.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(StatusCode),
    /// Reads the request, then holds the connection without an answer.
    Never,
}

pub struct WebhookReceiver {
    pub addr: SocketAddr,
    /// `http://ADDR/hook`.
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
    accept_loop: JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start(answer: Answer) -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&received);
        let accept_loop = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let kept = Arc::clone(&kept);
                        async move {
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let json = body
                                .ok()
                                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                                .unwrap_or(Value::Null);
                            kept.lock().expect("received").push(json);
                            let status = match answer {
                                Answer::Status(status) => status,
                                Answer::Never => std::future::pending().await,
                            };
                            let mut resp: Response<TestBody> = Response::new(full("ok"));
                            *resp.status_mut() = status;
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        WebhookReceiver {
            addr,
            url: format!("http://{addr}/hook"),
            received,
            accept_loop,
        }
    }

    /// Every body received so far, in arrival order.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().expect("received").clone()
    }

    /// Waits until a received body satisfies `found`; returns every body then.
    pub async fn wait_for(&self, what: &str, found: impl Fn(&Value) -> bool) -> Vec<Value> {
        eventually(what, || self.received().iter().any(&found)).await;
        self.received()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}
