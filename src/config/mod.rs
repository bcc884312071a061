//! Validated runtime configuration.
//!
//! The file is read into the raw types of [`file`], then converted once into the
//! types below. Conversion collects *every* error, each naming the file, line,
//! column and field, so `sluicegate check` shows all problems in one run and a
//! reload with a bad file changes nothing.

mod duration;
pub mod file;
mod memo;
pub mod pem;
pub mod schema;
mod source;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

pub use duration::{DURATION_PATTERN, parse_duration};
pub use memo::ParseMemo;
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
    /// A hash of the file's bytes as loaded, so a reload can tell whether the
    /// file changed since.
    pub source_hash: Option<u64>,
    pub listeners: Vec<ListenerConfig>,
    pub admin: AdminConfig,
    pub timeouts: Timeouts,
    /// `None` when off.
    pub access_log: Option<AccessLogConfig>,
    pub limits: Limits,
    /// Shared with the configs before and after it where a reload left the
    /// route alone ([`ParseMemo`]), and with the snapshots' routes.
    pub routes: Vec<Arc<RouteConfig>>,
    /// `[fleet]`: weights, history and canaries shared through etcd.
    pub fleet: Option<FleetConfig>,
    /// `[[notify]]`: webhooks told of every revision and canary change.
    pub notify: Vec<NotifyConfig>,
}

/// One header a route's `match.headers` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Lowercase.
    pub name: HeaderName,
    /// The exact value; `None` (`"*"` in the file): any value, present.
    pub value: Option<Vec<u8>>,
}

/// `[fleet]`: this instance's place in a fleet that shares routes' weights,
/// history and canaries through an etcd v3 cluster (docs/FLEET.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Client URLs of the etcd members.
    pub etcd: Vec<EtcdUrl>,
    /// Every key of this fleet lives under it; ends without `/`.
    pub prefix: String,
    /// Unique in the fleet.
    pub instance: String,
    pub zone: Option<String>,
    /// An instance that stops renewing its lease leaves the fleet view after this.
    pub lease_ttl: Duration,
    pub tls: Option<FleetTls>,
    /// etcd user, with the password read from `password_env` at start-up.
    pub auth: Option<FleetAuth>,
}

/// One etcd client URL: `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    pub https: bool,
    /// `host:port`.
    pub authority: String,
    pub host: String,
}

/// TLS to etcd: the CA that signs its certificates and an optional client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// etcd's user name and the variable that holds its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetAuth {
    pub username: String,
    pub password_env: String,
}

/// Bounds on what one client may use (SPEC is silent; defaults in the
/// spirit of NGINX and Envoy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open client connections over all listeners; more are closed at once.
    pub max_connections: usize,
    /// Header fields in one HTTP/1.1 request; more → 431.
    pub max_request_headers: usize,
    /// Bytes of one request's header section (HTTP/1.1 read buffer, HTTP/2
    /// header list); more → 431 or a stream reset.
    pub max_header_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 50_000,
            max_request_headers: 100,
            max_header_bytes: 64 * 1024,
            max_concurrent_streams: 256,
        }
    }
}

/// One line per request, written off the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub format: AccessLogFormat,
    /// `None` for standard output.
    pub path: Option<PathBuf>,
}

/// The shape of an access log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// NCSA common log format, then `key=value` extras.
    Common,
}

/// One data-plane listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Plain HTTP/1.1 keep-alive requests go through the fast path
    /// ([`crate::adapters::fast_path`]); `false` sends every request through hyper. Read
    /// when a connection is accepted, so a reload applies to new ones.
    pub http1_fast_path: bool,
}

/// A listener's PEM certificate chain and private key, plus more pairs picked
/// by SNI; paths resolved against the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Served to a client whose SNI name the certificate is valid for (first
    /// match in order); others get `cert`.
    pub sni: Vec<CertPair>,
    /// PEM CA certificates: clients must present a certificate they signed.
    pub client_ca: Option<PathBuf>,
}

