//! TLS termination: ALPN h2 and http/1.1 over real TLS, X-Forwarded-Proto
//! https, and a garbage handshake that harms no one else.

pub mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use support::config_text::{backend, route};
use support::origin::{Echo, Origin, RunningOrigin};
use support::proxy::TestProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `localhost` written to a fresh directory.
struct Certificate {
    dir: std::path::PathBuf,
    der: CertificateDer<'static>,
}

impl Certificate {
    fn new(tag: &str) -> Certificate {
        let dir = std::env::temp_dir().join(format!("sg-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), generated.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).unwrap();
        Certificate {
            der: generated.cert.der().clone(),
            dir,
        }
    }

    fn listener(&self) -> String {
        format!(
            "[[listeners]]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            self.dir.join("cert.pem").display(),
            self.dir.join("key.pem").display()
        )
    }

    /// A client trusting only this certificate, offering `alpn`.
    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        sluicegate::edge::tls::install_crypto_provider();
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_stream(
    cert: &Certificate,
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    cert.connector(alpn)
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

async fn start(cert: &Certificate, blue: &RunningOrigin) -> TestProxy {
    let config = format!(
        "{}{}",
        cert.listener(),
        route("web", "", "", &[backend("blue", None, &[blue.addr])])
    );
    TestProxy::start(&config).await
}

#[tokio::test]
async fn tls_client_negotiating_h2_is_served_over_h2() {
    let cert = Certificate::new("h2");
    let blue = Origin::new("blue").start().await;
    let proxy = start(&cert, &blue).await;

    let stream = tls_stream(&cert, proxy.addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://localhost/echo")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let echo = Echo::parse(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(echo.header("x-forwarded-proto"), vec!["https"]);
    assert_eq!(echo.header("host"), vec!["localhost"]);
}

#[tokio::test]
async fn tls_client_negotiating_http1_is_served_over_http1() {
    let cert = Certificate::new("h1");
    let blue = Origin::new("blue").start().await;
    let proxy = start(&cert, &blue).await;

    let stream = tls_stream(&cert, proxy.addr, &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/echo")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let echo = Echo::parse(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(echo.header("x-forwarded-proto"), vec!["https"]);
}

#[tokio::test]
async fn garbage_handshake_is_closed_and_others_are_served() {
    let cert = Certificate::new("garbage");
    let blue = Origin::new("blue").start().await;
    let proxy = start(&cert, &blue).await;

    let mut garbage = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x00, 0x13, 0x37])
        .await
        .unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        garbage.read_to_end(&mut buf),
    )
    .await;
    let closed = matches!(read, Ok(Ok(_)) | Ok(Err(_)));
    assert!(
        closed,
        "the proxy closes a connection whose handshake is garbage"
    );
    assert!(
        !buf.starts_with(b"HTTP/"),
        "no HTTP answer on a failed handshake"
    );

    // A plain-text request on the TLS port is refused the same way.
    let mut plain = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut buf),
    )
    .await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"));

    let stream = tls_stream(&cert, proxy.addr, &[b"http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_listener_with_a_missing_certificate_fails_to_start() {
    let cert = Certificate::new("missing");
    std::fs::remove_file(cert.dir.join("key.pem")).unwrap();
    let config = format!(
        "{}{}",
        cert.listener(),
        route(
            "web",
            "",
            "",
            &[backend("blue", None, &["127.0.0.1:9".parse().unwrap()])]
        )
    );
    let config =
        sluicegate::config::Config::parse(&config, "t.toml", sluicegate::config::Format::Toml)
            .unwrap();
    let listeners = sluicegate::edge::Listeners {
        data: vec![tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()],
        admin: None,
    };
    let result = sluicegate::edge::run(config, listeners, std::future::pending()).await;
    let error = result
        .expect_err("no key file: run must refuse to start")
        .to_string();
    assert!(error.contains("key.pem"), "{error}");
}

#[tokio::test]
async fn a_tls_keep_alive_connection_idle_past_the_buffer_trim_is_served() {
    let cert = Certificate::new("idle");
    let blue = Origin::new("blue").start().await;
    let proxy = start(&cert, &blue).await;
    let stream = tls_stream(&cert, proxy.addr, &[b"http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for round in 0..2 {
        let req = Request::get("/echo")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "request {round}");
        resp.into_body().collect().await.unwrap();
        if round == 0 {
            // The fast path lets an idle connection's buffers go after 1 s
            // and waits on the TLS socket's readiness.
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        }
    }
}
