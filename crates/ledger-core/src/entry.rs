//! The entry model: what one append stores.

use crate::hash::Hash;
use std::collections::BTreeMap;

/// String metadata of an entry. A `BTreeMap` keeps pairs sorted by key bytes, which is the
/// canonical order of the leaf encoding.
pub type Metadata = BTreeMap<String, String>;

/// One immutable entry of a context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// UUIDv7 assigned by the ledger when the entry was appended.
    pub id: String,
    /// The engine's kind of entry: `facts`, `proposals`, `evals`, `traces`, …
    pub key: String,
    /// Opaque bytes; the ledger never interprets them.
    pub payload: Vec<u8>,
    /// Position in the context: 1, 2, 3, … without gaps.
    pub sequence: u64,
    /// Wall-clock time of the append, Unix nanoseconds.
    pub appended_at_ns: u64,
    /// String metadata, covered by the content hash.
    pub metadata: Metadata,
    /// Lamport clock of the context after this append.
    pub lamport_clock: u64,
    /// `SHA-256(0x00 ‖ leaf_input)`, see [`crate::encoding`].
    pub content_hash: Hash,
}

impl Entry {
    /// Builds an entry and computes its content hash from the canonical leaf encoding.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        key: String,
        payload: Vec<u8>,
        sequence: u64,
        appended_at_ns: u64,
        metadata: Metadata,
        lamport_clock: u64,
    ) -> Self {
        let mut entry = Entry {
            id,
            key,
            payload,
            sequence,
            appended_at_ns,
            metadata,
            lamport_clock,
            content_hash: Hash::default(),
        };
        entry.content_hash = entry.compute_content_hash();
        entry
    }

    /// Recomputes the content hash from the entry's fields (ignores the stored one).
    pub fn compute_content_hash(&self) -> Hash {
        crate::hash::leaf_hash(&crate::encoding::encode_leaf_input(self))
    }

    /// True when the stored content hash matches the entry's fields.
    pub fn verify_content_hash(&self) -> bool {
        self.compute_content_hash() == self.content_hash
    }

    /// Approximate bytes this entry occupies on the wire or in memory; used for response budgets.
    pub fn encoded_len(&self) -> usize {
        crate::encoding::leaf_input_len(self) + crate::hash::HASH_LEN
    }
}

/// One append as a client asks for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewEntry {
    pub context_id: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub metadata: Metadata,
    /// The clock of an event in another context that caused this one; the entry's clock is
    /// then `max(local, received) + 1`.
    pub received_lamport_clock: Option<u64>,
    /// Makes a retry safe: an append to the same context with a key seen within the dedupe
    /// window is answered with the entry stored the first time, and stores nothing.
    pub idempotency_key: Option<String>,
}

impl NewEntry {
    /// An append of `payload` under `key` to `context_id`, without an idempotency key.
    pub fn new(
        context_id: &str,
        key: &str,
        payload: Vec<u8>,
        metadata: Metadata,
        received_lamport_clock: Option<u64>,
    ) -> Self {
        NewEntry {
            context_id: context_id.to_owned(),
            key: key.to_owned(),
            payload,
            metadata,
            received_lamport_clock,
            idempotency_key: None,
        }
    }
}
