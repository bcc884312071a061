//! `sluicegate probe URL`: one plain-HTTP GET for container health checks
//! (a HEALTHCHECK needs no curl in the image). Exit 0 on 2xx, 1 otherwise,
//! with the reason on stderr.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{Request, Uri, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::parse_duration;

/// Arguments of `sluicegate probe`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 on a 2xx answer, 1 otherwise (refused, timed out, another status).\n\nExamples:\n  sluicegate probe http://127.0.0.1:9901/readyz\n  sluicegate probe --timeout 500ms http://127.0.0.1:8080/healthz"
)]
pub struct ProbeArgs {
    /// http://HOST:PORT/PATH to GET.
    #[arg(value_name = "URL")]
    url: String,
    /// Give up after this long: connecting and the answer's head together.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
}

/// Runs the probe; prints the status on stdout on success.
pub fn main(args: ProbeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&args.url, &format!("cannot start the runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        tokio::time::timeout(args.timeout, get(&args.url))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {}",
                    humantime::format_duration(args.timeout)
                ))
            })
    });
    match outcome {
        Ok(status) if status.is_success() => {
            println!("{status}");
            ExitCode::SUCCESS
        }
        Ok(status) => fail(&args.url, &status.to_string()),
        Err(reason) => fail(&args.url, &reason),
    }
}

fn fail(url: &str, reason: &str) -> ExitCode {
    eprintln!("sluicegate probe: {url}: {reason}");
    ExitCode::FAILURE
}

/// GETs `url` over a fresh HTTP/1.1 connection; the answer's status.
async fn get(url: &str) -> Result<http::StatusCode, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("not a URL like http://127.0.0.1:9901/readyz: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "{other}:// is not supported: probe a plain-HTTP port (the admin listener's /readyz)"
            ));
        }
        None => return Err("the URL needs http://, like http://127.0.0.1:9901/readyz".into()),
    }
    let authority = uri
        .authority()
        .ok_or("the URL names no host")?
        .as_str()
        .to_string();
    let address = if uri.port_u16().is_some() {
        authority.clone()
    } else {
        format!("{authority}:80")
    };
    let stream = TcpStream::connect(&address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(
            header::USER_AGENT,
            concat!("sluicegate-probe/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("no HTTP answer: {e}"))?;
    Ok(response.status())
}
