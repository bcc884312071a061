//! Client TLS to `https://` endpoints: verified against the system roots, or
//! against a backend's own CA file (`tls_ca`), or not at all when
//! `tls_insecure_skip_verify` says so; with `tls_client_cert` /
//! `tls_client_key`, a client certificate for endpoints that ask for one.
//!
//! The config holds these settings as plain data; [`TlsClients::prepare`]
//! reads the CA files and builds the connectors when a file is loaded or
//! reloaded (before the change is applied), so an unreadable CA refuses the
//! file with an error located at its `tls_ca` key and the running config stays.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::pem;
use crate::config::{
    CertPair, Config, ConfigError, ConfigErrors, TlsClientConfig, TransportConfig,
    UpstreamProtocol, content_hash,
};

/// How sluicegate speaks to a backend's endpoints: the protocol and, for
/// `https://` endpoints, the built TLS client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Transport {
    pub protocol: UpstreamProtocol,
    /// Client TLS, present when the backend has `https://` endpoints.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// The TLS settings that make one client: equal settings share it.
type SettingsKey = (Option<PathBuf>, bool, Option<String>, Option<CertPair>);

fn key(settings: &TlsClientConfig) -> SettingsKey {
    (
        settings.ca.clone(),
        settings.insecure_skip_verify,
        settings.server_name.clone(),
        settings.client_cert.as_ref().map(|c| c.files.clone()),
    )
}

/// The TLS clients of every backend of one config, built once per file
/// load (CA files read then), shared by every snapshot of that config.
#[derive(Debug, Default)]
pub struct TlsClients {
    by_settings: HashMap<SettingsKey, Arc<UpstreamTls>>,
}

impl TlsClients {
    /// Reads every CA and client certificate file `config` names and builds
    /// its clients, or returns every failure located at its backend's
    /// `tls_ca` or `tls_client_cert` key.
    pub fn prepare(config: &Config) -> Result<TlsClients, ConfigErrors> {
        let mut clients = TlsClients::default();
        let mut errors = Vec::new();
        for settings in tls_settings(config) {
            let key = key(settings);
            if clients.by_settings.contains_key(&key) {
                continue;
            }
            match UpstreamTls::new(settings) {
                Ok(tls) => {
                    clients.by_settings.insert(key, Arc::new(tls));
                }
                Err(error) => errors.push(error),
            }
        }
        if errors.is_empty() {
            Ok(clients)
        } else {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(errors))
        }
    }

    /// Like [`prepare`](Self::prepare), but a client that cannot be built is
    /// logged and refuses every handshake (never cleartext instead).
    pub fn prepare_lenient(config: &Config) -> TlsClients {
        let mut clients = TlsClients::default();
        for settings in tls_settings(config) {
            clients
                .by_settings
                .entry(key(settings))
                .or_insert_with(|| Arc::new(UpstreamTls::new_or_refusing(settings)));
        }
        clients
    }

    /// The transport for a backend's `settings`; settings this set was not
    /// prepared for get a client that refuses every handshake.
    pub fn transport(&self, settings: &TransportConfig) -> Transport {
        let tls = settings.tls.as_ref().map(|tls| {
            self.by_settings.get(&key(tls)).cloned().unwrap_or_else(|| {
                tracing::warn!(ca = ?tls.ca, "TLS client settings were not prepared: building them now");
                Arc::new(UpstreamTls::new_or_refusing(tls))
            })
        });
        Transport {
            protocol: settings.protocol,
            tls,
        }
    }
}

/// The TLS settings of every backend of `config`, in file order.
fn tls_settings(config: &Config) -> impl Iterator<Item = &TlsClientConfig> {
    config
        .routes
        .iter()
        .flat_map(|r| &r.backends)
        .filter_map(|b| b.transport.tls.as_ref())
}

/// Which application protocols to offer in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    H2,
    /// `h2` first, then `http/1.1`: the server picks.
    Any,
}

/// The client TLS of one backend's settings, built when a file is loaded.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The CA file; `None` means the system roots.
    pub ca: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    /// Sent in SNI and verified instead of each endpoint's host.
    pub server_name: Option<ServerName<'static>>,
    /// A hash of the CA file's bytes, so a changed file is a new setting.
    ca_fingerprint: u64,
    /// The client certificate's files and a hash of their bytes.
    client_cert: Option<(CertPair, u64)>,
    /// Why there are none: a client built without its CA refuses handshakes.
    connectors: Result<Connectors, String>,
}

/// One connector per ALPN offer.
#[derive(Clone)]
struct Connectors {
    http1: TlsConnector,
    h2: TlsConnector,
    any: TlsConnector,
}

impl UpstreamTls {
    /// Builds the client for `settings`, reading the CA and client
    /// certificate files now; an error names the key of the file that failed.
    pub fn new(settings: &TlsClientConfig) -> Result<UpstreamTls, ConfigError> {
        let (roots, ca_fingerprint) = match &settings.ca {
            Some(path) => load_ca(path).map_err(|m| settings.at.error(m))?,
            None => (system_roots(), 0),
        };
        let identity = settings
            .client_cert
            .as_ref()
            .map(|client| Identity::load(&client.files).map_err(|m| client.at.error(m)))
            .transpose()?;
        UpstreamTls::with_roots(settings, roots, ca_fingerprint, identity)
            .map_err(|m| settings.at.error(m))
    }

