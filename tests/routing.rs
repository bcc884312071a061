//! Route matching (host, wildcard host, path prefix, first match wins) and the
//! proxy's own error responses.

pub mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::client::{Reply, get, get_request, send};
use support::config_text::{
    H1Path, backend, listener_on, route, single_backend_config_on, timeouts,
};
use support::origin::{Origin, RunningOrigin};
use support::proxy::TestProxy;

/// Four routes in this order:
/// - `shop`:   host `shop.example.com`, any path
/// - `shadow`: host `shop.example.com`, prefix `/api` (never reached: `shop` matches first)
/// - `wild`:   host `*.example.com`
/// - `api`:    any host, prefix `/api`
struct Routed {
    shop: RunningOrigin,
    shadow: RunningOrigin,
    wild: RunningOrigin,
    api: RunningOrigin,
    proxy: TestProxy,
}

async fn routed(path: H1Path) -> Routed {
    let shop = Origin::new("shop").start().await;
    let shadow = Origin::new("shadow").start().await;
    let wild = Origin::new("wild").start().await;
    let api = Origin::new("api").start().await;
    let config = [
        listener_on(path),
        route(
            "shop",
            r#"host = "shop.example.com", path_prefix = "/""#,
            "",
            &[backend("shop", None, &[shop.addr])],
        ),
        route(
            "shadow",
            r#"host = "shop.example.com", path_prefix = "/api""#,
            "",
            &[backend("shadow", None, &[shadow.addr])],
        ),
        route(
            "wild",
            r#"host = "*.example.com""#,
            "",
            &[backend("wild", None, &[wild.addr])],
        ),
        route(
            "api",
            r#"path_prefix = "/api""#,
            "",
            &[backend("api", None, &[api.addr])],
        ),
    ]
    .concat();
    let proxy = TestProxy::start(&config).await;
    Routed {
        shop,
        shadow,
        wild,
        api,
        proxy,
    }
}

fn assert_routed_to(reply: &Reply, backend: &str) {
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.text());
    assert_eq!(
        reply.backend().as_deref(),
        Some(backend),
        "body: {}",
        reply.text()
    );
}

/// A proxy-generated error: this status, a short plain-text body, no backend.
fn assert_proxy_error(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "body: {}", reply.text());
    assert!(
        reply.content_type().starts_with("text/plain"),
        "content-type of a proxy error: {:?}",
        reply.content_type()
    );
    assert!(
        !reply.body.is_empty() && reply.body.len() <= 512,
        "proxy error body should be short text, got {:?}",
        reply.text()
    );
    assert_eq!(reply.backend(), None, "no backend answered this");
}

/// `GET /` on `web.test` with `headers`.
async fn get_with(proxy: &TestProxy, headers: &[(&str, &str)]) -> Reply {
    let mut req = get_request("web.test", "/");
    for (name, value) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    send(proxy.addr, req).await
}

async fn header_routes_take_the_requests_that_carry_their_headers(path: H1Path) {
    let beta = Origin::new("beta").start().await;
    let tester = Origin::new("tester").start().await;
    let stable = Origin::new("stable").start().await;
    let config = [
        listener_on(path),
        route(
            "beta",
            r#"path_prefix = "/", headers = { "X-Beta" = "1", "x-team" = "web" }"#,
            "",
            &[backend("beta", None, &[beta.addr])],
        ),
        route(
            "testers",
            r#"headers = { "x-tester" = "*" }"#,
            "",
            &[backend("tester", None, &[tester.addr])],
        ),
        route("stable", "", "", &[backend("stable", None, &[stable.addr])]),
    ]
    .concat();
    let proxy = TestProxy::start(&config).await;
    let both = [("x-beta", "1"), ("X-Team", "web")];
    assert_routed_to(&get_with(&proxy, &both).await, "beta");
    // Every header of the match must be there, with its exact value.
    assert_routed_to(&get_with(&proxy, &[("x-beta", "1")]).await, "stable");
    let wrong = [("x-beta", "2"), ("x-team", "web")];
    assert_routed_to(&get_with(&proxy, &wrong).await, "stable");
    // `"*"`: present with any value, even an empty one.
    assert_routed_to(&get_with(&proxy, &[("x-tester", "")]).await, "tester");
    assert_routed_to(&get_with(&proxy, &[("x-tester", "ana")]).await, "tester");
    assert_routed_to(&get_with(&proxy, &[]).await, "stable");
    assert_eq!((beta.hits(), tester.hits(), stable.hits()), (1, 2, 3));
}

async fn exact_host_selects_its_route(path: H1Path) {
    let r = routed(path).await;
    assert_routed_to(&get(r.proxy.addr, "shop.example.com", "/").await, "shop");
    assert_routed_to(
        &get(r.proxy.addr, "shop.example.com", "/cart/42").await,
        "shop",
    );
    assert_eq!(r.shop.hits(), 2);
}

async fn host_match_ignores_case(path: H1Path) {
    let r = routed(path).await;
    assert_routed_to(&get(r.proxy.addr, "SHOP.Example.COM", "/").await, "shop");
}

async fn host_header_with_port_matches_the_host(path: H1Path) {
    let r = routed(path).await;
    assert_routed_to(
        &get(r.proxy.addr, "shop.example.com:8080", "/").await,
        "shop",
    );
    let port = r.proxy.addr.port();
    assert_routed_to(
        &get(r.proxy.addr, &format!("a.example.com:{port}"), "/").await,
        "wild",
    );
}

async fn wildcard_host_matches_any_subdomain(path: H1Path) {
    let r = routed(path).await;
    assert_routed_to(&get(r.proxy.addr, "a.example.com", "/").await, "wild");
    assert_routed_to(
        &get(r.proxy.addr, "deep.sub.example.com", "/x").await,
        "wild",
    );
    assert_eq!(r.wild.hits(), 2);
}

