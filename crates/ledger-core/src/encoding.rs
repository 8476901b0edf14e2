//! The canonical leaf encoding (version 1), specified in `docs/INTEGRITY.md`.
//!
//! ```text
//! leaf_input = u8 0x01 (encoding version)
//!            ‖ u64 sequence ‖ u64 appended_at_ns ‖ u64 lamport_clock      (big-endian)
//!            ‖ str id ‖ str key ‖ bytes payload                             (u32 BE length + bytes)
//!            ‖ u32 BE pair count ‖ for each metadata pair, sorted by key bytes: str k ‖ str v
//! content_hash = SHA-256(0x00 ‖ leaf_input)
//! ```
//!
//! The context id is deliberately not part of the leaf: it is bound by the tree head.

use crate::entry::{Entry, Metadata};
use crate::hash::{HASH_LEN, Hash, leaf_hash};
use thiserror::Error;

/// Version byte that starts every leaf input.
pub const LEAF_ENCODING_VERSION: u8 = 0x01;

/// Why a byte string is not a canonical leaf input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LeafDecodeError {
    #[error("leaf input is truncated: needed {needed} more bytes for {field}")]
    Truncated { field: &'static str, needed: usize },
    #[error("unknown leaf encoding version {0} (this build understands version 1)")]
    UnknownVersion(u8),
    #[error("leaf field {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("metadata keys are not strictly ascending by bytes (key {0:?})")]
    MetadataNotCanonical(String),
    #[error("{0} trailing bytes after the leaf input")]
    TrailingBytes(usize),
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
        let mut entry = unhashed(
            id,
            key,
            payload,
            sequence,
            appended_at_ns,
            metadata,
            lamport_clock,
        );
        entry.content_hash = entry.compute_content_hash();
        entry
    }

    /// Recomputes the content hash from the entry's fields (ignores the stored one).
    pub fn compute_content_hash(&self) -> Hash {
        leaf_hash(&encode_leaf_input(self))
    }

    /// True when the stored content hash matches the entry's fields.
    pub fn verify_content_hash(&self) -> bool {
        self.compute_content_hash() == self.content_hash
    }

    /// Approximate bytes this entry occupies on the wire or in memory; used for response budgets.
    pub fn encoded_len(&self) -> usize {
        leaf_input_len(self) + HASH_LEN
    }
}