/// One certificate chain and its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    pub token: TokenSource,
    pub state_file: Option<PathBuf>,
    /// `[[admin.tokens]]`; when not empty, `token` is unused.
    pub tokens: Vec<AdminToken>,
    /// The admin listener speaks TLS (mutual with `client_ca`).
    pub tls: Option<TlsFiles>,
}

/// One named admin token and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    /// The actor recorded for its changes.
    pub name: String,
    pub role: Role,
    /// `Env` or `File`, never `Generated`.
    pub source: TokenSource,
}

/// What an admin caller may do (SPEC §8); each role includes those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// GETs.
    Read,
    /// Also weights, promote, rollback, reset, canary actions, drain.
    Operate,
    /// Also reload.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }
}

/// Where the admin bearer token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Read from this environment variable at start-up.
    Env(String),
    /// Read from this file at start-up, and again whenever it changes (rotation).
    File(PathBuf),
    /// None configured: a random one is generated and written to a 0600 file.
    Generated,
}

/// On shutdown, how long a connection accepted a moment before may take to
/// send its first request before it is closed (both HTTP/1.1 paths).
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

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
    /// A pooled upstream connection idle longer is closed, not reused:
    /// shorter than the usual origin keep-alive (5 s in hypercorn, Node.js
    /// and many others), so sluicegate, not the origin, ends idle ones.
    pub upstream_idle: Duration,
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
            upstream_idle: Duration::from_secs(4),
        }
    }
}

/// One route: which requests it takes and how it splits them.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    pub host: Option<HostMatch>,
    /// Plain string prefix of the path, `/` matches everything.
    pub path_prefix: String,
    /// Headers the request must carry (all of them) to match.
    pub headers: Vec<HeaderMatch>,
    pub sticky: Option<Sticky>,
    pub override_header: Option<HeaderName>,
    pub override_cookie: Option<String>,
    /// Networks allowed to use the overrides; empty: everyone.
    pub override_from: Vec<IpNet>,
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
    /// A cookie sluicegate sets when the client has none, kept `max_age`.
    Cookie { name: String, max_age: Duration },
    /// A header the client sends (a user id, say).
    Header(HeaderName),
}

/// Default lifetime of the sticky cookie.
pub const STICKY_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// An IP network, `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Parses `addr/prefix` (or a bare address: one host).
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let bad = || format!("`{text}` is not an address or CIDR network");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` is inside (IPv4-mapped IPv6 compares as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A group of endpoints running one version.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub name: String,
    pub weight: Weight,
    pub endpoints: Vec<EndpointAddr>,
    pub health: Option<HealthConfig>,
    pub outlier: OutlierConfig,
    pub transport: TransportConfig,
}

/// How sluicegate speaks to a backend's endpoints, as the file says; the
/// TLS connectors are built from it later (`upstream::tls`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransportConfig {
    pub protocol: UpstreamProtocol,
    /// Client TLS settings, present when the backend has `https://` endpoints.
    pub tls: Option<TlsClientConfig>,
}

/// A backend's client TLS settings: plain data, no file read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientConfig {
    /// The CA file (`tls_ca`), resolved against the config file's folder;
    /// `None` means the system roots.
    pub ca: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    /// Sent in SNI and verified instead of each endpoint's host; a valid
    /// server name.
    pub server_name: Option<String>,
    /// Where to point an error building these settings: the `tls_ca` key
    /// when set (a CA file that cannot be read), else the backend.
    pub at: FieldAt,
    /// The certificate presented to endpoints that ask for one
    /// (`tls_client_cert` / `tls_client_key`).
    pub client_cert: Option<ClientCert>,
}

/// A backend's client certificate: the files, and where an unreadable one
/// is reported (its `tls_client_cert` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub files: CertPair,
    pub at: FieldAt,
}

/// A field of the file and its position, for errors found after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldAt {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// `routes[0].backends[1].tls_ca`.
    pub field: String,
}

