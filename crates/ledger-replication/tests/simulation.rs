//! Deterministic simulation of the replication protocol.
//!
//! Each schedule (one seed) runs N nodes (3 or 5), one or two contexts, through a few thousand
//! random steps: messages delivered late, out of order, duplicated or dropped; links cut and
//! healed; nodes crashed (volatile state lost, storage kept; sometimes in the middle of carrying
//! out a command list), restarted, or wiped (storage lost, new incarnation); membership views that
//! lag, suspect live nodes or disagree between nodes (so two nodes may claim at once); members
//! removed and re-added (reconfigurations); clients appending through whoever accepts. The
//! runtime here is a stand-in for the node: it keeps each node's log, quarantine and saved state,
//! and computes Merkle roots.
//!
//! After **every step** it checks:
//! - (a) no two different entries are ever acknowledged (`quorum` or `all`) at the same
//!   (context, sequence), and an acknowledged entry is, at that moment, durable on a majority of
//!   every set of the writer's quorum;
//! - (b) every acknowledged entry is held by at least a majority of the replica set (fewer only by
//!   the copies lost to a wiped data directory), is in the log of every writer that activates
//!   later, and is never quarantined;
//! - (c) log matching: two stores that give the same epoch to a sequence have equal Merkle roots up
//!   to there; every entry carries the epoch its store's history says; Merkle roots after each
//!   append equal the sender's; every node's committed prefix agrees with every other's;
//! - (d) a replica's promise never goes back, epoch histories strictly increase, no epoch is
//!   activated twice.
//!
//! At the end the nemesis stops, everything heals and restarts, and the cluster must converge: one
//! writer per context, every replica equal to it (same root), every acknowledged entry at its
//! sequence everywhere, and a new append acknowledged.
//!
//! A failing seed is printed with the command that replays exactly that schedule, with a trace:
//! `SIM_SEED=<seed> cargo test --release -p ledger-replication --test simulation <test>`.
//! `SIM_SEEDS=<n>` changes the number of schedules per test, `SIM_STEPS=<n>` their length,
//! `SIM_TRACE_LINES=<n>` how much of a failing schedule's trace is printed.

use ledger_core::Hash;
use ledger_core::hash::{empty_root, sha256};
use ledger_core::merkle::Frontier;
use ledger_replication::placement::{self, Member, MemberState, Role};
use ledger_replication::{
    AckLevel, Availability, Command, Entries, Epoch, EpochHistory, Incarnation, LogEntry, LogView,
    Message, NextChange, NodeId, Participant, PersistentState, Settings, ViewChange, ViewLog,
    ViewRecord, Voter, common_prefix,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::Instant;

/// An abstract entry: its content hash stands for the payload, and it remembers the epoch it was
/// written in (to check histories).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SimEntry {
    seq: u64,
    hash: Hash,
    epoch: Epoch,
}

impl LogEntry for SimEntry {
    fn sequence(&self) -> u64 {
        self.seq
    }
}

/// One context's storage on one node.
#[derive(Clone, Debug)]
struct Store {
    log: Vec<SimEntry>,
    /// Leading entries of `log` on disk. The writer's own new entries are shipped before its
    /// disk syncs them ([`World::flush`]); a crash loses the rest.
    durable: usize,
    /// `roots[i]`: Merkle root of the first `i` entries.
    roots: Vec<Hash>,
    frontier: Frontier,
    state: PersistentState,
    quarantine: Vec<SimEntry>,
}

impl Store {
    fn new() -> Self {
        Store {
            log: Vec::new(),
            durable: 0,
            roots: vec![empty_root()],
            frontier: Frontier::new(),
            state: PersistentState::default(),
            quarantine: Vec::new(),
        }
    }

    fn size(&self) -> u64 {
        self.log.len() as u64
    }

    fn push(&mut self, e: SimEntry) {
        self.frontier.push_leaf(e.hash);
        self.log.push(e);
        self.roots.push(self.frontier.root());
    }

    fn truncate(&mut self, keep: u64) {
        let keep = keep as usize;
        self.quarantine.extend(self.log.drain(keep..));
        self.durable = keep;
        self.cut_to(keep);
    }

    /// Everything written so far reaches the disk (a sync covers every earlier write).
    fn sync(&mut self) {
        self.durable = self.log.len();
    }

    /// A crash: what was not synced is gone.
    fn lose_unsynced(&mut self) {
        self.log.truncate(self.durable);
        self.cut_to(self.durable);
    }

    fn cut_to(&mut self, keep: usize) {
        self.roots.truncate(keep + 1);
        self.frontier = Frontier::new();
        for e in &self.log {
            self.frontier.push_leaf(e.hash);
        }
    }

    /// The entry at `seq` if it is on disk.
    fn durable_hash(&self, seq: u64) -> Option<Hash> {
        let k = usize::try_from(seq).ok()?.checked_sub(1)?;
        (k < self.durable).then(|| self.log[k].hash)
    }

    /// The saved history as restore would see it.
    fn history(&self) -> EpochHistory {
        self.state.history.clipped(self.size())
    }
}

struct Node {
    id: NodeId,
    incarnation: u64,
    up: bool,
    stores: BTreeMap<String, Store>,
    parts: BTreeMap<String, Participant>,
    /// What gossip told this node about every node (state and incarnation), by node index.
    view: Vec<Member>,
    /// Views mode: the view log as this node replayed it (durable: it is a context too), and
    /// how many records of the agreed log that is.
    vlog: ViewLog,
    applied: usize,
}

impl Node {
    fn voter(&self) -> Voter {
        Voter::new(self.id.clone(), self.incarnation)
    }
}

/// The longest committed prefix of a context seen on any node: its leaves and prefix roots.
#[derive(Default)]
struct Canon {
    leaves: Vec<Hash>,
    roots: Vec<Hash>,
}

struct Packet {
    at: u64,
    from: Voter,
    to: NodeId,
    context: String,
    message: Message<SimEntry>,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    nodes: usize,
    /// Read-only mirrors besides the members.
    mirrors: usize,
    contexts: usize,
    steps: usize,
    reconfigure: bool,
    /// Versioned placement views: an agreed view log, replayed by each node with its own lag,
    /// changed only by what `ViewLog::next_change` proposes.
    views: bool,
    /// Views mode: of `nodes`, how many start outside the view (spares that join later).
    spares: usize,
    /// Contexts open from the start; the others are opened at random steps (late contexts).
    open_at_start: usize,
    /// Views mode: members become mirrors and mirrors members.
    role_changes: bool,
}

impl Config {
    /// Gossip membership (no views), every context open from the start.
    const fn classic(nodes: usize, mirrors: usize, contexts: usize, reconfigure: bool) -> Self {
        Config {
            nodes,
            mirrors,
            contexts,
            steps: 1_500,
            reconfigure,
            views: false,
            spares: 0,
            open_at_start: contexts,
            role_changes: false,
        }
    }
}

/// The agreed view log (views mode): what the coordinator and every node's replay read.
struct Views {
    records: Vec<ViewRecord>,
    /// Every record applied.
    log: ViewLog,
    /// The nodes the operator wants as members (by index); a dead one taken out is removed.
    desired: BTreeSet<usize>,
    /// Nodes whose `Leave` was applied: they never learn later views.
    removed: BTreeSet<usize>,
    /// Data faults (a removal, a wipe) by node, with the version of the view change that
    /// answered it once applied: healed once the floor reaches that version.
    faults: Vec<(usize, Option<u64>)>,
}

struct World {
    cfg: Config,
    seed: u64,
    rng: StdRng,
    now: u64,
    settings: Settings,
    contexts: Vec<String>,
    nodes: Vec<Node>,
    index: BTreeMap<NodeId, usize>,
    net: Vec<Packet>,
    cut: BTreeSet<(usize, usize)>,
    drop_rate: f64,
    /// The membership as it really is (gossip converges to it).
    truth: Vec<Member>,
    /// (context, sequence) → hash acknowledged at `quorum` or `all`.
    acked: BTreeMap<(String, u64), Hash>,
    /// Per writer epoch: highest position already recorded as acknowledged.
    acked_through: BTreeMap<(String, Epoch), u64>,
    /// Per context: the longest committed prefix seen.
    committed: BTreeMap<String, Canon>,
    activations: BTreeSet<(String, Epoch)>,
    /// The quorum and first sequence of every activated epoch.
    quorums: BTreeMap<(String, Epoch), (ledger_replication::Quorum, u64)>,
    /// Per context: opened (clients write to it, nodes have a participant for it).
    opened: Vec<bool>,
    views: Option<Views>,
    wipes: usize,
    max_wipes: usize,
    /// The nemesis acts (crashes in the middle of command lists, duplicates): off while converging.
    nemesis: bool,
    /// Carrying out the commands of a client append: its `Append` is the writer's own, written
    /// without waiting for the disk.
    own_append: bool,
    ops: u64,
    trace: Option<VecDeque<String>>,
    stats: Stats,
}

#[derive(Default, Clone, Debug)]
struct Stats {
    steps: u64,
    delivered: u64,
    acked: u64,
    activations: u64,
    quarantined: u64,
    crashes: u64,
    wipes: u64,
    reconfigurations: u64,
    view_changes: u64,
    settled_records: u64,
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(format!($($arg)*));
        }
    };
}

impl World {
    fn new(cfg: Config, seed: u64, trace: bool) -> World {
        let contexts = (0..cfg.contexts).map(|i| format!("ctx-{i}")).collect();
        World::with_contexts(cfg, seed, trace, contexts)
    }

