//! Prometheus metrics (SPEC §4): names in one place, handles resolved once
//! per route and backend and kept in the snapshot, so a request records with
//! a few atomic adds and no label formatting or map lookup.
//!
//! Counters and the latency histogram live in a `metrics-exporter-prometheus`
//! recorder owned by this proxy (not a process-global one, so several proxies
//! in one process keep apart). Gauges — weights, health, revision — describe
//! state, not events: they are written from the current snapshot at scrape
//! time, so they are exact and a removed route leaves nothing stale behind.
//! Open tunnels are the exception: a tunnel outlives the snapshot that opened
//! it, so its gauge lives in the recorder, held up by a [`TunnelSlot`].

pub mod access_log;
pub mod mirrors;
pub mod stats;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use http::StatusCode;
use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::telemetry::stats::Series;
use mirrors::MirrorState;

pub const REQUESTS_TOTAL: &str = "sluicegate_requests_total";
pub const REQUEST_DURATION: &str = "sluicegate_request_duration_seconds";
pub const BACKEND_WEIGHT: &str = "sluicegate_backend_weight";
pub const ENDPOINT_HEALTHY: &str = "sluicegate_endpoint_healthy";
pub const CONFIG_RELOADS: &str = "sluicegate_config_reloads_total";
pub const CONFIG_REVISION: &str = "sluicegate_config_revision";
pub const UPSTREAM_RETRIES: &str = "sluicegate_upstream_retries_total";
pub const FAILOVERS: &str = "sluicegate_failovers_total";
pub const MIRROR_TOTAL: &str = "sluicegate_mirror_total";
pub const CANARY_WEIGHT: &str = "sluicegate_canary_weight";
pub const OPEN_CONNECTIONS: &str = "sluicegate_open_connections";
pub const CONNECTIONS_REFUSED: &str = "sluicegate_connections_refused_total";
pub const TUNNELS_OPEN: &str = "sluicegate_tunnels_open";
pub const BUILD_INFO: &str = "sluicegate_build_info";
pub const NOTIFY_DROPPED: &str = "sluicegate_notify_dropped_total";

/// Latency buckets in seconds, 1 ms … 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// How often the recorder folds recorded samples into its histograms.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Status classes counted, `1xx` to `5xx`.
const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `outcome` label of `sluicegate_mirror_total`, in [`MirrorOutcome`] order.
const MIRROR_OUTCOMES: [&str; 4] = ["match", "mismatch", "error", "skipped"];

fn route_labels(route: &str, backend: &str) -> Vec<Label> {
    vec![
        Label::new("route", route.to_string()),
        Label::new("backend", backend.to_string()),
    ]
}

/// The requests and latency of responses no backend is counted for, under
/// `backend=""`. Unlike a backend's, these series appear with their first
/// response: a config whose every request finds a backend shows none.
#[derive(Debug)]
struct Unrouted {
    route: String,
    requests: [OnceLock<Counter>; 5],
    duration: OnceLock<Histogram>,
}

impl Unrouted {
    fn new(route: &str) -> Unrouted {
        Unrouted {
            route: route.to_string(),
            requests: Default::default(),
            duration: OnceLock::new(),
        }
    }

    fn record(&self, recorder: &PrometheusRecorder, status: StatusCode, elapsed: Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        let labels = || route_labels(&self.route, "");
        self.requests[class]
            .get_or_init(|| {
                let mut labels = labels();
                labels.push(Label::new("code", CODE_CLASSES[class]));
                recorder.register_counter(&Key::from_parts(REQUESTS_TOTAL, labels), &METADATA)
            })
            .increment(1);
        self.duration
            .get_or_init(|| {
                recorder.register_histogram(&Key::from_parts(REQUEST_DURATION, labels()), &METADATA)
            })
            .record(elapsed.as_secs_f64());
    }
}

