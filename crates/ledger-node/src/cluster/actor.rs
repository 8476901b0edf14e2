//! One task per context this node takes part in: it owns the context's replication
//! [`Participant`], feeds it appends, peer messages, membership views and clock ticks, and
//! carries out the commands it returns, in order, against the embedded ledger and the peer
//! links.
//!
//! - **Writer.** An append is checked against the participant (is this node the active
//!   writer, within its lease?), then sequenced by the embedded ledger like any local append
//!   (ids, clocks, hashes, group commit, watchers). As soon as it is *sequenced*, in sequence
//!   order, it is handed to the participant, which ships it to the followers while the
//!   writer's own disk syncs it (the participant's own `Append` of those entries is skipped:
//!   the ledger is storing them already). When the local sync completes the participant is
//!   told (`on_local_durable`): the writer counts itself for acknowledgements only from then.
//!   Appends are answered when their level is reached (`Command::Acknowledged`). A batch
//!   ([`ActorMsg::AppendBatch`]) is sequenced by the ledger in one step, its entries handed
//!   on with the appends around it, and it is answered once its last entry's level is reached.
//! - **Follower.** Batches from the writer go through `Ledger::apply` (content hashes, clocks
//!   and the writer's root verified, then the normal group commit, so watchers here see them
//!   like local appends); the cursor back to the writer goes out only after that.
//! - **Failure.** If a command cannot be carried out (a batch fails verification, storage
//!   fails), the rest is dropped, waiting appends end with "outcome unknown", and the
//!   participant is rebuilt from storage, exactly as after a restart.
//!
//! - **Idle.** A task with nothing to do stops, so a node's background work does not grow with
//!   every context it ever served (each running task ticks, and a writer heartbeats every
//!   follower several times a second). After `context_idle_ms` without a client request and
//!   without the log moving, with nothing in flight: a writer stops once it is quiet (every
//!   entry committed and held by every replica it ships to: [`ledger_replication::Writer::
//!   is_quiet`]); a follower stops once it holds everything it knows committed and has heard
//!   no peer for longer than a heartbeat interval but less than its poll interval — so it
//!   stops after its writer did, before it would poll the writer and start it again. Nothing
//!   is lost: the next append, peer message, anti-entropy repair or status request starts the
//!   task again from storage, as after a restart; a writer then claims a new epoch before its
//!   first append (one round trip to the replicas). Reads on a stopped follower keep the
//!   commit index it last published.
//!
//! The mailbox is bounded: a peer stream that delivers faster than the context stores waits,
//! so a slow context slows only its own stream's reader, never the writer's memory.

use super::error::ClusterError;
use super::wire::{self, KeyRecord};
use super::{Cluster, Retire};
use futures::FutureExt;
use futures::stream::{FuturesOrdered, StreamExt};
use ledger_core::{Entry, Frontier, Hash, NewEntry};
use ledger_embedded::{AppendAck, BatchAck, LedgerError, LoadOutcome, ReadQuery};
use ledger_replication::{
    AckLevel, AppendError, Command, Epoch, Message, Participant, PersistentState, RoleState, Voter,
};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Entries (and bytes) of the newest entries kept in memory for shipping without a read.
const RECENT_ENTRIES: usize = 2_048;
const RECENT_BYTES: usize = 8 << 20;
/// Most entries handed to the participant in one step.
const MAX_STEP: usize = 512;
/// Most peer messages whose commands are carried out together.
const MAX_COALESCE: usize = 64;
/// Most bytes read from storage for one shipped batch.
const MAX_BATCH_BYTES: usize = 4 << 20;

pub(crate) type AppendReply = oneshot::Sender<Result<Arc<Entry>, ClusterError>>;
pub(crate) type LoadReply = oneshot::Sender<Result<LoadOutcome, ClusterError>>;
pub(crate) type BatchReply = oneshot::Sender<Result<Vec<Arc<Entry>>, ClusterError>>;

