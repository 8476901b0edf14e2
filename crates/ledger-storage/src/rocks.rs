//! The RocksDB store.
//!
//! Seven column families (key layout in [`crate::keys`], values in [`crate::codec`]):
//! `entries`, `nodes`, `heads`, `idempotency`, `replication` (each context's replication state),
//! `quarantine` (suffixes moved aside, see [`LogStore::quarantine`] and the `quarantine`
//! submodule) and `key_index` (entries by context and entry key, for reads filtered by key).
//! Families missing from an existing database are created when it opens; a format-1 directory
//! gets its `key_index` built once on open and is then marked format 2 (see [`RocksStore::open`]).
//! A commit is one `WriteBatch` holding, per appended entry, its `entries` row, its `key_index`
//! row and its `nodes` row (the Merkle subtrees it completed), and per context its new head; in [`Durability::Sync`] it is written with `sync = true`, so the write-ahead log is
//! fsynced before `commit` returns. Opening the store reads no data: heads are loaded when a
//! context is first touched (the head row plus the `nodes` rows of the frontier's subtrees).

mod quarantine;

use crate::codec::{
    HeadRecord, decode_entry, decode_head, decode_idempotency, decode_replication,
    encode_entry_into, encode_head, encode_idempotency, encode_replication, entry_value_key,
};
use crate::keys::{
    CONTEXT_KEY_LEN, ContextKey, KEY_INDEX_PREFIX_LEN, context_key, entry_key, entry_key_sequence,
    idempotency_key, key_index_key, key_index_key_sequence, key_index_prefix, node_location,
    node_row_len,
};
use crate::{
    ContextCommit, ContextHead, Durability, IdempotencyRecord, LogStore, Page, QuarantineInfo,
    Quarantined, ReadQuery, ReadResult, StorageError, check_commit, check_rows,
};
use ledger_core::merkle::TreeNodeId;
use ledger_core::{Entry, Hash};
use parking_lot::Mutex;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options,
    ReadOptions, WriteBatch, WriteOptions,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const CF_ENTRIES: &str = "entries";
const CF_HEADS: &str = "heads";
const CF_NODES: &str = "nodes";
const CF_IDEMPOTENCY: &str = "idempotency";
const CF_REPLICATION: &str = "replication";
const CF_QUARANTINE: &str = "quarantine";
const CF_KEY_INDEX: &str = "key_index";
const FORMAT_KEY: &[u8] = b"converge-ledger/format";
/// Format 1: no `key_index`. Upgraded on open.
const FORMAT_V1: &[u8] = b"1";
/// Format 2: every entry has its `key_index` row. Builds that only know format 1 refuse it, so
/// none of them can append entries the index would miss.
const FORMAT_VALUE: &[u8] = b"2";
/// `key_index` rows per write batch while upgrading a format-1 directory.
const UPGRADE_BATCH_ROWS: usize = 1 << 16;
/// Known context sizes kept for commit checks; cleared wholesale when it grows past this.
const SIZE_CACHE_LIMIT: usize = 1 << 20;

/// Tuning of the RocksDB store.
#[derive(Clone, Debug)]
pub struct RocksConfig {
    pub durability: Durability,
    /// Shared block cache for all column families.
    pub block_cache_bytes: usize,
    /// Memtable size per column family.
    pub write_buffer_bytes: usize,
    /// Background flush and compaction threads.
    pub background_jobs: i32,
    /// LZ4-compress entry files. Off by default: payloads are opaque (often already compressed)
    /// and on small machines compression competes with the write path for CPU.
    pub compress_entries: bool,
    /// Most table files RocksDB keeps open (it closes the least recently used beyond this), so
    /// storage never needs more file descriptors than the node reserves for it.
    pub max_open_files: i32,
}

impl Default for RocksConfig {
    fn default() -> Self {
        RocksConfig {
            durability: Durability::Sync,
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 64 << 20,
            background_jobs: 2,
            compress_entries: false,
            max_open_files: 512,
        }
    }
}

