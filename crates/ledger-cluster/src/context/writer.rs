//! The writer's side of a context task: local appends and batches from accepted to
//! answered (queued to the ledger, handed to the participant once sequenced, acknowledged once
//! durable at their level), loads taken over as the writer's own entries, and the drain that
//! answers everything in flight when the task stops or is rebuilt.

use super::acks::WaitReply;
use super::executor::read_entries;
use super::messages::{AppendReply, BatchReply, Loaded};
use super::pipeline::{Local, LocalBatch, LocalOne, Synced};
use super::task::ContextTask;
use crate::error::ClusterError;
use ledger_core::{Entry, NewEntry};
use ledger_replication::AckLevel;
use std::sync::Arc;

impl ContextTask {
    /// An append from a client: refused unless this task may write now, else queued to the
    /// ledger (its idempotency key, if any, kept to ship with the entry).
    pub(super) async fn accept_append(
        &mut self,
        entry: NewEntry,
        ack: AckLevel,
        reply: AppendReply,
        now: u64,
    ) {
        if let Err(e) = self.writable(now) {
            let _ = reply.send(Err(e));
            return;
        }
        let key = entry.idempotency_key.clone().map(|k| {
            let fp =
                ledger_core::idempotency::fingerprint(&entry.key, &entry.payload, &entry.metadata);
            (k, fp)
        });
        match self.cluster.ledger.submit_sequenced(entry).await {
            Ok(queued) => self.sequencing.append(queued, key, ack, reply),
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// A batch from a client: refused unless this task may write now, else queued to the
    /// ledger as one command.
    pub(super) async fn accept_batch(
        &mut self,
        items: Vec<NewEntry>,
        ack: AckLevel,
        reply: BatchReply,
        now: u64,
    ) {
        if let Err(e) = self.writable(now) {
            let _ = reply.send(Err(e));
            return;
        }
        match self
            .cluster
            .ledger
            .submit_batch_sequenced(&self.ctx, items)
            .await
        {
            Ok(queued) => self.sequencing.batch(queued, ack, reply),
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// Local appends that were sequenced (or refused), in submission order: the fresh ones are
    /// shipped at once, while the ledger makes them durable.
    pub(super) async fn on_local(&mut self, done: Vec<Local>) {
        let mut fresh: Vec<Entry> = Vec::new();
        let mut new_waiters = Vec::new();
        let mut stray = false;
        for local in done {
            let LocalOne {
                entry,
                key,
                durable,
                level,
                reply,
            } = match local {
                Local::One(one) => one,
                Local::Batch(b) => {
                    stray |= !self.on_local_batch(b, &mut fresh, &mut new_waiters);
                    continue;
                }
            };
            let Some(entry) = entry else {
                self.syncing.refused(durable, reply);
                continue;
            };
            let next = self.size + 1 + fresh.len() as u64;
            if entry.sequence < next {
                // An idempotent retry answered with the entry stored earlier.
                self.wait_ack(entry, level, reply);
            } else if entry.sequence == next {
                let sequence = entry.sequence;
                if let Some(k) = key {
                    self.recent.record_key(sequence, k);
                }
                self.syncing.entry(sequence, durable);
                fresh.push((*entry).clone());
                new_waiters.push((sequence, level, WaitReply::Append(entry, reply)));
            } else {
                stray = true;
                let _ = reply.send(Err(ClusterError::OutcomeUnknown {
                    context_id: self.ctx.clone(),
                    reason: format!(
                        "sequence {} stored where {next} was expected",
                        entry.sequence
                    ),
                }));
            }
        }
        if stray {
            // Storage holds entries this task never took: start again from what it holds.
            tracing::error!(context_id = %self.ctx, size = self.size, "an append was stored past the task's log; rebuilding the context's replication state from storage");
            for (_, _, reply) in new_waiters {
                reply.fail(ClusterError::OutcomeUnknown {
                    context_id: self.ctx.clone(),
                    reason: "the writer's log was rebuilt from storage".into(),
                });
            }
            let cmds = self.rebuild().await;
            self.exec(cmds).await;
            return;
        }
        if fresh.is_empty() {
            return;
        }
        for e in &fresh {
            self.remember(Arc::new(e.clone()));
        }
        self.size += fresh.len() as u64;
        let epoch = self.p.writer().map(|w| w.epoch().clone());
        match (self.p.append(fresh, self.cluster.now_ms()), epoch) {
            (Ok(cmds), Some(epoch)) => {
                for (sequence, level, reply) in new_waiters {
                    self.acks.wait(epoch.clone(), level, sequence, reply);
                }
                self.complete_acked();
                self.exec(cmds).await;
            }
            (r, _) => {
                let reason = match r {
                    Err(e) => format!("the writer stopped before replicating it: {e}"),
                    Ok(_) => "the writer stopped before replicating it".into(),
                };
                for (_, _, reply) in new_waiters {
                    reply.fail(ClusterError::OutcomeUnknown {
                        context_id: self.ctx.clone(),
                        reason: reason.clone(),
                    });
                }
                let cmds = self.rebuild().await;
                self.exec(cmds).await;
            }
        }
    }

    /// One sequenced (or refused) local batch, in submission order with the appends around it:
    /// its entries join `fresh` (shipped at once) and it waits, as a whole, for its last
    /// entry's acknowledgement. False if it was stored where the task's log does not end.
    fn on_local_batch(
        &mut self,
        b: LocalBatch,
        fresh: &mut Vec<Entry>,
        new_waiters: &mut Vec<(u64, AckLevel, WaitReply)>,
    ) -> bool {
        let LocalBatch {
            entries,
            durable,
            level,
            reply,
        } = b;
        let Some(entries) = entries.filter(|e| !e.is_empty()) else {
            self.syncing.refused_batch(durable, reply);
            return true;
        };
        let next = self.size + 1 + fresh.len() as u64;
        if entries[0].sequence != next {
            let _ = reply.send(Err(ClusterError::OutcomeUnknown {
                context_id: self.ctx.clone(),
                reason: format!(
                    "batch stored from sequence {} where {next} was expected",
                    entries[0].sequence
                ),
            }));
            return false;
        }
        let last = entries[entries.len() - 1].sequence;
        self.syncing.batch(last, durable);
        fresh.extend(entries.iter().map(|e| (**e).clone()));
        new_waiters.push((last, level, WaitReply::Batch(entries, reply)));
        true
    }

    /// Local appends whose store completed, in submission order: the participant learns how
    /// much of its own log is durable.
    pub(super) async fn on_synced(&mut self, done: Vec<Synced>) {
        let before = self.durable;
        let mut failed = false;
        for s in done {
            failed |= !self.synced(s);
        }
        if failed {
            let cmds = self.rebuild().await;
            self.exec(cmds).await;
        } else if self.durable > before {
            self.complete_acked();
            let cmds = self.p.on_local_durable(self.durable, self.cluster.now_ms());
            self.exec(cmds).await;
        }
    }

    /// Records one completed store; false if it failed (its waiter is answered with why).
    fn synced(&mut self, s: Synced) -> bool {
        match s {
            Synced::Refused { result, reply } => {
                let _ = reply.send(result.map_err(ClusterError::from));
                true
            }
            Synced::RefusedBatch { result, reply } => {
                let _ = reply.send(result.map_err(ClusterError::from));
                true
            }
            Synced::Entry {
                result: Ok(_),
                sequence,
            } => {
                self.durable = self.durable.max(sequence);
                true
            }
            Synced::Entry {
                result: Err(e),
                sequence,
            } => {
                tracing::error!(context_id = %self.ctx, sequence, error = %e, "the writer could not store its own entry");
                let reason = e.to_string();
                let mut first = Some(e);
                for w in self.acks.take(sequence) {
                    let err = first.take().map_or_else(
                        || ClusterError::OutcomeUnknown {
                            context_id: self.ctx.clone(),
                            reason: reason.clone(),
                        },
                        ClusterError::from,
                    );
                    w.reply.fail(err);
                }
                false
            }
        }
    }

    /// A load stored entries through the ledger (outside this task's appends): the writer
    /// takes them as its own next entries, ships them like appends, and answers the load once
    /// they are acknowledged at `level`. If the context moved on meanwhile (another epoch, a
    /// size that does not line up), the load's outcome is unknown to its caller and the
    /// participant is rebuilt from storage, where the loaded entries are (as after a crash).
    pub(super) async fn on_loaded(&mut self, loaded: Loaded) {
        let Loaded {
            epoch,
            outcome,
            ack: level,
            reply,
        } = loaded;
        if outcome.entries_restored == 0 {
            let _ = reply.send(Ok(outcome));
            return;
        }
        let first = outcome.latest_sequence - outcome.entries_restored + 1;
        let same_epoch = self.p.writer().is_some_and(|w| *w.epoch() == epoch);
        if !same_epoch || self.size + 1 != first || !self.sequencing.is_empty() {
            let _ = reply.send(Err(ClusterError::OutcomeUnknown {
                context_id: self.ctx.clone(),
                reason: "the context's writer changed while the load ran; the loaded entries are kept only if the new writer's history has them".into(),
            }));
            let cmds = self.rebuild().await;
            self.exec(cmds).await;
            return;
        }
        let mut after = self.size;
        while after < outcome.latest_sequence {
            let (entries, _) = match read_entries(
                &self.cluster,
                &self.ctx,
                after,
                outcome.latest_sequence,
            )
            .await
            {
                Ok(r) if !r.0.is_empty() => r,
                other => {
                    let why = other.err().unwrap_or_else(|| "no entries".into());
                    let _ = reply.send(Err(ClusterError::OutcomeUnknown {
                        context_id: self.ctx.clone(),
                        reason: format!("the loaded entries could not be read back: {why}"),
                    }));
                    let cmds = self.rebuild().await;
                    self.exec(cmds).await;
                    return;
                }
            };
            after = entries.last().map_or(after, |e| e.sequence);
            for e in &entries {
                self.remember(Arc::new(e.clone()));
            }
            self.size = after;
            self.durable = after;
            match self.p.append(entries, self.cluster.now_ms()) {
                Ok(cmds) => self.exec(cmds).await,
                Err(e) => {
                    let _ = reply.send(Err(ClusterError::OutcomeUnknown {
                        context_id: self.ctx.clone(),
                        reason: format!("the writer stopped before replicating the load: {e}"),
                    }));
                    let cmds = self.rebuild().await;
                    self.exec(cmds).await;
                    return;
                }
            }
        }
        let cmds = self.p.on_local_durable(self.durable, self.cluster.now_ms());
        self.exec(cmds).await;
        self.wait_for_ack(
            outcome.latest_sequence,
            level,
            WaitReply::Load(outcome, reply),
        );
    }

    /// A load ended without telling this task what it stored (it failed, or it was abandoned
    /// before its outcome reached the task). A load stores after everything sequenced before
    /// it, so storage holding more than this task's size means the load stored entries this
    /// task never took: the participant is rebuilt from storage, which has them (as after a
    /// crash), instead of sequencing later appends where they do not line up.
    pub(super) async fn reconcile_stored_size(&mut self) {
        let stored = match self.cluster.ledger.current_sequence(&self.ctx).await {
            Ok(stored) if stored <= self.size => return,
            Ok(stored) => stored.to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        tracing::warn!(context_id = %self.ctx, size = self.size, stored, "a load ended unseen with entries stored; rebuilding the context's replication state from storage");
        let cmds = self.rebuild().await;
        self.exec(cmds).await;
    }

    /// Registers an already-stored entry's acknowledgement, or answers at once if reached.
    fn wait_ack(&mut self, entry: Arc<Entry>, level: AckLevel, reply: AppendReply) {
        self.wait_for_ack(entry.sequence, level, WaitReply::Append(entry, reply));
    }

    /// Answers `reply` once `sequence` is acknowledged at `level` in the current epoch.
    fn wait_for_ack(&mut self, sequence: u64, level: AckLevel, reply: WaitReply) {
        let Some(epoch) = self.p.writer().map(|w| w.epoch().clone()) else {
            reply.fail(ClusterError::OutcomeUnknown {
                context_id: self.ctx.clone(),
                reason: "the writer stopped".into(),
            });
            return;
        };
        self.acks.wait(epoch, level, sequence, reply);
        self.complete_acked();
    }

    /// Waits for every append in flight to be sequenced and stored (or refused), answering
    /// those still waiting with "outcome unknown" for `reason`.
    pub(super) async fn drain(&mut self, reason: &str) {
        let unknown = |reply: AppendReply, ctx: &str| {
            let _ = reply.send(Err(ClusterError::OutcomeUnknown {
                context_id: ctx.to_owned(),
                reason: reason.to_owned(),
            }));
        };
        while let Some(l) = self.sequencing.next().await {
            match l {
                Local::One(l) => {
                    let _ = l.durable.await;
                    unknown(l.reply, &self.ctx);
                }
                Local::Batch(b) => {
                    let _ = b.durable.await;
                    let _ = b.reply.send(Err(ClusterError::OutcomeUnknown {
                        context_id: self.ctx.clone(),
                        reason: reason.to_owned(),
                    }));
                }
            }
        }
        self.finish_syncing().await;
        self.fail_waiters(reason);
    }

    /// Waits until every sequenced append of this writer is durable (or failed).
    pub(super) async fn finish_syncing(&mut self) {
        while let Some(s) = self.syncing.next().await {
            self.synced(s);
        }
    }
}
