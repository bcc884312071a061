//! Progressive delivery on the request path: sticky buckets that only move
//! users towards a growing canary, overrides that reach a version on
//! purpose, and mirroring with comparison.

pub mod support;

use std::collections::HashMap;

use http::header::{COOKIE, HOST, SET_COOKIE};
use http::{Method, Request, StatusCode};
use serde_json::Value;

use support::admin::FileProxy;
use support::body::{empty, full};
use support::client::{Reply, get, send};
use support::config_text::{LISTENER, backend, route};
use support::eventually_async;
use support::origin::{Origin, RunningOrigin};

const HOST_NAME: &str = "progressive.test";

/// Route `web` over blue and green with `extra` route lines (and tables
/// after the backends in `tables`).
fn config(blue: &str, green: &str, weights: (&str, &str), extra: &str, tables: &str) -> String {
    let blue = blue.parse().expect("blue addr");
    let green = green.parse().expect("green addr");
    format!(
        "{LISTENER}{}{tables}",
        route(
            "web",
            "",
            extra,
            &[
                backend("blue", Some(weights.0), &[blue]),
                backend("green", Some(weights.1), &[green]),
            ],
        )
    )
}

async fn get_with(proxy: &FileProxy, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(HOST, HOST_NAME);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(proxy.addr, req.body(empty()).expect("request")).await
}

fn backend_of(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.backend().expect("x-backend")
}

#[tokio::test]
async fn a_new_client_gets_a_sticky_cookie_and_keeps_its_backend() {
    let (blue, green) = (
        Origin::new("blue").start().await,
        Origin::new("green").start().await,
    );
    let extra = "sticky = { cookie = \"sg_bucket\", max_age = \"1h\" }";
    let text = config(&blue.endpoint(), &green.endpoint(), ("50", "50"), extra, "");
    let proxy = FileProxy::start(&text).await;

    let first = get_with(&proxy, "/", &[]).await;
    let cookie = first
        .headers
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a Set-Cookie for a client without one")
        .to_string();
    assert!(cookie.starts_with("sg_bucket="), "{cookie}");
    for attribute in ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(
        !cookie.contains("Secure"),
        "no Secure over plain HTTP: {cookie}"
    );
    let pair = cookie.split(';').next().expect("name=value").to_string();
    let owner = backend_of(&first);

    for _ in 0..20 {
        let reply = get_with(&proxy, "/", &[("cookie", &pair)]).await;
        assert_eq!(backend_of(&reply), owner);
        assert!(
            reply.headers.get(SET_COOKIE).is_none(),
            "cookie not rewritten"
        );
    }
}

#[tokio::test]
async fn growing_the_canary_moves_users_only_towards_it() {
    let (blue, green) = (
        Origin::new("blue").start().await,
        Origin::new("green").start().await,
    );
    let extra = "sticky = { header = \"x-user\" }";
    let text = config(&blue.endpoint(), &green.endpoint(), ("95", "5"), extra, "");
    let proxy = FileProxy::start(&text).await;
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();

    let mut before: HashMap<String, String> = HashMap::new();
    for user in &users {
        let reply = get_with(&proxy, "/", &[("x-user", user)]).await;
        before.insert(user.clone(), backend_of(&reply));
    }
    for weights in [(75.0, 25.0), (50.0, 50.0), (10.0, 90.0)] {
        let (status, body) = proxy
            .put_weights("web", &[("blue", weights.0), ("green", weights.1)])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut green_users = 0;
        for user in &users {
            let now = backend_of(&get_with(&proxy, "/", &[("x-user", user)]).await);
            let was = &before[user];
            assert!(
                now == *was || (was == "blue" && now == "green"),
                "{user} moved from {was} to {now} at {weights:?}"
            );
            green_users += usize::from(now == "green");
            before.insert(user.clone(), now);
        }
        // The hash spreads users: the green share is near its weight.
        let share = green_users as f64 / users.len() as f64 * 100.0;
        assert!(
            (share - weights.1).abs() < 15.0,
            "{share} % on green at {weights:?}"
        );
    }
}

