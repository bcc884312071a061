//! The HTTP/1.1 fast path (`sluicegate::adapters::fast_path`) and its hand-over to hyper on
//! one client connection: what a client sees must not depend on which of the
//! two served a request.

pub mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::config_text::{LISTENER, backend, route};
use support::hostile::backends::{Script, ScriptedBackend};
use support::origin::{Echo, Origin};
use support::proxy::TestProxy;
use support::raw::{read_response, read_response_to};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy_to(backend: SocketAddr) -> TestProxy {
    let config = format!(
        "{LISTENER}{}",
        route("web", "", "", &[backend_text("web", &[backend])])
    );
    TestProxy::start(&config).await
}

fn backend_text(name: &str, endpoints: &[SocketAddr]) -> String {
    backend(name, None, endpoints)
}

#[tokio::test]
async fn one_connection_moves_from_the_fast_path_to_hyper_and_is_served_throughout() {
    let web = Origin::new("web").start().await;
    let proxy = proxy_to(web.addr).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut pending = Vec::new();

    // Plain GETs: the fast path.
    for _ in 0..2 {
        stream
            .write_all(b"GET /echo HTTP/1.1\r\nHost: web.test\r\nX-Case: Kept\r\n\r\n")
            .await
            .unwrap();
        let resp = read_response(&mut stream, &mut pending).await;
        assert_eq!(resp.status, 200);
        let echo = Echo::parse(&resp.body);
        assert_eq!(echo.method, "GET");
        assert_eq!(echo.joined("x-forwarded-for"), "127.0.0.1");
        assert_eq!(echo.joined("x-forwarded-host"), "web.test");
    }
    // A chunked upload: handed to hyper with the bytes read so far.
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let resp = read_response(&mut stream, &mut pending).await;
    assert_eq!(resp.status, 200);
    assert_eq!(Echo::parse(&resp.body).method, "POST");
    // hyper serves the rest of the connection, keep-alive intact.
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: web.test\r\n\r\n")
        .await
        .unwrap();
    let resp = read_response(&mut stream, &mut pending).await;
    assert_eq!(resp.status, 200);
    assert_eq!(Echo::parse(&resp.body).method, "GET");
    assert_eq!(web.hits(), 4);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let web = Origin::new("web").start().await;
    let proxy = proxy_to(web.addr).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut pending = Vec::new();
    stream
        .write_all(
            b"GET /status/201 HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /status/202 HTTP/1.1\r\nHost: a\r\n\r\n\
              HEAD /status/203 HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for head in [false, false, true, false] {
        // A HEAD answer has no body, whatever its Content-Length says: the
        // next response must follow its head directly.
        let resp = read_response_to(&mut stream, &mut pending, head).await;
        statuses.push(resp.status);
        if head {
            assert_eq!(resp.field("content-length"), Some("3"));
        }
    }
    assert_eq!(statuses, [201, 202, 203, 204]);
    assert!(pending.is_empty(), "nothing after the last response");
}

#[tokio::test]
async fn small_request_bodies_in_pieces_are_forwarded_whole() {
    let web = Origin::new("web").start().await;
    let proxy = proxy_to(web.addr).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut pending = Vec::new();
    let body = vec![b'x'; 40_000];
    stream
        .write_all(b"PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 40000\r\n\r\n")
        .await
        .unwrap();
    for piece in body.chunks(10_000) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        stream.write_all(piece).await.unwrap();
    }
    let resp = read_response(&mut stream, &mut pending).await;
    assert_eq!(resp.status, 200);
    assert_eq!(String::from_utf8_lossy(&resp.body), "40000");
}

#[tokio::test]
async fn chunked_responses_pass_chunk_for_chunk_with_trailers() {
    let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Origin: Raw\r\n\
                   Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\n\r\n\
                   5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: done\r\n\r\n";
    let raw = ScriptedBackend::start(Script::Raw(answer.to_vec())).await;
    let proxy = proxy_to(raw.addr).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut pending = Vec::new();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let resp = read_response(&mut stream, &mut pending).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"hello world");
    let wire = String::from_utf8_lossy(&resp.wire);
    assert!(
        wire.ends_with("5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: done\r\n\r\n"),
        "chunks and trailer passed as sent: {wire:?}"
    );
    assert_eq!(resp.field("X-Origin"), Some("Raw"), "{:?}", resp.fields);
    assert!(
        resp.fields.iter().any(|(n, _)| n == "X-Origin"),
        "field-name case kept"
    );
    assert_eq!(resp.field("x-hop"), None, "named in Connection: hop-by-hop");
    assert!(resp.field("date").is_some(), "a Date is added when missing");
    assert!(pending.is_empty(), "nothing after the terminating chunk");
}

#[tokio::test]
async fn a_response_with_broken_chunked_framing_closes_the_client_connection() {
    let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n".to_vec();
    let raw = ScriptedBackend::start(Script::Raw(answer)).await;
    let proxy = proxy_to(raw.addr).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the proxy closed the connection");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(
        !text.contains("helloX"),
        "the broken chunk is not passed on: {text:?}"
    );
}

/// One keep-alive connection on `path`: a request, an idle wait of `pause`,
/// a request, then how long until the proxy closed it idle.
async fn idle_then_closed(path: support::config_text::H1Path, pause: Duration) -> Duration {
    use support::config_text::{listener_on, timeouts};
    use support::raw::RawConn;
    let blue = Origin::new("blue").start().await;
    let config = format!(
        "{}{}{}",
        listener_on(path),
        timeouts(&[("client_idle", "3s")]),
        route("web", "", "", &[backend("blue", None, &[blue.addr])])
    );
    let proxy = TestProxy::start(&config).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let request = b"GET /echo HTTP/1.1\r\nHost: web.test\r\n\r\n";
    for round in ["first", "after the idle wait"] {
        conn.send(request).await;
        let head = conn.read_head().await;
        conn.read_body(&head, false).await;
        assert_eq!(head.status, 200, "{path:?}: {round}");
        if round == "first" {
            tokio::time::sleep(pause).await;
        }
    }
    let idle_from = tokio::time::Instant::now();
    assert!(conn.closed().await, "{path:?}: closed when idle");
    idle_from.elapsed()
}

// Real time: the fast path's deadlines read the system clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_idle_past_its_buffer_trim_is_served_and_closed_at_client_idle() {
    use support::config_text::H1Path;
    // Past the fast path's one-second buffer trim, well before client_idle.
    let pause = Duration::from_millis(1500);
    let (fast, hyper) = tokio::join!(
        idle_then_closed(H1Path::Fast, pause),
        idle_then_closed(H1Path::Hyper, pause)
    );
    for (path, idle) in [(H1Path::Fast, fast), (H1Path::Hyper, hyper)] {
        assert!(
            idle >= Duration::from_millis(2900) && idle < Duration::from_millis(4500),
            "{path:?}: closed after {idle:?} idle (client_idle is 3s)"
        );
    }
}
