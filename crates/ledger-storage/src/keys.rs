//! Key encoding of the RocksDB store. All integers are big-endian so RocksDB's bytewise order is
//! numeric order.
//!
//! | column family | key                               | value                                        |
//! |---------------|-----------------------------------|----------------------------------------------|
//! | `entries`     | context key (16) ‖ sequence (u64) | content hash ‖ leaf input                    |
//! | `nodes`       | context key (16) ‖ sequence (u64) | the Merkle subtree hashes this entry completed |
//! | `heads`       | context key (16)                  | context id, size, Lamport clock, last time   |
//! | `idempotency` | context key (16) ‖ SHA-256(key)[..16] | ordinal, sequence, time, fingerprint, key |
//! | `idempotency` | context key (16)                  | ordinal of the context's last keyed append   |
//! | `replication` | context key (16)                  | context id, the replication layer's state bytes |
//! | `quarantine`  | `i` ‖ context key (16) ‖ id (u64) | context id, from sequence, count, time, reason |
//! | `quarantine`  | `e` ‖ context key (16) ‖ id (u64) ‖ sequence (u64) | a quarantined entry, as its `entries` value was |
//! | `key_index`   | context key (16) ‖ SHA-256(entry key)[..16] ‖ sequence (u64) | empty          |
//!
//! The `key_index` rows of one (context, entry key) pair are contiguous and in sequence order, so
//! a read filtered by key seeks to the first sequence it wants and touches only matching rows.
//! Readers check the entry's stored key (a hash collision, or a row left by a load that never
//! applied, names an entry with another key, and is skipped).
//!
//! The `quarantine` rows start with a tag byte so that one kind can be scanned without the
//! other: every quarantine of every context is the `i` range (by context key, then id), and the
//! entries of one quarantine are the `e` range of its context key and id, in sequence order.
//!
//! The context key is the first 16 bytes of SHA-256 of the context id: fixed width, so a context's
//! rows are contiguous and sequences sort numerically after it, with no id table to consult. A
//! collision needs ~2^64 contexts; the head stores the full id and a mismatch is reported, never
//! mixed up.
//!
//! Appending the entry with sequence `s` (leaf index `s − 1`) completes exactly the subtrees
//! `(level 0, index s − 1)`, `(1, s/2 − 1)` if `s` is even, `(2, s/4 − 1)` if `s` is a multiple of
//! 4, and so on. Its `nodes` row holds their hashes in level order, so the complete subtree
//! `(level L, index j)` is found in the row of sequence `(j + 1) · 2^L`, at byte `32 · L`.
//! Every row is written once, by the commit that appends its entry, and keys only grow within a
//! context, so each commit appends at the end of its context's key range.

use ledger_core::hash::sha256;
use ledger_core::merkle::TreeNodeId;

/// Width of a context key.
pub const CONTEXT_KEY_LEN: usize = 16;
/// Width of an entry (and node row) key.
pub const ENTRY_KEY_LEN: usize = CONTEXT_KEY_LEN + 8;

/// Fixed-width storage key of a context.
pub type ContextKey = [u8; CONTEXT_KEY_LEN];

/// The storage key of a context id.
pub fn context_key(context_id: &str) -> ContextKey {
    let h = sha256(context_id.as_bytes());
    let mut k = [0u8; CONTEXT_KEY_LEN];
    k.copy_from_slice(&h.0[..CONTEXT_KEY_LEN]);
    k
}

/// `entries` (and `nodes`) key of sequence `sequence`.
pub fn entry_key(ctx: &ContextKey, sequence: u64) -> [u8; ENTRY_KEY_LEN] {
    let mut k = [0u8; ENTRY_KEY_LEN];
    k[..CONTEXT_KEY_LEN].copy_from_slice(ctx);
    k[CONTEXT_KEY_LEN..].copy_from_slice(&sequence.to_be_bytes());
    k
}

/// `idempotency` key of an append's idempotency key in a context.
pub fn idempotency_key(ctx: &ContextKey, key: &str) -> [u8; 2 * CONTEXT_KEY_LEN] {
    let h = sha256(key.as_bytes());
    let mut k = [0u8; 2 * CONTEXT_KEY_LEN];
    k[..CONTEXT_KEY_LEN].copy_from_slice(ctx);
    k[CONTEXT_KEY_LEN..].copy_from_slice(&h.0[..CONTEXT_KEY_LEN]);
    k
}

