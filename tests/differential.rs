//! Two paths, one truth (docs/STYLE.md): the same raw request bytes through
//! the HTTP/1.1 fast path (`http1_fast_path = true`) and through hyper's path
//! (`false`), to an origin that records exactly what it parsed; the client's
//! responses and the origin's requests must be the same, except for the
//! differences listed in [`DELIBERATE`].
//!
//! Each case runs on its own: a fresh [`RecordingOrigin`] and a fresh proxy
//! per path (the config differs only in `http1_fast_path`), one client
//! connection each, both paths at once. The proxy is shut down before the
//! origin is looked at, so its pooled upstream connections close and bytes
//! it left on them are recorded: nothing of one case can reach another.
//!
//! ```sh
//! cargo test --test differential -- --nocapture            # table of every difference
//! DIFF_CASES=connection-names cargo test --test differential -- --nocapture   # a subset
//! DIFF_SHOW=connection-names/content-length cargo test --test differential -- --nocapture
//! DIFF_WRITE_SEEDS=fuzz/corpus/h1_differential cargo test --test differential corpus
//! ```
//! `DIFF_CASES` runs only cases whose name contains one of its
//! comma-separated parts; `DIFF_SHOW` prints every fact both paths produced
//! for the matching cases; `DIFF_WRITE_SEEDS` writes each case's bytes to a
//! file there (seeds for the `h1_differential` fuzz target).

pub mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use support::differential::{
    Observation, PROXY_TIMEOUT, Timing, differences, exchange, names_spelled_differently,
    proxy_config,
};
use support::proxy::TestProxy;
use support::recording_origin::{OriginEvent, OriginMode, RecordingOrigin, show};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Differences kept on purpose: case name → why. Any other difference is a
/// bug in one of the two paths. A listed case that agrees fails the test
/// too, so the list never outlives its reason.
const DELIBERATE: &[(&str, &str)] = &[(
    "framing/body-shorter-than-content-length",
    "the fast path reads a body of up to 64 KiB before it sends the request (as NGINX's \
         request buffering does), so a client that stops mid-body is closed after \
         client_headers and the origin sees nothing; hyper's path streams the body and \
         the origin waits with it (504 after response_headers)",
)];

/// Differences that are bugs not fixed yet: reported, listed in
/// docs/RELIABILITY.md, and like [`DELIBERATE`] removed once they agree.
const KNOWN_BUGS: &[(&str, &str)] = &[];

/// How long a client waits for its responses (longer than the proxy's
/// timeouts, so a stalled request ends in what the proxy does about it),
/// and after them for a close.
const TIMING: Timing = Timing {
    overall: Duration::from_millis(PROXY_TIMEOUT.as_millis() as u64 + 1500),
    grace: Duration::from_millis(150),
};

/// Cases run at once (each with two proxies and two origins).
const PARALLEL: usize = 6;

/// How long the origin is given to see the proxy's connections close.
const ORIGIN_SETTLE: Duration = Duration::from_millis(500);

/// Every difference is fixed, deliberate ([`DELIBERATE`]) or a known open bug
/// ([`KNOWN_BUGS`]); docs/RELIABILITY.md, "Differential suite", D1-D8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_paths_agree() {
    let cases = selected(corpus());
    let results = run(&cases, true, false).await;
    let report = Report::new(&cases, &results, ["fast", "hyper"]);
    report.print("fast path vs hyper's path");
    let unexplained: Vec<&str> = report
        .differing
        .iter()
        .filter(|d| deliberate(&d.name).is_none())
        .map(|d| d.name.as_str())
        .collect();
    let stale: Vec<&str> = DELIBERATE
        .iter()
        .chain(KNOWN_BUGS)
        .map(|(name, _)| *name)
        .filter(|name| cases.iter().any(|c| c.name == *name))
        .filter(|name| !report.differing.iter().any(|d| d.name == *name))
        .collect();
    assert!(
        stale.is_empty(),
        "listed in DELIBERATE but the paths agree now: remove {stale:?}"
    );
    assert!(
        unexplained.is_empty(),
        "{} of {} cases differ between the fast path and hyper's path \
         (run with --nocapture for the table): {unexplained:?}",
        unexplained.len(),
        cases.len()
    );
}

/// The harness itself has no noise: hyper's path against itself agrees on
/// every case, so a difference above is the proxy's, not the timing's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_path_agrees_with_itself() {
    let cases = selected(corpus());
    let results = run(&cases, false, false).await;
    let report = Report::new(&cases, &results, ["hyper", "hyper"]);
    report.print("hyper's path vs itself");
    assert!(
        report.differing.is_empty(),
        "the harness is not deterministic: {:?}",
        report
            .differing
            .iter()
            .map(|d| d.line())
            .collect::<Vec<_>>()
    );
}

#[test]
fn corpus_has_at_least_200_distinct_cases() {
    let cases = corpus();
    let mut names = HashSet::new();
    let mut inputs = HashSet::new();
    for case in &cases {
        assert!(names.insert(case.name.clone()), "duplicate {}", case.name);
        assert!(
            inputs.insert(case.bytes()),
            "{} sends the same bytes as another case",
            case.name
        );
    }
    assert!(cases.len() >= 200, "only {} cases", cases.len());
    for (name, _) in DELIBERATE.iter().chain(KNOWN_BUGS) {
        assert!(names.contains(*name), "DELIBERATE names no case {name}");
    }
    if let Ok(dir) = std::env::var("DIFF_WRITE_SEEDS") {
        std::fs::create_dir_all(&dir).expect("seed dir");
        for case in &cases {
            let file: String = case
                .name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            std::fs::write(format!("{dir}/{file}"), case.bytes()).expect("write seed");
        }
    }
}