/// The metrics of one proxy.
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    backends: Mutex<HashMap<(String, String), Weak<BackendMetrics>>>,
    mirrors: Mutex<HashMap<String, Arc<MirrorState>>>,
    /// Responses no route took (`route=""`), and those of routes with no
    /// backend to count them for (`backend=""`).
    no_route: Unrouted,
    no_backend: Mutex<HashMap<String, Arc<Unrouted>>>,
    reloads_ok: Counter,
    reloads_error: Counter,
    connections_refused: Counter,
    /// Client connections open now.
    open_connections: Arc<AtomicU64>,
}

/// Counts one open client connection while it lives.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicU64>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

/// Pre-resolved handles and the in-memory series of one route's backend.
#[derive(Debug)]
pub struct BackendMetrics {
    requests: [Counter; 5],
    duration: Histogram,
    retries: Counter,
    failovers: Counter,
    /// Only for the mirror backend of a route with `[routes.mirror]`.
    mirror: OnceLock<[Counter; 4]>,
    tunnels: Gauge,
    /// Requests, errors and latency over the last 15 minutes.
    pub series: Series,
    /// Attempts sent to this backend since start, and how many failed
    /// (readable: the canary judges its steps on these, so an error a retry
    /// on another backend hid from the client still counts here).
    attempts: AtomicU64,
    failed_attempts: AtomicU64,
}

/// Outcomes of a mirrored request.
#[derive(Debug, Clone, Copy)]
pub enum MirrorOutcome {
    Match = 0,
    Mismatch = 1,
    Error = 2,
    Skipped = 3,
}

impl BackendMetrics {
    /// Records a response sent to a client after `elapsed`; 5xx are errors.
    #[inline]
    pub fn record(&self, status: StatusCode, elapsed: Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.requests[class].increment(1);
        self.duration.record(elapsed.as_secs_f64());
        self.series.record(elapsed, status.is_server_error());
    }

    /// Records the outcome of one attempt sent to this backend: `failed` for
    /// a 5xx answer or an exchange that failed.
    #[inline]
    pub fn record_attempt(&self, failed: bool) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Attempts recorded since start, and how many of them failed.
    pub fn attempt_totals(&self) -> (u64, u64) {
        (
            self.attempts.load(Ordering::Relaxed),
            self.failed_attempts.load(Ordering::Relaxed),
        )
    }

    /// One more attempt on another endpoint.
    #[inline]
    pub fn record_retry(&self) {
        self.retries.increment(1);
    }

    /// This backend lost its share to failover.
    pub fn record_failover(&self) {
        self.failovers.increment(1);
    }

    /// A mirrored copy ended with `outcome`.
    pub fn record_mirror(&self, outcome: MirrorOutcome) {
        if let Some(counters) = self.mirror.get() {
            counters[outcome as usize].increment(1);
        }
    }

    /// Counts one open tunnel to this backend until the slot is dropped.
    pub fn open_tunnel(&self) -> TunnelSlot {
        self.tunnels.increment(1);
        TunnelSlot(self.tunnels.clone())
    }
}

/// Counts one open tunnel in `sluicegate_tunnels_open` while it lives, so
/// every way a tunnel ends takes it off.
#[derive(Debug)]
pub struct TunnelSlot(Gauge);

