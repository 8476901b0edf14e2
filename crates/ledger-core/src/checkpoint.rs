//! Signed tree heads: a context's size and root, signed by a node's Ed25519 key over a canonical
//! text checkpoint (the C2SP `tlog-checkpoint` shape; exact format in `docs/INTEGRITY.md`).
//!
//! ```text
//! <ledger name>/<context id>\n      origin: which ledger and which context
//! <tree size>\n                       decimal, no leading zeros
//! <base64 root>\n                     standard base64 of the 32-byte RFC 9162 root
//! ```
//!
//! The signature is Ed25519 over exactly these bytes. The key id is the C2SP signed-note key
//! hash: the first 4 bytes of `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)`.

use crate::hash::{Hash, sha256};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, Verifier as _};
use thiserror::Error;

pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// Ed25519's algorithm byte in C2SP signed-note key hashes.
const ED25519_ALG: u8 = 0x01;

/// A tree head as signed by a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTreeHead {
    pub context_id: String,
    pub tree_size: u64,
    pub root: Hash,
    /// Lamport clock of the entry at `tree_size` (0 for the empty tree). Informational: not
    /// part of the signed checkpoint.
    pub lamport_clock: u64,
    /// `appended_at_ns` of the entry at `tree_size` (0 for the empty tree). Informational.
    pub timestamp_ns: u64,
    /// Name of the signing key (the ledger name).
    pub key_name: String,
    /// C2SP key hash of the signing key.
    pub key_id: [u8; 4],
    /// The exact signed text.
    pub checkpoint: String,
    pub signature: [u8; 64],
}

/// Why a tree head or checkpoint did not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("checkpoint text is malformed: {0}")]
    Malformed(String),
    #[error("checkpoint says {field} {found:?}, the tree head says {expected:?}")]
    Mismatch {
        field: &'static str,
        expected: String,
        found: String,
    },
    #[error("tree head is signed by key {found} but the trusted key is {expected}")]
    WrongKey { expected: String, found: String },
    #[error("tree head signature does not verify with the trusted public key")]
    BadSignature,
}

/// The origin line of a context's checkpoints.
pub fn origin(ledger_name: &str, context_id: &str) -> String {
    format!("{ledger_name}/{context_id}")
}

/// The canonical checkpoint text.
pub fn checkpoint_text(origin: &str, tree_size: u64, root: &Hash) -> String {
    format!("{origin}\n{tree_size}\n{}\n", B64.encode(root.as_bytes()))
}

/// The fields of a checkpoint text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root: Hash,
}

/// Parses a checkpoint text (exactly three newline-terminated lines).
pub fn parse_checkpoint(text: &str) -> Result<Checkpoint, CheckpointError> {
    let bad = |m: &str| CheckpointError::Malformed(m.to_owned());
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| bad("it does not end with a newline"))?;
    let lines: Vec<&str> = body.split('\n').collect();
    if lines.len() != 3 {
        return Err(bad(&format!(
            "it has {} lines, a checkpoint has 3",
            lines.len()
        )));
    }
    if lines[0].is_empty() {
        return Err(bad("the origin line is empty"));
    }
    let size = lines[1];
    if size.is_empty()
        || !size.bytes().all(|b| b.is_ascii_digit())
        || (size.len() > 1 && size.starts_with('0'))
    {
        return Err(bad("the size line is not a decimal number"));
    }
    let tree_size = size
        .parse()
        .map_err(|_| bad("the size does not fit 64 bits"))?;
    let root_bytes = B64
        .decode(lines[2])
        .map_err(|_| bad("the root line is not base64"))?;
    let root = Hash::from_slice(&root_bytes).ok_or_else(|| bad("the root is not 32 bytes"))?;
    if B64.encode(root.as_bytes()) != lines[2] {
        return Err(bad("the root line is not canonical base64"));
    }
    Ok(Checkpoint {
        origin: lines[0].to_owned(),
        tree_size,
        root,
    })
}

/// The C2SP signed-note key hash of an Ed25519 key with this name.
pub fn key_id(key_name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut input = Vec::with_capacity(key_name.len() + 2 + 32);
    input.extend_from_slice(key_name.as_bytes());
    input.push(b'\n');
    input.push(ED25519_ALG);
    input.extend_from_slice(key.as_bytes());
    let h = sha256(&input);
    [h.0[0], h.0[1], h.0[2], h.0[3]]
}