#[tokio::test]
async fn sticky_users_fail_over_and_come_back_without_a_new_cookie() {
    let blue = RunningOrigin::switchable("blue").await;
    let green = RunningOrigin::switchable("green").await;
    let health = support::config_text::FAST_HEALTH;
    let text = format!(
        "{LISTENER}{}",
        route(
            "web",
            "",
            "sticky = { cookie = \"sg\" }",
            &[
                format!("{}{health}", backend("blue", Some("50"), &[blue.addr])),
                format!("{}{health}", backend("green", Some("50"), &[green.addr])),
            ],
        )
    );
    let proxy = FileProxy::start(&text).await;
    // Bucket 9999 is green's (the upper half).
    let cookie = ("cookie", "sg=9999");
    assert_eq!(backend_of(&get_with(&proxy, "/", &[cookie]).await), "green");

    green.set_health(500);
    eventually_async("the green user to fail over to blue", || async {
        let reply = get_with(&proxy, "/", &[cookie]).await;
        reply.status == StatusCode::OK && reply.backend().as_deref() == Some("blue")
    })
    .await;
    let reply = get_with(&proxy, "/", &[cookie]).await;
    assert!(
        reply.headers.get(SET_COOKIE).is_none(),
        "the cookie is kept"
    );

    green.set_health(200);
    eventually_async("the green user to return to green", || async {
        get_with(&proxy, "/", &[cookie]).await.backend().as_deref() == Some("green")
    })
    .await;
}

#[tokio::test]
async fn overrides_reach_a_backend_whatever_the_weights() {
    let (blue, green) = (
        Origin::new("blue").start().await,
        Origin::new("green").start().await,
    );
    let extra = "override_header = \"x-sluicegate-backend\"\noverride_cookie = \"sg_force\"";
    let text = config(&blue.endpoint(), &green.endpoint(), ("100", "0"), extra, "");
    let proxy = FileProxy::start(&text).await;

    for _ in 0..5 {
        let reply = get_with(&proxy, "/", &[("x-sluicegate-backend", "green")]).await;
        assert_eq!(backend_of(&reply), "green");
        let reply = get_with(&proxy, "/", &[(COOKIE.as_str(), "a=1; sg_force=green")]).await;
        assert_eq!(backend_of(&reply), "green");
    }
    // Unknown names are ignored: normal routing.
    let reply = get_with(&proxy, "/", &[("x-sluicegate-backend", "purple")]).await;
    assert_eq!(backend_of(&reply), "blue");
    assert_eq!(green.hits(), 10);
}

#[tokio::test]
async fn overrides_from_clients_outside_the_allow_list_are_ignored() {
    let (blue, green) = (
        Origin::new("blue").start().await,
        Origin::new("green").start().await,
    );
    let extra = "override_header = \"x-sluicegate-backend\"\noverride_from = [\"10.0.0.0/8\"]";
    let text = config(&blue.endpoint(), &green.endpoint(), ("100", "0"), extra, "");
    let proxy = FileProxy::start(&text).await;
    let reply = get_with(&proxy, "/", &[("x-sluicegate-backend", "green")]).await;
    assert_eq!(backend_of(&reply), "blue", "127.0.0.1 is not in 10.0.0.0/8");

    let allowed = text.replace("10.0.0.0/8", "127.0.0.0/8");
    proxy.write_config(&allowed);
    eventually_async("the allow-list to take 127.0.0.1", || async {
        get_with(&proxy, "/", &[("x-sluicegate-backend", "green")])
            .await
            .backend()
            .as_deref()
            == Some("green")
    })
    .await;
}

