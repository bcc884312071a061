//! The PEM files a config (or `ctl`'s flags) names: CA bundles into root
//! stores, certificate chains, private keys. One reader for every TLS user
//! (listeners, the admin listener, upstreams, etcd, `ctl`); each caller puts
//! its own key or flag in front of the message. Messages name the file and
//! never quote a key's bytes.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The CA certificates in the PEM file `path`; at least one.
pub fn ca_file(path: &Path) -> Result<RootCertStore, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    ca_bytes(&bytes, path)
}

/// The CA certificates in `bytes`, read from `path`; at least one.
pub fn ca_bytes(bytes: &[u8], path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bytes) {
        let cert = cert.map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(roots)
}

/// The operating system's trusted roots; what cannot be read is skipped
/// and returned as warnings.
pub fn system_roots() -> (RootCertStore, Vec<String>) {
    let found = rustls_native_certs::load_native_certs();
    let mut warnings: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        warnings.push(format!(
            "no system CA certificates found ({ignored} unparsable)"
        ));
    }
    (roots, warnings)
}

/// The certificate chain in the PEM file `path`; at least one certificate.
pub fn cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    cert_chain_bytes(&bytes, path)
}

/// The certificate chain in `bytes`, read from `path`; at least one.
pub fn cert_chain_bytes(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(chain)
}

/// The private key in the PEM file `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path)
        .map_err(|_| format!("no readable private key in {}", path.display()))?;
    private_key_bytes(&bytes, path)
}

/// The private key in `bytes`, read from `path`.
pub fn private_key_bytes(bytes: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    // The parser's own error text could quote the key: name only the file.
    PrivateKeyDer::from_pem_slice(bytes)
        .map_err(|_| format!("no readable private key in {}", path.display()))
}
