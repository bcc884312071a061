//! Raw configuration types that mirror the file, one to one.
//!
//! These types only describe the *shape* of the file; every value is checked
//! and converted in [`crate::config`] so that all errors are reported at once.
//! `deny_unknown_fields` makes a misspelt key an error with its position.
//! The JSON Schema of the file (`sluicegate schema`) is derived from these
//! types, so the two cannot drift; durations and weights get a hand schema.

use schemars::JsonSchema;
use serde::Deserialize;

use super::duration;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub listeners: Vec<FileListener>,
    pub admin: Option<FileAdmin>,
    pub timeouts: Option<FileTimeouts>,
    pub access_log: Option<FileAccessLog>,
    pub limits: Option<FileLimits>,
    #[serde(default)]
    pub routes: Vec<FileRoute>,
    pub fleet: Option<FileFleet>,
    /// Webhooks told of every revision and canary change.
    #[serde(default)]
    pub notify: Vec<FileNotify>,
}

/// `[[notify]]`: a webhook POSTed one JSON object per event, in the background.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileNotify {
    /// `http://host:port/path`.
    pub url: String,
    /// `revision`, `canary`; default both.
    #[schemars(extend("items" = {"enum": ["revision", "canary"]}))]
    pub events: Option<Vec<String>>,
    /// One delivery attempt's limit (default 5s).
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub timeout: Option<String>,
}

/// `[[routes.canary.gates]]`: a webhook that must answer 2xx before each step after the first.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileGate {
    /// `http://host:port/path`.
    pub url: String,
    /// How long to wait for its answer (default 10s).
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub timeout: Option<String>,
}

/// `[fleet]`: share weights, history and canaries with other instances through etcd.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileFleet {
    #[serde(default)]
    pub etcd: Vec<String>,
    pub prefix: Option<String>,
    pub instance: Option<String>,
    pub zone: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub lease_ttl: Option<String>,
    pub tls: Option<FileFleetTls>,
    pub username: Option<String>,
    pub password_env: Option<String>,
}

/// `tls = { ca, cert, key }` of `[fleet]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileFleetTls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// `[limits]`
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_connections: Option<usize>,
    pub max_request_headers: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_concurrent_streams: Option<u32>,
}

/// `[access_log]`
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    pub enabled: Option<bool>,
    /// `json` (default) or `common`.
    #[schemars(extend("enum" = ["json", "common", null]))]
    pub format: Option<String>,
    pub path: Option<String>,
}

/// `[[listeners]]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub addr: String,
    pub tls: Option<FileTls>,
    /// Plain HTTP/1.1 on sluicegate's own code (default) or on hyper's.
    pub http1_fast_path: Option<bool>,
}

/// `tls = { cert, key, sni = [{ cert, key }, …] }` on a listener.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub cert: String,
    pub key: String,
    /// More certificates, each served to clients whose SNI name it is valid for.
    #[serde(default)]
    pub sni: Vec<FileCertPair>,
    /// PEM CA certificates: a client certificate signed by one is required (mutual TLS).
    pub client_ca: Option<String>,
}

/// One `{ cert, key }` pair in `sni`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileCertPair {
    pub cert: String,
    pub key: String,
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub addr: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    pub state_file: Option<String>,
    /// `tls = { cert, key, client_ca }`: the admin API over TLS, mutual with `client_ca`.
    pub tls: Option<FileAdminTls>,
    /// Named tokens with roles; replaces `token_env` / `token_file`.
    #[serde(default)]
    pub tokens: Vec<FileAdminToken>,
}

/// `tls = { cert, key, client_ca }` of `[admin]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileAdminTls {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
}

/// One `[[admin.tokens]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileAdminToken {
    /// Recorded as the actor of the changes made with this token.
    pub name: String,
    /// `read` (GETs), `operate` (weights, promote, rollback, reset, canary, drain) or `admin` (also reload).
    #[schemars(extend("enum" = ["read", "operate", "admin"]))]
    pub role: String,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
}