impl Drop for TunnelSlot {
    fn drop(&mut self) {
        self.0.decrement(1);
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    /// A fresh set of metrics.
    pub fn new() -> Telemetry {
        let builder = PrometheusBuilder::new();
        let builder = match builder
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &LATENCY_BUCKETS)
        {
            Ok(builder) => builder,
            // Only fails on an empty bucket list, which LATENCY_BUCKETS is not.
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        for (name, help) in [
            (
                REQUESTS_TOTAL,
                "Responses sent to clients, by route, backend and status class.",
            ),
            (
                UPSTREAM_RETRIES,
                "Attempts repeated on another endpoint after a failure.",
            ),
            (
                FAILOVERS,
                "Times a backend lost its share because no endpoint was available.",
            ),
            (MIRROR_TOTAL, "Mirrored (shadow) requests by outcome."),
            (
                CONFIG_RELOADS,
                "Config file reloads, applied (ok) or refused (error).",
            ),
            (
                CONNECTIONS_REFUSED,
                "Client connections closed at once because max_connections were open.",
            ),
            (
                NOTIFY_DROPPED,
                "[[notify]] events not delivered: the receiver's queue was full or every attempt failed.",
            ),
        ] {
            recorder.describe_counter(name.into(), None, help.into());
        }
        recorder.describe_gauge(
            TUNNELS_OPEN.into(),
            None,
            "Upgraded connections (WebSocket and other HTTP/1.1 upgrades, RFC 8441) open now."
                .into(),
        );
        recorder.describe_histogram(
            REQUEST_DURATION.into(),
            Some(metrics::Unit::Seconds),
            "Time from a request's arrival to its response headers.".into(),
        );
        let handle = recorder.handle();
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        Telemetry {
            reloads_ok: counter(CONFIG_RELOADS, vec![Label::new("result", "ok")]),
            reloads_error: counter(CONFIG_RELOADS, vec![Label::new("result", "error")]),
            connections_refused: counter(CONNECTIONS_REFUSED, vec![]),
            open_connections: Arc::new(AtomicU64::new(0)),
            recorder,
            handle,
            backends: Mutex::new(HashMap::new()),
            mirrors: Mutex::new(HashMap::new()),
            no_route: Unrouted::new(""),
            no_backend: Mutex::new(HashMap::new()),
        }
    }

    /// Records a response that no backend of `route` (`None`: no route
    /// matched) is counted for.
    pub fn record_unrouted(&self, route: Option<&str>, status: StatusCode, elapsed: Duration) {
        let Some(route) = route else {
            return self.no_route.record(&self.recorder, status, elapsed);
        };
        let unrouted = {
            let mut map = match self.no_backend.lock() {
                Ok(map) => map,
                Err(poisoned) => poisoned.into_inner(),
            };
            Arc::clone(
                map.entry(route.to_string())
                    .or_insert_with(|| Arc::new(Unrouted::new(route))),
            )
        };
        unrouted.record(&self.recorder, status, elapsed);
    }

    /// The metrics of `route`'s `backend`, shared by every snapshot that has
    /// it, so counts and series carry on across reloads.
    pub fn backend(&self, route: &str, backend: &str) -> Arc<BackendMetrics> {
        let key = (route.to_string(), backend.to_string());
        let mut map = match self.backends.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        // Dead entries are dropped only when the map would grow: amortised
        // O(1) per insert (a sweep on every insert made building N new
        // entries quadratic).
        if map.len() == map.capacity() {
            map.retain(|_, weak| weak.strong_count() > 0);
        }
        let metrics = Arc::new(self.new_backend(route, backend));
        map.insert(key, Arc::downgrade(&metrics));
        metrics
    }

    /// [`Telemetry::backend`] for the backend a route mirrors to: its
    /// `sluicegate_mirror_total` series exist from now on.
    pub fn mirror_target(&self, route: &str, backend: &str) -> Arc<BackendMetrics> {
        let metrics = self.backend(route, backend);
        metrics.mirror.get_or_init(|| {
            MIRROR_OUTCOMES.map(|outcome| {
                self.labelled_counter(MIRROR_TOTAL, route, backend, ("outcome", outcome))
            })
        });
        metrics
    }

    fn labelled_counter(
        &self,
        name: &'static str,
        route: &str,
        backend: &str,
        (key, value): (&'static str, &'static str),
    ) -> Counter {
        let mut labels = route_labels(route, backend);
        labels.push(Label::new(key, value));
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn new_backend(&self, route: &str, backend: &str) -> BackendMetrics {
        let labels = || route_labels(route, backend);
        let with = |name: &'static str, key: &'static str, value: &'static str| {
            self.labelled_counter(name, route, backend, (key, value))
        };
        BackendMetrics {
            requests: CODE_CLASSES.map(|class| with(REQUESTS_TOTAL, "code", class)),
            duration: self
                .recorder
                .register_histogram(&Key::from_parts(REQUEST_DURATION, labels()), &METADATA),
            retries: self
                .recorder
                .register_counter(&Key::from_parts(UPSTREAM_RETRIES, labels()), &METADATA),
            failovers: self
                .recorder
                .register_counter(&Key::from_parts(FAILOVERS, labels()), &METADATA),
            mirror: OnceLock::new(),
            tunnels: self
                .recorder
                .register_gauge(&Key::from_parts(TUNNELS_OPEN, labels()), &METADATA),
            series: Series::default(),
            attempts: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
        }
    }

    /// The mirroring state of `route`, kept across reloads unless its
    /// concurrency limit changed.
    pub fn mirror(&self, route: &str, max_concurrent: u32) -> Arc<MirrorState> {
        let mut map = match self.mirrors.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        match map.get(route) {
            Some(state) if state.max_concurrent == max_concurrent => Arc::clone(state),
            _ => {
                let state = Arc::new(MirrorState::new(max_concurrent));
                map.insert(route.to_string(), Arc::clone(&state));
                state
            }
        }
    }

    /// A slot for a new client connection, or `None` (counted) when
    /// `max` are open already.
    /// Client connections open now.
    pub fn open_connections(&self) -> u64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    pub fn try_open_connection(&self, max: usize) -> Option<ConnectionSlot> {
        let max = max as u64;
        let opened =
            self.open_connections
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                    (open < max).then_some(open + 1)
                });
        if opened.is_ok() {
            Some(ConnectionSlot(Arc::clone(&self.open_connections)))
        } else {
            self.connections_refused.increment(1);
            None
        }
    }

    /// A config reload was applied (`ok`) or refused.
    pub fn record_reload(&self, ok: bool) {
        if ok {
            self.reloads_ok.increment(1);
        } else {
            self.reloads_error.increment(1);
        }
    }

    /// The counter of `receiver`'s dropped `[[notify]]` events.
    pub fn notify_dropped(&self, receiver: &str) -> Counter {
        let key = Key::from_parts(
            NOTIFY_DROPPED,
            vec![Label::new("receiver", receiver.to_string())],
        );
        self.recorder.register_counter(&key, &METADATA)
    }

    /// Folds recorded samples into histograms; call every [`UPKEEP_INTERVAL`].
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text exposition: counters and histograms, then the
    /// gauges `gauges` writes (the routing state's), then process metrics.
    pub fn render(&self, gauges: impl FnOnce(&mut String)) -> String {
        let mut out = self.handle.render();
        gauges(&mut out);
        gauge_header(&mut out, OPEN_CONNECTIONS, "Client connections open now.");
        let _ = writeln!(
            out,
            "{OPEN_CONNECTIONS} {}",
            self.open_connections.load(Ordering::Relaxed)
        );
        render_process(&mut out);
        out
    }
}

