//! Admin API bodies: arbitrary bytes as JSON, then, when they deserialize into
//! the body types of `PUT .../weights`, `POST .../promote` and
//! `POST .../rollback`, through the same state changes the admin API makes.
//!
//! The body types are private to `sluicegate::control::admin`; these mirror them
//! (same fields, `deny_unknown_fields`) until they are exposed. After every
//! accepted change the route's weights still sum to 100 %.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use sluicegate::config::{Config, Format, TOTAL_WEIGHT};
use sluicegate::control::history::{Source, WeightMap};
use sluicegate::control::State;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct WeightsBody {
    weights: WeightMap,
    reason: Option<String>,
    if_revision: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PromoteBody {
    backend: String,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to_revision: Option<u64>,
}

const CONFIG: &str = r#"
[[listeners]]
addr = "127.0.0.1:0"

[[routes]]
name = "web"
  [[routes.backends]]
  name = "blue"
  weight = 90
  endpoints = ["127.0.0.1:1"]
  [[routes.backends]]
  name = "green"
  weight = 10
  endpoints = ["127.0.0.1:2"]
"#;

static STATE: LazyLock<State> = LazyLock::new(|| {
    let config = Config::parse(CONFIG, "fuzz.toml", Format::Toml).expect("fuzz config is valid");
    State::new(config)
});

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<serde_json::Value>(data);
    let state = &*STATE;
    if let Ok(body) = serde_json::from_slice::<WeightsBody>(data) {
        let reason = body.reason.unwrap_or_default();
        if state
            .set_weights(
                "web",
                &body.weights,
                body.if_revision,
                Source::Admin,
                &reason,
            )
            .is_ok()
        {
            assert_sums_to_100(state);
        }
    }
    if let Ok(body) = serde_json::from_slice::<PromoteBody>(data) {
        let reason = body.reason.unwrap_or_default();
        if state.promote("web", &body.backend, &reason).is_ok() {
            assert_sums_to_100(state);
        }
    }
    if let Ok(body) = serde_json::from_slice::<RollbackBody>(data) {
        if state.rollback("web", body.to_revision).is_ok() {
            assert_sums_to_100(state);
        }
    }
});

fn assert_sums_to_100(state: &State) {
    let snapshot = state.snapshot_full();
    let route = snapshot.route("web").expect("route web");
    let total: u32 = route.backends.iter().map(|b| b.weight.0).sum();
    assert_eq!(total, TOTAL_WEIGHT, "weights sum to {total} basis points");
}
