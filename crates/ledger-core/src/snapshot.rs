//! The snapshot codec: a portable, self-verifying binary image of one context.
//!
//! Version 1, all integers big-endian (byte-by-byte in `docs/SNAPSHOT.md`):
//!
//! ```text
//! magic          8 bytes  "CVLGSNAP"
//! version        u16      1
//! flags          u16      0 (reserved; must be zero)
//! context_id     u32 length ‖ UTF-8 bytes
//! created_at_ns  u64
//! tree_size      u64      number of entries = sequence of the last entry
//! lamport_clock  u64      Lamport clock of the last entry (0 when empty)
//! merkle_root    32 bytes RFC 9162 root over the entries' content hashes
//! entries        tree_size × (u32 length ‖ leaf_input), in sequence order 1, 2, …
//! checksum       32 bytes SHA-256 of every preceding byte
//! ```
//!
//! Each entry is stored as its canonical leaf input, so the content hash of every entry is
//! recomputed from the bytes on decode, and the root is recomputed from those hashes.

use crate::encoding::{LeafDecodeError, Reader, decode_leaf_input, write_leaf_input};
use crate::entry::Entry;
use crate::hash::{HASH_LEN, Hash};
use crate::merkle::Frontier;
use crate::tail::{TailError, TailVerifier};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The first eight bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"CVLGSNAP";
/// The snapshot format this build writes and reads.
pub const VERSION: u16 = 1;

const FIXED_HEADER: usize = 8 + 2 + 2;

/// Why a blob is not a valid snapshot. Messages say what to look at.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("not a Converge Ledger snapshot (wrong magic number)")]
    BadMagic,
    #[error("unsupported snapshot version {0} (this build reads version 1)")]
    UnsupportedVersion(u16),
    #[error("snapshot is truncated: {0}")]
    Truncated(String),
    #[error("snapshot has {0} trailing bytes after the last entry")]
    TrailingBytes(usize),
    #[error("snapshot checksum mismatch: the blob was corrupted or modified")]
    ChecksumMismatch,
    #[error("snapshot is malformed: {0}")]
    Malformed(String),
    #[error(
        "snapshot entries are out of order or have a gap: expected sequence {expected}, found {found}"
    )]
    SequenceGap { expected: u64, found: u64 },
    #[error("snapshot Lamport clocks do not increase at sequence {sequence}")]
    LamportNotIncreasing { sequence: u64 },
    #[error("snapshot header says Lamport clock {header} but the last entry has {last}")]
    LamportMismatch { header: u64, last: u64 },
    #[error(
        "snapshot Merkle root {expected} does not match the root {computed} recomputed from its entries"
    )]
    RootMismatch { expected: Hash, computed: Hash },
}

impl From<LeafDecodeError> for SnapshotError {
    fn from(e: LeafDecodeError) -> Self {
        match e {
            LeafDecodeError::Truncated { .. } => SnapshotError::Truncated(e.to_string()),
            other => SnapshotError::Malformed(other.to_string()),
        }
    }
}

/// A decoded and fully verified snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub context_id: String,
    pub created_at_ns: u64,
    pub lamport_clock: u64,
    pub merkle_root: Hash,
    pub entries: Vec<Entry>,
}

impl Snapshot {
    /// Number of entries (= sequence of the last entry).
    pub fn tree_size(&self) -> u64 {
        self.entries.len() as u64
    }
}

/// Header fields of a snapshot, as read without verifying the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub version: u16,
    pub context_id: String,
    pub created_at_ns: u64,
    pub tree_size: u64,
    pub lamport_clock: u64,
    pub merkle_root: Hash,
}

/// Writes a snapshot entry by entry, so a large context never needs two copies in memory.
/// The output can be taken in pieces as it grows ([`SnapshotEncoder::take_output`]) to stream a
/// snapshot of any size with bounded memory.
#[derive(Debug)]
pub struct SnapshotEncoder {
    out: Vec<u8>,
    /// SHA-256 of the bytes already taken out.
    hasher: Sha256,
    tree_size: u64,
    lamport_clock: u64,
    merkle_root: Hash,
    frontier: Frontier,
    last_lamport: u64,
}

/// Encoding was given entries that do not match the header it promised.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("expected entry with sequence {expected}, got {found}")]
    OutOfOrder { expected: u64, found: u64 },
    #[error("snapshot promised {promised} entries, got {got}")]
    CountMismatch { promised: u64, got: u64 },
    #[error("entries hash to root {computed}, the head says {expected}")]
    RootMismatch { expected: Hash, computed: Hash },
    #[error("the head says Lamport clock {header}, the last entry has {last}")]
    LamportMismatch { header: u64, last: u64 },
}

