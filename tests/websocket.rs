//! WebSocket tunnels through the proxy: HTTP/1.1 Upgrade and HTTP/2
//! extended CONNECT (RFC 8441), tunnels that outlive reloads and weight
//! changes pinned to their backend, and the refusals: plain CONNECT (405),
//! an h2-only backend (502).

pub mod support;

use std::net::SocketAddr;

use http::{Method, Request, StatusCode, Version};
use hyper::client::conn::http2;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::admin::FileProxy;
use support::body::{TestBody, empty};
use support::client::get;
use support::config_text::{LISTENER, backend_with, dead_addr, route};
use support::eventually_async;
use support::grpc::ws_echo;
use support::origin::{Answers, Origin, RunningOrigin};
use support::proxy::TestProxy;
use support::raw::RawConn;
use support::tls::{Pki, tls_connect};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Http1Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type H2Socket = WebSocketStream<TokioIo<Upgraded>>;

/// One plain listener and route `web` over `backends`.
fn config(backends: &[String]) -> String {
    format!("{LISTENER}{}", route("web", "", "", backends))
}

/// A WebSocket opened with an HTTP/1.1 Upgrade through the proxy.
async fn ws_http1(addr: SocketAddr) -> Http1Socket {
    let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("WebSocket handshake through the proxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// Sends an extended CONNECT (`:protocol` websocket, or none when
/// `protocol` is false) on a fresh h2 connection over `io`.
async fn h2_connect<S>(
    io: S,
    protocol: bool,
) -> (
    http2::SendRequest<TestBody>,
    http::Response<hyper::body::Incoming>,
)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = if protocol {
        Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri("http://ws.test/ws")
            .header("sec-websocket-version", "13")
            .body(empty())
            .expect("extended CONNECT")
    } else {
        Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri("ws.test:443")
            .body(empty())
            .expect("plain CONNECT")
    };
    if protocol {
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
    }
    sender.ready().await.expect("h2 connection ready");
    let resp = sender.send_request(req).await.expect("CONNECT sent");
    (sender, resp)
}

/// A WebSocket over an h2 extended CONNECT on `io`; the sender keeps the
/// connection's handle alive next to the socket.
async fn ws_h2<S>(io: S) -> (http2::SendRequest<TestBody>, H2Socket)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, resp) = h2_connect(io, true).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "extended CONNECT is answered 200"
    );
    let upgraded = hyper::upgrade::on(resp).await.expect("h2 tunnel");
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    (sender, ws)
}

/// The backend name an echo came from (`"blue: hi"` → `blue`).
fn echoed_by(reply: &str) -> &str {
    reply.split_once(": ").map_or(reply, |(name, _)| name)
}

#[tokio::test]
async fn websocket_echoes_over_http1_upgrade() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = TestProxy::start(&config(&[backend_with(
        "blue",
        None,
        &[blue.endpoint()],
        &[],
    )]))
    .await;

    let mut ws = ws_http1(proxy.addr).await;
    assert_eq!(ws_echo(&mut ws, "hello").await, "blue: hello");
    assert_eq!(ws_echo(&mut ws, "again").await, "blue: again");
    assert_eq!(blue.websockets(), 1);
}

#[tokio::test]
async fn websocket_echoes_over_h2_extended_connect() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = TestProxy::start(&config(&[backend_with(
        "blue",
        None,
        &[blue.endpoint()],
        &[],
    )]))
    .await;

    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let (_sender, mut ws) = ws_h2(tcp).await;
    assert_eq!(ws_echo(&mut ws, "hello").await, "blue: hello");
    assert_eq!(ws_echo(&mut ws, "again").await, "blue: again");
    assert_eq!(blue.websockets(), 1);
}

#[tokio::test]
async fn websocket_echoes_over_h2_on_a_tls_listener() {
    let pki = Pki::new("ws-tls");
    let leaf = pki.localhost();
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let text = format!(
        "{}{}",
        leaf.listener(),
        route(
            "web",
            "",
            "",
            &[backend_with("blue", None, &[blue.endpoint()], &[])]
        )
    );
    let proxy = TestProxy::start(&text).await;

    let tls = tls_connect(proxy.addr, &pki, "localhost", &[b"h2"]).await;
    let (_sender, mut ws) = ws_h2(tls).await;
    assert_eq!(ws_echo(&mut ws, "secure").await, "blue: secure");
}