/// Adds the `nodes` row of `sequence`, checking it holds exactly the subtrees that entry completes.
fn put_node_row(
    wb: &mut WriteBatch,
    cf: &ColumnFamily,
    key: &ContextKey,
    sequence: u64,
    row: &[u8],
    c: &ContextCommit,
) -> Result<(), StorageError> {
    if row.len() != 32 * node_row_len(sequence) {
        return Err(StorageError::NotGapless {
            context_id: c.head.context_id.clone(),
            detail: format!(
                "entry {sequence} completes {} Merkle subtrees, the commit carries {}",
                node_row_len(sequence),
                row.len() / 32
            ),
        });
    }
    wb.put_cf(cf, entry_key(key, sequence), row);
    Ok(())
}

/// Adds one `nodes` row per entry of `c`: the subtrees its leaf completed, level 0 first. The
/// frontier yields them in exactly that order, a leaf followed by its merged parents.
fn put_node_rows(
    wb: &mut WriteBatch,
    cf: &ColumnFamily,
    key: &ContextKey,
    c: &ContextCommit,
) -> Result<(), StorageError> {
    let mut row: Vec<u8> = Vec::with_capacity(32 * 8);
    let mut current: Option<u64> = None;
    for (nid, h) in &c.nodes {
        if nid.level == 0 {
            if let Some(seq) = current.take() {
                put_node_row(wb, cf, key, seq, &row, c)?;
            }
            row.clear();
            current = Some(nid.index + 1);
        }
        row.extend_from_slice(h.as_bytes());
    }
    if let Some(seq) = current {
        put_node_row(wb, cf, key, seq, &row, c)?;
    }
    Ok(())
}

/// Adds the `key_index` row of every entry of `c`.
fn put_key_index_rows(wb: &mut WriteBatch, cf: &ColumnFamily, key: &ContextKey, c: &ContextCommit) {
    // Appends of one context mostly repeat a few keys: hash each run of equal keys once.
    let mut last: Option<(&str, [u8; KEY_INDEX_PREFIX_LEN])> = None;
    for e in &c.entries {
        let prefix = match last {
            Some((k, p)) if k == e.key => p,
            _ => {
                let p = key_index_prefix(key, &e.key);
                last = Some((&e.key, p));
                p
            }
        };
        wb.put_cf(cf, key_index_key(&prefix, e.sequence), b"");
    }
}

/// [`LogStore`] on RocksDB.
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    durability: Durability,
    /// Serializes commits and caches each touched context's committed size (and id, to detect
    /// context-key collisions).
    committed: Mutex<HashMap<ContextKey, (String, u64)>>,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish()
    }
}

fn rocks(op: &'static str) -> impl FnOnce(rocksdb::Error) -> StorageError {
    move |source| StorageError::Rocks { op, source }
}

impl RocksStore {
    /// Opens (creating if needed) a store in `dir`.
    pub fn open(dir: impl AsRef<Path>, config: &RocksConfig) -> Result<Self, StorageError> {
        let path = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&path)?;
        let cache = Cache::new_lru_cache(config.block_cache_bytes);

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(config.background_jobs);
        // Required by the hash-skiplist memtables; there is one writer thread anyway.
        db_opts.set_allow_concurrent_memtable_write(false);
        db_opts.set_bytes_per_sync(1 << 20);
        db_opts.set_wal_bytes_per_sync(0);
        db_opts.set_skip_stats_update_on_db_open(true);
        db_opts.set_max_open_files(config.max_open_files.max(16));
        db_opts.set_keep_log_file_num(8);
        // Reuse write-ahead-log files: appending into an already sized file lets fdatasync skip
        // the file-size metadata update, which shortens every sync-mode commit.
        db_opts.set_recycle_log_file_num(4);
        // Bounds the log replayed after a crash: past this, the column families holding the
        // oldest log are flushed.
        db_opts.set_max_total_wal_size(256 << 20);
        // Open fast. RocksDB loads table handles at open with up to 16 threads per column
        // family (eight here): ~120 threads created and joined for a handful of files, a third
        // of the node's time from start to first read. One thread reads the few footers and
        // index blocks sooner; more files are opened lazily, on first use.
        db_opts.set_max_file_opening_threads(1);
        // Delete obsolete files in the background, never on the caller's thread. At open that
        // is the write-ahead logs kept for recycling at the last shutdown (up to five files of
        // tens of MB, 10-20 ms of unlink each): it was most of a restart's time after a busy run.
        db_opts.set_avoid_unnecessary_blocking_io(true);

