//! Raw file types → validated [`Config`], collecting every error with its
//! position (via [`SourceMap`], built only when there is an error or an
//! `https://` backend whose TLS settings keep a position). No file is read
//! here: `tls_ca` is only resolved to a path.
//!
//! One `Checker` collects the located errors; each section of the file has
//! its own file: `server` (listeners, admin, timeouts, limits, access log),
//! `routes` (matching, sticky, overrides), `backends` (weights, endpoints,
//! transport, health, outlier), `delivery` (mirror, canary), `fleet` (`[fleet]`); `parse` reads
//! the text into raw types.

mod backends;
mod delivery;
mod fleet;
mod parse;
mod routes;
mod server;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::HeaderName;

pub(super) use parse::deserialize;
use std::sync::Arc;

use super::source::SourceMap;
use super::*;

/// A route as validation gets it: read from the file, or checked already (a
/// `[[routes]]` table with the same text as at the last load, see
/// [`crate::config::ParseMemo`]).
pub(super) enum RawRoute {
    File(Box<file::FileRoute>),
    Checked(Arc<RouteConfig>),
}

/// Converts `raw` (read from `src`, named `file`), or returns every error
/// found, in file order.
pub(super) fn validate(
    mut raw: file::FileConfig,
    file: &str,
    src: &str,
    format: Format,
    dir: &Path,
) -> Result<Config, ConfigErrors> {
    let routes = std::mem::take(&mut raw.routes);
    let routes = routes
        .into_iter()
        .map(|r| RawRoute::File(Box::new(r)))
        .collect();
    validate_routes(raw, routes, file, src, format, dir)
}

/// [`validate`] for a file whose routes come apart from the rest of it
/// (`raw.routes` is ignored); a checked route is only checked against the
/// others (its name).
pub(super) fn validate_routes(
    raw: file::FileConfig,
    routes: Vec<RawRoute>,
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
    let config = checker.config(raw, routes);
    if checker.errors.is_empty() {
        Ok(config)
    } else {
        let mut errors = checker.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(errors))
    }
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

    fn config(&mut self, raw: file::FileConfig, routes: Vec<RawRoute>) -> Config {
        let listeners = self.listeners(raw.listeners);
        let admin = self.admin(raw.admin.unwrap_or_default());
        let timeouts = self.timeouts(raw.timeouts.unwrap_or_default());
        let access_log = raw.access_log.and_then(|a| self.access_log(a));
        let limits = self.limits(raw.limits.unwrap_or_default());
        let fleet = raw.fleet.and_then(|f| self.fleet(f));
        let notify = self.notify(raw.notify);
        let mut names = HashSet::new();
        let routes = routes
            .into_iter()
            .enumerate()
            .filter_map(|(i, route)| {
                let name = match &route {
                    RawRoute::File(raw) => &raw.name,
                    RawRoute::Checked(checked) => &checked.name,
                };
                if !names.insert(name.clone()) {
                    self.error(
                        &format!("routes[{i}].name"),
                        format!("duplicate route name `{name}`"),
                    );
                }
                match route {
                    RawRoute::File(raw) => self.route(&format!("routes[{i}]"), *raw).map(Arc::new),
                    RawRoute::Checked(checked) => Some(checked),
                }
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
            fleet,
            notify,
        }
    }
}