impl SnapshotEncoder {
    /// Starts a snapshot of `tree_size` entries whose head is `(lamport_clock, merkle_root)`.
    pub fn new(
        context_id: &str,
        created_at_ns: u64,
        tree_size: u64,
        lamport_clock: u64,
        merkle_root: Hash,
        size_hint: usize,
    ) -> Self {
        let mut out = Vec::with_capacity(size_hint + 128 + context_id.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        let id_len = u32::try_from(context_id.len()).expect("context id fits u32");
        out.extend_from_slice(&id_len.to_be_bytes());
        out.extend_from_slice(context_id.as_bytes());
        out.extend_from_slice(&created_at_ns.to_be_bytes());
        out.extend_from_slice(&tree_size.to_be_bytes());
        out.extend_from_slice(&lamport_clock.to_be_bytes());
        out.extend_from_slice(merkle_root.as_bytes());
        SnapshotEncoder {
            out,
            hasher: Sha256::new(),
            tree_size,
            lamport_clock,
            merkle_root,
            frontier: Frontier::new(),
            last_lamport: 0,
        }
    }

    /// Adds the next entry (sequence must be the previous + 1, starting at 1).
    pub fn push(&mut self, entry: &Entry) -> Result<(), EncodeError> {
        let expected = self.frontier.size() + 1;
        if entry.sequence != expected {
            return Err(EncodeError::OutOfOrder {
                expected,
                found: entry.sequence,
            });
        }
        let len_at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        write_leaf_input(entry, &mut self.out);
        let len = u32::try_from(self.out.len() - len_at - 4).expect("entry fits u32");
        self.out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        self.frontier.push_leaf(entry.content_hash);
        self.last_lamport = entry.lamport_clock;
        Ok(())
    }

    /// Bytes encoded but not yet taken.
    pub fn pending_len(&self) -> usize {
        self.out.len()
    }

    /// Entries pushed so far.
    pub fn entries_pushed(&self) -> u64 {
        self.frontier.size()
    }

    /// Takes the bytes encoded so far (the next piece of the snapshot).
    pub fn take_output(&mut self) -> Vec<u8> {
        self.hasher.update(&self.out);
        std::mem::take(&mut self.out)
    }

    /// Checks the entries against the promised head and appends the checksum; returns the
    /// rest of the snapshot (all of it if nothing was taken before).
    pub fn finish(mut self) -> Result<Vec<u8>, EncodeError> {
        if self.frontier.size() != self.tree_size {
            return Err(EncodeError::CountMismatch {
                promised: self.tree_size,
                got: self.frontier.size(),
            });
        }
        let computed = self.frontier.root();
        if computed != self.merkle_root {
            return Err(EncodeError::RootMismatch {
                expected: self.merkle_root,
                computed,
            });
        }
        if self.last_lamport != self.lamport_clock {
            return Err(EncodeError::LamportMismatch {
                header: self.lamport_clock,
                last: self.last_lamport,
            });
        }
        self.hasher.update(&self.out);
        let checksum = self.hasher.finalize();
        self.out.extend_from_slice(&checksum);
        Ok(self.out)
    }
}

/// Encodes a whole context in one call.
pub fn encode(
    context_id: &str,
    created_at_ns: u64,
    entries: &[Entry],
) -> Result<Vec<u8>, EncodeError> {
    let mut frontier = Frontier::new();
    for e in entries {
        frontier.push_leaf(e.content_hash);
    }
    let lamport = entries.last().map_or(0, |e| e.lamport_clock);
    let size_hint = entries.iter().map(|e| e.encoded_len() + 4).sum();
    let mut enc = SnapshotEncoder::new(
        context_id,
        created_at_ns,
        entries.len() as u64,
        lamport,
        frontier.root(),
        size_hint,
    );
    for e in entries {
        enc.push(e)?;
    }
    enc.finish()
}

fn read_header(r: &mut Reader<'_>) -> Result<SnapshotHeader, SnapshotError> {
    let magic = r
        .take(8, "magic")
        .map_err(|_| SnapshotError::Truncated("shorter than the magic number".into()))?;
    if magic != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = r.u16("version")?;
    if version != VERSION {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    let flags = r.u16("flags")?;
    if flags != 0 {
        return Err(SnapshotError::Malformed(format!(
            "reserved flags are {flags:#06x}, must be zero in version 1"
        )));
    }
    let context_id = r.str("context_id")?.to_owned();
    let created_at_ns = r.u64("created_at_ns")?;
    let tree_size = r.u64("tree_size")?;
    let lamport_clock = r.u64("lamport_clock")?;
    let merkle_root = r.hash("merkle_root")?;
    Ok(SnapshotHeader {
        version,
        context_id,
        created_at_ns,
        tree_size,
        lamport_clock,
        merkle_root,
    })
}

/// Reads the header only (magic, version and fields; no checksum or entry checks).
pub fn peek_header(blob: &[u8]) -> Result<SnapshotHeader, SnapshotError> {
    read_header(&mut Reader::new(blob))
}

/// Magic and version first, so a future format is reported as such, not as corruption.
fn check_prefix(bytes: &[u8]) -> Result<(), SnapshotError> {
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(SnapshotError::BadMagic);
    }
    if bytes.len() >= 10 {
        let version = u16::from_be_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
    }
    Ok(())
}

/// Decodes and fully verifies a snapshot: magic, version, checksum, framing, every entry's
/// encoding and sequence, Lamport order, and the Merkle root recomputed from the entries.
/// Never panics, whatever the input.
pub fn decode(blob: &[u8]) -> Result<Snapshot, SnapshotError> {
    check_prefix(blob)?;
    if blob.len() < FIXED_HEADER {
        return Err(SnapshotError::Truncated(format!(
            "{} bytes is shorter than the {FIXED_HEADER}-byte fixed header",
            blob.len()
        )));
    }
    if blob.len() < FIXED_HEADER + HASH_LEN {
        return Err(SnapshotError::Truncated("no room for the checksum".into()));
    }
    // The checksum first: a corrupted blob is reported as such, not by whatever field the
    // corruption happened to hit.
    let (body, checksum) = blob.split_at(blob.len() - HASH_LEN);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(SnapshotError::ChecksumMismatch);
    }
    let mut decoder = SnapshotDecoder::checksum_verified();
    let mut entries = Vec::new();
    decoder.feed(blob, &mut entries)?;
    let header = decoder.finish()?;
    Ok(Snapshot {
        context_id: header.context_id,
        created_at_ns: header.created_at_ns,
        lamport_clock: header.lamport_clock,
        merkle_root: header.merkle_root,
        entries,
    })
}

