//! The admin API's address, the token, one HTTP/1.1 exchange per command,
//! and the errors of a `ctl` run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde::de::IgnoredAny;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{ApiCall, CONNECT_TIMEOUT, REQUEST_TIMEOUT, TOKEN_ENV};
use crate::config::pem;
use crate::control::admin::api::ApiError;

/// Everything that can go wrong in one `ctl` run; each is one clear message.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad arguments, found before any request.
    #[error("{0}")]
    Usage(String),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot read the token file {}: {source}", .path.display())]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach the admin API at {url}: {reason} (is sluicegate running? --admin)")]
    Unreachable { url: String, reason: String },
    #[error("the admin API at {url} did not answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error(
        "unauthorized: pass --token, set SLUICEGATE_ADMIN_TOKEN, or run where sluicegate-admin.token is{}",
        rejected_note(.sent.as_ref())
    )]
    Unauthorized { sent: Option<TokenSource> },
    /// The server refused the request: its status, message and detail lines.
    #[error("{}", api_error_text(*.status, .message, .details))]
    Api {
        status: StatusCode,
        message: String,
        details: Vec<String>,
    },
    #[error("unexpected answer from the admin API: {0}")]
    Protocol(String),
}

fn rejected_note(sent: Option<&TokenSource>) -> String {
    match sent {
        Some(source) => format!(" (the token from {source} was rejected)"),
        None => " (no token was sent)".to_string(),
    }
}

fn api_error_text(status: StatusCode, message: &str, details: &[String]) -> String {
    let mut text = format!("{status}: {message}");
    for line in details {
        text.push('\n');
        text.push_str(line);
    }
    text
}

/// The bearer token and where it came from (named in 401 messages).
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) value: String,
    pub(super) source: TokenSource,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// Where the token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Flag,
    Env,
    File(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Flag => f.write_str("--token"),
            TokenSource::Env => write!(f, "${TOKEN_ENV}"),
            TokenSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `--token`, else `--token-file`, else the environment, else the default
/// file if it exists: explicit flags win over the environment. Empty values
/// count as absent; a named file must be readable and hold a token.
pub(super) fn resolve_token(
    flag: Option<&str>,
    env: Option<&str>,
    token_file: Option<&Path>,
    default_file: &Path,
) -> Result<Option<Token>, CtlError> {
    let given = |value: Option<&str>, source: TokenSource| {
        let value = value?.trim();
        (!value.is_empty()).then(|| Token {
            value: value.to_string(),
            source,
        })
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| CtlError::TokenFile {
            path: path.to_path_buf(),
            source,
        })
    };
    if let Some(token) = given(flag, TokenSource::Flag) {
        return Ok(Some(token));
    }
    if let Some(path) = token_file {
        let text = read(path)?;
        return given(Some(&text), TokenSource::File(path.to_path_buf()))
            .map(Some)
            .ok_or_else(|| CtlError::Usage(format!("the token file {} is empty", path.display())));
    }
    if let Some(token) = given(env, TokenSource::Env) {
        return Ok(Some(token));
    }
    if default_file.is_file() {
        let text = read(default_file)?;
        return Ok(given(
            Some(&text),
            TokenSource::File(default_file.to_path_buf()),
        ));
    }
    Ok(None)
}

/// The admin API's address and the token sent with every request.
pub(super) struct Client {
    /// As the user gave it, for messages.
    url: String,
    /// `host:port`, for connecting and the Host header.
    authority: String,
    /// Path the API is mounted under, without a trailing slash (usually empty).
    base_path: String,
    token: Option<Token>,
    /// For an `https://` URL: the connector and the name to verify.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    https: bool,
}

