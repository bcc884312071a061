//! Hostile inputs and faults against the real proxy (issue 10): request
//! smuggling and parsing over raw TCP, resource exhaustion (header limits,
//! slowloris, slow bodies, connection limit, HTTP/2 floods), upstream faults,
//! and hostile admin input.
//!
//! Every case runs with good clients asking through the proxy at the same time
//! and asserts that all of them succeed; most also check that the process's
//! open file descriptors come back to where they were (the proxy runs in this
//! process). The cases run one at a time (see [`serial`]) so those readings
//! are not disturbed by a neighbour. `FIGURE` and `CASE` lines are what
//! docs/RELIABILITY.md reports; see them with `--nocapture`.

pub mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::admin::FileProxy;
use support::body::full;
use support::client::{Http1Client, get, get_request, send};
use support::config_text::{LISTENER, backend, route, timeouts};
use support::hostile::backends::{RecordingBackend, Script, ScriptedBackend, SeenRequest};
use support::hostile::h2::{
    H2_PREFACE, H2Raw, H2Seen, frames, h2_frame, h2_header_frames, hpack_literal,
    hpack_literal_indexed, hpack_request,
};
use support::hostile::{
    GoodClients, GoodMode, RawOutcome, Reading, raw_exchange, read_status, read_until_quiet,
    wait_closed,
};
use support::origin::{Origin, RunningOrigin};
use support::proxy::TestProxy;
use support::{eventually, eventually_async};

/// The host good clients ask for; its route goes to a healthy fake backend.
const GOOD_HOST: &str = "good.test";
/// The host attacks use; its route goes to the backend under test.
const WEB_HOST: &str = "web.test";

/// How long a raw exchange waits for more bytes before it stops reading.
const QUIET: Duration = Duration::from_millis(250);

/// fds the process may hold above the baseline after a case (pooled
/// upstream connections, a listener's accept backlog settling).
const FD_SLACK: usize = 12;

/// One case at a time in this binary: fd and RSS readings are per process.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Short client timeouts so slow clients are cut off within a test's time.
fn short_timeouts() -> String {
    timeouts(&[
        ("client_headers", "500ms"),
        ("response_headers", "1s"),
        ("connect", "500ms"),
    ])
}

/// A proxy with route `good` (host good.test → a healthy fake backend) and
/// route `web` (every other host → `web`).
struct Stage {
    proxy: TestProxy,
    _good: RunningOrigin,
}

impl Stage {
    async fn start(web: &[SocketAddr], web_extra: &str, tables: &str) -> Stage {
        let good = Origin::new("good").start().await;
        let text = stage_config(web, web_extra, tables, good.addr);
        let proxy = TestProxy::start(&text).await;
        Stage { proxy, _good: good }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }

    /// Warms the good route's upstream pool, then reads fds and RSS.
    async fn baseline(&self, mode: GoodMode) -> Reading {
        let warm = GoodClients::start(self.addr(), GOOD_HOST, "/", 4, mode).await;
        warm.finish().await.assert_all_ok("warm-up");
        Reading::now()
    }
}

fn stage_config(web: &[SocketAddr], web_extra: &str, tables: &str, good: SocketAddr) -> String {
    let good_route = route(
        "good",
        &format!("host = \"{GOOD_HOST}\""),
        "",
        &[backend("good", None, &[good])],
    );
    let web_route = route("web", "", web_extra, &[backend("web", None, web)]);
    format!("{LISTENER}{tables}{good_route}{web_route}")
}

/// Runs `attack` while four good clients GET through the proxy, and asserts
/// that every good request succeeded.
async fn during_attack<T>(
    addr: SocketAddr,
    case: &str,
    mode: GoodMode,
    attack: impl Future<Output = T>,
) -> T {
    let good = GoodClients::start(addr, GOOD_HOST, "/", 4, mode).await;
    let out = attack.await;
    good.finish().await.assert_all_ok(case);
    out
}

// ---------------------------------------------------------------------------
// Request smuggling and parsing
// ---------------------------------------------------------------------------

/// What a malformed or ambiguous request must lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A 4xx answer or a close without one; nothing reaches the backend.
    Refused,
    /// Answered 200 once, as the backend saw it.
    Forwarded,
    /// Two pipelined requests, each answered 200 and seen once.
    Twice,
    /// Refused, or forwarded once under one reading; never a second request.
    AtMostOnce,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

fn case(name: &'static str, text: impl AsRef<[u8]>, expect: Expect) -> Case {
    Case {
        name,
        bytes: text.as_ref().to_vec(),
        expect,
    }
}

/// A request head for route `web`: `line`, the Host header, then `headers`
/// (each ending in CRLF), a blank line and `body`.
fn request(line: &str, headers: &str, body: &str) -> String {
    format!("{line}\r\nHost: {WEB_HOST}\r\n{headers}\r\n{body}")
}

/// A follow-up request that must never reach the backend.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: web.test\r\n\r\n";

/// Sends every case on its own connection to a proxy in front of a recording
/// backend, with good clients running, and reports all failures at once.
async fn run_cases(group: &str, cases: Vec<Case>) {
    let _serial = serial().await;
    let web = RecordingBackend::start("web").await;
    let stage = Stage::start(&[web.addr], "", &short_timeouts()).await;
    let before = stage.baseline(GoodMode::Mixed).await;
    let good = GoodClients::start(stage.addr(), GOOD_HOST, "/", 4, GoodMode::Mixed).await;
    let mut failures = Vec::new();
    for case in cases {
        web.clear();
        let outcome = raw_exchange(stage.addr(), &case.bytes, QUIET).await;
        let seen = web.requests();
        let targets: Vec<&str> = seen.iter().map(|r| r.target.as_str()).collect();
        println!(
            "CASE {group}/{}: {}; backend saw {targets:?}",
            case.name,
            outcome.describe()
        );
        if let Err(why) = check_case(&case, &outcome, &seen, &web.raw()) {
            failures.push(format!(
                "{}: {why}\n    client: {}\n    backend saw: {targets:?}",
                case.name,
                outcome.describe()
            ));
        }
    }
    good.finish().await.assert_all_ok(group);
    before.settles(group, FD_SLACK).await;
    assert!(failures.is_empty(), "{group}:\n{}", failures.join("\n"));
}

