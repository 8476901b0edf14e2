//! The durable store of Converge Ledger: the [`LogStore`] trait, its RocksDB implementation and
//! an in-memory reference implementation, checked by one conformance suite.
//!
//! # Layout
//! - [`LogStore`] and its types: the contract every backend keeps.
//! - [`head`]: the per-context head (size, Lamport clock, Merkle frontier) and how a batch of new
//!   entries extends it.
//! - [`keys`]: the on-disk key encoding (fixed-width context key ‖ big-endian numbers).
//! - [`codec`]: the on-disk value encoding of entries and heads.
//! - [`quarantine`]: the types of a quarantined suffix ([`QuarantineInfo`], [`Quarantined`]).
//! - [`rocks`]: RocksDB with column families `entries`, `heads`, `nodes`, `idempotency`,
//!   `replication`, `quarantine`.
//! - [`memory`]: the in-memory reference, for tests only.
//! - [`conformance`]: the suite run against both.

pub mod codec;
pub mod conformance;
pub mod head;
pub mod keys;
pub mod memory;
pub mod quarantine;
pub mod rocks;

use ledger_core::merkle::TreeNodeId;
use ledger_core::{Entry, Hash};
use std::sync::Arc;
use thiserror::Error;

pub use head::ContextHead;
pub use memory::MemoryStore;
pub use quarantine::{QuarantineInfo, Quarantined};
pub use rocks::{RocksConfig, RocksStore};

/// When an acknowledged commit is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// The write-ahead log is fsynced before `commit` returns: an acknowledged entry survives a
    /// crash of the process and of the machine. Concurrent appends share one fsync (the
    /// embedded ledger batches them into one commit).
    #[default]
    Sync,
    /// The write-ahead log is written to the OS before `commit` returns but not fsynced: an
    /// acknowledged entry survives a crash of the process, not a power loss.
    Buffered,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(Durability::Sync),
            "buffered" => Ok(Durability::Buffered),
            other => Err(format!(
                "unknown durability {other:?}: expected \"sync\" or \"buffered\""
            )),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Sync => "sync",
            Durability::Buffered => "buffered",
        })
    }
}

/// New entries for one context, with the head they lead to and the Merkle subtrees they complete.
/// Build it with [`ContextHead::extend`].
#[derive(Clone, Debug)]
pub struct ContextCommit {
    /// Size of the context before this commit; the store refuses the commit unless it matches.
    pub base_size: u64,
    /// Entries `base_size + 1 ..= base_size + staged` were written earlier by
    /// [`LogStore::stage`]; this commit makes them part of the context (0 for ordinary appends).
    pub staged: u64,
    /// Entries with sequences `base_size + staged + 1 ..= base_size + staged + entries.len()`,
    /// in order.
    pub entries: Vec<Arc<Entry>>,
    /// The head after these entries.
    pub head: ContextHead,
    /// Every complete subtree the entries complete, leaves included.
    pub nodes: Vec<(TreeNodeId, Hash)>,
    /// Idempotency keys of appends in `entries`, stored atomically with them.
    pub idempotency: Vec<IdempotencyRecord>,
}

/// An append's idempotency key as stored: a later append to the same context with the same key
/// is answered with the entry at `sequence` instead of storing a duplicate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The client's key (1–128 bytes).
    pub key: String,
    /// The entry stored for it.
    pub sequence: u64,
    /// That entry's append time.
    pub appended_at_ns: u64,
    /// SHA-256 of what the append carried (key, payload, metadata), to tell a retry of the
    /// same append from a different append reusing the key.
    pub fingerprint: Hash,
    /// 1, 2, 3, … per context: this is the context's `ordinal`-th keyed append.
    pub ordinal: u64,
}

