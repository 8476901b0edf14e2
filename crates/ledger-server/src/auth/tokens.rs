//! Tokens: the roles a token may have ([`TokenRole`]), the auth file's tokens ([`Tokens`], by
//! their hash), the caller a token makes ([`Principal`]), and new tokens for the file.

use crate::error_status::prefix_denied;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;
use tonic::Status;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Get, Watch, Snapshot, SnapshotStream, IntegrityService.
    Reader,
    /// Append, AppendBatch, AppendStream, Load, LoadStream.
    Writer,
    /// Everything, including cluster status, member removal and quarantines.
    Admin,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Reader => "reader",
            TokenRole::Writer => "writer",
            TokenRole::Admin => "admin",
        }
    }

    /// Whether a token of this role may call a method that needs `need`.
    pub fn permits(self, need: TokenRole) -> bool {
        self == TokenRole::Admin || self == need
    }
}

/// The authenticated caller of a request (in its extensions when auth is on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub role: TokenRole,
    /// Only contexts whose id starts with this.
    pub prefix: Option<String>,
}

impl Principal {
    /// A cluster peer that presented a node certificate.
    pub(crate) fn node() -> Self {
        Principal {
            role: TokenRole::Admin,
            prefix: None,
        }
    }

    /// `PERMISSION_DENIED` unless the token may use `context_id`.
    pub fn check_context(&self, context_id: &str) -> Result<(), Status> {
        match &self.prefix {
            Some(p) if !context_id.starts_with(p.as_str()) => {
                Err(prefix_denied(self.role.as_str(), p, context_id))
            }
            _ => Ok(()),
        }
    }
}

/// One token of the auth file.
#[derive(Clone, Debug)]
struct Grant {
    hash: [u8; 32],
    role: TokenRole,
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    sha256: String,
    role: TokenRole,
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    token: Vec<FileToken>,
}

/// The tokens of an auth file.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    grants: Vec<Grant>,
}

/// The hex SHA-256 of a token, as written in the auth file.
pub fn token_hash_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Tokens {
    /// Reads and checks an auth file; errors name the file and the token table at fault.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the auth file {} (setting auth_file): {e}",
                path.display()
            )
        })?;
        Tokens::parse(&text)
            .map_err(|e| format!("auth file {} (setting auth_file): {e}", path.display()))
    }

    /// Parses the auth file's TOML.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        use figment::providers::{Format, Toml};
        let file: AuthFile = figment::Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| e.to_string())?;
        let mut grants = Vec::with_capacity(file.token.len());
        for (i, t) in file.token.into_iter().enumerate() {
            let n = i + 1;
            let bytes = hex::decode(t.sha256.trim()).map_err(|_| {
                format!("[[token]] number {n}: sha256 must be 64 hex digits (the SHA-256 of the token, see `converge-ledger token new`)")
            })?;
            let hash: [u8; 32] = bytes.try_into().map_err(|_| {
                format!("[[token]] number {n}: sha256 must be 64 hex digits (32 bytes)")
            })?;
            if t.prefix.as_deref() == Some("") {
                return Err(format!(
                    "[[token]] number {n}: prefix is empty; leave it out to allow every context"
                ));
            }
            grants.push(Grant {
                hash,
                role: t.role,
                prefix: t.prefix,
            });
        }
        Ok(Tokens { grants })
    }

    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The grant of `token`, comparing its hash with every listed hash in constant time (the
    /// time taken does not depend on which one matches, or on how much of it).
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&Grant> = None;
        for g in &self.grants {
            if bool::from(g.hash.ct_eq(&hash)) {
                found = Some(g);
            }
        }
        found.map(|g| Principal {
            role: g.role,
            prefix: g.prefix.clone(),
        })
    }
}

/// A new random token: `cl_` and 43 characters of base64url (256 random bits).
pub fn new_token() -> Result<String, String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
    Ok(format!(
        "cl_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The `[[token]]` table of `token` for the auth file.
pub fn token_table(token: &str, role: TokenRole, prefix: Option<&str>) -> String {
    let mut t = format!(
        "[[token]]\nsha256 = \"{}\"\nrole = \"{}\"\n",
        token_hash_hex(token),
        role.as_str()
    );
    if let Some(p) = prefix {
        t.push_str(&format!("prefix = {}\n", toml_string(p)));
    }
    t
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_table_round_trips() {
        let t = new_token().unwrap();
        assert!(t.starts_with("cl_") && t.len() == 46, "{t}");
        let table = token_table(&t, TokenRole::Writer, Some("a\"b/"));
        let tokens = Tokens::parse(&table).unwrap();
        assert_eq!(
            tokens.authenticate(&t),
            Some(Principal {
                role: TokenRole::Writer,
                prefix: Some("a\"b/".into())
            })
        );
        assert!(Tokens::parse("[[token]]\nsha256 = \"zz\"\nrole = \"writer\"\n").is_err());
        assert!(Tokens::parse("[[token]]\nsha256 = \"00\"\nrole = \"god\"\n").is_err());
    }
}