fn deliberate(name: &str) -> Option<&'static str> {
    DELIBERATE
        .iter()
        .chain(KNOWN_BUGS)
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why)
}

// ---------------------------------------------------------------------------
// Running cases
// ---------------------------------------------------------------------------

/// What both sides of one case saw.
struct Outcome {
    first: Observation,
    second: Observation,
}

/// Runs every case through two proxies: `first_fast` / `second_fast` say
/// whether each has the fast path on.
async fn run(cases: &[Case], first_fast: bool, second_fast: bool) -> Vec<Outcome> {
    let permits = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = JoinSet::new();
    for (index, case) in cases.iter().enumerate() {
        let bytes = Arc::new(case.bytes());
        let heads = Arc::new(case.heads());
        let permits = Arc::clone(&permits);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            let (first, second) = tokio::join!(
                observe(first_fast, &bytes, &heads),
                observe(second_fast, &bytes, &heads)
            );
            (index, Outcome { first, second })
        });
    }
    let mut outcomes: Vec<Option<Outcome>> = (0..cases.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, outcome) = joined.expect("case task");
        outcomes[index] = Some(outcome);
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every case ran"))
        .collect()
}

/// One path, one case: its own origin and proxy, one client connection.
async fn observe(fast_path: bool, bytes: &[u8], heads: &[bool]) -> Observation {
    observe_with(fast_path, bytes, heads, TIMING).await
}

async fn observe_with(
    fast_path: bool,
    bytes: &[u8],
    heads: &[bool],
    timing: Timing,
) -> Observation {
    let origin = RecordingOrigin::start(OriginMode::KeepAlive).await;
    let proxy = TestProxy::start(&proxy_config(origin.addr, fast_path)).await;
    let client = exchange(proxy.addr, bytes, heads, timing).await;
    // Closes its pooled upstream connections: what it left on them is seen.
    let _ = proxy.shutdown().await;
    origin.wait_closed(ORIGIN_SETTLE).await;
    Observation {
        client,
        origin: origin.events(),
    }
}

/// One case that differed.
struct Differing {
    name: String,
    /// What each side got, in a few words, labelled.
    sides: String,
    details: Vec<String>,
}

impl Differing {
    fn line(&self) -> String {
        format!(
            "{}: {} :: {}",
            self.name,
            self.sides,
            self.details.join("; ")
        )
    }
}

struct Report {
    cases: usize,
    differing: Vec<Differing>,
    /// Cases whose origin saw field names spelled differently (normalised).
    spelled_differently: usize,
}

impl Report {
    fn new(cases: &[Case], outcomes: &[Outcome], labels: [&str; 2]) -> Report {
        let show: Vec<String> = std::env::var("DIFF_SHOW")
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let mut differing = Vec::new();
        let mut spelled_differently = 0;
        for (case, outcome) in cases.iter().zip(outcomes) {
            if show
                .iter()
                .any(|s| !s.is_empty() && case.name.contains(s.as_str()))
            {
                println!("=== {}\n--- bytes: {}", case.name, show_all(&case.bytes()));
                for (label, obs) in labels.iter().zip([&outcome.first, &outcome.second]) {
                    println!("--- {label} (client done after {:?})", obs.client.elapsed);
                    for (what, value) in obs.facts() {
                        println!("    {what}: {value}");
                    }
                }
            }
            if names_spelled_differently(&outcome.first, &outcome.second) {
                spelled_differently += 1;
            }
            let details = differences(&outcome.first, &outcome.second, labels);
            if !details.is_empty() {
                differing.push(Differing {
                    name: case.name.clone(),
                    sides: format!(
                        "{}[{}] {}[{}]",
                        labels[0],
                        summary(&outcome.first),
                        labels[1],
                        summary(&outcome.second)
                    ),
                    details,
                });
            }
        }
        Report {
            cases: cases.len(),
            differing,
            spelled_differently,
        }
    }

    fn print(&self, title: &str) {
        let deliberate_count = self
            .differing
            .iter()
            .filter(|d| deliberate(&d.name).is_some())
            .count();
        println!(
            "\ndifferential suite ({title}): {} cases, {} agree, {} differ \
             ({} deliberate, {} unexplained); field names spelled differently \
             at the origin in {} cases (normalised)",
            self.cases,
            self.cases - self.differing.len(),
            self.differing.len(),
            deliberate_count,
            self.differing.len() - deliberate_count,
            self.spelled_differently
        );
        for d in &self.differing {
            match deliberate(&d.name) {
                Some(why) => println!("DELIBERATE {} ({why})", d.line()),
                None => println!("DIFF {}", d.line()),
            }
        }
    }
}

/// The client's statuses and what the origin got, in a few words.
fn summary(obs: &Observation) -> String {
    let mut requests = 0;
    let mut unparsable = 0;
    let mut incomplete = 0;
    for event in &obs.origin {
        match event {
            OriginEvent::Request(_) => requests += 1,
            OriginEvent::Unparsable { .. } => unparsable += 1,
            OriginEvent::Incomplete { .. } => incomplete += 1,
        }
    }
    let mut origin = vec![format!("{requests} req")];
    if unparsable > 0 {
        origin.push(format!("{unparsable} unparsable"));
    }
    if incomplete > 0 {
        origin.push(format!("{incomplete} incomplete"));
    }
    format!("{} | origin {}", obs.client_summary(), origin.join(" + "))
}

fn show_all(bytes: &[u8]) -> String {
    if bytes.len() <= 600 {
        bytes
            .iter()
            .flat_map(|&b| std::ascii::escape_default(b))
            .map(char::from)
            .collect()
    } else {
        show(bytes)
    }
}

