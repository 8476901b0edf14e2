//! The in-memory reference store. It keeps the [`LogStore`] contract with the simplest possible
//! data structures and exists so tests can check the RocksDB store against it. Not for production:
//! nothing survives the process.

use crate::keys::context_key;
use crate::{
    ContextCommit, ContextHead, IdempotencyRecord, LogStore, Page, QuarantineInfo, Quarantined,
    ReadQuery, ReadResult, StorageError, check_commit, check_quarantine_from, check_rows,
};
use ledger_core::merkle::TreeNodeId;
use ledger_core::{Entry, Hash};
use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug)]
struct MemContext {
    entries: Vec<Arc<Entry>>,
    head: ContextHead,
    nodes: HashMap<TreeNodeId, Hash>,
    idempotency: HashMap<String, IdempotencyRecord>,
    idempotency_count: u64,
    /// Every quarantine of the context, in id order, with the entries it moved aside.
    quarantines: Vec<(QuarantineInfo, Vec<Arc<Entry>>)>,
}

/// Rows written by `stage` and not yet committed.
#[derive(Debug, Default)]
struct Staged {
    entries: BTreeMap<u64, Arc<Entry>>,
    nodes: HashMap<TreeNodeId, Hash>,
}

/// In-memory [`LogStore`]. Clones share the same data, which lets tests "reopen" it.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    contexts: Arc<RwLock<HashMap<String, MemContext>>>,
    staged: Arc<RwLock<HashMap<String, Staged>>>,
    replication: Arc<RwLock<HashMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

impl LogStore for MemoryStore {
    fn commit(&self, batch: &[ContextCommit]) -> Result<(), StorageError> {
        let mut contexts = self.contexts.write();
        // Validate the whole batch before changing anything: the batch is atomic.
        let mut sizes: HashMap<&str, u64> = HashMap::new();
        for c in batch {
            let id = c.head.context_id.as_str();
            let current = match sizes.get(id) {
                Some(s) => *s,
                None => contexts.get(id).map_or(0, |m| m.head.size()),
            };
            check_commit(c, current)?;
            sizes.insert(id, c.head.size());
        }
        let mut staged = self.staged.write();
        for c in batch.iter().filter(|c| c.staged > 0) {
            let rows = staged.get(&c.head.context_id);
            for seq in c.base_size + 1..=c.base_size + c.staged {
                if !rows.is_some_and(|r| r.entries.contains_key(&seq)) {
                    return Err(StorageError::NotGapless {
                        context_id: c.head.context_id.clone(),
                        detail: format!("staged entry {seq} was never staged"),
                    });
                }
            }
        }
        for c in batch {
            let ctx = contexts
                .entry(c.head.context_id.clone())
                .or_insert_with(|| MemContext {
                    entries: Vec::new(),
                    head: ContextHead::empty(&c.head.context_id),
                    nodes: HashMap::new(),
                    idempotency: HashMap::new(),
                    idempotency_count: 0,
                    quarantines: Vec::new(),
                });
            if c.staged > 0 {
                let rows = staged
                    .remove(&c.head.context_id)
                    .expect("checked above that the rows are staged");
                // Only the rows this commit covers: rows staged by an abandoned load at other
                // sequences are dropped, as RocksDB's are overwritten or never read.
                let range = c.base_size + 1..=c.base_size + c.staged;
                ctx.entries.extend(
                    rows.entries
                        .range(range.clone())
                        .map(|(_, e)| Arc::clone(e)),
                );
                for (id, h) in rows.nodes {
                    if range.contains(&((id.index + 1) << id.level)) {
                        ctx.nodes.insert(id, h);
                    }
                }
            }
            ctx.entries.extend(c.entries.iter().cloned());
            for (id, h) in &c.nodes {
                let prev = ctx.nodes.insert(*id, *h);
                assert!(prev.is_none(), "node {id:?} written twice");
            }
            for r in &c.idempotency {
                ctx.idempotency.insert(r.key.clone(), r.clone());
                ctx.idempotency_count = ctx.idempotency_count.max(r.ordinal);
            }
            ctx.head = c.head.clone();
        }
        Ok(())
    }

    fn stage(&self, c: &ContextCommit) -> Result<(), StorageError> {
        check_rows(c)?;
        let id = &c.head.context_id;
        let committed = self.contexts.read().get(id).map_or(0, |m| m.head.size());
        if c.base_size < committed {
            return Err(StorageError::SizeConflict {
                context_id: id.clone(),
                expected: c.base_size,
                actual: committed,
            });
        }
        let mut staged = self.staged.write();
        let rows = staged.entry(id.clone()).or_default();
        for e in &c.entries {
            rows.entries.insert(e.sequence, Arc::clone(e));
        }
        rows.nodes.extend(c.nodes.iter().copied());
        Ok(())
    }

