//! Idempotency keys on the sequencer: is this append a retry of one already stored?
//!
//! The sequencer is the only writer, so checking and recording a key cannot race. Keys of
//! appends still in flight (sequenced, maybe not yet written) are answered from `recent`; older
//! ones from the store, where each key is written in the same batch as its entry (so a key is
//! stored exactly when its entry is). A key is honoured while it is younger than the window
//! **or** among the context's last `min_keys` keyed appends; past both, it may be used again.

use crate::error::LedgerError;
use ledger_core::{Entry, Hash};
use ledger_storage::{IdempotencyRecord, LogStore, ReadQuery, StorageError};
use std::collections::HashMap;
use std::sync::Arc;

/// What an idempotency key says about an append.
pub(crate) enum Seen {
    /// Not seen (or no longer honoured): store the append.
    New,
    /// A retry of this stored entry: answer with it, store nothing.
    Same(Arc<Entry>),
    /// The key was used by a different append, at this sequence.
    Conflict(u64),
}

struct Recent {
    fingerprint: Hash,
    entry: Arc<Entry>,
    ordinal: u64,
}

pub(crate) struct Dedupe {
    window_ns: u64,
    min_keys: u64,
    /// Keys recorded since the last [`Dedupe::clear`], by (context, key).
    recent: HashMap<(String, String), Recent>,
    /// Ordinal of each touched context's last keyed append.
    counts: HashMap<String, u64>,
}

impl Dedupe {
    pub(crate) fn new(window_ns: u64, min_keys: u64) -> Self {
        Dedupe {
            window_ns,
            min_keys,
            recent: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    fn count(&mut self, store: &dyn LogStore, context_id: &str) -> Result<u64, StorageError> {
        if let Some(n) = self.counts.get(context_id) {
            return Ok(*n);
        }
        let n = store.idempotency_count(context_id)?;
        self.counts.insert(context_id.to_owned(), n);
        Ok(n)
    }

    fn honoured(&self, ordinal: u64, appended_at_ns: u64, count: u64, now: u64) -> bool {
        now.saturating_sub(appended_at_ns) <= self.window_ns
            || count.saturating_sub(ordinal) < self.min_keys
    }

    /// Whether an append to `context_id` with idempotency key `key` and fingerprint
    /// `fingerprint` repeats one already sequenced.
    pub(crate) fn check(
        &mut self,
        store: &dyn LogStore,
        context_id: &str,
        key: &str,
        fingerprint: &Hash,
        now: u64,
    ) -> Result<Seen, LedgerError> {
        let count = self.count(store, context_id)?;
        let id = (context_id.to_owned(), key.to_owned());
        let (found_fp, sequence, entry) = if let Some(r) = self.recent.get(&id) {
            if !self.honoured(r.ordinal, r.entry.appended_at_ns, count, now) {
                return Ok(Seen::New);
            }
            (r.fingerprint, r.entry.sequence, Some(Arc::clone(&r.entry)))
        } else {
            let Some(r) = store.idempotency(context_id, key)? else {
                return Ok(Seen::New);
            };
            if !self.honoured(r.ordinal, r.appended_at_ns, count, now) {
                return Ok(Seen::New);
            }
            (r.fingerprint, r.sequence, None)
        };
        if found_fp != *fingerprint {
            return Ok(Seen::Conflict(sequence));
        }
        let entry = match entry {
            Some(e) => e,
            None => Arc::new(read_entry(store, context_id, sequence)?),
        };
        Ok(Seen::Same(entry))
    }

    /// Records `key` for the entry just sequenced; returns the record to store with it.
    pub(crate) fn record(
        &mut self,
        store: &dyn LogStore,
        key: String,
        fingerprint: Hash,
        entry: &Arc<Entry>,
        context_id: &str,
    ) -> Result<IdempotencyRecord, LedgerError> {
        let ordinal = self.count(store, context_id)? + 1;
        self.counts.insert(context_id.to_owned(), ordinal);
        self.recent.insert(
            (context_id.to_owned(), key.clone()),
            Recent {
                fingerprint,
                entry: Arc::clone(entry),
                ordinal,
            },
        );
        Ok(IdempotencyRecord {
            key,
            sequence: entry.sequence,
            appended_at_ns: entry.appended_at_ns,
            fingerprint,
            ordinal,
        })
    }

    /// Keys and counts held in memory.
    pub(crate) fn len(&self) -> usize {
        self.recent.len() + self.counts.len()
    }

    /// Forgets what is held in memory about `context_id` (its keys then answer from the
    /// store). For a context cut back by a quarantine, whose stored keys changed underneath.
    pub(crate) fn forget(&mut self, context_id: &str) {
        self.recent.retain(|(c, _), _| c != context_id);
        self.counts.remove(context_id);
    }

    /// Forgets everything held in memory. Only when nothing is in flight: every recorded key
    /// must be in the store.
    pub(crate) fn clear(&mut self) {
        self.recent.clear();
        self.counts.clear();
    }
}

fn read_entry(store: &dyn LogStore, context_id: &str, sequence: u64) -> Result<Entry, LedgerError> {
    let page = store.read(
        context_id,
        &ReadQuery {
            after_sequence: sequence - 1,
            limit: Some(1),
            up_to: Some(sequence),
            ..ReadQuery::default()
        },
    )?;
    page.entries.into_iter().next().ok_or_else(|| {
        LedgerError::Storage(StorageError::Corrupt(format!(
            "idempotency key of {context_id:?} names entry {sequence}, which is missing"
        )))
    })
}