    /// [`new`](Self::new), or on failure (logged) a client that refuses every handshake.
    fn new_or_refusing(settings: &TlsClientConfig) -> UpstreamTls {
        UpstreamTls::new(settings).unwrap_or_else(|error| {
            tracing::error!(%error, "upstream TLS client refuses every handshake");
            UpstreamTls::refusing(settings, error.to_string())
        })
    }

    /// A client whose every handshake fails with `why` (never cleartext instead).
    fn refusing(settings: &TlsClientConfig, why: String) -> UpstreamTls {
        UpstreamTls {
            ca: settings.ca.clone(),
            insecure_skip_verify: settings.insecure_skip_verify,
            server_name: None,
            // Never equal to a client that loaded the file.
            ca_fingerprint: u64::MAX,
            client_cert: None,
            connectors: Err(why),
        }
    }

    fn with_roots(
        settings: &TlsClientConfig,
        roots: Arc<RootCertStore>,
        ca_fingerprint: u64,
        identity: Option<Identity>,
    ) -> Result<UpstreamTls, String> {
        let server_name = settings
            .server_name
            .as_ref()
            .map(|name| {
                ServerName::try_from(name.clone())
                    .map_err(|_| format!("`{name}` is not a valid TLS server name"))
            })
            .transpose()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        let builder = if settings.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(roots)
        };
        let (base, client_cert) = match identity {
            None => (builder.with_no_client_auth(), None),
            Some(identity) => {
                let base = builder
                    .with_client_auth_cert(identity.chain, identity.key)
                    .map_err(|e| {
                        format!("client certificate {}: {e}", identity.files.cert.display())
                    })?;
                (base, Some((identity.files, identity.fingerprint)))
            }
        };
        let connector = |alpn: &[&[u8]]| {
            let mut config = base.clone();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsConnector::from(Arc::new(config))
        };
        Ok(UpstreamTls {
            connectors: Ok(Connectors {
                http1: connector(&[b"http/1.1"]),
                h2: connector(&[b"h2"]),
                any: connector(&[b"h2", b"http/1.1"]),
            }),
            ca: settings.ca.clone(),
            insecure_skip_verify: settings.insecure_skip_verify,
            server_name,
            ca_fingerprint,
            client_cert,
        })
    }

    /// Runs the TLS handshake on `tcp`, offering `alpn`; `host` is the
    /// endpoint's host, used for SNI unless a server name is configured.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &ServerName<'static>,
        alpn: Alpn,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let connectors = self
            .connectors
            .as_ref()
            .map_err(|why| std::io::Error::other(why.clone()))?;
        let connector = match alpn {
            Alpn::Http1 => &connectors.http1,
            Alpn::H2 => &connectors.h2,
            Alpn::Any => &connectors.any,
        };
        let name = self.server_name.as_ref().unwrap_or(host).clone();
        connector.connect(name, tcp).await
    }
}

/// Whether a TLS connection agreed on HTTP/2.
pub fn negotiated_h2(stream: &TlsStream<TcpStream>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca
            && self.ca_fingerprint == other.ca_fingerprint
            && self.insecure_skip_verify == other.insecure_skip_verify
            && self.server_name == other.server_name
            && self.client_cert == other.client_cert
    }
}

impl Eq for UpstreamTls {}

impl Hash for UpstreamTls {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.ca.hash(state);
        self.ca_fingerprint.hash(state);
        self.insecure_skip_verify.hash(state);
        self.server_name.as_ref().map(|n| n.to_str()).hash(state);
        self.client_cert.hash(state);
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca", &self.ca)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("server_name", &self.server_name)
            .field("client_cert", &self.client_cert.as_ref().map(|c| &c.0.cert))
            .finish_non_exhaustive()
    }
}

/// A client certificate chain and its key, read from their files.
struct Identity {
    files: CertPair,
    chain: Vec<CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
    /// A hash of both files' bytes, so a changed file is a new setting.
    fingerprint: u64,
}

impl Identity {
    fn load(files: &CertPair) -> Result<Identity, String> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let (cert, key) = (read(&files.cert)?, read(&files.key)?);
        let fingerprint = content_hash(&[cert.as_slice(), key.as_slice()].concat());
        Ok(Identity {
            chain: pem::cert_chain_bytes(&cert, &files.cert)?,
            key: pem::private_key_bytes(&key, &files.key)?,
            files: files.clone(),
            fingerprint,
        })
    }
}

/// The CA certificates in `path`, and a hash of the file.
fn load_ca(path: &Path) -> Result<(Arc<RootCertStore>, u64), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let roots = pem::ca_bytes(&bytes, path)?;
    Ok((Arc::new(roots), content_hash(&bytes)))
}

/// The operating system's trusted roots, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let (roots, warnings) = pem::system_roots();
        for warning in warnings {
            tracing::warn!(
                %warning,
                "reading the system's CA certificates (https endpoints without tls_ca use them)"
            );
        }
        Arc::new(roots)
    }))
}

/// `tls_insecure_skip_verify`: accepts any certificate, but still checks that
/// the handshake is signed by the key in it.
#[derive(Debug)]
pub struct NoVerification(Arc<CryptoProvider>);

impl NoVerification {
    /// Checks handshake signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> NoVerification {
        NoVerification(provider)
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
