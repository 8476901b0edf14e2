//! `converge-ledger head` and `converge-ledger verify …`: fetch what is needed, then check it
//! locally with `ledger_client::verify`, trusting only a public key. Exit status 0 only when
//! verification succeeds; failures say exactly what did not match. Each returns what to print.

use crate::error::CliError;
use crate::output::{note, out_line};
use crate::target::Target;
use ledger_client::LedgerClient;
use ledger_client::verify::{self, VerifyError};
use ledger_core::Hash;
use ledger_core::checkpoint::{self, SignedTreeHead, VerifyingKey};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct HeadArgs {
    #[command(flatten)]
    target: Target,
    context: String,
    /// Save the head to this file (JSON), for `verify snapshot --head`
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Trusted Ed25519 public key (base64); default: the node's, trusted on first use
    #[arg(long)]
    public_key: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum VerifyCommand {
    /// A snapshot file: checksum, every content hash, the root (offline)
    Snapshot {
        file: PathBuf,
        /// Expected Merkle root (hex)
        #[arg(long, conflicts_with = "head")]
        root: Option<String>,
        /// A tree head file saved by `converge-ledger head --out`
        #[arg(long)]
        head: Option<PathBuf>,
        /// Trusted Ed25519 public key (base64); default: the one in the head file
        #[arg(long)]
        public_key: Option<String>,
    },
    /// One entry: fetch it, its inclusion proof and the signed head, check them locally
    Entry {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        context: String,
        #[arg(long)]
        sequence: u64,
        /// Trusted Ed25519 public key (base64); default: the node's, trusted on first use
        #[arg(long)]
        public_key: Option<String>,
    },
    /// A whole context: recompute the root from every entry and compare with the signed head
    Context {
        #[command(flatten)]
        target: Target,
        context: String,
        /// Trusted Ed25519 public key (base64); default: the node's, trusted on first use
        #[arg(long)]
        public_key: Option<String>,
    },
}

/// `head`: prints the verified head (JSON), saving it with `--out`.
pub async fn run_head(args: HeadArgs) -> Result<(), CliError> {
    let json = fetch_head(
        &args.target,
        &args.context,
        args.out.as_deref(),
        args.public_key.as_deref(),
    )
    .await
    .map_err(|e| CliError::Message(e.to_string()))?;
    out_line(&json)
}

/// `verify …`: prints what was verified; fails with what did not match.
pub async fn run(what: VerifyCommand) -> Result<(), CliError> {
    let r = match what {
        VerifyCommand::Snapshot {
            file,
            root,
            head,
            public_key,
        } => snapshot(
            &file,
            root.as_deref(),
            head.as_deref(),
            public_key.as_deref(),
        ),
        VerifyCommand::Entry {
            target,
            context,
            sequence,
            public_key,
        } => entry(&target, &context, sequence, public_key.as_deref()).await,
        VerifyCommand::Context {
            target,
            context,
            public_key,
        } => self::context(&target, &context, public_key.as_deref()).await,
    };
    out_line(&r.map_err(|e| CliError::Message(e.to_string()))?)
}

/// A verification that ran and failed, or could not run.
#[derive(Debug)]
pub enum Failure {
    /// The data does not verify.
    Mismatch(VerifyError),
    /// The check could not be made (connection, file, arguments).
    Error(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Mismatch(e) => write!(f, "verification FAILED: {e}"),
            Failure::Error(e) => write!(f, "{e}"),
        }
    }
}

impl From<VerifyError> for Failure {
    fn from(e: VerifyError) -> Self {
        Failure::Mismatch(e)
    }
}

fn err(e: impl std::fmt::Display) -> Failure {
    Failure::Error(e.to_string())
}

/// Parses a base64 Ed25519 public key.
pub fn parse_public_key(b64: &str) -> Result<VerifyingKey, Failure> {
    let bytes = checkpoint::from_base64(b64).ok_or_else(|| err("--public-key is not base64"))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| err("--public-key must be a 32-byte Ed25519 key in base64"))?;
    VerifyingKey::from_bytes(&arr)
        .map_err(|e| err(format!("--public-key is not a valid Ed25519 key: {e}")))
}

/// The key to trust: the pinned one, else the node's (trust on first use, said so on stderr).
async fn trusted_key(client: &LedgerClient, pinned: Option<&str>) -> Result<VerifyingKey, Failure> {
    if let Some(b64) = pinned {
        return parse_public_key(b64);
    }
    let (name, key) = client.public_key().await.map_err(err)?;
    note(&format!(
        "note: trusting the node's public key {} ({name}); pin it with --public-key for verification that does not trust the node",
        checkpoint::base64(key.as_bytes())
    ));
    Ok(key)
}

/// A tree head as JSON (the `head` command's output and file format).
pub fn head_json(h: &SignedTreeHead, key: &VerifyingKey) -> serde_json::Value {
    serde_json::json!({
        "context_id": h.context_id,
        "tree_size": h.tree_size,
        "root": h.root.to_hex(),
        "lamport_clock": h.lamport_clock,
        "timestamp_ns": h.timestamp_ns,
        "key_name": h.key_name,
        "key_id": checkpoint::hex4(&h.key_id),
        "public_key": checkpoint::base64(key.as_bytes()),
        "signature": checkpoint::base64(&h.signature),
        "checkpoint": h.checkpoint,
        "note": h.note(),
    })
}

