//! The active writer of one context in one epoch.
//!
//! A [`Writer`] exists only after a [`crate::claim::Claim`] established its epoch: promises from a
//! majority of every set of its quorum, its log caught up to the best history among the answers,
//! and its own epoch record written. From then on it
//! - assigns sequences (`next_sequence`), hands the entries to its own replica and ships them to
//!   every follower and mirror, in batches, with bounded data in flight per follower;
//! - tracks each follower's *matched* position (the prefix of the follower's durable log that is
//!   the writer's, computed from the follower's cursor by [`common_prefix`]) and whether the
//!   follower holds this epoch's record;
//! - computes what is acknowledged at each [`AckLevel`]: `writer` = its own durable size,
//!   `quorum` = the largest position held (with this epoch's record) by a majority of every set of
//!   the quorum, counting itself and never mirrors, and never below the epoch's start (Raft's rule:
//!   entries of older epochs are committed only together with one of the current epoch's),
//!   `all` = `quorum` and every live member of the replica set;
//! - marks its epoch record committed once a majority of every set holds it, so later claims no
//!   longer need older replica sets;
//! - steps down at once on any sign of a higher epoch, and refuses appends (without stepping down)
//!   while it has not heard from a majority for `writer_lease_ms`, so a writer cut off in a
//!   minority stops growing a tail nobody will keep.
//!
//! # Why quorum acknowledgements survive a change of writer
//! An entry acknowledged at `quorum` in epoch `e` is durable on a majority `M` of a set `S` of
//! `e`'s quorum, and each member of `M` promised `e` when it accepted it. A later epoch `f > e` is
//! established only with promises from a majority of a set every later quorum shares with `e`'s
//! (the same target, or a joint quorum during a reconfiguration), so some member of `M` promised
//! `f`, after accepting the entry (once it promised `f` it refuses `e`). Its answer shows the entry
//! and a last epoch of at least `e`; the best history (highest last epoch, then longest) contains
//! the entry too (log matching, and by induction every writer between `e` and `f` started from a
//! log that had it). The writer of `f` catches up to that history before writing, and a replica
//! quarantines only what parts from the writer's log. So the entry is never lost.

use crate::epoch::{Epoch, EpochHistory, LogView, common_prefix};
use crate::identity::{Incarnation, NodeId, Voter};
use crate::protocol::{
    AckLevel, Command, Entries, EntriesHeader, EntriesKind, Head, LogEntry, Message, Settings,
    StepDown,
};
use crate::quorum::Quorum;
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Why an append was not accepted. The first three are worth a retry elsewhere or later.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error(
        "this node is not the writer of the context (writer: {})",
        name(writer)
    )]
    NotWriter { writer: Option<NodeId> },
    #[error("the writer is establishing its epoch; retry shortly")]
    Establishing,
    #[error("the writer has heard from no majority of the replica set for {lease_ms} ms; retry")]
    LeaseExpired { lease_ms: u64 },
    #[error("expected sequence {expected}, found {found}")]
    BadSequence { expected: u64, found: u64 },
}

fn name(writer: &Option<NodeId>) -> String {
    writer
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), NodeId::to_string)
}

/// What the writer knows of one follower (a voter of its quorum, or a mirror).
#[derive(Clone, Debug)]
struct Progress {
    /// The incarnation the follower answered from; progress of another incarnation is dropped.
    incarnation: Option<Incarnation>,
    /// Mirrors and nodes outside the quorum: shipped to, never counted.
    learner: bool,
    /// Leading entries of the follower's durable log that are the writer's.
    matched: u64,
    /// `matched` comes from a cursor sent after the follower promised this epoch.
    promised_this: bool,
    /// The follower holds this epoch's record (it reached the epoch's start).
    has_record: bool,
    /// Highest position shipped; `None` until the first cursor (probing).
    sent: Option<u64>,
    /// Last message of any kind (heartbeats included).
    last_sent: u64,
    /// Last batch with entries (what a retransmission timer measures from).
    last_shipped: u64,
    last_progress: u64,
    /// Last cursor showing this epoch as the follower's promise (for the lease).
    last_heard: Option<u64>,
}

impl Progress {
    fn new(incarnation: Option<Incarnation>, learner: bool) -> Self {
        Progress {
            incarnation,
            learner,
            matched: 0,
            promised_this: false,
            has_record: false,
            sent: None,
            last_sent: 0,
            last_shipped: 0,
            last_progress: 0,
            last_heard: None,
        }
    }
}

/// The writer of one context in one epoch.
#[derive(Clone, Debug)]
pub struct Writer {
    me: Voter,
    epoch: Epoch,
    quorum: Quorum,
    start: u64,
    history: EpochHistory,
    /// Last sequence assigned (= the writer's log size once its replica applied them).
    size: u64,
    progress: BTreeMap<NodeId, Progress>,
    /// Live members per membership; `None` (not told yet) counts every voter as live.
    live: Option<BTreeSet<NodeId>>,
    commit_index: u64,
    /// How much of the writer's own log is durable, as the runtime reported it
    /// ([`Self::on_own_durable`]). The writer counts itself only up to here: it ships entries
    /// before its own fsync completes, so its replica's cursor can run ahead of its disk.
    own_durable: u64,
    /// The latest time an event brought (for messages sent from steps that carry no time).
    now: u64,
    acked: BTreeMap<AckLevel, u64>,
    settings: Settings,
    stopped: Option<StepDown>,
}

