//! `[[listeners]]`, `[admin]`, `[timeouts]`, `[limits]` and `[access_log]`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::Checker;
use crate::config::*;

impl Checker<'_> {
    pub(super) fn limits(&mut self, raw: file::FileLimits) -> Limits {
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

    pub(super) fn access_log(&mut self, raw: file::FileAccessLog) -> Option<AccessLogConfig> {
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

    pub(super) fn listeners(&mut self, raw: Vec<file::FileListener>) -> Vec<ListenerConfig> {
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
                        client_ca: t.client_ca.map(PathBuf::from),
                    }),
                })
            })
            .collect()
    }

    pub(super) fn admin(&mut self, raw: file::FileAdmin) -> AdminConfig {
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
        let tokens = self.admin_tokens(raw.tokens);
        if !tokens.is_empty() && token != TokenSource::Generated {
            self.error(
                "admin.tokens",
                "set [[admin.tokens]] or admin.token_env / admin.token_file, not both",
            );
        }
        let tls = raw.tls.map(|t| TlsFiles {
            cert: PathBuf::from(t.cert),
            key: PathBuf::from(t.key),
            sni: Vec::new(),
            client_ca: t.client_ca.map(PathBuf::from),
        });
        let client_certs = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if !is_loopback(addr.ip())
            && token == TokenSource::Generated
            && tokens.is_empty()
            && !client_certs
        {
            self.error(
                "admin.addr",
                format!(
                    "admin address {addr} is not loopback: set admin.token_env, admin.token_file or [[admin.tokens]]"
                ),
            );
        }
        AdminConfig {
            addr,
            token,
            state_file: raw.state_file.map(PathBuf::from),
            tokens,
            tls,
        }
    }

    fn admin_tokens(&mut self, raw: Vec<file::FileAdminToken>) -> Vec<AdminToken> {
        let mut names = HashSet::new();
        raw.into_iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let at = |field: &str| format!("admin.tokens[{i}].{field}");
                if t.name.trim().is_empty() || t.name.chars().any(char::is_control) {
                    self.error(&at("name"), "must be a non-empty name");
                } else if !names.insert(t.name.clone()) {
                    self.error(&at("name"), format!("two tokens are called `{}`", t.name));
                }
                let role = match t.role.as_str() {
                    "read" => Role::Read,
                    "operate" => Role::Operate,
                    "admin" => Role::Admin,
                    other => {
                        self.error(
                            &at("role"),
                            format!("unknown role `{other}`: expected read, operate or admin"),
                        );
                        return None;
                    }
                };
                let source = match (t.token_env, t.token_file) {
                    (Some(var), None) => TokenSource::Env(var),
                    (None, Some(file)) => TokenSource::File(PathBuf::from(file)),
                    (Some(_), Some(_)) => {
                        self.error(&at("token_file"), "set token_env or token_file, not both");
                        return None;
                    }
                    (None, None) => {
                        self.error(&at("name"), "needs token_env or token_file");
                        return None;
                    }
                };
                Some(AdminToken {
                    name: t.name,
                    role,
                    source,
                })
            })
            .collect()
    }

    pub(super) fn timeouts(&mut self, raw: file::FileTimeouts) -> Timeouts {
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
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}
