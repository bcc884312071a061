//! The deployment files agree with the configs they run: a supervisor's stop
//! timeout covers sluicegate's `shutdown_delay` + `shutdown_grace`, and the
//! health checks ask the admin port the config listens on.

use std::path::Path;
use std::time::Duration;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// `shutdown_delay` + `shutdown_grace` of the config at `path`.
fn shutdown_time(path: &str) -> Duration {
    let config: toml::Value = toml::from_str(&read(path)).expect("config is TOML");
    let timeout = |key: &str| {
        config["timeouts"]
            .get(key)
            .and_then(toml::Value::as_str)
            .map(|v| humantime::parse_duration(v).expect("a duration"))
            .unwrap_or_else(|| panic!("{path}: set timeouts.{key} explicitly"))
    };
    timeout("shutdown_delay") + timeout("shutdown_grace")
}

/// The value after `key` on its line (`key: 45`, `Key=40s`).
fn value_after<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .unwrap_or_else(|| panic!("no `{key}`"))
        .trim()
}

fn seconds(value: &str) -> Duration {
    humantime::parse_duration(value)
        .or_else(|_| value.parse::<u64>().map(Duration::from_secs))
        .unwrap_or_else(|_| panic!("not a duration: {value}"))
}

#[test]
fn systemd_stop_timeout_covers_the_shutdown_delay_and_grace() {
    let unit = read("deploy/systemd/sluicegate.service");
    let stop = seconds(value_after(&unit, "TimeoutStopSec="));
    let shutdown = shutdown_time("deploy/systemd/sluicegate.toml");
    assert!(stop > shutdown, "TimeoutStopSec {stop:?} ≤ {shutdown:?}");
    assert_eq!(value_after(&unit, "Type="), "notify");
    assert!(
        value_after(&unit, "ExecStart=").ends_with("run -c /etc/sluicegate/sluicegate.toml"),
        "{unit}"
    );
}

#[test]
fn kubernetes_grace_periods_cover_the_shutdown_delay_and_grace() {
    let edge = read("deploy/kubernetes/deployment.yaml");
    let grace = seconds(value_after(&edge, "terminationGracePeriodSeconds:"));
    let shutdown = shutdown_time("deploy/kubernetes/sluicegate.toml");
    assert!(grace > shutdown, "edge: grace {grace:?} ≤ {shutdown:?}");

    let sidecar = read("deploy/kubernetes/sidecar/deployment.yaml");
    let grace = seconds(value_after(&sidecar, "terminationGracePeriodSeconds:"));
    let shutdown = shutdown_time("deploy/kubernetes/sidecar/sluicegate.toml");
    assert!(grace > shutdown, "sidecar: grace {grace:?} ≤ {shutdown:?}");
    // The app outlives sluicegate's drain, inside the grace period.
    let app_sleep = seconds(value_after(&sidecar, "seconds:"));
    assert!(app_sleep >= shutdown && app_sleep < grace, "{app_sleep:?}");
}

#[test]
fn container_health_checks_ask_readyz_on_the_admin_port_of_the_config() {
    let probe = "\"sluicegate\", \"probe\", \"http://127.0.0.1:9901/readyz\"";
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains(&format!("CMD [{probe}]")),
        "{dockerfile}"
    );
    assert!(read("docker-compose.yml").contains(&format!("[\"CMD\", {probe}]")));
    let compose: toml::Value = toml::from_str(&read("config/compose.toml")).expect("TOML");
    assert_eq!(compose["admin"]["addr"].as_str(), Some("0.0.0.0:9901"));
    for path in [
        "deploy/kubernetes/sluicegate.toml",
        "deploy/kubernetes/sidecar/sluicegate.toml",
    ] {
        let config: toml::Value = toml::from_str(&read(path)).expect("TOML");
        assert_eq!(
            config["admin"]["addr"].as_str(),
            Some("0.0.0.0:9901"),
            "{path}"
        );
    }
}
