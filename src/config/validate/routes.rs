//! One `[[routes]]`: its match, sticky and override keys; its backends,
//! mirror and canary are checked in their own files.

use super::Checker;
use crate::config::*;

impl Checker<'_> {
    pub(super) fn route(&mut self, path: &str, raw: file::FileRoute) -> Option<RouteConfig> {
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
        let headers = matcher
            .headers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, value)| {
                let field = format!("{path}.match.headers.{name}");
                let name = self.header_name(&field, &name.to_ascii_lowercase())?;
                let value = (value != "*").then(|| value.into_bytes());
                Some(HeaderMatch { name, value })
            })
            .collect();
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
            headers,
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
}

/// RFC 6265 cookie-name characters (an RFC 9110 token).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}