/// Decodes a snapshot as it arrives, in pieces of any size, with memory bounded by the largest
/// entry: [`SnapshotDecoder::feed`] returns each entry as soon as its bytes are complete,
/// verified on its own (encoding, sequence, Lamport order, content hash computed from its
/// bytes); [`SnapshotDecoder::finish`] checks what needs the whole snapshot (entry count,
/// checksum, the header's Lamport clock and Merkle root). Until `finish` returns `Ok`, the
/// entries must be treated as unverified.
#[derive(Debug)]
pub struct SnapshotDecoder {
    /// Received bytes not yet consumed (at most one partial entry, or the checksum).
    pending: Vec<u8>,
    /// Running SHA-256 of the consumed bytes; `None` when the caller verified the checksum.
    hasher: Option<Sha256>,
    header: Option<SnapshotHeader>,
    verifier: TailVerifier,
    /// Bytes consumed so far (for messages).
    consumed: u64,
    /// Largest entry accepted (its length prefix is checked before its bytes are awaited).
    max_entry_bytes: usize,
}

impl Default for SnapshotDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotDecoder {
    /// A decoder that verifies everything, the checksum included.
    pub fn new() -> Self {
        SnapshotDecoder {
            pending: Vec::new(),
            hasher: Some(Sha256::new()),
            header: None,
            verifier: TailVerifier::default(),
            consumed: 0,
            max_entry_bytes: u32::MAX as usize,
        }
    }

    /// Refuses entries longer than `max` bytes as soon as their length prefix arrives, so a
    /// stream cannot make the decoder buffer more than that.
    pub fn with_max_entry_bytes(mut self, max: usize) -> Self {
        self.max_entry_bytes = max;
        self
    }

