//! Validated runtime configuration.
//!
//! The file is read into the raw types of [`file`], then converted once into the
//! types below. Conversion collects *every* error, each naming the file, line,
//! column and field, so `sluicegate check` shows all problems in one run and a
//! reload with a bad file changes nothing.

pub mod file;
mod source;

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;

use source::SourceMap;
pub use source::{Format, Position};

/// Weights are kept in basis points: 10,000 is 100 %, 1 is 0.01 %.
pub const TOTAL_WEIGHT: u32 = 10_000;

/// Default admin listener address (SPEC §2).
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9901";

/// A backend's share in basis points (0.01 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Weight(pub u32);

impl Weight {
    /// The whole route.
    pub const FULL: Weight = Weight(TOTAL_WEIGHT);

    /// Converts a percentage with at most two decimals (`12.5`, `0.01`).
    pub fn from_percent(percent: f64) -> Result<Weight, String> {
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return Err(format!("must be between 0 and 100, got {percent}"));
        }
        let basis_points = (percent * 100.0).round();
        if (percent * 100.0 - basis_points).abs() > 1e-6 {
            return Err(format!("at most two decimals (0.01 %), got {percent}"));
        }
        // In range 0..=10_000 after the checks above.
        Ok(Weight(basis_points as u32))
    }

    /// The weight as a percentage.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole}"),
            f2 if f2 % 10 == 0 => write!(f, "{whole}.{}", f2 / 10),
            f2 => write!(f, "{whole}.{f2:02}"),
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, for reloads; `None` when built in code (demo).
    pub source: Option<PathBuf>,
    pub listeners: Vec<ListenerConfig>,
    pub admin: AdminConfig,
    pub timeouts: Timeouts,
    pub routes: Vec<RouteConfig>,
}

/// One data-plane listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
}

/// PEM certificate chain and private key, paths resolved against the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    pub token: TokenSource,
    pub state_file: Option<PathBuf>,
}

/// Where the admin bearer token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Read from this environment variable at start-up.
    Env(String),
    /// Read from this file at start-up.
    File(PathBuf),
    /// None configured: a random one is generated and written to a 0600 file.
    Generated,
}

/// Time limits, all with defaults (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a TCP connection to an upstream endpoint.
    pub connect: Duration,
    /// From the request being sent until the upstream's response headers.
    pub response_headers: Duration,
    /// An idle client keep-alive connection is closed after this long.
    pub client_idle: Duration,
    /// A client must send a request's headers within this time.
    pub client_headers: Duration,
    /// On shutdown, in-flight requests get this long to finish.
    pub shutdown_grace: Duration,
    /// On shutdown, `/readyz` answers 503 this long before listeners close.
    pub shutdown_delay: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            response_headers: Duration::from_secs(30),
            client_idle: Duration::from_secs(60),
            client_headers: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
        }
    }
}

/// One route: which requests it takes and how it splits them.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub host: Option<HostMatch>,
    /// Plain string prefix of the path, `/` matches everything.
    pub path_prefix: String,
    pub sticky: Option<Sticky>,
    pub override_header: Option<HeaderName>,
    pub failover: bool,
    pub retries: u32,
    pub backends: Vec<BackendConfig>,
    pub mirror: Option<MirrorConfig>,
    pub canary: Option<CanaryConfig>,
}

impl RouteConfig {
    /// The index of the backend called `name`.
    pub fn backend_index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }
}

/// How a route matches the Host header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `shop.example.com`, compared without case and without port.
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (stored with the dot).
    Suffix(String),
}

impl HostMatch {
    /// Whether `host` (lower-case, without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(name) => host.eq_ignore_ascii_case(name),
            HostMatch::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

/// What keeps a client on one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Cookie(String),
    Header(HeaderName),
}

/// A group of endpoints running one version.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    pub weight: Weight,
    pub endpoints: Vec<EndpointAddr>,
    pub health: Option<HealthConfig>,
    pub outlier: OutlierConfig,
}

/// Passive ejection: an endpoint that fails `consecutive_failures` times in a
/// row (connect errors, resets, 5xx) is taken out for `base_ejection`, doubled
/// on each repeat up to `max_ejection`. 0 failures turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
        }
    }
}

