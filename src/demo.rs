//! The built-in blue/green demo: two tiny backends and a proxy at 90/10.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::{Config, Format, TokenSource};
use crate::control::admin::Token;
use crate::edge::{self, Listeners};
use crate::error::ServerError;

/// A demo backend: answers every request with its colour and version.
pub async fn serve_backend(listener: TcpListener, colour: &'static str, version: &'static str) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| async move {
                Ok::<_, Infallible>(backend_response(&req, colour, version))
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn backend_response(req: &Request<Incoming>, colour: &str, version: &str) -> Response<Full<Bytes>> {
    let body = if req.uri().path() == "/healthz" {
        "ok\n".to_string()
    } else {
        format!("{colour} {version} {} {}\n", req.method(), req.uri().path())
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    if let Ok(value) = header::HeaderValue::from_str(colour) {
        resp.headers_mut().insert("x-backend", value);
    }
    resp
}

/// The demo's config: one route `web`, blue 90 / green 10.
pub fn demo_config(port: u16, admin_port: u16, blue: SocketAddr, green: SocketAddr) -> String {
    format!(
        r#"[[listeners]]
addr = "127.0.0.1:{port}"

[admin]
addr = "127.0.0.1:{admin_port}"

[[routes]]
name = "web"

  [[routes.backends]]
  name = "blue"
  weight = 90
  endpoints = ["{blue}"]

  [[routes.backends]]
  name = "green"
  weight = 10
  endpoints = ["{green}"]

  # `sluicegate ctl canary start web` walks green through these steps while
  # traffic flows (send some: each step waits for 10 canary requests).
  [routes.canary]
  baseline = "blue"
  canary = "green"
  steps = [10, 25, 50, 100]
  interval = "5s"
  min_requests = 10
  max_error_rate = 0.01
  max_p99_ratio = 3
"#
    )
}

/// Starts blue and green on loopback and the proxy in front of them; runs
/// until `shutdown` resolves.
pub async fn run(
    port: u16,
    admin_port: u16,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let blue = TcpListener::bind("127.0.0.1:0").await?;
    let green = TcpListener::bind("127.0.0.1:0").await?;
    let (blue_addr, green_addr) = (blue.local_addr()?, green.local_addr()?);
    tokio::spawn(serve_backend(blue, "blue", "v1"));
    tokio::spawn(serve_backend(green, "green", "v2"));
    let text = demo_config(port, admin_port, blue_addr, green_addr);
    let mut config = Config::parse(&text, "demo.toml", Format::Toml)
        .map_err(|e| ServerError::Unsupported(format!("demo config is invalid: {e}")))?;
    // Bind before writing the token: a second demo whose ports are taken
    // must fail without replacing the running demo's token file.
    let listeners = Listeners::bind(&config).await?;
    // Generate the token here so it can be printed; the server then reads the file.
    let (token, token_file) = Token::resolve(&config.admin).map_err(ServerError::Admin)?;
    let token_file = token_file.map(|p| std::path::absolute(&p).unwrap_or(p));
    if let Some(path) = &token_file {
        config.admin.token = TokenSource::File(path.clone());
    }
    let token_note = token_file
        .as_ref()
        .map_or_else(String::new, |p| format!(" (also in {})", p.display()));
    let admin_url = format!("http://127.0.0.1:{admin_port}");
    let proxy_addr = listeners.data.first().and_then(|l| l.local_addr().ok());
    let proxy = proxy_addr.map_or_else(|| format!("127.0.0.1:{port}"), |a| a.to_string());
    let ctl = ctl_prefix(&admin_url, token_file.as_deref());
    println!(
        "sluicegate demo\n\
         \n  blue  (v1) backend  http://{blue_addr}\
         \n  green (v2) backend  http://{green_addr}\
         \n  proxy (90 % blue / 10 % green)  http://{proxy}/\
         \n  dashboard  {admin_url}/ (paste the admin token into it)\
         \n  admin API  {admin_url}/api/v1/routes\
         \n  metrics  {admin_url}/metrics\
         \n  admin token  {token}{token_note}\
         \n\nTry it:\
         \n  for i in $(seq 20); do curl -s http://{proxy}/; done | sort | uniq -c\
         \n\nShift traffic (from any terminal and directory):\
         \n  {ctl} status\
         \n  {ctl} set web blue=50 green=50\
         \n  {ctl} promote web green\
         \n  {ctl} rollback web\
         \n  {ctl} history\
         \n  {ctl} canary start web   (with traffic flowing)\
         \n\nThe demo config:\n\n{text}\nPress Ctrl-C to stop.",
        token = token.reveal()
    );
    edge::run(config, listeners, shutdown).await
}

/// `sluicegate ctl --admin URL --token-file FILE` with this binary's absolute
/// path, so the printed commands work pasted anywhere.
fn ctl_prefix(admin_url: &str, token_file: Option<&Path>) -> String {
    let binary = std::env::current_exe()
        .map(|p| shell_quote(&p.display().to_string()))
        .unwrap_or_else(|_| "sluicegate".to_string());
    let token = token_file.map_or_else(String::new, |p| {
        format!(" --token-file {}", shell_quote(&p.display().to_string()))
    });
    format!("{binary} ctl --admin {admin_url}{token}")
}

/// `text` as one shell word: as is when it holds only safe characters, else
/// in single quotes.
fn shell_quote(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_keeps_plain_paths_and_quotes_the_rest() {
        assert_eq!(shell_quote("/usr/bin/sluicegate"), "/usr/bin/sluicegate");
        assert_eq!(shell_quote("/tmp/my dir/x"), "'/tmp/my dir/x'");
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
    }
}
