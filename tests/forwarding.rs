//! What the proxy forwards: X-Forwarded-*, the Host header, hop-by-hop headers
//! stripped both ways, bodies streamed both ways, and h2c downstream.

pub mod support;

use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use support::body::{ChannelBody, GeneratedBody, count_body_bytes};
use support::client::{H2Client, Http1Client, get};
use support::config_text::{H1Path, backend, listener_on, route, two_backend_config};
use support::origin::{Origin, RunningOrigin};
use support::proxy::TestProxy;

const MIB_100: u64 = 100 * 1024 * 1024;

async fn echo_proxy(path: H1Path) -> (RunningOrigin, TestProxy) {
    let blue = Origin::new("blue").start().await;
    let config = format!(
        "{}{}",
        listener_on(path),
        route("web", "", "", &[backend("blue", None, &[blue.addr])])
    );
    (blue, TestProxy::start(&config).await)
}

on_both_paths!(
    x_forwarded_for_is_set_to_the_client_ip,
    x_forwarded_for_appends_to_an_existing_value,
    x_forwarded_proto_and_host_are_set,
    host_header_is_preserved,
    hop_by_hop_request_headers_are_stripped,
    hop_by_hop_response_headers_are_stripped,
    large_request_body_is_streamed_up,
    large_sized_request_body_is_streamed_up,
    request_body_reaches_the_backend_before_it_ends,
    large_response_body_is_streamed_down,
    response_body_reaches_the_client_before_it_ends,
    keep_alive_connection_serves_many_requests,
    upstream_connections_are_pooled_and_reused
);

async fn x_forwarded_for_is_set_to_the_client_ip(path: H1Path) {
    let (_blue, proxy) = echo_proxy(path).await;

    let echo = get(proxy.addr, "shop.example.com", "/echo").await.echo();

    assert_eq!(echo.joined("x-forwarded-for"), "127.0.0.1");
}

async fn x_forwarded_for_appends_to_an_existing_value(path: H1Path) {
    let (_blue, proxy) = echo_proxy(path).await;
    let req = Request::builder()
        .uri("/echo")
        .header(HOST, "shop.example.com")
        .header("x-forwarded-for", "203.0.113.7, 198.51.100.2")
        .body(support::body::empty())
        .unwrap();

    let echo = support::client::send(proxy.addr, req).await.echo();

    assert_eq!(
        echo.joined("x-forwarded-for"),
        "203.0.113.7, 198.51.100.2, 127.0.0.1"
    );
}

async fn x_forwarded_proto_and_host_are_set(path: H1Path) {
    let (_blue, proxy) = echo_proxy(path).await;

    let echo = get(proxy.addr, "shop.example.com", "/echo").await.echo();

    assert_eq!(echo.header("x-forwarded-proto"), ["http"]);
    assert_eq!(echo.header("x-forwarded-host"), ["shop.example.com"]);
}

async fn host_header_is_preserved(path: H1Path) {
    let (blue, proxy) = echo_proxy(path).await;

    let echo = get(proxy.addr, "shop.example.com", "/echo").await.echo();

    assert_eq!(echo.header("host"), ["shop.example.com"]);
    assert_ne!(
        echo.joined("host"),
        blue.endpoint(),
        "Host was rewritten to the endpoint"
    );
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.path, "/echo");
    assert_eq!(echo.version, "HTTP/1.1");
}

async fn hop_by_hop_request_headers_are_stripped(path: H1Path) {
    let (_blue, proxy) = echo_proxy(path).await;
    let req = Request::builder()
        .uri("/echo")
        .header(HOST, "shop.example.com")
        .header("connection", "keep-alive, x-custom")
        .header("x-custom", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "deflate")
        .header("trailer", "x-checksum")
        .header("x-end-to-end", "kept")
        .body(support::body::empty())
        .unwrap();

    let echo = support::client::send(proxy.addr, req).await.echo();

    for name in [
        "x-custom",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        assert!(
            !echo.headers.contains_key(name),
            "backend saw hop-by-hop header {name}: {:?}",
            echo.header(name)
        );
    }
    let connection = echo.joined("connection").to_ascii_lowercase();
    assert!(
        !connection.contains("x-custom"),
        "the client's Connection header was forwarded: {connection:?}"
    );
    assert_eq!(echo.header("x-end-to-end"), ["kept"]);
}

async fn hop_by_hop_response_headers_are_stripped(path: H1Path) {
    let (_blue, proxy) = echo_proxy(path).await;

    let reply = get(proxy.addr, "shop.example.com", "/hop-headers").await;

    assert_eq!(reply.status, StatusCode::OK);
    for name in ["x-resp-hop", "keep-alive", "proxy-connection"] {
        assert!(
            !reply.headers.contains_key(name),
            "client saw hop-by-hop header {name}: {:?}",
            reply.headers.get(name)
        );
    }
    for value in reply.headers.get_all("connection") {
        let value = value.to_str().unwrap_or_default().to_ascii_lowercase();
        assert!(
            !value.contains("x-resp-hop"),
            "the backend's Connection header was forwarded: {value:?}"
        );
    }
    assert_eq!(reply.headers["x-resp-end-to-end"], "kept");
}

async fn large_request_body_is_streamed_up(path: H1Path) {
    let (_blue, proxy) = echo_proxy(path).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/upload")
        .header(HOST, "shop.example.com")
        .body(GeneratedBody::chunked(MIB_100).boxed())
        .unwrap();

    let reply = support::client::send(proxy.addr, req).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), MIB_100.to_string());
}