    /// Bytes of the snapshot consumed so far.
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }

    /// A decoder for a blob whose checksum the caller has already verified.
    fn checksum_verified() -> Self {
        SnapshotDecoder {
            hasher: None,
            ..Self::new()
        }
    }

    /// The header, once its bytes have arrived.
    pub fn header(&self) -> Option<&SnapshotHeader> {
        self.header.as_ref()
    }

    /// Entries decoded so far.
    pub fn entries_decoded(&self) -> u64 {
        self.verifier.size()
    }

    /// Takes the next bytes of the snapshot and appends every entry they complete to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Entry>) -> Result<(), SnapshotError> {
        self.feed_with(bytes, |e| {
            out.push(e);
            Ok::<(), SnapshotError>(())
        })
    }

    /// Takes the next bytes of the snapshot and hands every entry they complete to `sink`, in
    /// order, as soon as it is decoded (so a large input is never held twice).
    pub fn feed_with<E: From<SnapshotError>>(
        &mut self,
        bytes: &[u8],
        mut sink: impl FnMut(Entry) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut at = 0usize;
        if self.pending.is_empty() {
            // Decode straight from the input; keep only its unconsumed end.
            let r = self.consume(bytes, &mut at, &mut sink);
            self.pending.extend_from_slice(&bytes[at..]);
            return r;
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let r = self.consume(&buf, &mut at, &mut sink);
        buf.drain(..at);
        self.pending = buf;
        r
    }

    /// Consumes complete items from `buf[*at..]`, never the final 32 bytes (they may be the
    /// checksum).
    fn consume<E: From<SnapshotError>>(
        &mut self,
        buf: &[u8],
        at: &mut usize,
        sink: &mut impl FnMut(Entry) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.header.is_none() {
            check_prefix(buf)?;
            // The last 32 bytes may be the checksum: never read the header from them.
            let mut r = Reader::new(&buf[..buf.len().saturating_sub(HASH_LEN)]);
            let header = match read_header(&mut r) {
                Ok(h) => h,
                Err(SnapshotError::Truncated(_)) => return Ok(()), // wait for more bytes
                Err(e) => return Err(e.into()),
            };
            let len = r.position();
            self.take(buf, at, len);
            self.header = Some(header);
        }
        let tree_size = self.header.as_ref().map_or(0, |h| h.tree_size);
        while self.verifier.size() < tree_size {
            let avail = &buf[*at..];
            if avail.len() < 4 + HASH_LEN {
                return Ok(());
            }
            let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
            if len > self.max_entry_bytes {
                return Err(SnapshotError::Malformed(format!(
                    "entry {} is {len} bytes; the limit is {} bytes",
                    self.verifier.size() + 1,
                    self.max_entry_bytes
                ))
                .into());
            }
            if avail.len() < 4 + len + HASH_LEN {
                return Ok(());
            }
            let entry = decode_leaf_input(&avail[4..4 + len]).map_err(SnapshotError::from)?;
            self.verifier.push_hashed(&entry).map_err(tail_error)?;
            self.take(buf, at, 4 + len);
            sink(entry)?;
        }
        Ok(())
    }

    /// Marks `n` bytes of `buf` from `*at` as consumed (hashing them).
    fn take(&mut self, buf: &[u8], at: &mut usize, n: usize) {
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[*at..*at + n]);
        }
        *at += n;
        self.consumed += n as u64;
    }

    /// The snapshot has ended: checks the entry count, the checksum, and the header's Lamport
    /// clock and Merkle root against the entries. Returns the header.
    pub fn finish(self) -> Result<SnapshotHeader, SnapshotError> {
        let Some(header) = self.header else {
            check_prefix(&self.pending)?;
            if self.pending.len() < FIXED_HEADER {
                return Err(SnapshotError::Truncated(format!(
                    "{} bytes is shorter than the {FIXED_HEADER}-byte fixed header",
                    self.pending.len()
                )));
            }
            let body = &self.pending[..self.pending.len() - HASH_LEN.min(self.pending.len())];
            return Err(match read_header(&mut Reader::new(body)) {
                Err(e) => e,
                Ok(_) => SnapshotError::Truncated("no room for the checksum".into()),
            });
        };
        if self.verifier.size() < header.tree_size {
            let expected = self.verifier.size() + 1;
            let cut = self.pending.len() > HASH_LEN + 4;
            return Err(SnapshotError::Truncated(if cut {
                format!("entry {expected} is cut short")
            } else {
                format!("entry {expected} of {} is missing", header.tree_size)
            }));
        }
        if self.pending.len() < HASH_LEN {
            return Err(SnapshotError::Truncated("no room for the checksum".into()));
        }
        if self.pending.len() > HASH_LEN {
            return Err(SnapshotError::TrailingBytes(self.pending.len() - HASH_LEN));
        }
        if let Some(h) = self.hasher
            && h.finalize().as_slice() != self.pending.as_slice()
        {
            return Err(SnapshotError::ChecksumMismatch);
        }
        if header.lamport_clock != self.verifier.lamport_clock() {
            return Err(SnapshotError::LamportMismatch {
                header: header.lamport_clock,
                last: self.verifier.lamport_clock(),
            });
        }
        self.verifier
            .check_root(&header.merkle_root)
            .map_err(tail_error)?;
        Ok(header)
    }
}

fn tail_error(e: TailError) -> SnapshotError {
    match e {
        TailError::Gap { expected, found } | TailError::Reordered { expected, found } => {
            SnapshotError::SequenceGap { expected, found }
        }
        TailError::LamportNotIncreasing { sequence, .. } => {
            SnapshotError::LamportNotIncreasing { sequence }
        }
        TailError::RootMismatch {
            expected, computed, ..
        } => SnapshotError::RootMismatch { expected, computed },
        other => SnapshotError::Malformed(other.to_string()),
    }
}