async fn wildcard_host_does_not_match_the_apex(path: H1Path) {
    let r = routed(path).await;
    // The apex skips `wild` and falls through to the host-less `api` route...
    assert_routed_to(&get(r.proxy.addr, "example.com", "/api/users").await, "api");
    // ...and with a path `api` does not take, nothing matches.
    assert_proxy_error(
        &get(r.proxy.addr, "example.com", "/").await,
        StatusCode::NOT_FOUND,
    );
    // A name that merely ends in "example.com" is not a subdomain either.
    assert_proxy_error(
        &get(r.proxy.addr, "badexample.com", "/").await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(r.wild.hits(), 0);
}

async fn path_prefix_is_a_plain_string_prefix(path: H1Path) {
    let r = routed(path).await;
    assert_routed_to(&get(r.proxy.addr, "other.org", "/api").await, "api");
    assert_routed_to(&get(r.proxy.addr, "other.org", "/api/users/7").await, "api");
    // Plain string prefix, not path segments: `/api` also takes `/api-docs`.
    assert_routed_to(&get(r.proxy.addr, "other.org", "/api-docs").await, "api");
    assert_proxy_error(
        &get(r.proxy.addr, "other.org", "/ap").await,
        StatusCode::NOT_FOUND,
    );
    assert_proxy_error(
        &get(r.proxy.addr, "other.org", "/v1/api").await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(r.api.hits(), 3);
}

async fn first_matching_route_wins(path: H1Path) {
    let r = routed(path).await;
    // `shop`, `shadow`, `wild` and `api` all match; `shop` comes first.
    assert_routed_to(
        &get(r.proxy.addr, "shop.example.com", "/api/orders").await,
        "shop",
    );
    assert_eq!(r.shadow.hits(), 0);
    assert_eq!(r.wild.hits(), 0);
    assert_eq!(r.api.hits(), 0);
}

async fn no_matching_route_is_404_plain_text(path: H1Path) {
    let r = routed(path).await;
    let reply = get(r.proxy.addr, "unknown.org", "/").await;
    assert_proxy_error(&reply, StatusCode::NOT_FOUND);
    let hits = r.shop.hits() + r.shadow.hits() + r.wild.hits() + r.api.hits();
    assert_eq!(hits, 0);
}

async fn upstream_connect_failure_is_502(path: H1Path) {
    let dead = support::config_text::dead_addr().await;
    let config = [
        listener_on(path),
        route("web", "", "", &[backend("blue", None, &[dead])]),
    ]
    .concat();
    let proxy = TestProxy::start(&config).await;

    let reply = get(proxy.addr, "app.test", "/").await;

    assert_proxy_error(&reply, StatusCode::BAD_GATEWAY);
}

async fn upstream_response_headers_timeout_is_504(path: H1Path) {
    let slow = Origin::new("slow").start().await;
    let config = [
        listener_on(path),
        timeouts(&[("response_headers", "300ms")]),
        route("web", "", "", &[backend("slow", None, &[slow.addr])]),
    ]
    .concat();
    let proxy = TestProxy::start(&config).await;

    let started = Instant::now();
    let reply = get(proxy.addr, "app.test", "/slow/2000").await;

    assert_proxy_error(&reply, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "504 came after {:?}, i.e. the proxy waited for the slow backend",
        started.elapsed()
    );
}

async fn backend_without_endpoints_is_503(path: H1Path) {
    let config = [
        listener_on(path),
        route("web", "", "", &[backend("blue", None, &[])]),
    ]
    .concat();
    let proxy = TestProxy::start(&config).await;

    let reply = get(proxy.addr, "app.test", "/").await;

    assert_proxy_error(&reply, StatusCode::SERVICE_UNAVAILABLE);
}

async fn backend_status_codes_pass_through(path: H1Path) {
    let blue = Origin::new("blue").start().await;
    let proxy = TestProxy::start(&single_backend_config_on(
        &listener_on(path),
        "blue",
        &[&blue],
    ))
    .await;

    for code in [201, 404, 500, 503] {
        let reply = get(proxy.addr, "app.test", &format!("/status/{code}")).await;
        assert_eq!(reply.status.as_u16(), code);
        assert_eq!(
            reply.backend().as_deref(),
            Some("blue"),
            "status {code} came from the backend"
        );
        assert_eq!(reply.text(), "blue");
    }
}

async fn connect_failure_is_retried_on_another_endpoint(path: H1Path) {
    let dead = support::config_text::dead_addr().await;
    let blue = Origin::new("blue").start().await;
    let config = [
        listener_on(path),
        route("web", "", "", &[backend("blue", None, &[dead, blue.addr])]),
    ]
    .concat();
    let proxy = TestProxy::start(&config).await;

    for _ in 0..10 {
        assert_routed_to(&get(proxy.addr, "app.test", "/").await, "blue");
    }
    assert_eq!(blue.hits(), 10);
}

on_both_paths!(
    header_routes_take_the_requests_that_carry_their_headers,
    exact_host_selects_its_route,
    host_match_ignores_case,
    host_header_with_port_matches_the_host,
    wildcard_host_matches_any_subdomain,
    wildcard_host_does_not_match_the_apex,
    path_prefix_is_a_plain_string_prefix,
    first_matching_route_wins,
    no_matching_route_is_404_plain_text,
    upstream_connect_failure_is_502,
    upstream_response_headers_timeout_is_504,
    backend_without_endpoints_is_503,
    backend_status_codes_pass_through,
    connect_failure_is_retried_on_another_endpoint,
);
