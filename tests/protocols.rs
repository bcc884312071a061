//! Protocols end to end over real sockets: h2c and TLS upstreams (http1, h2,
//! auto) with a private CA, the upstream TLS settings and their validation,
//! gRPC through the proxy with its trailers and gRPC-shaped errors, SNI
//! certificates, and the HTTP/1.x corner cases: `Expect: 100-continue`, HEAD,
//! 204/304, chunked trailers, HTTP/1.0 clients and `te: trailers`.

pub mod support;

use std::process::Command;

use http::header::{HOST, TE};
use http::{Method, Request, StatusCode};
use sluicegate::config::{Config, ConfigError, Format};
use support::admin::{FileProxy, TestDir};
use support::body::empty;
use support::client::{H2Client, Reply, get, get_request, send, tally};
use support::config_text::{
    LISTENER, backend, backend_with, dead_addr, route, single_backend_config, timeouts,
};
use support::eventually;
use support::grpc::{GrpcClient, GrpcReply};
use support::origin::{Answers, GRPC_COUNT, GRPC_SAY, GRPC_STALL, Origin, Seen};
use support::proxy::TestProxy;
use support::raw::{RawBody, RawConn, RawHead};
use support::tls::{Pki, tls_connect, tls_probe};
use tokio::task::JoinSet;

/// One plain listener and route `web` (any host) over `backends`.
fn config(backends: &[String]) -> String {
    format!("{LISTENER}{}", route("web", "", "", backends))
}

/// `protocol = "…"` as a backend line.
fn protocol(name: &str) -> String {
    format!("protocol = \"{name}\"")
}

/// `tls_ca = "…"` with the CA's absolute path.
fn tls_ca(pki: &Pki) -> String {
    format!("tls_ca = \"{}\"", pki.ca_path().display())
}

fn lines(extra: &[String]) -> Vec<&str> {
    extra.iter().map(String::as_str).collect()
}

/// A proxy with one backend `blue` on `endpoint`, configured by `extra`.
async fn proxy_to(endpoint: String, extra: &[String]) -> TestProxy {
    TestProxy::start(&config(&[backend_with(
        "blue",
        None,
        &[endpoint],
        &lines(extra),
    )]))
    .await
}

// ---------------------------------------------------------------------------
// h2c upstream
// ---------------------------------------------------------------------------

#[tokio::test]
async fn h2c_backend_is_reached_over_http2_from_an_http1_client() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = proxy_to(blue.endpoint(), &[protocol("h2c")]).await;

    let seen = Seen::of_reply(&get(proxy.addr, "shop.test", "/inspect?q=1").await);
    assert_eq!(seen.version, "HTTP/2.0", "h2c speaks HTTP/2 upstream");
    assert_eq!(seen.scheme.as_deref(), Some("http"));
    assert_eq!(
        seen.authority.as_deref(),
        Some("shop.test"),
        ":authority is the client's Host"
    );
    assert!(
        seen.host.is_empty(),
        "no Host header on h2: {:?}",
        seen.host
    );
    assert_eq!(seen.path, "/inspect");
    assert!(!seen.tls);
}

#[tokio::test]
async fn h2c_backend_is_reached_over_http2_from_an_h2c_client() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = proxy_to(blue.endpoint(), &[protocol("h2c")]).await;

    let mut client = H2Client::connect(proxy.addr).await;
    let seen = Seen::of_reply(&client.get("api.shop.test:8443", "/inspect").await);
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.authority.as_deref(), Some("api.shop.test:8443"));
    assert!(
        seen.host.is_empty(),
        "no Host header on h2: {:?}",
        seen.host
    );
}

#[tokio::test]
async fn http1_and_cleartext_auto_backends_are_spoken_to_in_http1() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    for extra in [vec![], vec![protocol("http1")], vec![protocol("auto")]] {
        let proxy = proxy_to(blue.endpoint(), &extra).await;
        let mut client = H2Client::connect(proxy.addr).await;
        let seen = Seen::of_reply(&client.get("shop.test", "/inspect").await);
        assert_eq!(
            seen.version, "HTTP/1.1",
            "{extra:?} is HTTP/1.1 in cleartext"
        );
        assert_eq!(seen.host, vec!["shop.test"], "{extra:?} keeps the Host");
    }
}

