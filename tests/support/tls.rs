//! TLS for tests: a private CA that issues certificates (rcgen), clients that
//! trust it, and a probe that reports the negotiated ALPN and the names of the
//! certificate a server presented.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sluicegate::upstream::tls::NoVerification;
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::admin::TestDir;

fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A private CA in a fresh [`TestDir`]; `ca.pem` is written at once and every
/// certificate it issues lands next to it.
pub struct Pki {
    pub dir: TestDir,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate and its key, as PEM files and as DER.
#[derive(Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = TestDir::new(tag);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("sluicegate test CA {tag}"),
        );
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        dir.write("ca.pem", &issuer.pem());
        Pki { dir, issuer }
    }

    /// `ca.pem`, the CA certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.file("ca.pem")
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Issues a certificate for `names` (DNS names, `*.wildcards` or IPs),
    /// written as `{stem}.pem` and `{stem}.key`.
    pub fn leaf(&self, stem: &str, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].clone());
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let (cert_name, key_name) = (format!("{stem}.pem"), format!("{stem}.key"));
        self.dir.write(&cert_name, &cert.pem());
        self.dir.write(&key_name, &key.serialize_pem());
        Leaf {
            cert: self.dir.file(&cert_name),
            key: self.dir.file(&key_name),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// The usual server certificate: `localhost` and 127.0.0.1.
    pub fn localhost(&self) -> Leaf {
        self.leaf("localhost", &["localhost", "127.0.0.1"])
    }

    /// A client config that trusts only this CA and offers `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> ClientConfig {
        with_alpn(self.trusting().with_no_client_auth(), alpn)
    }

    /// [`client_config`](Self::client_config) presenting `identity` as the
    /// client certificate.
    pub fn client_config_as(&self, alpn: &[&[u8]], identity: &Leaf) -> ClientConfig {
        let config = self
            .trusting()
            .with_client_auth_cert(vec![identity.der.clone()], identity.private_key())
            .expect("client certificate");
        with_alpn(config, alpn)
    }

    /// A client config builder that trusts only this CA.
    fn trusting(&self) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).expect("add CA root");
        ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
    }
}

fn with_alpn(mut config: ClientConfig, alpn: &[&[u8]]) -> ClientConfig {
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

impl Leaf {
    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// A server config with this certificate that requires a client
    /// certificate signed by `clients` (`None`: asks for none).
    pub fn server_config_for(
        &self,
        alpn: &[&[u8]],
        clients: Option<&CertificateDer<'static>>,
    ) -> ServerConfig {
        let Some(ca) = clients else {
            return self.server_config(alpn);
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).expect("add client CA");
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ring())
                .build()
                .expect("client verifier");
        let mut config = ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.der.clone()], self.private_key())
            .expect("server certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// `tls_client_cert = "…"` and `tls_client_key = "…"` lines presenting
    /// this certificate to a backend's endpoints.
    pub fn backend_client_cert(&self) -> String {
        format!(
            "tls_client_cert = \"{}\"\ntls_client_key = \"{}\"",
            self.cert.display(),
            self.key.display()
        )
    }

    /// A server config with this certificate, offering `alpn` (empty: no ALPN).
    pub fn server_config(&self, alpn: &[&[u8]]) -> ServerConfig {
        let mut config = ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], self.private_key())
            .expect("server certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A `[[listeners]]` table terminating TLS with this certificate.
    pub fn listener(&self) -> String {
        self.listener_at("127.0.0.1:0")
    }

    /// A TLS listener that requires client certificates signed by `clients`.
    pub fn listener_for_clients(&self, clients: &Pki) -> String {
        format!(
            "[[listeners]]\naddr = \"127.0.0.1:0\"\n\
             tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\" }}\n",
            self.cert.display(),
            self.key.display(),
            clients.ca_path().display()
        )
    }

    /// The same at placeholder address `addr` (`TestProxy` binds its own;
    /// two listeners need two different placeholders).
    pub fn listener_at(&self, addr: &str) -> String {
        format!(
            "[[listeners]]\naddr = \"{addr}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            self.cert.display(),
            self.key.display()
        )
    }

    /// `{ cert = "…", key = "…" }` for a listener's `sni` list.
    pub fn pair(&self) -> String {
        format!(
            "{{ cert = \"{}\", key = \"{}\" }}",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// A TLS connection to `addr` trusting only `pki`'s CA, with SNI and verified
/// name `server_name`, offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    pki: &Pki,
    server_name: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect to proxy");
    let name = ServerName::try_from(server_name.to_string()).expect("valid server name");
    TlsConnector::from(Arc::new(pki.client_config(alpn)))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the proxy")
}

/// What a TLS handshake showed: the ALPN the server picked and the names of
/// the certificate it presented (DNS names, then IPs).
#[derive(Debug)]
pub struct TlsProbe {
    pub alpn: Option<String>,
    pub names: Vec<String>,
    pub stream: tokio_rustls::client::TlsStream<TcpStream>,
}

/// Handshakes with `addr` sending SNI `server_name` (an IP sends none) and
/// offering `alpn`; accepts any certificate so the test can look at it.
pub async fn tls_probe(addr: SocketAddr, server_name: &str, alpn: &[&[u8]]) -> TlsProbe {
    let provider = ring();
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification::new(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect to proxy");
    let name = ServerName::try_from(server_name.to_string()).expect("valid server name");
    let stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the proxy");
    let (_, session) = stream.get_ref();
    let alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let names = session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|leaf| subject_alt_names(leaf))
        .unwrap_or_default();
    TlsProbe {
        alpn,
        names,
        stream,
    }
}

/// The subjectAltName entries of a DER certificate: DNS names as written,
/// IP addresses formatted. A minimal DER walk, enough for rcgen's output.
pub fn subject_alt_names(der: &[u8]) -> Vec<String> {
    // OID 2.5.29.17, subjectAltName.
    const SAN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x11];
    let Some(at) = der.windows(SAN_OID.len()).position(|w| w == SAN_OID) else {
        return Vec::new();
    };
    let mut rest = &der[at + SAN_OID.len()..];
    // An optional `critical` BOOLEAN, then the OCTET STRING holding the value.
    let Some((mut tag, mut value, mut after)) = der_tlv(rest) else {
        return Vec::new();
    };
    if tag == 0x01 {
        rest = after;
        let Some(next) = der_tlv(rest) else {
            return Vec::new();
        };
        (tag, value, after) = next;
    }
    let _ = after;
    if tag != 0x04 {
        return Vec::new();
    }
    let Some((0x30, mut names, _)) = der_tlv(value) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some((tag, content, next)) = der_tlv(names) {
        match tag {
            0x82 => out.push(String::from_utf8_lossy(content).into_owned()),
            0x87 if content.len() == 4 => {
                let octets: [u8; 4] = content.try_into().expect("4 bytes");
                out.push(std::net::Ipv4Addr::from(octets).to_string());
            }
            0x87 if content.len() == 16 => {
                let octets: [u8; 16] = content.try_into().expect("16 bytes");
                out.push(std::net::Ipv6Addr::from(octets).to_string());
            }
            _ => {}
        }
        names = next;
    }
    out
}

/// One DER tag-length-value: (tag, content, what follows).
fn der_tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, buf) = buf.split_first()?;
    let (&first, mut buf) = buf.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || buf.len() < count {
            return None;
        }
        let len = buf[..count]
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        buf = &buf[count..];
        len
    };
    if buf.len() < len {
        return None;
    }
    Some((tag, &buf[..len], &buf[len..]))
}