async fn mirror_view(proxy: &FileProxy) -> Value {
    let (status, view) = proxy.admin_get("/api/v1/routes/web/mirror").await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

#[tokio::test]
async fn a_mirrored_share_reaches_the_mirror_and_clients_see_only_the_primary() {
    let blue = Origin::new("blue").start().await;
    let shadow = Origin::new("shadow").start().await;
    let text = format!(
        "{LISTENER}{}\n  [routes.mirror]\n  backend = \"shadow\"\n  percent = 25\n",
        route(
            "web",
            "",
            "",
            &[
                backend("blue", Some("100"), &[blue.addr]),
                backend("shadow", Some("0"), &[shadow.addr]),
            ],
        )
    );
    let proxy = FileProxy::start(&text).await;
    for _ in 0..100 {
        let reply = get(proxy.addr, HOST_NAME, "/").await;
        assert_eq!(backend_of(&reply), "blue");
    }
    eventually_async("25 copies at the mirror", || async { shadow.hits() == 25 }).await;
    assert_eq!(blue.hits(), 100);
    eventually_async("25 outcomes counted", || async {
        mirror_view(&proxy).await["outcomes"]["match"] == 25
    })
    .await;
}

#[tokio::test]
async fn a_stalled_mirror_does_not_slow_the_client() {
    let blue = Origin::new("blue").start().await;
    // The mirror accepts connections and never answers.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stalled_addr = stalled.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = stalled.accept().await {
            open.push(stream);
        }
    });
    let text = format!(
        "{LISTENER}{}\n  [routes.mirror]\n  backend = \"shadow\"\n  percent = 100\n  max_concurrent = 2\n",
        route(
            "web",
            "",
            "",
            &[
                backend("blue", Some("100"), &[blue.addr]),
                backend("shadow", Some("0"), &[stalled_addr]),
            ],
        )
    );
    let proxy = FileProxy::start(&text).await;
    let started = std::time::Instant::now();
    for _ in 0..5 {
        let reply = get(proxy.addr, HOST_NAME, "/").await;
        assert_eq!(backend_of(&reply), "blue");
    }
    // Far below the 30 s the stalled copies wait for their answer.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Two copies hang at the mirror; the other three found the limit reached.
    eventually_async("three skipped copies", || async {
        mirror_view(&proxy).await["outcomes"]["skipped"] == 3
    })
    .await;
    held.abort();
}

#[tokio::test]
async fn large_or_streamed_bodies_are_not_mirrored() {
    let blue = Origin::new("blue").start().await;
    let shadow = Origin::new("shadow").start().await;
    let text = format!(
        "{LISTENER}{}\n  [routes.mirror]\n  backend = \"shadow\"\n  percent = 100\n  max_body = 1000\n",
        route(
            "web",
            "",
            "",
            &[
                backend("blue", Some("100"), &[blue.addr]),
                backend("shadow", Some("0"), &[shadow.addr]),
            ],
        )
    );
    let proxy = FileProxy::start(&text).await;
    let upload = |len: usize| {
        Request::builder()
            .method(Method::POST)
            .uri("/upload")
            .header(HOST, HOST_NAME)
            .body(full(vec![b'x'; len]))
            .expect("request")
    };
    let small = send(proxy.addr, upload(500)).await;
    assert_eq!(
        small.text(),
        "500",
        "the primary gets the whole buffered body"
    );
    let large = send(proxy.addr, upload(5000)).await;
    assert_eq!(large.text(), "5000");
    eventually_async("one copy and one skip", || async {
        let view = mirror_view(&proxy).await;
        view["outcomes"]["match"] == 1 && view["outcomes"]["skipped"] == 1
    })
    .await;
    assert_eq!(shadow.hits(), 1);
}

#[tokio::test]
async fn compare_records_mismatches_with_both_statuses() {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let text = format!(
        "{LISTENER}{}\n  [routes.mirror]\n  backend = \"green\"\n  percent = 100\n  compare = true\n",
        route(
            "web",
            "",
            "",
            &[
                backend("blue", Some("100"), &[blue.addr]),
                backend("green", Some("0"), &[green.addr]),
            ],
        )
    );
    let proxy = FileProxy::start(&text).await;
    // Same status, same body: /download/N is the same bytes from both.
    get(proxy.addr, HOST_NAME, "/download/5000").await;
    // Same status, different body: each fake answers with its own name.
    get(proxy.addr, HOST_NAME, "/").await;
    eventually_async("two compared copies", || async {
        let view = mirror_view(&proxy).await;
        view["outcomes"]["match"] == 1 && view["outcomes"]["mismatch"] == 1
    })
    .await;
    let view = mirror_view(&proxy).await;
    let mismatch = &view["mismatches"][0];
    assert_eq!(mismatch["method"], "GET");
    assert_eq!(mismatch["path"], "/");
    assert_eq!(mismatch["primary_status"], 200);
    assert_eq!(mismatch["mirror_status"], 200);
    assert_eq!(mismatch["body_differs"], true);

    let (status, scraped) = proxy.admin_send(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = scraped.as_str().expect("text").to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with("sluicegate_mirror_total{")
                && l.contains("backend=\"green\"")
                && l.contains("outcome=\"mismatch\"")
                && l.ends_with(" 1")),
        "{text}"
    );
    let (status, _) = proxy.admin_get("/api/v1/routes/nope/mirror").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
