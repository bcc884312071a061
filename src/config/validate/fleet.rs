//! `[fleet]`: etcd URLs, the key prefix, this instance's name and zone.

use std::time::Duration;

use super::Checker;
use crate::config::*;

/// `lease_ttl` when none is given.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// etcd refuses (or silently raises) shorter leases.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

impl Checker<'_> {
    pub(super) fn fleet(&mut self, raw: file::FileFleet) -> Option<FleetConfig> {
        let before = self.errors.len();
        if raw.etcd.is_empty() {
            self.error(
                "fleet.etcd",
                "needs at least one etcd client URL, like [\"http://127.0.0.1:2379\"]",
            );
        }
        let etcd: Vec<EtcdUrl> = raw
            .etcd
            .iter()
            .enumerate()
            .filter_map(|(i, url)| match etcd_url(url) {
                Ok(url) => Some(url),
                Err(message) => {
                    self.error(&format!("fleet.etcd[{i}]"), message);
                    None
                }
            })
            .collect();
        let prefix = match raw.prefix.as_deref() {
            None => "/sluicegate".to_string(),
            Some(p) if !p.starts_with('/') || p.trim_end_matches('/').is_empty() => {
                self.error(
                    "fleet.prefix",
                    format!(
                        "`{p}` must start with `/` and name something, like \"/sluicegate/prod\""
                    ),
                );
                String::new()
            }
            Some(p) => p.trim_end_matches('/').to_string(),
        };
        let instance = match raw.instance {
            Some(name) => name,
            None => host_name(),
        };
        if !is_key_part(&instance) {
            self.error(
                "fleet.instance",
                format!("`{instance}` must be non-empty, without `/` or spaces"),
            );
        }
        if let Some(zone) = raw.zone.as_deref()
            && !is_key_part(zone)
        {
            self.error(
                "fleet.zone",
                format!("`{zone}` must be non-empty, without `/` or spaces"),
            );
        }
        let lease_ttl = self.duration(
            "fleet.lease_ttl",
            raw.lease_ttl.as_deref(),
            DEFAULT_LEASE_TTL,
        );
        if lease_ttl < MIN_LEASE_TTL {
            self.error(
                "fleet.lease_ttl",
                format!("must be at least {}s", MIN_LEASE_TTL.as_secs()),
            );
        }
        let tls = raw.tls.map(|t| {
            if t.cert.is_some() != t.key.is_some() {
                self.error("fleet.tls", "`cert` and `key` go together");
            }
            FleetTls {
                ca: t.ca.map(|p| self.dir.join(p)),
                cert: t.cert.map(|p| self.dir.join(p)),
                key: t.key.map(|p| self.dir.join(p)),
            }
        });
        if tls.is_some() && etcd.iter().any(|u| !u.https) {
            self.error(
                "fleet.tls",
                "is set, but some `etcd` URLs are http://: use https:// for all of them",
            );
        }
        let auth = match (raw.username, raw.password_env) {
            (Some(username), Some(password_env)) => Some(FleetAuth {
                username,
                password_env,
            }),
            (None, None) => None,
            _ => {
                self.error(
                    "fleet.username",
                    "`username` and `password_env` go together",
                );
                None
            }
        };
        (self.errors.len() == before).then_some(FleetConfig {
            etcd,
            prefix,
            instance,
            zone: raw.zone,
            lease_ttl,
            tls,
            auth,
        })
    }
}

fn is_key_part(text: &str) -> bool {
    !text.is_empty() && !text.contains(['/', ' ', '\t', '\n'])
}

/// `http://host:port` or `https://host:port`, nothing after the port.
fn etcd_url(text: &str) -> Result<EtcdUrl, String> {
    let (https, rest) = if let Some(rest) = text.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = text.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(format!(
            "`{text}` must be an http:// or https:// URL like \"http://127.0.0.1:2379\""
        ));
    };
    let authority = rest.trim_end_matches('/');
    let bad = || format!("`{text}` must be scheme://host:port, with no path");
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || authority.contains('/') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(EtcdUrl {
        https,
        authority: authority.to_string(),
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    })
}

/// The machine's host name, the default instance name.
fn host_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "sluicegate".to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::etcd_url;

    #[test]
    fn etcd_urls_are_scheme_host_and_port() {
        let url = etcd_url("http://127.0.0.1:2379").unwrap();
        assert_eq!(
            (url.https, url.authority.as_str()),
            (false, "127.0.0.1:2379")
        );
        assert!(etcd_url("https://etcd-1:2379/").unwrap().https);
        assert_eq!(etcd_url("http://[::1]:2379").unwrap().host, "::1");
        for bad in [
            "127.0.0.1:2379",
            "http://etcd",
            "http://etcd:x",
            "http://a:1/v3",
            "unix:///s",
        ] {
            assert!(etcd_url(bad).is_err(), "{bad}");
        }
    }
}
