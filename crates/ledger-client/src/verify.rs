//! Verification without trusting the node: pure functions over what a client holds (tree heads,
//! proofs, snapshots, watched entries) and a public key it trusts. No network.

use ledger_core::checkpoint::{CheckpointError, SignedTreeHead, VerifyingKey};
use ledger_core::merkle::{self, Frontier, ProofError};
use ledger_core::snapshot::{self, Snapshot, SnapshotError};
use ledger_core::tail::{TailError, TailVerifier};
use ledger_core::{Entry, Hash};
use thiserror::Error;

/// What did not match. Every message names the sequence, size or field concerned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("tree head of {context_id:?} at size {size}: {source}")]
    TreeHead {
        context_id: String,
        size: u64,
        #[source]
        source: CheckpointError,
    },
    #[error(
        "entry {sequence}: its content hash {stored} does not match its fields (recomputed {computed})"
    )]
    ContentHash {
        sequence: u64,
        stored: Hash,
        computed: Hash,
    },
    #[error("entry {sequence}: the proof is for leaf hash {proof}, the entry hashes to {entry}")]
    LeafMismatch {
        sequence: u64,
        proof: Hash,
        entry: Hash,
    },
    #[error(
        "inclusion proof of entry {sequence} in the tree of size {size} does not lead to the signed root: {source}"
    )]
    Inclusion {
        sequence: u64,
        size: u64,
        #[source]
        source: ProofError,
    },
    #[error("consistency proof from size {first} to {second} failed: {source}")]
    Consistency {
        first: u64,
        second: u64,
        #[source]
        source: ProofError,
    },
    #[error("{what}: expected {expected}, found {found}")]
    Mismatch {
        what: String,
        expected: String,
        found: String,
    },
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("watched stream skipped from sequence {position} to {found}: a gap")]
    Gap { position: u64, found: u64 },
    #[error(
        "watched stream went back from sequence {position} to {found}: reordered or duplicated"
    )]
    Reordered { position: u64, found: u64 },
    #[error("{0}")]
    Tail(TailError),
}

fn head_err(h: &SignedTreeHead, source: CheckpointError) -> VerifyError {
    VerifyError::TreeHead {
        context_id: h.context_id.clone(),
        size: h.tree_size,
        source,
    }
}

/// A signed tree head against a trusted key.
pub fn verify_tree_head(head: &SignedTreeHead, key: &VerifyingKey) -> Result<(), VerifyError> {
    head.verify(key).map_err(|e| head_err(head, e))
}

/// One entry, its inclusion proof and the signed head the proof is for.
pub fn verify_entry(
    entry: &Entry,
    leaf_hash: &Hash,
    path: &[Hash],
    head: &SignedTreeHead,
    key: &VerifyingKey,
) -> Result<(), VerifyError> {
    verify_tree_head(head, key)?;
    let computed = entry.compute_content_hash();
    if computed != entry.content_hash {
        return Err(VerifyError::ContentHash {
            sequence: entry.sequence,
            stored: entry.content_hash,
            computed,
        });
    }
    if *leaf_hash != computed {
        return Err(VerifyError::LeafMismatch {
            sequence: entry.sequence,
            proof: *leaf_hash,
            entry: computed,
        });
    }
    verify_inclusion(entry.sequence, leaf_hash, path, head)
}

/// An inclusion proof of leaf `sequence` against a (separately verified) tree head.
pub fn verify_inclusion(
    sequence: u64,
    leaf_hash: &Hash,
    path: &[Hash],
    head: &SignedTreeHead,
) -> Result<(), VerifyError> {
    let index = sequence.checked_sub(1).ok_or(VerifyError::Inclusion {
        sequence,
        size: head.tree_size,
        source: ProofError::IndexOutOfRange {
            index: 0,
            size: head.tree_size,
        },
    })?;
    merkle::verify_inclusion(index, head.tree_size, leaf_hash, path, &head.root).map_err(|source| {
        VerifyError::Inclusion {
            sequence,
            size: head.tree_size,
            source,
        }
    })
}

/// A consistency proof between two signed heads of the same context.
pub fn verify_consistency(
    old: &SignedTreeHead,
    new: &SignedTreeHead,
    path: &[Hash],
    key: &VerifyingKey,
) -> Result<(), VerifyError> {
    verify_tree_head(old, key)?;
    verify_tree_head(new, key)?;
    if old.context_id != new.context_id {
        return Err(VerifyError::Mismatch {
            what: "context of the two tree heads".into(),
            expected: old.context_id.clone(),
            found: new.context_id.clone(),
        });
    }
    merkle::verify_consistency(old.tree_size, new.tree_size, &old.root, &new.root, path).map_err(
        |source| VerifyError::Consistency {
            first: old.tree_size,
            second: new.tree_size,
            source,
        },
    )
}