        let table = |bloom: bool| {
            let mut t = BlockBasedOptions::default();
            t.set_block_cache(&cache);
            t.set_cache_index_and_filter_blocks(true);
            t.set_pin_l0_filter_and_index_blocks_in_cache(true);
            if bloom {
                t.set_bloom_filter(10.0, false);
            }
            t
        };
        let cf = |name: &str, compression: DBCompressionType, bloom: bool| {
            let mut o = Options::default();
            if name == CF_ENTRIES {
                // Rows of one context share a 16-byte prefix and only ever grow at its end: a
                // memtable hashed by context keeps one short skiplist per context, so an insert
                // lands next to the previous one instead of searching one big list. (Not for
                // `nodes`: its point reads, several per proof, are faster with whole-key
                // filters than with one shared prefix per context.)
                o.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(16));
                o.set_memtable_factory(rocksdb::MemtableFactory::HashSkipList {
                    bucket_count: 100_000,
                    height: 4,
                    branching_factor: 4,
                });
            }
            o.set_write_buffer_size(config.write_buffer_bytes);
            o.set_max_write_buffer_number(4);
            // Append-only data: universal compaction rewrites each byte far fewer times than
            // leveled compaction, which matters on small machines where compaction competes
            // with the write path for CPU.
            o.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
            o.set_compression_type(compression);
            o.set_block_based_table_factory(&table(bloom));
            ColumnFamilyDescriptor::new(name, o)
        };
        let cfs = vec![
            cf(
                CF_ENTRIES,
                if config.compress_entries {
                    DBCompressionType::Lz4
                } else {
                    DBCompressionType::None
                },
                false,
            ),
            cf(CF_HEADS, DBCompressionType::None, true),
            cf(CF_NODES, DBCompressionType::None, true),
            cf(CF_IDEMPOTENCY, DBCompressionType::None, true),
            cf(CF_REPLICATION, DBCompressionType::None, true),
            cf(CF_QUARANTINE, DBCompressionType::None, false),
            cf(CF_KEY_INDEX, DBCompressionType::None, false),
        ];
        let db =
            DB::open_cf_descriptors(&db_opts, &path, cfs).map_err(rocks("open the database"))?;
        let store = RocksStore {
            db,
            path,
            durability: config.durability,
            committed: Mutex::new(HashMap::new()),
        };
        match store
            .db
            .get(FORMAT_KEY)
            .map_err(rocks("read the format marker"))?
        {
            None => store.write_format_marker()?,
            Some(v) if v == FORMAT_VALUE => {}
            Some(v) if v == FORMAT_V1 => {
                store.build_key_index()?;
                store.write_format_marker()?;
            }
            Some(v) => {
                return Err(StorageError::Corrupt(format!(
                    "data dir {} has storage format {:?}; this build reads formats 1 (upgraded \
                     to 2 on open) and 2",
                    store.path.display(),
                    String::from_utf8_lossy(&v)
                )));
            }
        }
        Ok(store)
    }

    /// Marks the directory as the current format, durably (after everything written before it).
    fn write_format_marker(&self) -> Result<(), StorageError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_opt(FORMAT_KEY, FORMAT_VALUE, &wo)
            .map_err(rocks("write the format marker"))?;
        // Flushed at once: an unflushed default column family would keep every later
        // write-ahead-log file alive, to be replayed at each open.
        self.db.flush().map_err(rocks("flush the format marker"))
    }

    /// Upgrades a format-1 directory: writes the `key_index` row of every stored entry (staged
    /// rows beyond a context's size too; readers skip rows whose entry has another key). The
    /// rows are idempotent puts and the format marker is only written after all of them, so an
    /// interrupted upgrade is simply run again at the next open.
    fn build_key_index(&self) -> Result<(), StorageError> {
        tracing::info!(path = %self.path.display(), "building the key index of a format-1 data dir");
        let started = std::time::Instant::now();
        let index_cf = self.cf(CF_KEY_INDEX);
        let mut it = self.db.raw_iterator_cf(self.cf(CF_ENTRIES));
        it.seek_to_first();
        let mut wb = WriteBatch::default();
        let mut rows = 0u64;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (Some(ctx), Some(seq)) = (
                k.get(..CONTEXT_KEY_LEN)
                    .and_then(|c| ContextKey::try_from(c).ok()),
                entry_key_sequence(k),
            ) else {
                return Err(StorageError::Corrupt(format!(
                    "entries key of {} bytes while building the key index",
                    k.len()
                )));
            };
            let entry_key = entry_value_key(v).ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "entry {seq} is unreadable while building the key index"
                ))
            })?;
            wb.put_cf(
                index_cf,
                key_index_key(&key_index_prefix(&ctx, entry_key), seq),
                b"",
            );
            rows += 1;
            if wb.len() >= UPGRADE_BATCH_ROWS {
                self.db
                    .write(std::mem::take(&mut wb))
                    .map_err(rocks("write key index rows"))?;
            }
            it.next();
        }
        it.status()
            .map_err(rocks("iterate entries to build the key index"))?;
        self.db.write(wb).map_err(rocks("write key index rows"))?;
        tracing::info!(
            rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "key index built"
        );
        Ok(())
    }

    /// Drops the `key_index` and marks the directory format 1, as a build before the index left
    /// it: for tests of the upgrade on open. Never used by the ledger itself.
    #[doc(hidden)]
    pub fn downgrade_to_format_1_for_tests(dir: impl AsRef<Path>) -> Result<(), StorageError> {
        let dir = dir.as_ref();
        let names = DB::list_cf(&Options::default(), dir).map_err(rocks("list column families"))?;
        let mut db =
            DB::open_cf(&Options::default(), dir, &names).map_err(rocks("open the database"))?;
        if names.iter().any(|n| n == CF_KEY_INDEX) {
            db.drop_cf(CF_KEY_INDEX)
                .map_err(rocks("drop the key index"))?;
        }
        db.put(FORMAT_KEY, FORMAT_V1)
            .map_err(rocks("write the format marker"))?;
        db.flush().map_err(rocks("flush the format marker"))
    }

    /// Directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    fn load_record(
        &self,
        key: &ContextKey,
        context_id: &str,
        snap: Option<&rocksdb::SnapshotWithThreadMode<'_, DB>>,
    ) -> Result<Option<HeadRecord>, StorageError> {
        let v = match snap {
            Some(s) => s.get_pinned_cf_opt(self.cf(CF_HEADS), key, ReadOptions::default()),
            None => self.db.get_pinned_cf(self.cf(CF_HEADS), key),
        }
        .map_err(rocks("read a context head"))?;
        let Some(v) = v else { return Ok(None) };
        let rec = decode_head(&v)?;
        if rec.context_id != context_id {
            return Err(StorageError::ContextKeyCollision(
                rec.context_id,
                context_id.to_owned(),
            ));
        }
        Ok(Some(rec))
    }

    fn load_head(
        &self,
        key: &ContextKey,
        context_id: &str,
    ) -> Result<Option<ContextHead>, StorageError> {
        let Some(rec) = self.load_record(key, context_id, None)? else {
            return Ok(None);
        };
        let mut frontier_ids = Vec::new();
        ledger_core::merkle::range_decomposition(0, rec.size, &mut frontier_ids);
        let hashes = self.read_nodes(key, context_id, &frontier_ids)?;
        rec.into_head(hashes).map(Some)
    }

    fn read_nodes(
        &self,
        key: &ContextKey,
        context_id: &str,
        ids: &[TreeNodeId],
    ) -> Result<Vec<Hash>, StorageError> {
        // Many subtrees share a row (a row holds a whole right spine), so read each row once, in
        // key order.
        let mut rows: Vec<u64> = ids.iter().map(|id| node_location(*id).0).collect();
        rows.sort_unstable();
        rows.dedup();
        let keys: Vec<_> = rows.iter().map(|seq| entry_key(key, *seq)).collect();
        let values = self
            .db
            .batched_multi_get_cf(self.cf(CF_NODES), keys.iter(), true);
        let values = values
            .into_iter()
            .map(|v| v.map_err(rocks("read Merkle nodes")))
            .collect::<Result<Vec<_>, _>>()?;
        ids.iter()
            .map(|id| {
                let (seq, off) = node_location(*id);
                let row = rows
                    .binary_search(&seq)
                    .ok()
                    .and_then(|i| values[i].as_deref());
                row.and_then(|row| row.get(off..off + 32))
                    .and_then(Hash::from_slice)
                    .ok_or_else(|| {
                        StorageError::Corrupt(format!(
                            "missing Merkle node {id:?} of {context_id:?}"
                        ))
                    })
            })
            .collect()
    }

    /// One atomic write batch for `batch`; with `sync`, the WAL is fsynced before returning.
    fn write(&self, batch: &[ContextCommit], sync: bool) -> Result<(), StorageError> {
        let mut committed = self.committed.lock();
        if committed.len() > SIZE_CACHE_LIMIT {
            committed.clear();
        }
        // Check every commit against the committed sizes (and against earlier commits of the
        // same context in this batch) before writing anything.
        let mut pending: HashMap<ContextKey, u64> = HashMap::new();
        let mut keyed: Vec<(ContextKey, &ContextCommit)> = Vec::with_capacity(batch.len());
        for c in batch {
            let id = c.head.context_id.as_str();
            let key = context_key(id);
            let current = match pending.get(&key) {
                Some(s) => *s,
                None => match committed.get(&key) {
                    Some((known, size)) if known == id => *size,
                    Some((known, _)) => {
                        return Err(StorageError::ContextKeyCollision(
                            known.clone(),
                            id.to_owned(),
                        ));
                    }
                    None => {
                        let size = self.load_record(&key, id, None)?.map_or(0, |r| r.size);
                        committed.insert(key, (id.to_owned(), size));
                        size
                    }
                },
            };
            check_commit(c, current)?;
            pending.insert(key, c.head.size());
            keyed.push((key, c));
        }
        // Write each column family's keys in ascending order: the memtable skiplist then inserts
        // next to the previous key instead of searching from the top for every key. (A stable
        // sort keeps several commits of one context in sequence order.)
        keyed.sort_by_key(|a| a.0);
        let (entries_cf, heads_cf, nodes_cf) =
            (self.cf(CF_ENTRIES), self.cf(CF_HEADS), self.cf(CF_NODES));
        let mut wb = WriteBatch::default();
        let mut value = Vec::new();
        for (key, c) in &keyed {
            for e in &c.entries {
                value.clear();
                encode_entry_into(e, &mut value);
                wb.put_cf(entries_cf, entry_key(key, e.sequence), &value);
            }
        }
        let index_cf = self.cf(CF_KEY_INDEX);
        for (key, c) in &keyed {
            put_key_index_rows(&mut wb, index_cf, key, c);
        }
        for (key, c) in &keyed {
            put_node_rows(&mut wb, nodes_cf, key, c)?;
        }
        let idem_cf = self.cf(CF_IDEMPOTENCY);
        for (key, c) in &keyed {
            for r in &c.idempotency {
                wb.put_cf(idem_cf, idempotency_key(key, &r.key), encode_idempotency(r));
            }
            if let Some(last) = c.idempotency.iter().map(|r| r.ordinal).max() {
                wb.put_cf(idem_cf, key, last.to_be_bytes());
            }
        }
        let mut last_head: Option<(&ContextKey, &ContextCommit)> = None;
        for (key, c) in &keyed {
            // Only the last head of each context in the batch matters.
            if let Some((prev, prev_c)) = last_head
                && prev != key
            {
                wb.put_cf(heads_cf, prev, encode_head(&prev_c.head));
            }
            last_head = Some((key, c));
        }
        if let Some((k, c)) = last_head {
            wb.put_cf(heads_cf, k, encode_head(&c.head));
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db
            .write_opt(wb, &wo)
            .map_err(rocks("write a commit batch"))?;
        for (key, size) in pending {
            if let Some(slot) = committed.get_mut(&key) {
                slot.1 = size;
            }
        }
        Ok(())
    }

    /// A read filtered by entry key: walks the key's `key_index` rows from `after_sequence` to
    /// `upper` and reads only the entries they name, all from `snap`. Rows naming an entry with
    /// another key (a hash collision, a load's staged row later overwritten) are skipped.
    #[allow(clippy::too_many_arguments)]
    fn read_keyed(
        &self,
        context_id: &str,
        key: &ContextKey,
        want: &str,
        query: &ReadQuery,
        snap: &rocksdb::SnapshotWithThreadMode<'_, DB>,
        latest: u64,
        upper: u64,
    ) -> Result<ReadResult, StorageError> {
        let mut page = Page::new(query);
        if query.after_sequence < upper {
            let prefix = key_index_prefix(key, want);
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(key_index_key(&prefix, upper.saturating_add(1)).to_vec());
            let mut it = snap.raw_iterator_cf_opt(self.cf(CF_KEY_INDEX), ro);
            it.seek(key_index_key(&prefix, query.after_sequence + 1));
            let entries_cf = self.cf(CF_ENTRIES);
            while let Some(k) = it.key() {
                let seq = key_index_key_sequence(k).ok_or_else(|| {
                    StorageError::Corrupt(format!(
                        "key index row of {} bytes in {context_id:?}",
                        k.len()
                    ))
                })?;
                let v = snap
                    .get_pinned_cf_opt(entries_cf, entry_key(key, seq), ReadOptions::default())
                    .map_err(rocks("read an indexed entry"))?
                    .ok_or_else(|| {
                        StorageError::Corrupt(format!(
                            "context {context_id:?} is missing entry {seq} (named by the key index)"
                        ))
                    })?;
                let stored = entry_value_key(&v).ok_or_else(|| {
                    StorageError::Corrupt(format!("entry {seq} of {context_id:?} is unreadable"))
                })?;
                if stored == want && !page.push(decode_entry(&v)?) {
                    break;
                }
                it.next();
            }
            it.status().map_err(rocks("iterate the key index"))?;
        }
        Ok(page.finish(latest, upper))
    }

    /// Writes raw bytes under an entry's key, bypassing every check. For tests that simulate
    /// on-disk tampering and for fault injection; never used by the ledger itself.
    #[doc(hidden)]
    pub fn tamper_entry_for_tests(
        &self,
        context_id: &str,
        sequence: u64,
        value: &[u8],
    ) -> Result<(), StorageError> {
        let k = entry_key(&context_key(context_id), sequence);
        self.db
            .put_cf(self.cf(CF_ENTRIES), k, value)
            .map_err(rocks("tamper with an entry"))
    }

    /// The raw stored value of an entry, for tests.
    #[doc(hidden)]
    pub fn raw_entry_for_tests(
        &self,
        context_id: &str,
        sequence: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let k = entry_key(&context_key(context_id), sequence);
        self.db
            .get_cf(self.cf(CF_ENTRIES), k)
            .map_err(rocks("read an entry"))
    }
}

