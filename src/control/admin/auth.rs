//! The admin bearer token: configured (env or file) or generated at start-up.

use std::io::Write;
use std::path::{Path, PathBuf};

use http::HeaderMap;

use crate::config::{AdminConfig, TokenSource};

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
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            // None at all, or several: a caller that means one token sends one.
            return if headers.contains_key(http::header::AUTHORIZATION) {
                Credentials::Wrong
            } else {
                Credentials::Missing
            };
        };
        let given = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(given) if constant_time_eq(given.as_bytes(), self.0.as_bytes()) => {
                Credentials::Valid
            }
            _ => Credentials::Wrong,
        }
    }
}

/// What a request presents to the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// No `Authorization` header.
    Missing,
    /// `Authorization: Bearer <the token>`.
    Valid,
    /// Anything else in `Authorization`: another token, another scheme, an
    /// empty value, several headers. Refused on every endpoint (SPEC §3).
    Wrong,
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
        assert_eq!(check(&[]), Credentials::Missing);
        assert_eq!(check(&["Bearer secret"]), Credentials::Valid);
        assert_eq!(check(&["Bearer  secret "]), Credentials::Valid);
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
