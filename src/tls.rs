//! TLS termination with rustls (ring provider): TLS 1.2 and 1.3, ALPN `h2`
//! and `http/1.1`, one certificate chain per listener, swapped in place when
//! the files change on a config reload (open connections keep theirs).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Installs ring as rustls' process-wide crypto provider (once; later calls
/// are no-ops).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads a PEM certificate chain and private key into a signing key.
pub fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect)
        .map_err(|e| {
            format!(
                "cannot read certificates from {}: {e}",
                files.cert.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "cannot read a private key from {}: {e}",
            files.key.display()
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("unsupported private key in {}: {e}", files.key.display()))?;
    Ok(CertifiedKey::new(certs, signing))
}

/// Serves the current certificate of one listener; [`CertStore::reload`]
/// swaps it for new handshakes.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    /// The file contents last loaded, to skip reloads that change nothing.
    loaded: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
}

impl CertStore {
    /// Loads `files`.
    pub fn load(files: &TlsFiles) -> Result<CertStore, String> {
        let key = load_certified_key(files)?;
        Ok(CertStore {
            files: files.clone(),
            current: ArcSwap::from_pointee(key),
            loaded: std::sync::Mutex::new(read_both(files)),
        })
    }

    /// Re-reads the files if they changed; a bad new pair keeps the old one.
    pub fn reload(&self, files: &TlsFiles) {
        let contents = read_both(files);
        let Ok(mut loaded) = self.loaded.lock() else {
            return;
        };
        if *loaded == contents && *files == self.files {
            return;
        }
        match load_certified_key(files) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                *loaded = contents;
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "TLS certificate reload refused; the old one stays")
            }
        }
    }
}

fn read_both(files: &TlsFiles) -> (Vec<u8>, Vec<u8>) {
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    (read(&files.cert), read(&files.key))
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A TLS acceptor for one listener: TLS 1.2/1.3, ALPN h2 then http/1.1.
pub fn acceptor(store: Arc<CertStore>) -> Result<TlsAcceptor, String> {
    install_crypto_provider();
    let mut config = ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
