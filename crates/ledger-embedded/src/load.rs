//! Snapshots in: a load is all or nothing.
//!
//! A [`LoadSession`] reserves its context on the sequencer (appends and other loads to it are
//! refused with `LoadInProgress` meanwhile), then takes the snapshot in pieces of any size:
//! each entry is decoded and verified as it completes; entries the context already holds are
//! compared with the stored leaves (a difference is `Diverged`); new entries are written as
//! **staged** rows, invisible to every read. [`LoadSession::finish`] checks what needs the whole
//! snapshot (checksum, root, Lamport clock) and sends one apply command whose commit makes every
//! new entry visible at once, through the normal group commit: durable before it is answered,
//! published to watchers, never stalling other contexts. A crash or an error before that
//! commit leaves the context exactly as it was (staged rows stay invisible and are overwritten
//! by later appends). Memory is bounded by one piece of input plus one chunk of entries.

use crate::sequencer::{ApplyCmd, Command, LoadBeginCmd, LoadOutcome, Reservations};
use crate::{Ledger, LedgerError};
use ledger_core::merkle::TreeNodeId;
use ledger_core::snapshot::SnapshotDecoder;
use ledger_core::{Entry, Hash, validate};
use ledger_storage::{ContextHead, LogStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// New entries staged per storage write.
const STAGE_CHUNK: usize = 8192;
/// Staged bytes per storage write.
const STAGE_BYTES: usize = 16 << 20;
/// Stored leaves compared per storage read.
const COMPARE_CHUNK: usize = 4096;
/// Entry bytes a snapshot may hold beyond the payload limit (id, key, metadata, framing).
const ENTRY_OVERHEAD_BYTES: usize = 1 << 20;

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// A load in progress. Feed it the snapshot's bytes ([`LoadSession::feed`], blocking: run it
/// off the async runtime), then [`LoadSession::finish`]. Dropping it without finishing gives up:
/// nothing becomes visible.
pub struct LoadSession {
    ledger: Ledger,
    store: Arc<dyn LogStore>,
    context_id: String,
    token: u64,
    decoder: SnapshotDecoder,
    /// The context's head when the load began.
    base: ContextHead,
    /// The head after the staged rows.
    tip: ContextHead,
    staged: u64,
    /// Decoded entries at sequences the context already has, awaiting comparison.
    compare: Vec<Entry>,
    /// Decoded new entries not yet staged.
    pending: Vec<Arc<Entry>>,
    pending_bytes: usize,
}

impl std::fmt::Debug for LoadSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadSession")
            .field("context_id", &self.context_id)
            .field("base_size", &self.base.size())
            .field("staged", &self.staged)
            .field("bytes_taken", &self.decoder.bytes_consumed())
            .finish()
    }
}

impl Ledger {
    /// Starts a load into `context_id` (which may differ from the id inside the snapshot).
    ///
    /// With `fail_if_exists` and existing entries it fails at once with `AlreadyExists`.
    pub async fn begin_load(
        &self,
        context_id: &str,
        fail_if_exists: bool,
    ) -> Result<LoadSession, LedgerError> {
        validate::validate_context_id(context_id)?;
        self.inner.failed.check()?;
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        self.send(Command::LoadBegin(LoadBeginCmd {
            context_id: context_id.to_owned(),
            token,
            reply,
        }))
        .await?;
        let base = rx.await.map_err(|_| LedgerError::ShuttingDown)??;
        // From here on the reservation is ours: the session releases it when dropped.
        let session = LoadSession {
            ledger: self.clone(),
            store: Arc::clone(&self.inner.store),
            context_id: context_id.to_owned(),
            token,
            decoder: SnapshotDecoder::new().with_max_entry_bytes(
                self.inner.config.limits.max_payload_bytes + ENTRY_OVERHEAD_BYTES,
            ),
            tip: base.clone(),
            base,
            staged: 0,
            compare: Vec::new(),
            pending: Vec::new(),
            pending_bytes: 0,
        };
        if fail_if_exists && session.base.size() > 0 {
            return Err(LedgerError::AlreadyExists {
                context_id: context_id.to_owned(),
                size: session.base.size(),
            });
        }
        Ok(session)
    }

    /// Loads a whole snapshot into `context_id` (which may differ from the id inside it).
    ///
    /// Into an empty context it restores every entry exactly. With `fail_if_exists` and existing
    /// entries it fails. Otherwise it appends only the missing tail when the snapshot extends the
    /// stored history, does nothing when the snapshot is a prefix of it, and fails naming the
    /// first differing sequence when they diverge. It never overwrites anything, and it is all
    /// or nothing: readers, watchers and proofs see the context before or after, never between.
    pub async fn load(
        &self,
        context_id: &str,
        blob: Vec<u8>,
        fail_if_exists: bool,
    ) -> Result<LoadOutcome, LedgerError> {
        let mut session = self.begin_load(context_id, fail_if_exists).await?;
        let session = tokio::task::spawn_blocking(move || -> Result<_, LedgerError> {
            session.feed(&blob)?;
            Ok(session)
        })
        .await
        .map_err(|_| LedgerError::ShuttingDown)??;
        session.finish().await
    }
}

