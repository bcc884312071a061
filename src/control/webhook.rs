//! The one webhook client that canary gates and `[[notify]]` receivers
//! share: one JSON POST over a fresh HTTP/1.1 connection (hyper's client
//! connection, as the etcd client and `probe` use), with one deadline for
//! connecting, sending and the answer's head.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::WebhookUrl;

/// At most this much of an answer's body is read (and then dropped).
const MAX_ANSWER: usize = 64 * 1024;

/// What a POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered this status.
    Answered(StatusCode),
    /// No answer within the deadline.
    TimedOut(Duration),
    /// Could not connect, or the connection failed.
    Failed(String),
}

impl Outcome {
    /// A 2xx answer.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Answered(status) if status.is_success())
    }

    /// `answered 500`, `timed out after 10s`, `failed: connection refused`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Answered(status) => format!("answered {}", status.as_u16()),
            Outcome::TimedOut(limit) => {
                format!("timed out after {}", humantime::format_duration(*limit))
            }
            Outcome::Failed(why) => format!("failed: {why}"),
        }
    }
}

/// POSTs `body` (JSON) to `url`, waiting at most `timeout` for the answer's
/// head; returns the outcome and how long it took.
pub async fn post_json(url: &WebhookUrl, body: Bytes, timeout: Duration) -> (Outcome, Duration) {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(timeout, post(url, body)).await {
        Ok(Ok(status)) => Outcome::Answered(status),
        Ok(Err(why)) => Outcome::Failed(why),
        Err(_) => Outcome::TimedOut(timeout),
    };
    (outcome, started.elapsed())
}

async fn post(url: &WebhookUrl, body: Bytes) -> Result<StatusCode, String> {
    let stream = TcpStream::connect(url.authority.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    // The connection ends with this call: the task goes with it (and when
    // a timeout drops this call midway, hyper's connection ends with the
    // dropped sender: a receiver that never answers holds no socket).
    let driver = tokio::spawn(connection);
    let req = Request::builder()
        .method(Method::POST)
        .uri(url.path.as_str())
        .header(header::HOST, url.host.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("sluicegate/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::CONNECTION, "close")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let result = match sender.send_request(req).await {
        Ok(resp) => {
            let status = resp.status();
            // Read (a bounded part of) the body so the receiver is not cut off mid-answer.
            let _ = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await;
            Ok(status)
        }
        Err(e) => Err(e.to_string()),
    };
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_receiver_that_never_answers_is_left_when_the_timeout_passes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            WebhookUrl::parse(&format!("http://{}/hook", listener.local_addr().unwrap())).unwrap();
        let limit = Duration::from_millis(100);
        let post = tokio::spawn(async move { post_json(&url, Bytes::from("{}"), limit).await });
        let (mut held, _) = listener.accept().await.unwrap();
        let (outcome, _) = post.await.unwrap();
        assert_eq!(outcome, Outcome::TimedOut(limit));
        // Read the request, then the connection must close: nothing of the
        // timed-out call stays behind.
        let mut seen = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(2), held.read_to_end(&mut seen)).await;
        assert!(
            closed.is_ok(),
            "the connection stayed open after the timeout"
        );
        assert!(seen.starts_with(b"POST /hook HTTP/1.1"));
    }
}
