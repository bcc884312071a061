//! The admin API (SPEC §3) on a real admin listener: weight changes that apply
//! to the very next request, bearer-token checks, refused changes that change
//! nothing, revisions with if_revision, promote and rollback, paginated
//! history, health, HEAD on every GET endpoint, 404 and 405 (with `Allow`)
//! for unknown paths and methods, the state file across restarts, and
//! `sluicegate ctl` driving it all end to end.

pub mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use sluicegate::control::history::Source;

use sluicegate::control::admin::api::{ApiError, RoutesAnswer};
use support::admin::{FileProxy, STATE_FILE, TestDir, describe_output, weight_map};
use support::client::Http1Client;
use support::config_text::two_backend_config;
use support::origin::RunningOrigin;

/// Blue and green fakes behind a file-started proxy with these weights.
async fn blue_green(
    blue_weight: &str,
    green_weight: &str,
) -> (RunningOrigin, RunningOrigin, FileProxy) {
    let blue = RunningOrigin::start("blue").await;
    let green = RunningOrigin::start("green").await;
    let proxy = FileProxy::start(&two_backend_config(
        blue_weight,
        &blue,
        green_weight,
        &green,
    ))
    .await;
    (blue, green, proxy)
}

const WEIGHTS: &str = "/api/v1/routes/web/weights";

/// Asserts that `body` is an `{"error": "..."}` object.
fn assert_error_body(body: &Value) {
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "expected {{\"error\": \"…\"}}, got {body}"
    );
}

/// Sends `body` verbatim to PUT weights with the token and asserts `status`,
/// an error body, and that weights and revision stayed as they were.
async fn assert_refused(proxy: &FileProxy, path: &str, body: Bytes, status: StatusCode) {
    let weights_before = proxy.weights("web").await;
    let revision_before = proxy.revision().await;

    let reply = proxy
        .admin_raw(Method::PUT, path, body, Some(&proxy.token))
        .await;

    assert_eq!(reply.status, status, "PUT {path}: {}", reply.text());
    assert_error_body(&support::reply_json(&reply));
    assert_eq!(proxy.weights("web").await, weights_before);
    assert_eq!(proxy.revision().await, revision_before);
}

// ---------------------------------------------------------------------------
// Weight changes apply to the next request.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_weights_returns_to_the_files_weights_as_a_new_revision() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let (status, _) = proxy
        .put_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;
    assert_eq!(status, StatusCode::OK);
    let revision = proxy.revision().await;
    let (status, body) = proxy
        .admin_send(Method::DELETE, WEIGHTS, None, Some(&proxy.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"].as_u64(), Some(revision + 1), "{body}");
    assert_eq!(proxy.next_backend().await, "blue");
    let history = proxy.history_page("limit=1").await;
    assert_eq!(history.revisions[0].source, Source::File);
    // Zone weights need a fleet.
    let (status, refusal) = proxy
        .admin_refusal(
            Method::DELETE,
            &format!("{WEIGHTS}?zone=eu"),
            None,
            Some(&proxy.token),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refusal:?}");
    assert!(refusal.error.contains("[fleet]"), "{refusal:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_change_via_api_moves_the_very_next_request() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let mut keep_alive = Http1Client::connect(proxy.addr).await;
    for _ in 0..3 {
        assert_eq!(
            keep_alive.get("a.test", "/").await.backend().as_deref(),
            Some("blue")
        );
    }
    let revision = proxy.revision().await;

    let (status, body) = proxy
        .put_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"].as_u64(), Some(revision + 1), "{body}");
    assert_eq!(
        support::desired_weights(&body["route"]),
        weight_map(&[("blue", 0.0), ("green", 100.0)])
    );
    // The very next request, on the connection already open and on a new one.
    assert_eq!(
        keep_alive.get("a.test", "/").await.backend().as_deref(),
        Some("green")
    );
    assert_eq!(proxy.next_backend().await, "green");
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 0.0), ("green", 100.0)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_left_out_of_a_weight_change_get_zero() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;

    let (status, body) = proxy.put_weights("web", &[("green", 100.0)]).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 0.0), ("green", 100.0)])
    );
    assert_eq!(proxy.next_backend().await, "green");
}

