//! Verifying a pre-sequenced tail: entries that claim to continue a context's history from a
//! known tree (a snapshot being loaded, a batch shipped by a writer, a watched stream).
//!
//! [`TailVerifier`] is the one implementation of these checks. Each entry must
//! - have the next sequence (no gap, no going back),
//! - carry a content hash equal to the hash of its fields (recomputed here, unless the entry
//!   was just decoded from its leaf input, whose hash the decoder computed),
//! - have a Lamport clock above the previous one and below [`LAMPORT_LIMIT`], so accepting it
//!   never leaves the context with a clock it cannot advance;
//!
//! and the tree of everything seen can be compared with an expected root at any point.

use crate::entry::Entry;
use crate::hash::Hash;
use crate::lamport::LAMPORT_LIMIT;
use crate::merkle::Frontier;
use thiserror::Error;

/// Why an entry does not continue the verified tree. Messages name the sequence concerned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TailError {
    #[error("expected sequence {expected}, found {found}: a gap")]
    Gap { expected: u64, found: u64 },
    #[error("expected sequence {expected}, found {found}: reordered or duplicated")]
    Reordered { expected: u64, found: u64 },
    #[error(
        "entry {sequence}: its content hash {stored} does not match its fields (recomputed {computed})"
    )]
    ContentHash {
        sequence: u64,
        stored: Hash,
        computed: Hash,
    },
    #[error(
        "entry {sequence}: Lamport clock {found} does not increase (the entry before has {previous})"
    )]
    LamportNotIncreasing {
        sequence: u64,
        previous: u64,
        found: u64,
    },
    #[error(
        "entry {sequence}: Lamport clock {found} is at or beyond the limit 9223372036854775808 (2^63)"
    )]
    LamportTooLarge { sequence: u64, found: u64 },
    #[error("the root of the first {size} entries is {computed}, expected {expected}")]
    RootMismatch {
        size: u64,
        expected: Hash,
        computed: Hash,
    },
}

/// Follows a tree as verified entries extend it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TailVerifier {
    frontier: Frontier,
    lamport_clock: u64,
}

impl TailVerifier {
    /// A verifier for a tail that starts after the tree `frontier`, whose last entry has
    /// `lamport_clock` (0 for the empty tree).
    pub fn new(frontier: Frontier, lamport_clock: u64) -> Self {
        TailVerifier {
            frontier,
            lamport_clock,
        }
    }

    /// Entries verified so far, including the starting tree = the last sequence.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The root of the tree verified so far.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The Lamport clock of the last entry (or the starting clock).
    pub fn lamport_clock(&self) -> u64 {
        self.lamport_clock
    }

    /// The tree verified so far.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// Verifies the next entry, recomputing its content hash, and extends the tree with it.
    pub fn push(&mut self, e: &Entry) -> Result<(), TailError> {
        let computed = e.compute_content_hash();
        if computed != e.content_hash {
            self.check_order(e)?;
            return Err(TailError::ContentHash {
                sequence: e.sequence,
                stored: e.content_hash,
                computed,
            });
        }
        self.push_hashed(e)
    }

    /// Like [`TailVerifier::push`] for an entry whose content hash was computed from its leaf
    /// input by the decoder that produced it (so hashing again would only repeat that work).
    pub fn push_hashed(&mut self, e: &Entry) -> Result<(), TailError> {
        self.check_order(e)?;
        self.frontier.push_leaf(e.content_hash);
        self.lamport_clock = e.lamport_clock;
        Ok(())
    }

    fn check_order(&self, e: &Entry) -> Result<(), TailError> {
        let expected = self.frontier.size() + 1;
        if e.sequence > expected {
            return Err(TailError::Gap {
                expected,
                found: e.sequence,
            });
        }
        if e.sequence < expected {
            return Err(TailError::Reordered {
                expected,
                found: e.sequence,
            });
        }
        if e.lamport_clock <= self.lamport_clock {
            return Err(TailError::LamportNotIncreasing {
                sequence: e.sequence,
                previous: self.lamport_clock,
                found: e.lamport_clock,
            });
        }
        if e.lamport_clock >= LAMPORT_LIMIT {
            return Err(TailError::LamportTooLarge {
                sequence: e.sequence,
                found: e.lamport_clock,
            });
        }
        Ok(())
    }

    /// Checks that the tree verified so far has root `expected`.
    pub fn check_root(&self, expected: &Hash) -> Result<(), TailError> {
        let computed = self.frontier.root();
        if computed != *expected {
            return Err(TailError::RootMismatch {
                size: self.frontier.size(),
                expected: *expected,
                computed,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metadata;

    fn entry(seq: u64, lamport: u64) -> Entry {
        Entry::new(
            format!("id-{seq}"),
            "facts".into(),
            vec![seq as u8],
            seq,
            1000 + seq,
            Metadata::new(),
            lamport,
        )
    }

    #[test]
    fn accepts_a_continuing_tail_and_matches_the_root() {
        let es: Vec<Entry> = (1..=5).map(|s| entry(s, s * 3)).collect();
        let mut v = TailVerifier::default();
        for e in &es {
            v.push(e).unwrap();
        }
        let leaves: Vec<Hash> = es.iter().map(|e| e.content_hash).collect();
        let root = crate::merkle::root_from_leaves(&leaves);
        v.check_root(&root).unwrap();
        assert_eq!((v.size(), v.lamport_clock()), (5, 15));
        assert!(matches!(
            v.check_root(&Hash([0; 32])),
            Err(TailError::RootMismatch { size: 5, .. })
        ));
    }

    #[test]
    fn refuses_gaps_reorders_bad_hashes_and_clocks() {
        let mut v = TailVerifier::default();
        v.push(&entry(1, 1)).unwrap();
        assert_eq!(
            v.push(&entry(3, 3)),
            Err(TailError::Gap {
                expected: 2,
                found: 3
            })
        );
        assert_eq!(
            v.push(&entry(1, 3)),
            Err(TailError::Reordered {
                expected: 2,
                found: 1
            })
        );
        assert!(matches!(
            v.push(&entry(2, 1)),
            Err(TailError::LamportNotIncreasing { sequence: 2, .. })
        ));
        assert!(matches!(
            v.push(&entry(2, LAMPORT_LIMIT)),
            Err(TailError::LamportTooLarge { sequence: 2, .. })
        ));
        let mut forged = entry(2, 2);
        forged.payload = b"changed".to_vec();
        assert!(matches!(
            v.push(&forged),
            Err(TailError::ContentHash { sequence: 2, .. })
        ));
        // Nothing refused changed the state.
        assert_eq!(v.size(), 1);
        v.push(&entry(2, 2)).unwrap();
        assert_eq!(v.size(), 2);
    }
}