/// Exact length of the leaf input of `entry`.
pub fn leaf_input_len(entry: &Entry) -> usize {
    1 + 8 * 3
        + 4
        + entry.id.len()
        + 4
        + entry.key.len()
        + 4
        + entry.payload.len()
        + 4
        + entry
            .metadata
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>()
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("field longer than u32::MAX bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends the canonical leaf input of `entry` to `out`.
pub fn write_leaf_input(entry: &Entry, out: &mut Vec<u8>) {
    out.reserve(leaf_input_len(entry));
    out.push(LEAF_ENCODING_VERSION);
    out.extend_from_slice(&entry.sequence.to_be_bytes());
    out.extend_from_slice(&entry.appended_at_ns.to_be_bytes());
    out.extend_from_slice(&entry.lamport_clock.to_be_bytes());
    put_bytes(out, entry.id.as_bytes());
    put_bytes(out, entry.key.as_bytes());
    put_bytes(out, &entry.payload);
    let count = u32::try_from(entry.metadata.len()).expect("more than u32::MAX metadata pairs");
    out.extend_from_slice(&count.to_be_bytes());
    // BTreeMap<String, _> iterates in byte order of the keys: the canonical order.
    for (k, v) in &entry.metadata {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

/// The canonical leaf input of `entry`.
pub fn encode_leaf_input(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(leaf_input_len(entry));
    write_leaf_input(entry, &mut out);
    out
}

/// A cursor over a byte slice that reads the primitive types of the ledger's encodings.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], LeafDecodeError> {
        if self.remaining() < n {
            return Err(LeafDecodeError::Truncated {
                field,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, LeafDecodeError> {
        Ok(self.take(1, field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, LeafDecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, LeafDecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, LeafDecodeError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub fn hash(&mut self, field: &'static str) -> Result<Hash, LeafDecodeError> {
        let b = self.take(32, field)?;
        Ok(Hash::from_slice(b).expect("32 bytes"))
    }

    /// A u32 BE length followed by that many bytes.
    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], LeafDecodeError> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }

    /// A u32 BE length followed by that many bytes of UTF-8.
    pub fn str(&mut self, field: &'static str) -> Result<&'a str, LeafDecodeError> {
        std::str::from_utf8(self.bytes(field)?).map_err(|_| LeafDecodeError::InvalidUtf8(field))
    }
}

/// Decodes a canonical leaf input (the whole slice) and computes its content hash.
pub fn decode_leaf_input(input: &[u8]) -> Result<Entry, LeafDecodeError> {
    let mut r = Reader::new(input);
    let entry = read_leaf_fields(&mut r)?;
    if r.remaining() != 0 {
        return Err(LeafDecodeError::TrailingBytes(r.remaining()));
    }
    Ok(Entry {
        content_hash: leaf_hash(input),
        ..entry
    })
}

/// Decodes a leaf input whose content hash is already known (stored beside it); no hashing.
pub fn decode_leaf_input_with_hash(
    input: &[u8],
    content_hash: Hash,
) -> Result<Entry, LeafDecodeError> {
    let mut r = Reader::new(input);
    let entry = read_leaf_fields(&mut r)?;
    if r.remaining() != 0 {
        return Err(LeafDecodeError::TrailingBytes(r.remaining()));
    }
    Ok(Entry {
        content_hash,
        ..entry
    })
}

fn read_leaf_fields(r: &mut Reader<'_>) -> Result<Entry, LeafDecodeError> {
    let version = r.u8("version")?;
    if version != LEAF_ENCODING_VERSION {
        return Err(LeafDecodeError::UnknownVersion(version));
    }
    let sequence = r.u64("sequence")?;
    let appended_at_ns = r.u64("appended_at_ns")?;
    let lamport_clock = r.u64("lamport_clock")?;
    let id = r.str("id")?.to_owned();
    let key = r.str("key")?.to_owned();
    let payload = r.bytes("payload")?.to_vec();
    let count = r.u32("metadata count")?;
    let mut metadata = Metadata::new();
    let mut last: Option<&str> = None;
    for _ in 0..count {
        let k = r.str("metadata key")?;
        let v = r.str("metadata value")?;
        if last.is_some_and(|prev| prev.as_bytes() >= k.as_bytes()) {
            return Err(LeafDecodeError::MetadataNotCanonical(k.to_owned()));
        }
        last = Some(k);
        metadata.insert(k.to_owned(), v.to_owned());
    }
    Ok(unhashed(
        id,
        key,
        payload,
        sequence,
        appended_at_ns,
        metadata,
        lamport_clock,
    ))
}

/// An entry of these fields whose content hash is not computed yet (zero).
#[allow(clippy::too_many_arguments)]
fn unhashed(
    id: String,
    key: String,
    payload: Vec<u8>,
    sequence: u64,
    appended_at_ns: u64,
    metadata: Metadata,
    lamport_clock: u64,
) -> Entry {
    Entry {
        id,
        key,
        payload,
        sequence,
        appended_at_ns,
        metadata,
        lamport_clock,
        content_hash: Hash::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Entry {
        let mut metadata = Metadata::new();
        metadata.insert("source".into(), "planner".into());
        metadata.insert("agent".into(), "a1".into());
        Entry::new(
            "01890a5d-ac96-774b-bcce-b302099a8057".into(),
            "facts".into(),
            b"{\"x\":1}".to_vec(),
            1,
            1_700_000_000_000_000_000,
            metadata,
            1,
        )
    }

    #[test]
    fn leaf_input_layout_is_exactly_as_specified() {
        let e = sample();
        let b = encode_leaf_input(&e);
        assert_eq!(b.len(), leaf_input_len(&e));
        assert_eq!(b[0], 0x01);
        assert_eq!(&b[1..9], &1u64.to_be_bytes());
        assert_eq!(&b[9..17], &1_700_000_000_000_000_000u64.to_be_bytes());
        assert_eq!(&b[17..25], &1u64.to_be_bytes());
        assert_eq!(&b[25..29], &36u32.to_be_bytes());
        assert_eq!(&b[29..65], e.id.as_bytes());
        // metadata sorted: "agent" before "source"
        let tail = &b[b.len() - (4 + 4 + 5 + 4 + 2 + 4 + 6 + 4 + 7)..];
        assert_eq!(&tail[..4], &2u32.to_be_bytes());
        assert_eq!(&tail[8..13], b"agent");
    }

    #[test]
    fn decode_round_trips_and_recomputes_hash() {
        let e = sample();
        let b = encode_leaf_input(&e);
        assert_eq!(decode_leaf_input(&b).unwrap(), e);
    }

    #[test]
    fn decode_rejects_non_canonical_inputs() {
        let e = sample();
        let b = encode_leaf_input(&e);
        assert!(matches!(
            decode_leaf_input(&b[..b.len() - 1]),
            Err(LeafDecodeError::Truncated { .. })
        ));
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(
            decode_leaf_input(&longer),
            Err(LeafDecodeError::TrailingBytes(1))
        );
        let mut v2 = b.clone();
        v2[0] = 2;
        assert_eq!(
            decode_leaf_input(&v2),
            Err(LeafDecodeError::UnknownVersion(2))
        );
    }

    #[test]
    fn metadata_tampering_changes_the_content_hash() {
        let e = sample();
        let mut t = e.clone();
        t.metadata.insert("agent".into(), "a2".into());
        assert_ne!(e.content_hash, t.compute_content_hash());
        assert!(!Entry { ..t }.verify_content_hash());
    }
}