impl Writer {
    /// Starts writing in `epoch`. `history` is the writer's history, ending with the record of
    /// `epoch` (already saved by its own replica), `size` its log size, `granted` the voters whose
    /// promises established the epoch (heard from now, for the lease), `learners` the mirrors.
    /// Returns the writer and its first commands: `Activated`, then a probe to every follower.
    #[allow(clippy::too_many_arguments)]
    pub fn new<E>(
        me: Voter,
        epoch: Epoch,
        history: EpochHistory,
        size: u64,
        granted: &[Voter],
        learners: &[NodeId],
        settings: Settings,
        now: u64,
    ) -> (Writer, Vec<Command<E>>) {
        let record = history
            .record(&epoch)
            .expect("a writer's history ends with its epoch's record")
            .clone();
        let mut progress = BTreeMap::new();
        // Older sets first: where a node appears in two incarnations (it lost its data), the
        // target set's one is tracked.
        for set in record.quorum.sets().iter().rev() {
            for v in set {
                let mut p = Progress::new(Some(v.incarnation), false);
                if granted.contains(v) {
                    p.last_heard = Some(now);
                }
                progress.insert(v.node.clone(), p);
            }
        }
        for l in learners {
            progress
                .entry(l.clone())
                .or_insert_with(|| Progress::new(None, true));
        }
        let mut own = Progress::new(Some(me.incarnation), false);
        own.matched = size;
        own.promised_this = true;
        own.has_record = true;
        own.sent = Some(size);
        own.last_heard = Some(now);
        progress.insert(me.node.clone(), own);
        let start = record.start;
        let mut acked = BTreeMap::new();
        for level in [AckLevel::Writer, AckLevel::Quorum, AckLevel::All] {
            acked.insert(level, start - 1);
        }
        let mut w = Writer {
            me,
            epoch: epoch.clone(),
            quorum: record.quorum,
            start,
            history,
            size,
            progress,
            live: None,
            commit_index: 0,
            own_durable: size,
            now,
            acked,
            settings,
            stopped: None,
        };
        let mut out = vec![Command::Activated {
            epoch,
            first_sequence: start,
            quorum: w.quorum.clone(),
        }];
        let nodes: Vec<NodeId> = w.followers().collect();
        for n in nodes {
            w.probe(&n, now, &mut out);
        }
        (w, out)
    }

    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// First sequence of this epoch.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The sequence the next append gets.
    pub fn next_sequence(&self) -> u64 {
        self.size + 1
    }

    /// Positions acknowledged at `quorum`.
    pub fn commit_index(&self) -> u64 {
        self.commit_index
    }

    /// The writer's history (ends with its epoch's record).
    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    /// Set when the writer stepped down; it accepts nothing after that.
    pub fn stopped(&self) -> Option<&StepDown> {
        self.stopped.as_ref()
    }

    /// Appends up to the returned position have reached `level`.
    pub fn acknowledged(&self, level: AckLevel) -> u64 {
        self.acked.get(&level).copied().unwrap_or(0)
    }

    /// Nothing is left to do but heartbeats: the writer has not stepped down, every entry is
    /// committed, and every replica it ships to (itself, followers, learners) holds every entry
    /// durably. Followers learn the commit index from the next heartbeat.
    pub fn is_quiet(&self) -> bool {
        self.stopped.is_none()
            && self.commit_index == self.size
            && self.progress.values().all(|p| p.matched == self.size)
    }

    /// Leading entries of `node`'s durable log known to be the writer's.
    pub fn matched(&self, node: &NodeId) -> Option<u64> {
        self.progress.get(node).map(|p| p.matched)
    }

    /// The live members (alive or suspect) according to membership, for [`AckLevel::All`].
    pub fn set_live<E>(&mut self, live: BTreeSet<NodeId>) -> Vec<Command<E>> {
        self.live = Some(live);
        let mut out = Vec::new();
        self.advance(&mut out);
        out
    }

    /// Ships to these mirrors too (from now on; they never count).
    pub fn add_learners(&mut self, learners: &[NodeId]) {
        for l in learners {
            if *l != self.me.node {
                self.progress
                    .entry(l.clone())
                    .or_insert_with(|| Progress::new(None, true));
            }
        }
    }

    /// Whether appends are accepted at `now`: not stepped down, and a majority of every set heard
    /// from within the lease.
    pub fn can_accept(&self, now: u64) -> Result<(), AppendError> {
        if self.stopped.is_some() {
            return Err(AppendError::NotWriter { writer: None });
        }
        let lease = self.settings.writer_lease_ms;
        let fresh = self.quorum.is_reached(|v| {
            *v == self.me
                || self.progress.get(&v.node).is_some_and(|p| {
                    p.incarnation == Some(v.incarnation)
                        && p.last_heard.is_some_and(|t| now.saturating_sub(t) < lease)
                })
        });
        if fresh {
            Ok(())
        } else {
            Err(AppendError::LeaseExpired { lease_ms: lease })
        }
    }

