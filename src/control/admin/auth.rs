//! The admin bearer tokens: one configured (env or file) or generated at
//! start-up, or several named ones with roles (`[[admin.tokens]]`). Token
//! files are re-read when they change: polled every [`ROTATION_POLL`], and
//! at once (when their size, mtime or inode moved) before a token is refused, so a
//! client that switches to the new token right after writing it is never
//! refused. The token a rotation replaced is still taken for
//! [`ROTATION_GRACE`], so calls already on their way with it (or clients a
//! moment late to switch) are not refused either; after that it is refused
//! (within `ROTATION_POLL + ROTATION_GRACE` of the file changing).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderMap;
use tokio::sync::watch;

use crate::config::{AdminConfig, Role, TokenSource};

/// How often token files are checked for a rotation.
pub const ROTATION_POLL: Duration = Duration::from_millis(500);

/// How long the token a rotation replaced is still taken.
pub const ROTATION_GRACE: Duration = Duration::from_secs(1);

/// The actor name of the single-token form (`token_env`, `token_file`, generated).
pub const SINGLE_TOKEN_NAME: &str = "admin";

/// File name of a generated token (SPEC §3).
pub const GENERATED_TOKEN_FILE: &str = "sluicegate-admin.token";

/// The secret every state-changing admin request must carry.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Resolves the token of `admin`. A generated one is written with mode
    /// 0600 next to the state file (or in the working directory) and its path
    /// returned.
    pub fn resolve(admin: &AdminConfig) -> Result<(Token, Option<PathBuf>), String> {
        match &admin.token {
            TokenSource::Env(var) => match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => {
                    Ok((Token(value.trim().to_string()), None))
                }
                _ => Err(format!(
                    "admin.token_env names `{var}`, which is not set or empty"
                )),
            },
            TokenSource::File(path) => match std::fs::read_to_string(path) {
                Ok(value) if !value.trim().is_empty() => {
                    Ok((Token(value.trim().to_string()), None))
                }
                Ok(_) => Err(format!("admin.token_file {} is empty", path.display())),
                Err(e) => Err(format!(
                    "cannot read admin.token_file {}: {e}",
                    path.display()
                )),
            },
            TokenSource::Generated => {
                let token = Token::random()?;
                let dir = admin
                    .state_file
                    .as_deref()
                    .and_then(Path::parent)
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let path = dir.join(GENERATED_TOKEN_FILE);
                write_private(&path, &token.0).map_err(|e| {
                    format!(
                        "cannot write the generated admin token to {}: {e}",
                        path.display()
                    )
                })?;
                Ok((token, Some(path)))
            }
        }
    }

    /// 32 random bytes, hex.
    pub(crate) fn random() -> Result<Token, String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| format!("no randomness for the admin token: {e}"))?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The token text (for `demo` to print).
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// What the `Authorization` header of a request says, the token compared
    /// in constant time. The query string is never looked at.
    pub fn check(&self, headers: &HeaderMap) -> Credentials {
        match presented(headers) {
            Presented::None => Credentials::Missing,
            Presented::Bearer(given) if constant_time_eq(given, self.0.as_bytes()) => {
                Credentials::Valid {
                    name: SINGLE_TOKEN_NAME.to_string(),
                    role: Role::Admin,
                }
            }
            _ => Credentials::Wrong,
        }
    }
}

/// What a request presents to the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No `Authorization` header.
    Missing,
    /// `Authorization: Bearer <a known token>`: its name and role.
    Valid { name: String, role: Role },
    /// Anything else in `Authorization`: another token, another scheme, an
    /// empty value, several headers. Refused on every endpoint (SPEC §3).
    Wrong,
}

enum Presented<'a> {
    None,
    Bearer(&'a [u8]),
    Malformed,
}

fn presented(headers: &HeaderMap) -> Presented<'_> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        // None at all, or several: a caller that means one token sends one.
        return if headers.contains_key(http::header::AUTHORIZATION) {
            Presented::Malformed
        } else {
            Presented::None
        };
    };
    match value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    {
        Some(given) if !given.is_empty() => Presented::Bearer(given.as_bytes()),
        _ => Presented::Malformed,
    }
}