impl LoadSession {
    /// Bytes of the snapshot taken so far.
    pub fn bytes_taken(&self) -> u64 {
        self.decoder.bytes_consumed()
    }

    /// Takes the next bytes of the snapshot: decodes and verifies the entries they complete,
    /// compares those the context already has, stages new ones. Blocking (hashing, storage).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), LedgerError> {
        let mut decoded = Vec::new();
        self.decoder.feed(bytes, &mut decoded)?;
        for e in decoded {
            validate::validate_key(&e.key).map_err(|err| {
                LedgerError::InvalidArgument(format!("snapshot entry {}: {err}", e.sequence))
            })?;
            validate::validate_metadata(&e.metadata).map_err(|err| {
                LedgerError::InvalidArgument(format!("snapshot entry {}: {err}", e.sequence))
            })?;
            if e.sequence <= self.base.size() {
                self.compare.push(e);
                if self.compare.len() >= COMPARE_CHUNK {
                    self.compare_stored()?;
                }
            } else {
                self.pending_bytes += e.encoded_len();
                self.pending.push(Arc::new(e));
                // Keep one chunk back: the final commit carries it, so watchers are woken.
                if self.pending.len() >= 2 * STAGE_CHUNK || self.pending_bytes >= 2 * STAGE_BYTES {
                    self.stage_chunk()?;
                }
            }
        }
        Ok(())
    }

    /// Compares the entries waiting in `compare` with the stored leaves.
    fn compare_stored(&mut self) -> Result<(), LedgerError> {
        if self.compare.is_empty() {
            return Ok(());
        }
        let ids: Vec<TreeNodeId> = self
            .compare
            .iter()
            .map(|e| TreeNodeId::leaf(e.sequence - 1))
            .collect();
        let stored: Vec<Hash> = self.store.nodes(&self.context_id, &ids)?;
        if let Some((e, _)) = self
            .compare
            .iter()
            .zip(&stored)
            .find(|(e, s)| e.content_hash != **s)
        {
            return Err(LedgerError::Diverged {
                context_id: self.context_id.clone(),
                sequence: e.sequence,
            });
        }
        self.compare.clear();
        Ok(())
    }

    /// Stages the oldest pending chunk.
    fn stage_chunk(&mut self) -> Result<(), LedgerError> {
        let mut n = 0;
        let mut bytes = 0;
        while n < self.pending.len() && n < STAGE_CHUNK && bytes < STAGE_BYTES {
            bytes += self.pending[n].encoded_len();
            n += 1;
        }
        let chunk: Vec<Arc<Entry>> = self.pending.drain(..n).collect();
        self.pending_bytes -= bytes;
        let commit = self.tip.extend(chunk)?;
        self.store.stage(&commit)?;
        self.staged += n as u64;
        self.tip = commit.head;
        Ok(())
    }

    /// The snapshot has ended: verifies it whole, then makes its new entries visible and
    /// durable in one commit.
    pub async fn finish(mut self) -> Result<LoadOutcome, LedgerError> {
        let decoder = std::mem::take(&mut self.decoder);
        let header = decoder.finish()?;
        self.compare_stored()?;
        let existing = self.base.size();
        if header.tree_size <= existing {
            // Every entry of the snapshot matched a stored one: it is a prefix.
            return Ok(LoadOutcome {
                entries_restored: 0,
                latest_sequence: existing,
            });
        }
        let tail: Vec<Arc<Entry>> = std::mem::take(&mut self.pending);
        let mut commit = self.tip.extend(tail)?;
        commit.base_size = existing;
        commit.staged = self.staged;
        debug_assert_eq!(commit.head.size(), header.tree_size);
        let (reply, rx) = oneshot::channel();
        self.ledger
            .send(Command::Apply(ApplyCmd {
                commit,
                token: Some(self.token),
                keys: Vec::new(),
                reply,
            }))
            .await?;
        let head = rx.await.map_err(|_| LedgerError::ShuttingDown)??;
        Ok(LoadOutcome {
            entries_restored: head.size() - existing,
            latest_sequence: head.size(),
        })
    }
}

impl Drop for LoadSession {
    fn drop(&mut self) {
        release(&self.ledger.inner.reserved, &self.context_id, self.token);
    }
}

/// Ends a load's reservation of its context (if it still holds it).
fn release(reserved: &Reservations, context_id: &str, token: u64) {
    let mut r = reserved.lock();
    if r.get(context_id) == Some(&token) {
        r.remove(context_id);
    }
}