/// A read of a context's entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadQuery {
    /// Only entries with a sequence above this.
    pub after_sequence: u64,
    /// Only entries whose key equals this (all keys when `None`).
    pub key: Option<String>,
    /// At most this many entries (no limit when `None`).
    pub limit: Option<usize>,
    /// Stop before the entries' encoded size would exceed this many bytes (at least one entry is
    /// always returned when one matches).
    pub max_bytes: Option<usize>,
    /// Only entries up to this sequence (the whole context when `None`).
    pub up_to: Option<u64>,
}

/// The answer to a [`ReadQuery`], taken from one consistent view of the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadResult {
    pub entries: Vec<Entry>,
    /// The context's size in the view the entries were read from.
    pub latest_sequence: u64,
    /// True when the read stopped at `limit` or `max_bytes` and more matching entries exist.
    pub has_more: bool,
    /// The `after_sequence` that continues this read.
    pub next_after_sequence: u64,
}

impl ReadResult {
    /// The result of a read of `query` that scanned up to `upper` in a view of `latest`
    /// entries: a cut read continues after its last entry, a complete one after `upper`.
    pub(crate) fn finish(
        query: &ReadQuery,
        entries: Vec<Entry>,
        latest: u64,
        upper: u64,
        has_more: bool,
    ) -> Self {
        let next_after_sequence = if has_more {
            entries.last().map_or(query.after_sequence, |e| e.sequence)
        } else {
            query.after_sequence.max(upper)
        };
        ReadResult {
            entries,
            latest_sequence: latest,
            has_more,
            next_after_sequence,
        }
    }
}

