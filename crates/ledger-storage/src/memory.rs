//! The in-memory reference store. It keeps the [`LogStore`] contract with the simplest possible
//! data structures and exists so tests can check the RocksDB store against it. Not for production:
//! nothing survives the process.

use crate::keys::context_key;
use crate::{
    ContextCommit, ContextHead, LogStore, ReadQuery, ReadResult, StorageError, check_commit,
    fits_budget,
};
use ledger_core::merkle::NodeId;
use ledger_core::{Entry, Hash};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
struct MemContext {
    entries: Vec<Arc<Entry>>,
    head: ContextHead,
    nodes: HashMap<NodeId, Hash>,
}

/// In-memory [`LogStore`]. Clones share the same data, which lets tests "reopen" it.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    contexts: Arc<RwLock<HashMap<String, MemContext>>>,
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
        for c in batch {
            let ctx = contexts
                .entry(c.head.context_id.clone())
                .or_insert_with(|| MemContext {
                    entries: Vec::new(),
                    head: ContextHead::empty(&c.head.context_id),
                    nodes: HashMap::new(),
                });
            ctx.entries.extend(c.entries.iter().cloned());
            for (id, h) in &c.nodes {
                let prev = ctx.nodes.insert(*id, *h);
                assert!(prev.is_none(), "node {id:?} written twice");
            }
            ctx.head = c.head.clone();
        }
        Ok(())
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
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut has_more = false;
        let start = usize::try_from(query.after_sequence).unwrap_or(usize::MAX);
        let end = usize::try_from(upper).unwrap_or(usize::MAX);
        if start < end {
            for e in &ctx.entries[start..end] {
                if query.key.as_deref().is_some_and(|k| k != e.key) {
                    continue;
                }
                if !fits_budget(query, &out, bytes, e) {
                    has_more = true;
                    break;
                }
                bytes += e.encoded_len();
                out.push(Entry::clone(e));
            }
        }
        Ok(ReadResult::finish(query, out, latest, upper, has_more))
    }

    fn nodes(&self, context_id: &str, ids: &[NodeId]) -> Result<Vec<Hash>, StorageError> {
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
}
