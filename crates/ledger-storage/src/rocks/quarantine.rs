//! Quarantine on RocksDB: one write batch moves a context's suffix into the `quarantine`
//! column family and cuts the context back (see [`crate::LogStore::quarantine`]).
//!
//! The batch holds, for each moved entry, a `quarantine` entry row with the entry's stored value
//! byte for byte, and deletions of its `entries`, `key_index` and `nodes` rows; deletions of the idempotency
//! records that name moved entries and the context's new keyed-append ordinal; the quarantine's
//! info row; and the context's new head row (deleted when the context is cut back to nothing).
//! The new head is computed from the rows that stay: the frontier of the kept size from its
//! `nodes` rows (all at sequences within the kept size), the clock and time from the last kept
//! entry. It is the head a context that only ever had the kept entries would have.

use super::{
    CF_ENTRIES, CF_HEADS, CF_IDEMPOTENCY, CF_KEY_INDEX, CF_NODES, CF_QUARANTINE, HeadRecord,
    RocksStore, rocks,
};
use crate::codec::{
    decode_entry, decode_idempotency, decode_quarantine_info, encode_head, encode_quarantine_info,
    entry_value_key,
};
use crate::keys::{
    CONTEXT_KEY_LEN, ContextKey, QUARANTINE_INFO_TAG, context_key, entry_key, entry_key_sequence,
    key_index_key, key_index_prefix, quarantine_entry_key, quarantine_entry_key_sequence,
    quarantine_info_key, quarantine_info_key_id,
};
use crate::{
    ContextHead, Durability, QuarantineInfo, Quarantined, StorageError, check_quarantine_from,
};
use ledger_core::Entry;
use rocksdb::{ReadOptions, WriteBatch, WriteOptions};

/// Bytes of a `quarantine` info key before its id: tag ‖ context key.
const INFO_PREFIX_LEN: usize = 1 + CONTEXT_KEY_LEN;