#[tokio::test]
async fn concurrent_requests_to_an_h2c_backend_share_one_connection() {
    const CONCURRENT: usize = 20;
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = proxy_to(blue.endpoint(), &[protocol("h2c")]).await;

    // Every request waits at the backend until all of them are there, so all
    // of them are in flight at once: an HTTP/1.1 upstream would need 20
    // connections, a multiplexed h2 one needs one.
    let mut calls = JoinSet::new();
    for _ in 0..CONCURRENT {
        let addr = proxy.addr;
        calls.spawn(async move { get(addr, "mux.test", &format!("/gate/{CONCURRENT}")).await });
    }
    let replies: Vec<Reply> = calls.join_all().await;
    assert_eq!(tally(&replies).get("blue"), Some(&CONCURRENT));
    assert_eq!(
        blue.connections(),
        1,
        "{CONCURRENT} concurrent requests must share one upstream h2 connection"
    );

    // Later requests ride the same connection.
    for _ in 0..3 {
        assert_eq!(
            get(proxy.addr, "mux.test", "/").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(blue.connections(), 1, "the h2 connection is reused");
}

// ---------------------------------------------------------------------------
// Upstream TLS
// ---------------------------------------------------------------------------

/// A TLS backend offering `alpn`, behind a proxy whose backend has
/// `tls_ca` and `extra`; what the backend saw of one GET.
async fn through_tls_backend(alpn: &[&[u8]], extra: &[String]) -> Seen {
    let pki = Pki::new("upstream");
    let blue = Origin::new("blue")
        .answer(Answers::Protocols)
        .tls_alpn(&pki.localhost(), alpn)
        .start()
        .await;
    let mut lines = vec![tls_ca(&pki)];
    lines.extend_from_slice(extra);
    let proxy = proxy_to(blue.https_endpoint(), &lines).await;
    Seen::of_reply(&get(proxy.addr, "tls.test", "/inspect").await)
}

#[tokio::test]
async fn https_upstream_with_private_ca_over_http1() {
    let seen = through_tls_backend(&[b"h2", b"http/1.1"], &[]).await;
    assert!(seen.tls);
    assert_eq!(
        seen.alpn.as_deref(),
        Some("http/1.1"),
        "http1 offers http/1.1 only"
    );
    assert_eq!(seen.version, "HTTP/1.1");
    assert_eq!(seen.host, vec!["tls.test"]);
}

#[tokio::test]
async fn https_upstream_with_private_ca_over_h2() {
    let seen = through_tls_backend(&[b"h2", b"http/1.1"], &[protocol("h2")]).await;
    assert!(seen.tls);
    assert_eq!(seen.alpn.as_deref(), Some("h2"));
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.scheme.as_deref(), Some("https"));
    assert_eq!(seen.authority.as_deref(), Some("tls.test"));
}

#[tokio::test]
async fn https_upstream_auto_follows_the_servers_alpn_choice() {
    let both = through_tls_backend(&[b"h2", b"http/1.1"], &[protocol("auto")]).await;
    assert_eq!(both.alpn.as_deref(), Some("h2"), "auto prefers h2");
    assert_eq!(both.version, "HTTP/2.0");

    let http1_only = through_tls_backend(&[b"http/1.1"], &[protocol("auto")]).await;
    assert_eq!(http1_only.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(
        http1_only.version, "HTTP/1.1",
        "auto falls back to HTTP/1.1"
    );
}

#[tokio::test]
async fn https_upstream_sends_the_endpoint_host_as_sni() {
    let seen = {
        let pki = Pki::new("sni-up");
        let blue = Origin::new("blue")
            .answer(Answers::Protocols)
            .tls(&pki.localhost())
            .start()
            .await;
        let proxy = proxy_to(blue.https_localhost(), &[tls_ca(&pki)]).await;
        Seen::of_reply(&get(proxy.addr, "tls.test", "/inspect").await)
    };
    assert_eq!(seen.sni.as_deref(), Some("localhost"));
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_a_502_until_verification_is_skipped() {
    let pki = Pki::new("untrusted");
    let blue = Origin::new("blue")
        .answer(Answers::Protocols)
        .tls(&pki.localhost())
        .start()
        .await;

    // No tls_ca: the system roots do not know this private CA.
    let proxy = proxy_to(blue.https_endpoint(), &[]).await;
    let reply = get(proxy.addr, "tls.test", "/inspect").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert!(blue.connections() >= 1, "a handshake was attempted");
    assert_eq!(
        blue.hits(),
        0,
        "no request crosses an unverified TLS connection"
    );
    drop(proxy);

    let proxy = proxy_to(
        blue.https_endpoint(),
        &["tls_insecure_skip_verify = true".to_string()],
    )
    .await;
    let seen = Seen::of_reply(&get(proxy.addr, "tls.test", "/inspect").await);
    assert!(seen.tls);
}

#[tokio::test]
async fn upstream_certificate_for_another_ca_is_a_502() {
    let trusted = Pki::new("trusted");
    let other = Pki::new("other");
    let blue = Origin::new("blue")
        .answer(Answers::Protocols)
        .tls(&other.localhost())
        .start()
        .await;
    let proxy = proxy_to(blue.https_endpoint(), &[tls_ca(&trusted)]).await;
    let reply = get(proxy.addr, "tls.test", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(blue.hits(), 0);
}

#[tokio::test]
async fn a_backend_presents_its_client_certificate_to_an_endpoint_that_requires_one() {
    let (pki, clients) = (Pki::new("upstream-mtls"), Pki::new("upstream-mtls-clients"));
    let blue = Origin::new("blue")
        .answer(Answers::Protocols)
        .tls(&pki.localhost())
        .require_client_cert(&clients)
        .start()
        .await;
    let identity = clients.leaf("sluicegate", &["sluicegate.test"]);
    for name in ["http1", "h2"] {
        let extra = [tls_ca(&pki), protocol(name), identity.backend_client_cert()];
        let proxy = proxy_to(blue.https_endpoint(), &extra).await;
        let reply = get(proxy.addr, "tls.test", "/inspect").await;
        assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.text());
        assert!(Seen::of_reply(&reply).tls);
    }
    let served = blue.hits();

    let without = proxy_to(blue.https_endpoint(), &[tls_ca(&pki)]).await;
    let reply = get(without.addr, "tls.test", "/inspect").await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_GATEWAY,
        "no client certificate"
    );
    let strangers = Pki::new("upstream-mtls-strangers");
    let stranger = strangers.leaf("other", &["other.test"]);
    let extra = [tls_ca(&pki), stranger.backend_client_cert()];
    let wrong = proxy_to(blue.https_endpoint(), &extra).await;
    let reply = get(wrong.addr, "tls.test", "/inspect").await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_GATEWAY,
        "another CA's certificate"
    );
    assert_eq!(
        blue.hits(),
        served,
        "no request crossed without the certificate"
    );
}

#[tokio::test]
async fn tls_server_name_overrides_the_verified_name() {
    let pki = Pki::new("server-name");
    let leaf = pki.leaf("internal", &["backend.internal"]);
    let blue = Origin::new("blue")
        .answer(Answers::Protocols)
        .tls(&leaf)
        .start()
        .await;

    // 127.0.0.1 is not in the certificate.
    let proxy = proxy_to(blue.https_endpoint(), &[tls_ca(&pki)]).await;
    let reply = get(proxy.addr, "tls.test", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    drop(proxy);

    let proxy = proxy_to(
        blue.https_endpoint(),
        &[
            tls_ca(&pki),
            "tls_server_name = \"backend.internal\"".to_string(),
        ],
    )
    .await;
    let seen = Seen::of_reply(&get(proxy.addr, "tls.test", "/inspect").await);
    assert_eq!(seen.sni.as_deref(), Some("backend.internal"));
    assert_eq!(
        seen.host,
        vec!["tls.test"],
        "the Host is still the client's"
    );
}

#[tokio::test]
async fn health_checks_speak_tls_and_h2_to_the_endpoint() {
    let pki = Pki::new("health");
    let blue = Origin::new("blue")
        .answer(Answers::Protocols)
        .tls(&pki.localhost())
        .start()
        .await;
    let text = format!(
        "{}\n    [routes.backends.health]\n    path = \"/healthz\"\n    interval = \"50ms\"\n    unhealthy_threshold = 1\n",
        config(&[backend_with(
            "blue",
            None,
            &[blue.https_endpoint()],
            &[&tls_ca(&pki), "protocol = \"h2\""],
        )])
    );
    let proxy = TestProxy::start(&text).await;
    // One failed probe would take the only endpoint out (503).
    eventually("three health probes to reach the backend", || {
        blue.hits() >= 3
    })
    .await;
    let seen = Seen::of_reply(&get(proxy.addr, "tls.test", "/inspect").await);
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(
        blue.connections(),
        1,
        "probes and requests share the h2 connection"
    );
}

#[tokio::test]
async fn tls_ca_path_is_relative_to_the_config_file() {
    let pki = Pki::new("relative-ca");
    let blue = Origin::new("blue")
        .answer(Answers::Protocols)
        .tls(&pki.localhost())
        .start()
        .await;
    let text = config(&[backend_with(
        "blue",
        None,
        &[blue.https_endpoint()],
        &["tls_ca = \"ca.pem\"", "protocol = \"h2\""],
    )]);
    pki.dir.write("sluicegate.toml", &text);
    let loaded = Config::load(&pki.dir.file("sluicegate.toml"))
        .unwrap_or_else(|e| panic!("ca.pem next to the config file must load:\n{e}"));
    let proxy = TestProxy::start_config(loaded, false).await;
    let seen = Seen::of_reply(&get(proxy.addr, "tls.test", "/inspect").await);
    assert_eq!(seen.version, "HTTP/2.0");
}

// ---------------------------------------------------------------------------
// Validation of the transport keys
// ---------------------------------------------------------------------------

/// Parses a config with one backend on `endpoint` and `extra` lines.
fn transport_errors(endpoint: &str, extra: &[&str]) -> (String, Vec<ConfigError>) {
    let text = config(&[backend_with("blue", None, &[endpoint.to_string()], extra)]);
    match Config::parse(&text, "test.toml", Format::Toml).and_then(sluicegate::control::prepare) {
        Ok(_) => panic!("config should be invalid:\n{text}"),
        Err(errors) => (text, errors.0),
    }
}

/// Exactly one error, on the line of `key`, naming `routes[0].backends[0].key`
/// and mentioning each of `mentions`.
fn assert_transport_error(endpoint: &str, extra: &[&str], key: &str, mentions: &[&str]) {
    let (text, errors) = transport_errors(endpoint, extra);
    assert_eq!(
        errors.len(),
        1,
        "expected one error, got {errors:#?}\n{text}"
    );
    let error = &errors[0];
    let field = format!("routes[0].backends[0].{key}");
    assert!(
        error.message.starts_with(&field),
        "error should name {field}: {error}"
    );
    let line = text
        .lines()
        .position(|l| l.trim_start().starts_with(&format!("{key} =")))
        .expect("key line")
        + 1;
    assert_eq!(
        error.line, line,
        "error should point at the {key} line: {error}"
    );
    for word in mentions {
        assert!(
            error.message.contains(word),
            "error should mention {word:?}: {error}"
        );
    }
}

#[test]
fn h2c_with_an_https_endpoint_is_an_error() {
    assert_transport_error(
        "https://127.0.0.1:8443",
        &["protocol = \"h2c\""],
        "protocol",
        &["h2c", "h2"],
    );
}

#[test]
fn unknown_protocol_is_an_error() {
    assert_transport_error(
        "127.0.0.1:8081",
        &["protocol = \"http3\""],
        "protocol",
        &["http3"],
    );
}

#[test]
fn tls_keys_without_an_https_endpoint_are_errors() {
    for (line, key) in [
        ("tls_ca = \"ca.pem\"", "tls_ca"),
        (
            "tls_insecure_skip_verify = true",
            "tls_insecure_skip_verify",
        ),
        ("tls_server_name = \"api.internal\"", "tls_server_name"),
        ("tls_client_cert = \"client.pem\"", "tls_client_cert"),
        ("tls_client_key = \"client.key\"", "tls_client_key"),
    ] {
        assert_transport_error("127.0.0.1:8081", &[line], key, &["https"]);
    }
}

#[test]
fn a_client_certificate_needs_its_key_and_the_key_its_certificate() {
    assert_transport_error(
        "https://127.0.0.1:8443",
        &["tls_client_cert = \"client.pem\""],
        "tls_client_cert",
        &["tls_client_key"],
    );
    assert_transport_error(
        "https://127.0.0.1:8443",
        &["tls_client_key = \"client.key\""],
        "tls_client_key",
        &["tls_client_cert"],
    );
}

#[test]
fn an_unreadable_client_certificate_is_an_error_at_its_key() {
    let pki = Pki::new("unreadable-client-cert");
    let ca = tls_ca(&pki);
    let missing = pki.dir.file("missing.pem");
    let cert = format!("tls_client_cert = \"{}\"", missing.display());
    let key = format!("tls_client_key = \"{}\"", missing.display());
    assert_transport_error(
        "https://127.0.0.1:8443",
        &[&ca, &cert, &key],
        "tls_client_cert",
        &["missing.pem"],
    );
}

#[test]
fn tls_ca_and_insecure_skip_verify_together_are_an_error() {
    let pki = Pki::new("ca-and-insecure");
    let ca = tls_ca(&pki);
    assert_transport_error(
        "https://127.0.0.1:8443",
        &[&ca, "tls_insecure_skip_verify = true"],
        "tls_insecure_skip_verify",
        &["tls_ca"],
    );
}

#[test]
fn unreadable_or_invalid_ca_file_is_an_error_naming_tls_ca() {
    let dir = TestDir::new("bad-ca");
    let missing = format!("tls_ca = \"{}\"", dir.file("missing.pem").display());
    assert_transport_error(
        "https://127.0.0.1:8443",
        &[&missing],
        "tls_ca",
        &["missing.pem"],
    );

    dir.write("garbage.pem", "this is not a certificate\n");
    let garbage = format!("tls_ca = \"{}\"", dir.file("garbage.pem").display());
    assert_transport_error(
        "https://127.0.0.1:8443",
        &[&garbage],
        "tls_ca",
        &["garbage.pem"],
    );
}

#[test]
fn check_command_resolves_tls_ca_next_to_the_config_file() {
    let pki = Pki::new("check-ca");
    let body = |ca: &str| {
        config(&[backend_with(
            "blue",
            None,
            &["https://127.0.0.1:8443".to_string()],
            &[&format!("tls_ca = \"{ca}\"")],
        )])
    };
    let check = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_sluicegate"))
            .args(["check", "-c"])
            .arg(pki.dir.file(name))
            // Far from the config file: a path relative to the cwd would miss.
            .current_dir(std::env::temp_dir())
            .output()
            .expect("run sluicegate check")
    };

    pki.dir.write("good.toml", &body("ca.pem"));
    let ok = check("good.toml");
    assert!(
        ok.status.success(),
        "ca.pem next to the file is valid: {}",
        String::from_utf8_lossy(&ok.stderr)
    );

    pki.dir.write("bad.toml", &body("nope.pem"));
    let bad = check("bad.toml");
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    let prefix = format!("{}:", pki.dir.file("bad.toml").display());
    assert!(
        stderr.contains(&prefix) && stderr.contains("routes[0].backends[0].tls_ca"),
        "FILE:LINE:COL: routes[0].backends[0].tls_ca …, got: {stderr}"
    );
}

// ---------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------

/// A unary and a server-streaming call, checked with their trailers.
async fn assert_grpc_calls(client: &mut GrpcClient, backend: &str) {
    let say = client.call(GRPC_SAY, &["hello"]).await;
    assert_eq!(say.http_status, StatusCode::OK);
    assert_eq!(say.content_type().as_deref(), Some("application/grpc"));
    assert_eq!(say.messages, vec!["hello"]);
    assert_eq!(say.grpc_status().as_deref(), Some("0"), "{say:?}");
    assert_eq!(
        say.trailer("grpc-status").as_deref(),
        Some("0"),
        "in the trailers"
    );
    assert_eq!(say.trailer("grpc-message").as_deref(), Some("OK"));
    assert_eq!(say.trailer("x-backend").as_deref(), Some(backend));

    let many = client.call(GRPC_SAY, &["a", "b", "c"]).await;
    assert_eq!(many.messages, vec!["a", "b", "c"], "client streaming");
    assert_eq!(many.trailer("grpc-status").as_deref(), Some("0"));

    let count = client.call(GRPC_COUNT, &["5"]).await;
    assert_eq!(count.messages, vec!["1", "2", "3", "4", "5"]);
    assert_eq!(
        count.trailer("grpc-status").as_deref(),
        Some("0"),
        "{count:?}"
    );
    assert_eq!(count.trailer("x-backend").as_deref(), Some(backend));
}

#[tokio::test]
async fn grpc_unary_and_streaming_pass_through_to_an_h2c_backend() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = proxy_to(blue.endpoint(), &[protocol("h2c")]).await;
    let mut client = GrpcClient::h2c(proxy.addr, "grpc.test").await;
    assert_grpc_calls(&mut client, "blue").await;
}