#[tokio::test]
async fn websocket_to_a_tls_backend_is_tunnelled() {
    let pki = Pki::new("ws-upstream-tls");
    let blue = Origin::new("blue")
        .answer(Answers::Protocols)
        .tls(&pki.localhost())
        .start()
        .await;
    let ca = format!("tls_ca = \"{}\"", pki.ca_path().display());
    let proxy = TestProxy::start(&config(&[backend_with(
        "blue",
        None,
        &[blue.https_endpoint()],
        &[&ca, "protocol = \"auto\""],
    )]))
    .await;

    let mut ws = ws_http1(proxy.addr).await;
    assert_eq!(ws_echo(&mut ws, "hello").await, "blue: hello");
}

/// Blue and green WebSocket backends at these weights, from a config file.
fn split_body(
    blue: &RunningOrigin,
    blue_weight: &str,
    green: &RunningOrigin,
    green_weight: &str,
) -> String {
    config(&[
        backend_with("blue", Some(blue_weight), &[blue.endpoint()], &[]),
        backend_with("green", Some(green_weight), &[green.endpoint()], &[]),
    ])
}

#[tokio::test]
async fn websocket_survives_a_reload_and_an_admin_weight_change_on_its_backend() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let green = Origin::new("green")
        .answer(Answers::Protocols)
        .start()
        .await;
    let proxy = FileProxy::start(&split_body(&blue, "100", &green, "0")).await;

    let mut first = ws_http1(proxy.addr).await;
    assert_eq!(ws_echo(&mut first, "one").await, "blue: one");

    // The file moves all traffic to green: new sockets go there, the open
    // one stays with blue.
    proxy.write_config(&split_body(&blue, "0", &green, "100"));
    proxy
        .wait_for_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;
    let mut second = ws_http1(proxy.addr).await;
    assert_eq!(ws_echo(&mut second, "two").await, "green: two");
    assert_eq!(
        ws_echo(&mut first, "after reload").await,
        "blue: after reload",
        "the open socket outlives the reload, on its backend"
    );

    // An admin change moves everything back to blue; both sockets stay put.
    let (status, body) = proxy
        .put_weights("web", &[("blue", 100.0), ("green", 0.0)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut third = ws_http1(proxy.addr).await;
    assert_eq!(ws_echo(&mut third, "three").await, "blue: three");
    assert_eq!(
        ws_echo(&mut first, "after admin").await,
        "blue: after admin"
    );
    assert_eq!(
        ws_echo(&mut second, "after admin").await,
        "green: after admin"
    );
    assert_eq!((blue.websockets(), green.websockets()), (2, 1));
}

#[tokio::test]
async fn websocket_survives_its_backend_leaving_the_config() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let green = Origin::new("green")
        .answer(Answers::Protocols)
        .start()
        .await;
    let only = |b: &RunningOrigin| config(&[backend_with(&b.name, None, &[b.endpoint()], &[])]);
    let proxy = FileProxy::start(&only(&blue)).await;

    let mut ws = ws_http1(proxy.addr).await;
    assert_eq!(ws_echo(&mut ws, "before").await, "blue: before");

    proxy.write_config(&only(&green));
    eventually_async("the reload to route to green", || async {
        proxy.next_backend().await == "green"
    })
    .await;
    assert_eq!(
        ws_echo(&mut ws, "after").await,
        "blue: after",
        "a tunnel holds no snapshot: removing its backend does not cut it"
    );
}

#[tokio::test]
async fn websocket_split_pins_each_socket_to_one_backend() {
    const SOCKETS: usize = 10;
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let green = Origin::new("green")
        .answer(Answers::Protocols)
        .start()
        .await;
    let proxy = TestProxy::start(&split_body(&blue, "50", &green, "50")).await;

    let mut sockets = Vec::with_capacity(SOCKETS);
    let mut owners = Vec::with_capacity(SOCKETS);
    for i in 0..SOCKETS {
        let mut ws = ws_http1(proxy.addr).await;
        let reply = ws_echo(&mut ws, &format!("open {i}")).await;
        owners.push(echoed_by(&reply).to_string());
        sockets.push(ws);
    }
    let on_blue = owners.iter().filter(|o| *o == "blue").count();
    let on_green = owners.iter().filter(|o| *o == "green").count();
    assert_eq!(on_blue + on_green, SOCKETS, "{owners:?}");
    assert!(
        on_blue > 0 && on_green > 0,
        "a 50/50 split uses both: {owners:?}"
    );
    assert_eq!((blue.websockets(), green.websockets()), (on_blue, on_green));

    // Rounds over all open sockets: every echo comes from the socket's backend.
    for round in 0..3 {
        for (i, ws) in sockets.iter_mut().enumerate() {
            let reply = ws_echo(ws, &format!("round {round} socket {i}")).await;
            assert_eq!(
                reply,
                format!("{}: round {round} socket {i}", owners[i]),
                "socket {i} stays pinned"
            );
        }
    }
}

