//! One task per context this node takes part in: it owns the context's replication
//! [`Participant`], feeds it appends, peer messages, membership views and clock ticks, and
//! carries out the commands it returns, in order, against the embedded ledger and the peer
//! links.
//!
//! - **Writer.** An append is checked against the participant (is this node the active
//!   writer, within its lease?), then sequenced by the embedded ledger like any local append
//!   (ids, clocks, hashes, group commit, watchers). Once durable, in sequence order, it is
//!   handed to the participant, which ships it to the followers and acknowledges it at the
//!   requested level (`Command::Acknowledged`). The participant's own `Append` of those
//!   entries is skipped: they are stored already.
//! - **Follower.** Batches from the writer go through `Ledger::apply` (content hashes, clocks
//!   and the writer's root verified, then the normal group commit, so watchers here see them
//!   like local appends); the cursor back to the writer goes out only after that.
//! - **Failure.** If a command cannot be carried out (a batch fails verification, storage
//!   fails), the rest is dropped, waiting appends end with "outcome unknown", and the
//!   participant is rebuilt from storage, exactly as after a restart.
//!
//! The mailbox is bounded: a peer stream that delivers faster than the context stores waits,
//! so a slow context slows only its own stream's reader, never the writer's memory.

use super::Cluster;
use super::error::ClusterError;
use super::wire;
use futures::FutureExt;
use futures::stream::{FuturesOrdered, StreamExt};
use ledger_core::{Entry, Frontier, Hash, NewEntry};
use ledger_embedded::{LedgerError, ReadQuery};
use ledger_replication::{
    AckLevel, AppendError, Command, Epoch, Message, Participant, PersistentState, RoleState, Voter,
};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Entries (and bytes) of the newest entries kept in memory for shipping without a read.
const RECENT_ENTRIES: usize = 2_048;
const RECENT_BYTES: usize = 8 << 20;
/// Most entries handed to the participant in one step.
const MAX_STEP: usize = 512;
/// Most bytes read from storage for one shipped batch.
const MAX_BATCH_BYTES: usize = 4 << 20;

pub(crate) type AppendReply = oneshot::Sender<Result<Arc<Entry>, ClusterError>>;

/// What a context task is asked to do.
pub(crate) enum ActorMsg {
    Append {
        entry: NewEntry,
        ack: AckLevel,
        reply: AppendReply,
    },
    Deliver {
        from: Voter,
        message: Message<Entry>,
    },
    /// Answer once the context holds `sequence` durably.
    WaitFor {
        sequence: u64,
        reply: oneshot::Sender<()>,
    },
    State {
        reply: oneshot::Sender<ContextState>,
    },
}

/// What this node holds of a context and does for it.
#[derive(Clone, Debug)]
pub struct ContextState {
    pub size: u64,
    pub root: Hash,
    /// The epoch of the last stored entry (or the writer's, while writing).
    pub epoch: Option<Epoch>,
    pub promised: Option<Epoch>,
    pub commit_index: u64,
    pub role: &'static str,
    /// While writing: each follower's durable, matching position.
    pub followers: Vec<(String, u64)>,
}

type LocalFuture = Pin<Box<dyn Future<Output = Local> + Send>>;

/// A local append that became durable (or failed), in submission order.
struct Local {
    result: Result<Arc<Entry>, LedgerError>,
    level: AckLevel,
    reply: AppendReply,
}

struct Waiter {
    epoch: Epoch,
    level: AckLevel,
    entry: Arc<Entry>,
    reply: AppendReply,
}

pub(crate) struct Actor {
    cluster: Arc<Cluster>,
    ctx: String,
    p: Participant,
    /// Entries durably stored (the ledger's size for this context).
    stored: u64,
    frontier: Frontier,
    /// The newest stored entries, with the root after each.
    recent: VecDeque<(Arc<Entry>, Hash)>,
    recent_bytes: usize,
    /// Appends waiting for their acknowledgement level, by sequence.
    waiters: BTreeMap<u64, Vec<Waiter>>,
    /// Highest acknowledged sequence per level in the current epoch.
    acked: BTreeMap<AckLevel, (Epoch, u64)>,
    local: FuturesOrdered<LocalFuture>,
    seq_waiters: Vec<(u64, oneshot::Sender<()>)>,
}