/// Every admin token the listener takes, each with its name and role.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<Key>,
    /// When the last look at the token files began; one look at a time, so
    /// a flood of unknown tokens costs one re-read at a time, not one each.
    refreshed: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

struct Key {
    name: String,
    role: Role,
    secret: ArcSwap<Token>,
    /// The token the last rotation replaced, and until when it is taken.
    previous: ArcSwap<Option<(Token, tokio::time::Instant)>>,
    /// A token file, re-read when it changes.
    file: Option<PathBuf>,
    /// The file's stamp when last read.
    seen: Mutex<Option<Stamp>>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// The tokens of `admin`: its `[[admin.tokens]]`, else the single token
    /// (role admin, actor `admin`), generated when none is configured; the
    /// path of a generated one is returned.
    pub fn resolve(admin: &AdminConfig) -> Result<(Keyring, Option<PathBuf>), String> {
        if admin.tokens.is_empty() {
            let (token, generated) = Token::resolve(admin)?;
            let file = match &admin.token {
                TokenSource::File(path) => Some(path.clone()),
                _ => None,
            };
            let key = Key::new(SINGLE_TOKEN_NAME.into(), Role::Admin, token, file);
            return Ok((Keyring::of(vec![key]), generated));
        }
        let keys = admin
            .tokens
            .iter()
            .map(|t| {
                let (token, file) = match &t.source {
                    TokenSource::Env(var) => (read_env(var, &t.name)?, None),
                    TokenSource::File(path) => (read_file(path, &t.name)?, Some(path.clone())),
                    TokenSource::Generated => {
                        return Err(format!("admin token `{}` has no source", t.name));
                    }
                };
                Ok(Key::new(t.name.clone(), t.role, token, file))
            })
            .collect::<Result<_, String>>()?;
        Ok((Keyring::of(keys), None))
    }

    /// One admin-role token (for a listener nothing can call, and tests).
    pub fn single(token: Token) -> Keyring {
        Keyring::of(vec![Key::new(
            SINGLE_TOKEN_NAME.into(),
            Role::Admin,
            token,
            None,
        )])
    }

    fn of(keys: Vec<Key>) -> Keyring {
        Keyring {
            keys,
            refreshed: tokio::sync::Mutex::new(None),
        }
    }

    /// Checks the `Authorization` header against every token, each compare in
    /// constant time and all of them made. A token no key knows makes the
    /// token files be looked at once more (a rotation just written), unless
    /// a look that began after this request arrived has been made: many
    /// unknown tokens at once share one look.
    pub async fn check(&self, headers: &HeaderMap) -> Credentials {
        let given = match presented(headers) {
            Presented::None => return Credentials::Missing,
            Presented::Malformed => return Credentials::Wrong,
            Presented::Bearer(given) => given,
        };
        if let Some(found) = self.find(given) {
            return found;
        }
        if self.keys.iter().any(|k| k.file.is_some()) {
            let arrived = tokio::time::Instant::now();
            let mut refreshed = self.refreshed.lock().await;
            if refreshed.is_none_or(|began| began < arrived) {
                *refreshed = Some(tokio::time::Instant::now());
                self.refresh(false).await;
            }
        }
        // Found again even when no look was made here: the poll or another
        // request's look may have taken the new token a moment ago.
        self.find(given).unwrap_or(Credentials::Wrong)
    }

    fn find(&self, given: &[u8]) -> Option<Credentials> {
        let mut found = None;
        let now = tokio::time::Instant::now();
        for key in &self.keys {
            let secret = key.secret.load();
            let current = constant_time_eq(given, secret.0.as_bytes());
            let previous = key.previous.load();
            let replaced = previous.as_ref().as_ref().is_some_and(|(old, until)| {
                constant_time_eq(given, old.0.as_bytes()) && now < *until
            });
            if (current || replaced) && found.is_none() {
                found = Some(Credentials::Valid {
                    name: key.name.clone(),
                    role: key.role,
                });
            }
        }
        found
    }