static METADATA: Metadata<'static> = Metadata::new("sluicegate", Level::INFO, None);

/// Writes the `# HELP`/`# TYPE` lines of a gauge.
pub fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// Escapes a label value (backslash, quote, newline).
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\\', '"', '\n']) {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        value.into()
    }
}

/// The standard `process_*` metrics, read from /proc on Linux.
fn render_process(out: &mut String) {
    let Some(process) = ProcessStats::read() else {
        return;
    };
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent.",
        process.cpu_seconds,
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size.",
        process.resident_bytes,
    );
    metric(
        "process_open_fds",
        "gauge",
        "Open file descriptors.",
        process.open_fds,
    );
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time since the Unix epoch.",
        process.start_time_seconds,
    );
}

struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: f64,
    open_fds: f64,
    start_time_seconds: f64,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        // Clock ticks and page size are 100 and 4096 on every Linux target
        // sluicegate is built for; reading them needs libc.
        const TICKS: f64 = 100.0;
        const PAGE: f64 = 4096.0;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which may hold spaces, in parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let (utime, stime, starttime, rss) = (field(14)?, field(15)?, field(22)?, field(24)?);
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        Some(ProcessStats {
            cpu_seconds: (utime + stime) / TICKS,
            resident_bytes: rss * PAGE,
            open_fds,
            start_time_seconds: boot + starttime / TICKS,
        })
    }
}
