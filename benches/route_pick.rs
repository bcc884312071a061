//! Route match + backend pick: the per-request routing work.
//! Targets (issue 3): < 100 ns for a route with 2 backends, < 1 µs at 1000 routes.

use std::collections::HashMap;
use std::fmt::Write;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sluicegate::config::{Config, Format};
use sluicegate::control::{EndpointPool, Snapshot};
use sluicegate::telemetry::Telemetry;
use sluicegate::upstream::TlsClients;

/// `routes` routes with distinct hosts, every tenth a wildcard, 90/10 split each.
fn config(routes: usize) -> Config {
    let mut toml = String::from("[[listeners]]\naddr = \"127.0.0.1:8080\"\n");
    for i in 0..routes {
        let host = if i % 10 == 9 {
            format!("*.w{i}.example.com")
        } else {
            format!("h{i}.example.com")
        };
        let _ = write!(
            toml,
            "[[routes]]\nname = \"r{i}\"\nmatch = {{ host = \"{host}\", path_prefix = \"/\" }}\n\
             [[routes.backends]]\nname = \"blue\"\nweight = 90\nendpoints = [\"127.0.0.1:9001\"]\n\
             [[routes.backends]]\nname = \"green\"\nweight = 10\nendpoints = [\"127.0.0.1:9002\"]\n"
        );
    }
    match Config::parse(&toml, "bench.toml", Format::Toml) {
        Ok(config) => config,
        Err(e) => panic!("bench config invalid: {e}"),
    }
}

fn bench(c: &mut Criterion) {
    let pool = EndpointPool::default();
    // The routes match on host and path only; a request's headers are still looked at.
    let headers = http::HeaderMap::new();
    for routes in [1usize, 100, 1000] {
        let snapshot = Snapshot::build(
            Arc::new(config(routes)),
            &TlsClients::default(),
            1,
            &HashMap::new(),
            &pool,
            &Telemetry::new(),
        );
        // The last exact-host route: the worst case for the exact lookup.
        let last = (0..routes).rev().find(|i| i % 10 != 9).unwrap_or(0);
        let host = format!("h{last}.example.com:8080");
        c.bench_function(&format!("match_and_pick/{routes}_routes"), |b| {
            b.iter(|| {
                let route =
                    snapshot.find_route(Some(black_box(&host)), black_box("/cart/items"), &headers);
                black_box(route.and_then(|r| r.pick_backend()).map(|b| b.name.len()))
            })
        });
    }
    let snapshot = Snapshot::build(
        Arc::new(config(1000)),
        &TlsClients::default(),
        1,
        &HashMap::new(),
        &pool,
        &Telemetry::new(),
    );
    c.bench_function("match_wildcard/1000_routes", |b| {
        b.iter(|| {
            black_box(
                snapshot
                    .find_route(Some(black_box("a.w999.example.com")), "/", &headers)
                    .is_some(),
            )
        })
    });
    c.bench_function("config_parse/1000_routes", |b| {
        b.iter(|| black_box(config(1000).routes.len()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