/// What a context task is asked to do.
pub(crate) enum ActorMsg {
    Append {
        entry: NewEntry,
        ack: AckLevel,
        reply: AppendReply,
    },
    /// A batch append (all or nothing, consecutive): sequenced in one step of the ledger,
    /// shipped like appends, answered once its last entry is acknowledged at `ack`.
    AppendBatch {
        items: Vec<NewEntry>,
        ack: AckLevel,
        reply: BatchReply,
    },
    Deliver {
        from: Voter,
        message: Message<Entry>,
        /// Idempotency keys of a batch's entries.
        keys: Vec<KeyRecord>,
    },
    State {
        reply: oneshot::Sender<ContextState>,
    },
    /// A load is about to run on this node: answer with the epoch it runs in, if this node
    /// is the context's active writer (else why not; nothing was stored). Appends wait for
    /// its [`ActorMsg::LoadEnd`] (they are refused as "load in progress", like on one node).
    LoadBegin {
        reply: oneshot::Sender<Result<Epoch, ClusterError>>,
    },
    /// The load ended: `None` if it stored nothing (it failed or was abandoned), else it
    /// stored its entries in the epoch it began in.
    LoadEnd { loaded: Option<Loaded> },
}

/// A load that stored its entries (the last `outcome.entries_restored` up to
/// `outcome.latest_sequence`): replicate them, answer once acknowledged at `ack`.
pub(crate) struct Loaded {
    pub epoch: Epoch,
    pub outcome: LoadOutcome,
    pub ack: AckLevel,
    pub reply: LoadReply,
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
type SyncFuture = Pin<Box<dyn Future<Output = Synced> + Send>>;

/// A local append or batch that was sequenced (or refused), in submission order.
enum Local {
    One(LocalOne),
    Batch(LocalBatch),
}

/// A local batch: its entries once sequenced (`None`: refused, `durable` says why).
struct LocalBatch {
    entries: Option<Vec<Arc<Entry>>>,
    durable: BatchAck,
    level: AckLevel,
    reply: BatchReply,
}

/// A local append that was sequenced (or refused).
struct LocalOne {
    /// `None`: refused before sequencing (`durable` says why).
    entry: Option<Arc<Entry>>,
    /// Its idempotency key and fingerprint, if it had one (shipped with the entry).
    key: Option<(String, Hash)>,
    durable: AppendAck,
    level: AckLevel,
    reply: AppendReply,
}

/// A local append's durability, in submission order.
enum Synced {
    /// A fresh entry of this writer, now durable (or its store failed).
    Entry {
        sequence: u64,
        result: Result<Arc<Entry>, LedgerError>,
    },
    /// An append the sequencer refused: answer with why.
    Refused {
        result: Result<Arc<Entry>, LedgerError>,
        reply: AppendReply,
    },
    /// A batch the sequencer refused: answer with why.
    RefusedBatch {
        result: Result<Vec<Arc<Entry>>, LedgerError>,
        reply: BatchReply,
    },
}

struct Waiter {
    epoch: Epoch,
    level: AckLevel,
    sequence: u64,
    reply: WaitReply,
}

/// Who waits for an acknowledgement, and what they are told once it comes.
enum WaitReply {
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