/// The corpus, or the cases `DIFF_CASES` names.
fn selected(cases: Vec<Case>) -> Vec<Case> {
    match std::env::var("DIFF_CASES") {
        Ok(filter) if !filter.is_empty() => cases
            .into_iter()
            .filter(|c| filter.split(',').any(|f| c.name.contains(f)))
            .collect(),
        _ => cases,
    }
}

// ---------------------------------------------------------------------------
// The corpus: request variants generated from dimensions
// ---------------------------------------------------------------------------

/// One input: requests sent back to back on one connection.
struct Case {
    name: String,
    requests: Vec<Req>,
}

impl Case {
    fn bytes(&self) -> Vec<u8> {
        self.requests.iter().flat_map(Req::render).collect()
    }

    fn heads(&self) -> Vec<bool> {
        self.requests.iter().map(|r| r.method == "HEAD").collect()
    }
}

/// A request to render byte for byte.
#[derive(Clone)]
struct Req {
    /// Sent as is instead of being rendered (for syntax the builder
    /// cannot write).
    raw: Option<Vec<u8>>,
    method: String,
    target: Vec<u8>,
    version: &'static str,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    body: Body,
}

#[derive(Clone)]
enum Body {
    None,
    /// `Content-Length` added after the other fields.
    Length(Vec<u8>),
    /// `Transfer-Encoding: chunked` added; 16 KiB chunks.
    Chunked(Vec<u8>),
    /// Chunked encoding, no field added (the case writes its own).
    ChunkedBare(Vec<u8>),
    /// These bytes after the head, no field added.
    Raw(Vec<u8>),
}

const HOST: &str = "web.test";

impl Req {
    fn new(method: &str, target: impl AsRef<[u8]>) -> Req {
        Req {
            raw: None,
            method: method.to_string(),
            target: target.as_ref().to_vec(),
            version: "HTTP/1.1",
            fields: vec![
                (b"Host".to_vec(), HOST.as_bytes().to_vec()),
                (b"User-Agent".to_vec(), b"differential/1".to_vec()),
                (b"Accept".to_vec(), b"*/*".to_vec()),
            ],
            body: Body::None,
        }
    }

    fn get(target: impl AsRef<[u8]>) -> Req {
        Req::new("GET", target)
    }

    /// A POST of [`SMALL`] with `Content-Length`.
    fn post() -> Req {
        Req::new("POST", "/p").body(Body::Length(SMALL.to_vec()))
    }