async fn large_sized_request_body_is_streamed_up(path: H1Path) {
    let (_blue, proxy) = echo_proxy(path).await;
    let len = 10 * 1024 * 1024 + 7;
    let req = Request::builder()
        .method(Method::PUT)
        .uri("/upload")
        .header(HOST, "shop.example.com")
        .body(GeneratedBody::sized(len).boxed())
        .unwrap();

    let reply = support::client::send(proxy.addr, req).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), len.to_string());
}

async fn request_body_reaches_the_backend_before_it_ends(path: H1Path) {
    let (blue, proxy) = echo_proxy(path).await;
    let (tx, body) = ChannelBody::new();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/upload")
        .header(HOST, "shop.example.com")
        .body(body.boxed())
        .unwrap();
    let addr = proxy.addr;
    let upload = tokio::spawn(async move { support::client::send(addr, req).await });

    tx.send(Frame::data(Bytes::from(vec![b'a'; 16 * 1024])))
        .await
        .unwrap();
    // A proxy that buffers the whole body would never pass this on before the end.
    support::eventually("the first 16 KiB to reach the backend", || {
        blue.upload_progress() >= 16 * 1024
    })
    .await;
    tx.send(Frame::data(Bytes::from(vec![b'b'; 1000])))
        .await
        .unwrap();
    drop(tx);

    let reply = upload.await.unwrap();
    assert_eq!(reply.text(), (16 * 1024 + 1000).to_string());
}

async fn large_response_body_is_streamed_down(path: H1Path) {
    let (_blue, proxy) = echo_proxy(path).await;
    let mut client = Http1Client::connect(proxy.addr).await;

    let resp = client
        .send_streaming(support::client::get_request(
            "shop.example.com",
            &format!("/download/{MIB_100}"),
        ))
        .await
        .expect("download response");

    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(count_body_bytes(resp.into_body()).await, MIB_100);
}

async fn response_body_reaches_the_client_before_it_ends(path: H1Path) {
    let (blue, proxy) = echo_proxy(path).await;
    let mut client = Http1Client::connect(proxy.addr).await;

    let resp = client
        .send_streaming(support::client::get_request("shop.example.com", "/hold"))
        .await
        .expect("hold response");
    let mut body = resp.into_body();
    // The backend sends "first" and waits; a buffering proxy would send nothing yet.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk was held back by the proxy")
        .expect("body ended early")
        .expect("body error");
    assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"first"[..]));

    blue.release();
    let rest = body.collect().await.expect("rest of body").to_bytes();
    assert_eq!(&rest[..], b"last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_client_gets_the_split() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = TestProxy::start(&two_backend_config("90", &blue, "10", &green)).await;
    let client = H2Client::connect(proxy.addr).await;

    // 100 streams at once on one connection; the split counts requests, not connections.
    let mut streams = Vec::new();
    for _ in 0..100 {
        let mut client = client.clone();
        streams.push(tokio::spawn(async move {
            client.get("shop.example.com", "/").await
        }));
    }
    let mut replies = Vec::new();
    for stream in streams {
        let reply = stream.await.unwrap();
        assert_eq!(reply.version, http::Version::HTTP_2);
        replies.push(reply);
    }
    let counts = support::client::tally(&replies);

    assert_eq!(counts.get("blue").copied(), Some(90), "{counts:?}");
    assert_eq!(counts.get("green").copied(), Some(10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_request_is_forwarded_as_http1_with_host_and_forwarded_headers() {
    let (_blue, proxy) = echo_proxy(H1Path::Fast).await;
    let mut client = H2Client::connect(proxy.addr).await;

    let reply = client.get("shop.example.com", "/echo").await;
    assert_eq!(reply.version, http::Version::HTTP_2);
    let echo = reply.echo();

    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(echo.path, "/echo");
    assert_eq!(echo.header("host"), ["shop.example.com"]);
    assert_eq!(echo.header("x-forwarded-host"), ["shop.example.com"]);
    assert_eq!(echo.header("x-forwarded-proto"), ["http"]);
    assert_eq!(echo.joined("x-forwarded-for"), "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_routes_by_authority() {
    let shop = Origin::new("shop").start().await;
    let other = Origin::new("other").start().await;
    let config = [
        support::config_text::LISTENER.to_string(),
        support::config_text::route(
            "shop",
            r#"host = "shop.example.com""#,
            "",
            &[support::config_text::backend("shop", None, &[shop.addr])],
        ),
        support::config_text::route(
            "other",
            "",
            "",
            &[support::config_text::backend("other", None, &[other.addr])],
        ),
    ]
    .concat();
    let proxy = TestProxy::start(&config).await;
    let mut client = H2Client::connect(proxy.addr).await;

    assert_eq!(
        client
            .get("shop.example.com", "/")
            .await
            .backend()
            .as_deref(),
        Some("shop")
    );
    assert_eq!(
        client.get("elsewhere.org", "/").await.backend().as_deref(),
        Some("other")
    );
}

async fn keep_alive_connection_serves_many_requests(path: H1Path) {
    let (blue, proxy) = echo_proxy(path).await;
    let mut client = Http1Client::connect(proxy.addr).await;

    for i in 0..20 {
        let reply = client.get("shop.example.com", &format!("/item/{i}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "blue");
    }
    assert_eq!(blue.hits(), 20);
}

async fn upstream_connections_are_pooled_and_reused(path: H1Path) {
    let (blue, proxy) = echo_proxy(path).await;

    // Fresh client connections each time: only the upstream side can be reused.
    for _ in 0..30 {
        assert_eq!(
            get(proxy.addr, "shop.example.com", "/").await.status,
            StatusCode::OK
        );
    }

    assert_eq!(blue.hits(), 30);
    assert!(
        blue.connections() <= 3,
        "30 sequential requests opened {} upstream connections",
        blue.connections()
    );
}
