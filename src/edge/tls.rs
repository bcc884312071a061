//! TLS termination with rustls (ring provider): TLS 1.2 and 1.3, ALPN `h2`
//! and `http/1.1`, a default certificate per listener plus more picked by SNI,
//! swapped in place when the files change on a config reload (open
//! connections keep theirs).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsAcceptor;

use crate::config::pem;
use crate::config::{CertPair, TlsFiles};

/// Installs ring as rustls' process-wide crypto provider (once; later calls
/// are no-ops).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Verifies client certificates against the CAs in the PEM file `ca`.
fn client_verifier(ca: &Path) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let roots = pem::ca_file(ca).map_err(|e| format!("client CA: {e}"))?;
    WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| format!("client CA {}: {e}", ca.display()))
}

/// The subject of the client certificate a handshake verified, as RFC 4514
/// text (`CN=deploy-bot,O=ops`).
pub fn client_subject(conn: &rustls::ServerConnection) -> Option<Arc<str>> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let subject = cert.subject().to_string();
    // Header-safe: it goes into X-Forwarded-Client-Cert and logs.
    let subject: String = subject
        .chars()
        .map(|c| if c.is_control() || c == '"' { '?' } else { c })
        .collect();
    Some(Arc::from(subject))
}

/// Reads a PEM certificate chain and private key into a signing key.
pub fn load_certified_key(pair: &CertPair) -> Result<CertifiedKey, String> {
    let certs = pem::cert_chain(&pair.cert)?;
    let key = pem::private_key(&pair.key)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("unsupported private key in {}: {e}", pair.key.display()))?;
    Ok(CertifiedKey::new(certs, signing))
}

/// Every certificate of one listener, loaded.
#[derive(Debug)]
struct Certificates {
    default: Arc<CertifiedKey>,
    /// Picked by SNI, first valid for the name wins.
    sni: Vec<Arc<CertifiedKey>>,
}

impl Certificates {
    fn load(files: &TlsFiles) -> Result<Certificates, String> {
        let default = CertPair {
            cert: files.cert.clone(),
            key: files.key.clone(),
        };
        Ok(Certificates {
            default: Arc::new(load_certified_key(&default)?),
            sni: files
                .sni
                .iter()
                .map(|pair| load_certified_key(pair).map(Arc::new))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The certificate for a client that asked for `server_name`.
    fn for_name(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let name = server_name.and_then(|n| ServerName::try_from(n).ok());
        name.and_then(|name| self.sni.iter().find(|ck| valid_for(ck, &name)))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// Whether the leaf certificate of `key` names `server_name` (wildcards too).
fn valid_for(key: &CertifiedKey, server_name: &ServerName<'_>) -> bool {
    key.end_entity_cert()
        .ok()
        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
        .is_some_and(|leaf| leaf.verify_is_valid_for_subject_name(server_name).is_ok())
}

/// Serves the current certificates of one listener; [`CertStore::reload`]
/// swaps them for new handshakes.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    current: ArcSwap<Certificates>,
    /// The file contents last loaded, to skip reloads that change nothing.
    loaded: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl CertStore {
    /// Loads `files`.
    pub fn load(files: &TlsFiles) -> Result<CertStore, String> {
        let certificates = Certificates::load(files)?;
        Ok(CertStore {
            files: files.clone(),
            current: ArcSwap::from_pointee(certificates),
            loaded: std::sync::Mutex::new(read_all(files)),
        })
    }

    /// Re-reads the files if they changed; a bad new set keeps the old one.
    pub fn reload(&self, files: &TlsFiles) {
        let contents = read_all(files);
        let Ok(mut loaded) = self.loaded.lock() else {
            return;
        };
        if *loaded == contents && *files == self.files {
            return;
        }
        match Certificates::load(files) {
            Ok(certificates) => {
                self.current.store(Arc::new(certificates));
                *loaded = contents;
                tracing::info!(cert = %files.cert.display(), "TLS certificates reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "TLS certificate reload refused; the old ones stay")
            }
        }
    }
}

/// The bytes of every file, to notice a change.
fn read_all(files: &TlsFiles) -> Vec<Vec<u8>> {
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    let mut all = vec![read(&files.cert), read(&files.key)];
    for pair in &files.sni {
        all.push(read(&pair.cert));
        all.push(read(&pair.key));
    }
    all
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().for_name(hello.server_name()))
    }
}

/// A TLS acceptor for one listener: TLS 1.2/1.3, ALPN h2 then http/1.1;
/// with `client_ca`, a client certificate it signed is required.
pub fn acceptor(store: Arc<CertStore>) -> Result<TlsAcceptor, String> {
    install_crypto_provider();
    let builder = ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ]);
    let builder = match &store.files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca)?),
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
