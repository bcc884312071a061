//! HTTP/2 upstreams that end connections or refuse streams: a real nginx's
//! GOAWAY after `keepalive_requests`, and single frames from an `h2` origin.
//! Streams the server never processed (above the GOAWAY's last stream id, or
//! reset with REFUSED_STREAM) go again on a new connection to the same
//! endpoint, whatever the method, and never count against the endpoint's
//! health (RFC 9113 §6.8, §8.7); streams it may have processed do not go
//! again.

pub mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::HOST;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use support::body::{TestBody, empty, full};
use support::client::{Http1Client, get, send};
use support::config_text::{LISTENER, backend_with, route};
use support::eventually;
use support::h2_origin::{H2Fault, H2Origin};
use support::nginx::Nginx;
use support::proxy::TestProxy;
use tokio::task::JoinSet;

/// Small, so nginx sends a GOAWAY every few round trips of the load.
const KEEPALIVE_REQUESTS: u32 = 20;
const REQUESTS: usize = 2_000;
/// Client connections to the proxy, each sending its share one at a time.
const CONCURRENCY: usize = 16;

/// A proxy with route `web` to backend `origin` (h2c, this one endpoint,
/// default retries and passive ejection).
async fn proxy_to(endpoint: String) -> TestProxy {
    proxy_with(endpoint, &[]).await
}

/// [`proxy_to`] with more backend lines.
async fn proxy_with(endpoint: String, extra: &[&str]) -> TestProxy {
    let lines: Vec<&str> = ["protocol = \"h2c\""]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let origin = backend_with("origin", None, &[endpoint], &lines);
    TestProxy::start(&format!("{LISTENER}{}", route("web", "", "", &[origin]))).await
}

/// Ejected after a single failure the endpoint is blamed for.
const EJECT_AT_ONCE: [&str; 2] = ["[routes.backends.outlier]", "consecutive_failures = 1"];

/// `method /` with `body` (empty: none).
fn request(method: &Method, body: &Bytes) -> Request<TestBody> {
    let body = if body.is_empty() {
        empty()
    } else {
        full(body.clone())
    };
    Request::builder()
        .method(method.clone())
        .uri("/")
        .header(HOST, "goaway.test")
        .body(body)
        .expect("valid request")
}

/// Recorded instead of a status when the client connection failed.
const CONNECTION_FAILED: u16 = 0;
/// Recorded instead of a status when the response body broke off.
const BODY_FAILED: u16 = 1;

/// Sends `REQUESTS` requests over `CONCURRENCY` keep-alive connections,
/// request `i` with `methods[i % len]` and `body`; the statuses by count.
async fn load(proxy: SocketAddr, methods: &[Method], body: Bytes) -> BTreeMap<u16, usize> {
    let mut workers = JoinSet::new();
    for worker in 0..CONCURRENCY {
        let methods = methods.to_vec();
        let body = body.clone();
        workers.spawn(async move {
            let mut statuses = BTreeMap::new();
            let mut client = Http1Client::connect(proxy).await;
            for i in (worker..REQUESTS).step_by(CONCURRENCY) {
                let method = &methods[i % methods.len()];
                let status = match client.send_streaming(request(method, &body)).await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        match resp.into_body().collect().await {
                            Ok(_) => status,
                            Err(_) => BODY_FAILED,
                        }
                    }
                    Err(_) => {
                        client = Http1Client::connect(proxy).await;
                        CONNECTION_FAILED
                    }
                };
                *statuses.entry(status).or_insert(0) += 1;
            }
            statuses
        });
    }
    let mut statuses = BTreeMap::new();
    while let Some(done) = workers.join_next().await {
        for (status, n) in done.expect("load worker panicked") {
            *statuses.entry(status).or_insert(0) += n;
        }
    }
    statuses
}