/// Width of the (context, entry key) prefix of a `key_index` key.
pub const KEY_INDEX_PREFIX_LEN: usize = 2 * CONTEXT_KEY_LEN;
/// Width of a `key_index` key: context key ‖ entry key hash ‖ sequence.
pub const KEY_INDEX_KEY_LEN: usize = KEY_INDEX_PREFIX_LEN + 8;

/// The `key_index` rows of entry key `key` in a context all start with these bytes.
pub fn key_index_prefix(ctx: &ContextKey, key: &str) -> [u8; KEY_INDEX_PREFIX_LEN] {
    let h = sha256(key.as_bytes());
    let mut k = [0u8; KEY_INDEX_PREFIX_LEN];
    k[..CONTEXT_KEY_LEN].copy_from_slice(ctx);
    k[CONTEXT_KEY_LEN..].copy_from_slice(&h.0[..CONTEXT_KEY_LEN]);
    k
}

/// `key_index` key of the entry with `sequence` under the prefix of its context and entry key.
pub fn key_index_key(
    prefix: &[u8; KEY_INDEX_PREFIX_LEN],
    sequence: u64,
) -> [u8; KEY_INDEX_KEY_LEN] {
    let mut k = [0u8; KEY_INDEX_KEY_LEN];
    k[..KEY_INDEX_PREFIX_LEN].copy_from_slice(prefix);
    k[KEY_INDEX_PREFIX_LEN..].copy_from_slice(&sequence.to_be_bytes());
    k
}

