//! Value encodings of the RocksDB store (see `docs/ARCHITECTURE.md`, "On disk").
//!
//! - entry value: `content_hash (32) ‖ leaf_input`; the leaf input is the canonical encoding of
//!   `ledger_core::encoding`, so a stored entry is exactly what was hashed.
//! - head value: `u8 1 (format) ‖ str context_id ‖ u64 size ‖ u64 lamport_clock ‖
//!   u64 last_appended_at_ns ‖ u8 n ‖ n × 32-byte frontier hashes`.

use crate::{ContextHead, StorageError};
use ledger_core::encoding::{Reader, decode_leaf_input_with_hash, write_leaf_input};
use ledger_core::merkle::Frontier;
use ledger_core::{Entry, Hash};

const HEAD_FORMAT: u8 = 1;

/// Encodes an entry for the `entries` column family.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + ledger_core::encoding::leaf_input_len(entry));
    v.extend_from_slice(entry.content_hash.as_bytes());
    write_leaf_input(entry, &mut v);
    v
}

/// Decodes an `entries` value.
pub fn decode_entry(value: &[u8]) -> Result<Entry, StorageError> {
    if value.len() < 32 {
        return Err(StorageError::Corrupt(format!(
            "entry value of {} bytes is too short",
            value.len()
        )));
    }
    let (hash, leaf) = value.split_at(32);
    let hash = Hash::from_slice(hash).expect("32 bytes");
    decode_leaf_input_with_hash(leaf, hash)
        .map_err(|e| StorageError::Corrupt(format!("entry value: {e}")))
}

/// The key field of an encoded entry, read without decoding the payload.
pub fn entry_value_key(value: &[u8]) -> Option<&str> {
    let mut r = Reader::new(value.get(32..)?);
    r.take(1 + 24, "header").ok()?;
    r.bytes("id").ok()?;
    r.str("key").ok()
}

/// Encodes a head for the `heads` column family.
pub fn encode_head(head: &ContextHead) -> Vec<u8> {
    let hashes = head.frontier.hashes();
    let mut v = Vec::with_capacity(1 + 4 + head.context_id.len() + 24 + 1 + hashes.len() * 32);
    v.push(HEAD_FORMAT);
    v.extend_from_slice(&(head.context_id.len() as u32).to_be_bytes());
    v.extend_from_slice(head.context_id.as_bytes());
    v.extend_from_slice(&head.size().to_be_bytes());
    v.extend_from_slice(&head.lamport_clock.to_be_bytes());
    v.extend_from_slice(&head.last_appended_at_ns.to_be_bytes());
    v.push(hashes.len() as u8);
    for h in hashes {
        v.extend_from_slice(h.as_bytes());
    }
    v
}

/// Decodes a `heads` value.
pub fn decode_head(value: &[u8]) -> Result<ContextHead, StorageError> {
    let corrupt = |e: &dyn std::fmt::Display| StorageError::Corrupt(format!("context head: {e}"));
    let mut r = Reader::new(value);
    let format = r.u8("format").map_err(|e| corrupt(&e))?;
    if format != HEAD_FORMAT {
        return Err(corrupt(&format!("unknown head format {format}")));
    }
    let context_id = r.str("context_id").map_err(|e| corrupt(&e))?.to_owned();
    let size = r.u64("size").map_err(|e| corrupt(&e))?;
    let lamport_clock = r.u64("lamport_clock").map_err(|e| corrupt(&e))?;
    let last_appended_at_ns = r.u64("last_appended_at_ns").map_err(|e| corrupt(&e))?;
    let n = r.u8("frontier length").map_err(|e| corrupt(&e))?;
    let mut hashes = Vec::with_capacity(n as usize);
    for _ in 0..n {
        hashes.push(r.hash("frontier").map_err(|e| corrupt(&e))?);
    }
    if r.remaining() != 0 {
        return Err(corrupt(&"trailing bytes"));
    }
    let frontier = Frontier::from_parts(size, hashes).map_err(|e| corrupt(&e))?;
    Ok(ContextHead {
        context_id,
        lamport_clock,
        last_appended_at_ns,
        frontier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::Metadata;

    #[test]
    fn entry_and_head_round_trip() {
        let e = Entry::new("id".into(), "facts".into(), vec![1, 2, 3], 1, 5, Metadata::new(), 1);
        let v = encode_entry(&e);
        assert_eq!(decode_entry(&v).unwrap(), e);
        assert_eq!(entry_value_key(&v), Some("facts"));
        let mut head = ContextHead::empty("ctx");
        head.push(&e, &mut Vec::new()).unwrap();
        assert_eq!(decode_head(&encode_head(&head)).unwrap(), head);
        assert!(decode_head(&encode_head(&head)[..10]).is_err());
    }
}