/// Signs the tree head of `context_id` at `tree_size` with root `root`.
#[allow(clippy::too_many_arguments)]
pub fn sign_tree_head(
    key: &SigningKey,
    key_name: &str,
    context_id: &str,
    tree_size: u64,
    root: Hash,
    lamport_clock: u64,
    timestamp_ns: u64,
) -> SignedTreeHead {
    let checkpoint = checkpoint_text(&origin(key_name, context_id), tree_size, &root);
    let signature = key.sign(checkpoint.as_bytes()).to_bytes();
    SignedTreeHead {
        context_id: context_id.to_owned(),
        tree_size,
        root,
        lamport_clock,
        timestamp_ns,
        key_name: key_name.to_owned(),
        key_id: key_id(key_name, &key.verifying_key()),
        checkpoint,
        signature,
    }
}

impl SignedTreeHead {
    /// Checks the head against a trusted public key: the checkpoint text is exactly the
    /// canonical text of this head's origin, size and root; the key id is the trusted key's;
    /// the signature verifies.
    pub fn verify(&self, trusted: &VerifyingKey) -> Result<(), CheckpointError> {
        let expected = checkpoint_text(
            &origin(&self.key_name, &self.context_id),
            self.tree_size,
            &self.root,
        );
        if self.checkpoint != expected {
            let cp = parse_checkpoint(&self.checkpoint)?;
            let (field, exp, found) = if cp.origin != origin(&self.key_name, &self.context_id) {
                (
                    "origin",
                    origin(&self.key_name, &self.context_id),
                    cp.origin,
                )
            } else if cp.tree_size != self.tree_size {
                ("size", self.tree_size.to_string(), cp.tree_size.to_string())
            } else {
                ("root", self.root.to_hex(), cp.root.to_hex())
            };
            return Err(CheckpointError::Mismatch {
                field,
                expected: exp,
                found,
            });
        }
        let trusted_id = key_id(&self.key_name, trusted);
        if trusted_id != self.key_id {
            return Err(CheckpointError::WrongKey {
                expected: hex4(&trusted_id),
                found: hex4(&self.key_id),
            });
        }
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature);
        trusted
            .verify(self.checkpoint.as_bytes(), &sig)
            .map_err(|_| CheckpointError::BadSignature)
    }

    /// The C2SP signed note: the checkpoint followed by its signature line.
    pub fn note(&self) -> String {
        let mut sig = Vec::with_capacity(68);
        sig.extend_from_slice(&self.key_id);
        sig.extend_from_slice(&self.signature);
        format!(
            "{}\n\u{2014} {} {}\n",
            self.checkpoint,
            self.key_name,
            B64.encode(sig)
        )
    }
}

/// Lower-case hex of a key id.
pub fn hex4(id: &[u8; 4]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 (used for roots, keys and signatures in text forms).
pub fn base64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Decodes standard base64.
pub fn from_base64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn checkpoint_text_is_three_lines() {
        let root = sha256(b"x");
        let t = checkpoint_text("converge-ledger/ctx 1", 42, &root);
        assert_eq!(
            t,
            format!("converge-ledger/ctx 1\n42\n{}\n", B64.encode(root.0))
        );
        let cp = parse_checkpoint(&t).unwrap();
        assert_eq!(
            (cp.origin.as_str(), cp.tree_size, cp.root),
            ("converge-ledger/ctx 1", 42, root)
        );
        for bad in [
            "a\n1\n",
            "a\n01\nAA==\n",
            "a\n1\nnot base64\n",
            "\n1\nAA==\n",
            "a\n1\nAAAA\n",
        ] {
            assert!(parse_checkpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signed_heads_verify_and_tampering_fails() {
        let k = key();
        let h = sign_tree_head(&k, "converge-ledger", "ctx", 5, sha256(b"r"), 9, 100);
        h.verify(&k.verifying_key()).unwrap();
        let mut t = h.clone();
        t.tree_size = 6;
        assert!(matches!(
            t.verify(&k.verifying_key()),
            Err(CheckpointError::Mismatch { field: "size", .. })
        ));
        let mut t = h.clone();
        t.root.0[0] ^= 1;
        assert!(t.verify(&k.verifying_key()).is_err());
        let mut t = h.clone();
        t.context_id = "other".into();
        assert!(t.verify(&k.verifying_key()).is_err());
        let mut t = h.clone();
        t.signature[10] ^= 1;
        assert_eq!(
            t.verify(&k.verifying_key()),
            Err(CheckpointError::BadSignature)
        );
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert!(matches!(
            h.verify(&other.verifying_key()),
            Err(CheckpointError::WrongKey { .. })
        ));
        assert!(h.note().starts_with(&h.checkpoint));
        assert!(h.note().contains("\u{2014} converge-ledger "));
    }
}
