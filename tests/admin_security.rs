//! Secure access to the admin API (SPEC §8): TLS and mTLS on the admin
//! listener, tokens with names and roles, actor and client in the history,
//! token rotation without a restart. `ctl` runs as the real binary.

pub mod support;

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use sluicegate::config::Config;
use support::admin::{TestDir, describe_output};
use support::config_text;
use support::proxy::TestProxy;
use support::tls::{Leaf, Pki};

/// One listener and route `web` (blue 90 / green 10) on ports nothing serves:
/// these tests only talk to the admin listener.
fn routes() -> String {
    let blue = SocketAddr::from(([127, 0, 0, 1], 1));
    let green = SocketAddr::from(([127, 0, 0, 1], 2));
    let backends = [
        config_text::backend("blue", Some("90"), &[blue]),
        config_text::backend("green", Some("10"), &[green]),
    ];
    format!(
        "{}{}",
        config_text::LISTENER,
        config_text::route("web", "", "", &backends)
    )
}

/// A proxy whose `[admin]` table is `admin`, started from a file in `dir`.
async fn start(dir: &TestDir, admin: &str) -> (TestProxy, SocketAddr) {
    dir.write("config.toml", &format!("{}\n[admin]\n{admin}\n", routes()));
    let config = Config::load(&dir.file("config.toml")).expect("test config");
    let proxy = TestProxy::start_config(config, true).await;
    let admin_addr = proxy.admin_addr.expect("admin listener");
    (proxy, admin_addr)
}

/// `sluicegate ctl --admin URL ARGS` with no token from the environment.
async fn ctl(dir: &TestDir, url: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluicegate"));
    command
        .arg("ctl")
        .arg("--admin")
        .arg(url)
        .args(args)
        .env_remove("SLUICEGATE_ADMIN_TOKEN")
        .env_remove("SLUICEGATE_ADMIN_CA")
        .env_remove("SLUICEGATE_ADMIN_CERT")
        .env_remove("SLUICEGATE_ADMIN_KEY")
        .current_dir(&dir.path)
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("ctl did not finish within 30 s")
        .expect("run sluicegate ctl")
}

fn tls_args(ca: &Pki, client: Option<&Leaf>) -> Vec<String> {
    let mut args = vec!["--ca".to_string(), ca.ca_path().display().to_string()];
    if let Some(leaf) = client {
        args.extend([
            "--cert".to_string(),
            leaf.cert.display().to_string(),
            "--key".to_string(),
            leaf.key.display().to_string(),
        ]);
    }
    args
}

async fn ctl_with(dir: &TestDir, url: &str, tls: &[String], args: &[&str]) -> Output {
    let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
    all.extend(args);
    ctl(dir, url, &all).await
}

fn history_json(output: &Output) -> Vec<Value> {
    assert!(output.status.success(), "{}", describe_output(output));
    let answer: Value = serde_json::from_slice(&output.stdout).expect("history JSON");
    answer["revisions"].as_array().expect("revisions").clone()
}

#[tokio::test]
async fn ctl_speaks_https_to_a_tls_admin_listener_and_plain_http_fails() {
    let pki = Pki::new("admin-tls");
    let server = pki.localhost();
    pki.dir.write("admin.token", "tls-secret\n");
    let admin = format!(
        "token_file = \"admin.token\"\ntls = {{ cert = \"{}\", key = \"{}\" }}",
        server.cert.display(),
        server.key.display()
    );
    let (_proxy, addr) = start(&pki.dir, &admin).await;
    let https = format!("https://localhost:{}", addr.port());
    let tls = tls_args(&pki, None);
    let set = ctl_with(
        &pki.dir,
        &https,
        &tls,
        &["--token", "tls-secret", "set", "web", "blue=50", "green=50"],
    )
    .await;
    assert!(set.status.success(), "{}", describe_output(&set));

    let plain = ctl(
        &pki.dir,
        &format!("http://{addr}"),
        &["--token", "tls-secret", "status"],
    )
    .await;
    assert!(
        !plain.status.success(),
        "plain HTTP to a TLS admin listener answered"
    );

    let other = Pki::new("admin-tls-other");
    let wrong_ca = ctl_with(
        &pki.dir,
        &https,
        &tls_args(&other, None),
        &["--token", "tls-secret", "status"],
    )
    .await;
    assert!(
        !wrong_ca.status.success(),
        "a certificate from another CA was trusted"
    );
    assert!(
        String::from_utf8_lossy(&wrong_ca.stderr).contains("TLS handshake failed"),
        "{}",
        describe_output(&wrong_ca)
    );
}

