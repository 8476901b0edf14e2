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
    AckLevel, Command, Entries, Epoch, EpochHistory, LogEntry, LogView, Message, NodeId,
    Participant, PersistentState, Settings, Voter, common_prefix,
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
    view: Vec<Member>,
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
        let contexts: Vec<String> = (0..cfg.contexts).map(|i| format!("ctx-{i}")).collect();
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
            });
        }
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
            wipes: 0,
            max_wipes,
            nemesis: true,
            own_append: false,
            ops: 0,
            trace: trace.then(VecDeque::new),
            stats: Stats::default(),
        };
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
        for c in self.contexts.clone() {
            let store = &self.nodes[i].stores[&c];
            let p = Participant::new(
                c.clone(),
                me.clone(),
                store.state.clone(),
                store.size(),
                self.settings.clone(),
            );
            self.nodes[i].parts.insert(c.clone(), p);
        }
        self.log(|| format!("start {me}"));
        self.push_view(i)
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
        let inc = node.incarnation;
        let id = node.id.clone();
        for m in &mut self.truth {
            if m.id == id {
                m.incarnation = ledger_replication::Incarnation(inc);
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
        let view = self.nodes[i].view.clone();
        for c in self.contexts.clone() {
            let now = self.now;
            let cmds = match self.nodes[i].parts.get_mut(&c) {
                Some(p) => p.on_membership(view.clone(), now),
                None => continue,
            };
            self.execute(i, &c, cmds)?;
        }
        Ok(())
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

    fn random_step(&mut self) -> Check {
        let n = self.nodes.len();
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
                if !self.nodes[i].up {
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
                // Losing a data directory is one fault: not while a reconfiguration (removing a
                // member that holds entries is another) is still in progress.
                if self.wipes < self.max_wipes && self.stats.steps > 100 && self.settled() {
                    self.wipe(i);
                    if self.truth[i].state != MemberState::Left {
                        self.truth[i].state = MemberState::Dead;
                    }
                }
            }
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
                // Everyone catches up with gossip.
                for i in 0..n {
                    if self.nodes[i].view != self.truth {
                        self.nodes[i].view = self.truth.clone();
                        self.push_view(i)?;
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
        for ((c, seq), h) in &self.acked {
            // Members only: a mirror's copy does not count.
            let holders = self.nodes[..self.cfg.nodes]
                .iter()
                .filter(|n| n.stores[c].durable_hash(*seq) == Some(*h))
                .count();
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
        for i in 0..self.nodes.len() {
            if self.truth[i].state == MemberState::Dead {
                self.truth[i].state = MemberState::Alive;
            }
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                self.start(i)?;
            }
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
            if !rounds.is_multiple_of(20) {
                continue;
            }
            let mut done = true;
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
                let p = &n.parts[c];
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
            }
        }
        Err(format!(
            "did not converge within 30 s of quiet: {why}; final appends {appended:?}; \
             writer per placement: {:?}",
            self.contexts
                .iter()
                .map(|c| placement::writer(c, &self.truth, 3))
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

    /// The writer of `c` when every replica and every mirror equals it.
    fn converged(&self, c: &str) -> Option<usize> {
        let mut target = placement::replica_set(c, &self.truth, 3);
        target.extend(placement::mirrors(c, &self.truth));
        let w = self.index[&placement::writer(c, &self.truth, 3)?];
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
        for c in self.contexts.clone() {
            let mut target = placement::replica_set(&c, &self.truth, 3);
            target.extend(placement::mirrors(&c, &self.truth));
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
         {} activations, {} quarantined, {} crashes, {} wipes, {} reconfigurations",
        seeds.len(),
        started.elapsed(),
        total.steps,
        total.delivered,
        total.acked,
        total.activations,
        total.quarantined,
        total.crashes,
        total.wipes,
        total.reconfigurations
    );
}

#[test]
fn three_members_and_two_mirrors_two_contexts() {
    // The first mirror holds only ctx-1, the second both contexts.
    simulate(
        "three_members_and_two_mirrors_two_contexts",
        Config {
            nodes: 3,
            mirrors: 2,
            contexts: 2,
            steps: 1_500,
            reconfigure: false,
        },
        1_500,
        3,
    );
}

#[test]
fn five_nodes_two_contexts_with_reconfiguration() {
    simulate(
        "five_nodes_two_contexts_with_reconfiguration",
        Config {
            nodes: 5,
            mirrors: 0,
            contexts: 2,
            steps: 1_500,
            reconfigure: true,
        },
        1_000,
        5,
    );
}