    fn fail(self, e: ClusterError) {
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

pub(crate) struct Actor {
    cluster: Arc<Cluster>,
    ctx: String,
    p: Participant,
    /// The log's size: entries stored or, on the writer, sequenced and being stored.
    size: u64,
    /// Entries durably stored (what reads here can see).
    durable: u64,
    frontier: Frontier,
    /// The newest stored entries, with the root after each.
    recent: VecDeque<(Arc<Entry>, Hash)>,
    /// Idempotency keys of this node's entries, by sequence: the writer's own appends (to ship
    /// with them) and those shipped to it (to store with them). Kept for the entries in
    /// `recent`; a batch read back from storage goes without its keys.
    keys: BTreeMap<u64, (String, Hash)>,
    recent_bytes: usize,
    /// Appends waiting for their acknowledgement level, by sequence.
    waiters: BTreeMap<u64, Vec<Waiter>>,
    /// The first sequence of the epoch this node writes in (0: not writing). Entries before
    /// it came from earlier epochs: the participant acknowledges only the epoch's own, so a
    /// retry answered with such an entry waits for the epoch to be established instead.
    epoch_start: u64,
    /// Highest acknowledged sequence per level in the current epoch.
    acked: BTreeMap<AckLevel, (Epoch, u64)>,
    /// Appends queued to the ledger, until sequenced.
    local: FuturesOrdered<LocalFuture>,
    /// A load runs on this context (between `LoadBegin` and `LoadEnd`): appends are refused.
    loading: bool,
    /// Sequenced appends, until durable.
    syncing: FuturesOrdered<SyncFuture>,
    /// When a client last asked for something or the log last moved (module docs, *Idle*).
    last_active: Instant,
    /// When a peer's message last arrived.
    last_peer_mail: Instant,
    /// `(size, durable, committed)` at the last tick, to notice the log moving.
    seen: (u64, u64, u64),
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
            size: 0,
            durable: 0,
            frontier: Frontier::new(),
            recent: VecDeque::new(),
            keys: BTreeMap::new(),
            recent_bytes: 0,
            waiters: BTreeMap::new(),
            epoch_start: 0,
            acked: BTreeMap::new(),
            local: FuturesOrdered::new(),
            loading: false,
            syncing: FuturesOrdered::new(),
            last_active: Instant::now(),
            last_peer_mail: Instant::now(),
            seen: (0, 0, 0),
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
                Some(first) = a.syncing.next(), if !a.syncing.is_empty() => {
                    let mut done = vec![first];
                    while done.len() < MAX_STEP {
                        match a.syncing.next().now_or_never() {
                            Some(Some(s)) => done.push(s),
                            _ => break,
                        }
                    }
                    a.on_synced(done).await;
                }
                msg = rx.recv() => match msg {
                    Some(m) => a.on_mail(m, &mut rx).await,
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
                    // Before the participant's own tick: a quiet follower stops before it
                    // would poll a writer that stopped.
                    if a.idle() {
                        match a.cluster.retire(&a.ctx, &mut rx) {
                            Retire::Done => return,
                            Retire::Busy => {}
                            Retire::Reopened(left) => {
                                for m in left {
                                    a.on_mail(m, &mut rx).await;
                                }
                            }
                        }
                    }
                    let cmds = a.p.tick(a.cluster.now_ms());
                    a.exec(cmds).await;
                }
            }
        }
        a.fail_waiters("the node is shutting down");
        a.drain("the node is shutting down").await;
    }