#[tokio::test]
async fn mtls_admin_needs_a_client_certificate_whose_subject_is_the_actor() {
    let pki = Pki::new("admin-mtls");
    let server = pki.localhost();
    let client = pki.leaf("ops", &["ops.example"]);
    let admin = format!(
        "tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\" }}",
        server.cert.display(),
        server.key.display(),
        pki.ca_path().display()
    );
    let (_proxy, addr) = start(&pki.dir, &admin).await;
    let https = format!("https://localhost:{}", addr.port());

    let without = ctl_with(&pki.dir, &https, &tls_args(&pki, None), &["status"]).await;
    assert!(
        !without.status.success(),
        "mTLS admin answered a client without a certificate"
    );

    let with = tls_args(&pki, Some(&client));
    let set = ctl_with(
        &pki.dir,
        &https,
        &with,
        &["set", "web", "blue=25", "green=75"],
    )
    .await;
    assert!(set.status.success(), "{}", describe_output(&set));
    let history = history_json(&ctl_with(&pki.dir, &https, &with, &["--json", "history"]).await);
    assert_eq!(history[0]["actor"], "CN=ops.example", "{history:?}");
    assert!(
        history[0]["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:"))
    );
}

#[tokio::test]
async fn each_role_is_allowed_what_it_may_and_refused_the_rest() {
    let dir = TestDir::new("admin-roles");
    for name in ["reader", "operator", "boss"] {
        dir.write(&format!("{name}.token"), &format!("{name}-secret\n"));
    }
    let admin = r#"
[[admin.tokens]]
name = "reader"
role = "read"
token_file = "reader.token"
[[admin.tokens]]
name = "deploy-bot"
role = "operate"
token_file = "operator.token"
[[admin.tokens]]
name = "boss"
role = "admin"
token_file = "boss.token"
"#;
    let (_proxy, addr) = start(&dir, admin).await;
    let url = format!("http://{addr}");
    let run = |token: &'static str, args: &'static [&'static str]| {
        let (dir, url) = (&dir, url.clone());
        async move {
            let mut all = vec!["--token", token];
            all.extend(args);
            ctl(dir, &url, &all).await
        }
    };
    let refused = |output: &Output, status: &str| {
        assert!(
            !output.status.success(),
            "allowed: {}",
            describe_output(output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(status), "{}", describe_output(output));
    };
    const SET: &[&str] = &["set", "web", "blue=60", "green=40"];
    assert!(run("reader-secret", &["status"]).await.status.success());
    refused(&run("reader-secret", SET).await, "role read");
    let set = run("operator-secret", SET).await;
    assert!(set.status.success(), "{}", describe_output(&set));
    refused(&run("operator-secret", &["reload"]).await, "role operate");
    let reload = run("boss-secret", &["reload"]).await;
    assert!(reload.status.success(), "{}", describe_output(&reload));
    refused(&run("nobody-secret", &["status"]).await, "unauthorized");

    let history = history_json(&run("reader-secret", &["--json", "history"]).await);
    let by_bot = history
        .iter()
        .find(|r| r["weights"]["blue"] == 60.0)
        .expect("the operator's revision");
    assert_eq!(by_bot["actor"], "deploy-bot");
    assert_eq!(by_bot["source"], "admin");
    assert!(
        by_bot["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:"))
    );
    let first = history.last().expect("the file's revision");
    assert_eq!(first["actor"], "file");
    assert!(first.get("client").is_none(), "{first}");
}

#[tokio::test]
async fn a_rotated_token_file_takes_the_new_token_at_once_and_refuses_the_old() {
    let dir = TestDir::new("admin-rotation");
    dir.write("bot.token", "old-secret\n");
    let admin =
        "[[admin.tokens]]\nname = \"bot\"\nrole = \"operate\"\ntoken_file = \"bot.token\"\n";
    let (_proxy, addr) = start(&dir, admin).await;
    let client = |token: &'static str| routes_status(addr, token);
    assert_eq!(client("old-secret").await, 200);
    // Written beside and renamed over, as a secret manager does.
    dir.write("bot.token.new", "new-secret\n");
    std::fs::rename(dir.file("bot.token.new"), dir.file("bot.token")).expect("rotate");
    // A client that switches right after the file changed is never refused.
    assert_eq!(client("new-secret").await, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        if client("old-secret").await == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old token still works after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client("new-secret").await, 200);
}