impl FieldAt {
    /// `message` about this field, as `validate` would have reported it.
    pub fn error(&self, message: impl fmt::Display) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
            message: format!("{}: {message}", self.field),
        }
    }
}

/// The HTTP version spoken to upstream endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with a pool of keep-alive connections (the default).
    #[default]
    Http1,
    /// HTTP/2 over one multiplexed connection per endpoint: prior knowledge
    /// (h2c) on `http://` endpoints, ALPN `h2` on `https://` ones.
    H2,
    /// On `https://` endpoints whatever ALPN picks, h2 preferred; HTTP/1.1 in
    /// cleartext.
    Auto,
}

impl UpstreamProtocol {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::Auto => "auto",
        }
    }
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

    pub(super) fn parse(text: &str) -> Result<EndpointAddr, String> {
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
    /// Request bodies up to this many bytes are copied; larger are skipped.
    pub max_body: u64,
    pub compare: bool,
    pub max_concurrent: u32,
}

/// Mirror defaults.
pub const MIRROR_MAX_BODY: u64 = 1024 * 1024;
pub const MIRROR_MAX_CONCURRENT: u32 = 64;

/// The canary judge's default latency floor (`[routes.canary] latency_floor`).
pub const DEFAULT_LATENCY_FLOOR: Duration = Duration::from_millis(2);

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
    /// A baseline p99 below this counts as this much, so that the jitter of
    /// a fast service cannot fail a canary on the latency ratio.
    pub latency_floor: Duration,
    /// Steps (weights among `steps`) after whose pass the canary waits for
    /// an approval.
    pub approve_at: Vec<Weight>,
    /// Called before each step after the first; any answer but 2xx fails it.
    pub gates: Vec<GateConfig>,
}

/// A `[[routes.canary.gates]]` webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    pub url: WebhookUrl,
    pub timeout: Duration,
}

/// A gate's `timeout` when none is given.
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(10);

/// A `[[notify]]` receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    pub url: WebhookUrl,
    /// Revisions, canary changes, or both.
    pub revisions: bool,
    pub canary: bool,
    /// One delivery attempt's limit.
    pub timeout: Duration,
}

/// A receiver's `timeout` when none is given.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// An `http://host:port/path` a webhook is POSTed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebhookUrl {
    /// As written in the file, for logs, reasons and metric labels.
    pub text: String,
    /// `host:port` to connect to.
    pub authority: String,
    /// The `Host` header.
    pub host: String,
    /// Path and query, `/` when none.
    pub path: String,
}

impl WebhookUrl {
    /// Parses `http://host[:port][/path]`; the port defaults to 80.
    pub fn parse(text: &str) -> Result<WebhookUrl, String> {
        let rest = text.strip_prefix("http://").ok_or_else(|| {
            format!("`{text}` must be an http:// URL, like \"http://127.0.0.1:7000/hook\"")
        })?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if authority.is_empty()
            || authority.contains('@')
            || authority.contains(char::is_whitespace)
        {
            return Err(format!("`{text}` has no valid host"));
        }
        if http::uri::Authority::try_from(authority).is_err()
            || http::uri::PathAndQuery::try_from(path.as_str()).is_err()
        {
            return Err(format!("`{text}` is not a valid URL"));
        }
        let has_port = match authority.rsplit_once(':') {
            Some((_, port)) if !authority.ends_with(']') => {
                port.parse::<u16>()
                    .map_err(|_| format!("`{text}` has an invalid port"))?;
                true
            }
            _ => false,
        };
        Ok(WebhookUrl {
            text: text.to_string(),
            authority: if has_port {
                authority.to_string()
            } else {
                format!("{authority}:80")
            },
            host: authority.to_string(),
            path,
        })
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A hash of a config file's bytes, to notice a change.
pub fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
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
        Config::load_from(path, None)
    }