#[tokio::test]
async fn websocket_on_a_drained_endpoint_keeps_echoing() {
    let one = Origin::new("one").answer(Answers::Protocols).start().await;
    let two = Origin::new("two").answer(Answers::Protocols).start().await;
    let proxy = FileProxy::start(&config(&[backend_with(
        "blue",
        None,
        &[one.endpoint(), two.endpoint()],
        &[],
    )]))
    .await;
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let mut ws = ws_http1(proxy.addr).await;
        let reply = ws_echo(&mut ws, "hi").await;
        sockets.push((echoed_by(&reply).to_string(), ws));
    }
    let (drained, _) = &sockets[0];
    let drained = if drained == "one" { &one } else { &two };
    let path = format!(
        "/api/v1/routes/web/backends/blue/endpoints/{}/drain",
        drained.endpoint().replace(':', "%3A")
    );
    let (status, body) = proxy
        .admin_send(Method::POST, &path, None, Some(&proxy.token))
        .await;
    assert_eq!(status, StatusCode::OK, "POST {path}: {body}");

    // New sockets avoid the drained endpoint; open ones finish their work.
    for _ in 0..2 {
        let mut ws = ws_http1(proxy.addr).await;
        let reply = ws_echo(&mut ws, "new").await;
        assert_ne!(
            echoed_by(&reply),
            drained.name,
            "a new socket avoids the drained endpoint"
        );
    }
    for (owner, ws) in &mut sockets {
        assert_eq!(ws_echo(ws, "still").await, format!("{owner}: still"));
    }
}

#[tokio::test]
async fn websocket_skips_an_endpoint_that_refuses_connections() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let dead = dead_addr().await.to_string();
    let proxy = TestProxy::start(&config(&[backend_with(
        "blue",
        None,
        &[dead, blue.endpoint()],
        &[],
    )]))
    .await;
    // Round robin starts one of these two at the dead endpoint.
    for i in 0..2 {
        let mut ws = ws_http1(proxy.addr).await;
        assert_eq!(
            ws_echo(&mut ws, &format!("try {i}")).await,
            format!("blue: try {i}")
        );
    }
}

#[tokio::test]
async fn plain_connect_is_refused_with_405() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = TestProxy::start(&config(&[backend_with(
        "blue",
        None,
        &[blue.endpoint()],
        &[],
    )]))
    .await;

    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"CONNECT ws.test:443 HTTP/1.1\r\nHost: ws.test:443\r\n\r\n")
        .await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 405, "HTTP/1.1 CONNECT: {head:?}");

    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let (_sender, resp) = h2_connect(tcp, false).await;
    assert_eq!(
        resp.status(),
        StatusCode::METHOD_NOT_ALLOWED,
        "h2 CONNECT without :protocol"
    );
    assert_eq!(blue.hits(), 0, "nothing reached the backend");
}

#[tokio::test]
async fn upgrade_to_an_h2c_backend_is_a_502() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = TestProxy::start(&config(&[backend_with(
        "blue",
        None,
        &[blue.endpoint()],
        &["protocol = \"h2c\""],
    )]))
    .await;

    match tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        }
        other => panic!("expected a 502 to the HTTP/1.1 upgrade, got {other:?}"),
    }
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let (_sender, resp) = h2_connect(tcp, true).await;
    assert_eq!(
        resp.status(),
        StatusCode::BAD_GATEWAY,
        "h2 extended CONNECT"
    );
    assert_eq!(blue.hits(), 0, "no upgrade reached the h2-only backend");

    // Plain requests to the same backend still work.
    assert_eq!(get(proxy.addr, "ws.test", "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn declined_upgrade_answer_is_passed_to_the_client() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = TestProxy::start(&config(&[backend_with(
        "blue",
        None,
        &[blue.endpoint()],
        &[],
    )]))
    .await;

    // No Sec-WebSocket-Key: the backend answers 400 and the proxy says so.
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(
        b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 400, "{head:?}");
    assert_eq!(blue.websockets(), 0);
}