    /// Re-reads the token files whose size or mtime changed (every one when
    /// `always`); true when a token changed.
    async fn refresh(&self, always: bool) -> bool {
        let mut changed = false;
        for key in &self.keys {
            let Some(path) = &key.file else { continue };
            let Ok(meta) = tokio::fs::metadata(path).await else {
                continue;
            };
            let stamp = stamp(&meta);
            let moved = key.seen.lock().map_or(true, |seen| *seen != Some(stamp));
            if !moved && !always {
                continue;
            }
            let Ok(text) = tokio::fs::read_to_string(path).await else {
                continue;
            };
            let text = text.trim();
            // An empty file is a rotation half-written: keep the old token.
            if text.is_empty() {
                continue;
            }
            // The token first, then the stamp: whoever sees the new stamp
            // finds the new token.
            if !constant_time_eq(text.as_bytes(), key.secret.load().0.as_bytes()) {
                let until = tokio::time::Instant::now() + ROTATION_GRACE;
                let old = key.secret.swap(Arc::new(Token(text.to_string())));
                key.previous
                    .store(Arc::new(Some((Token::clone(&old), until))));
                tracing::info!(name = %key.name, path = %path.display(), "admin token rotated");
                changed = true;
            }
            if let Ok(mut seen) = key.seen.lock() {
                *seen = Some(stamp);
            }
        }
        changed
    }

    /// Polls the token files every [`ROTATION_POLL`] until `stop`, so an old
    /// token is refused soon after its file changes.
    pub fn watch(self: &Arc<Self>, mut stop: watch::Receiver<bool>) {
        if self.keys.iter().all(|k| k.file.is_none()) {
            return;
        }
        let keyring = Arc::clone(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(ROTATION_POLL);
            loop {
                tokio::select! {
                    _ = every.tick() => { keyring.refresh(true).await; }
                    _ = stop.changed() => break,
                }
            }
        });
    }
}

impl Key {
    fn new(name: String, role: Role, token: Token, file: Option<PathBuf>) -> Key {
        let seen = file
            .as_deref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| stamp(&m));
        Key {
            name,
            role,
            secret: ArcSwap::from_pointee(token),
            previous: ArcSwap::from_pointee(None),
            file,
            seen: Mutex::new(seen),
        }
    }
}

/// Size, mtime and (on unix) inode: what tells a changed token file, a
/// renamed-over one included, without reading it. Timestamps are coarse, so
/// an in-place rewrite of the same length may wait for the next poll.
type Stamp = (u64, SystemTime, u64);

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    (
        meta.len(),
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        inode,
    )
}

fn read_env(var: &str, name: &str) -> Result<Token, String> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Ok(Token(value.trim().to_string())),
        _ => Err(format!(
            "admin token `{name}`: token_env names `{var}`, which is not set or empty"
        )),
    }
}

fn read_file(path: &Path, name: &str) -> Result<Token, String> {
    match std::fs::read_to_string(path) {
        Ok(value) if !value.trim().is_empty() => Ok(Token(value.trim().to_string())),
        Ok(_) => Err(format!("admin token `{name}`: {} is empty", path.display())),
        Err(e) => Err(format!(
            "admin token `{name}`: cannot read {}: {e}",
            path.display()
        )),
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path)?;
        // An older file keeps its mode on open: set it explicitly.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path)?;
        file.write_all(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_is_checked() {
        let token = Token("secret".into());
        let check = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("authorization", value.parse().unwrap());
            }
            token.check(&headers)
        };
        let valid = Credentials::Valid {
            name: "admin".into(),
            role: Role::Admin,
        };
        assert_eq!(check(&[]), Credentials::Missing);
        assert_eq!(check(&["Bearer secret"]), valid);
        assert_eq!(check(&["Bearer  secret "]), valid);
        for wrong in [
            "Bearer wrong!",
            "Bearer secre",
            "Bearer ",
            "",
            "Basic secret",
        ] {
            assert_eq!(check(&[wrong]), Credentials::Wrong, "{wrong:?}");
        }
        assert_eq!(
            check(&["Bearer secret", "Bearer secret"]),
            Credentials::Wrong
        );
    }

    #[test]
    fn random_tokens_differ() {
        assert_ne!(Token::random().unwrap().0, Token::random().unwrap().0);
        assert_eq!(Token::random().unwrap().0.len(), 64);
    }
}