/// Reads a head file written by `head --out`.
pub fn read_head_file(path: &Path) -> Result<(SignedTreeHead, VerifyingKey), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| err(format!("{} is not a tree head file: {e}", path.display())))?;
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .ok_or_else(|| err(format!("{}: missing {k}", path.display())))
    };
    let num = |k: &str| {
        v[k].as_u64()
            .ok_or_else(|| err(format!("{}: missing {k}", path.display())))
    };
    let root =
        Hash::from_hex(&field("root")?).ok_or_else(|| err("root is not 64 hex characters"))?;
    let key = parse_public_key(&field("public_key")?)?;
    let signature: [u8; 64] = checkpoint::from_base64(&field("signature")?)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| err("signature is not 64 bytes of base64"))?;
    let id = field("key_id")?;
    let id_bytes = Hash::from_hex(&format!("{id:0<64}"))
        .filter(|_| id.len() == 8)
        .ok_or_else(|| err("key_id is not 8 hex characters"))?;
    let head = SignedTreeHead {
        context_id: field("context_id")?,
        tree_size: num("tree_size")?,
        root,
        lamport_clock: num("lamport_clock")?,
        timestamp_ns: num("timestamp_ns")?,
        key_name: field("key_name")?,
        key_id: [id_bytes.0[0], id_bytes.0[1], id_bytes.0[2], id_bytes.0[3]],
        checkpoint: field("checkpoint")?,
        signature,
    };
    Ok((head, key))
}

/// `head C`: fetch, verify against the trusted key, print, and optionally save.
pub async fn fetch_head(
    target: &Target,
    context: &str,
    out: Option<&Path>,
    pinned: Option<&str>,
) -> Result<String, Failure> {
    let client = target.client().await.map_err(err)?;
    let key = trusted_key(&client, pinned).await?;
    let h = client.tree_head(context).await.map_err(err)?;
    verify::verify_tree_head(&h, &key)?;
    let json = serde_json::to_string_pretty(&head_json(&h, &key)).map_err(err)?;
    if let Some(path) = out {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
        note(&format!(
            "saved the signed tree head of {context} at size {} to {}",
            h.tree_size,
            path.display()
        ));
    }
    Ok(json)
}

/// `verify snapshot FILE [--root HEX | --head FILE]`: entirely offline.
pub fn snapshot(
    file: &Path,
    root: Option<&str>,
    head_file: Option<&Path>,
    pinned: Option<&str>,
) -> Result<String, Failure> {
    let blob =
        std::fs::read(file).map_err(|e| err(format!("cannot read {}: {e}", file.display())))?;
    let root = match root {
        Some(r) => Some(Hash::from_hex(r).ok_or_else(|| err("--root must be 64 hex characters"))?),
        None => None,
    };
    let head = match head_file {
        Some(p) => {
            let (h, file_key) = read_head_file(p)?;
            let key = match pinned {
                Some(b64) => parse_public_key(b64)?,
                None => file_key,
            };
            Some((h, key))
        }
        None => None,
    };
    let s = verify::verify_snapshot(&blob, root.as_ref(), head.as_ref().map(|(h, k)| (h, k)))?;
    let against = match (&root, &head) {
        (Some(_), _) => " and matches --root",
        (_, Some(_)) => " and matches the signed tree head",
        _ => "",
    };
    Ok(format!(
        "OK: snapshot of {} with {} entries: checksum, every content hash and the root {} verify{against}",
        s.context_id,
        s.tree_size(),
        s.merkle_root
    ))
}

/// `verify entry --context C --sequence N`: entry + inclusion proof + signed head.
pub async fn entry(
    target: &Target,
    context: &str,
    sequence: u64,
    pinned: Option<&str>,
) -> Result<String, Failure> {
    let client = target.client().await.map_err(err)?;
    let key = trusted_key(&client, pinned).await?;
    let proof = client
        .inclusion_proof(context, sequence, 0)
        .await
        .map_err(err)?;
    let page = client
        .get(context, "", sequence.saturating_sub(1), 1)
        .await
        .map_err(err)?;
    let e = page
        .entries
        .into_iter()
        .find(|e| e.sequence == sequence)
        .ok_or_else(|| err(format!("the node did not return entry {sequence}")))?;
    verify::verify_entry(&e, &proof.leaf_hash, &proof.path, &proof.tree_head, &key)?;
    Ok(format!(
        "OK: entry {sequence} of {context} (content hash {}) is in the signed tree of size {} with root {}",
        e.content_hash, proof.tree_head.tree_size, proof.tree_head.root
    ))
}

/// `verify context C`: recompute the root from every entry and compare with the signed head.
pub async fn context(
    target: &Target,
    context: &str,
    pinned: Option<&str>,
) -> Result<String, Failure> {
    let client = target.client().await.map_err(err)?;
    let key = trusted_key(&client, pinned).await?;
    let head = client.tree_head(context).await.map_err(err)?;
    verify::verify_tree_head(&head, &key)?;
    let mut entries = client.get_all(context, "", 0).await.map_err(err)?;
    // Entries appended after the head was signed are not covered by it.
    entries.retain(|e| e.sequence <= head.tree_size);
    if entries.len() as u64 != head.tree_size {
        return Err(VerifyError::Mismatch {
            what: format!("number of entries of {context} up to the signed size"),
            expected: head.tree_size.to_string(),
            found: entries.len().to_string(),
        }
        .into());
    }
    let root = verify::root_of_entries(&entries)?;
    if root != head.root {
        return Err(VerifyError::Mismatch {
            what: format!(
                "root recomputed from the {} entries of {context}",
                entries.len()
            ),
            expected: head.root.to_hex(),
            found: root.to_hex(),
        }
        .into());
    }
    Ok(format!(
        "OK: all {} entries of {context} hash to the signed root {}",
        head.tree_size, head.root
    ))
}