/// The files `ctl` uses for an `https://` admin URL: the CA that signed the
/// admin's certificate (default: the system's roots), and a client
/// certificate and key for an mTLS admin listener.
#[derive(Debug, Default, Clone)]
pub(super) struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Client {
    pub(super) fn new(url: &str, token: Option<Token>) -> Result<Client, CtlError> {
        let bad = |why: &str| CtlError::Usage(format!("--admin {url:?}: {why}"));
        let (https, rest) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            Some(_) => return Err(bad("only http:// and https:// URLs are supported")),
            None => (false, url),
        };
        if rest.contains(['?', '#']) {
            return Err(bad("a query or fragment is not allowed"));
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        let parsed: http::uri::Authority = authority
            .parse()
            .map_err(|_| bad("expected http://HOST:PORT"))?;
        if authority.contains('@') {
            return Err(bad("user info is not allowed"));
        }
        let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
        let client = Client {
            url: url.to_string(),
            authority: format!("{}:{port}", parsed.host()),
            base_path: path.trim_end_matches('/').to_string(),
            token,
            tls: None,
            https,
        };
        if https {
            return client.with_tls(&TlsFiles::default());
        }
        Ok(client)
    }

    /// The admin URL as the user gave it, with a scheme and without a
    /// trailing slash: where the dashboard page is.
    pub(super) fn page_url(&self) -> String {
        let url = self.url.trim_end_matches('/');
        if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        }
    }

    /// Sets the CA and client certificate of an `https://` URL.
    pub(super) fn with_tls(mut self, files: &TlsFiles) -> Result<Client, CtlError> {
        let given = files.ca.is_some() || files.cert.is_some() || files.key.is_some();
        if !self.https {
            return if given {
                Err(CtlError::Usage(
                    "--ca, --cert and --key need an https:// --admin URL".into(),
                ))
            } else {
                Ok(self)
            };
        }
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = ServerName::try_from(host).map_err(|_| {
            CtlError::Usage(format!("--admin {:?}: not a TLS server name", self.url))
        })?;
        self.tls = Some((TlsConnector::from(Arc::new(tls_config(files)?)), name));
        Ok(self)
    }

    /// Sends `call` and returns the JSON body of a 2xx, or the error it means.
    pub(super) async fn send(&self, call: &ApiCall) -> Result<Bytes, CtlError> {
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(call))
            .await
            .map_err(|_| CtlError::Timeout {
                url: self.url.clone(),
            })??;
        if status.is_success() {
            return match serde_json::from_slice::<IgnoredAny>(&body) {
                Ok(_) => Ok(body),
                Err(_) => Err(CtlError::Protocol(format!(
                    "{status} with a body that is not JSON"
                ))),
            };
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(CtlError::Unauthorized {
                sent: self.token.as_ref().map(|t| t.source.clone()),
            });
        }
        Err(api_error(status, &body))
    }

    async fn exchange(&self, call: &ApiCall) -> Result<(StatusCode, Bytes), CtlError> {
        let unreachable = |reason: String| CtlError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| unreachable("connect timed out".to_string()))?
            .map_err(|e| unreachable(e.to_string()))?;
        match &self.tls {
            None => self.exchange_on(stream, call).await,
            Some((connector, name)) => {
                let connect = connector.connect(name.clone(), stream);
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| unreachable("TLS handshake timed out".to_string()))?
                    .map_err(|e| unreachable(format!("TLS handshake failed: {e}")))?;
                self.exchange_on(stream, call).await
            }
        }
    }

    async fn exchange_on<I>(&self, io: I, call: &ApiCall) -> Result<(StatusCode, Bytes), CtlError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let unreachable = |reason: String| CtlError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let (mut sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });

        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(format!("{}{}", self.base_path, call.path))
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.value));
        }
        let body = match &call.body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(body.clone())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| CtlError::Usage(format!("cannot build the request: {e}")))?;

        let lost = |e: hyper::Error| CtlError::Protocol(format!("{}: {e}", self.url));
        let response = sender.send_request(request).await.map_err(lost)?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(lost)?;
        Ok((status, body.to_bytes()))
    }
}