#[tokio::test]
async fn grpc_unary_and_streaming_pass_through_tls_end_to_end() {
    let pki = Pki::new("grpc-tls");
    let leaf = pki.localhost();
    let blue = Origin::new("blue")
        .answer(Answers::Protocols)
        .tls(&leaf)
        .start()
        .await;
    let text = format!(
        "{}{}",
        leaf.listener(),
        route(
            "web",
            "",
            "",
            &[backend_with(
                "blue",
                None,
                &[blue.https_endpoint()],
                &[&tls_ca(&pki), "protocol = \"h2\""],
            )]
        )
    );
    let proxy = TestProxy::start(&text).await;
    let mut client = GrpcClient::tls(proxy.addr, &pki, "localhost", "localhost").await;
    assert_grpc_calls(&mut client, "blue").await;
}

#[tokio::test]
async fn grpc_crosses_between_cleartext_and_tls_either_way() {
    let pki = Pki::new("grpc-mixed");
    let leaf = pki.localhost();
    let plain = Origin::new("plain")
        .answer(Answers::Protocols)
        .start()
        .await;
    let secure = Origin::new("secure")
        .answer(Answers::Protocols)
        .tls(&leaf)
        .start()
        .await;
    let text = format!(
        "{LISTENER}{}{}{}",
        leaf.listener_at("127.0.0.1:1"),
        route(
            "plain",
            "host = \"plain.grpc\"",
            "",
            &[backend_with(
                "plain",
                None,
                &[plain.endpoint()],
                &["protocol = \"h2c\""]
            )]
        ),
        route(
            "secure",
            "host = \"secure.grpc\"",
            "",
            &[backend_with(
                "secure",
                None,
                &[secure.https_endpoint()],
                &[&tls_ca(&pki), "protocol = \"h2\""],
            )]
        )
    );
    let proxy = TestProxy::start(&text).await;
    let (cleartext_listener, tls_listener) = (proxy.addrs[0], proxy.addrs[1]);

    let mut h2c_to_tls = GrpcClient::h2c(cleartext_listener, "secure.grpc").await;
    assert_grpc_calls(&mut h2c_to_tls, "secure").await;
    let mut tls_to_h2c = GrpcClient::tls(tls_listener, &pki, "localhost", "plain.grpc").await;
    assert_grpc_calls(&mut tls_to_h2c, "plain").await;
}

