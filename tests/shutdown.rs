//! Graceful shutdown: once the shutdown future resolves the proxy stops
//! accepting, lets in-flight requests finish (up to shutdown_grace) and returns.

pub mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::client::{Http1Client, get};
use support::config_text::{LISTENER, backend, route, timeouts};
use support::origin::{Origin, RunningOrigin};
use support::proxy::TestProxy;
use tokio::net::TcpStream;

async fn proxy_with(blue: &RunningOrigin, timeout_entries: &[(&str, &str)]) -> TestProxy {
    let config = [
        LISTENER.to_string(),
        timeouts(timeout_entries),
        route("web", "", "", &[backend("blue", None, &[blue.addr])]),
    ]
    .concat();
    TestProxy::start(&config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_finishes_during_graceful_shutdown() {
    let blue = Origin::new("blue").start().await;
    let mut proxy = proxy_with(&blue, &[("shutdown_grace", "10s")]).await;
    let addr = proxy.addr;
    let in_flight = tokio::spawn(async move { get(addr, "app.test", "/slow/1000").await });
    support::eventually("the slow request to reach the backend", || blue.hits() == 1).await;

    proxy.begin_shutdown();
    let reply = in_flight.await.expect("client task");

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "blue");
    assert!(
        proxy.wait_stopped(Duration::from_secs(5)).await.is_ok(),
        "run returned an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_refuses_connections_once_shutdown_starts() {
    let blue = Origin::new("blue").start().await;
    let mut proxy = proxy_with(&blue, &[("shutdown_grace", "10s")]).await;
    let addr = proxy.addr;
    let in_flight = tokio::spawn(async move { get(addr, "app.test", "/slow/1000").await });
    support::eventually("the slow request to reach the backend", || blue.hits() == 1).await;

    proxy.begin_shutdown();
    // The kernel completes handshakes while a listening socket exists, so the
    // listener is closed once a connect is refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy still accepts connections after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !in_flight.is_finished(),
        "the listener should close at once, not after in-flight requests finish"
    );

    assert_eq!(in_flight.await.unwrap().status, StatusCode::OK);
    assert!(proxy.wait_stopped(Duration::from_secs(5)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_after_shutdown_is_refused() {
    let blue = Origin::new("blue").start().await;
    let proxy = proxy_with(&blue, &[]).await;
    let addr = proxy.addr;
    assert_eq!(get(addr, "app.test", "/").await.status, StatusCode::OK);

    proxy.shutdown().await.expect("run returns Ok");

    assert!(
        TcpStream::connect(addr).await.is_err(),
        "connected after run returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_does_not_delay_shutdown() {
    let blue = Origin::new("blue").start().await;
    // Default grace (30s): returning quickly shows idle connections are closed, not waited on.
    let mut proxy = proxy_with(&blue, &[]).await;
    let mut client = Http1Client::connect(proxy.addr).await;
    assert_eq!(client.get("app.test", "/").await.status, StatusCode::OK);

    let started = Instant::now();
    proxy.begin_shutdown();
    proxy
        .wait_stopped(Duration::from_secs(5))
        .await
        .expect("run returns Ok");

    assert!(started.elapsed() < Duration::from_secs(5));
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_the_wait_for_slow_requests() {
    let blue = Origin::new("blue").start().await;
    let mut proxy = proxy_with(&blue, &[("shutdown_grace", "300ms")]).await;
    let addr = proxy.addr;
    let in_flight = tokio::spawn(async move {
        let mut client = Http1Client::connect(addr).await;
        client
            .send_streaming(support::client::get_request("app.test", "/slow/5000"))
            .await
    });
    support::eventually("the slow request to reach the backend", || blue.hits() == 1).await;

    let started = Instant::now();
    proxy.begin_shutdown();
    // run may return Ok or report the cut-off request; it must not wait 5 s.
    let _ = proxy.wait_stopped(Duration::from_secs(3)).await;

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    in_flight.abort();
}