/// The client TLS settings of `files`: ring, the CA or the system roots, a
/// client certificate when both `cert` and `key` are given.
fn tls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, CtlError> {
    let usage = |e: String| CtlError::Usage(e);
    let roots = match &files.ca {
        Some(ca) => pem::ca_file(ca).map_err(|e| usage(format!("--ca: {e}")))?,
        None => pem::system_roots().0,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| usage(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    match (&files.cert, &files.key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = pem::cert_chain(cert).map_err(|e| usage(format!("--cert: {e}")))?;
            let key_der = pem::private_key(key).map_err(|e| usage(format!("--key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| usage(format!("--cert/--key: {e}")))
        }
        _ => Err(usage("--cert and --key go together".into())),
    }
}

/// An [`ApiError`] body → message and detail lines; any other body hints
/// that `--admin` points at something else.
fn api_error(status: StatusCode, body: &[u8]) -> CtlError {
    let (message, details) = match serde_json::from_slice::<ApiError>(body) {
        Ok(ApiError { error, errors }) => (error, errors),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(200).collect();
            let what = if text.is_empty() {
                "no error message".to_string()
            } else {
                format!("{text:?}")
            };
            let message =
                format!("{what} (not an admin API answer; is --admin the admin address?)");
            (message, Vec::new())
        }
    };
    CtlError::Api {
        status,
        message,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::TOKEN_FILE_NAME;
    use crate::ctl::tests::flag_token;

    // ---- URLs ----

    #[test]
    fn admin_urls_are_parsed_or_refused() {
        let client = Client::new("http://127.0.0.1:9901", None).unwrap();
        assert_eq!(
            (client.authority.as_str(), client.base_path.as_str()),
            ("127.0.0.1:9901", "")
        );
        let client = Client::new("http://localhost/admin/", None).unwrap();
        assert_eq!(
            (client.authority.as_str(), client.base_path.as_str()),
            ("localhost:80", "/admin")
        );
        let client = Client::new("[::1]:9901", None).unwrap();
        assert_eq!(client.authority, "[::1]:9901");
        let client = Client::new("https://localhost", None).unwrap();
        assert_eq!(client.authority, "localhost:443");
        assert!(client.tls.is_some());
        let files = TlsFiles {
            ca: Some("ca.pem".into()),
            ..TlsFiles::default()
        };
        let plain = Client::new("http://127.0.0.1:9901", None).unwrap();
        assert!(
            plain.with_tls(&files).is_err(),
            "--ca on http:// was accepted"
        );
        for bad in [
            "ftp://127.0.0.1:9901",
            "http://",
            "http://u:p@h:1",
            "http://h:1/?x",
        ] {
            assert!(Client::new(bad, None).is_err(), "{bad} was accepted");
        }
    }

    // ---- token ----

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("sluicegate-ctl-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn token_comes_from_flag_then_token_file_then_env_then_default_file() {
        let dir = TempDir::new("token-order");
        let named = dir.0.join("named.token");
        let default = dir.0.join(TOKEN_FILE_NAME);
        std::fs::write(&named, "from-named\n").unwrap();
        std::fs::write(&default, "  from-default \n").unwrap();
        let value = |t: Result<Option<Token>, CtlError>| t.unwrap().map(|t| (t.value, t.source));

        assert_eq!(
            value(resolve_token(Some("f"), Some("e"), Some(&named), &default)),
            Some(("f".into(), TokenSource::Flag))
        );
        assert_eq!(
            value(resolve_token(None, Some("e"), Some(&named), &default)),
            Some(("from-named".into(), TokenSource::File(named.clone())))
        );
        assert_eq!(
            value(resolve_token(None, Some("e"), None, &default)),
            Some(("e".into(), TokenSource::Env))
        );
        assert_eq!(
            value(resolve_token(Some(""), Some(" "), Some(&named), &default)),
            Some(("from-named".into(), TokenSource::File(named.clone())))
        );
        assert_eq!(
            value(resolve_token(None, None, None, &default)),
            Some(("from-default".into(), TokenSource::File(default.clone())))
        );
        std::fs::remove_file(&default).unwrap();
        assert_eq!(value(resolve_token(None, None, None, &default)), None);
    }

    #[test]
    fn a_named_token_file_must_exist_and_hold_a_token() {
        let dir = TempDir::new("token-file");
        let missing = dir.0.join("missing.token");
        let err = resolve_token(None, None, Some(&missing), &missing).unwrap_err();
        assert!(
            err.to_string().contains("cannot read the token file"),
            "{err}"
        );
        let empty = dir.0.join("empty.token");
        std::fs::write(&empty, "\n").unwrap();
        let err = resolve_token(None, None, Some(&empty), &missing).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn token_is_redacted_in_debug_output() {
        let text = format!("{:?}", flag_token("s3cret"));
        assert!(!text.contains("s3cret"), "{text}");
    }
}