fn check_case(
    case: &Case,
    outcome: &RawOutcome,
    seen: &[SeenRequest],
    raw: &[u8],
) -> Result<(), String> {
    if seen.iter().any(|r| r.target.contains("smuggled")) {
        return Err("a smuggled request reached the backend".into());
    }
    for r in seen {
        let lengths = r.header("content-length");
        if !lengths.is_empty() && !r.header("transfer-encoding").is_empty() {
            return Err("the backend got Content-Length and Transfer-Encoding".into());
        }
        if lengths.len() > 1 {
            return Err(format!("the backend got Content-Length {lengths:?}"));
        }
    }
    if let Some(at) = (0..raw.len()).find(|&i| raw[i] == b'\n' && (i == 0 || raw[i - 1] != b'\r')) {
        return Err(format!("the backend got a bare LF at byte {at}"));
    }
    let completed = seen.iter().filter(|r| !r.body_error).count();
    let oks = outcome.statuses().iter().filter(|s| **s == 200).count();
    if oks != completed {
        return Err(format!(
            "the client got {oks} answers of 200 but the backend completed {completed} requests"
        ));
    }
    let status = outcome.status();
    let refused = match status {
        Some(code) => (400..500).contains(&code),
        None => outcome.closed,
    };
    match case.expect {
        Expect::Refused if !seen.is_empty() => Err("it reached the backend".into()),
        Expect::Refused if !refused => Err(format!("expected a 4xx or a close, got {status:?}")),
        Expect::Forwarded if status != Some(200) || completed != 1 => {
            Err(format!("expected one 200, got {status:?}"))
        }
        Expect::Twice if outcome.statuses() != [200, 200] || completed != 2 => {
            Err(format!("expected two 200s, got {:?}", outcome.statuses()))
        }
        Expect::AtMostOnce if completed > 1 => Err("forwarded more than once".into()),
        Expect::AtMostOnce if !refused && status != Some(200) => {
            Err(format!("expected 200, a 4xx or a close, got {status:?}"))
        }
        _ => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_body_framing_is_refused_or_read_one_way() {
    use Expect::*;
    let post = "POST /first HTTP/1.1";
    run_cases(
        "framing",
        vec![
            case(
                "baseline: two pipelined GETs",
                format!(
                    "{}{}",
                    request("GET /first HTTP/1.1", "", ""),
                    request("GET /second HTTP/1.1", "", "")
                ),
                Twice,
            ),
            case(
                "CL then TE (CL.TE)",
                request(
                    post,
                    "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                    &format!("0\r\n\r\n{SMUGGLED}"),
                ),
                AtMostOnce,
            ),
            case(
                "TE then CL (TE.CL)",
                request(
                    post,
                    "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                    &format!("8\r\nSMUGGLED\r\n0\r\n\r\n{SMUGGLED}"),
                ),
                AtMostOnce,
            ),
            case(
                "two differing Content-Length",
                request(post, "Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
                Refused,
            ),
            case(
                "Content-Length list",
                request(post, "Content-Length: 5, 6\r\n", "hello!"),
                Refused,
            ),
            case(
                "two equal Content-Length",
                request(post, "Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
                Forwarded,
            ),
            case(
                "Content-Length with a sign",
                request(post, "Content-Length: +5\r\n", "hello"),
                Refused,
            ),
            case(
                "negative Content-Length",
                request(post, "Content-Length: -1\r\n", "hello"),
                Refused,
            ),
            case(
                "hex Content-Length",
                request(post, "Content-Length: 0x5\r\n", "hello"),
                Refused,
            ),
            case(
                "Content-Length overflow",
                request(post, "Content-Length: 99999999999999999999999\r\n", "hello"),
                Refused,
            ),
            case(
                "TE not ending in chunked",
                request(
                    post,
                    "Transfer-Encoding: chunked, identity\r\n",
                    "5\r\nhello\r\n0\r\n\r\n",
                ),
                Refused,
            ),
            case(
                "TE identity",
                request(
                    post,
                    "Transfer-Encoding: identity\r\nContent-Length: 5\r\n",
                    "hello",
                ),
                Refused,
            ),
            case(
                "TE xchunked",
                request(
                    post,
                    "Transfer-Encoding: xchunked\r\n",
                    "5\r\nhello\r\n0\r\n\r\n",
                ),
                Refused,
            ),
            case(
                "two TE headers, last not chunked",
                request(
                    post,
                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                    "5\r\nhello\r\n0\r\n\r\n",
                ),
                Refused,
            ),
            case(
                "TE on HTTP/1.0",
                request(
                    "POST /first HTTP/1.0",
                    "Transfer-Encoding: chunked\r\n",
                    &format!("0\r\n\r\n{SMUGGLED}"),
                ),
                Refused,
            ),
            case(
                "TE obs-folded",
                request(
                    post,
                    "Transfer-Encoding:\r\n chunked\r\n",
                    &format!("0\r\n\r\n{SMUGGLED}"),
                ),
                Refused,
            ),
            case(
                "TE with a space before the colon",
                request(
                    post,
                    "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n",
                    "hello",
                ),
                Refused,
            ),
            case(
                "chunked body then a pipelined GET",
                format!(
                    "{}{}",
                    request(
                        post,
                        "Transfer-Encoding: chunked\r\n",
                        "5\r\nhello\r\n0\r\n\r\n"
                    ),
                    request("GET /second HTTP/1.1", "", "")
                ),
                Twice,
            ),
        ],
    )
    .await;
}

/// A broken chunked body is the client's fault: 400 (or a close), never a
/// 502 that blames the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_request_bodies_are_client_errors() {
    use Expect::*;
    let post = "POST /first HTTP/1.1";
    run_cases(
        "chunked bodies",
        vec![
            case(
                "chunk size not hex",
                request(
                    post,
                    "Transfer-Encoding: chunked\r\n",
                    &format!("zz\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
                ),
                AtMostOnce,
            ),
            case(
                "chunk size overflow",
                request(
                    post,
                    "Transfer-Encoding: chunked\r\n",
                    &format!("fffffffffffffffff\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
                ),
                AtMostOnce,
            ),
            case(
                "chunk without its CRLF",
                request(
                    post,
                    "Transfer-Encoding: chunked\r\n",
                    &format!("5\r\nhelloXX0\r\n\r\n{SMUGGLED}"),
                ),
                AtMostOnce,
            ),
        ],
    )
    .await;
}

/// Clients that send broken bodies must not get a healthy endpoint ejected:
/// passive ejection is for upstream failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_client_bodies_do_not_eject_a_healthy_endpoint() {
    let _serial = serial().await;
    let web = RecordingBackend::start("web").await;
    let stage = Stage::start(&[web.addr], "", &short_timeouts()).await;
    let bad = request(
        "POST /first HTTP/1.1",
        "Transfer-Encoding: chunked\r\n",
        "zz\r\nhello\r\n0\r\n\r\n",
    );
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            raw_exchange(stage.addr(), bad.as_bytes(), QUIET)
                .await
                .status(),
        );
    }
    let after = get(stage.addr(), WEB_HOST, "/first").await;
    println!(
        "CASE chunked bodies/8 broken bodies then a GET: {statuses:?}, then {} {:?}",
        after.status,
        after.text()
    );
    assert_eq!(
        after.status,
        StatusCode::OK,
        "after 8 broken client bodies the healthy endpoint is out: {}",
        after.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_header_syntax_is_refused() {
    use Expect::*;
    let get = "GET /first HTTP/1.1";
    run_cases(
        "headers",
        vec![
            case(
                "obs-fold",
                request(get, "X-Folded: a\r\n b\r\n", ""),
                Refused,
            ),
            case(
                "bare LF line ends",
                format!("GET /first HTTP/1.1\nHost: {WEB_HOST}\nX-A: 1\n\n"),
                AtMostOnce,
            ),
            case(
                "bare LF inside the head",
                request(get, "X-A: 1\nX-B: 2\r\n", ""),
                AtMostOnce,
            ),
            case(
                "bare CR inside a value",
                request(get, "X-A: 1\rX-B: 2\r\n", ""),
                Refused,
            ),
            case("NUL in a value", request(get, "X-A: a\0b\r\n", ""), Refused),
            case(
                "space inside a name",
                request(get, "Bad Name: x\r\n", ""),
                Refused,
            ),
            case(
                "separator in a name",
                request(get, "X(y): z\r\n", ""),
                Refused,
            ),
            case(
                "control byte in a name",
                request(get, "X-\x01: z\r\n", ""),
                Refused,
            ),
            case("empty name", request(get, ": novalue\r\n", ""), Refused),
            case(
                "non-ASCII name",
                request(get, "X-\u{dc}: v\r\n", ""),
                Refused,
            ),
            case(
                "space before the colon",
                request(get, "X-Space : v\r\n", ""),
                Refused,
            ),
            case(
                "Content-Length with a space before the colon",
                request("POST /first HTTP/1.1", "Content-Length : 5\r\n", "hello"),
                Refused,
            ),
            case(
                "Host with a space before the colon",
                format!("GET /first HTTP/1.1\r\nHost : {WEB_HOST}\r\n\r\n"),
                Refused,
            ),
            case(
                "line without a colon",
                request(get, "NoColonHere\r\n", ""),
                Refused,
            ),
            case(
                "header before the request line",
                format!(" X-A: 1\r\n{}", request(get, "", "")),
                Refused,
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_request_targets_and_lines_are_refused_or_normalised() {
    use Expect::*;
    let long_uri = format!("/{}", "a".repeat(70 * 1024));
    run_cases(
        "targets",
        vec![
            case(
                "absolute-form, same host",
                request(&format!("GET http://{WEB_HOST}/first HTTP/1.1"), "", ""),
                Forwarded,
            ),
            case(
                "authority-form GET",
                request(&format!("GET {WEB_HOST}:80 HTTP/1.1"), "", ""),
                Refused,
            ),
            case(
                "authority-form CONNECT",
                request(&format!("CONNECT {WEB_HOST}:443 HTTP/1.1"), "", ""),
                Refused,
            ),
            case(
                "over-long URI (70 KiB)",
                request(&format!("GET {long_uri} HTTP/1.1"), "", ""),
                Refused,
            ),
            case("HTTP/0.9 request line", "GET /first\r\n\r\n", Refused),
            case(
                "unknown version",
                request("GET /first HTTP/1.2", "", ""),
                Refused,
            ),
            case(
                "HTTP/2.0 over HTTP/1",
                request("GET /first HTTP/2.0", "", ""),
                Refused,
            ),
            case(
                "extra token in the request line",
                request("GET /first HTTP/1.1 extra", "", ""),
                Refused,
            ),
            case(
                "two spaces in the request line",
                request("GET  /first HTTP/1.1", "", ""),
                Refused,
            ),
            case(
                "space inside the target",
                request("GET /fi rst HTTP/1.1", "", ""),
                Refused,
            ),
            case(
                "method with a separator",
                request("GE(T /first HTTP/1.1", "", ""),
                Refused,
            ),
            case("garbage", "\x16\x03\x01\x02\x00garbage\r\n\r\n", Refused),
            case(
                "no Host on HTTP/1.1",
                "GET /first HTTP/1.1\r\n\r\n",
                AtMostOnce,
            ),
        ],
    )
    .await;
}

/// RFC 9112 §3.2.2: the target's authority and Host may disagree. Whatever
/// the proxy does, the backend must see the Host of the route it was picked
/// by, never a request routed by one name and carrying the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_with_another_host_is_routed_consistently() {
    let _serial = serial().await;
    let a = RecordingBackend::start("a").await;
    let b = RecordingBackend::start("b").await;
    let text = format!(
        "{LISTENER}{}{}",
        route(
            "a",
            "host = \"a.test\"",
            "",
            &[backend("a", None, &[a.addr])]
        ),
        route(
            "b",
            "host = \"b.test\"",
            "",
            &[backend("b", None, &[b.addr])]
        ),
    );
    let proxy = TestProxy::start(&text).await;
    let outcome = raw_exchange(
        proxy.addr,
        b"GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
        QUIET,
    )
    .await;
    println!(
        "CASE targets/absolute-form, other host: {}",
        outcome.describe()
    );
    println!(
        "CASE targets/absolute-form, other host: a saw {:?}, b saw {:?}",
        a.requests()
            .iter()
            .map(|r| r.header("host").join(","))
            .collect::<Vec<_>>(),
        b.requests()
            .iter()
            .map(|r| r.header("host").join(","))
            .collect::<Vec<_>>()
    );
    let total = a.hits() + b.hits();
    assert!(total <= 1, "forwarded {total} times");
    for (backend, host) in [(&a, "a.test"), (&b, "b.test")] {
        for r in backend.requests() {
            assert_eq!(
                r.header("host"),
                vec![host],
                "backend {} (route host {host}) got Host {:?}",
                backend.name,
                r.header("host")
            );
            assert_eq!(r.target, "/x", "not rewritten to origin form");
        }
    }
    if total == 0 {
        let code = outcome.status().unwrap_or(0);
        assert!(
            (400..500).contains(&code) || outcome.closed,
            "{}",
            outcome.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// Resource exhaustion
// ---------------------------------------------------------------------------

/// `count` headers in all (Host included), each `X-Hn: value`.
fn request_with_headers(count: usize, value_len: usize) -> String {
    let value = "v".repeat(value_len);
    let headers: String = (1..count).map(|i| format!("X-H{i}: {value}\r\n")).collect();
    request("GET /first HTTP/1.1", &headers, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100_headers_is_431() {
    let _serial = serial().await;
    let web = RecordingBackend::start("web").await;
    let stage = Stage::start(&[web.addr], "", &short_timeouts()).await;
    let before = stage.baseline(GoodMode::Mixed).await;
    let (at_limit, over) = during_attack(stage.addr(), "header count", GoodMode::Mixed, async {
        let at_limit =
            raw_exchange(stage.addr(), request_with_headers(100, 8).as_bytes(), QUIET).await;
        let hits_at_limit = web.hits();
        let over = raw_exchange(stage.addr(), request_with_headers(101, 8).as_bytes(), QUIET).await;
        ((at_limit, hits_at_limit), over)
    })
    .await;
    println!("CASE limits/100 headers: {}", at_limit.0.describe());
    println!("CASE limits/101 headers: {}", over.describe());
    assert_eq!(at_limit.0.status(), Some(200), "100 headers are allowed");
    assert_eq!(at_limit.1, 1);
    assert_eq!(over.status(), Some(431), "101 headers: {}", over.describe());
    assert_eq!(web.hits(), 1, "the 101-header request reached the backend");
    before.settles("header count", FD_SLACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_64_kib_of_headers_is_431() {
    let _serial = serial().await;
    let web = RecordingBackend::start("web").await;
    let stage = Stage::start(&[web.addr], "", &short_timeouts()).await;
    let before = stage.baseline(GoodMode::Mixed).await;
    let outcomes = during_attack(stage.addr(), "header bytes", GoodMode::Mixed, async {
        let mut outcomes = Vec::new();
        // 8 x 7 KiB = 56 KiB: under the limit.
        for (name, text) in [
            ("56 KiB in 8 headers", request_with_headers(9, 7 * 1024)),
            ("70 KiB in 10 headers", request_with_headers(11, 7 * 1024)),
            ("one 80 KiB header", request_with_headers(2, 80 * 1024)),
            ("1 MiB of headers", request_with_headers(65, 16 * 1024)),
        ] {
            let hits = web.hits();
            let outcome = raw_exchange(stage.addr(), text.as_bytes(), QUIET).await;
            println!("CASE limits/{name}: {}", outcome.describe());
            outcomes.push((name, outcome, web.hits() - hits));
        }
        outcomes
    })
    .await;
    let (name, under, hits) = &outcomes[0];
    assert_eq!(under.status(), Some(200), "{name}: {}", under.describe());
    assert_eq!(*hits, 1);
    for (name, over, hits) in &outcomes[1..] {
        assert_eq!(over.status(), Some(431), "{name}: {}", over.describe());
        assert_eq!(*hits, 0, "{name} reached the backend");
    }
    before.settles("header bytes", FD_SLACK).await;
}

/// Trickles `head` one byte every 100 ms; returns how long until the proxy
/// closed (or `None` when it was still open after `limit`).
async fn trickle(addr: SocketAddr, head: &[u8], limit: Duration) -> (Option<Duration>, Vec<u8>) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut sent = 0;
    while start.elapsed() < limit {
        let byte = head.get(sent).copied().unwrap_or(b'a');
        if stream.write_all(&[byte]).await.is_err() {
            break;
        }
        sent += 1;
        let outcome = read_until_quiet(&mut stream, Duration::from_millis(100)).await;
        if outcome.closed {
            return (Some(start.elapsed()), outcome.bytes);
        }
    }
    let rest = limit.saturating_sub(start.elapsed()) + Duration::from_millis(50);
    (
        wait_closed(&mut stream, rest)
            .await
            .map(|_| start.elapsed()),
        Vec::new(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off_after_client_headers() {
    let _serial = serial().await;
    let web = RecordingBackend::start("web").await;
    let stage = Stage::start(&[web.addr], "", &short_timeouts()).await;
    let before = stage.baseline(GoodMode::Mixed).await;
    let head = format!("GET /first HTTP/1.1\r\nHost: {WEB_HOST}\r\nX-Slow: ");
    let closes = during_attack(stage.addr(), "slowloris", GoodMode::Mixed, async {
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let head = head.clone().into_bytes();
            let addr = stage.addr();
            tasks.push(tokio::spawn(async move {
                trickle(addr, &head, Duration::from_secs(3)).await
            }));
        }
        let mut closes = Vec::new();
        for task in tasks {
            closes.push(task.await.expect("slowloris task"));
        }
        closes
    })
    .await;
    let slowest = closes.iter().map(|(t, _)| *t).max().flatten();
    let answered: Vec<String> = closes
        .iter()
        .filter(|(_, bytes)| !bytes.is_empty())
        .map(|(_, b)| String::from_utf8_lossy(&b[..b.len().min(40)]).into_owned())
        .collect();
    println!(
        "FIGURE slowloris: 40 connections, all closed: {}, slowest close {slowest:?}, answers {:?}",
        closes.iter().all(|(t, _)| t.is_some()),
        answered.first()
    );
    for (closed, _) in &closes {
        let after = closed.expect("a slowloris connection was still open after 3 s");
        assert!(
            after < Duration::from_millis(1500),
            "closed only after {after:?} (client_headers is 500ms)"
        );
    }
    assert_eq!(web.hits(), 0);
    before.settles("slowloris", FD_SLACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_are_cut_off() {
    let _serial = serial().await;
    let web = RecordingBackend::start("web").await;
    let stage = Stage::start(&[web.addr], "", &short_timeouts()).await;
    let before = stage.baseline(GoodMode::Mixed).await;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {WEB_HOST}\r\nContent-Length: 1000\r\n\r\n0123456789"
    );
    let (stalled, trickled) = during_attack(stage.addr(), "slow body", GoodMode::Mixed, async {
        // Stalled: 10 of 1000 bytes, then nothing.
        let stalled = {
            let start = Instant::now();
            let mut stream = TcpStream::connect(stage.addr()).await.expect("connect");
            stream.write_all(head.as_bytes()).await.expect("write head");
            let limit = Duration::from_secs(5);
            let outcome = tokio::time::timeout(limit, read_until_quiet(&mut stream, limit))
                .await
                .unwrap_or(RawOutcome {
                    bytes: Vec::new(),
                    closed: false,
                    elapsed: limit,
                });
            (outcome, start.elapsed())
        };
        // Trickled: one byte every 100 ms.
        let mut body = head.clone().into_bytes();
        body.extend(std::iter::repeat_n(b'x', 990));
        let trickled = trickle_body(stage.addr(), &body, Duration::from_secs(5)).await;
        (stalled, trickled)
    })
    .await;
    println!(
        "CASE slow body/stalled: {} after {:?}",
        stalled.0.describe(),
        stalled.1
    );
    println!("CASE slow body/trickled: {trickled:?}");
    println!(
        "CASE slow body: backend saw {:?}",
        web.requests()
            .iter()
            .map(|r| (r.target.clone(), r.body.len(), r.body_error))
            .collect::<Vec<_>>()
    );
    assert!(
        web.requests()
            .iter()
            .all(|r| r.body_error || r.body.len() < 1000),
        "a slow body completed at the backend"
    );
    let code = stalled.0.status();
    assert!(
        stalled.0.closed || code.is_some_and(|c| c >= 400),
        "stalled body: {}",
        stalled.0.describe()
    );
    assert!(
        stalled.1 < Duration::from_secs(3),
        "stalled body held {:?}",
        stalled.1
    );
    let (status, held) = trickled;
    assert!(
        held < Duration::from_secs(3),
        "a body trickled one byte per 100 ms held the connection {held:?} (status {status:?})"
    );
    before.settles("slow body", FD_SLACK).await;
}

/// A backend may answer before it has read the body; the proxy must not let
/// the client then hold both connections by trickling the rest forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_after_an_early_answer_is_cut_off() {
    let _serial = serial().await;
    // The fake backend answers `/` without reading the body.
    let web = Origin::new("web").start().await;
    let stage = Stage::start(&[web.addr], "", &short_timeouts()).await;
    let before = stage.baseline(GoodMode::Mixed).await;
    let mut bytes =
        format!("POST / HTTP/1.1\r\nHost: {WEB_HOST}\r\nContent-Length: 1000\r\n\r\n").into_bytes();
    bytes.extend(std::iter::repeat_n(b'x', 1000));
    let (status, held) = during_attack(
        stage.addr(),
        "slow body, early answer",
        GoodMode::Mixed,
        async { trickle_body(stage.addr(), &bytes, Duration::from_secs(5)).await },
    )
    .await;
    println!("CASE slow body/early answer: status {status:?}, connection held {held:?}");
    assert!(
        held < Duration::from_secs(3),
        "a body trickled one byte per 100 ms after a {status:?} held the connection {held:?}"
    );
    before
        .settles("slow body, early answer", FD_SLACK + 2)
        .await;
}

/// Sends `bytes` one every 100 ms; returns the first status seen and how
/// long the connection stayed open (up to `limit`).
async fn trickle_body(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (Option<u16>, Duration) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    // The head at once, then the body byte by byte.
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| p + 4);
    let _ = stream.write_all(&bytes[..head_end]).await;
    let mut response = Vec::new();
    for byte in &bytes[head_end..] {
        if start.elapsed() >= limit || stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        let outcome = read_until_quiet(&mut stream, Duration::from_millis(100)).await;
        response.extend(outcome.bytes);
        if outcome.closed {
            break;
        }
    }
    let status = RawOutcome {
        bytes: response,
        closed: true,
        elapsed: Duration::ZERO,
    }
    .status();
    (status, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_are_closed_while_existing_ones_work() {
    let _serial = serial().await;
    let good = Origin::new("good").start().await;
    let web = Origin::new("web").start().await;
    let tables = format!("{}\n[limits]\nmax_connections = 8\n", short_timeouts());
    let text = stage_config(&[web.addr], "", &tables, good.addr);
    let config =
        sluicegate::config::Config::parse(&text, "test.toml", sluicegate::config::Format::Toml)
            .expect("valid config");
    let proxy = TestProxy::start_config(config, true).await;
    let admin = proxy.admin_addr.expect("admin listener");
    // Warm the good route's pool as the clients below will use it.
    GoodClients::start(proxy.addr, GOOD_HOST, "/", 6, GoodMode::KeepAlive)
        .await
        .finish()
        .await
        .assert_all_ok("warm-up");
    let before = Reading::now();
    // Six keep-alive good clients hold six of the eight slots.
    let clients = GoodClients::start(proxy.addr, GOOD_HOST, "/", 6, GoodMode::KeepAlive).await;
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let _ = stream
                .write_all(format!("GET / HTTP/1.1\r\nHost: {WEB_HOST}\r\n\r\n").as_bytes())
                .await;
            let status = read_status(&mut stream, Duration::from_secs(2)).await;
            let closed = status.is_none()
                && wait_closed(&mut stream, Duration::from_millis(100))
                    .await
                    .is_some();
            (status, closed, start.elapsed(), stream)
        }));
    }
    let mut extras = Vec::new();
    let (mut served, mut refused, mut slowest) = (0, 0, Duration::ZERO);
    for task in tasks {
        let (status, closed, took, stream) = task.await.expect("extra connection");
        if status == Some(200) {
            served += 1;
        } else if closed {
            refused += 1;
            slowest = slowest.max(took);
        }
        extras.push(stream);
    }
    let report = clients.finish().await;
    println!(
        "FIGURE max_connections=8: 6 held, 30 more: {served} served, {refused} closed (slowest {slowest:?})"
    );
    report.assert_all_ok("max_connections");
    assert!(
        served <= 2,
        "{served} extra connections served beyond the limit"
    );
    assert_eq!(served + refused, 30, "some extra connections hung");
    drop(extras);
    // Slots free again: a new client gets in.
    eventually_async("a new connection to be served again", || async {
        let outcome = raw_exchange(
            proxy.addr,
            format!("GET / HTTP/1.1\r\nHost: {GOOD_HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
            QUIET,
        )
        .await;
        outcome.status() == Some(200)
    })
    .await;
    let metrics = get(admin, "admin", "/metrics").await.text();
    let refused_metric = metrics
        .lines()
        .find(|l| l.starts_with("sluicegate_connections_refused_total"))
        .unwrap_or("sluicegate_connections_refused_total missing")
        .to_string();
    println!("FIGURE max_connections: {refused_metric}");
    assert!(
        refused_metric.ends_with(&format!(" {refused}"))
            || refused_metric
                .split_whitespace()
                .last()
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= refused),
        "refusals not counted: {refused_metric}"
    );
    // The upstream connections the served extras opened stay pooled.
    before
        .settles("max_connections", FD_SLACK + 2 * web.connections())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_connections_cost_little_and_are_released() {
    let _serial = serial().await;
    // Over the 1,024 open connections past which the fast path lets an idle
    // connection's buffers go at once.
    const IDLE: usize = 1100;
    let web = Origin::new("web").start().await;
    let stage = Stage::start(&[web.addr], "", &short_timeouts()).await;
    let before = stage.baseline(GoodMode::Mixed).await;
    let mut idle = Vec::with_capacity(IDLE);
    let opened = during_attack(stage.addr(), "idle connections", GoodMode::Mixed, async {
        for _ in 0..IDLE {
            let mut stream = TcpStream::connect(stage.addr()).await.expect("connect");
            stream
                .write_all(format!("GET / HTTP/1.1\r\nHost: {WEB_HOST}\r\n\r\n").as_bytes())
                .await
                .expect("write");
            idle.push(stream);
        }
        // Every one answered, then idle on keep-alive.
        let mut answered = 0;
        for stream in &mut idle {
            if read_status(stream, Duration::from_secs(5)).await == Some(200) {
                answered += 1;
            }
        }
        (answered, Reading::now())
    })
    .await;
    let (answered, during) = opened;
    let per_conn = during.rss_kib.saturating_sub(before.rss_kib) as f64 / IDLE as f64;
    println!(
        "FIGURE {IDLE} idle keep-alive connections: {answered} answered, rss {} -> {} KiB ({per_conn:.1} KiB each, both ends in this process)",
        before.rss_kib, during.rss_kib
    );
    assert_eq!(answered, IDLE);
    // Idle without buffers, each still serves its next request.
    for stream in idle.iter_mut().step_by(50) {
        stream
            .write_all(format!("GET / HTTP/1.1\r\nHost: {WEB_HOST}\r\n\r\n").as_bytes())
            .await
            .expect("write");
        assert_eq!(read_status(stream, Duration::from_secs(5)).await, Some(200));
    }
    drop(idle);
    // What stays: the upstream connections the burst opened, pooled (both
    // ends are in this process).
    let pooled = web.connections();
    println!("FIGURE idle connections: {pooled} upstream connections pooled after the burst");
    before
        .settles("idle connections", FD_SLACK + 2 * pooled)
        .await;
}

// ---------------------------------------------------------------------------
// HTTP/2 abuse (hand-written frames)
// ---------------------------------------------------------------------------

/// A proxy in front of a recording backend, for the h2 cases.
async fn h2_stage() -> (Stage, RecordingBackend) {
    let web = RecordingBackend::start("web").await;
    let stage = Stage::start(&[web.addr], "", &short_timeouts()).await;
    (stage, web)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_cut_off() {
    let _serial = serial().await;
    let (stage, web) = h2_stage().await;
    let before = stage.baseline(GoodMode::H2).await;
    const PAIRS: u32 = 20_000;
    let (sent, closed, seen) = during_attack(stage.addr(), "h2 rapid reset", GoodMode::H2, async {
        let mut h2 = H2Raw::connect(stage.addr()).await;
        let block = hpack_request("GET", WEB_HOST, "/first");
        let mut sent = 0;
        'attack: for batch in 0..PAIRS / 100 {
            let mut bytes = Vec::new();
            for i in 0..100 {
                let stream = (batch * 100 + i) * 2 + 1;
                bytes.extend(h2_frame(
                    frames::HEADERS,
                    frames::END_HEADERS | frames::END_STREAM,
                    stream,
                    &block,
                ));
                bytes.extend(h2_frame(
                    frames::RST_STREAM,
                    0,
                    stream,
                    &frames::CANCEL.to_be_bytes(),
                ));
            }
            if !h2.send(&bytes).await {
                break 'attack;
            }
            sent += 100;
        }
        let closed = h2.closed_within(Duration::from_secs(2)).await;
        (sent, closed, h2.seen())
    })
    .await;
    let hits = web.hits();
    println!(
        "FIGURE h2 rapid reset: {sent} HEADERS+RST pairs written, closed {closed} (GOAWAY {:?}), backend hits {hits}",
        seen.goaway
    );
    assert!(
        closed || hits < 1000,
        "{sent} rapid resets: connection still open and {hits} requests reached the backend"
    );
    before.settles("h2 rapid reset", FD_SLACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_is_cut_off() {
    let _serial = serial().await;
    let (stage, web) = h2_stage().await;
    let before = stage.baseline(GoodMode::H2).await;
    let (written, closed, seen) =
        during_attack(stage.addr(), "h2 CONTINUATION flood", GoodMode::H2, async {
            let mut h2 = H2Raw::connect(stage.addr()).await;
            let block = hpack_request("GET", WEB_HOST, "/first");
            h2.send(&h2_frame(frames::HEADERS, 0, 1, &block)).await;
            let mut i = 0;
            // Up to 32 MiB of CONTINUATION frames that never end the block.
            while h2.written < 32 << 20 {
                let field = hpack_literal(&format!("x-flood-{i}"), &[b'c'; 16_000]);
                if !h2.send(&h2_frame(frames::CONTINUATION, 0, 1, &field)).await {
                    break;
                }
                i += 1;
            }
            let closed = h2.closed_within(Duration::from_secs(2)).await;
            (h2.written, closed, h2.seen())
        })
        .await;
    let after = Reading::now();
    println!(
        "FIGURE h2 CONTINUATION flood: {} KiB written before the close, closed {closed} (GOAWAY {:?}), rss {} -> {} KiB",
        written / 1024,
        seen.goaway,
        before.rss_kib,
        after.rss_kib
    );
    assert!(
        closed,
        "the connection stayed open after 32 MiB of CONTINUATION"
    );
    assert!(
        written < 32 << 20,
        "the proxy read all 32 MiB of CONTINUATION frames"
    );
    assert_eq!(web.hits(), 0);
    before.settles("h2 CONTINUATION flood", FD_SLACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_settings_flood_is_bounded() {
    let _serial = serial().await;
    let (stage, _web) = h2_stage().await;
    let before = stage.baseline(GoodMode::H2).await;
    const FLOOD: usize = 100_000;
    let (written, closed) = during_attack(stage.addr(), "h2 SETTINGS flood", GoodMode::H2, async {
        // Written without ever reading the ACKs.
        let mut stream = TcpStream::connect(stage.addr()).await.expect("connect");
        let mut bytes = H2_PREFACE.to_vec();
        // SETTINGS_INITIAL_WINDOW_SIZE = 65535, over and over.
        let one = h2_frame(frames::SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]);
        let mut written = 0;
        for _ in 0..FLOOD / 1000 {
            bytes.extend(one.repeat(1000));
            let sent = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&bytes)).await;
            if !matches!(sent, Ok(Ok(()))) {
                break;
            }
            written += 1000;
            bytes.clear();
        }
        let closed = wait_closed(&mut stream, Duration::from_secs(2))
            .await
            .is_some();
        (written, closed)
    })
    .await;
    let after = Reading::now();
    println!(
        "FIGURE h2 SETTINGS flood: {written} of {FLOOD} frames written, closed {closed}, rss {} -> {} KiB",
        before.rss_kib, after.rss_kib
    );
    // h2 keeps at most one unacknowledged SETTINGS and stops reading until
    // its ACK is written: the flood is held back by TCP, not by a close.
    assert!(
        after.rss_kib < before.rss_kib + 64 * 1024,
        "RSS grew by {} KiB",
        after.rss_kib - before.rss_kib
    );
    before.settles("h2 SETTINGS flood", FD_SLACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_empty_data_frame_flood_is_bounded() {
    let _serial = serial().await;
    let (stage, web) = h2_stage().await;
    let before = stage.baseline(GoodMode::H2).await;
    const FLOOD: usize = 200_000;
    let (sent, took, seen) =
        during_attack(stage.addr(), "h2 empty DATA flood", GoodMode::H2, async {
            let mut h2 = H2Raw::connect(stage.addr()).await;
            let block = hpack_request("POST", WEB_HOST, "/upload");
            h2.send(&h2_frame(frames::HEADERS, frames::END_HEADERS, 1, &block))
                .await;
            let start = Instant::now();
            let empty = h2_frame(frames::DATA, 0, 1, &[]);
            let mut sent = 0;
            for _ in 0..FLOOD / 1000 {
                if !h2.send(&empty.repeat(1000)).await {
                    break;
                }
                sent += 1000;
            }
            h2.send(&h2_frame(frames::DATA, frames::END_STREAM, 1, b"end"))
                .await;
            // Either the request completes (one response) or the proxy closed.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                let seen = h2.seen();
                if !seen.responses.is_empty() || seen.closed || seen.goaway.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (sent, start.elapsed(), h2.seen())
        })
        .await;
    let after = Reading::now();
    println!(
        "FIGURE h2 empty DATA flood: {sent} empty frames in {took:?}, responses {:?}, GOAWAY {:?}, closed {}, backend bodies {:?}, rss {} -> {} KiB",
        seen.responses,
        seen.goaway,
        seen.closed,
        web.requests()
            .iter()
            .map(|r| r.body.len())
            .collect::<Vec<_>>(),
        before.rss_kib,
        after.rss_kib
    );
    assert!(
        !seen.responses.is_empty() || seen.closed || seen.goaway.is_some(),
        "no response and no close after the flood"
    );
    assert!(
        after.rss_kib < before.rss_kib + 64 * 1024,
        "RSS grew by {} KiB",
        after.rss_kib - before.rss_kib
    );
    before.settles("h2 empty DATA flood", FD_SLACK).await;
}

/// A header block that is refused, whatever form the refusal takes.
fn refused_h2(seen: &H2Seen) -> bool {
    seen.closed
        || seen.goaway.is_some()
        || seen.resets.iter().any(|(s, _)| *s == 1)
        || seen
            .responses
            .iter()
            .any(|(s, code)| *s == 1 && *code != 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_huge_and_bomb_header_blocks_are_refused() {
    let _serial = serial().await;
    let (stage, web) = h2_stage().await;
    let before = stage.baseline(GoodMode::H2).await;
    let results = during_attack(stage.addr(), "h2 huge headers", GoodMode::H2, async {
        let mut results = Vec::new();
        // One 1 MiB header value over HEADERS + CONTINUATION frames.
        {
            let mut h2 = H2Raw::connect(stage.addr()).await;
            let mut block = hpack_request("GET", WEB_HOST, "/first");
            block.extend(hpack_literal("x-huge", &vec![b'h'; 1 << 20]));
            h2.send(&h2_header_frames(1, &block)).await;
            h2.closed_within(Duration::from_millis(500)).await;
            results.push(("one 1 MiB header", h2.seen()));
        }
        // HPACK bomb: one 4 KiB entry in the dynamic table, referenced 4000
        // times (16 MiB decoded from 8 KiB on the wire).
        {
            let mut h2 = H2Raw::connect(stage.addr()).await;
            let mut block = hpack_request("GET", WEB_HOST, "/first");
            block.extend(hpack_literal_indexed("x-bomb", &[b'b'; 4000]));
            block.extend(std::iter::repeat_n(0x80 | 62, 4000));
            h2.send(&h2_header_frames(1, &block)).await;
            h2.closed_within(Duration::from_millis(500)).await;
            results.push(("HPACK bomb", h2.seen()));
        }
        results
    })
    .await;
    let after = Reading::now();
    for (name, seen) in &results {
        println!(
            "CASE h2/{name}: responses {:?}, resets {:?}, GOAWAY {:?}, closed {}",
            seen.responses, seen.resets, seen.goaway, seen.closed
        );
    }
    println!(
        "FIGURE h2 huge headers: rss {} -> {} KiB",
        before.rss_kib, after.rss_kib
    );
    for (name, seen) in &results {
        assert!(refused_h2(seen), "{name}: not refused: {seen:?}");
    }
    assert_eq!(web.hits(), 0, "a huge header block reached the backend");
    before.settles("h2 huge headers", FD_SLACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_header_list_up_to_64_kib_is_forwarded() {
    let _serial = serial().await;
    let (stage, web) = h2_stage().await;
    let mut h2 = H2Raw::connect(stage.addr()).await;
    let mut block = hpack_request("GET", WEB_HOST, "/first");
    // 48 KiB of headers: over the HTTP/2 default (16 KiB), under 64 KiB.
    for i in 0..6 {
        block.extend(hpack_literal(&format!("x-big-{i}"), &[b'g'; 8 * 1024]));
    }
    h2.send(&h2_header_frames(1, &block)).await;
    eventually("a response on stream 1", || {
        let seen = h2.seen();
        !seen.responses.is_empty() || refused_h2(&seen)
    })
    .await;
    let seen = h2.seen();
    println!("CASE h2/48 KiB header list: {seen:?}");
    assert_eq!(seen.responses, vec![(1, 200)], "{seen:?}");
    assert_eq!(web.hits(), 1);
}

// ---------------------------------------------------------------------------
// Upstream faults
// ---------------------------------------------------------------------------

/// A proxy whose route `web` goes to one scripted backend.
async fn fault_stage(script: Script, route_extra: &str) -> (Stage, ScriptedBackend) {
    let web = ScriptedBackend::start(script).await;
    let stage = Stage::start(&[web.addr], route_extra, &short_timeouts()).await;
    (stage, web)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_that_never_answers_gives_504_after_response_headers() {
    let _serial = serial().await;
    let (stage, web) = fault_stage(Script::Silent, "").await;
    let before = stage.baseline(GoodMode::Mixed).await;
    let outcomes = during_attack(stage.addr(), "silent backend", GoodMode::Mixed, async {
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let addr = stage.addr();
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                let reply = get(addr, WEB_HOST, "/first").await;
                (reply.status, start.elapsed())
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.expect("client task"));
        }
        outcomes
    })
    .await;
    let slowest = outcomes.iter().map(|(_, t)| *t).max().unwrap_or_default();
    println!(
        "FIGURE silent backend: 10 requests, statuses {:?}, slowest {slowest:?}",
        outcomes.iter().map(|(s, _)| s.as_u16()).collect::<Vec<_>>()
    );
    for (status, took) in &outcomes {
        assert_eq!(*status, StatusCode::GATEWAY_TIMEOUT);
        assert!(
            *took >= Duration::from_millis(900) && *took < Duration::from_secs(3),
            "{took:?}"
        );
    }
    web.all_closed("the proxy to close its connections to the silent backend")
        .await;
    before.settles("silent backend", FD_SLACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_response_then_reset_is_never_passed_off_as_complete() {
    let _serial = serial().await;
    for chunked in [false, true] {
        let script = Script::HalfThenReset {
            declared: 100_000,
            sent: 1000,
            chunked,
        };
        let (stage, web) = fault_stage(script, "").await;
        let before = stage.baseline(GoodMode::Mixed).await;
        let case = if chunked {
            "half response (chunked)"
        } else {
            "half response (sized)"
        };
        let outcome = during_attack(stage.addr(), case, GoodMode::Mixed, async {
            raw_exchange(
                stage.addr(),
                format!("GET /first HTTP/1.1\r\nHost: {WEB_HOST}\r\n\r\n").as_bytes(),
                Duration::from_secs(2),
            )
            .await
        })
        .await;
        let text = outcome.text();
        println!(
            "CASE upstream/{case}: {} bytes, {}",
            outcome.bytes.len(),
            outcome.describe()
        );
        assert!(outcome.closed, "{case}: the client connection stayed open");
        match outcome.status() {
            // The head went out: the body must end in an error, not cleanly.
            Some(200) => {
                if chunked {
                    assert!(
                        !text.ends_with("0\r\n\r\n"),
                        "{case}: truncated body ended with the last chunk"
                    );
                } else {
                    let body = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
                    assert!(body < 100_000, "{case}: {body} bytes");
                }
            }
            Some(502) | None => {}
            other => panic!("{case}: unexpected {other:?}"),
        }
        drop(stage);
        drop(web);
        before.settles(case, FD_SLACK).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_upstream_responses_give_502() {
    let _serial = serial().await;
    let bad: [(&str, &[u8]); 5] = [
        (
            "status 2OO",
            b"HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n",
        ),
        ("not HTTP", b"garbage garbage\r\n\r\n"),
        (
            "status 1000",
            b"HTTP/1.1 1000 Big\r\ncontent-length: 0\r\n\r\n",
        ),
        (
            "header without a colon",
            b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n",
        ),
        (
            "two differing Content-Length",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        ),
    ];
    for (name, bytes) in bad {
        let (stage, web) = fault_stage(Script::Raw(bytes.to_vec()), "").await;
        let before = stage.baseline(GoodMode::Mixed).await;
        let case = format!("invalid response: {name}");
        let (get_status, post_status) =
            during_attack(stage.addr(), &case, GoodMode::Mixed, async {
                let get_reply = get(stage.addr(), WEB_HOST, "/first").await;
                let post = http::Request::post("/post")
                    .header(http::header::HOST, WEB_HOST)
                    .body(full("x"))
                    .expect("valid request");
                let post_reply = send(stage.addr(), post).await;
                (get_reply.status, post_reply.status)
            })
            .await;
        let posts = web.heads().iter().filter(|h| h.starts_with("POST")).count();
        println!(
            "CASE upstream/{case}: GET {get_status}, POST {post_status}, POST reached the backend {posts} time(s)"
        );
        assert_eq!(get_status, StatusCode::BAD_GATEWAY, "{case}");
        assert_eq!(post_status, StatusCode::BAD_GATEWAY, "{case}");
        assert_eq!(posts, 1, "{case}: a POST was sent twice");
        web.all_closed("the proxy to close the bad connections")
            .await;
        drop(stage);
        before.settles(&case, FD_SLACK).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_of_response_headers_give_502() {
    let _serial = serial().await;
    let (stage, web) = fault_stage(Script::HugeHeaders(10 << 20), "").await;
    let before = stage.baseline(GoodMode::Mixed).await;
    let (status, took) = during_attack(
        stage.addr(),
        "10 MiB response headers",
        GoodMode::Mixed,
        async {
            let start = Instant::now();
            let reply = get(stage.addr(), WEB_HOST, "/first").await;
            (reply.status, start.elapsed())
        },
    )
    .await;
    web.all_closed("the proxy to drop the connection").await;
    let after = before.settles("10 MiB response headers", FD_SLACK).await;
    println!(
        "FIGURE 10 MiB response headers: {status} after {took:?}, rss {} -> {} KiB",
        before.rss_kib, after.rss_kib
    );
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        after.rss_kib < before.rss_kib + 32 * 1024,
        "RSS grew by {} KiB",
        after.rss_kib - before.rss_kib
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_stream_ends_the_client_body_in_an_error() {
    let _serial = serial().await;
    let (stage, web) = fault_stage(Script::StreamUntilKilled, "").await;
    let before = stage.baseline(GoodMode::Mixed).await;
    let (status, received, outcome) =
        during_attack(stage.addr(), "killed mid-stream", GoodMode::Mixed, async {
            let mut client = Http1Client::connect(stage.addr()).await;
            let resp = client
                .send_streaming(get_request(WEB_HOST, "/download"))
                .await
                .expect("response head");
            let status = resp.status();
            let mut body = resp.into_body();
            let mut received = 0usize;
            // Read what came, then kill the backend and read on.
            while received < 64 * 1024 {
                match body.frame().await {
                    Some(Ok(frame)) => received += frame.data_ref().map_or(0, |d| d.len()),
                    other => return (status, received, format!("ended early: {other:?}")),
                }
            }
            web.kill();
            let end = loop {
                match tokio::time::timeout(Duration::from_secs(3), body.frame()).await {
                    Ok(Some(Ok(frame))) => received += frame.data_ref().map_or(0, |d| d.len()),
                    Ok(Some(Err(e))) => break format!("error: {e}"),
                    Ok(None) => break "clean end".to_string(),
                    Err(_) => break "hung".to_string(),
                }
            };
            (status, received, end)
        })
        .await;
    println!(
        "CASE upstream/killed mid-stream: {status}, {received} of {} bytes, then {outcome}",
        10 << 20
    );
    assert_eq!(status, StatusCode::OK);
    assert!(
        outcome.starts_with("error"),
        "the client body ended with {outcome}"
    );
    assert!(received < 10 << 20);
    before.settles("killed mid-stream", FD_SLACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_race_is_retried_for_get_and_never_for_post() {
    let _serial = serial().await;
    let (stage, web) = fault_stage(Script::KeepAliveThenClose, "").await;
    let before = stage.baseline(GoodMode::Mixed).await;
    let (gets, post) = during_attack(stage.addr(), "keep-alive race", GoodMode::Mixed, async {
        let mut gets = Vec::new();
        // Sequential GETs: each reuses the pooled connection the backend then
        // closes without answering.
        for _ in 0..5 {
            gets.push(get(stage.addr(), WEB_HOST, "/first").await.status);
        }
        let post = http::Request::post("/post")
            .header(http::header::HOST, WEB_HOST)
            .body(full("x"))
            .expect("valid request");
        let post = send(stage.addr(), post).await.status;
        (gets, post)
    })
    .await;
    let posts = web.heads().iter().filter(|h| h.starts_with("POST")).count();
    println!(
        "CASE upstream/keep-alive race: GETs {:?}, POST {post} (reached the backend {posts} time(s)), backend heads {:?}",
        gets.iter().map(StatusCode::as_u16).collect::<Vec<_>>(),
        web.heads()
    );
    assert!(posts <= 1, "POST sent {posts} times");
    assert!(
        gets.iter().all(|s| *s == StatusCode::OK),
        "a GET failed in the keep-alive race: {gets:?}"
    );
    before.settles("keep-alive race", FD_SLACK).await;
}

// ---------------------------------------------------------------------------
// Admin API and config reloads
// ---------------------------------------------------------------------------

/// A file-started proxy with admin, route `good` and route `web` split 50/50
/// between two fake backends.
async fn admin_stage() -> (FileProxy, RunningOrigin, RunningOrigin, RunningOrigin) {
    let good = Origin::new("good").start().await;
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = FileProxy::start(&admin_body(&good, &blue, &green)).await;
    (proxy, good, blue, green)
}

fn admin_body(good: &RunningOrigin, blue: &RunningOrigin, green: &RunningOrigin) -> String {
    format!(
        "{LISTENER}{}{}",
        route(
            "good",
            &format!("host = \"{GOOD_HOST}\""),
            "",
            &[backend("good", None, &[good.addr])]
        ),
        route(
            "web",
            "",
            "",
            &[
                backend("blue", Some("50"), &[blue.addr]),
                backend("green", Some("50"), &[green.addr])
            ]
        ),
    )
}

/// Sends `body` raw with these headers; the status, or `None` when the
/// connection closed without one.
async fn admin_raw_request(admin: SocketAddr, head: &str, body: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(admin).await.expect("connect admin");
    let (mut reader, mut writer) = stream.split();
    let write = async {
        let _ = writer.write_all(head.as_bytes()).await;
        for piece in body.chunks(64 * 1024) {
            if writer.write_all(piece).await.is_err() {
                break;
            }
        }
    };
    let read = async {
        let mut bytes = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut bytes),
        )
        .await;
        bytes
    };
    let ((), bytes) = tokio::join!(write, read);
    RawOutcome {
        bytes,
        closed: true,
        elapsed: Duration::ZERO,
    }
    .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_slowloris_is_cut_off_after_client_headers() {
    let _serial = serial().await;
    let good = Origin::new("good").start().await;
    let text = format!(
        "{LISTENER}{}{}",
        short_timeouts(),
        route("good", "", "", &[backend("good", None, &[good.addr])])
    );
    let proxy = FileProxy::start(&text).await;
    let admin = proxy.admin_addr;
    let head = b"GET /api/v1/routes HTTP/1.1\r\nHost: admin\r\nX-Slow: ";
    let slow: Vec<_> = (0..10)
        .map(|_| tokio::spawn(async move { trickle(admin, head, Duration::from_secs(3)).await }))
        .collect();
    // The admin API answers others while the slow clients hang on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let healthz = admin_raw_request(
        admin,
        "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"",
    )
    .await;
    assert_eq!(healthz, Some(200), "admin serves during the attack");
    for task in slow {
        let (closed, _) = task.await.expect("slowloris task");
        let after = closed.expect("an admin slowloris connection was still open after 3 s");
        assert!(
            after < Duration::from_millis(1500),
            "closed only after {after:?} (client_headers is 500ms)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_requests_are_4xx_and_change_nothing() {
    let _serial = serial().await;
    let (proxy, _good, _blue, _green) = admin_stage().await;
    let weights_before = proxy.weights("web").await;
    let revision_before = proxy.revision().await;
    let history_before = proxy.admin_get("/api/v1/history?limit=1000").await.1;
    let token = proxy.token.clone();
    let path = "/api/v1/routes/web/weights";
    let valid = json!({"weights": {"blue": 10, "green": 90}});
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let deep_object = format!(
        "{{\"weights\":{}1{}}}",
        "{\"a\":".repeat(5000),
        "}".repeat(5000)
    );
    let many_keys: serde_json::Map<String, Value> = (0..3000)
        .map(|i| (format!("b{i}"), Value::from(0)))
        .collect();
    let results = during_attack(proxy.addr, "hostile admin", GoodMode::Mixed, async {
        let mut results: Vec<(String, u16)> = Vec::new();
        let mut note = |name: &str, status: StatusCode| results.push((name.to_string(), status.as_u16()));
        let put = |body: Bytes, token: Option<String>| {
            let proxy = &proxy;
            async move { proxy.admin_raw(Method::PUT, path, body, token.as_deref()).await.status }
        };
        let json_bytes = |v: &Value| Bytes::from(v.to_string());
        note("no token", put(json_bytes(&valid), None).await);
        note("wrong token", put(json_bytes(&valid), Some(format!("{token}x"))).await);
        note("token prefix", put(json_bytes(&valid), Some(token[..token.len() - 1].to_string())).await);
        for query in ["token", "access_token", "bearer"] {
            let status = proxy
                .admin_raw(Method::PUT, &format!("{path}?{query}={token}"), json_bytes(&valid), None)
                .await
                .status;
            note(&format!("token in ?{query}="), status);
        }
        let status = proxy.admin_raw(Method::POST, &format!("/api/v1/reload?token={token}"), Bytes::new(), None).await.status;
        note("reload with the token in the query", status);
        let t = Some(token.clone());
        note("30,000-deep array", put(Bytes::from(deep.clone()), t.clone()).await);
        note("5,000-deep object", put(Bytes::from(deep_object.clone()), t.clone()).await);
        note("3,000 unknown backends", put(json_bytes(&json!({"weights": many_keys})), t.clone()).await);
        for (name, body) in [
            ("weights is a string", json!({"weights": "blue=100"})),
            ("weights is an array", json!({"weights": [["blue", 100]]})),
            ("weight is a string", json!({"weights": {"blue": "100", "green": 0}})),
            ("weight is null", json!({"weights": {"blue": null, "green": 100}})),
            ("weight is negative", json!({"weights": {"blue": -50, "green": 150}})),
            ("weight is huge", json!({"weights": {"blue": 1e300, "green": 0}})),
            ("if_revision is a string", json!({"weights": {"blue": 10, "green": 90}, "if_revision": "1"})),
            ("if_revision is negative", json!({"weights": {"blue": 10, "green": 90}, "if_revision": -1})),
            ("reason is an object", json!({"weights": {"blue": 10, "green": 90}, "reason": {"a": 1}})),
            ("unknown field", json!({"weights": {"blue": 10, "green": 90}, "sudo": true})),
            ("body is an array", json!([1, 2, 3])),
            ("body is a number", json!(42)),
        ] {
            note(name, put(json_bytes(&body), t.clone()).await);
        }
        note("number over f64", put(Bytes::from_static(b"{\"weights\":{\"blue\":1e400,\"green\":0}}"), t.clone()).await);
        note("invalid UTF-8", put(Bytes::from_static(b"{\"weights\":{\"\xff\xfe\":100}}"), t.clone()).await);
        note("truncated JSON", put(Bytes::from_static(b"{\"weights\":{\"blue\":"), t.clone()).await);
        note("NUL bytes", put(Bytes::from_static(b"\0\0\0\0"), t.clone()).await);
        // 10 MiB, sized and chunked, written while the admin API answers.
        let big = vec![b' '; 10 << 20];
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            big.len()
        );
        let status = admin_raw_request(proxy.admin_addr, &head, &big).await;
        results.push(("10 MiB body (Content-Length)".into(), status.unwrap_or(0)));
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let mut chunked = Vec::new();
        for piece in big.chunks(1 << 20) {
            chunked.extend(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend(piece);
            chunked.extend(b"\r\n");
        }
        chunked.extend(b"0\r\n\r\n");
        let status = admin_raw_request(proxy.admin_addr, &head, &chunked).await;
        results.push(("10 MiB body (chunked)".into(), status.unwrap_or(0)));
        results
    })
    .await;
    for (name, status) in &results {
        println!("CASE admin/{name}: {status}");
    }
    let bad: Vec<&(String, u16)> = results
        .iter()
        .filter(|(name, status)| {
            let auth_case = name.contains("token");
            if auth_case {
                *status != 401
            } else {
                !(400..500).contains(status)
            }
        })
        .collect();
    assert!(bad.is_empty(), "not refused as expected: {bad:?}");
    assert_eq!(
        proxy.weights("web").await,
        weights_before,
        "weights changed"
    );
    assert_eq!(proxy.revision().await, revision_before, "revision changed");
    assert_eq!(
        proxy.admin_get("/api/v1/history?limit=1000").await.1,
        history_before,
        "history changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_config_files_on_reload_keep_the_running_config() {
    let _serial = serial().await;
    let (proxy, good, blue, green) = admin_stage().await;
    let valid = proxy.config_text(&admin_body(&good, &blue, &green));
    let revision_before = proxy.revision().await;
    let weights_before = proxy.weights("web").await;
    let mut huge = valid.clone();
    huge.push_str(&format!("\n# {}\n", "x".repeat(10 << 20)));
    huge.push_str("[[routes]]\nname = \"web\"\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", valid.as_bytes()[..valid.len() / 2].to_vec()),
        ("garbage", b"\x00\x01\x02 not toml at all {{{{".to_vec()),
        (
            "invalid UTF-8",
            b"[[listeners]]\naddr = \"\xff\xfe\"\n".to_vec(),
        ),
        (
            "YAML in a .toml file",
            b"listeners:\n  - addr: 127.0.0.1:0\n".to_vec(),
        ),
        ("10 MiB with a duplicate route", huge.into_bytes()),
    ];
    let results = during_attack(proxy.addr, "broken config reload", GoodMode::Mixed, async {
        let mut results = Vec::new();
        for (name, bytes) in &cases {
            // Whole files: a watcher reading half of the 10 MiB one would
            // see the valid config plus part of a comment.
            proxy.replace_config_bytes(bytes);
            let (status, body) = proxy
                .admin_send(Method::POST, "/api/v1/reload", None, Some(&proxy.token))
                .await;
            let served = get(proxy.addr, WEB_HOST, "/").await.status;
            results.push((
                *name,
                status,
                served,
                body["errors"].as_array().map_or(0, Vec::len),
            ));
        }
        proxy.replace_config_bytes(valid.as_bytes());
        results
    })
    .await;
    for (name, status, served, errors) in &results {
        println!("CASE reload/{name}: reload {status} ({errors} errors), requests {served}");
    }
    for (name, status, served, _) in &results {
        assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{name}");
        assert_eq!(
            *served,
            StatusCode::OK,
            "{name}: requests failed after the bad reload"
        );
    }
    assert_eq!(proxy.revision().await, revision_before);
    assert_eq!(proxy.weights("web").await, weights_before);
}

/// The `pct` percentile of `samples` (sorted here).
fn percentile(samples: &mut [Duration], pct: f64) -> Duration {
    samples.sort();
    let at = ((samples.len() as f64 - 1.0) * pct / 100.0).round() as usize;
    samples.get(at).copied().unwrap_or_default()
}

/// Authorised GETs of the admin API one after another for `span`, at least
/// 100 of them: each one's time.
async fn authorised_calls(proxy: &FileProxy, span: Duration) -> Vec<Duration> {
    let mut client = Http1Client::connect(proxy.admin_addr).await;
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < 100 || started.elapsed() < span {
        let req = http::Request::get("/api/v1/routes/web")
            .header("host", "admin")
            .header("authorization", format!("Bearer {}", proxy.token))
            .body(support::body::empty())
            .expect("request");
        let began = Instant::now();
        let reply = client.send(req).await;
        times.push(began.elapsed());
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "an authorised call was refused"
        );
    }
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_brute_force_is_refused_and_does_not_slow_other_clients() {
    let _serial = serial().await;
    let (proxy, _good, _blue, _green) = admin_stage().await;
    let mut quiet = authorised_calls(&proxy, Duration::ZERO).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..6)
        .map(|n| {
            let (admin, stop) = (proxy.admin_addr, std::sync::Arc::clone(&stop));
            tokio::spawn(async move {
                let mut client = Http1Client::connect(admin).await;
                let mut refused = 0_usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let req = http::Request::put("/api/v1/routes/web/weights")
                        .header("host", "admin")
                        .header("authorization", format!("Bearer guess-{n}-{refused}"))
                        .body(full(Bytes::from_static(
                            br#"{"weights":{"blue":0,"green":100}}"#,
                        )))
                        .expect("request");
                    let reply = client.send(req).await;
                    assert_eq!(
                        reply.status,
                        StatusCode::UNAUTHORIZED,
                        "a guess was not refused"
                    );
                    refused += 1;
                }
                refused
            })
        })
        .collect();
    let mut attacked = during_attack(
        proxy.addr,
        "token brute force",
        GoodMode::KeepAlive,
        async {
            let times = authorised_calls(&proxy, Duration::from_secs(1)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            times
        },
    )
    .await;
    let mut guesses = 0;
    for attacker in attackers {
        guesses += attacker.await.expect("attacker");
    }
    let (quiet_p99, attacked_p99) = (
        percentile(&mut quiet, 99.0),
        percentile(&mut attacked, 99.0),
    );
    println!(
        "FIGURE token brute force: {guesses} wrong tokens refused; authorised admin p50 {:?} → {:?}, p99 {quiet_p99:?} → {attacked_p99:?}",
        percentile(&mut quiet, 50.0),
        percentile(&mut attacked, 50.0),
    );
    assert!(guesses > 500, "the attack made only {guesses} guesses");
    assert!(
        attacked_p99 < quiet_p99 * 20 + Duration::from_millis(50),
        "authorised calls slowed from p99 {quiet_p99:?} to {attacked_p99:?}"
    );
    assert_eq!(
        proxy.weights("web").await.get("green"),
        Some(&50.0),
        "nothing changed"
    );
}