// ---------------------------------------------------------------------------
// Token.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_401() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let body = json!({ "weights": { "blue": 0, "green": 100 } });

    let (status, reply) = proxy
        .admin_send(Method::PUT, WEIGHTS, Some(&body), None)
        .await;

    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
    assert_error_body(&reply);
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 100.0), ("green", 0.0)])
    );
    assert_eq!(proxy.next_backend().await, "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_401() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let body = json!({ "weights": { "blue": 0, "green": 100 } });
    let wrong = format!("{}x", proxy.token);

    for token in [wrong.as_str(), "", "x"] {
        let (status, reply) = proxy
            .admin_send(Method::PUT, WEIGHTS, Some(&body), Some(token))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "token {token:?}: {reply}");
        assert_error_body(&reply);
    }
    // Not a bearer token at all.
    let req = http::Request::builder()
        .method(Method::PUT)
        .uri(WEIGHTS)
        .header("host", proxy.admin_addr.to_string())
        .header("authorization", format!("Basic {}", proxy.token))
        .body(support::full(body.to_string()))
        .unwrap();
    let reply = Http1Client::connect(proxy.admin_addr).await.send(req).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());

    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 100.0), ("green", 0.0)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_the_query_string_is_401() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let body = json!({ "weights": { "blue": 0, "green": 100 } });
    let path = format!("{WEIGHTS}?token={}", proxy.token);

    let (status, reply) = proxy
        .admin_send(Method::PUT, &path, Some(&body), None)
        .await;

    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 100.0), ("green", 0.0)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_change_needs_the_token() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let revision = proxy.revision().await;
    let changes: [(&str, Value); 4] = [
        ("/api/v1/routes/web/promote", json!({ "backend": "green" })),
        ("/api/v1/routes/web/rollback", json!({})),
        ("/api/v1/reload", json!({})),
        ("/api/v1/routes/web/canary/start", json!({})),
    ];

    for (path, body) in &changes {
        let (status, reply) = proxy.admin_send(Method::POST, path, Some(body), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "POST {path}: {reply}");
    }

    assert_eq!(proxy.revision().await, revision);
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 100.0), ("green", 0.0)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_a_loopback_admin_listener_need_no_token() {
    let (_blue, _green, proxy) = blue_green("90", "10").await;

    let reply = proxy
        .admin_raw(Method::GET, "/api/v1/routes", Bytes::new(), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let answer: RoutesAnswer = support::admin::parse_answer(&reply);
    let [route] = answer.routes.as_slice() else {
        panic!("one route expected: {answer:?}");
    };
    assert_eq!(route.name, "web");
    let weights: Vec<(&str, f64)> = route
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.desired_weight))
        .collect();
    assert_eq!(weights, [("blue", 90.0), ("green", 10.0)]);

    let (status, body) = proxy
        .admin_send(Method::GET, "/api/v1/routes/web", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["route"]["name"], "web");

    let (status, body) = proxy
        .admin_send(Method::GET, "/api/v1/history", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Every GET endpoint of the admin listener, the probes and the dashboard
/// included.
const READS: [&str; 11] = [
    "/",
    "/assets/app.js",
    "/assets/app.css",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/routes",
    "/api/v1/routes/web",
    "/api/v1/routes/web/mirror",
    "/api/v1/history",
    "/api/v1/stats",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_401_on_every_endpoint_reads_on_loopback_included() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let wrong = format!("{}x", proxy.token);

    for path in READS.iter().chain(&["/no/such/path", "/api/v1/nope"]) {
        for token in [wrong.as_str(), "", "x"] {
            let (status, reply) = proxy.admin_send(Method::GET, path, None, Some(token)).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "GET {path} with token {token:?}: {reply}"
            );
            assert_error_body(&reply);
        }
        let (head, body) = proxy.admin_wire("HEAD", path, Some(&wrong)).await;
        assert_eq!(head.status, 401, "HEAD {path} with a wrong token");
        assert!(body.is_empty(), "HEAD {path} sent a body");
        assert_eq!(head.header("www-authenticate"), Some("Bearer"));
    }
    // Another scheme is a credential too, and not ours.
    let req = http::Request::builder()
        .uri("/api/v1/routes")
        .header("host", proxy.admin_addr.to_string())
        .header("authorization", format!("Basic {}", proxy.token))
        .body(support::empty())
        .unwrap();
    let reply = Http1Client::connect(proxy.admin_addr).await.send(req).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_error_body(&support::reply_json(&reply));

    // The right token, and none at all on loopback, still read.
    for path in READS {
        let (status, reply) = proxy.admin_get(path).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "GET {path}: {reply}");
        let (status, reply) = proxy.admin_send(Method::GET, path, None, None).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "GET {path}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_changes_nothing() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let revision = proxy.revision().await;
    let wrong = format!("{}x", proxy.token);

    let (status, reply) = proxy
        .admin_send(
            Method::POST,
            "/api/v1/routes/web/promote",
            Some(&json!({ "backend": "green" })),
            Some(&wrong),
        )
        .await;

    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
    assert_error_body(&reply);
    assert_eq!(proxy.revision().await, revision);
    assert_eq!(proxy.next_backend().await, "blue");
}