impl RocksStore {
    pub(super) fn quarantine_suffix(
        &self,
        context_id: &str,
        from_sequence: u64,
        reason: &str,
        quarantined_at_ns: u64,
    ) -> Result<Option<Quarantined>, StorageError> {
        check_quarantine_from(context_id, from_sequence)?;
        let key = context_key(context_id);
        // Holding the commit lock keeps commits (and their size cache) out until the cut is
        // written and recorded.
        let mut committed = self.committed.lock();
        let Some(rec) = self.load_record(&key, context_id, None)? else {
            return Ok(None);
        };
        let size = rec.size;
        if from_sequence > size {
            return Ok(None);
        }
        let keep = from_sequence - 1;
        let head = self.head_at(&key, context_id, keep)?;
        let id = self.last_quarantine_id(&key)? + 1;

        let (entries_cf, nodes_cf, q_cf, index_cf) = (
            self.cf(CF_ENTRIES),
            self.cf(CF_NODES),
            self.cf(CF_QUARANTINE),
            self.cf(CF_KEY_INDEX),
        );
        let mut wb = WriteBatch::default();
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(entry_key(&key, size.saturating_add(1)).to_vec());
        let mut it = self.db.raw_iterator_cf_opt(entries_cf, ro);
        it.seek(entry_key(&key, from_sequence));
        let mut expected = from_sequence;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let seq = entry_key_sequence(k).unwrap_or(0);
            if seq != expected {
                return Err(StorageError::Corrupt(format!(
                    "context {context_id:?} is missing entry {expected} (found {seq})"
                )));
            }
            let entry_key_of = entry_value_key(v).ok_or_else(|| {
                StorageError::Corrupt(format!("entry {seq} of {context_id:?} is unreadable"))
            })?;
            wb.put_cf(q_cf, quarantine_entry_key(&key, id, seq), v);
            wb.delete_cf(
                index_cf,
                key_index_key(&key_index_prefix(&key, entry_key_of), seq),
            );
            wb.delete_cf(entries_cf, k);
            wb.delete_cf(nodes_cf, entry_key(&key, seq));
            expected += 1;
            it.next();
        }
        it.status()
            .map_err(rocks("iterate entries to quarantine"))?;
        drop(it);
        if expected != size + 1 {
            return Err(StorageError::Corrupt(format!(
                "context {context_id:?} is missing entries {expected}..={size}"
            )));
        }
        self.forget_idempotency(&mut wb, &key, context_id, keep)?;
        let info = QuarantineInfo {
            context_id: context_id.to_owned(),
            id,
            from_sequence,
            count: size - keep,
            quarantined_at_ns,
            reason: reason.to_owned(),
        };
        wb.put_cf(
            q_cf,
            quarantine_info_key(&key, id),
            encode_quarantine_info(&info),
        );
        let heads_cf = self.cf(CF_HEADS);
        if keep == 0 {
            wb.delete_cf(heads_cf, key);
        } else {
            wb.put_cf(heads_cf, key, encode_head(&head));
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.durability == Durability::Sync);
        self.db
            .write_opt(wb, &wo)
            .map_err(rocks("write a quarantine batch"))?;
        committed.insert(key, (context_id.to_owned(), keep));
        Ok(Some(Quarantined { info, head }))
    }

    /// The head the context had at `size` (which must be within its stored size), from the
    /// stored rows.
    fn head_at(
        &self,
        key: &ContextKey,
        context_id: &str,
        size: u64,
    ) -> Result<ContextHead, StorageError> {
        if size == 0 {
            return Ok(ContextHead::empty(context_id));
        }
        let last = self
            .db
            .get_pinned_cf(self.cf(CF_ENTRIES), entry_key(key, size))
            .map_err(rocks("read an entry"))?
            .ok_or_else(|| {
                StorageError::Corrupt(format!("context {context_id:?} is missing entry {size}"))
            })?;
        let last = decode_entry(&last)?;
        let mut ids = Vec::new();
        ledger_core::merkle::range_decomposition(0, size, &mut ids);
        let hashes = self.read_nodes(key, context_id, &ids)?;
        HeadRecord {
            context_id: context_id.to_owned(),
            size,
            lamport_clock: last.lamport_clock,
            last_appended_at_ns: last.appended_at_ns,
        }
        .into_head(hashes)
    }

    /// Adds to `wb` the deletion of every idempotency record of the context naming a sequence
    /// beyond `keep`, and sets the context's keyed-append ordinal to the last kept record's.
    fn forget_idempotency(
        &self,
        wb: &mut WriteBatch,
        key: &ContextKey,
        context_id: &str,
        keep: u64,
    ) -> Result<(), StorageError> {
        use crate::LogStore;
        if self.idempotency_count(context_id)? == 0 {
            return Ok(()); // no keyed append ever: nothing to scan
        }
        let cf = self.cf(CF_IDEMPOTENCY);
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(key);
        let mut last_kept = 0;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(key) {
                break;
            }
            // The context's ordinal row is the bare context key; records are longer.
            if k.len() > CONTEXT_KEY_LEN {
                let r = decode_idempotency(v)?;
                if r.sequence > keep {
                    wb.delete_cf(cf, k);
                } else {
                    last_kept = last_kept.max(r.ordinal);
                }
            }
            it.next();
        }
        it.status().map_err(rocks("scan idempotency keys"))?;
        if last_kept == 0 {
            wb.delete_cf(cf, key);
        } else {
            wb.put_cf(cf, key, last_kept.to_be_bytes());
        }
        Ok(())
    }

    /// The id of the context's last quarantine (0 if none).
    fn last_quarantine_id(&self, key: &ContextKey) -> Result<u64, StorageError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_QUARANTINE));
        let last = quarantine_info_key(key, u64::MAX);
        it.seek_for_prev(last);
        let id = match it.key() {
            Some(k) if k.starts_with(&last[..INFO_PREFIX_LEN]) => quarantine_info_key_id(k)
                .ok_or_else(|| StorageError::Corrupt("malformed quarantine key".into()))?,
            _ => 0,
        };
        it.status().map_err(rocks("find the last quarantine"))?;
        Ok(id)
    }

    pub(super) fn list_quarantines(
        &self,
        context_id: Option<&str>,
    ) -> Result<Vec<QuarantineInfo>, StorageError> {
        let prefix: Vec<u8> = match context_id {
            Some(c) => quarantine_info_key(&context_key(c), 0)[..INFO_PREFIX_LEN].to_vec(),
            None => vec![QUARANTINE_INFO_TAG],
        };
        let mut it = self.db.raw_iterator_cf(self.cf(CF_QUARANTINE));
        it.seek(&prefix);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            let id = quarantine_info_key_id(k)
                .ok_or_else(|| StorageError::Corrupt("malformed quarantine key".into()))?;
            let info = decode_quarantine_info(id, v)?;
            if let Some(c) = context_id
                && info.context_id != c
            {
                return Err(StorageError::ContextKeyCollision(
                    info.context_id,
                    c.to_owned(),
                ));
            }
            out.push(info);
            it.next();
        }
        it.status().map_err(rocks("list quarantines"))?;
        Ok(out)
    }

    pub(super) fn read_quarantined(
        &self,
        context_id: &str,
        id: u64,
    ) -> Result<Option<Vec<Entry>>, StorageError> {
        let key = context_key(context_id);
        let q_cf = self.cf(CF_QUARANTINE);
        let Some(v) = self
            .db
            .get_pinned_cf(q_cf, quarantine_info_key(&key, id))
            .map_err(rocks("read a quarantine"))?
        else {
            return Ok(None);
        };
        let info = decode_quarantine_info(id, &v)?;
        if info.context_id != context_id {
            return Err(StorageError::ContextKeyCollision(
                info.context_id,
                context_id.to_owned(),
            ));
        }
        let first = quarantine_entry_key(&key, id, info.from_sequence);
        let prefix = &first[..first.len() - 8];
        let mut it = self.db.raw_iterator_cf(q_cf);
        it.seek(first);
        let mut out = Vec::with_capacity(usize::try_from(info.count).unwrap_or(0).min(1 << 16));
        let mut expected = info.from_sequence;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            let seq = quarantine_entry_key_sequence(k).unwrap_or(0);
            let entry = decode_entry(v)?;
            if seq != expected || entry.sequence != seq {
                return Err(StorageError::Corrupt(format!(
                    "quarantine {id} of {context_id:?} is missing entry {expected}"
                )));
            }
            out.push(entry);
            expected += 1;
            it.next();
        }
        it.status().map_err(rocks("read quarantined entries"))?;
        if out.len() as u64 != info.count {
            return Err(StorageError::Corrupt(format!(
                "quarantine {id} of {context_id:?} holds {} of its {} entries",
                out.len(),
                info.count
            )));
        }
        Ok(Some(out))
    }
}
