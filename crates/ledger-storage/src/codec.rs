//! Value encodings of the RocksDB store (see `docs/ARCHITECTURE.md`, "On disk").
//!
//! - entry value: `content_hash (32) ‖ leaf_input`; the leaf input is the canonical encoding of
//!   `ledger_core::encoding`, so a stored entry is exactly what was hashed.
//! - node row value: the 32-byte hashes of the complete subtrees an entry completed, level 0
//!   (its content hash) first (see [`crate::keys`]).
//! - head value: `u8 1 (format) ‖ str context_id ‖ u64 size ‖ u64 lamport_clock ‖
//!   u64 last_appended_at_ns`; the frontier is read from the `nodes` rows of its subtrees.
//! - idempotency value: `u64 ordinal ‖ u64 sequence ‖ u64 appended_at_ns ‖ fingerprint (32) ‖
//!   key (UTF-8, the rest)`.
//! - replication value: `u8 1 (format) ‖ str context_id ‖ state (the rest, opaque)`.
//! - quarantine info value: `u8 1 (format) ‖ str context_id ‖ u64 from_sequence ‖ u64 count ‖
//!   u64 quarantined_at_ns ‖ str reason` (the id is in the key).
//! - quarantine entry value: the entry's `entries` value, byte for byte.
//!
//! `str` is a u32 big-endian length followed by that many bytes of UTF-8.

use crate::{ContextHead, IdempotencyRecord, QuarantineInfo, StorageError};
use ledger_core::encoding::{Reader, decode_leaf_input_with_hash, write_leaf_input};
use ledger_core::merkle::Frontier;
use ledger_core::{Entry, Hash};

const HEAD_FORMAT: u8 = 1;
const REPLICATION_FORMAT: u8 = 1;
const QUARANTINE_FORMAT: u8 = 1;

fn put_str(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
    v.extend_from_slice(s.as_bytes());
}

/// Encodes an entry for the `entries` column family.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + ledger_core::encoding::leaf_input_len(entry));
    encode_entry_into(entry, &mut v);
    v
}

/// Appends the `entries` value of `entry` to `out`.
pub fn encode_entry_into(entry: &Entry, out: &mut Vec<u8>) {
    out.extend_from_slice(entry.content_hash.as_bytes());
    write_leaf_input(entry, out);
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

/// The stored part of a head: everything but the frontier, whose hashes live in `nodes` rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadRecord {
    pub context_id: String,
    pub size: u64,
    pub lamport_clock: u64,
    pub last_appended_at_ns: u64,
}

/// Encodes a head for the `heads` column family:
/// `u8 1 ‖ str context_id ‖ u64 size ‖ u64 lamport_clock ‖ u64 last_appended_at_ns`.
pub fn encode_head(head: &ContextHead) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + 4 + head.context_id.len() + 24);
    v.push(HEAD_FORMAT);
    v.extend_from_slice(&(head.context_id.len() as u32).to_be_bytes());
    v.extend_from_slice(head.context_id.as_bytes());
    v.extend_from_slice(&head.size().to_be_bytes());
    v.extend_from_slice(&head.lamport_clock.to_be_bytes());
    v.extend_from_slice(&head.last_appended_at_ns.to_be_bytes());
    v
}

/// Decodes a `heads` value.
pub fn decode_head(value: &[u8]) -> Result<HeadRecord, StorageError> {
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
    if r.remaining() != 0 {
        return Err(corrupt(&"trailing bytes"));
    }
    Ok(HeadRecord {
        context_id,
        size,
        lamport_clock,
        last_appended_at_ns,
    })
}

impl HeadRecord {
    /// The full head, given the frontier's hashes (largest subtree first).
    pub fn into_head(self, frontier_hashes: Vec<Hash>) -> Result<ContextHead, StorageError> {
        let frontier = Frontier::from_parts(self.size, frontier_hashes)
            .map_err(|e| StorageError::Corrupt(format!("context head: {e}")))?;
        Ok(ContextHead {
            context_id: self.context_id,
            lamport_clock: self.lamport_clock,
            last_appended_at_ns: self.last_appended_at_ns,
            frontier,
        })
    }
}

/// Encodes an `idempotency` value.
pub fn encode_idempotency(r: &IdempotencyRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(56 + r.key.len());
    v.extend_from_slice(&r.ordinal.to_be_bytes());
    v.extend_from_slice(&r.sequence.to_be_bytes());
    v.extend_from_slice(&r.appended_at_ns.to_be_bytes());
    v.extend_from_slice(r.fingerprint.as_bytes());
    v.extend_from_slice(r.key.as_bytes());
    v
}

/// Decodes an `idempotency` value.
pub fn decode_idempotency(v: &[u8]) -> Result<IdempotencyRecord, StorageError> {
    let bad = || StorageError::Corrupt(format!("idempotency value of {} bytes", v.len()));
    if v.len() < 56 {
        return Err(bad());
    }
    let u = |i: usize| u64::from_be_bytes(v[i..i + 8].try_into().expect("8 bytes"));
    Ok(IdempotencyRecord {
        ordinal: u(0),
        sequence: u(8),
        appended_at_ns: u(16),
        fingerprint: Hash::from_slice(&v[24..56]).ok_or_else(bad)?,
        key: String::from_utf8(v[56..].to_vec()).map_err(|_| bad())?,
    })
}