impl Actor {
    /// Restores the context's participant from storage and runs until the mailbox closes or
    /// the cluster stops.
    pub(crate) async fn run(cluster: Arc<Cluster>, ctx: String, mut rx: mpsc::Receiver<ActorMsg>) {
        let mut stop = cluster.stop_signal();
        let mut view_rx = cluster.view_feed();
        let p = Participant::new(
            ctx.clone(),
            cluster.me.clone(),
            PersistentState::default(),
            0,
            cluster.settings.protocol.clone(),
        );
        let mut a = Actor {
            cluster,
            ctx,
            p,
            stored: 0,
            frontier: Frontier::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            waiters: BTreeMap::new(),
            acked: BTreeMap::new(),
            local: FuturesOrdered::new(),
            seq_waiters: Vec::new(),
        };
        let cmds = a.rebuild().await;
        a.exec(cmds).await;
        let tick_ms = (a.cluster.settings.protocol.heartbeat_ms / 2).clamp(5, 100);
        let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Some(first) = a.local.next(), if !a.local.is_empty() => {
                    let mut done = vec![first];
                    while done.len() < MAX_STEP {
                        match a.local.next().now_or_never() {
                            Some(Some(l)) => done.push(l),
                            _ => break,
                        }
                    }
                    a.on_local(done).await;
                }
                msg = rx.recv() => match msg {
                    Some(m) => a.on_msg(m).await,
                    None => break,
                },
                changed = view_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let members = view_rx.borrow_and_update().members.to_vec();
                    let cmds = a.p.on_membership(members, a.cluster.now_ms());
                    a.exec(cmds).await;
                }
                _ = tick.tick() => {
                    let cmds = a.p.tick(a.cluster.now_ms());
                    a.exec(cmds).await;
                }
            }
        }
        a.fail_waiters("the node is shutting down");
        while let Some(l) = a.local.next().await {
            let _ = l.reply.send(Err(ClusterError::OutcomeUnknown {
                context_id: a.ctx.clone(),
                reason: "the node is shutting down".into(),
            }));
        }
    }

    async fn on_msg(&mut self, msg: ActorMsg) {
        let now = self.cluster.now_ms();
        match msg {
            ActorMsg::Append { entry, ack, reply } => {
                if let Err(e) = self.p.next_sequence(now) {
                    let _ = reply.send(Err(self.refusal(e)));
                    return;
                }
                match self.cluster.ledger.submit(entry).await {
                    Ok(pending) => self.local.push_back(Box::pin(async move {
                        Local {
                            result: pending.await,
                            level: ack,
                            reply,
                        }
                    })),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            ActorMsg::Deliver { from, message } => {
                let cmds = self.p.on_message(from, message, now);
                self.exec(cmds).await;
            }
            ActorMsg::WaitFor { sequence, reply } => {
                if self.stored >= sequence {
                    let _ = reply.send(());
                } else {
                    self.seq_waiters.push((sequence, reply));
                }
            }
            ActorMsg::State { reply } => {
                let _ = reply.send(self.state());
            }
        }
    }

    fn refusal(&self, e: AppendError) -> ClusterError {
        let context_id = self.ctx.clone();
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
        ContextState {
            size: self.stored,
            root: self.frontier.root(),
            epoch,
            promised: self.p.replica().promised().cloned(),
            commit_index: self.p.replica().commit_index(),
            role,
            followers,
        }
    }

    /// Metrics hook: while writing, each follower's unacknowledged entries.
    fn report_lag(&self) {
        for (peer, matched) in self.state().followers {
            let lag = self.stored.saturating_sub(matched);
            self.cluster.metrics.replica_lag(&self.ctx, &peer, lag);
        }
    }

    /// Local appends that became durable, in sequence order.
    async fn on_local(&mut self, done: Vec<Local>) {
        let mut fresh: Vec<Entry> = Vec::new();
        let mut new_waiters = Vec::new();
        for Local {
            result,
            level,
            reply,
        } in done
        {
            let entry = match result {
                Ok(e) => e,
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                    continue;
                }
            };
            let next = self.stored + 1 + fresh.len() as u64;
            if entry.sequence < next {
                // An idempotent retry answered with the entry stored earlier.
                self.wait_ack(entry, level, reply);
            } else if entry.sequence == next {
                fresh.push((*entry).clone());
                new_waiters.push((entry, level, reply));
            } else {
                let _ = reply.send(Err(ClusterError::OutcomeUnknown {
                    context_id: self.ctx.clone(),
                    reason: format!(
                        "sequence {} stored where {next} was expected",
                        entry.sequence
                    ),
                }));
            }
        }
        if fresh.is_empty() {
            return;
        }
        for e in &fresh {
            self.remember(Arc::new(e.clone()));
        }
        self.stored += fresh.len() as u64;
        self.wake_seq_waiters();
        let epoch = self.p.writer().map(|w| w.epoch().clone());
        match (self.p.append(fresh, self.cluster.now_ms()), epoch) {
            (Ok(cmds), Some(epoch)) => {
                for (entry, level, reply) in new_waiters {
                    self.waiters
                        .entry(entry.sequence)
                        .or_default()
                        .push(Waiter {
                            epoch: epoch.clone(),
                            level,
                            entry,
                            reply,
                        });
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
                    let _ = reply.send(Err(ClusterError::OutcomeUnknown {
                        context_id: self.ctx.clone(),
                        reason: reason.clone(),
                    }));
                }
                let cmds = self.rebuild().await;
                self.exec(cmds).await;
            }
        }
    }

    /// Registers an already-stored entry's acknowledgement, or answers at once if reached.
    fn wait_ack(&mut self, entry: Arc<Entry>, level: AckLevel, reply: AppendReply) {
        let Some(epoch) = self.p.writer().map(|w| w.epoch().clone()) else {
            let _ = reply.send(Err(ClusterError::OutcomeUnknown {
                context_id: self.ctx.clone(),
                reason: "the writer stopped".into(),
            }));
            return;
        };
        self.waiters
            .entry(entry.sequence)
            .or_default()
            .push(Waiter {
                epoch,
                level,
                entry,
                reply,
            });
        self.complete_acked();
    }

    /// Answers every waiter whose level has been reached.
    fn complete_acked(&mut self) {
        let acked = &self.acked;
        let reached = |w: &Waiter| {
            acked.iter().any(|(l, (e, through))| {
                *l >= w.level && *e == w.epoch && *through >= w.entry.sequence
            })
        };
        let mut empty = Vec::new();
        let max = acked.values().map(|(_, t)| *t).max().unwrap_or(0);
        for (seq, list) in self.waiters.range_mut(..=max) {
            let mut i = 0;
            while i < list.len() {
                if reached(&list[i]) {
                    let w = list.swap_remove(i);
                    let _ = w.reply.send(Ok(w.entry));
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

    fn fail_waiters(&mut self, reason: &str) {
        for (_, list) in std::mem::take(&mut self.waiters) {
            for w in list {
                let _ = w.reply.send(Err(ClusterError::OutcomeUnknown {
                    context_id: self.ctx.clone(),
                    reason: reason.to_owned(),
                }));
            }
        }
    }

    fn wake_seq_waiters(&mut self) {
        let stored = self.stored;
        let (reached, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.seq_waiters)
            .into_iter()
            .partition(|(s, _)| *s <= stored);
        self.seq_waiters = waiting;
        for (_, reply) in reached {
            let _ = reply.send(());
        }
    }

    /// Keeps a stored entry (and the root after it) for shipping without a read.
    fn remember(&mut self, e: Arc<Entry>) {
        self.frontier.push_leaf(e.content_hash);
        self.recent_bytes += e.encoded_len();
        self.recent.push_back((e, self.frontier.root()));
        while self.recent.len() > RECENT_ENTRIES || self.recent_bytes > RECENT_BYTES {
            match self.recent.pop_front() {
                Some((old, _)) => self.recent_bytes -= old.encoded_len(),
                None => break,
            }
        }
    }

    /// Carries out `cmds` in order; on a failure rebuilds from storage and carries out what
    /// the rebuilt participant asks (a few times at most).
    async fn exec(&mut self, mut cmds: Vec<Command<Entry>>) {
        for _ in 0..3 {
            match self.try_exec(cmds).await {
                Ok(()) => return,
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
                    let (entries, root) = match self.cached(after, upto) {
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
                    self.acked.insert(level, (epoch, through));
                    self.complete_acked();
                    self.report_lag();
                }
                Command::Activated {
                    epoch,
                    first_sequence,
                    quorum,
                } => {
                    self.acked.clear();
                    self.cluster.metrics.epoch_change();
                    tracing::info!(context_id = %self.ctx, %epoch, first_sequence, voters = quorum.voters().len(), "writing the context");
                }
                Command::SteppedDown { epoch, reason } => {
                    tracing::info!(context_id = %self.ctx, %epoch, ?reason, "stopped writing the context");
                    self.fail_waiters(&format!("the writer stepped down ({reason:?})"));
                    self.acked.clear();
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
        if last <= self.stored {
            return Ok(());
        }
        let before = self.stored;
        let applied = self
            .cluster
            .ledger
            .apply(&self.ctx, entries.clone(), root)
            .await
            .map_err(|e| format!("cannot store entries up to {last}: {e}"))?;
        for e in entries.into_iter().filter(|e| e.sequence > before) {
            self.remember(Arc::new(e));
        }
        self.stored = applied.head.size();
        if self.frontier.size() != self.stored || self.frontier.root() != applied.head.root() {
            self.frontier = applied.head.frontier.clone();
            self.recent.clear();
            self.recent_bytes = 0;
        }
        self.wake_seq_waiters();
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
        self.stored = ledger
            .current_sequence(&self.ctx)
            .await
            .map_err(|e| e.to_string())?;
        self.frontier = ledger
            .frontier_at(&self.ctx, self.stored)
            .await
            .map_err(|e| e.to_string())?;
        self.recent.clear();
        self.recent_bytes = 0;
        Ok(())
    }

    /// Entries `after + 1 ..= upto` (fewer if they exceed a batch's bytes) and the root after
    /// the last one, from memory if it still holds them.
    fn cached(&self, after: u64, upto: u64) -> Option<(Vec<Entry>, Option<Hash>)> {
        if upto <= after {
            return Some((Vec::new(), None));
        }
        if let Some((first, _)) = self.recent.front()
            && first.sequence <= after + 1
            && upto <= self.stored
        {
            let skip = usize::try_from(after + 1 - first.sequence).unwrap_or(usize::MAX);
            let take = usize::try_from(upto - after).unwrap_or(usize::MAX);
            let mut bytes = 0;
            let mut out = Vec::new();
            let mut root = None;
            for (e, r) in self.recent.iter().skip(skip).take(take) {
                bytes += e.encoded_len();
                if !out.is_empty() && bytes > MAX_BATCH_BYTES {
                    break;
                }
                out.push((**e).clone());
                root = Some(*r);
            }
            return Some((out, root));
        }
        None
    }

    /// A fresh participant from what storage holds (the state saved with the head, the number
    /// of stored entries), given the current membership view. Returns its first commands.
    async fn rebuild(&mut self) -> Vec<Command<Entry>> {
        // Appends in flight finish first, so the stored size is final.
        while let Some(l) = self.local.next().await {
            let _ = l.reply.send(Err(ClusterError::OutcomeUnknown {
                context_id: self.ctx.clone(),
                reason: "the context's replication state was rebuilt".into(),
            }));
        }
        self.acked.clear();
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
            self.stored,
            self.cluster.settings.protocol.clone(),
        );
        let members = self.cluster.view().members.to_vec();
        self.p.on_membership(members, self.cluster.now_ms())
    }
}

/// Entries `after + 1 ..= upto` read from storage (fewer if they exceed a batch's bytes) and
/// the root after the last one.
async fn read_entries(
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
