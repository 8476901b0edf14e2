//! The node's Ed25519 signing key: generated on first start in the data dir (mode 0600), or
//! given by configuration. Its public key is printed at start and served by the API.

use crate::config::schema::Config;
use ledger_core::Hash;
use ledger_core::checkpoint::{self, SignedTreeHead, SigningKey, VerifyingKey};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Signs tree heads for this node.
pub struct Signer {
    key: SigningKey,
    name: String,
    key_id: [u8; 4],
    /// Where the key came from, for the start-up message.
    pub source: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &self.key_id_hex())
            .finish()
    }
}

/// Default key file, inside the data dir.
pub fn default_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("signing.key")
}

impl Signer {
    /// A signer from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32], name: &str, source: String) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let key_id = checkpoint::key_id(name, &key.verifying_key());
        Signer {
            key,
            name: name.to_owned(),
            key_id,
            source,
        }
    }

    /// The configured key (`signing_key`), else the key file (`signing_key_file`, default
    /// `<data_dir>/signing.key`), created with a fresh random key if it does not exist.
    pub fn load_or_create(config: &Config) -> Result<Self, String> {
        if let Some(b64) = &config.signing_key {
            let seed = parse_seed(b64).map_err(|e| format!("invalid setting signing_key: {e}"))?;
            return Ok(Self::from_seed(
                seed,
                &config.ledger_name,
                "setting signing_key".into(),
            ));
        }
        let path = config
            .signing_key_file
            .clone()
            .unwrap_or_else(|| default_key_file(&config.data_dir));
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "cannot read the signing key {} (setting signing_key_file): {e}",
                    path.display()
                )
            })?;
            let seed = parse_seed(&text)
                .map_err(|e| format!("invalid signing key file {}: {e}", path.display()))?;
            warn_if_readable_by_others(&path);
            return Ok(Self::from_seed(
                seed,
                &config.ledger_name,
                path.display().to_string(),
            ));
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| format!("cannot generate a signing key: {e}"))?;
        write_key_file(&path, &seed).map_err(|e| {
            format!(
                "cannot create the signing key {} (setting signing_key_file): {e}",
                path.display()
            )
        })?;
        tracing::info!(path = %path.display(), "generated a new signing key");
        Ok(Self::from_seed(
            seed,
            &config.ledger_name,
            format!("{} (new)", path.display()),
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn key_id_hex(&self) -> String {
        checkpoint::hex4(&self.key_id)
    }

    /// Signs the head of `context_id` at `size`.
    pub fn sign(
        &self,
        context_id: &str,
        size: u64,
        root: Hash,
        lamport_clock: u64,
        timestamp_ns: u64,
    ) -> SignedTreeHead {
        checkpoint::sign_tree_head(
            &self.key,
            &self.name,
            context_id,
            size,
            root,
            lamport_clock,
            timestamp_ns,
        )
    }
}

fn parse_seed(text: &str) -> Result<[u8; 32], String> {
    let bytes = checkpoint::from_base64(text).ok_or("not base64")?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes, expected a 32-byte Ed25519 seed", b.len()))
}

fn write_key_file(path: &Path, seed: &[u8; 32]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    writeln!(f, "{}", checkpoint::base64(seed))?;
    f.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", m.permissions().mode() & 0o777), "signing key is readable by other users; chmod 600 it");
        }
    }
}