    /// [`Config::load`] that parses only the route tables whose text is not
    /// in `memo` (the file's last load), and keeps this load's in it: a
    /// reload of a large file that changed a few routes parses a few routes.
    pub fn load_with(path: &Path, memo: &mut ParseMemo) -> Result<Config, ConfigErrors> {
        Config::load_from(path, Some(memo))
    }

    fn load_from(path: &Path, memo: Option<&mut ParseMemo>) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: name.clone(),
                line: 1,
                column: 1,
                message: format!("cannot read file: {e}"),
            }])
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut config = Config::parse_memo(&src, &name, Format::from_path(path), dir, memo)?;
        config.resolve_paths(dir);
        config.source = Some(path.to_path_buf());
        config.source_hash = Some(content_hash(src.as_bytes()));
        Ok(config)
    }

    /// Validates `src`; `file` names it in errors. Relative paths it names
    /// (`tls_ca`) are relative to the working directory.
    pub fn parse(src: &str, file: &str, format: Format) -> Result<Config, ConfigErrors> {
        Config::parse_in(src, file, format, Path::new("."))
    }

    /// Validates `src`, resolving relative `tls_ca` paths against `dir`.
    pub fn parse_in(
        src: &str,
        file: &str,
        format: Format,
        dir: &Path,
    ) -> Result<Config, ConfigErrors> {
        Config::parse_memo(src, file, format, dir, None)
    }

    fn parse_memo(
        src: &str,
        file: &str,
        format: Format,
        dir: &Path,
        memo: Option<&mut ParseMemo>,
    ) -> Result<Config, ConfigErrors> {
        if let (Format::Toml, Some(memo)) = (format, memo)
            && let Some(mut pieces) = memo.cut(src)
        {
            let header = std::mem::take(&mut pieces.header);
            let routes = std::mem::take(&mut pieces.routes);
            let config = validate::validate_routes(header, routes, file, src, format, dir)?;
            memo.remember(pieces, &config.routes);
            return Ok(config);
        }
        let raw = validate::deserialize(src, format).map_err(|errors| {
            let located = errors.into_iter().map(|(pos, message)| ConfigError {
                file: file.to_string(),
                line: pos.line,
                column: pos.column,
                message,
            });
            ConfigErrors(located.collect())
        })?;
        validate::validate(raw, file, src, format, dir)
    }

    /// Relative file paths in the config are relative to the config file.
    fn resolve_paths(&mut self, dir: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        if let TokenSource::File(p) = &mut self.admin.token {
            resolve(p);
        }
        for token in &mut self.admin.tokens {
            if let TokenSource::File(p) = &mut token.source {
                resolve(p);
            }
        }
        let admin_tls = self.admin.tls.iter_mut();
        for tls in self
            .listeners
            .iter_mut()
            .filter_map(|l| l.tls.as_mut())
            .chain(admin_tls)
        {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
            for pair in &mut tls.sni {
                resolve(&mut pair.cert);
                resolve(&mut pair.key);
            }
            if let Some(ca) = &mut tls.client_ca {
                resolve(ca);
            }
        }
        if let Some(p) = &mut self.admin.state_file {
            resolve(p);
        }
        if let Some(p) = self.access_log.as_mut().and_then(|a| a.path.as_mut()) {
            resolve(p);
        }
    }

    /// What is allowed but unwise, one line each: `sluicegate check` prints
    /// them and start-up logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.admin.addr.ip().is_loopback() && self.admin.tls.is_none() {
            warnings.push(format!(
                "admin address {} is not loopback and has no admin.tls: the bearer token travels in clear text",
                self.admin.addr
            ));
        }
        warnings
    }

    /// The route called `name`.
    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes
            .iter()
            .find(|r| r.name == name)
            .map(AsRef::as_ref)
    }
}

