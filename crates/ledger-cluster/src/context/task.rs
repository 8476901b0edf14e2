//! [`ContextTask`]: one context's task, its state, the mailbox loop and the idle rule (see the
//! module docs of [`crate::context`]).

use super::acks::Acks;
use super::coalesce::coalesce;
use super::messages::{ContextMsg, ContextState};
use super::pipeline::{Sequencing, Syncing};
use super::recent::RecentEntries;
use super::registry::Retire;
use crate::cluster::Cluster;
use crate::error::ClusterError;
use crate::membership::View;
use ledger_core::Entry;
use ledger_embedded::LedgerError;
use ledger_replication::{
    AppendError, Availability, Command, Participant, PersistentState, RoleState,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Most peer messages whose commands are carried out together.
const MAX_COALESCE: usize = 64;

/// One context's task: its participant and what it knows of the context's log.
pub(crate) struct ContextTask {
    pub(super) cluster: Arc<Cluster>,
    pub(super) ctx: String,
    pub(super) p: Participant,
    /// The log's size: entries stored or, on the writer, sequenced and being stored.
    pub(super) size: u64,
    /// Entries durably stored (what reads here can see).
    pub(super) durable: u64,
    /// The log's frontier, the newest entries and their idempotency keys.
    pub(super) recent: RecentEntries,
    /// Clients waiting for their acknowledgement level.
    pub(super) acks: Acks,
    /// Appends queued to the ledger, until sequenced.
    pub(super) sequencing: Sequencing,
    /// The load running on this context (its token, between `LoadBegin` and `LoadEnd`):
    /// appends are refused meanwhile.
    pub(super) loading: Option<u64>,
    /// Sequenced appends, until durable.
    pub(super) syncing: Syncing,
    /// When a client last asked for something or the log last moved (module docs, *Idle*).
    last_active: Instant,
    /// When a peer's message last arrived.
    last_peer_mail: Instant,
    /// `(size, durable, committed)` at the last tick, to notice the log moving.
    seen: (u64, u64, u64),
}

impl ContextTask {
    /// Restores the context's participant from storage and runs until the mailbox closes or
    /// the cluster stops.
    pub(crate) async fn run(
        cluster: Arc<Cluster>,
        ctx: String,
        mut rx: mpsc::Receiver<ContextMsg>,
    ) {
        let mut stop = cluster.stop_signal();
        let mut view_rx = cluster.view_feed();
        let p = Participant::new(
            ctx.clone(),
            cluster.me.clone(),
            PersistentState::default(),
            0,
            cluster.protocol_for(&ctx),
        );
        let mut t = ContextTask {
            cluster,
            ctx,
            p,
            size: 0,
            durable: 0,
            recent: RecentEntries::new(),
            acks: Acks::default(),
            sequencing: Sequencing::default(),
            loading: None,
            syncing: Syncing::default(),
            last_active: Instant::now(),
            last_peer_mail: Instant::now(),
            seen: (0, 0, 0),
        };
        let cmds = t.rebuild().await;
        t.exec(cmds).await;
        let tick_ms = (t.cluster.settings.protocol.heartbeat_ms / 2).clamp(5, 100);
        let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Some(done) = t.sequencing.next_step(), if !t.sequencing.is_empty() => {
                    t.on_local(done).await;
                }
                Some(done) = t.syncing.next_step(), if !t.syncing.is_empty() => {
                    t.on_synced(done).await;
                }
                msg = rx.recv() => match msg {
                    Some(m) => t.on_mail(m, &mut rx).await,
                    None => break,
                },
                changed = view_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let view = view_rx.borrow_and_update().clone();
                    let cmds = t.on_view(&view);
                    t.exec(cmds).await;
                }
                _ = tick.tick() => {
                    // Before the participant's own tick: a quiet follower stops before it
                    // would poll a writer that stopped.
                    if t.idle() {
                        match t.cluster.retire(&t.ctx, &mut rx) {
                            Retire::Done => return,
                            Retire::Busy => {}
                            Retire::Reopened(left) => {
                                for m in left {
                                    t.on_mail(m, &mut rx).await;
                                }
                            }
                        }
                    }
                    let cmds = t.p.tick(t.cluster.now_ms());
                    t.exec(cmds).await;
                }
            }
        }
        t.fail_waiters("the node is shutting down");
        t.drain("the node is shutting down").await;
    }

    /// One message from the mailbox, and the peer messages queued right behind it: their
    /// commands are carried out together (see [`coalesce`]), so a follower that fell behind
    /// stores everything that arrived meanwhile in one write instead of one per batch.
    async fn on_mail(&mut self, first: ContextMsg, rx: &mut mpsc::Receiver<ContextMsg>) {
        let ContextMsg::Deliver {
            from,
            message,
            keys,
        } = first
        else {
            return self.on_msg(first).await;
        };
        self.last_peer_mail = Instant::now();
        self.recent.take_keys(keys, self.size);
        let mut cmds = self.p.on_message(from, message, self.cluster.now_ms());
        let mut next = None;
        for _ in 0..MAX_COALESCE {
            match rx.try_recv() {
                Ok(ContextMsg::Deliver {
                    from,
                    message,
                    keys,
                }) => {
                    self.recent.take_keys(keys, self.size);
                    cmds.extend(self.p.on_message(from, message, self.cluster.now_ms()));
                }
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        self.exec(coalesce(cmds)).await;
        if let Some(m) = next {
            self.on_msg(m).await;
        }
    }

    async fn on_msg(&mut self, msg: ContextMsg) {
        let now = self.cluster.now_ms();
        // A client's request (a status question is not one): the task is in use.
        if !matches!(msg, ContextMsg::State { .. } | ContextMsg::Settle { .. }) {
            self.last_active = Instant::now();
        }
        match msg {
            ContextMsg::Append { entry, ack, reply } => {
                self.accept_append(entry, ack, reply, now).await;
            }
            ContextMsg::AppendBatch { items, ack, reply } => {
                self.accept_batch(items, ack, reply, now).await;
            }
            ContextMsg::Deliver {
                from,
                message,
                keys,
            } => {
                self.recent.take_keys(keys, self.size);
                let cmds = self.p.on_message(from, message, now);
                self.exec(cmds).await;
            }
            ContextMsg::State { reply } => {
                let _ = reply.send(self.state());
            }
            ContextMsg::AcceptLoss { reply } => {
                let r = match self.p.accept_loss(now) {
                    Ok(cmds) => {
                        let epoch = match self.p.role() {
                            RoleState::Claiming(c) => c.epoch().number,
                            RoleState::Writing(w) => w.epoch().number,
                            RoleState::Follower => 0,
                        };
                        tracing::warn!(context_id = %self.ctx, epoch, size = self.size, "an operator accepted the loss of this context's quorum: the surviving replicas' history becomes the context's");
                        self.cluster.metrics.loss_accepted(&self.ctx);
                        self.exec(cmds).await;
                        Ok((epoch, self.size))
                    }
                    Err(e) => Err(ClusterError::NoLossToAccept {
                        context_id: self.ctx.clone(),
                        why: e.to_string(),
                    }),
                };
                let _ = reply.send(r);
            }
            ContextMsg::Settle { reply } => {
                let cmds = self.p.settle(now);
                self.exec(cmds).await;
                let _ = reply.send(self.state());
            }
            ContextMsg::LoadBegin { token, reply } => {
                let r = match self.p.next_sequence(now) {
                    Ok(_) if self.loading.is_some() => {
                        Err(ClusterError::Ledger(LedgerError::LoadInProgress {
                            context_id: self.ctx.clone(),
                        }))
                    }
                    Ok(_) => Ok(self.p.writer().expect("writing").epoch().clone()),
                    Err(e) => Err(self.refusal(e)),
                };
                if r.is_ok() {
                    self.loading = Some(token);
                }
                let _ = reply.send(r);
            }
            ContextMsg::LoadEnd { token, loaded } => {
                if self.loading == Some(token) {
                    self.loading = None;
                }
                match loaded {
                    Some(l) => self.on_loaded(l).await,
                    None => self.reconcile_stored_size().await,
                }
            }
        }
    }

    /// Whether this task takes an append or a batch now: not while a load runs, and only as
    /// the writer able to accept (else the refusal to answer with; nothing was stored).
    pub(super) fn writable(&self, now: u64) -> Result<(), ClusterError> {
        if self.loading.is_some() {
            return Err(ClusterError::Ledger(LedgerError::LoadInProgress {
                context_id: self.ctx.clone(),
            }));
        }
        match self.p.next_sequence(now) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.refusal(e)),
        }
    }

    fn refusal(&self, e: AppendError) -> ClusterError {
        let context_id = self.ctx.clone();
        if matches!(
            e,
            AppendError::Establishing | AppendError::LeaseExpired { .. }
        ) && let Some((missing, lost)) = self.quorum_missing()
        {
            return ClusterError::QuorumUnavailable {
                context_id,
                missing,
                lost,
            };
        }
        match e {
            AppendError::Establishing => ClusterError::Establishing { context_id },
            AppendError::LeaseExpired { lease_ms } => ClusterError::LeaseExpired {
                context_id,
                lease_ms,
            },
            AppendError::NotWriter { writer } => ClusterError::NotWriter {
                node: self.cluster.me.node.to_string(),
                context_id,
                writer: writer.map_or_else(|| "unknown".into(), |w| w.to_string()),
            },
            other => ClusterError::OutcomeUnknown {
                context_id,
                reason: other.to_string(),
            },
        }
    }

    /// The members whose absence keeps this context from a quorum, and whether they left the
    /// cluster for good: what the participant's claim reports, or, for a writer, a majority of
    /// its replica set down in the current view. `None` while a quorum may still answer.
    fn quorum_missing(&self) -> Option<(Vec<String>, bool)> {
        let view = self.cluster.view();
        let names = |b: Vec<ledger_replication::NodeId>| -> Vec<String> {
            b.iter().map(ToString::to_string).collect()
        };
        match self.p.availability() {
            // Members an operator removed (gossip forgot them) while the view still names them
            // (their leave waits for this very context to settle) never come back as these
            // voters: the loss is as final as if they had left the view.
            Availability::Waiting { blocked } => {
                let lost = blocked.iter().all(|b| view.peer(b.as_str()).is_none());
                return Some((names(blocked), lost));
            }
            Availability::LostQuorum { blocked } => return Some((names(blocked), true)),
            Availability::Ok => {}
        }
        let (members, _, _) = view.placement(&self.ctx, self.cluster.replication_factor());
        let target = self.p.target();
        let down: Vec<String> = target
            .iter()
            .filter(|v| {
                !members
                    .iter()
                    .any(|m| m.voter() == **v && m.state.is_live())
            })
            .map(|v| v.node.to_string())
            .collect();
        let live = target.len() - down.len();
        (!target.is_empty() && live * 2 <= target.len()).then_some((down, false))
    }

    fn state(&self) -> ContextState {
        let (role, epoch, followers) = match self.p.role() {
            RoleState::Writing(w) => {
                let followers = self
                    .p
                    .target()
                    .iter()
                    .filter(|v| **v != self.cluster.me)
                    .map(|v| (v.node.to_string(), w.matched(&v.node).unwrap_or(0)))
                    .collect();
                ("writer", Some(w.epoch().clone()), followers)
            }
            RoleState::Claiming(_) => (
                "claiming",
                self.p.replica().history().last_epoch().cloned(),
                Vec::new(),
            ),
            RoleState::Follower => (
                "follower",
                self.p.replica().history().last_epoch().cloned(),
                Vec::new(),
            ),
        };
        let (availability, blocked) = match self.quorum_missing() {
            None => ("ok", Vec::new()),
            Some((blocked, false)) => ("waiting", blocked),
            Some((blocked, true)) => ("lost_quorum", blocked),
        };
        ContextState {
            settled: self.p.settled_view().unwrap_or(0),
            availability,
            blocked,
            size: self.durable,
            root: self.recent.frontier().root(),
            epoch,
            promised: self.p.replica().promised().cloned(),
            commit_index: self.p.replica().commit_index(),
            role,
            followers,
        }
    }

    /// Whether this task may stop (module docs, *Idle*). Also notes whether the log moved since
    /// the last tick.
    fn idle(&mut self) -> bool {
        let now = Instant::now();
        let seen = (self.size, self.durable, self.p.committed());
        if seen != self.seen {
            self.seen = seen;
            self.last_active = now;
        }
        let Some(idle) = self.cluster.settings.context_idle else {
            return false;
        };
        // The view log's task follows its writer all the time.
        if self.ctx == crate::views::VIEWS_CONTEXT {
            return false;
        }
        if self.loading.is_some()
            || !self.acks.is_empty()
            || !self.sequencing.is_empty()
            || !self.syncing.is_empty()
            || now.duration_since(self.last_active) < idle
        {
            return false;
        }
        match self.p.role() {
            RoleState::Writing(w) => w.is_quiet(),
            RoleState::Claiming(_) => false,
            RoleState::Follower => {
                let protocol = &self.cluster.settings.protocol;
                let quiet = Duration::from_millis((protocol.heartbeat_ms + protocol.poll_ms) / 2);
                self.durable >= self.p.committed()
                    && now.duration_since(self.last_peer_mail) >= quiet
            }
        }
    }

    /// The participant learns a new membership view: its context's members and the views a
    /// claim consults (see [`View::placement`]).
    pub(super) fn on_view(&mut self, view: &View) -> Vec<Command<Entry>> {
        let (members, range, _) = view.placement(&self.ctx, self.cluster.replication_factor());
        self.p
            .on_view(members.to_vec(), range, self.cluster.now_ms())
    }

    /// Metrics hook: while writing, each follower's unacknowledged entries.
    pub(super) fn report_lag(&self) {
        for (peer, matched) in self.state().followers {
            let lag = self.size.saturating_sub(matched);
            self.cluster.metrics.replica_lag(&self.ctx, &peer, lag);
        }
    }

    /// Answers every waiter whose level has been reached and whose entry is durable here.
    pub(super) fn complete_acked(&mut self) {
        self.acks.complete(self.p.committed(), self.durable);
    }

    /// Every waiter's outcome is unknown, for `reason`.
    pub(super) fn fail_waiters(&mut self, reason: &str) {
        self.acks.fail_all(&self.ctx, reason);
    }

    /// Keeps a stored (or, on the writer, sequenced) entry for shipping without a read.
    pub(super) fn remember(&mut self, e: Arc<Entry>) {
        self.recent.remember(e);
    }
}