impl LogStore for RocksStore {
    fn commit(&self, batch: &[ContextCommit]) -> Result<(), StorageError> {
        self.write(batch, self.durability == Durability::Sync)
    }

    fn stage(&self, c: &ContextCommit) -> Result<(), StorageError> {
        let id = c.head.context_id.as_str();
        let key = context_key(id);
        check_rows(c)?;
        // Never below the committed size: staging must not overwrite a visible entry. (Only
        // the one writer of this context stages or commits it, so the size cannot move
        // between this check and the write.)
        let committed = self.load_record(&key, id, None)?.map_or(0, |r| r.size);
        if c.base_size < committed {
            return Err(StorageError::SizeConflict {
                context_id: id.to_owned(),
                expected: c.base_size,
                actual: committed,
            });
        }
        let mut wb = WriteBatch::default();
        let mut value = Vec::new();
        let entries_cf = self.cf(CF_ENTRIES);
        for e in &c.entries {
            value.clear();
            encode_entry_into(e, &mut value);
            wb.put_cf(entries_cf, entry_key(&key, e.sequence), &value);
        }
        put_key_index_rows(&mut wb, self.cf(CF_KEY_INDEX), &key, c);
        put_node_rows(&mut wb, self.cf(CF_NODES), &key, c)?;
        self.db
            .write_opt(wb, &WriteOptions::default())
            .map_err(rocks("stage rows"))
    }

