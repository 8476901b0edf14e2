//! The command executor of a context task: carries out what the participant returns, in
//! order, against the embedded ledger (stores, quarantines, saved state) and the peer links
//! (messages, shipped batches), and rebuilds the participant from storage when a command
//! cannot be carried out.

use super::recent::MAX_BATCH_BYTES;
use super::task::ContextTask;
use crate::cluster::Cluster;
use crate::wire;
use ledger_core::{Entry, Hash};
use ledger_embedded::ReadQuery;
use ledger_replication::{Command, Message, Participant, PersistentState};
use std::sync::Arc;

impl ContextTask {
    /// Carries out `cmds` in order; on a failure rebuilds from storage and carries out what
    /// the rebuilt participant asks (a few times at most).
    pub(super) async fn exec(&mut self, mut cmds: Vec<Command<Entry>>) {
        for _ in 0..3 {
            match self.try_exec(cmds).await {
                Ok(()) => {
                    self.cluster
                        .publish_committed(&self.ctx, self.p.committed().min(self.durable));
                    if !self.acks.is_empty() {
                        self.complete_acked();
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(context_id = %self.ctx, error = %e, "replication step failed; rebuilding the context's replication state from storage");
                    self.fail_waiters(&format!("replication failed: {e}"));
                    cmds = self.rebuild().await;
                }
            }
        }
    }

    async fn try_exec(&mut self, cmds: Vec<Command<Entry>>) -> Result<(), String> {
        for c in cmds {
            match c {
                Command::Send { to, message } => {
                    let env = wire::encode(&self.ctx, &self.cluster.me, &message);
                    self.cluster.send(to.as_str(), env);
                }
                Command::SendEntries {
                    to,
                    header,
                    after,
                    upto,
                } => {
                    let (entries, root) = match self.recent.cached(after, upto, self.size) {
                        Some(r) => r,
                        None => {
                            self.cluster.metrics.catch_up();
                            read_entries(&self.cluster, &self.ctx, after, upto).await?
                        }
                    };
                    let message = Message::Entries(ledger_replication::Entries {
                        header,
                        prev: after,
                        entries,
                        root,
                    });
                    let env = wire::encode(&self.ctx, &self.cluster.me, &message);
                    let env = wire::with_keys(env, self.recent.keys_between(after, upto));
                    self.cluster.send(to.as_str(), env);
                }
                Command::Quarantine { from_sequence } => self.quarantine(from_sequence).await?,
                Command::SaveState(state) => {
                    let bytes = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
                    self.cluster
                        .ledger
                        .save_replication_state(&self.ctx, bytes)
                        .await
                        .map_err(|e| format!("cannot save the replication state: {e}"))?;
                }
                Command::Append {
                    entries,
                    expected_root,
                } => self.store(entries, expected_root).await?,
                Command::Acknowledged {
                    epoch,
                    level,
                    through,
                } => {
                    self.acks.acknowledged(level, epoch, through);
                    self.complete_acked();
                    self.report_lag();
                }
                Command::Activated {
                    epoch,
                    first_sequence,
                    quorum,
                } => {
                    self.acks.activated(first_sequence);
                    self.cluster.metrics.epoch_change();
                    tracing::info!(context_id = %self.ctx, %epoch, first_sequence, voters = quorum.voters().len(), "writing the context");
                }
                Command::SteppedDown { epoch, reason } => {
                    tracing::info!(context_id = %self.ctx, %epoch, ?reason, "stopped writing the context");
                    self.fail_waiters(&format!("the writer stepped down ({reason:?})"));
                    self.acks.stepped_down();
                    // The protocol's rule: the writer's own stores finish before anything
                    // after a step-down (a promise, a claim) is carried out.
                    self.finish_syncing().await;
                    self.cluster.metrics.forget_lag(&self.ctx);
                }
            }
        }
        Ok(())
    }

    /// Stores a batch (a follower's, or a claim's catch-up) through `Ledger::apply`. Entries
    /// this node stored already (its own appends as writer) are skipped.
    async fn store(&mut self, entries: Vec<Entry>, root: Option<Hash>) -> Result<(), String> {
        let Some(last) = entries.last().map(|e| e.sequence) else {
            return Ok(());
        };
        if last <= self.size {
            return Ok(());
        }
        let before = self.size;
        let keys = self.recent.keys_between(before, last);
        let applied = self
            .cluster
            .ledger
            .apply_with_keys(&self.ctx, entries.clone(), root, keys)
            .await
            .map_err(|e| format!("cannot store entries up to {last}: {e}"))?;
        for e in entries.into_iter().filter(|e| e.sequence > before) {
            self.remember(Arc::new(e));
        }
        self.size = applied.head.size();
        self.durable = self.size;
        let frontier = self.recent.frontier();
        if frontier.size() != self.size || frontier.root() != applied.head.root() {
            self.recent.reset(applied.head.frontier.clone());
        }
        Ok(())
    }

    async fn quarantine(&mut self, from: u64) -> Result<(), String> {
        let reason = format!(
            "diverged from the writer's history (epoch {})",
            self.p
                .replica()
                .promised()
                .map_or_else(|| "unknown".into(), |e| e.to_string())
        );
        let info = self
            .cluster
            .ledger
            .quarantine(&self.ctx, from, reason)
            .await
            .map_err(|e| format!("cannot quarantine from {from}: {e}"))?;
        if let Some(info) = info {
            tracing::warn!(context_id = %self.ctx, from_sequence = from, count = info.count, id = info.id, "quarantined a divergent suffix: kept aside, never served");
            self.cluster.count_quarantine();
        }
        self.reload_tail().await
    }

    /// Re-reads the stored size and frontier (after a quarantine or a rebuild).
    async fn reload_tail(&mut self) -> Result<(), String> {
        let ledger = &self.cluster.ledger;
        self.size = ledger
            .current_sequence(&self.ctx)
            .await
            .map_err(|e| e.to_string())?;
        self.durable = self.size;
        let frontier = ledger
            .frontier_at(&self.ctx, self.size)
            .await
            .map_err(|e| e.to_string())?;
        self.recent.reset(frontier);
        Ok(())
    }

    /// A fresh participant from what storage holds (the state saved with the head, the number
    /// of stored entries), given the current membership view. Returns its first commands.
    pub(super) async fn rebuild(&mut self) -> Vec<Command<Entry>> {
        // Appends in flight finish first, so the stored size is final.
        self.drain("the context's replication state was rebuilt")
            .await;
        self.acks.forget_acknowledged();
        if let Err(e) = self.reload_tail().await {
            tracing::error!(context_id = %self.ctx, error = %e, "cannot read the context's stored tail");
            return Vec::new();
        }
        let state = match self.cluster.ledger.replication_state(&self.ctx) {
            Ok(Some(bytes)) => match serde_json::from_slice::<PersistentState>(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(context_id = %self.ctx, error = %e, "the stored replication state is unreadable; starting from none (this node's promises for the context are forgotten)");
                    PersistentState::default()
                }
            },
            Ok(None) => PersistentState::default(),
            Err(e) => {
                tracing::error!(context_id = %self.ctx, error = %e, "cannot read the replication state");
                PersistentState::default()
            }
        };
        self.p = Participant::new(
            self.ctx.clone(),
            self.cluster.me.clone(),
            state,
            self.size,
            self.cluster.protocol_for(&self.ctx),
        );
        let view = self.cluster.view();
        self.on_view(&view)
    }
}

/// Entries `after + 1 ..= upto` read from storage (fewer if they exceed a batch's bytes) and
/// the root after the last one.
pub(super) async fn read_entries(
    cluster: &Cluster,
    ctx: &str,
    after: u64,
    upto: u64,
) -> Result<(Vec<Entry>, Option<Hash>), String> {
    let ledger = &cluster.ledger;
    let r = ledger
        .read(
            ctx,
            ReadQuery {
                after_sequence: after,
                key: None,
                limit: Some(usize::try_from(upto - after).unwrap_or(usize::MAX)),
                max_bytes: Some(MAX_BATCH_BYTES),
                up_to: Some(upto),
            },
        )
        .await
        .map_err(|e| format!("cannot read entries {after}..{upto}: {e}"))?;
    let Some(last) = r.entries.last().map(|e| e.sequence) else {
        return Ok((Vec::new(), None));
    };
    let root = ledger
        .tree_state(ctx, last)
        .await
        .map_err(|e| format!("cannot read the root at {last}: {e}"))?
        .root;
    Ok((r.entries, Some(root)))
}
