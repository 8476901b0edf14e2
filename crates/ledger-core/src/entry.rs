//! The entry model: what one append stores. Plain data: building an entry (its content hash)
//! and measuring it are the canonical encoding's, in the `encoding` module.

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
    /// `SHA-256(0x00 ‖ leaf_input)` over the canonical leaf encoding (computed by
    /// `Entry::new`, in the `encoding` module with the encoding itself).
    pub content_hash: Hash,
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
