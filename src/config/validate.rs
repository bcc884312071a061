//! Raw file types → validated [`Config`], collecting every error with its
//! position (via [`SourceMap`], built only when there is an error).

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use rustls_pki_types::ServerName;

use super::source::SourceMap;
use super::*;

/// Converts `raw` (read from `src`, named `file`), or returns every error
/// found, in file order.
pub(super) fn validate(
    raw: file::FileConfig,
    file: &str,
    src: &str,
    format: Format,
    dir: &Path,
) -> Result<Config, ConfigErrors> {
    let mut checker = Checker {
        file,
        src,
        format,
        dir,
        map: None,
        errors: Vec::new(),
    };
    let config = checker.config(raw);
    if checker.errors.is_empty() {
        Ok(config)
    } else {
        let mut errors = checker.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(errors))
    }
}

/// Parses the file into raw types; a syntax or shape error names its position
/// and the field path.
pub(super) fn deserialize(
    src: &str,
    format: Format,
) -> Result<file::FileConfig, (Position, String)> {
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

/// The transport keys of a `[[routes.backends]]`.
struct TransportFields {
    protocol: Option<String>,
    tls_ca: Option<String>,
    tls_insecure_skip_verify: Option<bool>,
    tls_server_name: Option<String>,
}

/// Collects errors while converting raw types.
struct Checker<'a> {
    file: &'a str,
    src: &'a str,
    format: Format,
    /// Relative `tls_ca` paths are resolved against this folder (not read).
    dir: &'a Path,
    /// Built at the first error: a valid file never pays for it.
    map: Option<SourceMap<'a>>,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, path: &str, message: impl fmt::Display) {
        let error = self.locate(path).error(message);
        self.errors.push(error);
    }

    /// The position of `path` in the file.
    fn locate(&mut self, path: &str) -> FieldAt {
        let (src, format) = (self.src, self.format);
        let pos = self
            .map
            .get_or_insert_with(|| SourceMap::parse(src, format))
            .locate(path);
        FieldAt {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            field: path.to_string(),
        }
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
        let access_log = raw.access_log.and_then(|a| self.access_log(a));
        let limits = self.limits(raw.limits.unwrap_or_default());
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
            source_hash: None,
            listeners,
            admin,
            timeouts,
            access_log,
            limits,
            routes,
        }
    }

    fn limits(&mut self, raw: file::FileLimits) -> Limits {
        let d = Limits::default();
        let limits = Limits {
            max_connections: raw.max_connections.unwrap_or(d.max_connections),
            max_request_headers: raw.max_request_headers.unwrap_or(d.max_request_headers),
            max_header_bytes: raw.max_header_bytes.unwrap_or(d.max_header_bytes),
            max_concurrent_streams: raw
                .max_concurrent_streams
                .unwrap_or(d.max_concurrent_streams),
        };
        for (field, value, min) in [
            ("max_connections", limits.max_connections, 1),
            ("max_request_headers", limits.max_request_headers, 1),
            ("max_header_bytes", limits.max_header_bytes, 8192),
            (
                "max_concurrent_streams",
                limits.max_concurrent_streams as usize,
                1,
            ),
        ] {
            if value < min {
                self.error(
                    &format!("limits.{field}"),
                    format!("must be at least {min}"),
                );
            }
        }
        if limits.max_header_bytes > u32::MAX as usize {
            self.error("limits.max_header_bytes", "is too large");
        }
        limits
    }

    fn access_log(&mut self, raw: file::FileAccessLog) -> Option<AccessLogConfig> {
        let format = match raw.format.as_deref() {
            None | Some("json") => AccessLogFormat::Json,
            Some("common") => AccessLogFormat::Common,
            Some(other) => {
                self.error(
                    "access_log.format",
                    format!("unknown format `{other}`: expected json or common"),
                );
                AccessLogFormat::Json
            }
        };
        let path = match raw.path.as_deref() {
            None | Some("stdout" | "-") => None,
            Some("") => {
                self.error("access_log.path", "must be `stdout` or a file path");
                None
            }
            Some(path) => Some(PathBuf::from(path)),
        };
        raw.enabled
            .unwrap_or(true)
            .then_some(AccessLogConfig { format, path })
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
                    http1_fast_path: l.http1_fast_path.unwrap_or(true),
                    tls: l.tls.map(|t| TlsFiles {
                        cert: PathBuf::from(t.cert),
                        key: PathBuf::from(t.key),
                        sni: t
                            .sni
                            .into_iter()
                            .map(|p| CertPair {
                                cert: PathBuf::from(p.cert),
                                key: PathBuf::from(p.key),
                            })
                            .collect(),
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
            upstream_idle: self.duration(
                "timeouts.upstream_idle",
                raw.upstream_idle.as_deref(),
                d.upstream_idle,
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
        let override_cookie = raw
            .override_cookie
            .and_then(|c| self.cookie_name(&format!("{path}.override_cookie"), c));
        let override_from: Vec<IpNet> = raw
            .override_from
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, net)| {
                IpNet::parse(net)
                    .map_err(|e| self.error(&format!("{path}.override_from[{i}]"), e))
                    .ok()
            })
            .collect();
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
            override_cookie,
            override_from,
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

    /// A cookie name (an RFC 9110 token), or an error at `path`.
    fn cookie_name(&mut self, path: &str, name: String) -> Option<String> {
        if !name.is_empty() && name.chars().all(is_token_char) {
            Some(name)
        } else {
            self.error(path, format!("`{name}` is not a valid cookie name"));
            None
        }
    }

    fn sticky(&mut self, path: &str, raw: file::FileSticky) -> Option<Sticky> {
        if raw.header.is_some() && raw.max_age.is_some() {
            self.error(
                &format!("{path}.max_age"),
                "max_age is for the sticky cookie, not a header",
            );
        }
        let max_age = self.duration(
            &format!("{path}.max_age"),
            raw.max_age.as_deref(),
            STICKY_MAX_AGE,
        );
        match (raw.cookie, raw.header) {
            (Some(cookie), None) => self
                .cookie_name(path, cookie)
                .map(|name| Sticky::Cookie { name, max_age }),
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
                let endpoints: Vec<EndpointAddr> = b
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
                let transport = self.transport(
                    &path,
                    TransportFields {
                        protocol: b.protocol,
                        tls_ca: b.tls_ca,
                        tls_insecure_skip_verify: b.tls_insecure_skip_verify,
                        tls_server_name: b.tls_server_name,
                    },
                    &endpoints,
                );
                BackendConfig {
                    name: b.name,
                    weight,
                    endpoints,
                    health,
                    outlier,
                    transport,
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

    /// `protocol` and the `tls_*` keys of a backend.
    fn transport(
        &mut self,
        path: &str,
        raw: TransportFields,
        endpoints: &[EndpointAddr],
    ) -> TransportConfig {
        let any_tls = endpoints.iter().any(|e| e.tls);
        let protocol = match raw.protocol.as_deref() {
            None | Some("http1") => UpstreamProtocol::Http1,
            Some("h2") => UpstreamProtocol::H2,
            Some("auto") => UpstreamProtocol::Auto,
            Some("h2c") => {
                if any_tls {
                    self.error(
                        &format!("{path}.protocol"),
                        "`h2c` is cleartext HTTP/2: use `h2` for https:// endpoints",
                    );
                }
                UpstreamProtocol::H2
            }
            Some(other) => {
                self.error(
                    &format!("{path}.protocol"),
                    format!("unknown protocol `{other}`: expected http1, h2c, h2 or auto"),
                );
                UpstreamProtocol::Http1
            }
        };
        if !any_tls {
            for (field, set) in [
                ("tls_ca", raw.tls_ca.is_some()),
                (
                    "tls_insecure_skip_verify",
                    raw.tls_insecure_skip_verify.is_some(),
                ),
                ("tls_server_name", raw.tls_server_name.is_some()),
            ] {
                if set {
                    self.error(
                        &format!("{path}.{field}"),
                        "only applies to https:// endpoints, and this backend has none",
                    );
                }
            }
            return TransportConfig {
                protocol,
                tls: None,
            };
        }
        let insecure = raw.tls_insecure_skip_verify.unwrap_or(false);
        if insecure && raw.tls_ca.is_some() {
            self.error(
                &format!("{path}.tls_insecure_skip_verify"),
                "set tls_ca or tls_insecure_skip_verify, not both",
            );
        }
        if raw.tls_server_name.is_none() {
            for (j, e) in endpoints.iter().enumerate() {
                if e.tls && ServerName::try_from(e.host.as_str()).is_err() {
                    self.error(
                        &format!("{path}.endpoints[{j}]"),
                        format!("`{}` is not a valid TLS server name", e.host),
                    );
                }
            }
        }
        let server_name = raw.tls_server_name.filter(|name| {
            let valid = ServerName::try_from(name.as_str()).is_ok();
            if !valid {
                self.error(
                    &format!("{path}.tls_server_name"),
                    format!("`{name}` is not a valid TLS server name"),
                );
            }
            valid
        });
        let at = if raw.tls_ca.is_some() {
            self.locate(&format!("{path}.tls_ca"))
        } else {
            self.locate(path)
        };
        TransportConfig {
            protocol,
            tls: Some(TlsClientConfig {
                ca: raw.tls_ca.map(|ca| self.dir.join(ca)),
                insecure_skip_verify: insecure,
                server_name,
                at,
            }),
        }
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
        let max_concurrent = raw.max_concurrent.unwrap_or(MIRROR_MAX_CONCURRENT);
        if max_concurrent == 0 {
            self.error(&format!("{path}.max_concurrent"), "must be at least 1");
        }
        Some(MirrorConfig {
            backend: known.then_some(raw.backend)?,
            percent: percent?,
            max_body: raw.max_body.unwrap_or(MIRROR_MAX_BODY),
            compare: raw.compare.unwrap_or(false),
            max_concurrent,
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
