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
use crate::hash::{HASH_LEN, Hash, sha256};
use crate::merkle::Frontier;
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
#[derive(Debug)]
pub struct SnapshotEncoder {
    out: Vec<u8>,
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

    /// Checks the entries against the promised head and appends the checksum.
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
        let checksum = sha256(&self.out);
        self.out.extend_from_slice(checksum.as_bytes());
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

/// Decodes and fully verifies a snapshot: magic, version, checksum, framing, every entry's
/// encoding and sequence, Lamport order, and the Merkle root recomputed from the entries.
/// Never panics, whatever the input.
pub fn decode(blob: &[u8]) -> Result<Snapshot, SnapshotError> {
    // Magic and version first, so a future format is reported as such, not as corruption.
    let magic_len = blob.len().min(MAGIC.len());
    if blob[..magic_len] != MAGIC[..magic_len] {
        return Err(SnapshotError::BadMagic);
    }
    if blob.len() >= 10 {
        let version = u16::from_be_bytes([blob[8], blob[9]]);
        if version != VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
    }
    if blob.len() < FIXED_HEADER {
        return Err(SnapshotError::Truncated(format!(
            "{} bytes is shorter than the {FIXED_HEADER}-byte fixed header",
            blob.len()
        )));
    }
    if blob.len() < FIXED_HEADER + HASH_LEN {
        return Err(SnapshotError::Truncated("no room for the checksum".into()));
    }
    let (body, checksum) = blob.split_at(blob.len() - HASH_LEN);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(SnapshotError::ChecksumMismatch);
    }

    let mut r = Reader::new(body);
    let header = read_header(&mut r)?;
    // Each entry takes at least 4 + 41 bytes; refuse absurd counts before allocating.
    let min_entry = 4 + 1 + 24 + 16;
    if header.tree_size > (r.remaining() / min_entry) as u64 {
        return Err(SnapshotError::Truncated(format!(
            "header promises {} entries but only {} bytes follow",
            header.tree_size,
            r.remaining()
        )));
    }
    let mut entries = Vec::with_capacity(header.tree_size as usize);
    let mut frontier = Frontier::new();
    let mut last_lamport = 0u64;
    for i in 0..header.tree_size {
        let expected = i + 1;
        let len = r.u32("entry length").map_err(|_| {
            SnapshotError::Truncated(format!(
                "entry {expected} of {} is missing",
                header.tree_size
            ))
        })? as usize;
        let bytes = r
            .take(len, "entry")
            .map_err(|_| SnapshotError::Truncated(format!("entry {expected} is cut short")))?;
        let entry = decode_leaf_input(bytes)?;
        if entry.sequence != expected {
            return Err(SnapshotError::SequenceGap {
                expected,
                found: entry.sequence,
            });
        }
        if i > 0 && entry.lamport_clock <= last_lamport {
            return Err(SnapshotError::LamportNotIncreasing { sequence: expected });
        }
        last_lamport = entry.lamport_clock;
        frontier.push_leaf(entry.content_hash);
        entries.push(entry);
    }
    if r.remaining() != 0 {
        return Err(SnapshotError::TrailingBytes(r.remaining()));
    }
    if header.lamport_clock != last_lamport {
        return Err(SnapshotError::LamportMismatch {
            header: header.lamport_clock,
            last: last_lamport,
        });
    }
    let computed = frontier.root();
    if computed != header.merkle_root {
        return Err(SnapshotError::RootMismatch {
            expected: header.merkle_root,
            computed,
        });
    }
    Ok(Snapshot {
        context_id: header.context_id,
        created_at_ns: header.created_at_ns,
        lamport_clock: header.lamport_clock,
        merkle_root: header.merkle_root,
        entries,
    })
}