/// A config for unit tests across the crate: route `web`, blue 90 / green 10
/// on loopback ports nothing listens on.
#[cfg(test)]
pub(crate) fn blue_green_90_10() -> Config {
    const TEXT: &str = r#"
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
    match Config::parse(TEXT, "test.toml", Format::Toml) {
        Ok(config) => config,
        Err(e) => panic!("the test config is invalid: {e}"),
    }
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
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn webhook_urls_are_plain_http_with_port_80_by_default() {
        let url = WebhookUrl::parse("http://hooks.example.com/a?b=1").unwrap();
        assert_eq!(
            (url.authority.as_str(), url.host.as_str(), url.path.as_str()),
            ("hooks.example.com:80", "hooks.example.com", "/a?b=1")
        );
        let url = WebhookUrl::parse("http://127.0.0.1:7000").unwrap();
        assert_eq!(
            (url.authority.as_str(), url.path.as_str()),
            ("127.0.0.1:7000", "/")
        );
        let url = WebhookUrl::parse("http://[::1]:7000/x").unwrap();
        assert_eq!(url.authority, "[::1]:7000");
        for bad in [
            "https://a/",
            "ftp://a",
            "http://",
            "http://a:99999/",
            "http://u@a/",
            "a:80",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_canary_latency_floor_defaults_to_2ms_and_is_a_duration() {
        let text = |floor: &str| {
            format!(
                r#"
[[listeners]]
addr = "127.0.0.1:0"
[[routes]]
name = "web"
backends = [{{ name = "a", weight = 100, endpoints = ["127.0.0.1:1"] }},
            {{ name = "b", weight = 0, endpoints = ["127.0.0.1:2"] }}]
canary = {{ baseline = "a", canary = "b", steps = [50, 100] {floor} }}
"#
            )
        };
        let floor = |extra: &str| {
            Config::parse(&text(extra), "t.toml", Format::Toml).map(|c| {
                c.routes[0]
                    .canary
                    .as_ref()
                    .map(|canary| canary.latency_floor)
            })
        };
        assert_eq!(floor("").unwrap(), Some(DEFAULT_LATENCY_FLOOR));
        assert_eq!(
            floor(r#", latency_floor = "0.5ms""#).unwrap(),
            Some(Duration::from_micros(500))
        );
        let errors = floor(r#", latency_floor = "fast""#)
            .unwrap_err()
            .to_string();
        assert!(errors.contains("canary.latency_floor"), "{errors}");
    }

    #[test]
    fn header_matches_are_lowercase_names_with_exact_values_or_any() {
        let text = r#"
[[listeners]]
addr = "127.0.0.1:0"
[[routes]]
name = "beta"
match = { headers = { "X-Beta" = "1", "x-tester" = "*" } }
backends = [{ name = "a", endpoints = ["127.0.0.1:1"] }]
"#;
        let config = Config::parse(text, "t.toml", Format::Toml).unwrap();
        let headers = &config.routes[0].headers;
        assert_eq!(headers[0].name.as_str(), "x-beta");
        assert_eq!(headers[0].value.as_deref(), Some(&b"1"[..]));
        assert_eq!(
            (headers[1].name.as_str(), headers[1].value.as_deref()),
            ("x-tester", None)
        );
        let bad = text.replace("X-Beta", "x beta");
        let errors = Config::parse(&bad, "t.toml", Format::Toml)
            .unwrap_err()
            .to_string();
        assert!(errors.contains("match.headers"), "{errors}");
        assert!(errors.contains("not a valid header name"), "{errors}");
    }

    #[test]
    fn duration_errors_say_what_to_write() {
        let message = |text| parse_duration(text).unwrap_err();
        assert!(
            message("1m30").contains("write 1m30s"),
            "{}",
            message("1m30")
        );
        assert!(
            message("1h30").contains("write 1h30m"),
            "{}",
            message("1h30")
        );
        assert!(message("30").contains("write 30s"), "{}", message("30"));
        assert!(message("5us").contains("below a millisecond"));
        assert!(message("2x").contains("unknown unit `x`"));
        assert!(message("1..5s").contains("not a duration"));
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