    fn with_contexts(cfg: Config, seed: u64, trace: bool, contexts: Vec<String>) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let settings = Settings {
            replication_factor: 3,
            writer_lease_ms: 400,
            heartbeat_ms: 40,
            retransmit_ms: 120,
            poll_ms: 150,
            claim_timeout_ms: 600,
            claim_backoff_ms: 60,
            max_batch: 4,
            max_in_flight: 16,
        };
        let mut nodes = Vec::new();
        let mut truth = Vec::new();
        let mut index = BTreeMap::new();
        for i in 0..cfg.nodes + cfg.mirrors {
            let id = NodeId::new(if i < cfg.nodes {
                format!("n{i}")
            } else {
                format!("m{}", i - cfg.nodes)
            });
            let incarnation = rng.random_range(1..1_000_000);
            truth.push(Member {
                id: id.clone(),
                incarnation: ledger_replication::Incarnation(incarnation),
                role: if i < cfg.nodes {
                    Role::Member
                } else {
                    Role::Mirror
                },
                state: MemberState::Alive,
                // The first mirror holds only ctx-1 (and ctx-1x); any others hold everything.
                mirror_prefixes: if i == cfg.nodes {
                    vec!["ctx-1".to_owned()]
                } else {
                    Vec::new()
                },
            });
            index.insert(id.clone(), i);
            nodes.push(Node {
                id,
                incarnation,
                up: false,
                stores: contexts.iter().map(|c| (c.clone(), Store::new())).collect(),
                parts: BTreeMap::new(),
                view: Vec::new(),
                vlog: ViewLog::new(),
                applied: 0,
            });
        }
        let opened = (0..contexts.len()).map(|k| k < cfg.open_at_start).collect();
        let views = cfg.views.then(|| {
            // The first members and every mirror are the bootstrap view; spares join later.
            let desired: BTreeSet<usize> = (0..cfg.nodes - cfg.spares)
                .chain(cfg.nodes..cfg.nodes + cfg.mirrors)
                .collect();
            let boot = ViewRecord::Change {
                version: 1,
                change: ViewChange::Bootstrap(desired.iter().map(|&k| truth[k].clone()).collect()),
            };
            let mut log = ViewLog::new();
            log.apply(&boot).expect("a bootstrap applies");
            for node in &mut nodes {
                node.vlog = log.clone();
                node.applied = 1;
            }
            Views {
                records: vec![boot],
                log,
                desired,
                removed: BTreeSet::new(),
                faults: Vec::new(),
            }
        });
        let max_wipes = usize::from(rng.random_bool(0.5));
        let drop_rate = [0.0, 0.02, 0.1][rng.random_range(0..3)];
        let mut w = World {
            cfg,
            seed,
            rng,
            now: 0,
            settings,
            contexts,
            nodes,
            index,
            net: Vec::new(),
            cut: BTreeSet::new(),
            drop_rate,
            truth,
            acked: BTreeMap::new(),
            acked_through: BTreeMap::new(),
            committed: BTreeMap::new(),
            activations: BTreeSet::new(),
            quorums: BTreeMap::new(),
            opened,
            views,
            wipes: 0,
            max_wipes,
            nemesis: true,
            own_append: false,
            ops: 0,
            trace: trace.then(VecDeque::new),
            stats: Stats::default(),
        };
        if !cfg.views {
            // Without views a spare is a node gossip does not list as a member yet.
            for k in cfg.nodes - cfg.spares..cfg.nodes {
                w.truth[k].state = MemberState::Left;
            }
        }
        for i in 0..w.nodes.len() {
            w.nodes[i].view = w.truth.clone();
        }
        w
    }

    fn log(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            if t.len() >= trace_lines() {
                t.pop_front();
            }
            t.push_back(format!("[{:>6}ms] {}", self.now, f()));
        }
    }

    // ---------------------------------------------------------------- node lifecycle

    fn start(&mut self, i: usize) -> Check {
        self.nodes[i].up = true;
        let me = self.nodes[i].voter();
        for k in 0..self.contexts.len() {
            if self.opened[k] {
                self.add_participant(i, k);
            }
        }
        self.log(|| format!("start {me}"));
        self.push_view(i)
    }

    fn add_participant(&mut self, i: usize, k: usize) {
        let c = self.contexts[k].clone();
        let me = self.nodes[i].voter();
        let store = &self.nodes[i].stores[&c];
        let p = Participant::new(
            c.clone(),
            me,
            store.state.clone(),
            store.size(),
            self.settings.clone(),
        );
        self.nodes[i].parts.insert(c, p);
    }

    /// Clients start writing to context `k`; every running node opens it.
    fn open(&mut self, k: usize) -> Check {
        if self.opened[k] {
            return Ok(());
        }
        self.opened[k] = true;
        let c = self.contexts[k].clone();
        self.log(|| format!("open {c}"));
        for i in 0..self.nodes.len() {
            if self.nodes[i].up {
                self.add_participant(i, k);
                self.push_context_view(i, &c)?;
            }
        }
        Ok(())
    }

    fn opened_contexts(&self) -> Vec<String> {
        (0..self.contexts.len())
            .filter(|&k| self.opened[k])
            .map(|k| self.contexts[k].clone())
            .collect()
    }

    fn crash(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        self.nodes[i].up = false;
        self.nodes[i].parts.clear();
        for s in self.nodes[i].stores.values_mut() {
            s.lose_unsynced();
        }
        self.stats.crashes += 1;
        let id = self.nodes[i].id.clone();
        self.log(|| format!("crash {id}"));
        self.net.retain(|p| p.to != id);
    }

    fn wipe(&mut self, i: usize) {
        self.crash(i);
        let node = &mut self.nodes[i];
        node.incarnation += 1 + self.rng.random_range(0..1000);
        for s in node.stores.values_mut() {
            *s = Store::new();
        }
        // The view log is a context too: a wiped node learns it again from the others.
        node.vlog = ViewLog::new();
        node.applied = 0;
        let inc = node.incarnation;
        let id = node.id.clone();
        for m in &mut self.truth {
            if m.id == id {
                m.incarnation = ledger_replication::Incarnation(inc);
            }
        }
        for n in &mut self.nodes {
            // The node itself knows its new incarnation (gossip spreads it to the others).
            if n.id == id {
                n.view[i].incarnation = Incarnation(inc);
            }
        }
        self.wipes += 1;
        self.stats.wipes += 1;
        self.log(|| format!("wipe {id} -> incarnation {inc}"));
    }

    fn push_view(&mut self, i: usize) -> Check {
        if !self.nodes[i].up {
            return Ok(());
        }
        for c in self.contexts.clone() {
            self.push_context_view(i, &c)?;
        }
        Ok(())
    }

    /// Gives node `i`'s participant of `c` its membership: gossip's view, or (views mode) the
    /// view it replayed with the liveness gossip told it.
    fn push_context_view(&mut self, i: usize, c: &str) -> Check {
        let now = self.now;
        let cmds = if self.views.is_some() {
            let members = self.members_seen_by(i);
            let range = self.nodes[i].vlog.range();
            match self.nodes[i].parts.get_mut(c) {
                Some(p) => p.on_view(members, range, now),
                None => return Ok(()),
            }
        } else {
            let view = self.nodes[i].view.clone();
            match self.nodes[i].parts.get_mut(c) {
                Some(p) => p.on_membership(view, now),
                None => return Ok(()),
            }
        };
        self.execute(i, c, cmds)
    }

    /// Node `i`'s current view's members with the liveness gossip told it: a member whose
    /// incarnation gossip announces differently is dead (that voter is gone).
    fn members_seen_by(&self, i: usize) -> Vec<Member> {
        let node = &self.nodes[i];
        node.vlog
            .current()
            .members
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if let Some(&k) = self.index.get(&m.id) {
                    let seen = &node.view[k];
                    m.state = if k == i {
                        // A node knows it runs (whether it is the voter the view names is the
                        // participant's business).
                        MemberState::Alive
                    } else if seen.incarnation != m.incarnation {
                        MemberState::Dead
                    } else if seen.state.is_live() {
                        MemberState::Alive
                    } else {
                        MemberState::Dead
                    };
                }
                m
            })
            .collect()
    }

    // ---------------------------------------------------------------- carrying out commands

    fn execute(&mut self, i: usize, ctx: &str, cmds: Vec<Command<SimEntry>>) -> Check {
        // Sometimes crash part-way through a list that writes to storage.
        let crash_at = if self.nemesis
            && cmds.len() > 1
            && cmds.iter().any(|c| {
                matches!(
                    c,
                    Command::SaveState(_) | Command::Append { .. } | Command::Quarantine { .. }
                )
            })
            && self.rng.random_bool(0.004)
        {
            Some(self.rng.random_range(0..cmds.len()))
        } else {
            None
        };
        for (k, cmd) in cmds.into_iter().enumerate() {
            if crash_at == Some(k) {
                self.log(|| format!("crash mid-commands at {k}"));
                self.crash(i);
                return Ok(());
            }
            self.apply(i, ctx, cmd)?;
        }
        Ok(())
    }

    fn apply(&mut self, i: usize, ctx: &str, cmd: Command<SimEntry>) -> Check {
        let me = self.nodes[i].voter();
        match cmd {
            Command::Send { to, message } => self.send(me, to, ctx, message),
            Command::SendEntries {
                to,
                header,
                after,
                upto,
            } => {
                let store = &self.nodes[i].stores[ctx];
                ensure!(
                    upto <= store.size() && after <= upto,
                    "{me} asked to send {after}..{upto} of a log of {}",
                    store.size()
                );
                let entries = store.log[after as usize..upto as usize].to_vec();
                let root = Some(store.roots[upto as usize]);
                self.send(
                    me,
                    to,
                    ctx,
                    Message::Entries(Entries {
                        header,
                        prev: after,
                        entries,
                        root,
                    }),
                );
            }
            Command::Quarantine { from_sequence } => {
                let store = &self.nodes[i].stores[ctx];
                for e in store.log.iter().skip(from_sequence as usize - 1) {
                    if let Some(h) = self.acked.get(&(ctx.to_owned(), e.seq)) {
                        ensure!(
                            *h != e.hash,
                            "{me} quarantined acknowledged entry {ctx}#{}",
                            e.seq
                        );
                    }
                }
                if let Some(c) = self.committed.get(ctx) {
                    let n = from_sequence as usize - 1;
                    for (k, e) in store.log.iter().enumerate().skip(n) {
                        ensure!(
                            c.leaves.get(k) != Some(&e.hash),
                            "{me} quarantined committed entry {ctx}#{}",
                            e.seq
                        );
                    }
                }
                let n = store.size() + 1 - from_sequence;
                self.stats.quarantined += n;
                // The cut waits for everything written before it to be durable.
                self.nodes[i].stores.get_mut(ctx).unwrap().sync();
                self.log(|| format!("{me} {ctx}: quarantine {n} from {from_sequence}"));
                self.nodes[i]
                    .stores
                    .get_mut(ctx)
                    .unwrap()
                    .truncate(from_sequence - 1);
            }
            Command::SaveState(s) => {
                let store = self.nodes[i].stores.get_mut(ctx).unwrap();
                ensure!(
                    s.promised >= store.state.promised,
                    "{me} {ctx}: promise went back from {:?} to {:?}",
                    store.state.promised,
                    s.promised
                );
                ensure!(
                    EpochHistory::from_records(s.history.records().to_vec()).is_ok(),
                    "{me} {ctx}: malformed history"
                );
                if let (Some(last), Some(p)) = (s.history.last_epoch(), &s.promised) {
                    ensure!(
                        last <= p,
                        "{me} {ctx}: history epoch {last} above promise {p}"
                    );
                }
                store.state = s;
            }
            Command::Append {
                entries,
                expected_root,
            } => {
                let store = self.nodes[i].stores.get_mut(ctx).unwrap();
                for e in entries {
                    ensure!(
                        e.seq == store.size() + 1,
                        "{me} {ctx}: append of {} to a log of {}",
                        e.seq,
                        store.size()
                    );
                    let epoch = store.state.history.epoch_at(e.seq).cloned();
                    ensure!(
                        epoch.as_ref() == Some(&e.epoch),
                        "{me} {ctx}#{}: entry of epoch {} stored under epoch {:?}",
                        e.seq,
                        e.epoch,
                        epoch
                    );
                    store.push(e);
                }
                if let Some(root) = expected_root {
                    ensure!(
                        *store.roots.last().unwrap() == root,
                        "{me} {ctx}: Merkle root after appending to {} differs from the sender's",
                        store.size()
                    );
                }
                // Shipped and fetched entries are durable before anything that follows; the
                // writer's own are synced later (`flush`).
                if !self.own_append {
                    store.sync();
                }
            }
            Command::Acknowledged {
                epoch,
                level,
                through,
            } => {
                if level != AckLevel::Writer {
                    self.on_ack(i, ctx, &epoch, through)?;
                }
            }
            Command::Activated {
                epoch,
                first_sequence,
                quorum,
            } => {
                self.quorums
                    .insert((ctx.to_owned(), epoch.clone()), (quorum, first_sequence));
                self.stats.activations += 1;
                ensure!(
                    self.activations.insert((ctx.to_owned(), epoch.clone())),
                    "epoch {epoch} of {ctx} activated twice"
                );
                let store = &self.nodes[i].stores[ctx];
                ensure!(
                    store.size() + 1 == first_sequence,
                    "{me} activated at {first_sequence} with a log of {}",
                    store.size()
                );
                for ((c, seq), h) in &self.acked {
                    if c == ctx {
                        ensure!(
                            store.log.get(*seq as usize - 1).map(|e| e.hash) == Some(*h),
                            "new writer {me} of {ctx} ({epoch}) lacks acknowledged entry #{seq}"
                        );
                    }
                }
                self.log(|| format!("{me} {ctx}: activated {epoch} at {first_sequence}"));
            }
            Command::SteppedDown { epoch, reason } => {
                // The runtime finishes the writer's own stores before it acts on this.
                self.nodes[i].stores.get_mut(ctx).unwrap().sync();
                self.log(|| format!("{me} {ctx}: stepped down from {epoch}: {reason:?}"));
            }
        }
        Ok(())
    }

    fn on_ack(&mut self, i: usize, ctx: &str, epoch: &Epoch, through: u64) -> Check {
        let me = self.nodes[i].voter();
        let (quorum, start) = self
            .quorums
            .get(&(ctx.to_owned(), epoch.clone()))
            .cloned()
            .ok_or_else(|| format!("{me} acknowledged in {epoch}, which never activated"))?;
        let epoch = epoch.clone();
        let key = (ctx.to_owned(), epoch.clone());
        let from = self
            .acked_through
            .get(&key)
            .copied()
            .unwrap_or(start - 1)
            .max(start - 1);
        for seq in from + 1..=through {
            let store = &self.nodes[i].stores[ctx];
            let e = store
                .log
                .get(seq as usize - 1)
                .ok_or_else(|| format!("{me} acknowledged {ctx}#{seq} it does not hold"))?;
            let hash = e.hash;
            if let Some(prev) = self.acked.insert((ctx.to_owned(), seq), hash) {
                ensure!(
                    prev == hash,
                    "two different entries acknowledged at {ctx}#{seq} (second by {me} in {epoch})"
                );
            }
            for set in quorum.sets() {
                let holders = set
                    .iter()
                    .filter(|v| {
                        self.index.get(&v.node).is_some_and(|&k| {
                            let n = &self.nodes[k];
                            n.incarnation == v.incarnation.0
                                && n.stores[ctx].durable_hash(seq) == Some(hash)
                        })
                    })
                    .count();
                // A voter wiped since it acknowledged (its ack may still be in flight) lost its
                // copy: count it.
                let wiped = set
                    .iter()
                    .filter(|v| {
                        self.index
                            .get(&v.node)
                            .is_some_and(|&k| self.nodes[k].incarnation != v.incarnation.0)
                    })
                    .count();
                ensure!(
                    (holders + wiped) * 2 > set.len(),
                    "{ctx}#{seq} acknowledged by {me} but durable on {holders} of {}",
                    set.len()
                );
            }
            self.stats.acked += 1;
        }
        self.acked_through.insert(key, through.max(from));
        Ok(())
    }

    fn send(&mut self, from: Voter, to: NodeId, ctx: &str, message: Message<SimEntry>) {
        if self.drop_rate > 0.0 && self.rng.random_bool(self.drop_rate) {
            return;
        }
        let latency = if self.rng.random_bool(0.05) {
            self.rng.random_range(50..400)
        } else {
            self.rng.random_range(1..20)
        };
        self.net.push(Packet {
            at: self.now + latency,
            from,
            to,
            context: ctx.to_owned(),
            message,
        });
    }

    // ---------------------------------------------------------------- actions

    fn deliver_one(&mut self) -> Check {
        let ready: Vec<usize> = (0..self.net.len())
            .filter(|&k| self.net[k].at <= self.now)
            .collect();
        if ready.is_empty() {
            if let Some(at) = self.net.iter().map(|p| p.at).min() {
                self.now = self.now.max(at);
            }
            return Ok(());
        }
        let k = ready[self.rng.random_range(0..ready.len())];
        let duplicate = self.nemesis && self.rng.random_bool(0.02);
        let packet = if duplicate {
            let p = &self.net[k];
            Packet {
                at: p.at,
                from: p.from.clone(),
                to: p.to.clone(),
                context: p.context.clone(),
                message: p.message.clone(),
            }
        } else {
            self.net.swap_remove(k)
        };
        self.deliver(packet)
    }

    fn deliver(&mut self, p: Packet) -> Check {
        let (Some(&from), Some(&to)) = (self.index.get(&p.from.node), self.index.get(&p.to)) else {
            return Ok(());
        };
        if self.cut.contains(&(from, to)) || !self.nodes[to].up {
            return Ok(());
        }
        self.stats.delivered += 1;
        if self.trace.is_some() {
            let what = describe(&p.message);
            let (f, t, c) = (p.from.clone(), p.to.clone(), p.context.clone());
            self.log(|| format!("{c}: {f} -> {t}: {what}"));
        }
        let now = self.now;
        let cmds = self.nodes[to]
            .parts
            .get_mut(&p.context)
            .map(|part| part.on_message(p.from, p.message, now))
            .unwrap_or_default();
        self.execute(to, &p.context, cmds)
    }

    fn tick_all(&mut self) -> Check {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                continue;
            }
            for c in self.contexts.clone() {
                let now = self.now;
                let cmds = match self.nodes[i].parts.get_mut(&c) {
                    Some(p) => p.tick(now),
                    None => continue,
                };
                self.execute(i, &c, cmds)?;
                if !self.nodes[i].up {
                    break;
                }
            }
        }
        Ok(())
    }

    fn client_append(&mut self, i: usize, ctx: &str) -> Check {
        if !self.nodes[i].up {
            return Ok(());
        }
        let now = self.now;
        let n = self.rng.random_range(1..=3u64);
        let Some(part) = self.nodes[i].parts.get_mut(ctx) else {
            return Ok(());
        };
        let Ok(seq) = part.next_sequence(now) else {
            return Ok(());
        };
        let epoch = part.writer().map(|w| w.epoch().clone()).unwrap();
        let mut entries = Vec::new();
        for k in 0..n {
            self.ops += 1;
            entries.push(SimEntry {
                seq: seq + k,
                hash: sha256(format!("{ctx}/op-{}/{}", self.ops, self.seed).as_bytes()),
                epoch: epoch.clone(),
            });
        }
        let cmds = part
            .append(entries, now)
            .map_err(|e| format!("append refused after next_sequence said yes: {e}"))?;
        let id = self.nodes[i].id.clone();
        self.log(|| format!("{id} {ctx}: append {n} from #{seq}"));
        self.own_append = true;
        let r = self.execute(i, ctx, cmds);
        self.own_append = false;
        r?;
        // Usually the disk syncs before anything else happens; sometimes later.
        if self.rng.random_bool(0.5) {
            self.flush(i, ctx)?;
        }
        Ok(())
    }

    /// The writer's disk syncs its own entries; the runtime tells the participant.
    fn flush(&mut self, i: usize, ctx: &str) -> Check {
        if !self.nodes[i].up {
            return Ok(());
        }
        let store = self.nodes[i].stores.get_mut(ctx).unwrap();
        if store.durable == store.log.len() {
            return Ok(());
        }
        store.sync();
        let size = store.size();
        let now = self.now;
        let Some(part) = self.nodes[i].parts.get_mut(ctx) else {
            return Ok(());
        };
        let cmds = part.on_local_durable(size, now);
        let id = self.nodes[i].id.clone();
        self.log(|| format!("{id} {ctx}: own entries durable through #{size}"));
        self.execute(i, ctx, cmds)
    }

    fn flush_all(&mut self) -> Check {
        for i in 0..self.nodes.len() {
            for c in self.contexts.clone() {
                self.flush(i, &c)?;
            }
        }
        Ok(())
    }

    fn gossip(&mut self, i: usize, m: usize, state: Option<MemberState>) -> Check {
        let mut member = self.truth[m].clone();
        if let Some(s) = state {
            member.state = s;
        }
        if self.nodes[i].view[m] == member {
            return Ok(());
        }
        let (id, st) = (self.nodes[i].id.clone(), member.state);
        let about = member.id.clone();
        self.log(|| format!("{id} sees {about} as {st:?}"));
        self.nodes[i].view[m] = member;
        self.push_view(i)
    }

    /// Views mode: a node being removed stays down, and of the removed nodes (stale views
    /// they never update) at most one runs at a time.
    fn may_restart(&self, i: usize) -> bool {
        let Some(v) = &self.views else {
            return true;
        };
        let pending_removal =
            !v.desired.contains(&i) && v.log.current().member(&self.nodes[i].id).is_some();
        let other_removed_up = v.removed.iter().any(|&k| k != i && self.nodes[k].up);
        let stale_second = v.removed.contains(&i) && other_removed_up;
        !pending_removal && !stale_second
    }

    // ---------------------------------------------------------------- views mode

    fn views(&self) -> &Views {
        self.views.as_ref().expect("views mode")
    }

    fn views_mut(&mut self) -> &mut Views {
        self.views.as_mut().expect("views mode")
    }

    /// Data faults not yet healed (their view change not applied, or the floor below it).
    fn unhealed_faults(&self) -> usize {
        let v = self.views();
        let floor = v.log.floor();
        v.faults
            .iter()
            .filter(|(_, at)| at.is_none_or(|at| floor < at))
            .count()
    }

    /// Appends a record to the agreed log (it must apply).
    fn append_record(&mut self, record: ViewRecord) -> Check {
        let views = self.views_mut();
        views
            .log
            .apply(&record)
            .map_err(|e| format!("the view log refused {record:?}: {e}"))?;
        views.records.push(record.clone());
        let version = views.log.version();
        match &record {
            ViewRecord::Change { change, .. } => {
                let (node, joined) = match change {
                    ViewChange::Bootstrap(_) => return Ok(()),
                    ViewChange::Join(m) | ViewChange::Update(m) => (m.id.clone(), Some(m)),
                    ViewChange::Leave(id) => (id.clone(), None),
                };
                let k = self.index[&node];
                let inc = self.nodes[k].incarnation;
                let views = self.views_mut();
                match joined {
                    // A wiped node's fault is answered by the view naming its new incarnation.
                    Some(m) if m.incarnation.0 == inc => {
                        for f in &mut views.faults {
                            if f.0 == k && f.1.is_none() {
                                f.1 = Some(version);
                            }
                        }
                    }
                    Some(_) => {}
                    None => {
                        views.removed.insert(k);
                        for f in &mut views.faults {
                            if f.0 == k && f.1.is_none() {
                                f.1 = Some(version);
                            }
                        }
                    }
                }
                self.stats.view_changes += 1;
                self.log(|| format!("view {version}: {change:?}"));
            }
            ViewRecord::Settled { node, version, .. } => {
                self.stats.settled_records += 1;
                let floor = self.views().log.floor();
                self.log(|| format!("{node} settled view {version} (floor {floor})"));
            }
        }
        Ok(())
    }

    /// The coordinator (whoever writes the view log) does what `next_change` says.
    fn coordinate(&mut self) -> Check {
        let views = self.views();
        let desired: Vec<Member> = views
            .desired
            .iter()
            .map(|&k| self.truth[k].clone())
            .collect();
        let next = views.log.next_change(&desired, |id| {
            self.index.get(id).is_some_and(|&k| self.nodes[k].up)
        });
        match next {
            NextChange::Propose(record) => self.append_record(record),
            NextChange::Waiting { change, for_nodes } => {
                self.log(|| format!("next view change {change:?} waits for {for_nodes:?}"));
                Ok(())
            }
            NextChange::None => Ok(()),
        }
    }

    /// Node `i` replays up to `n` more records of the agreed log (a removed node never does).
    fn replay(&mut self, i: usize, n: usize) -> Check {
        if self.views().removed.contains(&i) {
            return Ok(());
        }
        let upto = (self.nodes[i].applied + n).min(self.views().records.len());
        if upto == self.nodes[i].applied {
            return Ok(());
        }
        for k in self.nodes[i].applied..upto {
            let record = self.views().records[k].clone();
            self.nodes[i]
                .vlog
                .apply(&record)
                .map_err(|e| format!("n{i} could not replay {record:?}: {e}"))?;
        }
        self.nodes[i].applied = upto;
        self.push_view(i)
    }

    /// Node `i` settles its contexts, then records that it settled its view if it truly holds
    /// everything it holds on the sets of that view.
    fn settle_node(&mut self, i: usize) -> Check {
        if !self.nodes[i].up || self.views().removed.contains(&i) {
            return Ok(());
        }
        for c in self.opened_contexts() {
            let now = self.now;
            let cmds = match self.nodes[i].parts.get_mut(&c) {
                Some(p) => p.settle(now),
                None => continue,
            };
            self.execute(i, &c, cmds)?;
            if !self.nodes[i].up {
                return Ok(());
            }
        }
        let version = self.nodes[i].vlog.version();
        let id = self.nodes[i].id.clone();
        let inc = self.nodes[i].incarnation;
        let log = &self.views().log;
        if version == 0
            || log.current().member(&id).map(|m| m.incarnation.0) != Some(inc)
            || log.settled(&id).is_some_and(|s| s >= version)
            || !self.truly_settled(i, version)
        {
            return Ok(());
        }
        self.append_record(ViewRecord::Settled {
            node: id,
            incarnation: inc,
            version,
        })
    }

    /// Every context node `i` holds anything of lives on the sets of a view at or after
    /// `version`: its latest writer is running, placed as in such a view, with its epoch's
    /// record committed.
    fn truly_settled(&self, i: usize, version: u64) -> bool {
        self.opened_contexts().iter().all(|c| {
            let store = &self.nodes[i].stores[c];
            if store.log.is_empty() && store.state.history.is_empty() {
                return true;
            }
            let Some(latest) = self
                .activations
                .iter()
                .filter(|(x, _)| x == c)
                .map(|(_, e)| e)
                .max()
            else {
                return false;
            };
            self.nodes.iter().any(|n| {
                n.up && n.parts.get(c).is_some_and(|p| {
                    p.writer()
                        .is_some_and(|w| w.epoch() == latest && w.stopped().is_none())
                        && p.settled_view().is_some_and(|s| s >= version)
                })
            })
        })
    }

    /// Members (role member) the operator wants.
    fn desired_members(&self) -> usize {
        self.views()
            .desired
            .iter()
            .filter(|&&k| self.truth[k].role == Role::Member)
            .count()
    }

    /// One membership action of the operator or the failure policy (the view changes follow
    /// from `next_change` only).
    fn membership_action(&mut self) -> Check {
        let n = self.nodes.len();
        let k = self.rng.random_range(0..n);
        let roll = self.rng.random_range(0..4);
        let in_view = self
            .views()
            .log
            .current()
            .member(&self.nodes[k].id)
            .is_some();
        let desired = self.views().desired.contains(&k);
        let removed = self.views().removed.contains(&k);
        let member = self.truth[k].role == Role::Member;
        match roll {
            // A dead member is removed (`cluster remove`, or `dead_member_timeout`): a data
            // fault, one at a time.
            0 if in_view
                && desired
                && !self.nodes[k].up
                && self.unhealed_faults() == 0
                && (!member || self.desired_members() > 3) =>
            {
                self.views_mut().desired.remove(&k);
                self.views_mut().faults.push((k, None));
                self.stats.reconfigurations += 1;
                let id = self.nodes[k].id.clone();
                self.log(|| format!("operator removes {id}"));
            }
            // A spare (or a removed node, back with an empty data directory) joins.
            1 if !desired && !in_view && (!removed || self.unhealed_faults() == 0) => {
                if removed {
                    // Its old data is not needed any more: the removal healed.
                    self.crash(k);
                    let node = &mut self.nodes[k];
                    node.incarnation += 1 + self.rng.random_range(0..1000);
                    for st in node.stores.values_mut() {
                        *st = Store::new();
                    }
                    node.vlog = ViewLog::new();
                    node.applied = 0;
                    let inc = Incarnation(node.incarnation);
                    self.truth[k].incarnation = inc;
                    self.nodes[k].view[k].incarnation = inc;
                    self.views_mut().removed.remove(&k);
                }
                self.views_mut().desired.insert(k);
                if !self.nodes[k].up {
                    self.start(k)?;
                }
                self.stats.reconfigurations += 1;
                let id = self.nodes[k].id.clone();
                self.log(|| format!("{id} joins"));
            }
            // A member becomes a mirror of every context, or a mirror a member.
            2 if self.cfg.role_changes && desired && (!member || self.desired_members() > 3) => {
                let m = &mut self.truth[k];
                m.role = if member { Role::Mirror } else { Role::Member };
                m.mirror_prefixes.clear();
                let role = m.role;
                for node in &mut self.nodes {
                    node.view[k].role = role;
                    node.view[k].mirror_prefixes.clear();
                }
                self.stats.reconfigurations += 1;
                let id = self.nodes[k].id.clone();
                self.log(|| format!("{id} becomes {role:?}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// One step of the view machinery: the coordinator, a node's replay, a node's settling,
    /// an operator's action, or a late context opened.
    fn views_step(&mut self) -> Check {
        let n = self.nodes.len();
        let i = self.rng.random_range(0..n);
        match self.rng.random_range(0..10) {
            0..=2 => self.coordinate(),
            3..=4 => {
                let k = self.rng.random_range(1..4);
                self.replay(i, k)
            }
            5..=7 => self.settle_node(i),
            8 => self.membership_action(),
            _ => match (0..self.contexts.len()).find(|&k| !self.opened[k]) {
                Some(k) => self.open(k),
                None => Ok(()),
            },
        }
    }

    fn random_step(&mut self) -> Check {
        let n = self.nodes.len();
        if self.views.is_some() && self.rng.random_bool(0.1) {
            self.views_step()?;
            self.stats.steps += 1;
            return Ok(());
        }
        let roll = self.rng.random_range(0..1000);
        match roll {
            0..=449 => self.deliver_one()?,
            450..=489 => {
                let i = self.rng.random_range(0..n);
                let c = self.contexts[self.rng.random_range(0..self.contexts.len())].clone();
                self.flush(i, &c)?;
            }
            490..=599 => {
                self.now += self.rng.random_range(1..=30);
                self.tick_all()?;
            }
            600..=749 => {
                let i = self.rng.random_range(0..n);
                let c = self.contexts[self.rng.random_range(0..self.contexts.len())].clone();
                // Clients mostly find the writer.
                let i = if self.rng.random_bool(0.8) {
                    (0..n)
                        .find(|&k| {
                            self.nodes[k].up
                                && self.nodes[k]
                                    .parts
                                    .get(&c)
                                    .is_some_and(|p| p.writer().is_some())
                        })
                        .unwrap_or(i)
                } else {
                    i
                };
                self.client_append(i, &c)?;
            }
            750..=769 => {
                let i = self.rng.random_range(0..n);
                if self.nodes[i].up {
                    self.crash(i);
                    // Failure detection follows in gossip steps.
                    if self.truth[i].state != MemberState::Left {
                        self.truth[i].state = MemberState::Dead;
                    }
                }
            }
            770..=799 => {
                let i = self.rng.random_range(0..n);
                if !self.nodes[i].up && self.may_restart(i) {
                    if self.truth[i].state == MemberState::Dead {
                        self.truth[i].state = MemberState::Alive;
                    }
                    self.start(i)?;
                }
            }
            800..=819 => {
                let a = self.rng.random_range(0..n);
                let b = self.rng.random_range(0..n);
                if a != b {
                    self.cut.insert((a, b));
                    if self.rng.random_bool(0.7) {
                        self.cut.insert((b, a));
                    }
                    self.log(|| format!("cut n{a} - n{b}"));
                }
            }
            820..=839 => {
                if self.rng.random_bool(0.3) {
                    self.cut.clear();
                    self.log(|| "heal all".to_owned());
                } else if let Some(&pair) = self.cut.iter().next() {
                    self.cut.remove(&pair);
                }
            }
            840..=939 => {
                let i = self.rng.random_range(0..n);
                let m = self.rng.random_range(0..n);
                self.gossip(i, m, None)?;
            }
            940..=969 => {
                // A wrong view: a live node suspected dead, or a dead one thought alive.
                let i = self.rng.random_range(0..n);
                let m = self.rng.random_range(0..n);
                if i != m && self.truth[m].state != MemberState::Left {
                    let s = if self.rng.random_bool(0.5) {
                        MemberState::Dead
                    } else {
                        MemberState::Alive
                    };
                    self.gossip(i, m, Some(s))?;
                }
            }
            970..=979 => {
                let i = self.rng.random_range(0..n);
                if self.views.is_some() {
                    // Losing a data directory is a data fault: one at a time (with removals).
                    let in_view = self
                        .views()
                        .log
                        .current()
                        .member(&self.nodes[i].id)
                        .is_some();
                    if self.wipes < self.max_wipes
                        && self.stats.steps > 100
                        && self.unhealed_faults() == 0
                        && !self.views().removed.contains(&i)
                    {
                        self.wipe(i);
                        self.truth[i].state = MemberState::Dead;
                        if in_view {
                            self.views_mut().faults.push((i, None));
                        }
                    }
                } else if self.wipes < self.max_wipes && self.stats.steps > 100 && self.settled() {
                    // Losing a data directory is one fault: not while a reconfiguration
                    // (removing a member that holds entries is another) is still in progress.
                    self.wipe(i);
                    if self.truth[i].state != MemberState::Left {
                        self.truth[i].state = MemberState::Dead;
                    }
                }
            }
            980..=989 if self.views.is_some() => self.membership_action()?,
            980..=989 => {
                // One reconfiguration at a time, each completed (every context has a writer
                // established for the new set, its record committed) before the next, and not
                // while a wiped member is still catching up (settled covers both).
                if self.cfg.reconfigure && self.settled() {
                    if let Some(m) = self.truth.iter().position(|x| x.state == MemberState::Left) {
                        self.truth[m].state = if self.nodes[m].up {
                            MemberState::Alive
                        } else {
                            MemberState::Dead
                        };
                        self.log(|| format!("re-add n{m}"));
                    } else {
                        let m = self.rng.random_range(0..self.cfg.nodes);
                        self.truth[m].state = MemberState::Left;
                        self.log(|| format!("remove n{m}"));
                    }
                    self.stats.reconfigurations += 1;
                }
            }
            _ => {
                // Everyone catches up with gossip (and the view log).
                for i in 0..n {
                    if self.nodes[i].view != self.truth {
                        self.nodes[i].view = self.truth.clone();
                        self.push_view(i)?;
                    }
                    if self.views.is_some() {
                        self.replay(i, usize::MAX / 2)?;
                    }
                }
            }
        }
        self.stats.steps += 1;
        Ok(())
    }

    // ---------------------------------------------------------------- invariants

    fn check(&mut self) -> Check {
        let majority = 2usize; // R = 3
        for c in self.contexts.clone() {
            // (c) log matching between every pair of stores, by Merkle roots.
            let views: Vec<(usize, EpochHistory, u64)> = (0..self.nodes.len())
                .map(|i| {
                    let s = &self.nodes[i].stores[&c];
                    (i, s.history(), s.size())
                })
                .collect();
            for a in 0..views.len() {
                for b in a + 1..views.len() {
                    let (ia, ha, sa) = &views[a];
                    let (ib, hb, sb) = &views[b];
                    let common = common_prefix(LogView::new(ha, *sa), LogView::new(hb, *sb))
                        .min(*sa)
                        .min(*sb);
                    let ra = self.nodes[*ia].stores[&c].roots[common as usize];
                    let rb = self.nodes[*ib].stores[&c].roots[common as usize];
                    ensure!(
                        ra == rb,
                        "log matching broken in {c}: n{ia} and n{ib} agree on epochs up to \
                         {common} but not on entries"
                    );
                }
            }
            // (c) committed prefixes agree.
            for i in 0..self.nodes.len() {
                let Some(p) = self.nodes[i].parts.get(&c) else {
                    continue;
                };
                let ci = p.replica().commit_index() as usize;
                let store = &self.nodes[i].stores[&c];
                ensure!(
                    ci <= store.log.len(),
                    "n{i} {c}: commit index {ci} beyond its log {}",
                    store.log.len()
                );
                let canon = self.committed.entry(c.clone()).or_default();
                let shared = ci.min(canon.leaves.len());
                ensure!(
                    shared == 0 || store.roots[shared] == canon.roots[shared],
                    "n{i} {c}: committed prefix of {shared} entries differs from another node's"
                );
                if ci > canon.leaves.len() {
                    canon.leaves = store.log[..ci].iter().map(|e| e.hash).collect();
                    canon.roots = store.roots[..=ci].to_vec();
                }
            }
            // (d) promises and histories.
            for i in 0..self.nodes.len() {
                if let Some(p) = self.nodes[i].parts.get(&c) {
                    let r = p.replica();
                    if let (Some(last), Some(pr)) = (r.history().last_epoch(), r.promised()) {
                        ensure!(
                            last <= pr,
                            "n{i} {c}: history epoch {last} above promise {pr}"
                        );
                    }
                    ensure!(
                        r.size() == self.nodes[i].stores[&c].size(),
                        "n{i} {c}: replica size {} but store holds {}",
                        r.size(),
                        self.nodes[i].stores[&c].size()
                    );
                }
            }
        }
        // (b) acknowledged entries keep a majority of copies (minus copies lost to wipes).
        // Members only: a mirror's copy does not count (in views mode a node counts while it is
        // a member by the truth or in a view claims still consult, so a copy on a member that
        // just became a mirror counts until its contexts moved).
        let counted: Vec<usize> = match &self.views {
            None => (0..self.cfg.nodes).collect(),
            Some(v) => {
                let range = v.log.range();
                let consulted: Vec<_> = range.earlier.iter().chain([v.log.current()]).collect();
                (0..self.nodes.len())
                    .filter(|&k| {
                        self.truth[k].role == Role::Member
                            || consulted.iter().any(|view| {
                                view.member(&self.nodes[k].id)
                                    .is_some_and(|m| m.role == Role::Member)
                            })
                    })
                    .collect()
            }
        };
        for ((c, seq), h) in &self.acked {
            let holders = counted
                .iter()
                .filter(|&&k| self.nodes[k].stores[c].durable_hash(*seq) == Some(*h))
                .count();
            // Views mode: removals may shrink a set below three members.
            let majority = match &self.views {
                Some(v) => {
                    let n = placement::replica_set(c, &v.log.current().members, 3).len();
                    majority.min(n / 2 + 1)
                }
                None => majority,
            };
            ensure!(
                holders + self.wipes >= majority,
                "acknowledged {c}#{seq} is held by only {holders} nodes ({} wiped)",
                self.wipes
            );
        }
        Ok(())
    }

    // ---------------------------------------------------------------- the end

    fn converge(&mut self) -> Check {
        self.nemesis = false;
        self.drop_rate = 0.0;
        self.cut.clear();
        // Everything restarts, except (views mode) nodes being removed and removed ones.
        let restart: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.views
                    .as_ref()
                    .is_none_or(|v| !v.removed.contains(&i) && self.may_restart(i))
            })
            .collect();
        for i in 0..self.nodes.len() {
            if restart.contains(&i) {
                if self.truth[i].state == MemberState::Dead {
                    self.truth[i].state = MemberState::Alive;
                }
            } else if !self.nodes[i].up {
                // Stays down: failure detection sees it.
                self.truth[i].state = MemberState::Dead;
            }
        }
        for &i in &restart {
            if !self.nodes[i].up {
                self.start(i)?;
            }
        }
        for k in 0..self.contexts.len() {
            self.open(k)?;
        }
        for i in 0..self.nodes.len() {
            self.nodes[i].view = self.truth.clone();
            self.push_view(i)?;
        }
        self.log(|| "converging".to_owned());
        let deadline = self.now + 30_000;
        // The last append per context: sequence, hash, the writer's epoch. An append whose writer
        // stepped down has an unknown outcome; it is tried again with the next writer.
        let mut appended: BTreeMap<String, (u64, Hash, Epoch)> = BTreeMap::new();
        let mut rounds = 0u64;
        while self.now < deadline {
            rounds += 1;
            // Deliver everything due, in order.
            self.net.sort_by_key(|p| p.at);
            while let Some(p) = self.net.first() {
                if p.at > self.now {
                    break;
                }
                let p = self.net.remove(0);
                self.deliver(p)?;
                self.check()?;
            }
            self.now += 10;
            self.flush_all()?;
            self.tick_all()?;
            self.check()?;
            if self.views.is_some() && rounds.is_multiple_of(5) {
                // The view machinery keeps running: the coordinator, every node's replay and
                // settling.
                self.coordinate()?;
                for i in 0..self.nodes.len() {
                    self.replay(i, usize::MAX / 2)?;
                    self.settle_node(i)?;
                }
                self.check()?;
            }
            if !rounds.is_multiple_of(20) {
                continue;
            }
            let mut done = !self.views_pending();
            for c in self.contexts.clone() {
                match self.converged(&c) {
                    Some(w) => {
                        let epoch = self.nodes[w].parts[&c].writer().map(|x| x.epoch().clone());
                        let outcome = appended.get(&c).map(|(seq, h, e)| {
                            (
                                self.acked.get(&(c.clone(), *seq)) == Some(h),
                                Some(e) == epoch.as_ref(),
                            )
                        });
                        match outcome {
                            Some((true, _)) => {}
                            Some((false, true)) => done = false,
                            None | Some((false, false)) => {
                                done = false;
                                if let (Ok(seq), Some(e)) =
                                    (self.nodes[w].parts[&c].next_sequence(self.now), epoch)
                                {
                                    self.client_append(w, &c)?;
                                    let h = self.nodes[w].stores[&c].log[seq as usize - 1].hash;
                                    appended.insert(c.clone(), (seq, h, e));
                                }
                            }
                        }
                    }
                    None => done = false,
                }
            }
            if done {
                return self.final_checks();
            }
        }
        let mut why = String::new();
        for c in &self.contexts {
            let _ = write!(why, "{c}: ");
            for (i, n) in self.nodes.iter().enumerate() {
                let Some(p) = n.parts.get(c) else {
                    let _ = write!(why, "n{i}[down] ");
                    continue;
                };
                let _ = write!(
                    why,
                    "n{i}[{}, size {}, promised {:?}] ",
                    match p.role() {
                        ledger_replication::RoleState::Follower => "follower".to_owned(),
                        ledger_replication::RoleState::Claiming(cl) =>
                            format!("claiming {:?}", cl.state()),
                        ledger_replication::RoleState::Writing(w) => format!(
                            "writing {} (commit {}, accepting {:?}, stopped {:?})",
                            w.epoch(),
                            w.commit_index(),
                            w.can_accept(self.now),
                            w.stopped()
                        ),
                    },
                    p.replica().size(),
                    p.replica().promised().map(|e| e.to_string())
                );
                if self.views.is_some() {
                    let _ = write!(
                        why,
                        "(view {}, writer {:?}, {:?}) ",
                        p.view(),
                        p.placement_writer().map(|w| w.to_string()),
                        p.availability()
                    );
                }
            }
        }
        if let Some(v) = &self.views {
            let desired: Vec<Member> = v.desired.iter().map(|&k| self.truth[k].clone()).collect();
            let next = v
                .log
                .next_change(&desired, |id| self.nodes[self.index[id]].up);
            let _ = write!(
                why,
                "; view {} floor {} next {next:?}",
                v.log.version(),
                v.log.floor()
            );
        }
        Err(format!(
            "did not converge within 30 s of quiet: {why}; final appends {appended:?}; \
             writer per placement: {:?}",
            self.contexts
                .iter()
                .map(|c| placement::writer(c, &self.placement_members(), 3))
                .collect::<Vec<_>>()
        ))
    }

    /// Every context has a writer established for the replica set of the current membership,
    /// with its epoch record committed.
    fn settled(&self) -> bool {
        self.contexts.iter().all(|c| {
            let mut target = placement::replica_voters(c, &self.truth, 3);
            target.sort();
            self.nodes.iter().any(|n| {
                n.up && n.parts.get(c).and_then(|p| p.writer()).is_some_and(|w| {
                    w.stopped().is_none()
                        && w.quorum().target() == target.as_slice()
                        && w.history().last().is_some_and(|r| r.committed)
                })
            })
        })
    }

    /// Views mode: the coordinator still has a change to make (or one waiting).
    fn views_pending(&self) -> bool {
        let Some(v) = &self.views else {
            return false;
        };
        let desired: Vec<Member> = v.desired.iter().map(|&k| self.truth[k].clone()).collect();
        v.log
            .next_change(&desired, |id| self.nodes[self.index[id]].up)
            != NextChange::None
    }

    /// The membership placement follows at the end: gossip's (the truth), or the agreed
    /// view's with the real liveness.
    fn placement_members(&self) -> Vec<Member> {
        let Some(v) = &self.views else {
            return self.truth.clone();
        };
        v.log
            .current()
            .members
            .iter()
            .map(|m| {
                let n = &self.nodes[self.index[&m.id]];
                let mut m = m.clone();
                m.state = if n.up && n.incarnation == m.incarnation.0 {
                    MemberState::Alive
                } else {
                    MemberState::Dead
                };
                m
            })
            .collect()
    }

    /// The writer of `c` when every replica and every mirror equals it.
    fn converged(&self, c: &str) -> Option<usize> {
        let members = self.placement_members();
        let mut target = placement::replica_set(c, &members, 3);
        target.extend(placement::mirrors(c, &members));
        let w = self.index[&placement::writer(c, &members, 3)?];
        let part = self.nodes[w].parts.get(c)?;
        let writer = part.writer()?;
        writer.can_accept(self.now).ok()?;
        let root = self.nodes[w].stores[c].roots.last().copied();
        for id in target {
            let n = &self.nodes[self.index[&id]];
            if n.stores[c].roots.last().copied() != root {
                return None;
            }
        }
        Some(w)
    }

    fn final_checks(&mut self) -> Check {
        let members = self.placement_members();
        for c in self.contexts.clone() {
            let mut target = placement::replica_set(&c, &members, 3);
            target.extend(placement::mirrors(&c, &members));
            // A mirror whose prefixes do not match the context never received any of it.
            for m in &self.truth {
                if m.role == Role::Mirror && !m.mirrors(&c) {
                    let store = &self.nodes[self.index[&m.id]].stores[&c];
                    ensure!(
                        store.log.is_empty(),
                        "mirror {} holds {} entries of {c}, outside its prefixes",
                        m.id,
                        store.log.len()
                    );
                }
            }
            for id in &target {
                let store = &self.nodes[self.index[id]].stores[&c];
                for ((ac, seq), h) in &self.acked {
                    if *ac == c {
                        ensure!(
                            store.log.get(*seq as usize - 1).map(|e| e.hash) == Some(*h),
                            "after convergence {id} lacks acknowledged {c}#{seq}"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

// -------------------------------------------------------------------- scripted schedules

/// A schedule written by hand: no nemesis, no message loss, every message delivered in time
/// order, the invariants checked after every delivery.
impl World {
    fn scripted(cfg: Config, contexts: Vec<String>) -> World {
        let trace = std::env::var("SIM_TRACE").is_ok();
        let mut w = World::with_contexts(cfg, 1, trace, contexts);
        w.nemesis = false;
        w.drop_rate = 0.0;
        w
    }

    /// Panics with the end of the trace (`SIM_TRACE=1`) if `r` failed.
    fn ok_or_trace(&self, r: Check) {
        if let Err(e) = r {
            let trace = self
                .trace
                .as_ref()
                .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
                .unwrap_or_else(|| "(SIM_TRACE=1 for a trace)".to_owned());
            panic!("{e}\n--- last events ---\n{trace}");
        }
    }

    fn start_all(&mut self) -> Check {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// `ms` of time: everything due delivered in order, ticks and syncs every 10 ms, and (views
    /// mode) the coordinator, every replay and every node's settling every 50 ms.
    fn run_for(&mut self, ms: u64) -> Check {
        let end = self.now + ms;
        while self.now < end {
            self.net.sort_by_key(|p| p.at);
            while self.net.first().is_some_and(|p| p.at <= self.now) {
                let p = self.net.remove(0);
                self.deliver(p)?;
                self.check()?;
            }
            self.now += 10;
            self.flush_all()?;
            self.tick_all()?;
            if self.views.is_some() && self.now.is_multiple_of(50) {
                self.coordinate()?;
                for i in 0..self.nodes.len() {
                    self.replay(i, usize::MAX / 2)?;
                    self.settle_node(i)?;
                }
            }
            self.check()?;
        }
        Ok(())
    }

    /// Everyone (up) learns the truth from gossip.
    fn gossip_all(&mut self) -> Check {
        for i in 0..self.nodes.len() {
            self.nodes[i].view = self.truth.clone();
            self.push_view(i)?;
        }
        Ok(())
    }

    /// Node `i` crashes and everyone sees it dead.
    fn kill(&mut self, i: usize) -> Check {
        self.crash(i);
        self.truth[i].state = MemberState::Dead;
        self.gossip_all()
    }

    /// Appends through every node that writes `ctx`, for up to `ms`, until one append of `ctx`
    /// is acknowledged at quorum after `since` entries were; returns whether one was.
    fn append_until_acked(&mut self, ctx: &str, ms: u64) -> Result<bool, String> {
        let before = self.acked.keys().filter(|(c, _)| c == ctx).count();
        let end = self.now + ms;
        while self.now < end {
            for i in 0..self.nodes.len() {
                if self.nodes[i]
                    .parts
                    .get(ctx)
                    .is_some_and(|p| p.writer().is_some())
                {
                    self.client_append(i, ctx)?;
                }
            }
            self.run_for(20)?;
            if self.acked.keys().filter(|(c, _)| c == ctx).count() > before {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The epochs of `ctx` node `i` activated.
    fn activated_by(&self, i: usize, ctx: &str) -> Vec<Epoch> {
        let id = &self.nodes[i].id;
        self.activations
            .iter()
            .filter(|(c, e)| c == ctx && e.node() == id)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The operator takes node `i` out of the desired membership.
    fn operator_removes(&mut self, i: usize) {
        self.views_mut().desired.remove(&i);
    }

    /// The operator wants node `i` in.
    fn operator_adds(&mut self, i: usize) {
        self.views_mut().desired.insert(i);
    }

    fn version(&self) -> u64 {
        self.views().log.version()
    }

    fn index_of(&self, id: &str) -> usize {
        self.index[&NodeId::from(id)]
    }
}

/// A context id whose rendezvous order over `nodes` satisfies `pick`.
fn context_where(nodes: &[&str], pick: impl Fn(&[&str]) -> bool) -> String {
    (0..10_000)
        .map(|k| format!("run-{k}"))
        .find(|c| {
            let mut order = nodes.to_vec();
            order.sort_by_key(|n| std::cmp::Reverse(placement::score(c, &NodeId::from(*n))));
            pick(&order)
        })
        .expect("some context id has that order")
}

fn describe(m: &Message<SimEntry>) -> String {
    match m {
        Message::PromiseRequest { epoch, view } => format!("promise? {epoch} view {view}"),
        Message::PromiseReply { epoch, answer } => match answer {
            ledger_replication::PromiseAnswer::Granted(h) => format!(
                "granted {epoch}: size {} last {:?}",
                h.size,
                h.history
                    .last()
                    .map(|r| (r.epoch.to_string(), r.start, r.committed))
            ),
            ledger_replication::PromiseAnswer::Refused { promised } => {
                format!("refused {epoch}: promised {promised}")
            }
            ledger_replication::PromiseAnswer::StaleView { view } => {
                format!("refused {epoch}: stale view, seen {view}")
            }
        },
        Message::Entries(e) => format!(
            "{:?} {} prev {} n {} (sender size {}, commit {})",
            e.header.kind,
            e.header.epoch,
            e.prev,
            e.entries.len(),
            e.header.head.size,
            e.header.commit_index
        ),
        Message::Cursor(h) => format!(
            "cursor size {} promised {:?} last {:?}",
            h.size,
            h.promised.as_ref().map(|e| e.to_string()),
            h.history.last().map(|r| (r.epoch.to_string(), r.start))
        ),
        Message::FetchRequest { epoch, after, upto } => format!("fetch {epoch} {after}..{upto}"),
    }
}

fn run(cfg: Config, seed: u64, trace: bool) -> (Result<Stats, String>, Option<VecDeque<String>>) {
    let mut w = World::new(cfg, seed, trace);
    let result = (|| {
        for i in 0..w.nodes.len() {
            w.start(i)?;
        }
        for step in 0..cfg.steps {
            w.random_step().map_err(|e| format!("step {step}: {e}"))?;
            w.check().map_err(|e| format!("step {step}: {e}"))?;
        }
        w.converge()?;
        Ok(w.stats.clone())
    })();
    (result, w.trace.take())
}

/// How many trace lines a failure report keeps (`SIM_TRACE_LINES`, default 4000).
fn trace_lines() -> usize {
    env_u64("SIM_TRACE_LINES").map_or(4000, |n| n as usize)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn simulate(name: &str, mut cfg: Config, default_seeds: u64, salt: u64) {
    if let Some(steps) = env_u64("SIM_STEPS") {
        cfg.steps = steps as usize;
    }
    let single = env_u64("SIM_SEED");
    let seeds: Vec<u64> = match single {
        Some(s) => vec![s],
        None => {
            let n = env_u64("SIM_SEEDS").unwrap_or(default_seeds);
            (0..n).map(|k| salt * 1_000_000 + k).collect()
        }
    };
    let started = Instant::now();
    let mut total = Stats::default();
    for &seed in &seeds {
        let outcome = std::panic::catch_unwind(|| run(cfg, seed, single.is_some()));
        let failure = match outcome {
            Ok((Ok(s), _)) => {
                total.steps += s.steps;
                total.delivered += s.delivered;
                total.acked += s.acked;
                total.activations += s.activations;
                total.quarantined += s.quarantined;
                total.crashes += s.crashes;
                total.wipes += s.wipes;
                total.reconfigurations += s.reconfigurations;
                total.view_changes += s.view_changes;
                total.settled_records += s.settled_records;
                continue;
            }
            Ok((Err(e), _)) => e,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_owned()),
        };
        // Replay the same seed with a trace.
        let trace = std::panic::catch_unwind(|| run(cfg, seed, true).1)
            .ok()
            .flatten()
            .map(|t| t.into_iter().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        panic!(
            "{name}: seed {seed} failed: {failure}\n--- last events ---\n{trace}\n\
             --- reproduce with:\n\
             SIM_SEED={seed} cargo test --release -p ledger-replication --test simulation {name}"
        );
    }
    eprintln!(
        "{name}: {} schedules in {:.1?}: {} steps, {} deliveries, {} acknowledged entries, \
         {} activations, {} quarantined, {} crashes, {} wipes, {} reconfigurations, \
         {} view changes, {} settled records",
        seeds.len(),
        started.elapsed(),
        total.steps,
        total.delivered,
        total.acked,
        total.activations,
        total.quarantined,
        total.crashes,
        total.wipes,
        total.reconfigurations,
        total.view_changes,
        total.settled_records
    );
}

#[test]
fn three_members_and_two_mirrors_two_contexts() {
    // The first mirror holds only ctx-1, the second both contexts.
    simulate(
        "three_members_and_two_mirrors_two_contexts",
        Config::classic(3, 2, 2, false),
        1_500,
        3,
    );
}

#[test]
fn five_nodes_two_contexts_with_reconfiguration() {
    simulate(
        "five_nodes_two_contexts_with_reconfiguration",
        Config::classic(5, 0, 2, true),
        1_000,
        5,
    );
}

#[test]
fn five_nodes_versioned_views_changes_in_any_order_and_late_contexts() {
    // Three members and two spares; joins, removals of dead members, wipes and restarts under
    // new incarnations, in whatever order the schedule makes them and `next_change` takes
    // them; four contexts, three of them opened late (during faults too).
    simulate(
        "five_nodes_versioned_views_changes_in_any_order_and_late_contexts",
        Config {
            views: true,
            spares: 2,
            open_at_start: 1,
            ..Config::classic(5, 0, 4, false)
        },
        400,
        7,
    );
}

#[test]
fn three_members_and_a_mirror_versioned_views() {
    // The mirror holds only ctx-1 and ctx-1x; members become mirrors and back.
    simulate(
        "three_members_and_a_mirror_versioned_views",
        Config {
            views: true,
            open_at_start: 1,
            role_changes: true,
            ..Config::classic(3, 1, 3, false)
        },
        400,
        11,
    );
}

// -------------------------------------------------------------------- scripted tests

fn scripted_config(views: bool, nodes: usize, spares: usize, open_at_start: usize) -> Config {
    Config {
        views,
        spares,
        open_at_start,
        ..Config::classic(nodes, 0, 1, false)
    }
}

/// Item D of issue 23: with one member of three dead, a new context (every engine run starts
/// one) takes appends within failure detection plus one claim. Without views creation needed
/// every member of the set.
#[test]
fn one_dead_member_of_three_does_not_block_a_new_context() {
    for views in [true, false] {
        let mut w = World::scripted(scripted_config(views, 3, 0, 0), vec!["run-1".to_owned()]);
        let outcome = (|| {
            w.start_all()?;
            w.run_for(200)?;
            w.kill(2)?;
            w.run_for(200)?;
            w.open(0)?;
            w.append_until_acked("run-1", 1_000)
        })();
        let acked = outcome.unwrap_or_else(|e| panic!("views {views}: {e}"));
        if views {
            assert!(
                acked,
                "a new context takes appends with one member of three dead"
            );
        } else {
            assert!(
                !acked,
                "without views creating a context needs the whole set"
            );
        }
    }
}

/// A node that was removed while it was down comes back with its stale view: its claims are
/// refused (`StaleView`) by every replica that saw a newer view, so it never creates a context
/// that already lives on the new sets, even with a replica of its old set that is empty.
#[test]
fn a_removed_node_with_a_stale_view_cannot_create_a_context_again() {
    let names = ["n0", "n1", "n2", "n3", "n4"];
    // Rendezvous order r, x, b, …: r and x get removed, b is the new set's first; r's epoch 1
    // ranks above b's, so b would grant it but for view fencing.
    let ctx = context_where(&names, |o| o[0] > o[2]);
    let mut w = World::scripted(scripted_config(true, 5, 0, 0), vec![ctx.clone()]);
    let mut order = names;
    order.sort_by_key(|n| std::cmp::Reverse(placement::score(&ctx, &NodeId::from(*n))));
    let [r, x, b, c, d] = order.map(|n| w.index_of(n));
    let outcome = (|| -> Check {
        w.start_all()?;
        w.run_for(200)?;
        for gone in [r, x] {
            w.kill(gone)?;
            w.operator_removes(gone);
            w.run_for(1_000)?;
        }
        assert_eq!(w.version(), 3, "both removed");
        // b is down while the context is created on {b, c, d}: its entries live on c and d.
        w.kill(b)?;
        w.open(0)?;
        assert!(w.append_until_acked(&ctx, 1_000)?);
        // b comes back cut off from c and d (which still see it dead): it holds nothing of the
        // context and keeps claiming its own epoch 1 in vain.
        w.crash(b);
        w.start(b)?;
        for peer in [c, d] {
            w.cut.insert((b, peer));
            w.cut.insert((peer, b));
        }
        // r restarts with the view it had (never learning the later ones): it ranks first.
        w.start(r)?;
        for _ in 0..20 {
            w.run_for(100)?;
            for i in [r, b] {
                w.client_append(i, &ctx)?;
            }
        }
        assert!(
            w.activated_by(r, &ctx).is_empty(),
            "the stale node activated"
        );
        let p = &w.nodes[r].parts[&ctx];
        assert!(
            p.writer().is_none() && matches!(p.role(), ledger_replication::RoleState::Follower)
        );
        // Healed, the context converges on its real set.
        w.cut.clear();
        Ok(())
    })();
    w.ok_or_trace(outcome);
    let done = w.converge();
    w.ok_or_trace(done);
}

/// The two other members of a three-member set die and are removed, one after the other: the
/// survivor holds every acknowledged entry, but a majority of the set the last epoch was
/// claimed on left the view, so nothing proves it. The context reports `LostQuorum` naming the
/// member that left, raises no epoch, takes no append, and becomes writable again (with the
/// survivor's history) only when the operator accepts the loss.
#[test]
fn a_set_with_a_removed_majority_reports_lost_quorum_until_an_operator_accepts_the_loss() {
    let ctx = "run-lost".to_owned();
    let mut w = World::scripted(scripted_config(true, 3, 0, 1), vec![ctx.clone()]);
    let (a, b, c) = (0, 1, 2);
    let outcome = (|| -> Check {
        w.start_all()?;
        for _ in 0..3 {
            assert!(w.append_until_acked(&ctx, 1_000)?);
        }
        // a dies and is removed: the context moves to {b, c} (claimed there, settled).
        w.kill(a)?;
        w.operator_removes(a);
        w.run_for(2_000)?;
        assert_eq!(w.version(), 2);
        assert!(w.append_until_acked(&ctx, 1_000)?);
        // Then b: the epoch of {b, c} needs b, which is gone.
        w.kill(b)?;
        w.operator_removes(b);
        w.run_for(2_000)?;
        assert_eq!(w.version(), 3);
        let promised = |w: &World| w.nodes[c].parts[&ctx].replica().promised().cloned();
        let before = promised(&w);
        w.run_for(3_000)?;
        let p = &w.nodes[c].parts[&ctx];
        assert_eq!(
            p.availability(),
            Availability::LostQuorum {
                blocked: vec![w.nodes[b].id.clone()]
            }
        );
        assert!(p.writer().is_none());
        assert_eq!(
            promised(&w),
            before,
            "no epoch raised while the quorum is lost"
        );
        assert!(!w.append_until_acked(&ctx, 500)?);
        assert!(
            w.views().log.floor() < 3,
            "c holds the context and does not settle"
        );
        // The operator accepts the loss on the survivor.
        let now = w.now;
        let cmds = w.nodes[c]
            .parts
            .get_mut(&ctx)
            .unwrap()
            .accept_loss(now)
            .map_err(|e| e.to_string())?;
        w.execute(c, &ctx, cmds)?;
        assert!(
            w.append_until_acked(&ctx, 1_000)?,
            "writable after the accepted loss"
        );
        assert_eq!(w.nodes[c].parts[&ctx].availability(), Availability::Ok);
        Ok(())
    })();
    w.ok_or_trace(outcome);
    let done = w.converge();
    w.ok_or_trace(done);
}

/// Example C of issue 23: context X on {a, b, c} with acknowledged entries; c loses its data
/// and comes back while d and e join, both ranking above a and b, all at once. The view log
/// applies the changes one at a time, each claim consults the sets of the views not yet
/// settled, and the entries survive. Without views (gossip's membership as it comes) the same
/// schedule loses them.
#[test]
fn a_wiped_member_and_two_joins_at_once_lose_no_acknowledged_entry() {
    let names = ["n0", "n1", "n2", "n3", "n4"];
    // n3 and n4 (the joiners) and n2 (the wiped one) rank above n0 and n1.
    let ctx = context_where(&names, |o| {
        let top: BTreeSet<&str> = o[..3].iter().copied().collect();
        top == BTreeSet::from(["n2", "n3", "n4"])
    });
    for views in [true, false] {
        let mut w = World::scripted(scripted_config(views, 5, 2, 1), vec![ctx.clone()]);
        let outcome = (|| -> Check {
            w.start_all()?;
            for _ in 0..5 {
                assert!(w.append_until_acked(&ctx, 1_000)?);
            }
            w.run_for(300)?;
            w.wipe(2);
            w.truth[2].state = MemberState::Alive;
            w.start(2)?;
            for k in [3, 4] {
                w.truth[k].state = MemberState::Alive;
                if views {
                    w.operator_adds(k);
                }
            }
            w.gossip_all()?;
            w.run_for(3_000)?;
            if views {
                assert_eq!(w.version(), 4, "update, join, join");
            }
            assert!(w.append_until_acked(&ctx, 1_000)?);
            w.converge()
        })();
        match (views, outcome) {
            (true, r) => r.unwrap(),
            (false, r) => {
                let e = r.expect_err("gossip membership loses the entries");
                assert!(e.contains("lacks acknowledged"), "{e}");
            }
        }
    }
}

/// A member that lost its data comes back under a new incarnation while the view still names
/// the old one: it takes no part as a member (its old voter is gone, the new one is not in the
/// view yet), so it cannot create the context afresh from an empty log with a member that never
/// received it; the context waits for the member that holds the entries.
#[test]
fn a_wiped_member_takes_no_part_until_the_view_names_its_new_incarnation() {
    let names = ["n0", "n1", "n2"];
    // c = n2 writes first, then a = n0, then b = n1; n2's epoch 1 ranks above n0's.
    let ctx = context_where(&names, |o| o == ["n2", "n0", "n1"]);
    let mut w = World::scripted(scripted_config(true, 3, 0, 1), vec![ctx.clone()]);
    let (a, b, c) = (0, 1, 2);
    let outcome = (|| -> Check {
        // a is cut off while the entries are written: they live on b and c.
        for peer in [b, c] {
            w.cut.insert((a, peer));
            w.cut.insert((peer, a));
        }
        w.start_all()?;
        for _ in 0..3 {
            assert!(w.append_until_acked(&ctx, 1_000)?);
        }
        w.run_for(200)?;
        w.kill(b)?;
        w.wipe(c);
        w.cut.clear();
        w.truth[c].state = MemberState::Alive;
        w.start(c)?;
        w.gossip_all()?;
        // It learns the view from its peers at once, before the coordinator names its new
        // incarnation.
        w.replay(c, usize::MAX / 2)?;
        w.run_for(2_000)?;
        let me = w.nodes[c].voter();
        assert!(
            w.activated_by(c, &ctx).iter().all(|e| e.writer != me),
            "the wiped node created the context"
        );
        assert_eq!(w.version(), 2, "the view names c's new incarnation");
        let p = &w.nodes[a].parts[&ctx];
        assert!(
            matches!(p.availability(), Availability::Waiting { ref blocked } if blocked.contains(&w.nodes[b].id)),
            "{:?}",
            p.availability()
        );
        assert!(!w.append_until_acked(&ctx, 300)?);
        Ok(())
    })();
    w.ok_or_trace(outcome);
    let done = w.converge();
    w.ok_or_trace(done);
}