/// Storage failures. I/O errors are fatal for writes: a node that cannot store stops accepting
/// appends instead of acknowledging what it could not keep.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("RocksDB failed to {op}: {source}")]
    Rocks {
        op: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "commit for context {context_id:?} expects size {expected}, but the store holds {actual} entries"
    )]
    SizeConflict {
        context_id: String,
        expected: u64,
        actual: u64,
    },
    #[error("commit for context {context_id:?} is not gapless: {detail}")]
    NotGapless { context_id: String, detail: String },
    /// A request the store cannot carry out as asked (named in the message), e.g. a
    /// quarantine from sequence 0.
    #[error("invalid storage request: {0}")]
    InvalidRequest(String),
    #[error("context ids {0:?} and {1:?} map to the same storage key")]
    ContextKeyCollision(String, String),
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The storage contract.
///
/// - **Gapless and ordered.** A context's entries have sequences 1, 2, 3, … with no holes.
///   [`LogStore::commit`] refuses a [`ContextCommit`] whose `base_size` is not the context's
///   current size, or whose entries do not continue it one by one.
/// - **Atomic.** Every entry, head and Merkle subtree of one `commit` call, across all its
///   contexts, is written in one atomic batch: after a crash either all of it is there or none.
/// - **Durable before return** in [`Durability::Sync`] (the default): once `commit` returns
///   `Ok`, the batch survives a crash of the process or the machine.
/// - **Immutable, except for quarantine.** Entries and Merkle subtree hashes are never
///   overwritten or deleted, with one exception: [`LogStore::quarantine`] moves a context's
///   suffix aside (its entries are kept, readable with [`LogStore::quarantined_entries`]) and
///   cuts the context back to the prefix, after which appends reuse the suffix's sequences.
///   The rows that change are a context's head (derived state) and its replication state.
/// - **Consistent reads.** A read sees whole commits only, and its `latest_sequence` is the size
///   of the view its entries came from.
/// - **Lazy.** Opening a store does not scan its data; heads are read when first asked for.
///
/// Commits are applied one at a time; throughput comes from putting many appends (of many
/// contexts) into one commit, which is what the embedded ledger's sequencer does.
pub trait LogStore: Send + Sync + 'static {
    /// Writes a batch of commits atomically (see the trait docs).
    fn commit(&self, batch: &[ContextCommit]) -> Result<(), StorageError>;

    /// Writes the entries and Merkle subtrees of `commit` **without** its head: they are part
    /// of no read, proof or size until a later [`LogStore::commit`] whose `staged` covers them
    /// (a large load becomes visible all at once). Staged rows that are never committed (the
    /// load failed, the process crashed) stay invisible and are overwritten by whatever is
    /// appended at those sequences later. `commit.base_size` must be at least the context's
    /// committed size: staging never touches committed entries. Not durable by itself: the
    /// commit that makes the rows visible makes them durable with it.
    fn stage(&self, commit: &ContextCommit) -> Result<(), StorageError>;

    /// The idempotency record of `key` in `context_id`, if one is stored.
    fn idempotency(
        &self,
        context_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StorageError>;

    /// The ordinal of the context's last stored idempotency record (0 if none).
    fn idempotency_count(&self, context_id: &str) -> Result<u64, StorageError>;

    /// Writes like [`LogStore::commit`], atomically and in order, but returns before the batch
    /// is durable; it is durable once a later [`LogStore::sync`] returns. Reads may see it at
    /// once, so callers that must not show undurable data cap their reads (the embedded ledger
    /// does). A crash loses a suffix of deferred commits, never a middle one.
    fn commit_deferred(&self, batch: &[ContextCommit]) -> Result<(), StorageError> {
        self.commit(batch)
    }

    /// Whether `commit` waits for durability.
    fn durability(&self) -> Durability {
        Durability::Sync
    }

    /// The head of a context, `None` if it has no entries.
    fn head(&self, context_id: &str) -> Result<Option<ContextHead>, StorageError>;

    /// The number of entries of a context (0 if none): a cheaper [`LogStore::head`].
    fn size(&self, context_id: &str) -> Result<u64, StorageError> {
        Ok(self.head(context_id)?.map_or(0, |h| h.size()))
    }

    /// Entries of a context, per `query`, from one consistent view.
    fn read(&self, context_id: &str, query: &ReadQuery) -> Result<ReadResult, StorageError>;

    /// Hashes of complete Merkle subtrees of a context, in the order of `ids`. Every id must lie
    /// within the context's current size.
    fn nodes(&self, context_id: &str, ids: &[TreeNodeId]) -> Result<Vec<Hash>, StorageError>;

    /// Ids of contexts with entries, in storage order, after `after` (exclusive), at most `limit`.
    fn list_contexts(&self, after: Option<&str>, limit: usize)
    -> Result<Vec<String>, StorageError>;

    /// Makes everything committed so far durable (an fsync of the log in buffered mode).
    fn sync(&self) -> Result<(), StorageError>;

    /// The replication state last saved for `context_id` by
    /// [`LogStore::save_replication_state`], `None` if none was. Independent of the context's
    /// entries: a context may have state and no entries, and the other way round.
    fn replication_state(&self, context_id: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Replaces the replication state of `context_id` with `state` (opaque bytes: the
    /// replication layer's promised epoch, epoch history, commit index). Durable before it
    /// returns in [`Durability::Sync`] (a synced write of the write-ahead log); in
    /// [`Durability::Buffered`], like commits, it survives a crash of the process only.
    fn save_replication_state(&self, context_id: &str, state: &[u8]) -> Result<(), StorageError>;

    /// Moves the entries `from_sequence ..= size` of `context_id` out of the log into a new
    /// quarantine of the context, and cuts the context back to `from_sequence - 1` entries, in
    /// one atomic write (durable before return in [`Durability::Sync`]).
    ///
    /// Afterwards the context is exactly as it was at size `from_sequence - 1`: same head
    /// (size, Merkle frontier and root, Lamport clock, last append time; no head at all, and
    /// not listed, when that size is 0), same entries and subtree hashes up to it. The moved
    /// entries and their subtree hashes are no longer part of any read, head or proof; the next
    /// commit continues at `from_sequence`. Idempotency records of moved entries are deleted
    /// with them (a retry of such an append is stored anew), and the context's keyed-append
    /// ordinal goes back to the last kept record's.
    ///
    /// Returns `Ok(None)`, changing nothing, when `from_sequence` is beyond the context's size
    /// (or the context has no entries); refuses `from_sequence == 0` with
    /// [`StorageError::InvalidRequest`]. `quarantined_at_ns` and `reason` are recorded as
    /// given. The new quarantine's id is one more than the context's last one (1 for its first).
    ///
    /// Like [`LogStore::stage`], the caller must be the context's only writer (no commit or
    /// stage of the context may run concurrently). Costs a read of the moved entries and, if
    /// the context ever had keyed appends, a scan of its idempotency records.
    fn quarantine(
        &self,
        context_id: &str,
        from_sequence: u64,
        reason: &str,
        quarantined_at_ns: u64,
    ) -> Result<Option<Quarantined>, StorageError>;

    /// Every quarantine of `context_id` in id order, or of every context when `None` (in
    /// storage order of the contexts, then id order).
    fn quarantines(&self, context_id: Option<&str>) -> Result<Vec<QuarantineInfo>, StorageError>;

    /// The entries moved aside by quarantine `id` of `context_id`, exactly as they were stored
    /// (same ids, sequences, hashes, clocks), in sequence order; `None` if there is no such
    /// quarantine.
    fn quarantined_entries(
        &self,
        context_id: &str,
        id: u64,
    ) -> Result<Option<Vec<Entry>>, StorageError>;

    /// Makes everything committed so far durable and cheap to reopen (RocksDB: flushes the
    /// memtables, so the next open has no log to replay). Called on a clean shutdown.
    fn flush(&self) -> Result<(), StorageError> {
        self.sync()
    }
}

impl<S: LogStore + ?Sized> LogStore for Arc<S> {
    fn commit(&self, batch: &[ContextCommit]) -> Result<(), StorageError> {
        (**self).commit(batch)
    }
    fn stage(&self, commit: &ContextCommit) -> Result<(), StorageError> {
        (**self).stage(commit)
    }
    fn idempotency(
        &self,
        context_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StorageError> {
        (**self).idempotency(context_id, key)
    }
    fn idempotency_count(&self, context_id: &str) -> Result<u64, StorageError> {
        (**self).idempotency_count(context_id)
    }
    fn commit_deferred(&self, batch: &[ContextCommit]) -> Result<(), StorageError> {
        (**self).commit_deferred(batch)
    }
    fn durability(&self) -> Durability {
        (**self).durability()
    }
    fn head(&self, context_id: &str) -> Result<Option<ContextHead>, StorageError> {
        (**self).head(context_id)
    }
    fn size(&self, context_id: &str) -> Result<u64, StorageError> {
        (**self).size(context_id)
    }
    fn read(&self, context_id: &str, query: &ReadQuery) -> Result<ReadResult, StorageError> {
        (**self).read(context_id, query)
    }
    fn nodes(&self, context_id: &str, ids: &[TreeNodeId]) -> Result<Vec<Hash>, StorageError> {
        (**self).nodes(context_id, ids)
    }
    fn list_contexts(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        (**self).list_contexts(after, limit)
    }
    fn sync(&self) -> Result<(), StorageError> {
        (**self).sync()
    }
    fn flush(&self) -> Result<(), StorageError> {
        (**self).flush()
    }
    fn replication_state(&self, context_id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).replication_state(context_id)
    }
    fn save_replication_state(&self, context_id: &str, state: &[u8]) -> Result<(), StorageError> {
        (**self).save_replication_state(context_id, state)
    }
    fn quarantine(
        &self,
        context_id: &str,
        from_sequence: u64,
        reason: &str,
        quarantined_at_ns: u64,
    ) -> Result<Option<Quarantined>, StorageError> {
        (**self).quarantine(context_id, from_sequence, reason, quarantined_at_ns)
    }
    fn quarantines(&self, context_id: Option<&str>) -> Result<Vec<QuarantineInfo>, StorageError> {
        (**self).quarantines(context_id)
    }
    fn quarantined_entries(
        &self,
        context_id: &str,
        id: u64,
    ) -> Result<Option<Vec<Entry>>, StorageError> {
        (**self).quarantined_entries(context_id, id)
    }
}

/// Refuses a quarantine from sequence 0 (sequences start at 1).
pub(crate) fn check_quarantine_from(
    context_id: &str,
    from_sequence: u64,
) -> Result<(), StorageError> {
    if from_sequence == 0 {
        return Err(StorageError::InvalidRequest(format!(
            "quarantine of {context_id:?} from sequence 0: sequences start at 1"
        )));
    }
    Ok(())
}

/// Checks that a commit continues a context of `current` entries gaplessly.
pub(crate) fn check_commit(c: &ContextCommit, current: u64) -> Result<(), StorageError> {
    let context_id = &c.head.context_id;
    if c.base_size != current {
        return Err(StorageError::SizeConflict {
            context_id: context_id.clone(),
            expected: c.base_size,
            actual: current,
        });
    }
    check_rows(c)?;
    for r in &c.idempotency {
        let first = c.base_size + c.staged + 1;
        if r.sequence < first || r.sequence >= first + c.entries.len() as u64 {
            return Err(StorageError::NotGapless {
                context_id: context_id.clone(),
                detail: format!(
                    "idempotency key for sequence {} outside the commit's entries",
                    r.sequence
                ),
            });
        }
    }
    let end = current + c.staged + c.entries.len() as u64;
    if c.head.size() != end {
        return Err(StorageError::NotGapless {
            context_id: context_id.clone(),
            detail: format!("head size {} after entries ending at {end}", c.head.size()),
        });
    }
    Ok(())
}

/// Checks that a commit's entries follow its `base_size + staged` one by one.
pub(crate) fn check_rows(c: &ContextCommit) -> Result<(), StorageError> {
    let context_id = &c.head.context_id;
    let current = c.base_size + c.staged;
    for (i, e) in c.entries.iter().enumerate() {
        let want = current + 1 + i as u64;
        if e.sequence != want {
            return Err(StorageError::NotGapless {
                context_id: context_id.clone(),
                detail: format!("entry {i} has sequence {}, expected {want}", e.sequence),
            });
        }
    }
    Ok(())
}

/// The entries of one read as they are gathered, within the query's `limit` and `max_bytes`
/// (the budgeting every backend shares).
pub(crate) struct Page<'q> {
    query: &'q ReadQuery,
    entries: Vec<Entry>,
    bytes: usize,
    /// Set once an entry did not fit: the read is cut, with more to come.
    full: bool,
}

impl<'q> Page<'q> {
    pub(crate) fn new(query: &'q ReadQuery) -> Self {
        Page {
            query,
            entries: Vec::new(),
            bytes: 0,
            full: false,
        }
    }

    /// Adds `entry` if it fits the budget; false if it does not (stop reading: the page is
    /// full and says there is more).
    pub(crate) fn push(&mut self, entry: Entry) -> bool {
        if !fits_budget(self.query, &self.entries, self.bytes, &entry) {
            self.full = true;
            return false;
        }
        self.bytes += entry.encoded_len();
        self.entries.push(entry);
        true
    }

    /// Whether an entry was refused for the budget.
    pub(crate) fn is_full(&self) -> bool {
        self.full
    }

    pub(crate) fn finish(self, latest: u64, upper: u64) -> ReadResult {
        ReadResult::finish(self.query, self.entries, latest, upper, self.full)
    }
}

/// Whether `entry` may be added to `out` (`bytes` so far) within the query's budget.
fn fits_budget(query: &ReadQuery, out: &[Entry], bytes: usize, entry: &Entry) -> bool {
    if query.limit.is_some_and(|l| out.len() >= l) {
        return false;
    }
    if let Some(max) = query.max_bytes
        && !out.is_empty()
        && bytes + entry.encoded_len() > max
    {
        return false;
    }
    true
}
