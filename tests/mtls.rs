//! Mutual TLS on the data plane: a listener's `client_ca` makes a client
//! certificate mandatory, the verified subject reaches the backend in
//! `X-Forwarded-Client-Cert`, and a client-sent one never does, on either
//! HTTP/1.1 path, over HTTP/2, and on plain listeners too.

pub mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use support::client::{H2Client, send};
use support::config_text::{BOTH_PATHS, H1Path, LISTENER, backend, route};
use support::origin::{Echo, Origin, RunningOrigin};
use support::proxy::TestProxy;
use support::tls::{Leaf, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const XFCC: &str = "x-forwarded-client-cert";
const FORGED: &str = "Subject=\"CN=admin,O=ops\"";

/// A proxy whose TLS listener (certificate `server`, on `path`) requires
/// client certificates signed by `clients`, in front of `blue`.
async fn start(server: &Leaf, clients: &Pki, path: H1Path, blue: &RunningOrigin) -> TestProxy {
    let config = format!(
        "{}http1_fast_path = {}\n{}",
        server.listener_for_clients(clients),
        path == H1Path::Fast,
        route("web", "", "", &[backend("blue", None, &[blue.addr])])
    );
    TestProxy::start(&config).await
}

async fn connect(
    addr: SocketAddr,
    config: ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// GET /echo over HTTP/1.1 on `stream` with a forged client-cert header.
async fn echo_http1(stream: tokio_rustls::client::TlsStream<TcpStream>) -> Echo {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let req = Request::get("/echo")
        .header("host", "localhost")
        .header(XFCC, FORGED)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    Echo::parse(&resp.into_body().collect().await.expect("body").to_bytes())
}

/// The same over HTTP/2.
async fn echo_h2(stream: tokio_rustls::client::TlsStream<TcpStream>) -> Echo {
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("https://localhost/echo")
        .header(XFCC, FORGED)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    Echo::parse(&resp.into_body().collect().await.expect("body").to_bytes())
}

/// Whether a request on a connection made with `config` gets any answer:
/// a refused client certificate ends the connection with an alert (in
/// TLS 1.3 the client learns it on its first read).
async fn gets_an_answer(addr: SocketAddr, config: ClientConfig) -> bool {
    let Ok(mut stream) = connect(addr, config).await else {
        return false;
    };
    let request = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.1")
}

#[tokio::test]
async fn a_client_without_a_certificate_from_the_client_ca_is_refused_in_the_handshake() {
    let (server_pki, clients, strangers) = (
        Pki::new("mtls-server"),
        Pki::new("mtls-clients"),
        Pki::new("mtls-strangers"),
    );
    let server = server_pki.localhost();
    let blue = Origin::new("blue").start().await;
    let proxy = start(&server, &clients, H1Path::Fast, &blue).await;
    let alpn: &[&[u8]] = &[b"http/1.1"];

    let none = server_pki.client_config(alpn);
    assert!(
        !gets_an_answer(proxy.addr, none).await,
        "no client certificate"
    );
    let stranger = strangers.leaf("stranger", &["stranger.test"]);
    let wrong_ca = server_pki.client_config_as(alpn, &stranger);
    assert!(
        !gets_an_answer(proxy.addr, wrong_ca).await,
        "a certificate from another CA"
    );
    assert_eq!(blue.hits(), 0, "nothing reached the backend");

    let app = clients.leaf("app", &["app.test"]);
    let good = server_pki.client_config_as(alpn, &app);
    assert!(gets_an_answer(proxy.addr, good).await, "a client of the CA");
    assert_eq!(blue.hits(), 1);
}

#[tokio::test]
async fn the_verified_subject_reaches_the_backend_and_a_forged_one_never_does() {
    let (server_pki, clients) = (Pki::new("xfcc-server"), Pki::new("xfcc-clients"));
    let server = server_pki.localhost();
    let app = clients.leaf("app", &["app.test"]);
    let blue = Origin::new("blue").start().await;
    let expected = vec!["Subject=\"CN=app.test\"".to_string()];
    for path in BOTH_PATHS {
        let proxy = start(&server, &clients, path, &blue).await;
        let http1 = server_pki.client_config_as(&[b"http/1.1"], &app);
        let stream = connect(proxy.addr, http1).await.expect("handshake");
        let echo = echo_http1(stream).await;
        assert_eq!(echo.header(XFCC), expected, "HTTP/1.1 on {path:?}");

        let h2 = server_pki.client_config_as(&[b"h2"], &app);
        let stream = connect(proxy.addr, h2).await.expect("handshake");
        let echo = echo_h2(stream).await;
        assert_eq!(echo.header(XFCC), expected, "HTTP/2");
        assert_eq!(echo.header("x-forwarded-proto"), vec!["https"]);
    }
}

#[tokio::test]
async fn a_listener_without_client_certificates_removes_a_client_sent_forwarded_client_cert() {
    let blue = Origin::new("blue").start().await;
    for path in BOTH_PATHS {
        let config = format!(
            "{LISTENER}http1_fast_path = {}\n{}",
            path == H1Path::Fast,
            route("web", "", "", &[backend("blue", None, &[blue.addr])])
        );
        let proxy = TestProxy::start(&config).await;
        let req = Request::get("/echo")
            .header("host", "web.test")
            .header(XFCC, FORGED)
            .header(XFCC, "By=spiffe://evil")
            .body(support::body::empty())
            .expect("request");
        let reply = send(proxy.addr, req).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.echo().header(XFCC), Vec::<String>::new(), "{path:?}");

        // A Connection-named one is hop-by-hop as well as untrusted.
        let mut raw = TcpStream::connect(proxy.addr).await.expect("connect");
        raw.write_all(
            format!(
                "GET /echo HTTP/1.1\r\nHost: web.test\r\nConnection: close, {XFCC}\r\n{XFCC}: {FORGED}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        let mut answer = Vec::new();
        raw.read_to_end(&mut answer).await.expect("read");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(!text.contains("CN=admin"), "forged value forwarded: {text}");
    }
    let config = format!(
        "{LISTENER}{}",
        route("web", "", "", &[backend("blue", None, &[blue.addr])])
    );
    let proxy = TestProxy::start(&config).await;
    let mut h2c = H2Client::connect(proxy.addr).await;
    let req = Request::get("http://web.test/echo")
        .version(http::Version::HTTP_2)
        .header(XFCC, FORGED)
        .body(support::body::empty())
        .expect("request");
    let reply = h2c.send(req).await;
    assert_eq!(reply.echo().header(XFCC), Vec::<String>::new(), "h2c");
}