/// A snapshot blob: checksum, every content hash recomputed from the entries, the root — and,
/// when given, that the root equals `expected_root` or the root of a verified signed head of
/// the same size.
pub fn verify_snapshot(
    blob: &[u8],
    expected_root: Option<&Hash>,
    head: Option<(&SignedTreeHead, &VerifyingKey)>,
) -> Result<Snapshot, VerifyError> {
    let s = snapshot::decode(blob)?;
    if let Some(root) = expected_root
        && *root != s.merkle_root
    {
        return Err(VerifyError::Mismatch {
            what: "snapshot root".into(),
            expected: root.to_hex(),
            found: s.merkle_root.to_hex(),
        });
    }
    if let Some((h, key)) = head {
        verify_tree_head(h, key)?;
        if h.tree_size != s.tree_size() {
            return Err(VerifyError::Mismatch {
                what: "snapshot size against the tree head".into(),
                expected: h.tree_size.to_string(),
                found: s.tree_size().to_string(),
            });
        }
        if h.root != s.merkle_root {
            return Err(VerifyError::Mismatch {
                what: "snapshot root against the tree head".into(),
                expected: h.root.to_hex(),
                found: s.merkle_root.to_hex(),
            });
        }
    }
    Ok(s)
}

/// The root of a list of entries (sequences 1..n), recomputing every content hash.
pub fn root_of_entries(entries: &[Entry]) -> Result<Hash, VerifyError> {
    let mut t = TailVerifier::default();
    for e in entries {
        t.push(e).map_err(VerifyError::from)?;
    }
    Ok(t.root())
}

impl From<TailError> for VerifyError {
    fn from(e: TailError) -> Self {
        match e {
            TailError::Gap { expected, found } => VerifyError::Gap {
                position: expected - 1,
                found,
            },
            TailError::Reordered { expected, found } => VerifyError::Reordered {
                position: expected - 1,
                found,
            },
            TailError::ContentHash {
                sequence,
                stored,
                computed,
            } => VerifyError::ContentHash {
                sequence,
                stored,
                computed,
            },
            other => VerifyError::Tail(other),
        }
    }
}

/// Follows a watched stream of entries and tree heads and proves it is a gapless, unrewritten
/// prefix of the context's history: every entry continues the previous one, every content hash
/// is recomputed, and every tree head is signed by the trusted key and has exactly the root of
/// the entries seen so far. The state survives reconnects: resume the stream from
/// [`WatchVerifier::position`] and keep feeding the same verifier.
#[derive(Clone, Debug)]
pub struct WatchVerifier {
    context_id: String,
    key: VerifyingKey,
    tail: TailVerifier,
    verified_heads: u64,
}

impl WatchVerifier {
    /// A verifier for a stream that starts at the beginning of the context.
    pub fn new(context_id: &str, key: VerifyingKey) -> Self {
        WatchVerifier {
            context_id: context_id.to_owned(),
            key,
            tail: TailVerifier::default(),
            verified_heads: 0,
        }
    }

    /// A verifier resuming from saved state (the frontier after `position` entries). The
    /// saved state has no Lamport clock, so the next entry's clock is only checked to be
    /// positive; later ones must increase as usual.
    pub fn resume(context_id: &str, key: VerifyingKey, frontier: Frontier) -> Self {
        WatchVerifier {
            context_id: context_id.to_owned(),
            key,
            tail: TailVerifier::new(frontier, 0),
            verified_heads: 0,
        }
    }

    /// The last sequence seen: resume the watch from here.
    pub fn position(&self) -> u64 {
        self.tail.size()
    }

    /// The state to save for resuming later.
    pub fn frontier(&self) -> &Frontier {
        self.tail.frontier()
    }

    /// Tree heads verified so far.
    pub fn verified_heads(&self) -> u64 {
        self.verified_heads
    }

    /// The next entry of the stream.
    pub fn entry(&mut self, e: &Entry) -> Result<(), VerifyError> {
        self.tail.push(e).map_err(VerifyError::from)
    }

    /// A tree head of the stream: it must cover exactly the entries seen so far.
    pub fn tree_head(&mut self, h: &SignedTreeHead) -> Result<(), VerifyError> {
        verify_tree_head(h, &self.key)?;
        if h.context_id != self.context_id {
            return Err(VerifyError::Mismatch {
                what: "tree head context".into(),
                expected: self.context_id.clone(),
                found: h.context_id.clone(),
            });
        }
        if h.tree_size != self.tail.size() {
            return Err(VerifyError::Mismatch {
                what: "tree head size against the entries seen".into(),
                expected: self.tail.size().to_string(),
                found: h.tree_size.to_string(),
            });
        }
        let root = self.tail.root();
        if h.root != root {
            return Err(VerifyError::Mismatch {
                what: format!("root of the first {} entries seen", h.tree_size),
                expected: h.root.to_hex(),
                found: root.to_hex(),
            });
        }
        self.verified_heads += 1;
        Ok(())
    }
}
