//! The gauges of the routing state in the Prometheus exposition: weights,
//! endpoint health, canary weight, revision and build.

use std::fmt::Write;

use crate::control::Snapshot;
use crate::telemetry::{
    BACKEND_WEIGHT, BUILD_INFO, CANARY_WEIGHT, CONFIG_REVISION, ENDPOINT_HEALTHY, escape,
    gauge_header,
};

/// Appends the snapshot's gauges to `out`.
pub fn render_gauges(out: &mut String, snapshot: &Snapshot) {
    gauge_header(
        out,
        BACKEND_WEIGHT,
        "Weight of a backend in percent, desired (asked for) and effective (after failover).",
    );
    for route in &snapshot.routes {
        for backend in &route.backends {
            for (kind, weight) in [
                ("desired", backend.weight),
                ("effective", backend.effective),
            ] {
                let _ = writeln!(
                    out,
                    "{BACKEND_WEIGHT}{{route=\"{}\",backend=\"{}\",kind=\"{kind}\"}} {}",
                    escape(route.name()),
                    escape(&backend.name),
                    weight.percent()
                );
            }
        }
    }
    gauge_header(
        out,
        ENDPOINT_HEALTHY,
        "1 when an endpoint passes its checks and is not ejected.",
    );
    for route in &snapshot.routes {
        for backend in &route.backends {
            for endpoint in &backend.endpoints {
                let _ = writeln!(
                    out,
                    "{ENDPOINT_HEALTHY}{{route=\"{}\",backend=\"{}\",endpoint=\"{}\"}} {}",
                    escape(route.name()),
                    escape(&backend.name),
                    escape(&endpoint.addr.to_string()),
                    u8::from(endpoint.is_healthy())
                );
            }
        }
    }
    gauge_header(
        out,
        CANARY_WEIGHT,
        "Desired weight in percent of the canary backend of a route with [routes.canary], whoever set it.",
    );
    for route in &snapshot.routes {
        let Some(canary) = &route.config.canary else {
            continue;
        };
        if let Some(backend) = route.backend(&canary.canary) {
            let _ = writeln!(
                out,
                "{CANARY_WEIGHT}{{route=\"{}\"}} {}",
                escape(route.name()),
                backend.weight.percent()
            );
        }
    }
    gauge_header(out, CONFIG_REVISION, "The revision in force.");
    let _ = writeln!(out, "{CONFIG_REVISION} {}", snapshot.revision);
    gauge_header(
        out,
        BUILD_INFO,
        "Always 1; the version of this sluicegate binary.",
    );
    let _ = writeln!(
        out,
        "{BUILD_INFO}{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
}
