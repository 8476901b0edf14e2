//! The head of a context: everything needed to append the next entry and to answer for the
//! current root without reading entries.

use crate::{ContextCommit, StorageError};
use ledger_core::merkle::Frontier;
use ledger_core::{Entry, Hash};
use std::sync::Arc;

/// Size, Lamport clock, time of the last append and Merkle frontier of one context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextHead {
    pub context_id: String,
    /// Lamport clock of the last entry (0 when empty).
    pub lamport_clock: u64,
    /// `appended_at_ns` of the last entry (0 when empty).
    pub last_appended_at_ns: u64,
    pub frontier: Frontier,
}

impl ContextHead {
    /// The head of a context with no entries.
    pub fn empty(context_id: &str) -> Self {
        ContextHead {
            context_id: context_id.to_owned(),
            lamport_clock: 0,
            last_appended_at_ns: 0,
            frontier: Frontier::new(),
        }
    }

    /// Number of entries = sequence of the last entry.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Current Merkle root.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Extends this head with entries that continue it, producing the commit that stores them.
    /// Checks sequences; the entries' content hashes are trusted (they come from
    /// [`Entry::new`] or were recomputed by a verified snapshot).
    pub fn extend(&self, entries: Vec<Arc<Entry>>) -> Result<ContextCommit, StorageError> {
        let mut head = self.clone();
        let mut nodes = Vec::with_capacity(entries.len() * 2 + 1);
        for e in &entries {
            head.push(e, &mut nodes)?;
        }
        Ok(ContextCommit {
            base_size: self.size(),
            staged: 0,
            entries,
            head,
            nodes,
            idempotency: Vec::new(),
        })
    }

    /// Adds one entry to the head, collecting the complete subtrees it creates.
    pub fn push(
        &mut self,
        entry: &Entry,
        nodes: &mut Vec<(ledger_core::TreeNodeId, Hash)>,
    ) -> Result<(), StorageError> {
        let want = self.size() + 1;
        if entry.sequence != want {
            return Err(StorageError::NotGapless {
                context_id: self.context_id.clone(),
                detail: format!("entry has sequence {}, expected {want}", entry.sequence),
            });
        }
        self.frontier
            .push(entry.content_hash, |id, h| nodes.push((id, h)));
        self.lamport_clock = entry.lamport_clock;
        self.last_appended_at_ns = entry.appended_at_ns;
        Ok(())
    }
}
