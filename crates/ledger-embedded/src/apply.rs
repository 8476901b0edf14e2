//! Applying pre-sequenced entries: a batch shipped by a context's writer, stored by a follower
//! exactly as the writer stored it (same ids, times, clocks, hashes), verified first.

use crate::sequencer::{ApplyCmd, Command};
use crate::{Ledger, LedgerError};
use ledger_core::merkle::TreeNodeId;
use ledger_core::tail::TailVerifier;
use ledger_core::{Entry, Hash, validate};
use ledger_storage::ContextHead;
use std::sync::Arc;
use tokio::sync::oneshot;

/// What [`Ledger::apply`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Entries newly stored (those the context already had are skipped).
    pub entries_applied: u64,
    /// The context's head afterwards.
    pub head: ContextHead,
}

impl Ledger {
    /// Stores `entries` — consecutive, pre-sequenced entries of `context_id` as another node
    /// stored them — after verifying them against what this node holds:
    ///
    /// - entries at sequences already stored must be the stored ones (else `Diverged`, naming
    ///   the first difference) and are skipped;
    /// - the rest must continue the stored history: next sequence, content hash recomputed,
    ///   Lamport clock increasing and below 2^63 (else `InvalidArgument`);
    /// - with `root_after`, the tree after the last entry must have that root (the writer's
    ///   root for that size; else `InvalidArgument`).
    ///
    /// New entries go through the normal group commit: durable before this returns, then
    /// visible to readers and delivered to watchers like local appends.
    pub async fn apply(
        &self,
        context_id: &str,
        entries: Vec<Entry>,
        root_after: Option<Hash>,
    ) -> Result<Applied, LedgerError> {
        self.apply_with_keys(context_id, entries, root_after, Vec::new())
            .await
    }

    /// [`Ledger::apply`], also recording the idempotency keys the writer accepted with the
    /// entries — `(sequence, key, fingerprint)` — atomically with them, so a retry of one of
    /// those appends sent to this node once it writes the context is answered with the stored
    /// entry instead of being stored twice. Keys of entries already held or not in `entries`
    /// are ignored.
    pub async fn apply_with_keys(
        &self,
        context_id: &str,
        entries: Vec<Entry>,
        root_after: Option<Hash>,
        keys: Vec<(u64, String, Hash)>,
    ) -> Result<Applied, LedgerError> {
        validate::validate_context_id(context_id)?;
        let head = match self.head(context_id).await? {
            Some(h) => h,
            None => ContextHead::empty(context_id),
        };
        let size = head.size();
        let first = entries.first().map_or(size + 1, |e| e.sequence);
        if first == 0 || first > size + 1 {
            return Err(LedgerError::InvalidArgument(format!(
                "entries of {context_id:?} start at sequence {first}, but it holds {size}: a gap"
            )));
        }
        // The part this node already has must be identical.
        let overlap =
            usize::try_from((size + 1 - first).min(entries.len() as u64)).unwrap_or(usize::MAX);
        if overlap > 0 {
            let ids: Vec<TreeNodeId> = entries[..overlap]
                .iter()
                .map(|e| TreeNodeId::leaf(e.sequence - 1))
                .collect();
            let stored = self.inner.store.nodes(context_id, &ids)?;
            if let Some((e, _)) = entries[..overlap]
                .iter()
                .zip(&stored)
                .find(|(e, s)| e.content_hash != **s || e.compute_content_hash() != **s)
            {
                return Err(LedgerError::Diverged {
                    context_id: context_id.to_owned(),
                    sequence: e.sequence,
                });
            }
        }
        let new: Vec<Entry> = entries.into_iter().skip(overlap).collect();
        let mut verifier = TailVerifier::new(head.frontier.clone(), head.lamport_clock);
        for e in &new {
            validate::validate_key(&e.key)?;
            validate::validate_metadata(&e.metadata)?;
            verifier.push(e).map_err(|err| {
                LedgerError::InvalidArgument(format!("entries of {context_id:?}: {err}"))
            })?;
        }
        if let Some(root) = root_after {
            verifier.check_root(&root).map_err(|err| {
                LedgerError::InvalidArgument(format!("entries of {context_id:?}: {err}"))
            })?;
        }
        if new.is_empty() {
            return Ok(Applied {
                entries_applied: 0,
                head,
            });
        }
        let n = new.len() as u64;
        let (first_new, last_new) = (size + 1, size + n);
        let mut keys: Vec<(u64, String, Hash)> = keys
            .into_iter()
            .filter(|(s, _, _)| (first_new..=last_new).contains(s))
            .collect();
        for (_, key, _) in &keys {
            validate::validate_idempotency_key(key)?;
        }
        keys.sort_by_key(|(s, _, _)| *s);
        keys.dedup_by_key(|(s, _, _)| *s);
        let commit = head.extend(new.into_iter().map(Arc::new).collect())?;
        self.inner.failed.check()?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Apply(ApplyCmd {
            commit,
            token: None,
            keys,
            reply,
        }))
        .await?;
        let head = rx.await.map_err(|_| LedgerError::ShuttingDown)??;
        Ok(Applied {
            entries_applied: n,
            head,
        })
    }
}
