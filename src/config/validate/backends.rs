//! `[[routes.backends]]`: names, weights, endpoints, the transport keys
//! (`protocol`, `tls_*`; kept as plain settings, see `upstream::tls`),
//! active health checks and passive ejection.

use std::collections::HashSet;
use std::time::Duration;

use rustls_pki_types::ServerName;

use super::Checker;
use crate::config::*;

/// The transport keys of a `[[routes.backends]]`.
struct TransportFields {
    protocol: Option<String>,
    tls_ca: Option<String>,
    tls_insecure_skip_verify: Option<bool>,
    tls_server_name: Option<String>,
    tls_client_cert: Option<String>,
    tls_client_key: Option<String>,
}

impl Checker<'_> {
    pub(super) fn backends(
        &mut self,
        route: &str,
        raw: Vec<file::FileBackend>,
    ) -> Vec<BackendConfig> {
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
                        tls_client_cert: b.tls_client_cert,
                        tls_client_key: b.tls_client_key,
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
                ("tls_client_cert", raw.tls_client_cert.is_some()),
                ("tls_client_key", raw.tls_client_key.is_some()),
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
        let client_cert = self.client_cert(path, raw.tls_client_cert, raw.tls_client_key);
        TransportConfig {
            protocol,
            tls: Some(TlsClientConfig {
                ca: raw.tls_ca.map(|ca| self.dir.join(ca)),
                insecure_skip_verify: insecure,
                server_name,
                at,
                client_cert,
            }),
        }
    }

    /// `tls_client_cert` and `tls_client_key`: both or neither.
    fn client_cert(
        &mut self,
        path: &str,
        cert: Option<String>,
        key: Option<String>,
    ) -> Option<ClientCert> {
        match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ClientCert {
                files: CertPair {
                    cert: self.dir.join(cert),
                    key: self.dir.join(key),
                },
                at: self.locate(&format!("{path}.tls_client_cert")),
            }),
            (Some(_), None) => {
                self.error(
                    &format!("{path}.tls_client_cert"),
                    "needs `tls_client_key`, the private key of this certificate",
                );
                None
            }
            (None, Some(_)) => {
                self.error(
                    &format!("{path}.tls_client_key"),
                    "needs `tls_client_cert`, the certificate this key belongs to",
                );
                None
            }
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
}