    fn idempotency(
        &self,
        context_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StorageError> {
        Ok(self
            .contexts
            .read()
            .get(context_id)
            .and_then(|c| c.idempotency.get(key).cloned()))
    }

    fn idempotency_count(&self, context_id: &str) -> Result<u64, StorageError> {
        Ok(self
            .contexts
            .read()
            .get(context_id)
            .map_or(0, |c| c.idempotency_count))
    }

    fn head(&self, context_id: &str) -> Result<Option<ContextHead>, StorageError> {
        Ok(self
            .contexts
            .read()
            .get(context_id)
            .filter(|c| c.head.size() > 0)
            .map(|c| c.head.clone()))
    }

    fn read(&self, context_id: &str, query: &ReadQuery) -> Result<ReadResult, StorageError> {
        let contexts = self.contexts.read();
        let Some(ctx) = contexts.get(context_id) else {
            return Ok(ReadResult {
                next_after_sequence: query.after_sequence,
                ..ReadResult::default()
            });
        };
        let latest = ctx.head.size();
        let upper = query.up_to.map_or(latest, |u| u.min(latest));
        let mut page = Page::new(query);
        let start = usize::try_from(query.after_sequence).unwrap_or(usize::MAX);
        let end = usize::try_from(upper).unwrap_or(usize::MAX);
        if start < end {
            for e in &ctx.entries[start..end] {
                if query.key.as_deref().is_some_and(|k| k != e.key) {
                    continue;
                }
                if !page.push(Entry::clone(e)) {
                    break;
                }
            }
        }
        Ok(page.finish(latest, upper))
    }

    fn nodes(&self, context_id: &str, ids: &[TreeNodeId]) -> Result<Vec<Hash>, StorageError> {
        let contexts = self.contexts.read();
        let ctx = contexts
            .get(context_id)
            .ok_or_else(|| StorageError::Corrupt(format!("no Merkle nodes for {context_id:?}")))?;
        ids.iter()
            .map(|id| {
                ctx.nodes.get(id).copied().ok_or_else(|| {
                    StorageError::Corrupt(format!("missing Merkle node {id:?} of {context_id:?}"))
                })
            })
            .collect()
    }

    fn list_contexts(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let contexts = self.contexts.read();
        let mut ids: Vec<(_, &String)> = contexts
            .iter()
            .filter(|(_, c)| c.head.size() > 0)
            .map(|(id, _)| (context_key(id), id))
            .collect();
        ids.sort();
        let from = after.map(context_key);
        Ok(ids
            .into_iter()
            .filter(|(k, _)| from.is_none_or(|f| *k > f))
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect())
    }

    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn replication_state(&self, context_id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.replication.read().get(context_id).cloned())
    }

    fn save_replication_state(&self, context_id: &str, state: &[u8]) -> Result<(), StorageError> {
        self.replication
            .write()
            .insert(context_id.to_owned(), state.to_vec());
        Ok(())
    }

    fn quarantine(
        &self,
        context_id: &str,
        from_sequence: u64,
        reason: &str,
        quarantined_at_ns: u64,
    ) -> Result<Option<Quarantined>, StorageError> {
        check_quarantine_from(context_id, from_sequence)?;
        let mut contexts = self.contexts.write();
        let Some(ctx) = contexts.get_mut(context_id) else {
            return Ok(None);
        };
        let size = ctx.head.size();
        if from_sequence > size {
            return Ok(None);
        }
        let keep = from_sequence - 1;
        let moved = ctx
            .entries
            .split_off(usize::try_from(keep).expect("in-memory sizes fit usize"));
        ctx.nodes.retain(|id, _| (id.index + 1) << id.level <= keep);
        ctx.idempotency.retain(|_, r| r.sequence <= keep);
        ctx.idempotency_count = ctx
            .idempotency
            .values()
            .map(|r| r.ordinal)
            .max()
            .unwrap_or(0);
        // The reference answer: the head of the kept entries, rebuilt from scratch.
        let mut head = ContextHead::empty(context_id);
        for e in &ctx.entries {
            head.push(e, &mut Vec::new())?;
        }
        ctx.head = head.clone();
        let info = QuarantineInfo {
            context_id: context_id.to_owned(),
            id: ctx.quarantines.last().map_or(0, |(q, _)| q.id) + 1,
            from_sequence,
            count: moved.len() as u64,
            quarantined_at_ns,
            reason: reason.to_owned(),
        };
        ctx.quarantines.push((info.clone(), moved));
        Ok(Some(Quarantined { info, head }))
    }

    fn quarantines(&self, context_id: Option<&str>) -> Result<Vec<QuarantineInfo>, StorageError> {
        let contexts = self.contexts.read();
        let mut out: Vec<(_, QuarantineInfo)> = contexts
            .iter()
            .filter(|(id, _)| context_id.is_none_or(|c| c == id.as_str()))
            .flat_map(|(id, c)| {
                let key = context_key(id);
                c.quarantines.iter().map(move |(q, _)| (key, q.clone()))
            })
            .collect();
        out.sort_by_key(|(key, q)| (*key, q.id));
        Ok(out.into_iter().map(|(_, q)| q).collect())
    }

    fn quarantined_entries(
        &self,
        context_id: &str,
        id: u64,
    ) -> Result<Option<Vec<Entry>>, StorageError> {
        Ok(self.contexts.read().get(context_id).and_then(|c| {
            c.quarantines
                .iter()
                .find(|(q, _)| q.id == id)
                .map(|(_, entries)| entries.iter().map(|e| Entry::clone(e)).collect())
        }))
    }
}
