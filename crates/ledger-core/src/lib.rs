//! The functional core of Converge Ledger: pure data and functions, no I/O, no async runtime.
//!
//! Everything here takes values and returns values, so it is tested exhaustively without disks
//! or sockets and reused unchanged by the store, the node and clients that verify what they hold.
//!
//! # Layout
//! - [`entry`]: the entry model.
//! - [`validate`]: input limits with errors that name the field and the limit.
//! - [`encoding`]: the canonical leaf encoding whose hash is an entry's content hash.
//! - [`hash`]: SHA-256 and the RFC 9162 leaf/node hash functions.
//! - [`merkle`]: the per-context Merkle tree: frontier, proof plans, verifiers, reference tree.
//! - [`lamport`]: per-context Lamport clocks.
//! - [`idempotency`]: what makes a retried append "the same append".
//! - [`snapshot`]: the versioned, self-verifying snapshot format, encoded and decoded whole or
//!   in pieces.
//! - [`tail`]: the one verifier of entries that continue a known tree (snapshots, shipped
//!   batches, watched streams).
//! - [`time`]: Unix nanoseconds as UTC text.
//! - [`checkpoint`]: signed tree heads (Ed25519 over a C2SP-style text checkpoint).

pub mod checkpoint;
pub mod encoding;
pub mod entry;
pub mod hash;
pub mod idempotency;
pub mod lamport;
pub mod merkle;
pub mod snapshot;
pub mod tail;
pub mod time;
pub mod validate;

pub use entry::{Entry, Metadata, NewEntry};
pub use hash::Hash;
pub use lamport::LamportClock;
pub use merkle::{Frontier, TreeNodeId};

/// Lower-case hex SHA-256 of `data` (for logs, CLIs and test vectors).
pub fn sha256_hex(data: &[u8]) -> String {
    hash::sha256(data).to_hex()
}