    /// Accepts new entries, numbered from [`Self::next_sequence`]. The first command hands them to
    /// the writer's own replica (a message to itself, carried out in process), the rest ship them.
    pub fn append<E: LogEntry>(
        &mut self,
        entries: Vec<E>,
        now: u64,
    ) -> Result<Vec<Command<E>>, AppendError> {
        self.can_accept(now)?;
        self.now = self.now.max(now);
        for (i, e) in entries.iter().enumerate() {
            let expected = self.size + 1 + i as u64;
            if e.sequence() != expected {
                return Err(AppendError::BadSequence {
                    expected,
                    found: e.sequence(),
                });
            }
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let prev = self.size;
        self.size += entries.len() as u64;
        let mut out = vec![Command::Send {
            to: self.me.node.clone(),
            message: Message::Entries(Entries {
                header: self.header(),
                prev,
                entries,
                root: None,
            }),
        }];
        let nodes: Vec<NodeId> = self.followers().collect();
        for n in nodes {
            self.ship(&n, now, &mut out);
        }
        Ok(out)
    }

    /// The writer's own log is durable up to `size` (the runtime's report, in any order and
    /// possibly stale: only growth within the log counts). Acknowledges what this completes.
    pub fn on_own_durable<E>(&mut self, size: u64) -> Vec<Command<E>> {
        let mut out = Vec::new();
        let size = size.min(self.size);
        if self.stopped.is_none() && size > self.own_durable {
            self.own_durable = size;
            self.advance(&mut out);
        }
        out
    }

    /// A follower's cursor (its durable head), or the writer's own replica's.
    pub fn on_cursor<E>(&mut self, from: &Voter, head: &Head, now: u64) -> Vec<Command<E>> {
        let mut out = Vec::new();
        if self.stopped.is_some() {
            return out;
        }
        self.now = self.now.max(now);
        if let Some(p) = &head.promised
            && *p > self.epoch
        {
            self.step_down(StepDown::Fenced { by: p.clone() }, &mut out);
            return out;
        }
        let matched = common_prefix(
            head.view(),
            LogView::writer(&self.history, self.size, &self.epoch),
        )
        .min(head.size);
        let has_record = head
            .history
            .record(&self.epoch)
            .is_some_and(|r| r.start == self.start);
        let Some(p) = self.progress.get_mut(&from.node) else {
            return out; // not a replica of this context (any more)
        };
        if p.incarnation != Some(from.incarnation) {
            // Another incarnation of the node (it lost its data): start over with it. Unless the
            // quorum names that incarnation it is only shipped to, never counted (a new epoch
            // with a joint quorum will include it).
            p.learner = !self.quorum.contains(from);
            p.incarnation = Some(from.incarnation);
            p.matched = 0;
            p.promised_this = false;
            p.has_record = false;
            p.sent = None;
        }
        let promised_this = head.promised.as_ref() == Some(&self.epoch);
        if promised_this {
            p.last_heard = Some(now);
        }
        if matched > p.matched || (has_record && !p.has_record) {
            p.last_progress = now;
        }
        if promised_this {
            // Once it promised this epoch the follower only ever removes what is not the
            // writer's: its matched prefix only grows, and a late cursor cannot shrink it.
            if p.promised_this {
                p.matched = p.matched.max(matched);
                p.sent = Some(p.sent.map_or(p.matched, |s| s.max(p.matched)));
            } else {
                // The first cursor of this epoch: what was shipped before may not have fitted.
                p.matched = matched;
                p.sent = Some(matched);
                p.promised_this = true;
            }
        } else if !p.promised_this {
            // Sent before it promised this epoch: it may have followed another writer since
            // (and quarantined entries that are the writer's). Take it as it is, resend from
            // there. (After a cursor of this epoch such a cursor is merely late: ignored.)
            p.matched = matched;
            p.sent = Some(matched);
        }
        p.has_record |= has_record;
        self.advance(&mut out);
        if from.node != self.me.node {
            let before = out.len();
            self.ship(&from.node, now, &mut out);
            // Caught up, but behind on what is committed (it serves reads only up to that):
            // tell it now rather than at the next heartbeat.
            if out.len() == before && head.commit_index < self.commit_index.min(matched) {
                self.heartbeat(&from.node, now, &mut out);
            }
        }
        out
    }

    /// Time passes: retransmit what was not acknowledged, heartbeat quiet followers.
    pub fn tick<E>(&mut self, now: u64) -> Vec<Command<E>> {
        let mut out = Vec::new();
        if self.stopped.is_some() {
            return out;
        }
        self.now = self.now.max(now);
        let nodes: Vec<NodeId> = self.followers().collect();
        for n in nodes {
            let Some(p) = self.progress.get_mut(&n) else {
                continue;
            };
            let retransmit = self.settings.retransmit_ms;
            match p.sent {
                None => {
                    if now.saturating_sub(p.last_sent) >= retransmit {
                        self.probe(&n, now, &mut out);
                    }
                }
                Some(sent) => {
                    if sent > p.matched
                        && now.saturating_sub(p.last_progress.max(p.last_shipped)) >= retransmit
                    {
                        p.sent = Some(p.matched); // go back and send again
                    }
                    let before = out.len();
                    self.ship(&n, now, &mut out);
                    let p = &self.progress[&n];
                    if out.len() == before
                        && now.saturating_sub(p.last_sent) >= self.settings.heartbeat_ms
                    {
                        self.heartbeat(&n, now, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Learns of `epoch` (a promise of the writer's own replica, a message): steps down if it is
    /// higher than the writer's.
    pub fn observe<E>(&mut self, epoch: &Epoch) -> Vec<Command<E>> {
        let mut out = Vec::new();
        if *epoch > self.epoch && self.stopped.is_none() {
            self.step_down(StepDown::Fenced { by: epoch.clone() }, &mut out);
        }
        out
    }

    /// Stops writing (placement moved the context, or the replica set changed).
    pub fn step_down_for<E>(&mut self, reason: StepDown) -> Vec<Command<E>> {
        let mut out = Vec::new();
        if self.stopped.is_none() {
            self.step_down(reason, &mut out);
        }
        out
    }

    fn step_down<E>(&mut self, reason: StepDown, out: &mut Vec<Command<E>>) {
        self.stopped = Some(reason.clone());
        out.push(Command::SteppedDown {
            epoch: self.epoch.clone(),
            reason,
        });
    }

    fn followers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.progress
            .keys()
            .filter(|n| **n != self.me.node)
            .cloned()
    }

    fn header(&self) -> EntriesHeader {
        EntriesHeader {
            kind: EntriesKind::Replicate,
            epoch: self.epoch.clone(),
            head: Head {
                promised: Some(self.epoch.clone()),
                size: self.size,
                history: self.history.clone(),
                commit_index: self.commit_index,
            },
            commit_index: self.commit_index,
        }
    }

    /// An empty batch at the writer's end: the follower truncates what is not the writer's,
    /// adopts the epoch record if caught up, and answers with its cursor.
    fn probe<E>(&mut self, to: &NodeId, now: u64, out: &mut Vec<Command<E>>) {
        out.push(Command::SendEntries {
            to: to.clone(),
            header: self.header(),
            after: self.size,
            upto: self.size,
        });
        if let Some(p) = self.progress.get_mut(to) {
            p.last_sent = now;
        }
    }

    fn heartbeat<E>(&mut self, to: &NodeId, now: u64, out: &mut Vec<Command<E>>) {
        let Some(p) = self.progress.get_mut(to) else {
            return;
        };
        let at = p.sent.unwrap_or(self.size);
        p.last_sent = now;
        out.push(Command::SendEntries {
            to: to.clone(),
            header: self.header(),
            after: at,
            upto: at,
        });
    }

    /// Tells the followers that have been shipped everything the new commit index (a
    /// heartbeat carries it): replicas serve reads only up to it, so they should learn it now,
    /// not at the next heartbeat. The others learn it with their next batch.
    fn tell_commit<E>(&mut self, out: &mut Vec<Command<E>>) {
        let idle: Vec<NodeId> = self
            .followers()
            .filter(|n| self.progress[n].sent == Some(self.size))
            .collect();
        let now = self.now;
        for n in idle {
            self.heartbeat(&n, now, out);
        }
    }

    /// Ships what `to` is missing, within the batch size and the in-flight bound.
    fn ship<E>(&mut self, to: &NodeId, now: u64, out: &mut Vec<Command<E>>) {
        let header = self.header();
        let size = self.size;
        let Some(p) = self.progress.get_mut(to) else {
            return;
        };
        let Some(mut sent) = p.sent else {
            return; // probing: wait for the cursor
        };
        let limit = size.min(p.matched.saturating_add(self.settings.max_in_flight));
        while sent < limit {
            let upto = limit.min(sent + self.settings.max_batch.max(1));
            out.push(Command::SendEntries {
                to: to.clone(),
                header: header.clone(),
                after: sent,
                upto,
            });
            sent = upto;
            p.last_sent = now;
            p.last_shipped = now;
        }
        p.sent = Some(sent);
    }

    /// Durable size of `v` counted for this epoch: its matched prefix if it is that voter's
    /// incarnation and holds the epoch's record.
    fn durable(&self, v: &Voter) -> u64 {
        if *v == self.me {
            self.progress[&v.node].matched.min(self.own_durable)
        } else if self.holds_record(v) {
            self.progress[&v.node].matched
        } else {
            0
        }
    }

    /// `v` (that incarnation) holds this epoch's record.
    fn holds_record(&self, v: &Voter) -> bool {
        self.progress
            .get(&v.node)
            .is_some_and(|p| p.incarnation == Some(v.incarnation) && p.has_record && !p.learner)
    }

    /// Recomputes the commit index, the epoch record's commitment and the acknowledged levels.
    fn advance<E>(&mut self, out: &mut Vec<Command<E>>) {
        let agreed = self.quorum.agreed_value(|v| self.durable(v));
        if agreed + 1 >= self.start && agreed > self.commit_index {
            self.commit_index = agreed;
            self.tell_commit(out);
        }
        let record_held = self.quorum.is_reached(|v| self.holds_record(v));
        if record_held && self.history.mark_committed(&self.epoch) {
            // An older committed record that covers nothing is no longer needed.
            self.history.compact();
            // Tell the own replica (its history carries the flag to later claims).
            out.push(Command::SendEntries {
                to: self.me.node.clone(),
                header: self.header(),
                after: self.size,
                upto: self.size,
            });
        }
        let own = self.durable(&self.me);
        let all = self
            .quorum
            .target()
            .iter()
            .filter(|v| {
                *v != &self.me && self.live.as_ref().is_none_or(|live| live.contains(&v.node))
            })
            .map(|v| self.durable(v))
            .fold(self.commit_index.min(own), u64::min);
        for (level, value) in [
            (AckLevel::Writer, own),
            (AckLevel::Quorum, self.commit_index),
            (AckLevel::All, all),
        ] {
            let slot = self.acked.entry(level).or_insert(0);
            if value > *slot {
                *slot = value;
                if value >= self.start {
                    out.push(Command::Acknowledged {
                        epoch: self.epoch.clone(),
                        level,
                        through: value,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epoch::EpochRecord;

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct E(u64);

    impl LogEntry for E {
        fn sequence(&self) -> u64 {
            self.0
        }
    }

    fn v(n: &str) -> Voter {
        Voter::new(n, 1)
    }

    fn settings() -> Settings {
        Settings {
            writer_lease_ms: 1_000,
            heartbeat_ms: 100,
            retransmit_ms: 300,
            max_batch: 4,
            max_in_flight: 8,
            ..Settings::default()
        }
    }

    /// Writer "a" in epoch 2 over {a, b, c}; epoch 1 wrote 1..=3.
    fn writer_with(
        quorum: Quorum,
        granted: &[Voter],
        learners: &[NodeId],
    ) -> (Writer, Vec<Command<E>>) {
        let epoch = Epoch::new(2, v("a"));
        let mut h = EpochHistory::new();
        h.push(EpochRecord {
            epoch: Epoch::new(1, v("b")),
            start: 1,
            quorum: quorum.clone(),
            committed: true,
        })
        .unwrap();
        h.push(EpochRecord {
            epoch: epoch.clone(),
            start: 4,
            quorum,
            committed: false,
        })
        .unwrap();
        Writer::new(v("a"), epoch, h, 3, granted, learners, settings(), 1_000)
    }

    fn abc() -> Quorum {
        Quorum::new([v("a"), v("b"), v("c")])
    }

    fn writer() -> (Writer, Vec<Command<E>>) {
        writer_with(abc(), &[v("a"), v("b"), v("c")], &[])
    }

    fn follower_head(w: &Writer, size: u64, with_record: bool) -> Head {
        let history = if with_record {
            w.history().clipped(size)
        } else {
            w.history().clipped(size.min(2))
        };
        Head {
            promised: Some(w.epoch().clone()),
            size,
            history,
            commit_index: 0,
        }
    }

    /// The own replica's cursor, with the runtime's report that `size` is durable.
    fn own_cursor(w: &mut Writer, size: u64, now: u64) -> Vec<Command<E>> {
        let h = follower_head(w, size, true);
        let mut out = w.on_cursor(&v("a"), &h, now);
        out.extend(w.on_own_durable(size));
        out
    }

    fn entries(from: u64, n: u64) -> Vec<E> {
        (from..from + n).map(E).collect()
    }

    fn acks(cmds: &[Command<E>]) -> Vec<(AckLevel, u64)> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Acknowledged { level, through, .. } => Some((*level, *through)),
                _ => None,
            })
            .collect()
    }

    /// Batches to followers (not to the writer's own replica).
    fn shipped(cmds: &[Command<E>]) -> Vec<(String, u64, u64)> {
        shipped_all(cmds)
            .into_iter()
            .filter(|s| s.0 != "a")
            .collect()
    }

    fn shipped_all(cmds: &[Command<E>]) -> Vec<(String, u64, u64)> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::SendEntries {
                    to, after, upto, ..
                } => Some((to.to_string(), *after, *upto)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn activation_announces_the_epoch_and_probes_every_follower() {
        let (w, cmds) = writer();
        assert!(matches!(
            &cmds[0],
            Command::Activated {
                first_sequence: 4,
                ..
            }
        ));
        assert_eq!(
            shipped(&cmds),
            [("b".to_owned(), 3, 3), ("c".to_owned(), 3, 3)]
        );
        assert_eq!(w.next_sequence(), 4);
        assert_eq!(w.acknowledged(AckLevel::Quorum), 3);
    }

    #[test]
    fn quiet_only_once_every_replica_holds_every_entry_and_all_is_committed() {
        let (mut w, _) = writer();
        // Freshly activated: the followers have not answered the probe.
        assert!(!w.is_quiet());
        w.append(entries(4, 2), 1_000).unwrap();
        own_cursor(&mut w, 5, 1_000);
        w.on_cursor::<E>(&v("b"), &follower_head(&w, 5, true), 1_010);
        // Committed by a and b, but c holds nothing yet.
        assert_eq!(w.commit_index(), 5);
        assert!(!w.is_quiet());
        w.on_cursor::<E>(&v("c"), &follower_head(&w, 4, true), 1_020);
        assert!(!w.is_quiet(), "c lacks entry 5");
        w.on_cursor::<E>(&v("c"), &follower_head(&w, 5, true), 1_030);
        assert!(w.is_quiet());
        // A new append is work again until everyone holds it.
        w.append(entries(6, 1), 1_040).unwrap();
        assert!(!w.is_quiet());
        own_cursor(&mut w, 6, 1_040);
        w.on_cursor::<E>(&v("b"), &follower_head(&w, 6, true), 1_050);
        w.on_cursor::<E>(&v("c"), &follower_head(&w, 6, true), 1_050);
        assert!(w.is_quiet());
        // A writer that stepped down is never quiet (its task must see the step-down through).
        w.step_down_for::<E>(StepDown::Placement);
        assert!(!w.is_quiet());
    }

    #[test]
    fn append_feeds_the_own_replica_first_and_checks_sequences() {
        let (mut w, _) = writer();
        assert_eq!(
            w.append(vec![E(5)], 1_000),
            Err(AppendError::BadSequence {
                expected: 4,
                found: 5
            })
        );
        let cmds = w.append(entries(4, 2), 1_000).unwrap();
        match &cmds[0] {
            Command::Send {
                to,
                message: Message::Entries(b),
            } => {
                assert_eq!(to, &NodeId::from("a"));
                assert_eq!((b.prev, b.entries.len()), (3, 2));
            }
            other => panic!("{other:?}"),
        }
        // Followers are still being probed: nothing shipped to them yet.
        assert!(shipped(&cmds).is_empty());
        assert_eq!(w.next_sequence(), 6);
    }

    #[test]
    fn ships_from_the_matched_position_in_bounded_batches() {
        let (mut w, _) = writer();
        w.append(entries(4, 10), 1_000).unwrap();
        // b answers the probe: it holds the first 3 entries (the epoch-1 ones) and our record.
        let cmds = w.on_cursor(&v("b"), &follower_head(&w, 3, true), 1_010);
        // In flight is bounded at 8 beyond matched: up to 11, in batches of 4.
        assert_eq!(
            shipped(&cmds),
            [("b".to_owned(), 3, 7), ("b".to_owned(), 7, 11),]
        );
        // b acknowledges 7: two more batches fit.
        let cmds = w.on_cursor(&v("b"), &follower_head(&w, 7, true), 1_020);
        assert_eq!(shipped(&cmds), [("b".to_owned(), 11, 13)]);
    }

    #[test]
    fn quorum_ack_needs_a_majority_counting_the_writer() {
        let (mut w, _) = writer();
        let mut all = Vec::new();
        all.extend(w.append(entries(4, 3), 1_000).unwrap());
        all.extend(own_cursor(&mut w, 6, 1_000));
        assert_eq!(acks(&all), [(AckLevel::Writer, 6)]);
        let cmds = w.on_cursor(&v("b"), &follower_head(&w, 5, true), 1_010);
        assert_eq!(acks(&cmds), [(AckLevel::Quorum, 5)]);
        assert_eq!(w.commit_index(), 5);
        // Membership not told yet: `all` counts every voter as live.
        let cmds = w.on_cursor(&v("c"), &follower_head(&w, 6, true), 1_010);
        assert_eq!(acks(&cmds), [(AckLevel::Quorum, 6), (AckLevel::All, 5)]);
        assert_eq!(w.acknowledged(AckLevel::Writer), 6);
    }

    #[test]
    fn the_writer_counts_itself_only_up_to_its_reported_durable_size() {
        let (mut w, _) = writer();
        let mut all = w.append(entries(4, 3), 1_000).unwrap();
        // The own replica took the entries, but the writer's fsync is still running.
        all.extend(w.on_cursor(&v("a"), &follower_head(&w, 6, true), 1_000));
        assert_eq!(acks(&all), []);
        // b alone is not a majority with a writer whose disk does not hold the entries yet.
        let cmds = w.on_cursor(&v("b"), &follower_head(&w, 6, true), 1_010);
        assert_eq!(acks(&cmds), []);
        // c makes b and c a majority without the writer.
        let cmds = w.on_cursor(&v("c"), &follower_head(&w, 5, true), 1_010);
        assert_eq!(acks(&cmds), [(AckLevel::Quorum, 5)]);
        // The writer's own sync completes: `writer` level, and the writer joins b at 6.
        let cmds = w.on_own_durable(6);
        assert_eq!(
            acks(&cmds),
            [
                (AckLevel::Writer, 6),
                (AckLevel::Quorum, 6),
                (AckLevel::All, 5)
            ]
        );
        // Stale or oversized reports change nothing.
        assert_eq!(acks(&w.on_own_durable::<E>(4)), []);
        assert_eq!(acks(&w.on_own_durable::<E>(99)), []);
        assert_eq!(w.acknowledged(AckLevel::Writer), 6);
    }

    #[test]
    fn followers_without_the_epoch_record_do_not_count() {
        let (mut w, _) = writer();
        w.append(entries(4, 3), 1_000).unwrap();
        own_cursor(&mut w, 6, 1_000);
        // b matches entries 1..=2 of the old epoch only: no commit of old entries by counting.
        let cmds = w.on_cursor(&v("b"), &follower_head(&w, 2, false), 1_010);
        assert!(acks(&cmds).is_empty());
        assert_eq!(w.commit_index(), 0);
        assert!(!w.history().records()[1].committed);
        // b reaches 3 and adopts the record: the epoch's record is committed, and the commit
        // index jumps to 3 (the epoch's start - 1) without acknowledging any client entry.
        let cmds = w.on_cursor(&v("b"), &follower_head(&w, 3, true), 1_020);
        assert!(acks(&cmds).is_empty());
        assert_eq!(w.commit_index(), 3);
        assert!(w.history().records()[1].committed);
        assert!(
            shipped_all(&cmds).contains(&("a".to_owned(), 6, 6)),
            "the own replica learns the record is committed"
        );
    }

    #[test]
    fn mirrors_are_shipped_to_but_never_counted() {
        let (mut w, cmds) = writer_with(abc(), &[v("a"), v("b"), v("c")], &[NodeId::from("m")]);
        assert!(shipped(&cmds).contains(&("m".to_owned(), 3, 3)));
        w.append(entries(4, 2), 1_000).unwrap();
        own_cursor(&mut w, 5, 1_000);
        let cmds = w.on_cursor(&Voter::new("m", 7), &follower_head(&w, 5, true), 1_010);
        assert!(acks(&cmds).is_empty());
        assert_eq!(w.commit_index(), 0);
    }

    #[test]
    fn all_waits_for_every_live_member_of_the_replica_set() {
        let (mut w, _) = writer();
        w.set_live::<E>([NodeId::from("a"), NodeId::from("b"), NodeId::from("c")].into());
        w.append(entries(4, 2), 1_000).unwrap();
        own_cursor(&mut w, 5, 1_000);
        let cmds = w.on_cursor(&v("b"), &follower_head(&w, 5, true), 1_010);
        assert_eq!(acks(&cmds), [(AckLevel::Quorum, 5)]);
        let cmds = w.on_cursor(&v("c"), &follower_head(&w, 5, true), 1_010);
        assert_eq!(acks(&cmds), [(AckLevel::All, 5)]);
        // With c dead, all = quorum.
        let (mut w, _) = writer();
        w.set_live::<E>([NodeId::from("a"), NodeId::from("b")].into());
        w.append(entries(4, 2), 1_000).unwrap();
        own_cursor(&mut w, 5, 1_000);
        let cmds = w.on_cursor(&v("b"), &follower_head(&w, 5, true), 1_010);
        assert_eq!(acks(&cmds), [(AckLevel::Quorum, 5), (AckLevel::All, 5)]);
    }

    #[test]
    fn joint_quorum_needs_both_sets() {
        // Reconfiguration from {a, b, c} to {a, b, d}: majorities of both.
        let mut q = Quorum::new([v("a"), v("b"), v("d")]);
        q.require([v("a"), v("b"), v("c")]);
        let (mut w, cmds) = writer_with(q, &[v("a"), v("c"), v("d")], &[]);
        assert_eq!(shipped(&cmds).len(), 3);
        w.append(entries(4, 1), 1_000).unwrap();
        own_cursor(&mut w, 4, 1_000);
        // d: majority of the new set {a, d}, but only a of the old one.
        let cmds = w.on_cursor(&v("d"), &follower_head(&w, 4, true), 1_010);
        assert!(acks(&cmds).is_empty());
        let cmds = w.on_cursor(&v("c"), &follower_head(&w, 4, true), 1_010);
        assert_eq!(acks(&cmds), [(AckLevel::Quorum, 4)]);
    }

    #[test]
    fn a_voter_in_a_new_incarnation_stops_counting() {
        let (mut w, _) = writer();
        w.append(entries(4, 2), 1_000).unwrap();
        own_cursor(&mut w, 5, 1_000);
        let h = follower_head(&w, 5, true);
        let cmds = w.on_cursor(&Voter::new("b", 2), &h, 1_010);
        assert!(
            acks(&cmds).is_empty(),
            "b#2 is not the voter b#1 of the quorum"
        );
        assert_eq!(w.matched(&NodeId::from("b")), Some(5));
        let cmds = w.on_cursor(&v("c"), &h, 1_010);
        assert_eq!(acks(&cmds), [(AckLevel::Quorum, 5)]);
    }

    #[test]
    fn steps_down_on_a_higher_epoch() {
        let (mut w, _) = writer();
        let mut h = follower_head(&w, 3, true);
        h.promised = Some(Epoch::new(3, v("c")));
        let cmds = w.on_cursor::<E>(&v("b"), &h, 1_010);
        assert!(matches!(
            &cmds[..],
            [Command::SteppedDown {
                reason: StepDown::Fenced { .. },
                ..
            }]
        ));
        assert_eq!(
            w.append(entries(4, 1), 1_010),
            Err(AppendError::NotWriter { writer: None })
        );
        assert!(w.tick::<E>(5_000).is_empty());
        let (mut w, _) = writer();
        assert!(w.observe::<E>(&Epoch::new(1, v("z"))).is_empty());
        assert_eq!(w.observe::<E>(&Epoch::new(2, v("b"))).len(), 1);
        assert!(w.observe::<E>(&Epoch::new(9, v("b"))).is_empty(), "once");
    }

    #[test]
    fn lease_expires_without_a_majority_and_returns_with_it() {
        let (mut w, _) = writer_with(abc(), &[v("a")], &[]);
        // Nobody but itself heard from: no lease.
        assert_eq!(
            w.can_accept(1_000),
            Err(AppendError::LeaseExpired { lease_ms: 1_000 })
        );
        w.on_cursor::<E>(&v("b"), &follower_head(&w, 3, true), 1_100);
        assert_eq!(w.can_accept(1_500), Ok(()));
        assert_eq!(w.can_accept(2_099), Ok(()));
        assert!(w.can_accept(2_100).is_err());
        // A cursor of a follower that has not promised this epoch does not renew the lease.
        let mut h = follower_head(&w, 3, true);
        h.promised = Some(Epoch::new(1, v("b")));
        w.on_cursor::<E>(&v("c"), &h, 2_200);
        assert!(w.can_accept(2_200).is_err());
        w.on_cursor::<E>(&v("c"), &follower_head(&w, 3, true), 2_300);
        assert_eq!(w.can_accept(2_300), Ok(()));
    }

    #[test]
    fn retransmits_unacknowledged_batches_and_heartbeats_idle_followers() {
        let (mut w, _) = writer();
        // Probe unanswered: probed again after the retransmit interval.
        assert!(shipped(&w.tick::<E>(1_100)).is_empty());
        assert_eq!(shipped(&w.tick::<E>(1_300)).len(), 2);
        w.append(entries(4, 2), 1_300).unwrap();
        let cmds = w.on_cursor::<E>(&v("b"), &follower_head(&w, 3, true), 1_310);
        assert_eq!(shipped(&cmds), [("b".to_owned(), 3, 5)]);
        // Lost: sent again from the matched position once the interval passed.
        assert!(shipped(&w.tick::<E>(1_400)).iter().all(|s| s.0 != "b"));
        assert!(shipped(&w.tick::<E>(1_700)).contains(&("b".to_owned(), 3, 5)));
        w.on_cursor::<E>(&v("b"), &follower_head(&w, 5, true), 1_710);
        // Up to date: a heartbeat after heartbeat_ms.
        assert!(shipped(&w.tick::<E>(1_750)).iter().all(|s| s.0 != "b"));
        assert!(shipped(&w.tick::<E>(1_820)).contains(&("b".to_owned(), 5, 5)));
    }

    #[test]
    fn a_cursor_from_before_the_promise_never_sticks() {
        let (mut w, _) = writer();
        w.append(entries(4, 4), 1_000).unwrap();
        // Sent while b still followed epoch 1 and held 3 entries.
        let mut stale = follower_head(&w, 3, false);
        stale.promised = Some(Epoch::new(1, v("b")));
        w.on_cursor::<E>(&v("b"), &stale, 1_010);
        assert_eq!(w.matched(&NodeId::from("b")), Some(3));
        // b then quarantined entry 3 under another writer; its first cursor of epoch 2.
        let cmds = w.on_cursor::<E>(&v("b"), &follower_head(&w, 2, false), 1_020);
        assert_eq!(w.matched(&NodeId::from("b")), Some(2));
        assert_eq!(
            shipped(&cmds),
            [("b".to_owned(), 2, 6), ("b".to_owned(), 6, 7)]
        );
        // The stale cursor, delivered again late, changes nothing now.
        w.on_cursor::<E>(&v("b"), &stale, 1_030);
        assert_eq!(w.matched(&NodeId::from("b")), Some(2));
    }

    #[test]
    fn a_cursor_of_a_divergent_follower_counts_only_the_common_prefix() {
        let (mut w, _) = writer();
        w.append(entries(4, 3), 1_000).unwrap();
        own_cursor(&mut w, 6, 1_000);
        // c kept writing epoch 1 up to 8: only 1..=3 are the writer's.
        let stale = Head {
            promised: Some(w.epoch().clone()),
            size: 8,
            history: w.history().clipped(2),
            commit_index: 0,
        };
        let cmds = w.on_cursor(&v("c"), &stale, 1_010);
        assert_eq!(w.matched(&NodeId::from("c")), Some(3));
        assert!(acks(&cmds).is_empty());
        assert_eq!(shipped(&cmds), [("c".to_owned(), 3, 6)]);
    }
}