/// Encodes a `replication` value: `u8 1 ‖ str context_id ‖ state`.
pub fn encode_replication(context_id: &str, state: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + 4 + context_id.len() + state.len());
    v.push(REPLICATION_FORMAT);
    put_str(&mut v, context_id);
    v.extend_from_slice(state);
    v
}

/// Decodes a `replication` value into the context id it was saved for and the state.
pub fn decode_replication(value: &[u8]) -> Result<(&str, &[u8]), StorageError> {
    let corrupt =
        |e: &dyn std::fmt::Display| StorageError::Corrupt(format!("replication state: {e}"));
    let mut r = Reader::new(value);
    let format = r.u8("format").map_err(|e| corrupt(&e))?;
    if format != REPLICATION_FORMAT {
        return Err(corrupt(&format!("unknown format {format}")));
    }
    let context_id = r.str("context_id").map_err(|e| corrupt(&e))?;
    let state = r.take(r.remaining(), "state").map_err(|e| corrupt(&e))?;
    Ok((context_id, state))
}

/// Encodes a `quarantine` info value (everything but the id, which is in the key).
pub fn encode_quarantine_info(q: &QuarantineInfo) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + 4 + q.context_id.len() + 24 + 4 + q.reason.len());
    v.push(QUARANTINE_FORMAT);
    put_str(&mut v, &q.context_id);
    v.extend_from_slice(&q.from_sequence.to_be_bytes());
    v.extend_from_slice(&q.count.to_be_bytes());
    v.extend_from_slice(&q.quarantined_at_ns.to_be_bytes());
    put_str(&mut v, &q.reason);
    v
}

/// Decodes a `quarantine` info value stored under quarantine id `id`.
pub fn decode_quarantine_info(id: u64, value: &[u8]) -> Result<QuarantineInfo, StorageError> {
    let corrupt =
        |e: &dyn std::fmt::Display| StorageError::Corrupt(format!("quarantine {id}: {e}"));
    let mut r = Reader::new(value);
    let format = r.u8("format").map_err(|e| corrupt(&e))?;
    if format != QUARANTINE_FORMAT {
        return Err(corrupt(&format!("unknown format {format}")));
    }
    let context_id = r.str("context_id").map_err(|e| corrupt(&e))?.to_owned();
    let from_sequence = r.u64("from_sequence").map_err(|e| corrupt(&e))?;
    let count = r.u64("count").map_err(|e| corrupt(&e))?;
    let quarantined_at_ns = r.u64("quarantined_at_ns").map_err(|e| corrupt(&e))?;
    let reason = r.str("reason").map_err(|e| corrupt(&e))?.to_owned();
    if r.remaining() != 0 {
        return Err(corrupt(&"trailing bytes"));
    }
    Ok(QuarantineInfo {
        context_id,
        id,
        from_sequence,
        count,
        quarantined_at_ns,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_records_round_trip() {
        let r = IdempotencyRecord {
            key: "op-ü".into(),
            sequence: 7,
            appended_at_ns: 9,
            fingerprint: Hash([3; 32]),
            ordinal: 2,
        };
        assert_eq!(decode_idempotency(&encode_idempotency(&r)).unwrap(), r);
        assert!(decode_idempotency(&[0; 55]).is_err());
    }
    use ledger_core::Metadata;

    #[test]
    fn replication_and_quarantine_values_round_trip() {
        let v = encode_replication("ctx-é", &[0, 1, 2, 255]);
        assert_eq!(
            decode_replication(&v).unwrap(),
            ("ctx-é", &[0, 1, 2, 255][..])
        );
        assert_eq!(
            decode_replication(&encode_replication("c", &[])).unwrap().1,
            b""
        );
        assert!(decode_replication(&v[..3]).is_err());
        let q = QuarantineInfo {
            context_id: "ctx".into(),
            id: 3,
            from_sequence: 13,
            count: 8,
            quarantined_at_ns: 42,
            reason: "diverged from epoch 7".into(),
        };
        let v = encode_quarantine_info(&q);
        assert_eq!(decode_quarantine_info(3, &v).unwrap(), q);
        assert!(decode_quarantine_info(3, &v[..v.len() - 1]).is_err());
        let mut long = v.clone();
        long.push(0);
        assert!(decode_quarantine_info(3, &long).is_err());
    }

    #[test]
    fn entry_and_head_round_trip() {
        let e = Entry::new(
            "id".into(),
            "facts".into(),
            vec![1, 2, 3],
            1,
            5,
            Metadata::new(),
            1,
        );
        let v = encode_entry(&e);
        assert_eq!(decode_entry(&v).unwrap(), e);
        assert_eq!(entry_value_key(&v), Some("facts"));
        let mut head = ContextHead::empty("ctx");
        head.push(&e, &mut Vec::new()).unwrap();
        let rec = decode_head(&encode_head(&head)).unwrap();
        assert_eq!(rec.size, 1);
        assert_eq!(
            rec.into_head(head.frontier.hashes().to_vec()).unwrap(),
            head
        );
        assert!(decode_head(&encode_head(&head)[..10]).is_err());
    }
}