/// A GET of `/api/v1/routes` with a bearer token on a fresh connection: its status.
async fn routes_status(addr: SocketAddr, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /api/v1/routes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rotated_under_load_fails_no_authorised_call() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = TestDir::new("admin-rotation-load");
    dir.write("bot.token", "old-secret\n");
    let admin =
        "[[admin.tokens]]\nname = \"bot\"\nrole = \"operate\"\ntoken_file = \"bot.token\"\n";
    let (_proxy, addr) = start(&dir, admin).await;
    let rotated = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Half the clients switch to the new token as soon as it is written,
    // the other half 300 ms later (each re-reads its secret on its own).
    let clients: Vec<_> = (0..6)
        .map(|n| {
            let (rotated, stop) = (Arc::clone(&rotated), Arc::clone(&stop));
            let (calls, failed) = (Arc::clone(&calls), Arc::clone(&failed));
            tokio::spawn(async move {
                let mut switched_at = None;
                while !stop.load(Ordering::Relaxed) {
                    if rotated.load(Ordering::Relaxed) && switched_at.is_none() {
                        let late = if n % 2 == 0 { 0 } else { 300 };
                        switched_at =
                            Some(tokio::time::Instant::now() + Duration::from_millis(late));
                    }
                    let new = switched_at.is_some_and(|at| tokio::time::Instant::now() >= at);
                    let token = if new { "new-secret" } else { "old-secret" };
                    let status = routes_status(addr, token).await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    if status != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("client {n} ({token}) got {status}");
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Written beside and renamed over, as a secret manager does.
    dir.write("bot.token.new", "new-secret\n");
    std::fs::rename(dir.file("bot.token.new"), dir.file("bot.token")).expect("rotate");
    rotated.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }
    let (calls, failed) = (
        calls.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!("FIGURE rotation under load: {calls} authorised calls, {failed} failed");
    assert!(calls > 100, "only {calls} calls were made");
    assert_eq!(
        failed, 0,
        "{failed} of {calls} authorised calls failed across the rotation"
    );
    // The replaced token is refused once its grace is over.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(routes_status(addr, "old-secret").await, 401);
    assert_eq!(routes_status(addr, "new-secret").await, 200);
}

/// Sends `head` one byte every 100 ms on `stream` until it closes or
/// `limit` passes; how long it stayed open (`None`: still open).
async fn trickle<S>(mut stream: S, head: &[u8], limit: Duration) -> Option<Duration>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = tokio::time::Instant::now();
    let mut buf = [0_u8; 512];
    for byte in head.iter().chain(std::iter::repeat(&b'a')) {
        if started.elapsed() > limit {
            return None;
        }
        if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
            return Some(started.elapsed());
        }
        let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return Some(started.elapsed());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listeners_slowloris_limits_hold_on_tls() {
    use std::sync::Arc;
    let pki = Pki::new("admin-tls-slowloris");
    let server = pki.localhost();
    pki.dir.write("admin.token", "tls-secret\n");
    let text = format!(
        "{}\n[timeouts]\nclient_headers = \"500ms\"\n\n[admin]\ntoken_file = \"admin.token\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        routes(),
        server.cert.display(),
        server.key.display()
    );
    pki.dir.write("config.toml", &text);
    let config = Config::load(&pki.dir.file("config.toml")).expect("test config");
    let proxy = TestProxy::start_config(config, true).await;
    let addr = proxy.admin_addr.expect("admin listener");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki.client_config(&[b"http/1.1"])));
    let limit = Duration::from_secs(3);
    // A handshake trickled a byte at a time, and headers trickled after one.
    let mut slow = Vec::new();
    for _ in 0..5 {
        slow.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            trickle(tcp, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01], limit).await
        }));
        let connector = connector.clone();
        slow.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
            let tls = connector.connect(name, tcp).await.expect("TLS handshake");
            trickle(
                tls,
                b"GET /api/v1/routes HTTP/1.1\r\nHost: a\r\nX-Slow: ",
                limit,
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ctl_status = ctl_with(
        &pki.dir,
        &format!("https://localhost:{}", addr.port()),
        &tls_args(&pki, None),
        &["--token", "tls-secret", "status"],
    )
    .await;
    assert!(
        ctl_status.status.success(),
        "the admin API answers others during the attack: {}",
        describe_output(&ctl_status)
    );
    for task in slow {
        let open = task
            .await
            .expect("slow client")
            .expect("still open after 3 s");
        assert!(
            open < Duration::from_millis(1500),
            "closed only after {open:?} (client_headers is 500ms)"
        );
    }
}