/// Header fields that may differ between two answers a moment apart.
const MAY_DIFFER: [&str; 1] = ["date"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_every_get_endpoint_like_get_without_a_body() {
    let (_blue, _green, proxy) = blue_green("90", "10").await;
    // Not every path is a 200: a route without a mirror is 404, a write-only
    // path 405; HEAD must still say what GET says.
    let others = ["/api/v1/reload", "/api/v1/routes/nope", "/no/such/path"];

    for path in READS.iter().chain(&others) {
        for token in [None, Some(proxy.token.as_str())] {
            let (get, get_body) = proxy.admin_wire("GET", path, token).await;
            let (head, head_body) = proxy.admin_wire("HEAD", path, token).await;

            assert_eq!(head.status, get.status, "HEAD {path}");
            assert!(
                head_body.is_empty(),
                "HEAD {path} sent a body: {:?}",
                String::from_utf8_lossy(&head_body)
            );
            let length = head
                .header("content-length")
                .and_then(|v| v.parse::<usize>().ok());
            assert!(
                length.is_some_and(|n| n > 0),
                "HEAD {path}: content-length {length:?}"
            );
            // The figures in these two change from one answer to the next.
            if *path == "/metrics" || *path == "/api/v1/stats" {
                assert_eq!(head.header("content-type"), get.header("content-type"));
                continue;
            }
            assert_eq!(length, Some(get_body.len()), "HEAD {path}");
            let fields = |head: &support::RawHead| {
                let mut fields = head.headers.clone();
                fields.retain(|(name, _)| !MAY_DIFFER.contains(&name.as_str()));
                fields.sort();
                fields
            };
            assert_eq!(fields(&head), fields(&get), "HEAD {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_probes_answer_200_so_load_balancers_see_the_proxy_up() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (head, body) = proxy.admin_wire("HEAD", path, None).await;
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(body.is_empty(), "HEAD {path} sent a body");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_over_h2c_has_the_get_length_and_no_body() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let tcp = tokio::net::TcpStream::connect(proxy.admin_addr)
        .await
        .expect("connect to the admin listener");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    let (_, get_bytes) = proxy.admin_wire("GET", "/api/v1/routes/web", None).await;

    let req = http::Request::builder()
        .method(Method::HEAD)
        .version(http::Version::HTTP_2)
        .uri(format!("http://{}/api/v1/routes/web", proxy.admin_addr))
        .body(support::empty())
        .unwrap();
    sender.ready().await.expect("h2 connection ready");
    let resp = sender.send_request(req).await.expect("HEAD over h2c");
    let (parts, body) = resp.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .expect("read the HEAD answer")
        .to_bytes();

    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(
        parts.headers["content-length"],
        get_bytes.len().to_string().as_str()
    );
    assert!(body.is_empty(), "HEAD sent a body over h2c");
}

// ---------------------------------------------------------------------------
// Refused changes change nothing.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_not_summing_to_100_are_422() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let body = json!({ "weights": { "blue": 50, "green": 40 } });
    assert_refused(
        &proxy,
        WEIGHTS,
        Bytes::from(body.to_string()),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let body = json!({ "weights": { "blue": 60, "green": 60 } });
    assert_refused(
        &proxy,
        WEIGHTS,
        Bytes::from(body.to_string()),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_or_too_precise_weights_are_422() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    for weights in [
        json!({ "blue": 150, "green": -50 }),
        json!({ "blue": 99.995, "green": 0.005 }),
    ] {
        let body = json!({ "weights": weights });
        assert_refused(
            &proxy,
            WEIGHTS,
            Bytes::from(body.to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_backend_is_404() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let body = json!({ "weights": { "blue": 50, "purple": 50 } });
    assert_refused(
        &proxy,
        WEIGHTS,
        Bytes::from(body.to_string()),
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_404() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let body = json!({ "weights": { "blue": 0, "green": 100 } });
    assert_refused(
        &proxy,
        "/api/v1/routes/nope/weights",
        Bytes::from(body.to_string()),
        StatusCode::NOT_FOUND,
    )
    .await;
    let (status, refusal) = proxy
        .admin_refusal(Method::GET, "/api/v1/routes/nope", None, Some(&proxy.token))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{refusal:?}");
    assert_eq!(refusal.error, "no route called `nope`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let token = Some(proxy.token.as_str());
    for path in [
        "/api/v1/nope",
        "/no/such/path",
        "/api/v1/routes/web/weights/x",
    ] {
        let (status, refusal) = proxy.admin_refusal(Method::GET, path, None, token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET {path}: {refusal:?}");
        assert_eq!(refusal.error, "no such admin endpoint");
    }
    let wrong = [
        (Method::GET, "/api/v1/reload", "POST"),
        (Method::POST, WEIGHTS, "PUT, DELETE"),
        (Method::GET, "/api/v1/routes/web/promote", "POST"),
        (Method::POST, "/api/v1/routes", "GET, HEAD"),
        (Method::PUT, "/api/v1/history", "GET, HEAD"),
        (Method::POST, "/healthz", "GET, HEAD"),
    ];
    for (method, path, allow) in wrong {
        let reply = proxy
            .admin_raw(method.clone(), path, Bytes::new(), token)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            reply.text()
        );
        assert_eq!(
            reply
                .headers
                .get(http::header::ALLOW)
                .and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        let refusal: ApiError = support::admin::parse_answer(&reply);
        assert_eq!(refusal.error, "method not allowed here");
    }
    // A wrong method changes nothing, and a write without the token is
    // still a 401 before anything is said about the path.
    let (status, _) = proxy
        .admin_refusal(Method::DELETE, WEIGHTS, None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 100.0), ("green", 0.0)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    for text in [
        r#"{"weights": {"blue": 0, "green": 100}"#,
        "weights=blue",
        "{,}",
    ] {
        assert_refused(&proxy, WEIGHTS, Bytes::from(text), StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_type_is_422() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    for body in [
        json!({ "weights": "x" }),
        json!({ "weights": { "blue": "0", "green": 100 } }),
        json!({ "weights": { "blue": 0, "green": 100 }, "if_revision": "one" }),
        json!({ "weight": { "blue": 0, "green": 100 } }),
    ] {
        assert_refused(
            &proxy,
            WEIGHTS,
            Bytes::from(body.to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_kib_body_is_413() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    // Valid JSON that only its size makes unacceptable.
    let padding = "x".repeat(100 * 1024);
    let body = json!({ "weights": { "blue": 0, "green": 100 }, "reason": padding });
    assert_refused(
        &proxy,
        WEIGHTS,
        Bytes::from(body.to_string()),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(proxy.next_backend().await, "blue");
}

// ---------------------------------------------------------------------------
// Revisions.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_revision_mismatch_is_409_and_changes_nothing() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let revision = proxy.revision().await;

    for stale in [revision.saturating_sub(1), revision + 1, 0] {
        let body = json!({ "weights": { "blue": 0, "green": 100 }, "if_revision": stale });
        assert_refused(
            &proxy,
            WEIGHTS,
            Bytes::from(body.to_string()),
            StatusCode::CONFLICT,
        )
        .await;
    }
    assert_eq!(proxy.next_backend().await, "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_if_revision_applies_and_bumps_the_revision() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let revision = proxy.revision().await;
    let body = json!({ "weights": { "blue": 0, "green": 100 }, "if_revision": revision });

    let (status, reply) = proxy
        .admin_send(Method::PUT, WEIGHTS, Some(&body), Some(&proxy.token))
        .await;

    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["revision"].as_u64(), Some(revision + 1), "{reply}");
    assert_eq!(proxy.revision().await, revision + 1);
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 0.0), ("green", 100.0)])
    );
    assert_eq!(proxy.next_backend().await, "green");

    // The same if_revision again is now stale.
    let (status, reply) = proxy
        .admin_send(Method::PUT, WEIGHTS, Some(&body), Some(&proxy.token))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
    assert_eq!(proxy.revision().await, revision + 1);
}

// ---------------------------------------------------------------------------
// Promote and rollback.

async fn post(proxy: &FileProxy, path: &str, body: Value) -> (StatusCode, Value) {
    proxy
        .admin_send(Method::POST, path, Some(&body), Some(&proxy.token))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_sends_all_traffic_to_the_backend() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let revision = proxy.revision().await;

    let (status, body) = post(
        &proxy,
        "/api/v1/routes/web/promote",
        json!({ "backend": "green" }),
    )
    .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"].as_u64(), Some(revision + 1), "{body}");
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 0.0), ("green", 100.0)])
    );
    for _ in 0..5 {
        assert_eq!(proxy.next_backend().await, "green");
    }

    let (status, body) = post(
        &proxy,
        "/api/v1/routes/web/promote",
        json!({ "backend": "purple" }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = post(
        &proxy,
        "/api/v1/routes/nope/promote",
        json!({ "backend": "green" }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(proxy.revision().await, revision + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_previous_weights() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let (status, body) = post(
        &proxy,
        "/api/v1/routes/web/promote",
        json!({ "backend": "green" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(proxy.next_backend().await, "green");
    let revision = proxy.revision().await;

    let (status, body) = post(&proxy, "/api/v1/routes/web/rollback", json!({})).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"].as_u64(), Some(revision + 1), "{body}");
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 100.0), ("green", 0.0)])
    );
    for _ in 0..5 {
        assert_eq!(proxy.next_backend().await, "blue");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_with_an_empty_body_works_too() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let (status, body) = proxy
        .put_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = proxy
        .admin_send(
            Method::POST,
            "/api/v1/routes/web/rollback",
            None,
            Some(&proxy.token),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(proxy.next_backend().await, "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_revision_restores_that_revision() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let mut revisions = Vec::new();
    for weights in [
        [("blue", 0.0), ("green", 100.0)],
        [("blue", 50.0), ("green", 50.0)],
        [("blue", 100.0), ("green", 0.0)],
    ] {
        let (status, body) = proxy.put_weights("web", &weights).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        revisions.push(body["revision"].as_u64().expect("revision"));
    }
    assert_eq!(proxy.next_backend().await, "blue");

    let (status, body) = post(
        &proxy,
        "/api/v1/routes/web/rollback",
        json!({ "to_revision": revisions[0] }),
    )
    .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"].as_u64(), Some(revisions[2] + 1), "{body}");
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 0.0), ("green", 100.0)])
    );
    for _ in 0..5 {
        assert_eq!(proxy.next_backend().await, "green");
    }

    // A revision that does not exist is refused and changes nothing.
    let revision = proxy.revision().await;
    let (status, body) = post(
        &proxy,
        "/api/v1/routes/web/rollback",
        json!({ "to_revision": revision + 100 }),
    )
    .await;
    assert!(status.is_client_error(), "{status}: {body}");
    assert_error_body(&body);
    assert_eq!(proxy.revision().await, revision);
    assert_eq!(proxy.next_backend().await, "green");
}

// ---------------------------------------------------------------------------
// History.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_admin_changes_newest_first_with_their_reasons() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let changes = [
        ("first", [("blue", 75.0), ("green", 25.0)]),
        ("second", [("blue", 50.0), ("green", 50.0)]),
        ("third", [("blue", 0.0), ("green", 100.0)]),
    ];
    let mut revisions = Vec::new();
    for (reason, weights) in &changes {
        let body = json!({ "weights": weight_map(weights), "reason": reason });
        let (status, reply) = proxy
            .admin_send(Method::PUT, WEIGHTS, Some(&body), Some(&proxy.token))
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        revisions.push(reply["revision"].as_u64().expect("revision"));
    }

    let page = proxy.history_page("").await;

    let list = &page.revisions;
    let numbers: Vec<u64> = list.iter().map(|r| r.revision).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {numbers:?}"
    );
    assert!(list.len() >= 4, "the three changes and the start: {page:?}");
    for (entry, ((reason, weights), revision)) in
        list.iter().zip(changes.iter().zip(&revisions).rev())
    {
        assert_eq!(entry.revision, *revision, "{entry:?}");
        assert_eq!(entry.source, Source::Admin, "{entry:?}");
        assert_eq!(entry.reason, *reason, "{entry:?}");
        assert_eq!(entry.route.as_deref(), Some("web"), "{entry:?}");
        let recorded: std::collections::BTreeMap<String, f64> = entry
            .weights
            .iter()
            .flat_map(|w| &w.0)
            .map(|(name, weight)| (name.clone(), weight.percent()))
            .collect();
        assert_eq!(recorded, weight_map(weights), "{entry:?}");
    }
    // The start-up revision came from the file.
    assert_eq!(
        list.last().expect("oldest").source,
        Source::File,
        "{page:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_paginated_with_limit_and_next_before() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    for i in 0..5 {
        let green = f64::from(i * 10);
        let (status, body) = proxy
            .put_weights("web", &[("blue", 100.0 - green), ("green", green)])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let all: Vec<u64> = proxy
        .history_page("")
        .await
        .revisions
        .iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(all.len(), 6, "start + five changes: {all:?}");

    let mut paged = Vec::new();
    let mut query = "limit=2".to_string();
    let mut pages = 0;
    loop {
        let page = proxy.history_page(&query).await;
        assert!(page.revisions.len() <= 2, "limit=2 gave {page:?}");
        paged.extend(page.revisions.iter().map(|r| r.revision));
        pages += 1;
        let Some(next) = page.next_before else {
            break;
        };
        assert_eq!(Some(next), paged.last().copied(), "{page:?}");
        query = format!("limit=2&before={next}");
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(paged, all);
    assert_eq!(pages, 3);
}

// ---------------------------------------------------------------------------
// Health.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_healthz_are_200_while_running() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    for path in ["/readyz", "/healthz"] {
        let (status, body) = proxy.admin_send(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    }
}

// ---------------------------------------------------------------------------
// State file.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_survive_a_restart_with_a_state_file() {
    let blue = RunningOrigin::start("blue").await;
    let green = RunningOrigin::start("green").await;
    let proxy =
        FileProxy::start_with_state_file(&two_backend_config("100", &blue, "0", &green)).await;
    let body = json!({ "weights": { "blue": 0, "green": 100 }, "reason": "persist me" });
    let (status, reply) = proxy
        .admin_send(Method::PUT, WEIGHTS, Some(&body), Some(&proxy.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let changed_at = reply["revision"].as_u64().expect("revision");
    assert!(proxy.state_path().exists(), "no state file written");

    let proxy = proxy.restart().await;

    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 0.0), ("green", 100.0)])
    );
    assert!(proxy.route_answer("web").await.route.admin_override);
    assert_eq!(proxy.next_backend().await, "green");
    assert!(
        proxy.revision().await > changed_at,
        "revisions continue after a restart"
    );
    let history = proxy.history_page("").await;
    let entry = history
        .revisions
        .iter()
        .find(|r| r.revision == changed_at)
        .unwrap_or_else(|| panic!("revision {changed_at} missing after restart: {history:?}"));
    assert_eq!(entry.source, Source::Admin, "{entry:?}");
    assert_eq!(entry.reason, "persist me", "{entry:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_weights_edited_while_stopped_win_over_saved_admin_weights() {
    let blue = RunningOrigin::start("blue").await;
    let green = RunningOrigin::start("green").await;
    let proxy =
        FileProxy::start_with_state_file(&two_backend_config("100", &blue, "0", &green)).await;
    let (status, reply) = proxy
        .put_weights("web", &[("blue", 50.0), ("green", 50.0)])
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    // Untouched file: the saved admin weights come back.
    let unchanged = two_backend_config("100", &blue, "0", &green);
    let proxy = proxy.restart_with_config(&unchanged).await;
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 50.0), ("green", 50.0)])
    );

    // Edited while stopped: the file is the latest change.
    let edited = two_backend_config("70", &blue, "30", &green);
    let proxy = proxy.restart_with_config(&edited).await;
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 70.0), ("green", 30.0)])
    );
    assert_eq!(proxy.route("web").await["route"]["override"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_file_is_moved_aside_and_the_file_weights_apply() {
    let blue = RunningOrigin::start("blue").await;
    let green = RunningOrigin::start("green").await;
    let dir = TestDir::new("corrupt");
    dir.write(STATE_FILE, "{\"overrides\": [[\"web\", {\"green\": 100");

    let proxy =
        FileProxy::start_in(dir, &two_backend_config("100", &blue, "0", &green), true).await;

    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 100.0), ("green", 0.0)])
    );
    assert_eq!(proxy.next_backend().await, "blue");
    let names = proxy.dir.file_names();
    let prefix = format!("{STATE_FILE}.corrupt-");
    assert!(
        names.iter().any(|n| n.starts_with(&prefix)),
        "no {prefix}* file in {names:?}"
    );
    // Admin changes work, and the new state file is valid JSON.
    let (status, body) = proxy
        .put_weights("web", &[("blue", 0.0), ("green", 100.0)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let saved = std::fs::read_to_string(proxy.state_path()).expect("state file rewritten");
    serde_json::from_str::<Value>(&saved).expect("the new state file is JSON");
}

// ---------------------------------------------------------------------------
// `sluicegate ctl` end to end.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_set_changes_the_weights() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;

    let output = proxy
        .ctl(&proxy.token, &["set", "web", "blue=75", "green=25"])
        .await;

    assert!(output.status.success(), "{}", describe_output(&output));
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 75.0), ("green", 25.0)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_status_shows_the_backends() {
    let (_blue, _green, proxy) = blue_green("90", "10").await;

    let output = proxy.ctl(&proxy.token, &["status"]).await;

    assert!(output.status.success(), "{}", describe_output(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("blue"), "{}", describe_output(&output));
    assert!(stdout.contains("green"), "{}", describe_output(&output));
    assert!(stdout.contains("web"), "{}", describe_output(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_with_a_wrong_token_fails() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;
    let wrong = format!("{}x", proxy.token);

    let output = proxy
        .ctl(&wrong, &["set", "web", "blue=75", "green=25"])
        .await;

    assert!(!output.status.success(), "{}", describe_output(&output));
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 100.0), ("green", 0.0)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_json_status_prints_valid_json() {
    let (_blue, _green, proxy) = blue_green("90", "10").await;

    let output = proxy.ctl(&proxy.token, &["--json", "status"]).await;

    assert!(output.status.success(), "{}", describe_output(&output));
    let value: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe_output(&output)));
    assert!(value.to_string().contains("blue"), "{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_errors_exit_non_zero() {
    let (_blue, _green, proxy) = blue_green("100", "0").await;

    for args in [
        &["set", "web", "blue=50", "green=40"][..],
        &["set", "nope", "blue=100"][..],
        &["promote", "web", "purple"][..],
    ] {
        let output = proxy.ctl(&proxy.token, args).await;
        assert!(
            !output.status.success(),
            "ctl {args:?} succeeded: {}",
            describe_output(&output)
        );
    }
    assert_eq!(
        proxy.weights("web").await,
        weight_map(&[("blue", 100.0), ("green", 0.0)])
    );
}