#[tokio::test]
async fn grpc_status_from_the_backend_passes_through() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = proxy_to(blue.endpoint(), &[protocol("h2c")]).await;
    let mut client = GrpcClient::h2c(proxy.addr, "grpc.test").await;
    let reply = client.call("/echo.Echo/Missing", &["x"]).await;
    assert_eq!(reply.http_status, StatusCode::OK);
    assert_eq!(reply.grpc_status().as_deref(), Some("12"));
    assert_eq!(reply.grpc_message().as_deref(), Some("unknown method"));
}

/// A gRPC error made by sluicegate: HTTP 200, trailers-only, gRPC content
/// type, this `grpc-status`, some `grpc-message`, no messages.
fn assert_grpc_error(reply: &GrpcReply, status: &str) {
    assert_eq!(
        reply.http_status,
        StatusCode::OK,
        "gRPC errors are HTTP 200: {reply:?}"
    );
    assert_eq!(
        reply.content_type().as_deref(),
        Some("application/grpc"),
        "{reply:?}"
    );
    assert_eq!(reply.grpc_status().as_deref(), Some(status), "{reply:?}");
    assert!(
        reply.grpc_message().is_some_and(|m| !m.is_empty()),
        "a grpc-message says why: {reply:?}"
    );
    assert!(reply.messages.is_empty(), "no body: {reply:?}");
}