/// Requests nginx may answer twice, or answer while sluicegate reports a
/// failure: the stream at a GOAWAY's last stream id, when hyper's dispatch
/// task meets the GOAWAY between opening that stream and its next readiness
/// check (hyper 1.12 then drops the stream and reports the GOAWAY as its
/// error). Rare (observed: 0 or 1 per 2,000 requests under CPU contention);
/// a bound that any systematic replay of processed requests would break.
fn hyper_goaway_race_allowance(connections: usize) -> usize {
    1 + connections / 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_body_survive_nginx_goaways_on_one_endpoint() {
    let nginx = Nginx::start_h2c(KEEPALIVE_REQUESTS).await;
    let proxy = proxy_to(nginx.endpoint()).await;

    // POST too: an unprocessed stream goes again whatever the method.
    let statuses = load(proxy.addr, &[Method::GET, Method::POST], Bytes::new()).await;

    let served = statuses.get(&200).copied().unwrap_or(0);
    let answered = || nginx.answered(&Method::GET) + nginx.answered(&Method::POST);
    eventually("nginx to log every answer", || answered() >= served).await;
    let connections = nginx.connections();
    println!(
        "{REQUESTS} requests: statuses {statuses:?}; nginx answered {} over {connections} connections",
        answered()
    );
    assert_eq!(
        statuses,
        BTreeMap::from([(200, REQUESTS)]),
        "every request answered, none lost to a GOAWAY, the endpoint never ejected (503)"
    );
    assert!(
        connections >= REQUESTS / KEEPALIVE_REQUESTS as usize,
        "nginx ended a connection every {KEEPALIVE_REQUESTS} requests: {connections} connections"
    );
    assert!(
        answered() - REQUESTS <= hyper_goaway_race_allowance(connections),
        "only requests nginx never processed went again: it answered {}",
        answered()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_with_a_body_lost_to_a_goaway_fail_without_ejecting_the_endpoint() {
    let nginx = Nginx::start_h2c(KEEPALIVE_REQUESTS).await;
    let proxy = proxy_to(nginx.endpoint()).await;

    // A streamed body is gone once sent: a stream nginx never processed
    // cannot go again and fails with 502, but that is not nginx's fault.
    let statuses = load(proxy.addr, &[Method::POST], Bytes::from(vec![b'p'; 512])).await;

    let served = statuses.get(&200).copied().unwrap_or(0);
    let failed = statuses.get(&502).copied().unwrap_or(0);
    eventually("nginx to log every answer", || {
        nginx.answered(&Method::POST) >= served
    })
    .await;
    let processed = nginx.answered(&Method::POST);
    let connections = nginx.connections();
    println!(
        "{REQUESTS} POSTs with a body: statuses {statuses:?}; nginx answered {processed} over \
         {connections} connections"
    );
    assert_eq!(
        served + failed,
        REQUESTS,
        "only 200 or 502; no 503 (the endpoint was never ejected): {statuses:?}"
    );
    assert!(
        processed - served <= hyper_goaway_race_allowance(connections),
        "the POSTs that failed never reached nginx: {processed} answered, {served} served"
    );
    let after = get(proxy.addr, "goaway.test", "/").await;
    assert_eq!(after.status, StatusCode::OK, "the endpoint is still in");
}

#[tokio::test]
async fn refused_stream_goes_again_on_a_new_connection() {
    let origin = H2Origin::start(H2Fault::RefuseFirstStream).await;
    let proxy = proxy_with(origin.endpoint(), &EJECT_AT_ONCE).await;

    let reply = send(proxy.addr, request(&Method::POST, &Bytes::new())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(origin.streams(), 2, "refused once, then answered");
    assert_eq!(origin.connections(), 2, "sent again on a new connection");

    let after = get(proxy.addr, "goaway.test", "/").await;
    assert_eq!(
        after.status,
        StatusCode::OK,
        "a refusal is not the endpoint's fault"
    );
}

#[tokio::test]
async fn goaway_before_any_stream_sends_the_request_on_a_new_connection() {
    let origin = H2Origin::start(H2Fault::GoAwayAtOnce).await;
    let proxy = proxy_with(origin.endpoint(), &EJECT_AT_ONCE).await;

    let reply = send(proxy.addr, request(&Method::POST, &Bytes::new())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        origin.streams(),
        1,
        "processed once, on the second connection"
    );
    assert_eq!(origin.connections(), 2);

    let after = get(proxy.addr, "goaway.test", "/").await;
    assert_eq!(
        after.status,
        StatusCode::OK,
        "a GOAWAY is not the endpoint's fault"
    );
}

#[tokio::test]
async fn stream_covered_by_an_error_goaway_is_not_sent_again() {
    let origin = H2Origin::start(H2Fault::GoAwayWithErrorAfterFirstStream).await;
    let proxy = proxy_to(origin.endpoint()).await;

    // At or below the GOAWAY's last stream id: the origin may have processed it.
    let reply = send(proxy.addr, request(&Method::POST, &Bytes::new())).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(
        origin.streams(),
        1,
        "a POST the origin may have processed is sent once"
    );
}
