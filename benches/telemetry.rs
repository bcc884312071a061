//! The per-request cost of metrics: counters, histogram and the in-memory
//! series, recorded through the handles a snapshot holds (issue 7: no label
//! formatting or map lookup per request).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::StatusCode;
use sluicegate::telemetry::Telemetry;
use sluicegate::telemetry::stats::Series;

fn bench(c: &mut Criterion) {
    let telemetry = Telemetry::new();
    let backend = telemetry.backend("web", "blue");
    c.bench_function("metrics/record_response", |b| {
        b.iter(|| {
            backend.record(
                black_box(StatusCode::OK),
                black_box(Duration::from_micros(850)),
            )
        })
    });
    let series = Series::default();
    c.bench_function("metrics/series_record", |b| {
        b.iter(|| series.record(black_box(Duration::from_micros(850)), black_box(false)))
    });
    c.bench_function("metrics/retry_counter", |b| {
        b.iter(|| backend.record_retry())
    });
    // Scrape cost, for scale: 1,000 recorded samples folded and rendered.
    let snapshot_free = Telemetry::new();
    let metrics = snapshot_free.backend("web", "green");
    c.bench_function("metrics/upkeep_after_1000", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                metrics.record(StatusCode::OK, Duration::from_millis(3));
            }
            snapshot_free.upkeep();
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