    fn idempotency(
        &self,
        context_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StorageError> {
        let k = idempotency_key(&context_key(context_id), key);
        let Some(v) = self
            .db
            .get_pinned_cf(self.cf(CF_IDEMPOTENCY), k)
            .map_err(rocks("read an idempotency key"))?
        else {
            return Ok(None);
        };
        let r = decode_idempotency(&v)?;
        // Keys are stored by hash; a different key with the same hash is not a match.
        Ok((r.key == key).then_some(r))
    }

    fn idempotency_count(&self, context_id: &str) -> Result<u64, StorageError> {
        let v = self
            .db
            .get_pinned_cf(self.cf(CF_IDEMPOTENCY), context_key(context_id))
            .map_err(rocks("read the idempotency count"))?;
        match v {
            None => Ok(0),
            Some(v) => v
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt("idempotency count is not 8 bytes".into())),
        }
    }

    fn commit_deferred(&self, batch: &[ContextCommit]) -> Result<(), StorageError> {
        self.write(batch, false)
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn head(&self, context_id: &str) -> Result<Option<ContextHead>, StorageError> {
        self.load_head(&context_key(context_id), context_id)
    }

    fn size(&self, context_id: &str) -> Result<u64, StorageError> {
        Ok(self
            .load_record(&context_key(context_id), context_id, None)?
            .map_or(0, |r| r.size))
    }

    fn read(&self, context_id: &str, query: &ReadQuery) -> Result<ReadResult, StorageError> {
        let key = context_key(context_id);
        let snap = self.db.snapshot();
        let latest = self
            .load_record(&key, context_id, Some(&snap))?
            .map_or(0, |r| r.size);
        let upper = query.up_to.map_or(latest, |u| u.min(latest));
        if let Some(want) = query.key.as_deref() {
            return self.read_keyed(context_id, &key, want, query, &snap, latest, upper);
        }
        let mut page = Page::new(query);
        if query.after_sequence < upper {
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(entry_key(&key, upper.saturating_add(1)).to_vec());
            let mut it = snap.raw_iterator_cf_opt(self.cf(CF_ENTRIES), ro);
            it.seek(entry_key(&key, query.after_sequence + 1));
            let mut expected = query.after_sequence + 1;
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                let seq = entry_key_sequence(k).unwrap_or(0);
                if seq != expected {
                    return Err(StorageError::Corrupt(format!(
                        "context {context_id:?} is missing entry {expected} (found {seq})"
                    )));
                }
                expected += 1;
                if !page.push(decode_entry(v)?) {
                    break;
                }
                it.next();
            }
            it.status().map_err(rocks("iterate entries"))?;
            if !page.is_full() && expected != upper + 1 {
                return Err(StorageError::Corrupt(format!(
                    "context {context_id:?} is missing entries {expected}..={upper}"
                )));
            }
        }
        Ok(page.finish(latest, upper))
    }