    fn field(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Req {
        self.fields
            .push((name.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }

    fn without(mut self, name: &str) -> Req {
        self.fields
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_bytes()));
        self
    }

    /// Replaces the value of `name` (keeping its place and spelling).
    fn set(mut self, name: &str, value: impl AsRef<[u8]>) -> Req {
        for (n, v) in &mut self.fields {
            if n.eq_ignore_ascii_case(name.as_bytes()) {
                *v = value.as_ref().to_vec();
            }
        }
        self
    }

    fn body(mut self, body: Body) -> Req {
        self.body = body;
        self
    }

    fn version(mut self, version: &'static str) -> Req {
        self.version = version;
        self
    }

    /// `bytes` verbatim; `method` for reading the response (HEAD or not).
    fn raw(method: &str, bytes: impl AsRef<[u8]>) -> Req {
        Req {
            raw: Some(bytes.as_ref().to_vec()),
            ..Req::new(method, "/")
        }
    }

    fn render(&self) -> Vec<u8> {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let mut out = Vec::new();
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.push(b' ');
        out.extend_from_slice(self.version.as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut fields = self.fields.clone();
        match &self.body {
            Body::Length(body) => {
                fields.push((
                    b"Content-Length".to_vec(),
                    body.len().to_string().into_bytes(),
                ));
            }
            Body::Chunked(_) => fields.push((b"Transfer-Encoding".to_vec(), b"chunked".to_vec())),
            Body::None | Body::ChunkedBare(_) | Body::Raw(_) => {}
        }
        for (name, value) in &fields {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        match &self.body {
            Body::None => {}
            Body::Length(body) | Body::Raw(body) => out.extend_from_slice(body),
            Body::Chunked(body) | Body::ChunkedBare(body) => out.extend(chunked(body)),
        }
        out
    }
}

/// `body` in 16 KiB chunks, then the last chunk.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(16 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

const SMALL: &[u8] = b"hello";
/// Extra header fields for a variant.
type Fields = &'static [(&'static str, &'static str)];
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE",
];

/// `len` bytes of every value 0..=255 in turn.
fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The named body sizes the framing dimensions combine with.
fn bodies() -> [(&'static str, Vec<u8>); 3] {
    [
        ("empty", Vec::new()),
        ("small", SMALL.to_vec()),
        ("70k", binary(70 * 1024)),
    ]
}

/// `name` spelled four ways.
fn spellings(name: &str) -> [(&'static str, String); 4] {
    let title = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-");
    let mixed = name
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    [
        ("lower", name.to_ascii_lowercase()),
        ("upper", name.to_ascii_uppercase()),
        ("title", title),
        ("mixed", mixed),
    ]
}

struct Corpus(Vec<Case>);

impl Corpus {
    fn add(&mut self, name: impl Into<String>, requests: Vec<Req>) {
        self.0.push(Case {
            name: name.into(),
            requests,
        });
    }

    fn one(&mut self, name: impl Into<String>, req: Req) {
        self.add(name, vec![req]);
    }
}

/// Every case, generated from the dimensions below.
fn corpus() -> Vec<Case> {
    let mut c = Corpus(Vec::new());
    methods_and_targets(&mut c);
    name_case(&mut c);
    repeated_fields(&mut c);
    hop_by_hop(&mut c);
    connection_names_framing(&mut c);
    framing(&mut c);
    obs_text(&mut c);
    long_values(&mut c);
    expect(&mut c);
    head(&mut c);
    absolute_form(&mut c);
    odd_paths(&mut c);
    body_sizes(&mut c);
    pipelined(&mut c);
    versions(&mut c);
    syntax(&mut c);
    extension_methods(&mut c);
    found_by_fuzzing(&mut c);
    c.0
}

/// Every method × the targets; POST, PUT and PATCH carry a small body.
fn methods_and_targets(c: &mut Corpus) {
    let long = format!("/{}", "l".repeat(8 * 1024));
    let targets = [
        ("root", "/"),
        ("query", "/a?b=c"),
        ("double-slash", "//double"),
        ("encoded-dot-dot", "/%2e%2e/"),
        ("fragment", "/a#frag"),
        ("absolute", "http://web.test/p"),
        ("dot-segments", "/a/../b"),
        ("long-8k", long.as_str()),
    ];
    for method in METHODS {
        for (target_name, target) in targets {
            let mut req = Req::new(method, target);
            if matches!(method, "POST" | "PUT" | "PATCH") {
                req = req.body(Body::Length(SMALL.to_vec()));
            }
            c.one(format!("method-target/{method}/{target_name}"), req);
        }
    }
}

/// Field names spelled in lower, upper, title and mixed case.
fn name_case(c: &mut Corpus) {
    let fields = [
        ("host", HOST),
        ("content-length", "5"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("x-forwarded-for", "10.1.1.1"),
        ("x-forwarded-client-cert", "Subject=\"CN=admin\""),
        ("x-custom", "v"),
        ("te", "trailers"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
    ];
    for (name, value) in fields {
        for (style, spelled) in spellings(name) {
            let req = match name {
                "host" => Req::get("/n").without("host").field(&spelled, value),
                "content-length" => Req::new("POST", "/n")
                    .field(&spelled, value)
                    .body(Body::Raw(SMALL.to_vec())),
                "transfer-encoding" => Req::new("POST", "/n")
                    .field(&spelled, value)
                    .body(Body::ChunkedBare(SMALL.to_vec())),
                _ => Req::get("/n").field(&spelled, value),
            };
            c.one(format!("name-case/{name}/{style}"), req);
        }
    }
}

/// Fields given twice, lists, a missing or odd Host, forwarding fields
/// from the client.
fn repeated_fields(c: &mut Corpus) {
    let hosts: [(&str, &[&str]); 9] = [
        ("two-host-same", &["web.test", "web.test"]),
        ("two-host-differing", &["web.test", "other.test"]),
        ("host-then-empty-host", &["web.test", ""]),
        ("host-missing", &[]),
        ("host-empty", &[""]),
        ("host-with-port", &["web.test:8080"]),
        ("host-upper-case", &["WEB.TEST"]),
        ("host-trailing-dot", &["web.test."]),
        ("host-with-space", &["web test"]),
    ];
    for (name, values) in hosts {
        for (method, base) in [("get", Req::get("/")), ("post", Req::post())] {
            let mut req = base.without("host");
            for value in values {
                req = req.field("Host", value);
            }
            c.one(format!("repeated/{name}/{method}"), req);
        }
    }
    let lengths: [(&str, &[&str]); 6] = [
        ("two-content-length-equal", &["5", "5"]),
        ("two-content-length-differing", &["5", "6"]),
        ("content-length-list-equal", &["5, 5"]),
        ("content-length-list-differing", &["5, 6"]),
        ("content-length-plus-sign", &["+5"]),
        ("content-length-leading-zeros", &["005"]),
    ];
    for (name, values) in lengths {
        let mut req = Req::new("POST", "/p");
        for value in values {
            req = req.field("Content-Length", value);
        }
        c.one(
            format!("repeated/{name}"),
            req.body(Body::Raw(b"hello!".to_vec())),
        );
    }
    let others: [(&str, &[(&str, &str)]); 9] = [
        (
            "client-x-forwarded-client-cert",
            &[
                ("X-Forwarded-Client-Cert", "Subject=\"CN=admin\""),
                ("X-Forwarded-Client-Cert", "By=spiffe://evil"),
            ],
        ),
        (
            "two-x-forwarded-for",
            &[
                ("X-Forwarded-For", "10.0.0.1"),
                ("X-Forwarded-For", "10.0.0.2"),
            ],
        ),
        (
            "x-forwarded-for-list",
            &[("X-Forwarded-For", "10.0.0.1, 10.0.0.2")],
        ),
        (
            "client-x-forwarded-host",
            &[("X-Forwarded-Host", "evil.test")],
        ),
        (
            "client-x-forwarded-proto",
            &[("X-Forwarded-Proto", "https")],
        ),
        ("two-cookie", &[("Cookie", "a=1"), ("Cookie", "b=2")]),
        ("two-x-custom", &[("X-Custom", "1"), ("X-Custom", "2")]),
        (
            "two-accept-split",
            &[
                ("Accept", "text/html"),
                ("X-Between", "1"),
                ("Accept", "text/plain"),
            ],
        ),
        (
            "client-forwarded",
            &[("Forwarded", "for=10.0.0.1;proto=https")],
        ),
    ];
    for (name, fields) in others {
        let mut req = Req::get("/");
        for (n, v) in fields {
            req = req.field(n, v);
        }
        c.one(format!("repeated/{name}"), req);
    }
}

/// Hop-by-hop fields, and fields a `Connection` header names, on a GET and
/// on a POST with a small body.
fn hop_by_hop(c: &mut Corpus) {
    let many: Vec<(String, String)> = (1..=10)
        .map(|i| (format!("X-H{i}"), i.to_string()))
        .collect();
    let many_names: String = (1..=10)
        .map(|i| format!("x-h{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut variants: Vec<(&str, Vec<(String, String)>)> = vec![
        (
            "connection-close",
            vec![("Connection".into(), "close".into())],
        ),
        (
            "connection-keep-alive",
            vec![("Connection".into(), "keep-alive".into())],
        ),
        (
            "connection-x-custom",
            vec![
                ("Connection".into(), "x-custom".into()),
                ("X-Custom".into(), "secret".into()),
            ],
        ),
        (
            "connection-close-x-custom",
            vec![
                ("Connection".into(), "close, x-custom".into()),
                ("X-Custom".into(), "secret".into()),
            ],
        ),
        (
            "connection-named-before",
            vec![
                ("X-Custom".into(), "secret".into()),
                ("Connection".into(), "X-CUSTOM".into()),
            ],
        ),
        (
            "connection-two-fields",
            vec![
                ("Connection".into(), "x-a".into()),
                ("Connection".into(), "x-b".into()),
                ("X-A".into(), "1".into()),
                ("X-B".into(), "2".into()),
            ],
        ),
        (
            "connection-empty",
            vec![("Connection".into(), String::new())],
        ),
        (
            "keep-alive",
            vec![("Keep-Alive".into(), "timeout=5".into())],
        ),
        ("te-trailers", vec![("TE".into(), "trailers".into())]),
        ("te-gzip", vec![("TE".into(), "gzip".into())]),
        (
            "te-trailers-connection-te",
            vec![
                ("TE".into(), "trailers".into()),
                ("Connection".into(), "TE".into()),
            ],
        ),
        (
            "proxy-connection",
            vec![("Proxy-Connection".into(), "keep-alive".into())],
        ),
        (
            "proxy-authorization",
            vec![("Proxy-Authorization".into(), "Basic Zm9vOmJhcg==".into())],
        ),
        (
            "proxy-authenticate",
            vec![("Proxy-Authenticate".into(), "Basic".into())],
        ),
        (
            "upgrade-without-connection",
            vec![("Upgrade".into(), "websocket".into())],
        ),
        (
            "connection-upgrade-without-upgrade",
            vec![("Connection".into(), "upgrade".into())],
        ),
        (
            "upgrade-h2c",
            vec![
                ("Connection".into(), "Upgrade, HTTP2-Settings".into()),
                ("Upgrade".into(), "h2c".into()),
                ("HTTP2-Settings".into(), "AAMAAABkAAQAAP__".into()),
            ],
        ),
        ("trailer-field", vec![("Trailer".into(), "x-t".into())]),
    ];
    let mut with_many = vec![("Connection".to_string(), many_names)];
    with_many.extend(many);
    variants.push(("connection-ten-names", with_many));
    for (name, fields) in variants {
        for (method, base) in [("get", Req::get("/")), ("post", Req::post())] {
            let mut req = base;
            for (n, v) in &fields {
                req = req.field(n, v);
            }
            c.one(format!("hop-by-hop/{name}/{method}"), req);
        }
    }
}

/// `Connection` naming fields that frame or route the request: a proxy
/// that drops them as hop-by-hop but forwards the body has smuggled it.
/// Each alone, followed by a pipelined GET, and on a GET without a body.
fn connection_names_framing(c: &mut Corpus) {
    let named: [(&str, &str, Fields); 12] = [
        ("content-length", "Content-Length", &[]),
        (
            "keep-alive-content-length",
            "keep-alive, content-LENGTH",
            &[],
        ),
        ("close-content-length", "close, Content-Length", &[]),
        ("transfer-encoding", "Transfer-Encoding", &[]),
        ("host", "Host", &[]),
        (
            "x-forwarded-for",
            "X-Forwarded-For",
            &[("X-Forwarded-For", "10.0.0.1")],
        ),
        (
            "x-forwarded-host",
            "X-Forwarded-Host",
            &[("X-Forwarded-Host", "evil.test")],
        ),
        ("date", "Date", &[("Date", "Tue, 01 Dec 2026 00:00:00 GMT")]),
        ("cookie", "Cookie", &[("Cookie", "a=1")]),
        (
            "content-type",
            "Content-Type",
            &[("Content-Type", "text/plain")],
        ),
        (
            "authorization",
            "Authorization",
            &[("Authorization", "Bearer x")],
        ),
        ("expect", "Expect", &[("Expect", "100-continue")]),
    ];
    for (name, connection, extra) in named {
        let body = if name == "transfer-encoding" {
            Body::Chunked(SMALL.to_vec())
        } else {
            Body::Length(SMALL.to_vec())
        };
        let base = |method: &str, body: Body| {
            let mut req = Req::new(method, "/p").field("Connection", connection);
            for (n, v) in extra {
                req = req.field(n, v);
            }
            req.body(body)
        };
        c.one(
            format!("connection-names/{name}/post"),
            base("POST", body.clone()),
        );
        c.add(
            format!("connection-names/{name}/post-then-get"),
            vec![base("POST", body), Req::get("/smuggled")],
        );
        c.one(
            format!("connection-names/{name}/get"),
            base("GET", Body::None),
        );
    }
    // A whole request as the body: whoever drops the framing field makes
    // the origin see two requests where the client sent one.
    let inner = b"GET /inner HTTP/1.1\r\nHost: web.test\r\n\r\n".to_vec();
    for connection in ["Content-Length", "close, Content-Length"] {
        let name = connection.replace(", ", "-").to_ascii_lowercase();
        c.add(
            format!("connection-names/{name}/request-in-body-then-get"),
            vec![
                Req::new("POST", "/p")
                    .field("Connection", connection)
                    .body(Body::Length(inner.clone())),
                Req::get("/next"),
            ],
        );
    }
}

/// `Transfer-Encoding` / `Content-Length` combinations × body sizes.
fn framing(c: &mut Corpus) {
    for (size, body) in bodies() {
        let encoded_len = chunked(&body).len().to_string();
        let variants: [(&str, Req); 9] = [
            (
                "cl",
                Req::new("POST", "/p").body(Body::Length(body.clone())),
            ),
            (
                "chunked",
                Req::new("POST", "/p").body(Body::Chunked(body.clone())),
            ),
            (
                "cl-then-te",
                Req::new("POST", "/p")
                    .field("Content-Length", &encoded_len)
                    .field("Transfer-Encoding", "chunked")
                    .body(Body::ChunkedBare(body.clone())),
            ),
            (
                "te-then-cl",
                Req::new("POST", "/p")
                    .field("Transfer-Encoding", "chunked")
                    .field("Content-Length", &encoded_len)
                    .body(Body::ChunkedBare(body.clone())),
            ),
            (
                "te-gzip-chunked",
                Req::new("POST", "/p")
                    .field("Transfer-Encoding", "gzip, chunked")
                    .body(Body::ChunkedBare(body.clone())),
            ),
            (
                "te-chunked-gzip",
                Req::new("POST", "/p")
                    .field("Transfer-Encoding", "chunked, gzip")
                    .body(Body::ChunkedBare(body.clone())),
            ),
            (
                "te-identity",
                Req::new("POST", "/p")
                    .field("Transfer-Encoding", "identity")
                    .body(Body::Raw(body.clone())),
            ),
            (
                "te-upper-case",
                Req::new("POST", "/p")
                    .field("Transfer-Encoding", "CHUNKED")
                    .body(Body::ChunkedBare(body.clone())),
            ),
            (
                "te-two-fields",
                Req::new("POST", "/p")
                    .field("Transfer-Encoding", "gzip")
                    .field("Transfer-Encoding", "chunked")
                    .body(Body::ChunkedBare(body.clone())),
            ),
        ];
        for (name, req) in variants {
            c.one(format!("framing/{name}/{size}"), req);
        }
    }
    c.one(
        "framing/chunked-extension",
        Req::new("POST", "/p")
            .field("Transfer-Encoding", "chunked")
            .body(Body::Raw(b"5;ext=1\r\nhello\r\n0\r\n\r\n".to_vec())),
    );
    c.one(
        "framing/chunked-trailer",
        Req::new("POST", "/p")
            .field("Transfer-Encoding", "chunked")
            .body(Body::Raw(
                b"5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
            )),
    );
    c.one(
        "framing/body-shorter-than-content-length",
        Req::new("POST", "/p")
            .field("Content-Length", "10")
            .body(Body::Raw(SMALL.to_vec())),
    );
    c.one(
        "framing/chunked-cut-short",
        Req::new("POST", "/p")
            .field("Transfer-Encoding", "chunked")
            .body(Body::Raw(b"4000\r\nhello".to_vec())),
    );
    c.one(
        "framing/body-longer-than-content-length",
        Req::new("POST", "/p")
            .field("Content-Length", "3")
            .body(Body::Raw(SMALL.to_vec())),
    );
    c.one(
        "framing/get-with-body",
        Req::get("/").body(Body::Length(SMALL.to_vec())),
    );
}

/// Bytes 0x80-0xff in field values.
fn obs_text(c: &mut Corpus) {
    let patterns: [(&str, &[u8]); 5] = [
        ("0x80", b"\x80"),
        ("0xa0", b"a\xa0b"),
        ("0xff", b"\xff"),
        ("utf8", "caf\u{e9}".as_bytes()),
        ("mixed", b"a\xffb c\x80d"),
    ];
    for field in ["X-Custom", "User-Agent", "Cookie"] {
        for (name, value) in patterns {
            let req = if field == "User-Agent" {
                Req::get("/").set("User-Agent", value)
            } else {
                Req::get("/").field(field, value)
            };
            c.one(
                format!("obs-text/{}/{name}", field.to_ascii_lowercase()),
                req,
            );
        }
    }
    c.one(
        "obs-text/host/0xff",
        Req::get("/").set("Host", b"web\xff.test"),
    );
    c.one(
        "obs-text/host/utf8",
        Req::get("/").set("Host", "w\u{e9}b.test".as_bytes()),
    );
    c.one("obs-text/target", Req::get(b"/caf\xc3\xa9"));
}

/// Long values, and header counts at and past the limit.
fn long_values(c: &mut Corpus) {
    let kib8 = "v".repeat(8 * 1024);
    c.one("long/x-custom-8k", Req::get("/").field("X-Custom", &kib8));
    c.one(
        "long/cookie-8k",
        Req::get("/").field("Cookie", format!("a={kib8}")),
    );
    c.one("long/user-agent-8k", Req::get("/").set("User-Agent", &kib8));
    c.one(
        "long/query-8k",
        Req::get(format!("/q?{}", "q".repeat(8 * 1024))),
    );
    c.one(
        "long/name-8k",
        Req::get("/").field("x".repeat(8 * 1024), "1"),
    );
    c.one(
        "long/value-60k",
        Req::get("/").field("X-Custom", "v".repeat(60 * 1024)),
    );
    c.one(
        "long/head-70k",
        Req::get("/").field("X-Custom", "v".repeat(70 * 1024)),
    );
    for count in [97, 98] {
        // 3 default fields + `count`: 100 fields is the limit, 101 is past it.
        let mut req = Req::get("/");
        for i in 0..count {
            req = req.field(format!("X-F{i}"), "1");
        }
        c.one(format!("long/{}-fields", count + 3), req);
    }
    let mut req = Req::post();
    for i in 0..96 {
        req = req.field(format!("X-F{i}"), "1");
    }
    c.one("long/100-fields-with-content-length", req);
}

/// `Expect` in its forms.
fn expect(c: &mut Corpus) {
    c.one(
        "expect/100-continue/small",
        Req::post().field("Expect", "100-continue"),
    );
    c.one(
        "expect/100-continue/70k",
        Req::new("POST", "/p")
            .field("Expect", "100-continue")
            .body(Body::Length(binary(70 * 1024))),
    );
    c.one(
        "expect/100-continue/chunked",
        Req::new("PUT", "/p")
            .field("Expect", "100-continue")
            .body(Body::Chunked(SMALL.to_vec())),
    );
    c.one(
        "expect/100-continue/get-no-body",
        Req::get("/").field("Expect", "100-continue"),
    );
    c.one(
        "expect/100-continue/upper-case",
        Req::post().field("Expect", "100-Continue"),
    );
    c.one("expect/unknown", Req::post().field("Expect", "something"));
    c.one(
        "expect/100-continue/http10",
        Req::post()
            .field("Expect", "100-continue")
            .version("HTTP/1.0"),
    );
}

fn head(c: &mut Corpus) {
    c.one(
        "head/connection-close",
        Req::new("HEAD", "/").field("Connection", "close"),
    );
    c.one(
        "head/with-body",
        Req::new("HEAD", "/").body(Body::Length(SMALL.to_vec())),
    );
    c.add(
        "head/then-get",
        vec![Req::new("HEAD", "/h"), Req::get("/after-head")],
    );
    c.one("head/http10", Req::new("HEAD", "/").version("HTTP/1.0"));
    c.one(
        "head/query",
        Req::new("HEAD", "/h?x=1").field("Accept", "text/html"),
    );
}

fn absolute_form(c: &mut Corpus) {
    c.one("absolute/no-path", Req::get("http://web.test"));
    c.one("absolute/port-query", Req::get("http://web.test:80/p?q=1"));
    c.one("absolute/other-host", Req::get("http://other.test/p"));
    c.one(
        "absolute/no-host-field",
        Req::get("http://web.test/p").without("host"),
    );
    c.one("absolute/https", Req::get("https://web.test/p"));
    c.one("absolute/upper-case", Req::get("HTTP://WEB.TEST/p"));
    c.one(
        "absolute/post",
        Req::new("POST", "http://web.test/post").body(Body::Length(SMALL.to_vec())),
    );
    c.one("absolute/userinfo", Req::get("http://user@web.test/p"));
    c.one("absolute/asterisk-get", Req::get("*"));
}

fn odd_paths(c: &mut Corpus) {
    c.one("path/options-asterisk", Req::new("OPTIONS", "*"));
    let paths: [(&str, &[u8]); 15] = [
        ("semicolon", b"/a;b"),
        ("encoded-nul", b"/%00"),
        ("encoded-slash", b"/a%2Fb"),
        ("empty-query", b"/?"),
        ("two-question-marks", b"/??"),
        ("backslash", b"/\\x"),
        ("dot", b"/."),
        ("dot-dot", b"/.."),
        ("tilde", b"/~user"),
        ("ampersand-query", b"/a?b=c&d"),
        ("bad-percent", b"/%zz"),
        ("two-slashes", b"//"),
        ("inner-double-slash", b"/a//b"),
        ("empty-fragment", b"/#"),
        ("no-leading-slash", b"a/b"),
    ];
    for (name, path) in paths {
        c.one(format!("path/{name}"), Req::get(path));
    }
}

/// Body sizes around the fast path's 64 KiB buffering limit.
fn body_sizes(c: &mut Corpus) {
    let sizes = [
        ("0", 0),
        ("1", 1),
        ("16k", 16 * 1024),
        ("64k", 64 * 1024),
        ("64k-plus-1", 64 * 1024 + 1),
        ("70k", 70 * 1024),
    ];
    for method in ["POST", "PUT"] {
        for (name, len) in sizes {
            c.one(
                format!("body/{method}/{name}"),
                Req::new(method, "/b").body(Body::Length(binary(len))),
            );
        }
    }
}

/// Two requests in one write.
fn pipelined(c: &mut Corpus) {
    let pairs: [(&str, Req, Req); 11] = [
        ("get-get", Req::get("/1"), Req::get("/2")),
        ("post-get", Req::post(), Req::get("/2")),
        (
            "close-get",
            Req::get("/1").field("Connection", "close"),
            Req::get("/2"),
        ),
        (
            "chunked-get",
            Req::new("POST", "/1").body(Body::Chunked(SMALL.to_vec())),
            Req::get("/2"),
        ),
        (
            "get-post-70k",
            Req::get("/1"),
            Req::new("POST", "/2").body(Body::Length(binary(70 * 1024))),
        ),
        (
            "post-70k-get",
            Req::new("POST", "/1").body(Body::Length(binary(70 * 1024))),
            Req::get("/2"),
        ),
        (
            "expect-get",
            Req::post().field("Expect", "100-continue"),
            Req::get("/2"),
        ),
        (
            "get-absolute",
            Req::get("/1"),
            Req::get("http://web.test/2"),
        ),
        (
            "get-malformed",
            Req::get("/1"),
            Req::get("/2").field("X-Fold", "a\r\n folded"),
        ),
        (
            "get-http10",
            Req::get("/1"),
            Req::get("/2").version("HTTP/1.0"),
        ),
        (
            "get-no-host",
            Req::get("/1"),
            Req::get("/2").without("host"),
        ),
    ];
    for (name, first, second) in pairs {
        c.add(format!("pipelined/{name}"), vec![first, second]);
    }
}

fn versions(c: &mut Corpus) {
    c.one("version/http10-get", Req::get("/").version("HTTP/1.0"));
    c.one(
        "version/http10-keep-alive",
        Req::get("/")
            .field("Connection", "keep-alive")
            .version("HTTP/1.0"),
    );
    c.one("version/http10-post", Req::post().version("HTTP/1.0"));
    c.one(
        "version/http10-no-host",
        Req::get("/").without("host").version("HTTP/1.0"),
    );
    c.one("version/http12", Req::get("/").version("HTTP/1.2"));
    c.one("version/http20-over-h1", Req::get("/").version("HTTP/2.0"));
}

/// Whitespace, line ends and list syntax the fast path parses itself.
fn syntax(c: &mut Corpus) {
    let heads: [(&str, &str, &[u8]); 12] = [
        ("value-spaces-around", "GET", b"GET / HTTP/1.1\r\nHost: web.test\r\nX-Custom:   v   \r\n\r\n"),
        ("value-tabs-around", "GET", b"GET / HTTP/1.1\r\nHost: web.test\r\nX-Custom:\tv\t\r\n\r\n"),
        ("value-inner-tab", "GET", b"GET / HTTP/1.1\r\nHost: web.test\r\nX-Custom: a\tb\r\n\r\n"),
        ("value-empty", "GET", b"GET / HTTP/1.1\r\nHost: web.test\r\nX-Empty:\r\n\r\n"),
        ("no-space-after-colon", "GET", b"GET / HTTP/1.1\r\nHost:web.test\r\nX-Custom:v\r\n\r\n"),
        ("bare-lf", "GET", b"GET / HTTP/1.1\nHost: web.test\nX-Custom: v\n\n"),
        ("bare-lf-post", "POST", b"POST /p HTTP/1.1\nHost: web.test\nContent-Length: 5\n\nhello"),
        ("content-length-spaces", "POST", b"POST /p HTTP/1.1\r\nHost: web.test\r\nContent-Length:   5  \r\n\r\nhello"),
        ("host-spaces", "GET", b"GET / HTTP/1.1\r\nHost:   web.test  \r\n\r\n"),
        ("connection-odd-commas", "GET", b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: , x-custom ,,\r\nX-Custom: 1\r\n\r\n"),
        ("connection-close-upper-case", "GET", b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: CLOSE\r\n\r\n"),
        ("connection-keep-alive-then-close", "GET", b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"),
    ];
    for (name, method, bytes) in heads {
        c.one(format!("syntax/{name}"), Req::raw(method, bytes));
    }
    // The fast path remembers up to eight Connection-named fields.
    for count in [8, 9] {
        let names: Vec<String> = (1..=count).map(|i| format!("x-n{i}")).collect();
        let mut req = Req::get("/").field("Connection", names.join(", "));
        for name in &names {
            req = req.field(name, "1");
        }
        c.one(format!("syntax/connection-{count}-names"), req);
    }
}

/// Methods beyond the eight: lower case, extension, WebDAV with a body.
fn extension_methods(c: &mut Corpus) {
    c.one("extension-method/lower-case-get", Req::new("get", "/"));
    c.one("extension-method/foo", Req::new("FOO", "/"));
    c.one("extension-method/m-search", Req::new("M-SEARCH", "*"));
    c.one(
        "extension-method/propfind-body",
        Req::new("PROPFIND", "/dav").body(Body::Length(b"<propfind/>".to_vec())),
    );
    c.one(
        "extension-method/connect",
        Req::new("CONNECT", "web.test:443").set("Host", "web.test:443"),
    );
}

/// Inputs the `h1_differential` fuzz target found, kept as cases.
fn found_by_fuzzing(c: &mut Corpus) {
    // A bad byte in a field name of a request whose head has not ended yet.
    let bad_name = b"GET /2 HTTP/1.1\r\nHost: web.test\r\nUser-\xbf\x98: 1\r\n".to_vec();
    c.add(
        "found-by-fuzzing/get-then-bad-name-unfinished-head",
        vec![Req::get("/1"), Req::raw("GET", &bad_name)],
    );
    c.one(
        "found-by-fuzzing/bad-name-unfinished-head",
        Req::raw("GET", &bad_name),
    );
    c.add(
        "found-by-fuzzing/get-then-line-without-colon-unfinished-head",
        vec![
            Req::get("/1"),
            Req::raw(
                "GET",
                b"GET /2 HTTP/1.1\r\nHost: web.test\r\nGET / HTTP/1.1\r\nX-Custom: v",
            ),
        ],
    );
    let mut finished = bad_name;
    finished.extend_from_slice(b"\r\n");
    c.one(
        "found-by-fuzzing/bad-name-finished-head",
        Req::raw("GET", &finished),
    );
}

/// A kept-alive connection left idle for longer than `client_headers` (but
/// far less than `client_idle`) is kept, or closed, alike by both paths.
/// Fails today (D8 in docs/RELIABILITY.md): hyper's path closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known bug: hyper's path closes an idle keep-alive connection after client_headers"]
async fn idle_keep_alive_connection_is_treated_alike() {
    let bytes = Req::get("/idle").render();
    let idle = PROXY_TIMEOUT + Duration::from_secs(1);
    let waiting = Timing {
        overall: idle,
        grace: idle,
    };
    let (fast, hyper) = tokio::join!(
        observe_with(true, &bytes, &[false], waiting),
        observe_with(false, &bytes, &[false], waiting)
    );
    println!(
        "idle {idle:?} after a response: fast closed {} (after {:?}), hyper closed {} (after {:?})",
        fast.client.closed, fast.client.elapsed, hyper.client.closed, hyper.client.elapsed
    );
    let found = differences(&fast, &hyper, ["fast", "hyper"]);
    assert!(found.is_empty(), "{found:?}");
}