    /// Waits for every append in flight to be sequenced and stored (or refused), answering
    /// those still waiting with "outcome unknown" for `reason`.
    async fn drain(&mut self, reason: &str) {
        let unknown = |reply: AppendReply, ctx: &str| {
            let _ = reply.send(Err(ClusterError::OutcomeUnknown {
                context_id: ctx.to_owned(),
                reason: reason.to_owned(),
            }));
        };
        while let Some(l) = self.local.next().await {
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
    async fn finish_syncing(&mut self) {
        while let Some(s) = self.syncing.next().await {
            self.synced(s);
        }
    }

    /// One message from the mailbox, and the peer messages queued right behind it: their
    /// commands are carried out together (see [`coalesce`]), so a follower that fell behind
    /// stores everything that arrived meanwhile in one write instead of one per batch.
    async fn on_mail(&mut self, first: ActorMsg, rx: &mut mpsc::Receiver<ActorMsg>) {
        let ActorMsg::Deliver {
            from,
            message,
            keys,
        } = first
        else {
            return self.on_msg(first).await;
        };
        self.last_peer_mail = Instant::now();
        self.take_keys(keys);
        let mut cmds = self.p.on_message(from, message, self.cluster.now_ms());
        let mut next = None;
        for _ in 0..MAX_COALESCE {
            match rx.try_recv() {
                Ok(ActorMsg::Deliver {
                    from,
                    message,
                    keys,
                }) => {
                    self.take_keys(keys);
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

    async fn on_msg(&mut self, msg: ActorMsg) {
        let now = self.cluster.now_ms();
        // A client's request (a status question is not one): the task is in use.
        if !matches!(msg, ActorMsg::State { .. }) {
            self.last_active = Instant::now();
        }
        match msg {
            ActorMsg::Append { entry, ack, reply } => {
                if let Err(e) = self.writable(now) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let key = entry.idempotency_key.clone().map(|k| {
                    let fp = ledger_core::idempotency::fingerprint(
                        &entry.key,
                        &entry.payload,
                        &entry.metadata,
                    );
                    (k, fp)
                });
                match self.cluster.ledger.submit_sequenced(entry).await {
                    Ok(queued) => self.local.push_back(Box::pin(async move {
                        Local::One(LocalOne {
                            key,
                            entry: queued.sequenced.await,
                            durable: queued.durable,
                            level: ack,
                            reply,
                        })
                    })),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            ActorMsg::AppendBatch { items, ack, reply } => {
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
                    Ok(queued) => self.local.push_back(Box::pin(async move {
                        Local::Batch(LocalBatch {
                            entries: queued.sequenced.await,
                            durable: queued.durable,
                            level: ack,
                            reply,
                        })
                    })),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            ActorMsg::Deliver {
                from,
                message,
                keys,
            } => {
                self.take_keys(keys);
                let cmds = self.p.on_message(from, message, now);
                self.exec(cmds).await;
            }
            ActorMsg::State { reply } => {
                let _ = reply.send(self.state());
            }
            ActorMsg::LoadBegin { reply } => {
                let r = match self.p.next_sequence(now) {
                    Ok(_) if self.loading => {
                        Err(ClusterError::Ledger(LedgerError::LoadInProgress {
                            context_id: self.ctx.clone(),
                        }))
                    }
                    Ok(_) => Ok(self.p.writer().expect("writing").epoch().clone()),
                    Err(e) => Err(self.refusal(e)),
                };
                self.loading |= r.is_ok();
                let _ = reply.send(r);
            }
            ActorMsg::LoadEnd { loaded } => {
                self.loading = false;
                if let Some(l) = loaded {
                    self.on_loaded(l).await;
                }
            }
        }
    }

    /// Whether this task takes an append or a batch now: not while a load runs, and only as
    /// the writer able to accept (else the refusal to answer with; nothing was stored).
    fn writable(&self, now: u64) -> Result<(), ClusterError> {
        if self.loading {
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
            size: self.durable,
            root: self.frontier.root(),
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
        if self.loading
            || !self.waiters.is_empty()
            || !self.local.is_empty()
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

    /// Metrics hook: while writing, each follower's unacknowledged entries.
    fn report_lag(&self) {
        for (peer, matched) in self.state().followers {
            let lag = self.size.saturating_sub(matched);
            self.cluster.metrics.replica_lag(&self.ctx, &peer, lag);
        }
    }

    /// Local appends that were sequenced (or refused), in submission order: the fresh ones are
    /// shipped at once, while the ledger makes them durable.
    async fn on_local(&mut self, done: Vec<Local>) {
        let mut fresh: Vec<Entry> = Vec::new();
        let mut new_waiters = Vec::new();
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
                    self.on_local_batch(b, &mut fresh, &mut new_waiters);
                    continue;
                }
            };
            let Some(entry) = entry else {
                self.syncing.push_back(Box::pin(async move {
                    Synced::Refused {
                        result: durable.await,
                        reply,
                    }
                }));
                continue;
            };
            let next = self.size + 1 + fresh.len() as u64;
            if entry.sequence < next {
                // An idempotent retry answered with the entry stored earlier.
                self.wait_ack(entry, level, reply);
            } else if entry.sequence == next {
                let sequence = entry.sequence;
                if let Some(k) = key {
                    self.keys.insert(sequence, k);
                }
                self.syncing.push_back(Box::pin(async move {
                    Synced::Entry {
                        sequence,
                        result: durable.await,
                    }
                }));
                fresh.push((*entry).clone());
                new_waiters.push((sequence, level, WaitReply::Append(entry, reply)));
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
        self.size += fresh.len() as u64;
        let epoch = self.p.writer().map(|w| w.epoch().clone());
        match (self.p.append(fresh, self.cluster.now_ms()), epoch) {
            (Ok(cmds), Some(epoch)) => {
                for (sequence, level, reply) in new_waiters {
                    self.waiters.entry(sequence).or_default().push(Waiter {
                        epoch: epoch.clone(),
                        level,
                        sequence,
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
    /// entry's acknowledgement.
    fn on_local_batch(
        &mut self,
        b: LocalBatch,
        fresh: &mut Vec<Entry>,
        new_waiters: &mut Vec<(u64, AckLevel, WaitReply)>,
    ) {
        let LocalBatch {
            entries,
            durable,
            level,
            reply,
        } = b;
        let Some(entries) = entries.filter(|e| !e.is_empty()) else {
            self.syncing.push_back(Box::pin(async move {
                Synced::RefusedBatch {
                    result: durable.await,
                    reply,
                }
            }));
            return;
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
            return;
        }
        let last = entries[entries.len() - 1].sequence;
        self.syncing.push_back(Box::pin(async move {
            Synced::Entry {
                sequence: last,
                result: durable
                    .await
                    .map(|mut v| v.pop().expect("a batch has entries")),
            }
        }));
        fresh.extend(entries.iter().map(|e| (**e).clone()));
        new_waiters.push((last, level, WaitReply::Batch(entries, reply)));
    }

    /// Local appends whose store completed, in submission order: the participant learns how
    /// much of its own log is durable.
    async fn on_synced(&mut self, done: Vec<Synced>) {
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
                for w in self.waiters.remove(&sequence).unwrap_or_default() {
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
    async fn on_loaded(&mut self, loaded: Loaded) {
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
        if !same_epoch || self.size + 1 != first || !self.local.is_empty() {
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
        self.waiters.entry(sequence).or_default().push(Waiter {
            epoch,
            level,
            sequence,
            reply,
        });
        self.complete_acked();
    }

    /// Answers every waiter whose level has been reached and whose entry is durable here (so
    /// a read on this node right after the answer sees it).
    fn complete_acked(&mut self) {
        let acked = &self.acked;
        // Entries of earlier epochs: on a quorum of this one once its record is committed
        // (the commit index reaches the epoch's start - 1), and on this node's disk already.
        let inherited = if self.epoch_start > 0 && self.p.committed() + 1 >= self.epoch_start {
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
            .min(self.durable);
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

    fn fail_waiters(&mut self, reason: &str) {
        for (_, list) in std::mem::take(&mut self.waiters) {
            for w in list {
                w.reply.fail(ClusterError::OutcomeUnknown {
                    context_id: self.ctx.clone(),
                    reason: reason.to_owned(),
                });
            }
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
        let oldest = self.recent.front().map_or(u64::MAX, |(e, _)| e.sequence);
        while self
            .keys
            .first_key_value()
            .is_some_and(|(s, _)| *s < oldest)
        {
            self.keys.pop_first();
        }
    }

    /// Keeps the idempotency keys shipped with a batch, to store them with its entries.
    fn take_keys(&mut self, keys: Vec<KeyRecord>) {
        for (sequence, key, fingerprint) in keys {
            if sequence > self.size {
                self.keys.insert(sequence, (key, fingerprint));
            }
        }
    }

    /// The idempotency keys of entries `after + 1 ..= upto` this node knows.
    fn keys_between(&self, after: u64, upto: u64) -> Vec<KeyRecord> {
        if after >= upto {
            return Vec::new();
        }
        self.keys
            .range(after + 1..=upto)
            .map(|(s, (k, f))| (*s, k.clone(), *f))
            .collect()
    }

    /// Carries out `cmds` in order; on a failure rebuilds from storage and carries out what
    /// the rebuilt participant asks (a few times at most).
    async fn exec(&mut self, mut cmds: Vec<Command<Entry>>) {
        for _ in 0..3 {
            match self.try_exec(cmds).await {
                Ok(()) => {
                    self.cluster
                        .publish_committed(&self.ctx, self.p.committed().min(self.durable));
                    if !self.waiters.is_empty() {
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
                    let env = wire::with_keys(env, self.keys_between(after, upto));
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
                    self.epoch_start = first_sequence;
                    self.cluster.metrics.epoch_change();
                    tracing::info!(context_id = %self.ctx, %epoch, first_sequence, voters = quorum.voters().len(), "writing the context");
                }
                Command::SteppedDown { epoch, reason } => {
                    tracing::info!(context_id = %self.ctx, %epoch, ?reason, "stopped writing the context");
                    self.fail_waiters(&format!("the writer stepped down ({reason:?})"));
                    self.acked.clear();
                    self.epoch_start = 0;
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
        let keys = self.keys_between(before, last);
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
        if self.frontier.size() != self.size || self.frontier.root() != applied.head.root() {
            self.frontier = applied.head.frontier.clone();
            self.recent.clear();
            self.recent_bytes = 0;
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
        self.frontier = ledger
            .frontier_at(&self.ctx, self.size)
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
            && upto <= self.size
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
        self.drain("the context's replication state was rebuilt")
            .await;
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
            self.size,
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

/// The same effects as carrying out `cmds` in order, with fewer storage round trips:
/// consecutive `Append`s of consecutive entries separated only by `Send`s become one `Append`
/// (the `Send`s move after it: they only wait longer, which the protocol allows: a message
/// goes out after the storage commands before it are durable), and of several cursors to one
/// node among those `Send`s only the last goes out (a later cursor says everything an earlier
/// one did: a replica's log and promise only grow between them).
fn coalesce(cmds: Vec<Command<Entry>>) -> Vec<Command<Entry>> {
    let mut out = Vec::with_capacity(cmds.len());
    let mut pending: Option<(Vec<Entry>, Option<Hash>)> = None;
    let mut held: Vec<Command<Entry>> = Vec::new();
    fn flush(
        out: &mut Vec<Command<Entry>>,
        pending: &mut Option<(Vec<Entry>, Option<Hash>)>,
        held: &mut Vec<Command<Entry>>,
    ) {
        if let Some((entries, expected_root)) = pending.take() {
            out.push(Command::Append {
                entries,
                expected_root,
            });
        }
        let mut last_cursor = std::collections::HashMap::new();
        for (i, c) in held.iter().enumerate() {
            if let Command::Send {
                to,
                message: Message::Cursor(_),
            } = c
            {
                last_cursor.insert(to.clone(), i);
            }
        }
        for (i, c) in held.drain(..).enumerate() {
            let superseded = matches!(
                &c,
                Command::Send { to, message: Message::Cursor(_) } if last_cursor[to] != i
            );
            if !superseded {
                out.push(c);
            }
        }
    }
    for c in cmds {
        match c {
            Command::Append {
                entries,
                expected_root,
            } => {
                let joins = pending.as_ref().is_some_and(|(have, root)| {
                    let contiguous = match (have.last(), entries.first()) {
                        (Some(a), Some(b)) => a.sequence + 1 == b.sequence,
                        _ => false,
                    };
                    // The earlier root is checked only if the merged batch still checks one.
                    contiguous && (expected_root.is_some() || root.is_none())
                });
                if joins {
                    let (have, root) = pending.as_mut().expect("pending");
                    have.extend(entries);
                    *root = expected_root;
                } else {
                    flush(&mut out, &mut pending, &mut held);
                    pending = Some((entries, expected_root));
                }
            }
            send @ Command::Send { .. } if pending.is_some() => held.push(send),
            other => {
                flush(&mut out, &mut pending, &mut held);
                out.push(other);
            }
        }
    }
    flush(&mut out, &mut pending, &mut held);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_replication::{EpochHistory, Head, NodeId};

    fn entry(seq: u64) -> Entry {
        Entry::new(
            format!("id-{seq}"),
            "facts".into(),
            vec![seq as u8],
            seq,
            seq,
            Default::default(),
            seq,
        )
    }

    fn append(from: u64, to: u64, root: u8) -> Command<Entry> {
        Command::Append {
            entries: (from..=to).map(entry).collect(),
            expected_root: Some(Hash([root; 32])),
        }
    }

    fn cursor(to: &str, size: u64) -> Command<Entry> {
        Command::Send {
            to: NodeId::from(to),
            message: Message::Cursor(Head {
                promised: None,
                size,
                history: EpochHistory::default(),
                commit_index: 0,
            }),
        }
    }

    fn shape(cmds: &[Command<Entry>]) -> Vec<String> {
        cmds.iter()
            .map(|c| match c {
                Command::Append {
                    entries,
                    expected_root,
                } => format!(
                    "append {}..{} root {}",
                    entries[0].sequence,
                    entries.last().unwrap().sequence,
                    expected_root.map_or(0, |r| r.as_bytes()[0])
                ),
                Command::Send {
                    to,
                    message: Message::Cursor(h),
                } => format!("cursor {to} {}", h.size),
                Command::SaveState(_) => "save".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn consecutive_batches_are_stored_at_once_and_answered_with_the_last_cursor() {
        let cmds = vec![
            append(1, 2, 1),
            cursor("w", 2),
            append(3, 5, 2),
            cursor("w", 5),
            append(6, 6, 3),
            cursor("w", 6),
        ];
        assert_eq!(shape(&coalesce(cmds)), ["append 1..6 root 3", "cursor w 6"]);
    }

    #[test]
    fn storage_commands_and_gaps_keep_their_place() {
        let cmds = vec![
            append(1, 2, 1),
            cursor("w", 2),
            Command::SaveState(Default::default()),
            append(3, 3, 2),
            cursor("w", 3),
            append(5, 5, 3), // not contiguous: its own write
            cursor("w", 5),
            cursor("x", 5),
        ];
        assert_eq!(
            shape(&coalesce(cmds)),
            [
                "append 1..2 root 1",
                "cursor w 2",
                "save",
                "append 3..3 root 2",
                "cursor w 3",
                "append 5..5 root 3",
                "cursor w 5",
                "cursor x 5"
            ]
        );
    }
}