    fn nodes(&self, context_id: &str, ids: &[TreeNodeId]) -> Result<Vec<Hash>, StorageError> {
        self.read_nodes(&context_key(context_id), context_id, ids)
    }

    fn list_contexts(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_HEADS));
        match after {
            Some(a) => {
                let k = context_key(a);
                it.seek(k);
                if it.key() == Some(&k[..]) {
                    it.next();
                }
            }
            None => it.seek_to_first(),
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(v) = it.value() else { break };
            out.push(decode_head(v)?.context_id);
            it.next();
        }
        it.status().map_err(rocks("list contexts"))?;
        Ok(out)
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.db
            .flush_wal(true)
            .map_err(rocks("sync the write-ahead log"))
    }

    fn replication_state(&self, context_id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(v) = self
            .db
            .get_pinned_cf(self.cf(CF_REPLICATION), context_key(context_id))
            .map_err(rocks("read replication state"))?
        else {
            return Ok(None);
        };
        let (stored_id, state) = decode_replication(&v)?;
        if stored_id != context_id {
            return Err(StorageError::ContextKeyCollision(
                stored_id.to_owned(),
                context_id.to_owned(),
            ));
        }
        Ok(Some(state.to_vec()))
    }

    fn save_replication_state(&self, context_id: &str, state: &[u8]) -> Result<(), StorageError> {
        let key = context_key(context_id);
        // A context key already holding another context's state is a collision, not a slot to
        // take over.
        if let Some(v) = self
            .db
            .get_pinned_cf(self.cf(CF_REPLICATION), key)
            .map_err(rocks("read replication state"))?
        {
            let (stored_id, _) = decode_replication(&v)?;
            if stored_id != context_id {
                return Err(StorageError::ContextKeyCollision(
                    stored_id.to_owned(),
                    context_id.to_owned(),
                ));
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.durability == Durability::Sync);
        self.db
            .put_cf_opt(
                self.cf(CF_REPLICATION),
                key,
                encode_replication(context_id, state),
                &wo,
            )
            .map_err(rocks("write replication state"))
    }

    fn quarantine(
        &self,
        context_id: &str,
        from_sequence: u64,
        reason: &str,
        quarantined_at_ns: u64,
    ) -> Result<Option<Quarantined>, StorageError> {
        self.quarantine_suffix(context_id, from_sequence, reason, quarantined_at_ns)
    }

    fn quarantines(&self, context_id: Option<&str>) -> Result<Vec<QuarantineInfo>, StorageError> {
        self.list_quarantines(context_id)
    }

    fn quarantined_entries(
        &self,
        context_id: &str,
        id: u64,
    ) -> Result<Option<Vec<Entry>>, StorageError> {
        self.read_quarantined(context_id, id)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.sync()?;
        let default = self
            .db
            .cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .expect("default column family");
        let cfs = [
            self.cf(CF_ENTRIES),
            self.cf(CF_NODES),
            self.cf(CF_HEADS),
            self.cf(CF_IDEMPOTENCY),
            self.cf(CF_REPLICATION),
            self.cf(CF_QUARANTINE),
            self.cf(CF_KEY_INDEX),
            default,
        ];
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .map_err(rocks("flush memtables"))
    }
}
