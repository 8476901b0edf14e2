//! Snapshots out: a context encoded in the snapshot format (docs/SNAPSHOT.md), whole and
//! size-checked as it is built ([`Ledger::snapshot_within`]), or streamed in pieces with
//! memory bounded by a few pieces ([`Ledger::snapshot_stream`]).

use crate::sequencer::unix_ns;
use crate::{Ledger, LedgerError};
use ledger_core::Hash;
use ledger_core::snapshot::SnapshotEncoder;
use ledger_storage::{ContextHead, LogStore, ReadQuery, StorageError};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Entries per storage read while encoding.
const READ_PAGE: usize = 16_384;
/// Bytes per storage read while encoding.
const READ_PAGE_BYTES: usize = 16 << 20;
/// Pieces a streamed snapshot may run ahead of its reader.
const STREAM_AHEAD: usize = 2;

/// A snapshot of one context, encoded.
#[derive(Clone, Debug)]
pub struct SnapshotBlob {
    /// The snapshot bytes (format in `docs/SNAPSHOT.md`).
    pub bytes: Vec<u8>,
    /// Sequence of the last entry = entry count = tree size.
    pub sequence: u64,
    pub merkle_root: Hash,
    pub lamport_clock: u64,
    pub created_at_ns: u64,
}

/// What a snapshot holds (its header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Sequence of the last entry = entry count = tree size.
    pub sequence: u64,
    pub merkle_root: Hash,
    pub lamport_clock: u64,
    pub created_at_ns: u64,
}

/// The next piece of a streamed snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPiece {
    /// The next bytes of the snapshot; the pieces in order are the snapshot.
    pub data: Vec<u8>,
    /// Entries whose bytes are complete in the pieces so far.
    pub entries_through: u64,
}

/// A snapshot being encoded by a blocking task, piece by piece. Dropping it stops the task.
#[derive(Debug)]
pub struct SnapshotStream {
    /// What the snapshot holds.
    pub info: SnapshotInfo,
    rx: mpsc::Receiver<Result<SnapshotPiece, LedgerError>>,
}

impl SnapshotStream {
    /// The next piece; `None` after the last one (which carries the checksum).
    pub async fn next(&mut self) -> Option<Result<SnapshotPiece, LedgerError>> {
        self.rx.recv().await
    }
}

/// Encodes the snapshot of `head`'s context, handing each piece of at least `piece_bytes` to
/// `sink` (the last piece may be shorter).
fn encode(
    store: &dyn LogStore,
    head: &ContextHead,
    info: &SnapshotInfo,
    piece_bytes: usize,
    mut sink: impl FnMut(SnapshotPiece) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    let ctx = &head.context_id;
    let size = info.sequence;
    let mut enc = SnapshotEncoder::new(
        ctx,
        info.created_at_ns,
        size,
        info.lamport_clock,
        info.merkle_root,
        piece_bytes.min(64 << 20),
    );
    let corrupt = |what: String| LedgerError::Storage(StorageError::Corrupt(what));
    let mut after = 0;
    while after < size {
        let page = store.read(
            ctx,
            &ReadQuery {
                after_sequence: after,
                limit: Some(READ_PAGE),
                max_bytes: Some(READ_PAGE_BYTES),
                up_to: Some(size),
                key: None,
            },
        )?;
        for e in &page.entries {
            enc.push(e)
                .map_err(|e| corrupt(format!("snapshot of {ctx:?}: {e}")))?;
            if enc.pending_len() >= piece_bytes {
                sink(SnapshotPiece {
                    data: enc.take_output(),
                    entries_through: enc.entries_pushed(),
                })?;
            }
        }
        if page.next_after_sequence <= after {
            return Err(corrupt(format!("entries of {ctx:?} stop at {after}")));
        }
        after = page.next_after_sequence;
    }
    let data = enc.finish().map_err(|e| {
        corrupt(format!(
            "stored entries of {ctx:?} do not match its head: {e}"
        ))
    })?;
    sink(SnapshotPiece {
        data,
        entries_through: size,
    })
}

impl Ledger {
    async fn snapshot_head(
        &self,
        context_id: &str,
        up_to: Option<u64>,
    ) -> Result<(ContextHead, SnapshotInfo), LedgerError> {
        let mut head = self.require_head(context_id).await?;
        if let Some(n) = up_to.filter(|n| *n < head.size()) {
            if n == 0 {
                return Err(LedgerError::NotFound {
                    context_id: context_id.to_owned(),
                });
            }
            head = self.head_at(context_id, n).await?;
        }
        let info = SnapshotInfo {
            sequence: head.size(),
            merkle_root: head.root(),
            lamport_clock: head.lamport_clock,
            created_at_ns: unix_ns(),
        };
        Ok((head, info))
    }

    /// Encodes a snapshot of the context as it is now.
    pub async fn snapshot(&self, context_id: &str) -> Result<SnapshotBlob, LedgerError> {
        self.snapshot_within(context_id, None, None).await
    }

    /// Encodes a snapshot of the context as it is now (of its first `up_to` entries if given),
    /// giving up with [`LedgerError::SnapshotTooLarge`] as soon as it grows past `max_bytes`
    /// (so a context too large for one message never costs more memory than the limit).
    pub async fn snapshot_within(
        &self,
        context_id: &str,
        max_bytes: Option<usize>,
        up_to: Option<u64>,
    ) -> Result<SnapshotBlob, LedgerError> {
        let (head, info) = self.snapshot_head(context_id, up_to).await?;
        let store = Arc::clone(&self.inner.store);
        let ctx = context_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            encode(store.as_ref(), &head, &info, 1 << 20, |piece| {
                if max_bytes.is_some_and(|m| bytes.len() + piece.data.len() > m) {
                    return Err(LedgerError::SnapshotTooLarge {
                        context_id: ctx.clone(),
                        limit: max_bytes.unwrap_or_default(),
                    });
                }
                bytes.extend_from_slice(&piece.data);
                Ok(())
            })?;
            Ok(SnapshotBlob {
                bytes,
                sequence: info.sequence,
                merkle_root: info.merkle_root,
                lamport_clock: info.lamport_clock,
                created_at_ns: info.created_at_ns,
            })
        })
        .await
        .map_err(|_| LedgerError::ShuttingDown)?
    }

    /// Streams a snapshot of the context as it is now (of its first `up_to` entries if given)
    /// in pieces of about `piece_bytes`. A blocking task encodes at most a couple of pieces
    /// ahead of the reader, so memory stays bounded whatever the context's size; it stops when
    /// the stream is dropped.
    pub async fn snapshot_stream(
        &self,
        context_id: &str,
        piece_bytes: usize,
        up_to: Option<u64>,
    ) -> Result<SnapshotStream, LedgerError> {
        let (head, info) = self.snapshot_head(context_id, up_to).await?;
        let store = Arc::clone(&self.inner.store);
        let (tx, rx) = mpsc::channel(STREAM_AHEAD);
        let task_info = info.clone();
        let piece_bytes = piece_bytes.max(1);
        tokio::task::spawn_blocking(move || {
            let r = encode(store.as_ref(), &head, &task_info, piece_bytes, |piece| {
                tx.blocking_send(Ok(piece))
                    .map_err(|_| LedgerError::ShuttingDown)
            });
            if let Err(e) = r
                && !matches!(e, LedgerError::ShuttingDown)
            {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(SnapshotStream { info, rx })
    }
}
