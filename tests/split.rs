//! Weighted split: smooth weighted round-robin in basis points is exact over a
//! full cycle, and endpoints inside one backend take turns.

pub mod support;

use std::collections::HashMap;

use support::client::{Http1Client, tally};
use support::config_text::{H1Path, listener_on, single_backend_config_on, two_backend_config_on};
use support::origin::Origin;
use support::proxy::TestProxy;

/// Sends `total` GETs for `/` over `connections` keep-alive connections in
/// parallel and counts the answers by backend.
async fn split_counts(
    proxy: &TestProxy,
    total: usize,
    connections: usize,
) -> HashMap<String, usize> {
    assert_eq!(total % connections, 0, "total must divide evenly");
    let per_connection = total / connections;
    let mut workers = Vec::new();
    for _ in 0..connections {
        let addr = proxy.addr;
        workers.push(tokio::spawn(async move {
            let mut client = Http1Client::connect(addr).await;
            let mut replies = Vec::with_capacity(per_connection);
            for _ in 0..per_connection {
                replies.push(client.get("split.test", "/").await);
            }
            tally(&replies)
        }));
    }
    let mut counts = HashMap::new();
    for worker in workers {
        for (name, n) in worker.await.expect("client task") {
            *counts.entry(name).or_insert(0) += n;
        }
    }
    counts
}

fn count(counts: &HashMap<String, usize>, name: &str) -> usize {
    counts.get(name).copied().unwrap_or(0)
}

async fn split_is_exact_at_90_10(path: H1Path) {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = TestProxy::start(&two_backend_config_on(
        &listener_on(path),
        "90",
        &blue,
        "10",
        &green,
    ))
    .await;

    let counts = split_counts(&proxy, 100, 1).await;

    assert_eq!(count(&counts, "blue"), 90, "{counts:?}");
    assert_eq!(count(&counts, "green"), 10, "{counts:?}");
    assert_eq!((blue.hits(), green.hits()), (90, 10));
}

async fn split_is_exact_at_99_99_to_0_01_over_10000_requests(path: H1Path) {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = TestProxy::start(&two_backend_config_on(
        &listener_on(path),
        "99.99",
        &blue,
        "0.01",
        &green,
    ))
    .await;

    // Exactness holds for the route's total count, whatever the interleaving.
    let counts = split_counts(&proxy, 10_000, 4).await;

    assert_eq!(count(&counts, "blue"), 9_999, "{counts:?}");
    assert_eq!(count(&counts, "green"), 1, "{counts:?}");
    assert_eq!((blue.hits(), green.hits()), (9_999, 1));
}

async fn split_is_exact_at_50_50(path: H1Path) {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = TestProxy::start(&two_backend_config_on(
        &listener_on(path),
        "50",
        &blue,
        "50",
        &green,
    ))
    .await;

    let counts = split_counts(&proxy, 100, 1).await;

    assert_eq!(count(&counts, "blue"), 50, "{counts:?}");
    assert_eq!(count(&counts, "green"), 50, "{counts:?}");
}

async fn split_at_100_0_never_sends_to_the_zero_weight_backend(path: H1Path) {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = TestProxy::start(&two_backend_config_on(
        &listener_on(path),
        "100",
        &blue,
        "0",
        &green,
    ))
    .await;

    let counts = split_counts(&proxy, 100, 2).await;

    assert_eq!(count(&counts, "blue"), 100, "{counts:?}");
    assert_eq!(count(&counts, "green"), 0, "{counts:?}");
    assert_eq!(green.hits(), 0);
}

async fn split_is_smooth_not_bursty_at_90_10(path: H1Path) {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let proxy = TestProxy::start(&two_backend_config_on(
        &listener_on(path),
        "90",
        &blue,
        "10",
        &green,
    ))
    .await;

    let mut client = Http1Client::connect(proxy.addr).await;
    let mut order = Vec::new();
    for _ in 0..100 {
        order.push(
            client
                .get("split.test", "/")
                .await
                .backend()
                .unwrap_or_default(),
        );
    }

    // Smooth WRR spreads the minority backend: one green in every ten requests.
    for (i, window) in order.chunks(10).enumerate() {
        let greens = window.iter().filter(|name| *name == "green").count();
        assert_eq!(greens, 1, "window {i} of 10 requests: {window:?}");
    }
}

async fn endpoints_of_one_backend_take_turns(path: H1Path) {
    let first = Origin::new("blue-1").start().await;
    let second = Origin::new("blue-2").start().await;
    let proxy = TestProxy::start(&single_backend_config_on(
        &listener_on(path),
        "blue",
        &[&first, &second],
    ))
    .await;

    let mut client = Http1Client::connect(proxy.addr).await;
    let mut order = Vec::new();
    for _ in 0..100 {
        let reply = client.get("split.test", "/").await;
        order.push(reply.backend().expect("x-backend header"));
    }

    assert_eq!((first.hits(), second.hits()), (50, 50), "{order:?}");
    for pair in order.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "round-robin sent two requests in a row to one endpoint: {order:?}"
        );
    }
}

async fn each_route_keeps_its_own_split_counter(path: H1Path) {
    let blue = Origin::new("blue").start().await;
    let green = Origin::new("green").start().await;
    let split = |name: &str, prefix: &str| {
        support::config_text::route(
            name,
            &format!("path_prefix = \"{prefix}\""),
            "",
            &[
                support::config_text::backend("blue", Some("90"), &[blue.addr]),
                support::config_text::backend("green", Some("10"), &[green.addr]),
            ],
        )
    };
    let config = [listener_on(path), split("a", "/a"), split("b", "/b")].concat();
    let proxy = TestProxy::start(&config).await;

    // Interleaved: a counter shared by the routes would skew each route's split.
    let mut client = Http1Client::connect(proxy.addr).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        a.push(client.get("split.test", "/a").await);
        b.push(client.get("split.test", "/b").await);
    }

    for (route, replies) in [("a", &a), ("b", &b)] {
        let counts = tally(replies);
        assert_eq!(count(&counts, "blue"), 90, "route {route}: {counts:?}");
        assert_eq!(count(&counts, "green"), 10, "route {route}: {counts:?}");
    }
}

on_both_paths!(
    split_is_exact_at_90_10,
    split_is_exact_at_99_99_to_0_01_over_10000_requests,
    split_is_exact_at_50_50,
    split_at_100_0_never_sends_to_the_zero_weight_backend,
    split_is_smooth_not_bursty_at_90_10,
    endpoints_of_one_backend_take_turns,
    each_route_keeps_its_own_split_counter,
);