/// The sequence of a `key_index` key (`None` for any other key).
pub fn key_index_key_sequence(key: &[u8]) -> Option<u64> {
    if key.len() != KEY_INDEX_KEY_LEN {
        return None;
    }
    let b: [u8; 8] = key[KEY_INDEX_PREFIX_LEN..].try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Tag byte of `quarantine` info rows.
pub const QUARANTINE_INFO_TAG: u8 = b'i';
/// Tag byte of `quarantine` entry rows.
pub const QUARANTINE_ENTRY_TAG: u8 = b'e';
/// Width of a `quarantine` info key: tag ‖ context key ‖ id.
pub const QUARANTINE_INFO_KEY_LEN: usize = 1 + CONTEXT_KEY_LEN + 8;
/// Width of a `quarantine` entry key: tag ‖ context key ‖ id ‖ sequence.
pub const QUARANTINE_ENTRY_KEY_LEN: usize = QUARANTINE_INFO_KEY_LEN + 8;

/// `quarantine` key of the info row of quarantine `id` of a context.
pub fn quarantine_info_key(ctx: &ContextKey, id: u64) -> [u8; QUARANTINE_INFO_KEY_LEN] {
    let mut k = [0u8; QUARANTINE_INFO_KEY_LEN];
    k[0] = QUARANTINE_INFO_TAG;
    k[1..1 + CONTEXT_KEY_LEN].copy_from_slice(ctx);
    k[1 + CONTEXT_KEY_LEN..].copy_from_slice(&id.to_be_bytes());
    k
}

/// `quarantine` key of the entry with `sequence` moved aside by quarantine `id` of a context.
pub fn quarantine_entry_key(
    ctx: &ContextKey,
    id: u64,
    sequence: u64,
) -> [u8; QUARANTINE_ENTRY_KEY_LEN] {
    let mut k = [0u8; QUARANTINE_ENTRY_KEY_LEN];
    k[..QUARANTINE_INFO_KEY_LEN].copy_from_slice(&quarantine_info_key(ctx, id));
    k[0] = QUARANTINE_ENTRY_TAG;
    k[QUARANTINE_INFO_KEY_LEN..].copy_from_slice(&sequence.to_be_bytes());
    k
}

/// The id of a `quarantine` info key (`None` for any other key).
pub fn quarantine_info_key_id(key: &[u8]) -> Option<u64> {
    if key.len() != QUARANTINE_INFO_KEY_LEN || key[0] != QUARANTINE_INFO_TAG {
        return None;
    }
    let b: [u8; 8] = key[1 + CONTEXT_KEY_LEN..].try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// The sequence of a `quarantine` entry key (`None` for any other key).
pub fn quarantine_entry_key_sequence(key: &[u8]) -> Option<u64> {
    if key.len() != QUARANTINE_ENTRY_KEY_LEN || key[0] != QUARANTINE_ENTRY_TAG {
        return None;
    }
    let b: [u8; 8] = key[QUARANTINE_INFO_KEY_LEN..].try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Sequence of an `entries` key.
pub fn entry_key_sequence(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(CONTEXT_KEY_LEN..ENTRY_KEY_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Where the hash of complete subtree `id` is stored: the `nodes` row of this sequence, at this
/// byte offset.
pub fn node_location(id: TreeNodeId) -> (u64, usize) {
    ((id.index + 1) << id.level, 32 * id.level as usize)
}

/// Number of subtree hashes the `nodes` row of `sequence` holds (1 + trailing zero bits).
pub fn node_row_len(sequence: u64) -> usize {
    1 + sequence.trailing_zeros() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_sort_by_sequence_within_a_context() {
        let c = context_key("ctx");
        let mut keys: Vec<_> = [300u64, 2, 1, 256, u64::MAX]
            .iter()
            .map(|s| entry_key(&c, *s))
            .collect();
        keys.sort();
        let seqs: Vec<_> = keys
            .iter()
            .map(|k| entry_key_sequence(k).unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 2, 256, 300, u64::MAX]);
    }

    #[test]
    fn quarantine_keys_group_by_kind_then_context_then_id_then_sequence() {
        let (lo, hi) = {
            let (a, b) = (context_key("a"), context_key("b"));
            if a < b { (a, b) } else { (b, a) }
        };
        let want: Vec<Vec<u8>> = vec![
            quarantine_entry_key(&lo, 1, 7).to_vec(),
            quarantine_entry_key(&lo, 1, 300).to_vec(),
            quarantine_entry_key(&lo, 2, 1).to_vec(),
            quarantine_entry_key(&hi, 1, 1).to_vec(),
            quarantine_info_key(&lo, 1).to_vec(),
            quarantine_info_key(&lo, 2).to_vec(),
            quarantine_info_key(&hi, 1).to_vec(),
        ];
        let mut keys = want.clone();
        keys.reverse();
        keys.sort();
        assert_eq!(keys, want);
        assert_eq!(quarantine_entry_key_sequence(&keys[1]), Some(300));
        assert_eq!(quarantine_entry_key_sequence(&keys[4]), None);
        assert_eq!(quarantine_info_key_id(&keys[5]), Some(2));
        assert_eq!(quarantine_info_key_id(&keys[0]), None);
    }

    #[test]
    fn key_index_keys_group_by_context_then_entry_key_then_sequence() {
        let c = context_key("ctx");
        let (a, b) = (key_index_prefix(&c, "a"), key_index_prefix(&c, "b"));
        assert_ne!(a, b);
        assert_eq!(a[..CONTEXT_KEY_LEN], c);
        let mut keys: Vec<_> = [(a, 300u64), (b, 1), (a, 2), (b, 256), (a, u64::MAX)]
            .iter()
            .map(|(p, s)| key_index_key(p, *s))
            .collect();
        keys.sort();
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let n_lo = if lo == a { 3 } else { 2 };
        assert!(keys[..n_lo].iter().all(|k| k.starts_with(&lo)));
        assert!(keys[n_lo..].iter().all(|k| k.starts_with(&hi)));
        let seqs: Vec<_> = keys
            .iter()
            .map(|k| key_index_key_sequence(k).unwrap())
            .collect();
        if lo == a {
            assert_eq!(seqs, vec![2, 300, u64::MAX, 1, 256]);
        } else {
            assert_eq!(seqs, vec![1, 256, 2, 300, u64::MAX]);
        }
        assert_eq!(key_index_key_sequence(&entry_key(&c, 5)), None);
    }

    #[test]
    fn context_keys_are_fixed_width_and_distinct() {
        assert_ne!(context_key("a"), context_key("b"));
        assert_eq!(context_key("a"), context_key("a"));
    }

    #[test]
    fn each_subtree_lives_in_the_row_of_its_last_leaf() {
        // Leaf index 5 is sequence 6.
        assert_eq!(node_location(TreeNodeId::leaf(5)), (6, 0));
        // Leaves 4..8 end at sequence 8, level 2.
        assert_eq!(node_location(TreeNodeId::new(2, 1)), (8, 64));
        assert_eq!(node_row_len(8), 4);
        assert_eq!(node_row_len(7), 1);
        // The frontier's subtrees always fit in their rows.
        for s in 1..200u64 {
            for l in 0..8u8 {
                if s % (1 << l) == 0 {
                    let (seq, off) = node_location(TreeNodeId::new(l, s / (1 << l) - 1));
                    assert_eq!(seq, s);
                    assert!(off / 32 < node_row_len(s));
                }
            }
        }
    }
}