#[tokio::test]
async fn grpc_call_with_every_endpoint_down_is_unavailable() {
    let endpoints = [dead_addr().await.to_string(), dead_addr().await.to_string()];
    let proxy = TestProxy::start(&config(&[backend_with(
        "blue",
        None,
        &endpoints,
        &["protocol = \"h2c\""],
    )]))
    .await;
    let mut client = GrpcClient::h2c(proxy.addr, "grpc.test").await;
    assert_grpc_error(&client.call(GRPC_SAY, &["hello"]).await, "14");

    // The same failure for a plain HTTP client stays a plain 502.
    let reply = get(proxy.addr, "grpc.test", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn grpc_call_with_every_endpoint_drained_is_unavailable() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = FileProxy::start(&config(&[backend_with(
        "blue",
        None,
        &[blue.endpoint()],
        &["protocol = \"h2c\""],
    )]))
    .await;
    let path = format!(
        "/api/v1/routes/web/backends/blue/endpoints/{}/drain",
        blue.endpoint().replace(':', "%3A")
    );
    let (status, body) = proxy
        .admin_send(Method::POST, &path, None, Some(&proxy.token))
        .await;
    assert_eq!(status, StatusCode::OK, "POST {path}: {body}");

    // No endpoint left at all: 503 for HTTP, UNAVAILABLE for gRPC.
    assert_eq!(
        get(proxy.addr, "grpc.test", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let mut client = GrpcClient::h2c(proxy.addr, "grpc.test").await;
    assert_grpc_error(&client.call(GRPC_SAY, &["hello"]).await, "14");
    assert_eq!(blue.hits(), 0);
}

#[tokio::test]
async fn grpc_call_matching_no_route_is_unimplemented() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let text = format!(
        "{LISTENER}{}",
        route(
            "grpc",
            "host = \"grpc.test\"",
            "",
            &[backend_with(
                "blue",
                None,
                &[blue.endpoint()],
                &["protocol = \"h2c\""]
            )]
        )
    );
    let proxy = TestProxy::start(&text).await;
    let mut client = GrpcClient::h2c(proxy.addr, "elsewhere.test").await;
    assert_grpc_error(&client.call(GRPC_SAY, &["hello"]).await, "12");
    assert_eq!(blue.hits(), 0);
}

#[tokio::test]
async fn grpc_call_timing_out_is_deadline_exceeded() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let text = format!(
        "{}{}",
        config(&[backend_with(
            "blue",
            None,
            &[blue.endpoint()],
            &["protocol = \"h2c\""]
        )]),
        timeouts(&[("response_headers", "300ms")])
    );
    let proxy = TestProxy::start(&text).await;
    let mut client = GrpcClient::h2c(proxy.addr, "grpc.test").await;
    assert_grpc_error(&client.call(GRPC_STALL, &["hello"]).await, "4");
}

// ---------------------------------------------------------------------------
// SNI on the listener
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sni_picks_the_certificate_valid_for_the_name() {
    let pki = Pki::new("sni");
    let default = pki.leaf("default", &["default.test"]);
    let api = pki.leaf("api", &["api.test", "*.wild.test"]);
    let blue = Origin::new("blue").start().await;
    let text = format!(
        "[[listeners]]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\", sni = [{}] }}\n{}",
        default.cert.display(),
        default.key.display(),
        api.pair(),
        route("web", "", "", &[backend("blue", None, &[blue.addr])])
    );
    let proxy = TestProxy::start(&text).await;

    for (name, expected) in [
        ("api.test", vec!["api.test", "*.wild.test"]),
        ("x.wild.test", vec!["api.test", "*.wild.test"]),
        ("default.test", vec!["default.test"]),
        ("unknown.test", vec!["default.test"]),
        // An IP address sends no SNI at all.
        ("127.0.0.1", vec!["default.test"]),
    ] {
        let probe = tls_probe(proxy.addr, name, &[b"h2", b"http/1.1"]).await;
        assert_eq!(probe.names, expected, "certificate for SNI {name}");
        assert_eq!(probe.alpn.as_deref(), Some("h2"), "ALPN for SNI {name}");
    }

    // A verifying client trusting the CA is served for the SNI name.
    let stream = tls_connect(proxy.addr, &pki, "deep.wild.test", &[b"http/1.1"]).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("http1 over TLS");
    tokio::spawn(conn);
    let resp = sender
        .send_request(get_request("deep.wild.test", "/"))
        .await
        .expect("request over TLS");
    assert_eq!(resp.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------
// HTTP/1.x corner cases
// ---------------------------------------------------------------------------

#[tokio::test]
async fn expect_100_continue_gets_100_before_the_body_is_sent() {
    let blue = Origin::new("blue").start().await;
    let proxy = TestProxy::start(&single_backend_config("blue", &[&blue])).await;

    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(
        b"POST /upload HTTP/1.1\r\nHost: upload.test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    let interim = conn.read_head().await;
    assert_eq!(
        interim.status, 100,
        "100 Continue before any body byte is sent"
    );
    assert_eq!(blue.upload_progress(), 0);

    conn.send(b"hello world").await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200);
    let body = conn.read_body(&head, false).await;
    assert_eq!(body.text(), "11", "the backend counted the whole body");
}

#[tokio::test]
async fn head_keeps_the_content_length_of_get_and_sends_no_body() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    for extra in [vec![], vec![protocol("h2c")]] {
        let proxy = proxy_to(blue.endpoint(), &extra).await;
        assert_head_has_no_body(&proxy).await;
    }
}

async fn assert_head_has_no_body(proxy: &TestProxy) {
    let mut conn = RawConn::connect(proxy.addr).await;

    conn.send(b"GET /sized/1000 HTTP/1.1\r\nHost: head.test\r\n\r\n")
        .await;
    let get_head = conn.read_head().await;
    assert_eq!(get_head.header("content-length"), Some("1000"));
    assert_eq!(conn.read_body(&get_head, false).await.data.len(), 1000);

    conn.send(b"HEAD /sized/1000 HTTP/1.1\r\nHost: head.test\r\n\r\n")
        .await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some("1000"),
        "HEAD keeps the GET's Content-Length: {head:?}"
    );
    assert!(!head.is_chunked(), "{head:?}");

    // Had any body followed the HEAD answer, it would sit in front of this
    // response's status line.
    conn.send(b"GET /sized/3 HTTP/1.1\r\nHost: head.test\r\n\r\n")
        .await;
    let next = conn.read_head().await;
    assert_eq!(next.status, 200);
    assert_eq!(conn.read_body(&next, false).await.text(), "sss");
}

#[tokio::test]
async fn no_content_and_not_modified_have_no_body() {
    let blue = Origin::new("blue").start().await;
    let proxy = TestProxy::start(&single_backend_config("blue", &[&blue])).await;
    let mut conn = RawConn::connect(proxy.addr).await;

    conn.send(b"GET /status/204 HTTP/1.1\r\nHost: empty.test\r\n\r\n")
        .await;
    let no_content = conn.read_head().await;
    assert_eq!(no_content.status, 204);
    assert_eq!(no_content.header("content-length"), None, "{no_content:?}");
    assert!(!no_content.is_chunked(), "{no_content:?}");

    conn.send(b"GET /status/304 HTTP/1.1\r\nHost: empty.test\r\n\r\n")
        .await;
    let not_modified = conn.read_head().await;
    assert_eq!(not_modified.status, 304);
    assert!(!not_modified.is_chunked(), "{not_modified:?}");

    // No body bytes came after either: the next answer starts cleanly.
    conn.send(b"GET / HTTP/1.1\r\nHost: empty.test\r\n\r\n")
        .await;
    let next = conn.read_head().await;
    assert_eq!(next.status, 200);
    assert_eq!(conn.read_body(&next, false).await.text(), "blue");
}

/// A chunked POST to `/trailers` with `TE: trailers`; `trailer` is sent as a
/// request trailer (and declared) when given.
async fn post_with_trailers(proxy: &TestProxy, trailer: Option<&str>) -> (RawHead, RawBody) {
    let mut conn = RawConn::connect(proxy.addr).await;
    let mut req = String::from(
        "POST /trailers HTTP/1.1\r\nHost: trailers.test\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n",
    );
    if trailer.is_some() {
        req.push_str("Trailer: x-checksum\r\n");
    }
    req.push_str("\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n");
    if let Some(value) = trailer {
        req.push_str(&format!("x-checksum: {value}\r\n"));
    }
    req.push_str("\r\n");
    conn.send(req.as_bytes()).await;
    let head = conn.read_head().await;
    let body = conn.read_body(&head, false).await;
    (head, body)
}

/// Sends a request trailer through a proxy to a backend spoken to as
/// `extra` says; the backend reports what it received.
async fn assert_request_trailer_arrives(extra: &[String]) {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = proxy_to(blue.endpoint(), extra).await;
    let (head, body) = post_with_trailers(&proxy, Some("abc123")).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        body.text(),
        "received 11 bytes; trailers [x-checksum=abc123]",
        "the backend got the whole body and the request trailer"
    );
}