/// `host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointAddr {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl EndpointAddr {
    /// `host:port`, as sent in the pool key and logs.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn parse(text: &str) -> Result<EndpointAddr, String> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else if text.contains("://") {
            return Err(format!(
                "`{text}`: only http:// and https:// endpoints are supported"
            ));
        } else {
            (false, text)
        };
        let rest = rest.trim_end_matches('/');
        let bad = || format!("`{text}` is not host:port");
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, port) = v6.split_once("]:").ok_or_else(bad)?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            (host, port)
        } else {
            rest.rsplit_once(':').ok_or_else(bad)?
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !valid_host {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(format!("`{text}`: port 0 is not a valid endpoint port"));
        }
        Ok(EndpointAddr {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            write!(f, "https://{}", self.authority())
        } else {
            f.write_str(&self.authority())
        }
    }
}

/// Active health check of every endpoint of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

/// Shadow traffic to one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    pub backend: String,
    pub percent: Weight,
}

/// Automated progressive delivery of `canary` next to `baseline`.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryConfig {
    pub baseline: String,
    pub canary: String,
    pub steps: Vec<Weight>,
    pub interval: Duration,
    pub min_requests: u64,
    pub max_error_rate: f64,
    pub max_p99_ratio: f64,
}

/// One problem in a config file, printed as `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates `path` (TOML, or YAML for `.yaml`/`.yml`).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: name.clone(),
                line: 1,
                column: 1,
                message: format!("cannot read file: {e}"),
            }])
        })?;
        let mut config = Config::parse(&src, &name, Format::from_path(path))?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Validates `src`; `file` names it in errors.
    pub fn parse(src: &str, file: &str, format: Format) -> Result<Config, ConfigErrors> {
        let raw = deserialize(src, format).map_err(|(pos, message)| {
            ConfigErrors(vec![ConfigError {
                file: file.to_string(),
                line: pos.line,
                column: pos.column,
                message,
            }])
        })?;
        let mut checker = Checker {
            file,
            src,
            format,
            map: None,
            errors: Vec::new(),
        };
        let config = checker.config(raw);
        if checker.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(checker.errors))
        }
    }

    /// Relative file paths in the config are relative to the config file.
    fn resolve_paths(&mut self, dir: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        for listener in &mut self.listeners {
            if let Some(tls) = &mut listener.tls {
                resolve(&mut tls.cert);
                resolve(&mut tls.key);
            }
        }
        if let TokenSource::File(p) = &mut self.admin.token {
            resolve(p);
        }
        if let Some(p) = &mut self.admin.state_file {
            resolve(p);
        }
    }

    /// The route called `name`.
    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// Parses the file into raw types; a syntax or shape error names its position
/// and the field path.
fn deserialize(src: &str, format: Format) -> Result<file::FileConfig, (Position, String)> {
    match format {
        Format::Toml => {
            let located = |e: &toml::de::Error| {
                e.span().map_or(Position { line: 1, column: 1 }, |s| {
                    Position::of_offset(src, s.start)
                })
            };
            let de = toml::de::Deserializer::parse(src)
                .map_err(|e| (located(&e), e.message().trim().to_string()))?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let message = inner.message().trim().to_string();
                let message = if path == "." {
                    message
                } else {
                    format!("{path}: {message}")
                };
                (located(&inner), message)
            })
        }
        Format::Yaml => {
            if src.trim().is_empty() {
                return Ok(file::FileConfig::default());
            }
            serde_saphyr::from_str(src).map_err(|e| {
                let pos = e
                    .location()
                    .map_or(Position { line: 1, column: 1 }, |l| Position {
                        line: usize::try_from(l.line()).unwrap_or(1).max(1),
                        column: usize::try_from(l.column()).unwrap_or(1).max(1),
                    });
                (pos, yaml_message(&e.to_string()))
            })
        }
    }
}

/// The first line of a serde-saphyr message without its own
/// `error: line L column C: ` prefix (we print the position ourselves).
fn yaml_message(text: &str) -> String {
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    let first = first.strip_prefix("error:").map_or(first, str::trim);
    let without_position = first
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
        .map_or(first, |(_, message)| message);
    without_position.to_string()
}

/// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like \"250ms\", \"2s\" or \"1m\""))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{text}` has no valid unit (use ms, s, m or h), e.g. \"250ms\", \"2s\", \"1m\""
            ));
        }
    };
    if seconds <= 0.0 || seconds.is_nan() || seconds > 86_400.0 * 365.0 {
        return Err(format!("`{text}` must be more than 0 and at most a year"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Collects errors while converting raw types.
struct Checker<'a> {
    file: &'a str,
    src: &'a str,
    format: Format,
    /// Built at the first error: a valid file never pays for it.
    map: Option<SourceMap<'a>>,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, path: &str, message: impl fmt::Display) {
        let (src, format) = (self.src, self.format);
        let pos = self
            .map
            .get_or_insert_with(|| SourceMap::parse(src, format))
            .locate(path);
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            message: format!("{path}: {message}"),
        });
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        match value.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.error(path, e);
                default
            }
        }
    }

    fn socket_addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    path,
                    format!("`{text}` is not an IP:port address like \"0.0.0.0:8080\""),
                );
                None
            }
        }
    }

    fn header_name(&mut self, path: &str, text: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(text.as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.error(path, format!("`{text}` is not a valid header name"));
                None
            }
        }
    }

    fn config(&mut self, raw: file::FileConfig) -> Config {
        let listeners = self.listeners(raw.listeners);
        let admin = self.admin(raw.admin.unwrap_or_default());
        let timeouts = self.timeouts(raw.timeouts.unwrap_or_default());
        let mut names = HashSet::new();
        let routes = raw
            .routes
            .into_iter()
            .enumerate()
            .filter_map(|(i, route)| {
                let path = format!("routes[{i}]");
                if !names.insert(route.name.clone()) {
                    self.error(
                        &format!("{path}.name"),
                        format!("duplicate route name `{}`", route.name),
                    );
                }
                self.route(&path, route)
            })
            .collect();
        Config {
            source: None,
            listeners,
            admin,
            timeouts,
            routes,
        }
    }

    fn listeners(&mut self, raw: Vec<file::FileListener>) -> Vec<ListenerConfig> {
        if raw.is_empty() {
            self.error(
                "listeners",
                "at least one [[listeners]] with an addr is needed",
            );
        }
        let mut seen = HashSet::new();
        raw.into_iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let path = format!("listeners[{i}].addr");
                let addr = self.socket_addr(&path, &l.addr)?;
                if !seen.insert(addr) {
                    self.error(&path, format!("address {addr} is used by two listeners"));
                }
                Some(ListenerConfig {
                    addr,
                    tls: l.tls.map(|t| TlsFiles {
                        cert: PathBuf::from(t.cert),
                        key: PathBuf::from(t.key),
                    }),
                })
            })
            .collect()
    }

    fn admin(&mut self, raw: file::FileAdmin) -> AdminConfig {
        let addr = raw
            .addr
            .as_deref()
            .and_then(|a| self.socket_addr("admin.addr", a))
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901)));
        let token = match (raw.token_env, raw.token_file) {
            (Some(_), Some(_)) => {
                self.error("admin.token_file", "set token_env or token_file, not both");
                TokenSource::Generated
            }
            (Some(var), None) => TokenSource::Env(var),
            (None, Some(file)) => TokenSource::File(PathBuf::from(file)),
            (None, None) => TokenSource::Generated,
        };
        if !is_loopback(addr.ip()) && token == TokenSource::Generated {
            self.error(
                "admin.addr",
                format!(
                    "admin address {addr} is not loopback: set admin.token_env or admin.token_file"
                ),
            );
        }
        AdminConfig {
            addr,
            token,
            state_file: raw.state_file.map(PathBuf::from),
        }
    }

    fn timeouts(&mut self, raw: file::FileTimeouts) -> Timeouts {
        let d = Timeouts::default();
        Timeouts {
            connect: self.duration("timeouts.connect", raw.connect.as_deref(), d.connect),
            response_headers: self.duration(
                "timeouts.response_headers",
                raw.response_headers.as_deref(),
                d.response_headers,
            ),
            client_idle: self.duration(
                "timeouts.client_idle",
                raw.client_idle.as_deref(),
                d.client_idle,
            ),
            client_headers: self.duration(
                "timeouts.client_headers",
                raw.client_headers.as_deref(),
                d.client_headers,
            ),
            shutdown_grace: self.duration(
                "timeouts.shutdown_grace",
                raw.shutdown_grace.as_deref(),
                d.shutdown_grace,
            ),
            shutdown_delay: self.duration(
                "timeouts.shutdown_delay",
                raw.shutdown_delay.as_deref(),
                d.shutdown_delay,
            ),
        }
    }

    fn route(&mut self, path: &str, raw: file::FileRoute) -> Option<RouteConfig> {
        let errors_before = self.errors.len();
        if raw.name.is_empty() || raw.name.contains(['/', ' ']) {
            self.error(
                &format!("{path}.name"),
                format!(
                    "`{}` is not a valid route name (non-empty, no '/' or spaces)",
                    raw.name
                ),
            );
        }
        let matcher = raw.matcher.unwrap_or_default();
        let host = matcher
            .host
            .as_deref()
            .and_then(|h| self.host_match(&format!("{path}.match.host"), h));
        let path_prefix = matcher.path_prefix.unwrap_or_else(|| "/".to_string());
        if !path_prefix.starts_with('/') {
            self.error(
                &format!("{path}.match.path_prefix"),
                format!("`{path_prefix}` must start with '/'"),
            );
        }
        let sticky = raw
            .sticky
            .and_then(|s| self.sticky(&format!("{path}.sticky"), s));
        let override_header = raw
            .override_header
            .as_deref()
            .and_then(|h| self.header_name(&format!("{path}.override_header"), h));
        let retries = raw.retries.unwrap_or(2);
        if retries > 10 {
            self.error(
                &format!("{path}.retries"),
                format!("{retries} is more than 10"),
            );
        }
        let backends = self.backends(path, raw.backends);
        let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
        let mirror = raw
            .mirror
            .and_then(|m| self.mirror(&format!("{path}.mirror"), m, &names));
        let canary = raw
            .canary
            .and_then(|c| self.canary(&format!("{path}.canary"), c, &names));
        (self.errors.len() == errors_before).then(|| RouteConfig {
            name: raw.name,
            host,
            path_prefix,
            sticky,
            override_header,
            failover: raw.failover.unwrap_or(true),
            retries,
            backends,
            mirror,
            canary,
        })
    }

    fn host_match(&mut self, path: &str, host: &str) -> Option<HostMatch> {
        let lower = host.to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            && !name.starts_with('.')
            && !name.ends_with('.');
        if !valid {
            self.error(
                path,
                format!("`{host}` is not a host name or a `*.example.com` wildcard"),
            );
            return None;
        }
        Some(if wild {
            HostMatch::Suffix(format!(".{name}"))
        } else {
            HostMatch::Exact(name.to_string())
        })
    }

    fn sticky(&mut self, path: &str, raw: file::FileSticky) -> Option<Sticky> {
        match (raw.cookie, raw.header) {
            (Some(cookie), None) if !cookie.is_empty() && cookie.chars().all(is_token_char) => {
                Some(Sticky::Cookie(cookie))
            }
            (Some(cookie), None) => {
                self.error(path, format!("`{cookie}` is not a valid cookie name"));
                None
            }
            (None, Some(header)) => self.header_name(path, &header).map(Sticky::Header),
            _ => {
                self.error(path, "set exactly one of `cookie` or `header`");
                None
            }
        }
    }

    fn backends(&mut self, route: &str, raw: Vec<file::FileBackend>) -> Vec<BackendConfig> {
        if raw.is_empty() {
            self.error(
                &format!("{route}.backends"),
                "a route needs at least one [[routes.backends]]",
            );
            return Vec::new();
        }
        let single = raw.len() == 1;
        let count = raw.len();
        let mut seen = HashSet::new();
        let mut total: u32 = 0;
        let mut all_weights_valid = true;
        let backends: Vec<BackendConfig> = raw
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let path = format!("{route}.backends[{i}]");
                if b.name.is_empty() || b.name.contains(['/', ' ', '=']) {
                    self.error(
                        &format!("{path}.name"),
                        format!(
                            "`{}` is not a valid backend name (non-empty, no '/', '=' or spaces)",
                            b.name
                        ),
                    );
                }
                if !seen.insert(b.name.clone()) {
                    self.error(
                        &format!("{path}.name"),
                        format!("duplicate backend name `{}` in this route", b.name),
                    );
                }
                let weight = match b.weight {
                    None if single => Weight::FULL,
                    None => {
                        all_weights_valid = false;
                        self.error(
                            &path,
                            format!(
                                "backend `{}` needs a weight: the route has {count} backends",
                                b.name
                            ),
                        );
                        Weight(0)
                    }
                    Some(w) => Weight::from_percent(w).unwrap_or_else(|e| {
                        all_weights_valid = false;
                        self.error(&format!("{path}.weight"), e);
                        Weight(0)
                    }),
                };
                total += weight.0;
                let endpoints = b
                    .endpoints
                    .iter()
                    .enumerate()
                    .filter_map(|(j, e)| match EndpointAddr::parse(e) {
                        Ok(addr) => Some(addr),
                        Err(msg) => {
                            self.error(&format!("{path}.endpoints[{j}]"), msg);
                            None
                        }
                    })
                    .collect();
                let health = b.health.map(|h| self.health(&format!("{path}.health"), h));
                let outlier = b
                    .outlier
                    .map(|o| self.outlier(&format!("{path}.outlier"), o))
                    .unwrap_or_default();
                BackendConfig {
                    name: b.name,
                    weight,
                    endpoints,
                    health,
                    outlier,
                }
            })
            .collect();
        if all_weights_valid && total != TOTAL_WEIGHT {
            self.error(
                &format!("{route}.backends[0].weight"),
                format!(
                    "the weights of this route sum to {}, they must sum to 100",
                    Weight(total)
                ),
            );
        }
        backends
    }

    fn health(&mut self, path: &str, raw: file::FileHealth) -> HealthConfig {
        let hc = HealthConfig {
            path: raw.path.unwrap_or_else(|| "/healthz".to_string()),
            interval: self.duration(
                &format!("{path}.interval"),
                raw.interval.as_deref(),
                Duration::from_secs(2),
            ),
            timeout: self.duration(
                &format!("{path}.timeout"),
                raw.timeout.as_deref(),
                Duration::from_secs(1),
            ),
            unhealthy_threshold: raw.unhealthy_threshold.unwrap_or(3),
            healthy_threshold: raw.healthy_threshold.unwrap_or(2),
        };
        if !hc.path.starts_with('/') {
            self.error(
                &format!("{path}.path"),
                format!("`{}` must start with '/'", hc.path),
            );
        }
        for (field, value) in [
            ("unhealthy_threshold", hc.unhealthy_threshold),
            ("healthy_threshold", hc.healthy_threshold),
        ] {
            if value == 0 {
                self.error(&format!("{path}.{field}"), "must be at least 1");
            }
        }
        hc
    }

    fn outlier(&mut self, path: &str, raw: file::FileOutlier) -> OutlierConfig {
        let d = OutlierConfig::default();
        let config = OutlierConfig {
            consecutive_failures: raw.consecutive_failures.unwrap_or(d.consecutive_failures),
            base_ejection: self.duration(
                &format!("{path}.base_ejection"),
                raw.base_ejection.as_deref(),
                d.base_ejection,
            ),
            max_ejection: self.duration(
                &format!("{path}.max_ejection"),
                raw.max_ejection.as_deref(),
                d.max_ejection,
            ),
        };
        if config.max_ejection < config.base_ejection {
            self.error(
                &format!("{path}.max_ejection"),
                "must not be less than base_ejection",
            );
        }
        config
    }

    fn mirror(
        &mut self,
        path: &str,
        raw: file::FileMirror,
        names: &[&str],
    ) -> Option<MirrorConfig> {
        let known = self.known_backend(&format!("{path}.backend"), &raw.backend, names);
        let percent = Weight::from_percent(raw.percent)
            .map_err(|e| self.error(&format!("{path}.percent"), e))
            .ok();
        Some(MirrorConfig {
            backend: known.then_some(raw.backend)?,
            percent: percent?,
        })
    }

    fn canary(
        &mut self,
        path: &str,
        raw: file::FileCanary,
        names: &[&str],
    ) -> Option<CanaryConfig> {
        let baseline_ok = self.known_backend(&format!("{path}.baseline"), &raw.baseline, names);
        let canary_ok = self.known_backend(&format!("{path}.canary"), &raw.canary, names);
        if baseline_ok && canary_ok && raw.baseline == raw.canary {
            self.error(
                &format!("{path}.canary"),
                "baseline and canary must be different backends",
            );
        }
        let steps_path = format!("{path}.steps");
        let mut steps = Vec::with_capacity(raw.steps.len());
        for (i, step) in raw.steps.iter().enumerate() {
            match Weight::from_percent(*step) {
                Ok(w) if w.0 == 0 => {
                    self.error(&format!("{steps_path}[{i}]"), "a step must be more than 0")
                }
                Ok(w) => {
                    if steps.last().is_some_and(|last: &Weight| *last >= w) {
                        self.error(
                            &format!("{steps_path}[{i}]"),
                            "steps must strictly increase",
                        );
                    }
                    steps.push(w);
                }
                Err(e) => self.error(&format!("{steps_path}[{i}]"), e),
            }
        }
        if steps.last() != Some(&Weight::FULL) {
            self.error(&steps_path, "steps must end at 100");
        }
        let max_error_rate = raw.max_error_rate.unwrap_or(0.01);
        if !(0.0..=1.0).contains(&max_error_rate) {
            self.error(&format!("{path}.max_error_rate"), "must be between 0 and 1");
        }
        let max_p99_ratio = raw.max_p99_ratio.unwrap_or(1.5);
        if !(max_p99_ratio.is_finite() && max_p99_ratio > 0.0) {
            self.error(&format!("{path}.max_p99_ratio"), "must be more than 0");
        }
        Some(CanaryConfig {
            baseline: raw.baseline,
            canary: raw.canary,
            steps,
            interval: self.duration(
                &format!("{path}.interval"),
                raw.interval.as_deref(),
                Duration::from_secs(60),
            ),
            min_requests: raw.min_requests.unwrap_or(100),
            max_error_rate,
            max_p99_ratio,
        })
    }

    fn known_backend(&mut self, path: &str, name: &str, names: &[&str]) -> bool {
        let known = names.contains(&name);
        if !known {
            self.error(
                path,
                format!(
                    "`{name}` is not a backend of this route (backends: {})",
                    names.join(", ")
                ),
            );
        }
        known
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// RFC 6265 cookie-name characters (an RFC 9110 token).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_basis_points() {
        assert_eq!(Weight::from_percent(90.0), Ok(Weight(9000)));
        assert_eq!(Weight::from_percent(0.01), Ok(Weight(1)));
        assert_eq!(Weight::from_percent(99.99), Ok(Weight(9999)));
        assert!(Weight::from_percent(0.001).is_err());
        assert!(Weight::from_percent(-1.0).is_err());
        assert!(Weight::from_percent(100.5).is_err());
        assert_eq!(Weight(9999).to_string(), "99.99");
        assert_eq!(Weight(1250).to_string(), "12.5");
        assert_eq!(Weight(1).to_string(), "0.01");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("2x").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn endpoints_parse() {
        let e = EndpointAddr::parse("127.0.0.1:8081").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "127.0.0.1", 8081));
        let e = EndpointAddr::parse("https://api.internal:443").unwrap();
        assert!(e.tls);
        let e = EndpointAddr::parse("[::1]:80").unwrap();
        assert_eq!(e.authority(), "[::1]:80");
        assert!(EndpointAddr::parse("127.0.0.1").is_err());
        assert!(EndpointAddr::parse("ftp://x:1").is_err());
        assert!(EndpointAddr::parse("a b:80").is_err());
    }

    #[test]
    fn wildcard_host_matches_subdomains_only() {
        let m = HostMatch::Suffix(".example.com".into());
        assert!(m.matches("a.example.com"));
        assert!(m.matches("A.B.Example.com"));
        assert!(!m.matches("example.com"));
        assert!(!m.matches("badexample.com"));
    }
}