/// `[timeouts]`
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub connect: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub response_headers: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub client_idle: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub client_headers: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub shutdown_grace: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub shutdown_delay: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub upstream_idle: Option<String>,
}

/// `[[routes]]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: Option<FileMatch>,
    pub sticky: Option<FileSticky>,
    pub override_header: Option<String>,
    pub override_cookie: Option<String>,
    /// Client networks (CIDR) allowed to use the overrides; all when absent.
    pub override_from: Option<Vec<String>>,
    pub failover: Option<bool>,
    pub retries: Option<u32>,
    #[serde(default)]
    pub backends: Vec<FileBackend>,
    pub mirror: Option<FileMirror>,
    pub canary: Option<FileCanary>,
}

/// `match = { host, path_prefix, headers }`
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileMatch {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    /// Header name → the exact value it must have, or `"*"`: present.
    pub headers: Option<std::collections::BTreeMap<String, String>>,
}

/// `sticky = { cookie = NAME }` or `{ header = NAME }`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSticky {
    pub cookie: Option<String>,
    pub header: Option<String>,
    /// Lifetime of the cookie sluicegate sets.
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub max_age: Option<String>,
}

/// `[[routes.backends]]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    pub name: String,
    /// Percent of the route, up to two decimals; a route's weights sum to 100.
    #[schemars(range(min = 0, max = 100))]
    pub weight: Option<f64>,
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub health: Option<FileHealth>,
    pub outlier: Option<FileOutlier>,
    /// `http1` (default), `h2c`, `h2` or `auto`.
    #[schemars(extend("enum" = ["http1", "h2c", "h2", "auto", null]))]
    pub protocol: Option<String>,
    /// PEM file of the CA(s) that sign the `https://` endpoints' certificates.
    pub tls_ca: Option<String>,
    pub tls_insecure_skip_verify: Option<bool>,
    /// The name sent in SNI and verified, instead of the endpoint's host.
    pub tls_server_name: Option<String>,
    /// PEM certificate chain presented to `https://` endpoints that ask for
    /// a client certificate (with `tls_client_key`).
    pub tls_client_cert: Option<String>,
    /// PEM private key of `tls_client_cert`.
    pub tls_client_key: Option<String>,
}

/// `[routes.backends.outlier]`: passive ejection.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileOutlier {
    pub consecutive_failures: Option<u32>,
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub base_ejection: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub max_ejection: Option<String>,
}

/// `[routes.backends.health]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    pub path: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub interval: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub timeout: Option<String>,
    pub unhealthy_threshold: Option<u32>,
    pub healthy_threshold: Option<u32>,
}

/// `[routes.mirror]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileMirror {
    pub backend: String,
    /// Percent of the route's requests copied to the mirror.
    #[schemars(range(min = 0, max = 100))]
    pub percent: f64,
    /// Largest request body copied, in bytes; larger ones are not mirrored.
    pub max_body: Option<u64>,
    /// Compare the mirror's status and body with the primary's.
    pub compare: Option<bool>,
    /// Mirrored requests in flight at once; more are skipped.
    pub max_concurrent: Option<u32>,
}

/// `[routes.canary]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileCanary {
    pub baseline: String,
    pub canary: String,
    /// The canary's weights, strictly increasing, ending at 100.
    #[schemars(schema_with = "steps_schema")]
    pub steps: Vec<f64>,
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub interval: Option<String>,
    pub min_requests: Option<u64>,
    pub max_error_rate: Option<f64>,
    pub max_p99_ratio: Option<f64>,
    /// A baseline p99 below this counts as this much in the p99 check (default 2ms).
    #[serde(default)]
    #[schemars(schema_with = "duration::schema")]
    pub latency_floor: Option<String>,
    /// Steps (among `steps`) after whose pass the canary waits for an approval.
    #[serde(default)]
    pub approve_at: Vec<f64>,
    #[serde(default)]
    pub gates: Vec<FileGate>,
}

/// The canary's steps: percents, the last one 100.
fn steps_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "type": "number", "exclusiveMinimum": 0, "maximum": 100 },
        "minItems": 1
    })
}
