//! Key encoding of the RocksDB store. All integers are big-endian so RocksDB's bytewise order is
//! numeric order.
//!
//! | column family | key                                              | value                       |
//! |---------------|--------------------------------------------------|-----------------------------|
//! | `entries`     | context key (16) ‖ sequence (u64)                | content hash ‖ leaf input   |
//! | `heads`       | context key (16)                                 | encoded [`crate::ContextHead`] |
//! | `nodes`       | context key (16) ‖ level (u8) ‖ index (u64)      | 32-byte subtree hash        |
//!
//! The context key is the first 16 bytes of SHA-256 of the context id: fixed width, so a context's
//! rows are contiguous and sequences sort numerically after it, with no id table to consult. A
//! collision needs ~2^64 contexts; the head stores the full id and a mismatch is reported, never
//! mixed up.

use ledger_core::hash::sha256;
use ledger_core::merkle::NodeId;

/// Width of a context key.
pub const CONTEXT_KEY_LEN: usize = 16;
/// Width of an entry key.
pub const ENTRY_KEY_LEN: usize = CONTEXT_KEY_LEN + 8;
/// Width of a node key.
pub const NODE_KEY_LEN: usize = CONTEXT_KEY_LEN + 1 + 8;

/// Fixed-width storage key of a context.
pub type ContextKey = [u8; CONTEXT_KEY_LEN];

/// The storage key of a context id.
pub fn context_key(context_id: &str) -> ContextKey {
    let h = sha256(context_id.as_bytes());
    let mut k = [0u8; CONTEXT_KEY_LEN];
    k.copy_from_slice(&h.0[..CONTEXT_KEY_LEN]);
    k
}

/// `entries` key of one entry.
pub fn entry_key(ctx: &ContextKey, sequence: u64) -> [u8; ENTRY_KEY_LEN] {
    let mut k = [0u8; ENTRY_KEY_LEN];
    k[..CONTEXT_KEY_LEN].copy_from_slice(ctx);
    k[CONTEXT_KEY_LEN..].copy_from_slice(&sequence.to_be_bytes());
    k
}

/// Sequence of an `entries` key.
pub fn entry_key_sequence(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(CONTEXT_KEY_LEN..ENTRY_KEY_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// `nodes` key of one complete subtree.
pub fn node_key(ctx: &ContextKey, id: NodeId) -> [u8; NODE_KEY_LEN] {
    let mut k = [0u8; NODE_KEY_LEN];
    k[..CONTEXT_KEY_LEN].copy_from_slice(ctx);
    k[CONTEXT_KEY_LEN] = id.level;
    k[CONTEXT_KEY_LEN + 1..].copy_from_slice(&id.index.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_sort_by_sequence_within_a_context() {
        let c = context_key("ctx");
        let mut keys: Vec<_> = [300u64, 2, 1, 256, u64::MAX].iter().map(|s| entry_key(&c, *s)).collect();
        keys.sort();
        let seqs: Vec<_> = keys.iter().map(|k| entry_key_sequence(k).unwrap()).collect();
        assert_eq!(seqs, vec![1, 2, 256, 300, u64::MAX]);
    }

    #[test]
    fn context_keys_are_fixed_width_and_distinct() {
        assert_ne!(context_key("a"), context_key("b"));
        assert_eq!(context_key("a"), context_key("a"));
        let k = node_key(&context_key("a"), NodeId::new(3, 258));
        assert_eq!(k.len(), 25);
        assert_eq!(k[16], 3);
        assert_eq!(&k[17..], &258u64.to_be_bytes());
    }
}
