//! [`Acks`]: the writer's clients waiting for their acknowledgement level, the levels reached
//! in the current epoch, and when a waiter is answered (its level reached, or its entry
//! inherited from an earlier epoch, and durable here).

use super::messages::{AppendReply, BatchReply, LoadReply};
use crate::error::ClusterError;
use ledger_core::Entry;
use ledger_embedded::LoadOutcome;
use ledger_replication::{AckLevel, Epoch};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One client waiting for `sequence` to reach `level` in `epoch`.
pub(crate) struct Waiter {
    epoch: Epoch,
    level: AckLevel,
    sequence: u64,
    pub(crate) reply: WaitReply,
}

/// Who waits for an acknowledgement, and what they are told once it comes.
pub(crate) enum WaitReply {
    Append(Arc<Entry>, AppendReply),
    Batch(Vec<Arc<Entry>>, BatchReply),
    Load(LoadOutcome, LoadReply),
}

impl WaitReply {
    fn answer(self) {
        match self {
            WaitReply::Append(e, r) => {
                let _ = r.send(Ok(e));
            }
            WaitReply::Batch(e, r) => {
                let _ = r.send(Ok(e));
            }
            WaitReply::Load(o, r) => {
                let _ = r.send(Ok(o));
            }
        }
    }

    pub(crate) fn fail(self, e: ClusterError) {
        match self {
            WaitReply::Append(_, r) => {
                let _ = r.send(Err(e));
            }
            WaitReply::Batch(_, r) => {
                let _ = r.send(Err(e));
            }
            WaitReply::Load(_, r) => {
                let _ = r.send(Err(e));
            }
        }
    }
}

/// The writer's waiting clients and what has been acknowledged in its epoch.
#[derive(Default)]
pub(crate) struct Acks {
    /// Appends waiting for their acknowledgement level, by sequence.
    waiters: BTreeMap<u64, Vec<Waiter>>,
    /// The first sequence of the epoch this node writes in (0: not writing). Entries before
    /// it came from earlier epochs: the participant acknowledges only the epoch's own, so a
    /// retry answered with such an entry waits for the epoch to be established instead.
    epoch_start: u64,
    /// Highest acknowledged sequence per level in the current epoch.
    acked: BTreeMap<AckLevel, (Epoch, u64)>,
}

impl Acks {
    /// Nobody waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// `reply` waits for `sequence` to reach `level` in `epoch`.
    pub(crate) fn wait(&mut self, epoch: Epoch, level: AckLevel, sequence: u64, reply: WaitReply) {
        self.waiters.entry(sequence).or_default().push(Waiter {
            epoch,
            level,
            sequence,
            reply,
        });
    }

    /// The waiters of `sequence`, taken out (to tell them its store failed).
    pub(crate) fn take(&mut self, sequence: u64) -> Vec<Waiter> {
        self.waiters.remove(&sequence).unwrap_or_default()
    }

    /// Appends of `epoch` up to `through` reached `level`.
    pub(crate) fn acknowledged(&mut self, level: AckLevel, epoch: Epoch, through: u64) {
        self.acked.insert(level, (epoch, through));
    }

    /// This node writes from `first_sequence` on, in a new epoch: nothing of it is
    /// acknowledged yet.
    pub(crate) fn activated(&mut self, first_sequence: u64) {
        self.acked.clear();
        self.epoch_start = first_sequence;
    }

    /// This node no longer writes.
    pub(crate) fn stepped_down(&mut self) {
        self.acked.clear();
        self.epoch_start = 0;
    }

    /// Forgets what was acknowledged (the participant is rebuilt from storage).
    pub(crate) fn forget_acknowledged(&mut self) {
        self.acked.clear();
    }

    /// Answers every waiter whose level has been reached and whose entry is durable here (so
    /// a read on this node right after the answer sees it). `committed` is the participant's
    /// commit index, `durable` how much of the log is durable here.
    pub(crate) fn complete(&mut self, committed: u64, durable: u64) {
        let acked = &self.acked;
        // Entries of earlier epochs: on a quorum of this one once its record is committed
        // (the commit index reaches the epoch's start - 1), and on this node's disk already.
        let inherited = if self.epoch_start > 0 && committed + 1 >= self.epoch_start {
            self.epoch_start - 1
        } else {
            0
        };
        let reached = |w: &Waiter| {
            w.sequence <= inherited
                || acked.iter().any(|(l, (e, through))| {
                    *l >= w.level && *e == w.epoch && *through >= w.sequence
                })
        };
        let mut empty = Vec::new();
        let max = acked
            .values()
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(0)
            .max(inherited)
            .min(durable);
        for (seq, list) in self.waiters.range_mut(..=max) {
            let mut i = 0;
            while i < list.len() {
                if reached(&list[i]) {
                    list.swap_remove(i).reply.answer();
                } else {
                    i += 1;
                }
            }
            if list.is_empty() {
                empty.push(*seq);
            }
        }
        for s in empty {
            self.waiters.remove(&s);
        }
    }

    /// Tells every waiter its outcome is unknown, for `reason`.
    pub(crate) fn fail_all(&mut self, context_id: &str, reason: &str) {
        for (_, list) in std::mem::take(&mut self.waiters) {
            for w in list {
                w.reply.fail(ClusterError::OutcomeUnknown {
                    context_id: context_id.to_owned(),
                    reason: reason.to_owned(),
                });
            }
        }
    }
}