/// Asks a backend spoken to as `extra` says for a response with a trailer.
async fn assert_response_trailer_arrives(extra: &[String]) {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = proxy_to(blue.endpoint(), extra).await;
    let (head, body) = post_with_trailers(&proxy, None).await;
    assert_eq!(head.status, 200);
    assert!(head.is_chunked(), "trailers need a chunked body: {head:?}");
    assert_eq!(body.text(), "received 11 bytes; trailers []");
    assert_eq!(
        body.trailer("x-response-trailer"),
        Some("done"),
        "the backend's trailer reaches the client: {head:?} {body:?}"
    );
}

#[tokio::test]
async fn chunked_request_trailers_reach_an_http1_backend() {
    assert_request_trailer_arrives(&[]).await;
}

#[tokio::test]
async fn chunked_request_trailers_reach_an_h2c_backend() {
    assert_request_trailer_arrives(&[protocol("h2c")]).await;
}

#[tokio::test]
async fn response_trailers_from_an_http1_backend_reach_an_http1_client() {
    assert_response_trailer_arrives(&[]).await;
}

#[tokio::test]
async fn response_trailers_from_an_h2c_backend_reach_an_http1_client() {
    assert_response_trailer_arrives(&[protocol("h2c")]).await;
}

#[tokio::test]
async fn http10_client_gets_an_http1_answer_and_the_connection_closes() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    let proxy = proxy_to(blue.endpoint(), &[]).await;

    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /sized/4 HTTP/1.0\r\nHost: old.test\r\n\r\n")
        .await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(conn.read_body(&head, false).await.text(), "ssss");
    assert!(
        conn.closed().await,
        "an HTTP/1.0 connection closes after the answer"
    );

    // A body of unknown length cannot be chunked for HTTP/1.0: it is sent
    // as is and ended by the close.
    let mut conn = RawConn::connect(proxy.addr).await;
    conn.send(b"GET /chunked HTTP/1.0\r\nHost: old.test\r\n\r\n")
        .await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200);
    assert!(
        !head.is_chunked(),
        "no chunked encoding to HTTP/1.0: {head:?}"
    );
    let body = conn.read_body(&head, false).await;
    assert_eq!(body.text(), "chunk-1chunk-2");
}

#[tokio::test]
async fn te_trailers_reaches_http1_and_h2_backends() {
    let blue = Origin::new("blue").answer(Answers::Protocols).start().await;
    for extra in [vec![], vec![protocol("h2c")]] {
        let proxy = proxy_to(blue.endpoint(), &extra).await;
        for (sent, expected) in [
            ("trailers", vec!["trailers"]),
            ("trailers, deflate", vec!["trailers"]),
            ("gzip", vec![]),
        ] {
            let req = Request::builder()
                .method(Method::GET)
                .uri("/inspect")
                .header(HOST, "te.test")
                .header(TE, sent)
                .body(empty())
                .expect("request");
            let seen = Seen::of_reply(&send(proxy.addr, req).await);
            assert_eq!(seen.te, expected, "TE: {sent} through {extra:?}");
        }
    }
}
