//! Claiming an epoch: how a node becomes the writer of a context.
//!
//! 1. **Promise.** The claimant picks `epoch = (highest number seen + 1, itself)` and asks every
//!    voter of the required quorum to promise it. Each grant carries the replica's head (size,
//!    epoch history); a refusal carries the higher promise and ends the claim.
//! 2. **Quorum.** The required quorum is the *target* replica set (placement's, with the
//!    incarnations membership announces), plus the sets learned from the histories seen so far
//!    (the claimant's own and every answer): the target set of the latest record known to be
//!    committed, and every set of each later record (whose establishment may still be incomplete).
//!    It is recomputed as answers arrive and new voters are asked too. This is the joint quorum
//!    of a reconfiguration: while a context moves from set `A` to set `B` (a member joined or was
//!    removed, or a member lost its data and came back as a new voter), a new epoch needs
//!    majorities of both, so it meets every promise or acknowledgement majority of the epochs
//!    before. Once an epoch's record is committed (held by majorities of all its sets), later
//!    claims only need its target set: the old set's members can no longer form a quorum that
//!    misses the record, because a majority of them has it.
//!    Under versioned placement views ([`crate::views`]) the claim also needs a majority of the
//!    context's replica set in every earlier view that is not settled everywhere
//!    ([`ClaimScope::earlier`]): the context may have lived there since, and no history tells of
//!    it when none of its holders answered. With those, a claim that finds nothing at all (its
//!    own log and every answer empty, no epoch record) creates the context with majorities only:
//!    had it ever held an acknowledged entry, that entry would be on a majority of one of the
//!    sets consulted. Without views (view 0) such a claim needs *every* member of the target
//!    set, as before: a majority of the new set may then consist of a newcomer and a member that
//!    never received anything, while the entries live on the members that left the set.
//!    Replicas refuse claims made under an older view than they have seen
//!    ([`PromiseAnswer::StaleView`]), so a node with a stale view (one that was removed) never
//!    creates or takes a context.
//! 3. **Best history.** With promises from a majority of every required set, the claimant takes
//!    the best answer: highest last epoch, then longest (then itself, then the lowest node id).
//!    Every entry acknowledged at `quorum` before is in it (see [`crate::writer`]).
//! 4. **Catch-up.** The claimant fetches what its own log lacks from the replica that gave the
//!    best answer, in batches; its own replica applies them as entries of the claimed epoch, which
//!    quarantines its own divergent suffix. If the source's log no longer matches its answer (it
//!    lost its data, or moved on to a higher epoch), the claim fails.
//! 5. **Activation.** The claimant writes its epoch's record `(epoch, best size + 1, quorum)` into
//!    its own history (saved) and is then the [`crate::writer::Writer`]. Until then appends are
//!    refused with "establishing".
//!
//! A claim fails when it sees a higher epoch, a newer view, loses its source, or takes longer
//! than `claim_timeout_ms`. A claim that failed (or was abandoned) before choosing a history is
//! retried with the *same* epoch ([`Claim::chose_history`]): a node that cannot reach a majority
//! does not keep raising epochs, so healing never deposes a healthy writer.

use crate::epoch::{Epoch, EpochHistory, EpochRecord, common_prefix};
use crate::identity::{NodeId, Voter};
use crate::protocol::{
    Command, Entries, EntriesHeader, EntriesKind, Head, LogEntry, Message, PromiseAnswer, Settings,
};
use crate::quorum::Quorum;
use std::collections::{BTreeMap, BTreeSet};

/// Why a claim ended without a writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimFailure {
    /// A replica promised (or the claimant's own replica accepted) a higher epoch.
    Superseded { by: Epoch },
    /// The replica holding the best history no longer has it (lost its data, or changed).
    SourceLost { source: Voter },
    /// No quorum, or no catch-up, within `claim_timeout_ms`.
    TimedOut,
    /// A replica has seen placement view `view`, newer than the claim's: the claimant must learn
    /// it before claiming again.
    StaleView { view: u64 },
}

/// The quorum a claim for `target` needs given these heads: the target set, the target set of
/// the latest committed record any of them holds, and all sets of every record after it.
pub fn learned_quorum<'a>(target: &[Voter], heads: impl Iterator<Item = &'a Head>) -> Quorum {
    let mut committed: Option<&EpochRecord> = None;
    let mut records: Vec<&EpochRecord> = Vec::new();
    for h in heads {
        if let Some(c) = h.history.last_committed()
            && committed.is_none_or(|k| c.epoch > k.epoch)
        {
            committed = Some(c);
        }
        records.extend(h.history.records());
    }
    let mut q = Quorum::new(target.iter().cloned());
    if let Some(c) = committed {
        q.require(c.quorum.target().iter().cloned());
    }
    records.sort_by(|a, b| a.epoch.cmp(&b.epoch));
    for r in records {
        if committed.is_none_or(|c| r.epoch > c.epoch) {
            for set in r.quorum.sets() {
                q.require(set.iter().cloned());
            }
        }
    }
    q
}

/// What a claim consults besides its target set.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClaimScope {
    /// The placement view version the claim is made under (0: no views).
    pub view: u64,
    /// The context's replica sets in the earlier views not yet settled everywhere that differ
    /// from the target: a majority of each must promise too (they are not part of the epoch's
    /// quorum: acknowledgements need only the target and the sets learned from histories).
    pub earlier: Vec<Vec<Voter>>,
    /// The operator accepted possible loss: the earlier sets hold only their live voters, the
    /// sets learned from histories are not needed, and the epoch's record names only the
    /// target set.
    pub accept_loss: bool,
}

/// Where a claim is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimState {
    /// Collecting promises.
    Promising,
    /// Fetching the best history from `source`.
    CatchingUp { source: Voter, best_size: u64 },
    /// The epoch record was handed to the own replica; waiting for it to hold it.
    Activating,
    /// The own replica holds the epoch record: become the writer ([`Claim::granted`] and the
    /// replica's history and size are what [`crate::writer::Writer::new`] needs).
    Ready,
    /// Ended without a writer.
    Failed(ClaimFailure),
}

#[derive(Clone, Debug)]
struct Fetch {
    after: u64,
    at: u64,
}

/// A node's claim of one context's writer epoch.
#[derive(Clone, Debug)]
pub struct Claim {
    me: Voter,
    epoch: Epoch,
    target: Vec<Voter>,
    scope: ClaimScope,
    quorum: Quorum,
    own: Head,
    answers: BTreeMap<NodeId, (Voter, Head)>,
    state: ClaimState,
    /// The best answer once chosen.
    best: Option<(Voter, Head)>,
    fetch: Option<Fetch>,
    /// Last promise granted or batch fetched: the timeout counts from here, so a long catch-up
    /// that keeps progressing is not cut short.
    last_progress: u64,
    last_round: u64,
    settings: Settings,
}

impl Claim {
    /// Starts claiming `epoch` (the caller picks it above every epoch it has seen) for the
    /// replica set `target`, from the own replica's head `own`. Sends the promise requests (one
    /// of them to the claimant's own replica).
    pub fn start<E>(
        me: Voter,
        epoch: Epoch,
        target: Vec<Voter>,
        own: Head,
        settings: Settings,
        now: u64,
    ) -> (Claim, Vec<Command<E>>) {
        Claim::start_scoped(me, epoch, target, ClaimScope::default(), own, settings, now)
    }

    /// [`Self::start`] under a placement view: `scope` names the view and the sets of the
    /// earlier views to consult.
    pub fn start_scoped<E>(
        me: Voter,
        epoch: Epoch,
        target: Vec<Voter>,
        mut scope: ClaimScope,
        own: Head,
        settings: Settings,
        now: u64,
    ) -> (Claim, Vec<Command<E>>) {
        #[cfg(ledger_mutant = "no_earlier_sets")]
        scope.earlier.clear(); // Broken on purpose: earlier views are not consulted.
        let mut sorted_target = target.clone();
        sorted_target.sort();
        sorted_target.dedup();
        let mut earlier: Vec<Vec<Voter>> = Vec::new();
        for mut set in std::mem::take(&mut scope.earlier) {
            set.sort();
            set.dedup();
            if !set.is_empty() && set != sorted_target && !earlier.contains(&set) {
                earlier.push(set);
            }
        }
        scope.earlier = earlier;
        let mut claim = Claim {
            quorum: Quorum::new(target.clone()),
            me,
            epoch,
            target,
            scope,
            own,
            answers: BTreeMap::new(),
            state: ClaimState::Promising,
            best: None,
            fetch: None,
            last_progress: now,
            last_round: now,
            settings,
        };
        claim.quorum = claim.required();
        let mut out = Vec::new();
        let nodes: BTreeSet<NodeId> = claim
            .promise_quorum()
            .voters()
            .into_iter()
            .map(|v| v.node)
            .collect();
        for n in nodes {
            claim.ask(&n, &mut out);
        }
        (claim, out)
    }

    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    pub fn state(&self) -> &ClaimState {
        &self.state
    }

    /// The replica set this claim is for.
    pub fn target(&self) -> &[Voter] {
        &self.target
    }

    /// The quorum required so far (the one the epoch will be established with).
    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// The view and earlier sets this claim consults.
    pub fn scope(&self) -> &ClaimScope {
        &self.scope
    }

    /// Every set whose majority must promise: the quorum's and the earlier views'.
    pub fn promise_quorum(&self) -> Quorum {
        let mut q = self.quorum.clone();
        for set in &self.scope.earlier {
            q.require(set.iter().cloned());
        }
        q
    }

    /// The claim chose the best history (so it may have fetched, or written its epoch's record):
    /// a claim that ends before this may be retried with the same epoch.
    pub fn chose_history(&self) -> bool {
        self.best.is_some()
    }

    /// `voter` promised this claim's epoch.
    pub fn granted_by(&self, voter: &Voter) -> bool {
        self.answers
            .get(&voter.node)
            .is_some_and(|(a, _)| a == voter)
    }

    /// The voters whose promises were collected.
    pub fn granted(&self) -> Vec<Voter> {
        self.answers.values().map(|(v, _)| v.clone()).collect()
    }

    /// The required quorum for what is known now: the target set, the target set of the latest
    /// committed record, and all sets of every record after it (only the target set when the
    /// loss was accepted).
    fn required(&self) -> Quorum {
        if self.scope.accept_loss {
            return Quorum::new(self.target.clone());
        }
        learned_quorum(
            &self.target,
            std::iter::once(&self.own).chain(self.answers.values().map(|(_, h)| h)),
        )
    }

    fn ask<E>(&self, node: &NodeId, out: &mut Vec<Command<E>>) {
        out.push(Command::Send {
            to: node.clone(),
            message: Message::PromiseRequest {
                epoch: self.epoch.clone(),
                view: self.scope.view,
            },
        });
    }

    fn fail(&mut self, why: ClaimFailure) {
        if !matches!(self.state, ClaimState::Failed(_)) {
            self.state = ClaimState::Failed(why);
        }
    }

    /// Nothing known of the context anywhere (own log and every answer empty, no epoch record).
    /// Without placement views (view 0) creating it needs every member of the target set, not
    /// just a majority: a majority could otherwise consist of members that joined after the
    /// context was created and members that never received anything, and miss entries a
    /// previous replica set acknowledged. Under a view, the earlier views' sets cover that case.
    fn is_genesis(&self) -> bool {
        std::iter::once(&self.own)
            .chain(self.answers.values().map(|(_, h)| h))
            .all(|h| h.size == 0 && h.history.is_empty())
    }

    /// Creation needs the whole target set (no views, no accepted loss).
    fn needs_every_member(&self) -> bool {
        let without_views = self.scope.view == 0 && !self.scope.accept_loss;
        // Broken on purpose: majorities create contexts without views too.
        #[cfg(ledger_mutant = "genesis_majority_without_views")]
        let without_views = {
            let _ = without_views;
            false
        };
        without_views && self.is_genesis()
    }

    /// Promises suffice to choose the best history.
    fn promises_suffice(&self) -> bool {
        if self.needs_every_member() {
            self.target.iter().all(|v| self.granted_by(v))
        } else {
            self.promise_quorum().is_reached(|v| self.granted_by(v))
        }
    }

    /// A replica's answer to the promise request.
    pub fn on_promise_reply<E>(
        &mut self,
        from: &Voter,
        epoch: &Epoch,
        answer: PromiseAnswer,
        now: u64,
    ) -> Vec<Command<E>> {
        let mut out = Vec::new();
        if *epoch != self.epoch || matches!(self.state, ClaimState::Failed(_)) {
            return out;
        }
        match answer {
            PromiseAnswer::Refused { promised } => {
                if promised > self.epoch {
                    self.fail(ClaimFailure::Superseded { by: promised });
                }
            }
            PromiseAnswer::StaleView { view } => {
                if view > self.scope.view {
                    self.fail(ClaimFailure::StaleView { view });
                }
            }
            PromiseAnswer::Granted(head) => {
                if let Some((source, _)) = &self.best
                    && source.node == from.node
                    && source != from
                {
                    // The source of the best history lost its data.
                    self.fail(ClaimFailure::SourceLost {
                        source: source.clone(),
                    });
                    return out;
                }
                if self.state != ClaimState::Promising {
                    return out;
                }
                self.answers.insert(from.node.clone(), (from.clone(), head));
                self.last_progress = now;
                let before: BTreeSet<NodeId> = self
                    .promise_quorum()
                    .voters()
                    .into_iter()
                    .map(|v| v.node)
                    .collect();
                self.quorum = self.required();
                let after: BTreeSet<NodeId> = self
                    .promise_quorum()
                    .voters()
                    .into_iter()
                    .map(|v| v.node)
                    .collect();
                for n in after.difference(&before) {
                    self.ask(n, &mut out);
                }
                if self.promises_suffice() {
                    self.choose_best();
                    self.proceed(now, &mut out);
                }
            }
        }
        out
    }

    fn choose_best(&mut self) {
        let best = self
            .answers
            .values()
            .max_by(|(va, ha), (vb, hb)| {
                ha.rank()
                    .cmp(&hb.rank())
                    .then_with(|| (*va == self.me).cmp(&(*vb == self.me)))
                    .then_with(|| vb.node.cmp(&va.node))
            })
            .cloned()
            .expect("a reached quorum has answers");
        self.state = ClaimState::CatchingUp {
            source: best.0.clone(),
            best_size: best.1.size,
        };
        self.best = Some(best);
    }

    /// The own replica's head changed (after it applied something this claim sent it, or
    /// anything else).
    pub fn on_own_head<E>(&mut self, head: Head, now: u64) -> Vec<Command<E>> {
        let mut out = Vec::new();
        if let Some(p) = &head.promised
            && *p > self.epoch
        {
            self.fail(ClaimFailure::Superseded { by: p.clone() });
        }
        self.own = head;
        let holds_record = self
            .own
            .history
            .last()
            .is_some_and(|r| r.epoch == self.epoch);
        match self.state {
            ClaimState::CatchingUp { .. } => self.proceed(now, &mut out),
            ClaimState::Activating if holds_record => self.state = ClaimState::Ready,
            _ => {}
        }
        out
    }

    /// Catch up to the best history, or activate once there.
    fn proceed<E>(&mut self, now: u64, out: &mut Vec<Command<E>>) {
        let Some((source, best)) = self.best.clone() else {
            return;
        };
        let common = common_prefix(self.own.view(), best.view()).min(self.own.size);
        if common >= best.size {
            self.activate(&best, out);
            return;
        }
        if source == self.me {
            // Cannot happen: the own log is the best one. Start over rather than loop.
            self.fail(ClaimFailure::SourceLost { source });
            return;
        }
        if self.fetch.as_ref().is_some_and(|f| f.after == common) {
            return; // already asked for this
        }
        self.request(&source, common, best.size, now, out);
    }

    fn request<E>(
        &mut self,
        source: &Voter,
        after: u64,
        best_size: u64,
        now: u64,
        out: &mut Vec<Command<E>>,
    ) {
        let upto = best_size.min(after + self.settings.max_batch.max(1));
        out.push(Command::Send {
            to: source.node.clone(),
            message: Message::FetchRequest {
                epoch: self.epoch.clone(),
                after,
                upto,
            },
        });
        self.fetch = Some(Fetch { after, at: now });
    }

    /// Entries fetched from the source of the best history. They are handed to the own replica
    /// as entries of the claimed epoch with the best history as the writer's log.
    pub fn on_fetched<E: LogEntry>(
        &mut self,
        from: &Voter,
        batch: Entries<E>,
        now: u64,
    ) -> Vec<Command<E>> {
        let mut out = Vec::new();
        let ClaimState::CatchingUp { .. } = self.state else {
            return out;
        };
        let Some((source, best)) = self.best.clone() else {
            return out;
        };
        if batch.header.kind != EntriesKind::Fetched || batch.header.epoch != self.epoch {
            return out;
        }
        if from.node != source.node {
            return out;
        }
        if *from != source {
            self.fail(ClaimFailure::SourceLost { source });
            return out;
        }
        // The source's log must still be the history it answered with, as far as it went.
        if common_prefix(batch.header.head.view(), best.view()) < best.size {
            self.fail(ClaimFailure::SourceLost { source });
            return out;
        }
        self.fetch = None;
        self.last_progress = now;
        let mut entries = batch.entries;
        let before = entries.len();
        entries.retain(|e| e.sequence() <= best.size);
        let root = if entries.len() == before {
            batch.root
        } else {
            None
        };
        out.push(Command::Send {
            to: self.me.node.clone(),
            message: Message::Entries(Entries {
                header: EntriesHeader {
                    kind: EntriesKind::Replicate,
                    epoch: self.epoch.clone(),
                    head: best,
                    commit_index: 0,
                },
                prev: batch.prev,
                entries,
                root,
            }),
        });
        out
    }

    /// Hands the epoch record to the own replica: the best history, then `(epoch, size + 1)`.
    fn activate<E>(&mut self, best: &Head, out: &mut Vec<Command<E>>) {
        if self.state == ClaimState::Activating || self.state == ClaimState::Ready {
            return;
        }
        let mut history: EpochHistory = best.history.clipped(best.size);
        history.merge_committed(&self.own.history);
        let record = EpochRecord {
            epoch: self.epoch.clone(),
            start: best.size + 1,
            quorum: self.quorum.clone(),
            committed: false,
        };
        let pushed = history.push(record);
        // Epochs that wrote nothing leave no record behind (but the newest committed one).
        history.compact();
        if pushed.is_err() {
            // A record at or above the claimed epoch: someone got further; start over.
            let by = history
                .last_epoch()
                .cloned()
                .unwrap_or_else(|| self.epoch.clone());
            self.fail(ClaimFailure::Superseded { by });
            return;
        }
        self.state = ClaimState::Activating;
        out.push(Command::Send {
            to: self.me.node.clone(),
            message: Message::Entries(Entries {
                header: EntriesHeader {
                    kind: EntriesKind::Replicate,
                    epoch: self.epoch.clone(),
                    head: Head {
                        promised: Some(self.epoch.clone()),
                        size: best.size,
                        history,
                        commit_index: 0,
                    },
                    commit_index: 0,
                },
                prev: best.size,
                entries: Vec::new(),
                root: None,
            }),
        });
    }

    /// Time passes: ask again whoever has not answered, fetch again, give up after the timeout.
    pub fn tick<E>(&mut self, now: u64) -> Vec<Command<E>> {
        let mut out = Vec::new();
        if matches!(self.state, ClaimState::Failed(_) | ClaimState::Ready) {
            return out;
        }
        if now.saturating_sub(self.last_progress) >= self.settings.claim_timeout_ms {
            self.fail(ClaimFailure::TimedOut);
            return out;
        }
        let round_due = now.saturating_sub(self.last_round) >= self.settings.retransmit_ms;
        match &self.state {
            ClaimState::Promising if round_due => {
                self.last_round = now;
                let missing: BTreeSet<NodeId> = self
                    .promise_quorum()
                    .voters()
                    .into_iter()
                    .filter(|v| !self.granted_by(v))
                    .map(|v| v.node)
                    .collect();
                for n in &missing {
                    self.ask(n, &mut out);
                }
            }
            ClaimState::CatchingUp { source, best_size } => {
                let (source, best_size) = (source.clone(), *best_size);
                if let Some(f) = &self.fetch
                    && now.saturating_sub(f.at) >= self.settings.retransmit_ms
                {
                    let after = f.after;
                    self.request(&source, after, best_size, now, &mut out);
                }
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PersistentState;
    use crate::replica::Replica;

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

    fn abc() -> Vec<Voter> {
        vec![v("a"), v("b"), v("c")]
    }

    fn rec(n: u64, w: &str, start: u64, set: &[Voter], committed: bool) -> EpochRecord {
        EpochRecord {
            epoch: Epoch::new(n, v(w)),
            start,
            quorum: Quorum::new(set.iter().cloned()),
            committed,
        }
    }

    fn head(records: Vec<EpochRecord>, size: u64) -> Head {
        Head {
            promised: None,
            size,
            history: EpochHistory::from_records(records).unwrap(),
            commit_index: 0,
        }
    }

    fn settings() -> Settings {
        Settings {
            max_batch: 3,
            retransmit_ms: 100,
            claim_timeout_ms: 1_000,
            ..Settings::default()
        }
    }

    fn sent_to(cmds: &[Command<E>]) -> Vec<String> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Send {
                    to,
                    message: Message::PromiseRequest { .. },
                } => Some(to.to_string()),
                _ => None,
            })
            .collect()
    }

    fn fetches(cmds: &[Command<E>]) -> Vec<(String, u64, u64)> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Send {
                    to,
                    message: Message::FetchRequest { after, upto, .. },
                } => Some((to.to_string(), *after, *upto)),
                _ => None,
            })
            .collect()
    }

    fn to_self(cmds: &[Command<E>]) -> Vec<Entries<E>> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Send {
                    to,
                    message: Message::Entries(b),
                } if to.as_str() == "a" => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    fn grant(c: &mut Claim, who: &str, h: Head) -> Vec<Command<E>> {
        let epoch = c.epoch().clone();
        c.on_promise_reply(&v(who), &epoch, PromiseAnswer::Granted(h), 0)
    }

    #[test]
    fn creating_a_context_needs_every_member_of_the_set() {
        let own = head(vec![], 0);
        let (mut c, cmds) = Claim::start::<E>(
            v("a"),
            Epoch::new(1, v("a")),
            abc(),
            own.clone(),
            settings(),
            0,
        );
        assert_eq!(sent_to(&cmds), ["a", "b", "c"]);
        assert!(grant(&mut c, "a", own.clone()).is_empty());
        assert!(grant(&mut c, "b", own.clone()).is_empty());
        // A majority of empty logs is not enough: c may hold what a previous set wrote.
        assert_eq!(c.state(), &ClaimState::Promising);
        let cmds = grant(&mut c, "c", own);
        let mine = to_self(&cmds);
        assert_eq!(mine.len(), 1);
        let rec = mine[0].header.head.history.last().unwrap();
        assert_eq!((rec.epoch.clone(), rec.start), (Epoch::new(1, v("a")), 1));
        assert_eq!(c.state(), &ClaimState::Activating);
    }

    fn scoped(view: u64, earlier: Vec<Vec<Voter>>) -> ClaimScope {
        ClaimScope {
            view,
            earlier,
            accept_loss: false,
        }
    }

    #[test]
    fn under_a_view_a_majority_of_empty_logs_creates_a_context() {
        let own = head(vec![], 0);
        let (mut c, cmds) = Claim::start_scoped::<E>(
            v("a"),
            Epoch::new(1, v("a")),
            abc(),
            scoped(4, vec![]),
            own.clone(),
            settings(),
            0,
        );
        assert!(cmds.iter().all(|c| matches!(
            c,
            Command::Send {
                message: Message::PromiseRequest { view: 4, .. },
                ..
            }
        )));
        grant(&mut c, "a", own.clone());
        let cmds = grant(&mut c, "b", own);
        assert_eq!(c.state(), &ClaimState::Activating, "c is not needed");
        assert_eq!(to_self(&cmds).len(), 1);
    }

    #[test]
    fn the_sets_of_earlier_views_must_promise_too_but_are_not_the_epochs_quorum() {
        let own = head(vec![], 0);
        // The context lived on {b, c, d} in an earlier, unsettled view.
        let bcd = vec![v("b"), v("c"), v("d")];
        let (mut c, cmds) = Claim::start_scoped::<E>(
            v("a"),
            Epoch::new(1, v("a")),
            abc(),
            scoped(4, vec![bcd.clone(), abc()]),
            own.clone(),
            settings(),
            0,
        );
        assert_eq!(sent_to(&cmds), ["a", "b", "c", "d"]);
        assert_eq!(c.scope().earlier, vec![bcd], "the target itself is dropped");
        grant(&mut c, "a", own.clone());
        grant(&mut c, "b", own.clone());
        // A majority of {a,b,c}, but only b of {b,c,d}.
        assert_eq!(c.state(), &ClaimState::Promising);
        grant(&mut c, "d", own);
        assert_eq!(c.state(), &ClaimState::Activating);
        assert_eq!(
            c.quorum().sets(),
            &[abc()][..],
            "promise-only: acknowledgements do not need the earlier set"
        );
        assert_eq!(c.promise_quorum().sets().len(), 2);
        assert!(c.chose_history());
    }

    #[test]
    fn a_replica_that_saw_a_newer_view_ends_the_claim() {
        let (mut c, _) = Claim::start_scoped::<E>(
            v("a"),
            Epoch::new(1, v("a")),
            abc(),
            scoped(4, vec![]),
            head(vec![], 0),
            settings(),
            0,
        );
        let e = c.epoch().clone();
        c.on_promise_reply::<E>(&v("b"), &e, PromiseAnswer::StaleView { view: 4 }, 0);
        assert_eq!(
            c.state(),
            &ClaimState::Promising,
            "not newer than the claim's"
        );
        c.on_promise_reply::<E>(&v("b"), &e, PromiseAnswer::StaleView { view: 6 }, 0);
        assert_eq!(
            c.state(),
            &ClaimState::Failed(ClaimFailure::StaleView { view: 6 })
        );
        assert!(!c.chose_history());
    }

    #[test]
    fn an_accepted_loss_needs_only_the_target_and_names_only_it() {
        let old = abc();
        // The last record was established with {a, b, c} and is not committed; a and b left.
        let own = head(vec![rec(2, "b", 1, &old, false)], 4);
        let target = vec![v("c"), v("d"), v("e")];
        let scope = ClaimScope {
            view: 9,
            earlier: vec![vec![v("c")]],
            accept_loss: true,
        };
        let (mut c, cmds) = Claim::start_scoped::<E>(
            v("c"),
            Epoch::new(3, v("c")),
            target.clone(),
            scope,
            own.clone(),
            settings(),
            0,
        );
        assert_eq!(sent_to(&cmds), ["c", "d", "e"]);
        let e = c.epoch().clone();
        c.on_promise_reply::<E>(&v("c"), &e, PromiseAnswer::Granted(own), 0);
        c.on_promise_reply::<E>(&v("d"), &e, PromiseAnswer::Granted(head(vec![], 0)), 0);
        assert_eq!(c.state(), &ClaimState::Activating);
        let mut sorted = target;
        sorted.sort();
        assert_eq!(c.quorum().sets(), &[sorted][..]);
    }

    #[test]
    fn an_answer_with_history_ends_the_creation_mode() {
        let set = abc();
        let (mut c, _) = Claim::start::<E>(
            v("a"),
            Epoch::new(2, v("a")),
            set.clone(),
            head(vec![], 0),
            settings(),
            0,
        );
        grant(&mut c, "a", head(vec![], 0));
        let cmds = grant(&mut c, "b", head(vec![rec(1, "b", 1, &set, false)], 2));
        assert_eq!(
            c.state(),
            &ClaimState::CatchingUp {
                source: v("b"),
                best_size: 2
            }
        );
        assert_eq!(fetches(&cmds), [("b".to_owned(), 0, 2)]);
    }

    #[test]
    fn a_refusal_with_a_higher_epoch_ends_the_claim() {
        let (mut c, _) = Claim::start::<E>(
            v("a"),
            Epoch::new(3, v("a")),
            abc(),
            head(vec![], 0),
            settings(),
            0,
        );
        let e = c.epoch().clone();
        c.on_promise_reply::<E>(
            &v("b"),
            &e,
            PromiseAnswer::Refused {
                promised: Epoch::new(5, v("c")),
            },
            0,
        );
        assert_eq!(
            c.state(),
            &ClaimState::Failed(ClaimFailure::Superseded {
                by: Epoch::new(5, v("c"))
            })
        );
        // Answers to other epochs are ignored.
        let (mut c, _) = Claim::start::<E>(
            v("a"),
            Epoch::new(3, v("a")),
            abc(),
            head(vec![], 0),
            settings(),
            0,
        );
        c.on_promise_reply::<E>(
            &v("b"),
            &Epoch::new(2, v("a")),
            PromiseAnswer::Refused {
                promised: Epoch::new(5, v("c")),
            },
            0,
        );
        assert_eq!(c.state(), &ClaimState::Promising);
    }

    #[test]
    fn picks_the_highest_last_epoch_then_the_longest_and_fetches_it() {
        let set = abc();
        let own = head(vec![rec(1, "a", 1, &set, false)], 6);
        let (mut c, _) = Claim::start::<E>(
            v("a"),
            Epoch::new(4, v("a")),
            set.clone(),
            own.clone(),
            settings(),
            0,
        );
        grant(&mut c, "a", own);
        // b: epoch 2 from 4: higher last epoch, although shorter than a's.
        let b = head(
            vec![rec(1, "a", 1, &set, false), rec(2, "b", 4, &set, false)],
            5,
        );
        let cmds = grant(&mut c, "b", b);
        assert_eq!(
            c.state(),
            &ClaimState::CatchingUp {
                source: v("b"),
                best_size: 5
            }
        );
        // a shares 1..=3 with b: fetch 4..=5 (batch of at most 3).
        assert_eq!(fetches(&cmds), [("b".to_owned(), 3, 5)]);
    }

    #[test]
    fn prefers_its_own_log_among_equals() {
        let set = abc();
        let h = head(vec![rec(1, "b", 1, &set, false)], 4);
        let (mut c, _) =
            Claim::start::<E>(v("b"), Epoch::new(2, v("b")), set, h.clone(), settings(), 0);
        let e = c.epoch().clone();
        c.on_promise_reply::<E>(&v("a"), &e, PromiseAnswer::Granted(h.clone()), 0);
        c.on_promise_reply::<E>(&v("b"), &e, PromiseAnswer::Granted(h), 0);
        assert_eq!(c.state(), &ClaimState::Activating);
    }

    #[test]
    fn catches_up_in_batches_through_the_own_replica_then_activates() {
        let set = abc();
        let best = head(vec![rec(1, "b", 1, &set, false)], 5);
        let (mut c, _) = Claim::start::<E>(
            v("a"),
            Epoch::new(2, v("a")),
            set.clone(),
            head(vec![], 0),
            settings(),
            0,
        );
        let mut own = Replica::empty(v("a"));
        let e = c.epoch().clone();
        // The own replica promises (as the runtime would route it).
        own.on_promise_request::<E>(&v("a"), e.clone(), 0);
        grant(&mut c, "a", own.head());
        let cmds = grant(&mut c, "b", best.clone());
        assert_eq!(fetches(&cmds), [("b".to_owned(), 0, 3)]);
        let serve = |after: u64, upto: u64| Entries {
            header: EntriesHeader {
                kind: EntriesKind::Fetched,
                epoch: e.clone(),
                head: best.clone(),
                commit_index: 0,
            },
            prev: after,
            entries: (after + 1..=upto).map(E).collect(),
            root: None,
        };
        let cmds = c.on_fetched(&v("b"), serve(0, 3), 10);
        let batch = to_self(&cmds).remove(0);
        own.on_entries(&v("a"), batch, 10);
        assert_eq!(own.size(), 3);
        let cmds = c.on_own_head::<E>(own.head(), 10);
        assert_eq!(fetches(&cmds), [("b".to_owned(), 3, 5)]);
        let cmds = c.on_fetched(&v("b"), serve(3, 5), 20);
        own.on_entries(&v("a"), to_self(&cmds).remove(0), 20);
        let cmds = c.on_own_head::<E>(own.head(), 20);
        let act = to_self(&cmds).remove(0);
        assert_eq!(act.prev, 5);
        own.on_entries(&v("a"), act, 20);
        assert_eq!(own.history().last_epoch(), Some(&e));
        assert_eq!(own.history().last().unwrap().start, 6);
        c.on_own_head::<E>(own.head(), 20);
        assert_eq!(c.state(), &ClaimState::Ready);
        assert_eq!(c.granted(), vec![v("a"), v("b")]);
    }

    #[test]
    fn the_own_divergent_suffix_is_quarantined_on_activation() {
        let set = abc();
        // a kept writing epoch 1 to 7; b and c moved to epoch 2 at 5 (which wrote nothing).
        let mut own = Replica::restore(
            v("a"),
            PersistentState {
                promised: Some(Epoch::new(1, v("a"))),
                history: EpochHistory::from_records(vec![rec(1, "a", 1, &set, false)]).unwrap(),
                commit_index: 0,
                promised_view: 0,
            },
            7,
        );
        let e = Epoch::new(3, v("a"));
        let (mut c, _) =
            Claim::start::<E>(v("a"), e.clone(), set.clone(), own.head(), settings(), 0);
        own.on_promise_request::<E>(&v("a"), e.clone(), 0);
        grant(&mut c, "a", own.head());
        let b = head(
            vec![rec(1, "a", 1, &set, false), rec(2, "b", 5, &set, false)],
            4,
        );
        let cmds = grant(&mut c, "b", b);
        assert!(fetches(&cmds).is_empty(), "a already holds 1..=4");
        let act = to_self(&cmds).remove(0);
        let applied = own.on_entries(&v("a"), act, 0);
        assert!(matches!(
            applied[0],
            Command::Quarantine { from_sequence: 5 }
        ));
        assert_eq!(own.size(), 4);
        let epochs: Vec<u64> = own
            .history()
            .records()
            .iter()
            .map(|r| r.epoch.number)
            .collect();
        // Epoch 2 wrote nothing and is not committed: compacted away (epoch 3 starts there too).
        assert_eq!(epochs, [1, 3]);
    }

    #[test]
    fn an_uncommitted_reconfiguration_adds_its_sets_to_the_quorum() {
        // Epoch 2 moved {a,b,c} to {a,b,d} and is not known committed.
        let old = abc();
        let new = vec![v("a"), v("b"), v("d")];
        let mut joint = Quorum::new(new.clone());
        joint.require(old.iter().cloned());
        let mut r2 = rec(2, "a", 4, &new, false);
        r2.quorum = joint;
        let own = head(vec![rec(1, "a", 1, &old, true), r2.clone()], 6);
        let (c, cmds) = Claim::start::<E>(
            v("a"),
            Epoch::new(3, v("a")),
            new.clone(),
            own,
            settings(),
            0,
        );
        assert_eq!(c.quorum().sets().len(), 2);
        assert_eq!(sent_to(&cmds), ["a", "b", "c", "d"]);
        // Once epoch 2 is committed, only its target set is needed.
        r2.committed = true;
        let own = head(vec![rec(1, "a", 1, &old, true), r2], 6);
        let (c, cmds) = Claim::start::<E>(v("a"), Epoch::new(3, v("a")), new, own, settings(), 0);
        assert!(!c.quorum().is_joint());
        assert_eq!(sent_to(&cmds), ["a", "b", "d"]);
    }

    #[test]
    fn a_member_with_lost_data_makes_the_next_claim_joint() {
        // The last committed epoch was established with c#1; c came back as c#2.
        let old = abc();
        let target = vec![v("a"), v("b"), Voter::new("c", 2)];
        let own = head(vec![rec(1, "a", 1, &old, true)], 3);
        let (mut c, cmds) = Claim::start::<E>(
            v("a"),
            Epoch::new(2, v("a")),
            target,
            own.clone(),
            settings(),
            0,
        );
        assert!(c.quorum().is_joint());
        assert_eq!(sent_to(&cmds), ["a", "b", "c"], "one request per node");
        let e = c.epoch().clone();
        c.on_promise_reply::<E>(&v("a"), &e, PromiseAnswer::Granted(own.clone()), 0);
        c.on_promise_reply::<E>(
            &Voter::new("c", 2),
            &e,
            PromiseAnswer::Granted(head(vec![], 0)),
            0,
        );
        // a and c#2 are a majority of the new set but not of the old one (c#1 never answers).
        assert_eq!(c.state(), &ClaimState::Promising);
        c.on_promise_reply::<E>(&v("b"), &e, PromiseAnswer::Granted(own), 0);
        assert_ne!(c.state(), &ClaimState::Promising);
    }

    #[test]
    fn learning_of_a_newer_uncommitted_epoch_asks_its_voters_too() {
        let old = abc();
        let own = head(vec![rec(1, "a", 1, &old, true)], 2);
        let (mut c, _) = Claim::start::<E>(
            v("a"),
            Epoch::new(5, v("a")),
            old.clone(),
            own.clone(),
            settings(),
            0,
        );
        // b's history shows epoch 3 established for {b, c, d}, not committed.
        let bcd = vec![v("b"), v("c"), v("d")];
        let b = head(
            vec![rec(1, "a", 1, &old, true), rec(3, "b", 3, &bcd, false)],
            4,
        );
        let e = c.epoch().clone();
        let cmds = c.on_promise_reply::<E>(&v("b"), &e, PromiseAnswer::Granted(b), 0);
        assert_eq!(sent_to(&cmds), ["d"]);
        c.on_promise_reply::<E>(&v("a"), &e, PromiseAnswer::Granted(own), 0);
        // a, b: majority of {a,b,c}, but only b of {b,c,d}.
        assert_eq!(c.state(), &ClaimState::Promising);
        c.on_promise_reply::<E>(&v("d"), &e, PromiseAnswer::Granted(head(vec![], 0)), 0);
        assert!(matches!(c.state(), ClaimState::CatchingUp { .. }));
    }

    #[test]
    fn a_source_that_changed_or_lost_its_data_fails_the_claim() {
        let set = abc();
        let best = head(vec![rec(1, "b", 1, &set, false)], 5);
        let start = || {
            let (mut c, _) = Claim::start::<E>(
                v("a"),
                Epoch::new(2, v("a")),
                set.clone(),
                head(vec![], 0),
                settings(),
                0,
            );
            grant(&mut c, "a", head(vec![], 0));
            grant(&mut c, "b", best.clone());
            c
        };
        let mut c = start();
        let e = c.epoch().clone();
        let batch = |h: Head| Entries::<E> {
            header: EntriesHeader {
                kind: EntriesKind::Fetched,
                epoch: e.clone(),
                head: h,
                commit_index: 0,
            },
            prev: 0,
            entries: vec![E(1)],
            root: None,
        };
        c.on_fetched(&Voter::new("b", 9), batch(best.clone()), 0);
        assert!(matches!(
            c.state(),
            ClaimState::Failed(ClaimFailure::SourceLost { .. })
        ));
        let mut c = start();
        c.on_fetched(
            &v("b"),
            batch(head(vec![rec(1, "b", 1, &set, false)], 2)),
            0,
        );
        assert!(matches!(
            c.state(),
            ClaimState::Failed(ClaimFailure::SourceLost { .. })
        ));
        let mut c = start();
        c.on_fetched(&v("b"), batch(best.clone()), 0);
        assert!(matches!(c.state(), ClaimState::CatchingUp { .. }));
    }

    #[test]
    fn retries_unanswered_requests_and_times_out() {
        let (mut c, _) = Claim::start::<E>(
            v("a"),
            Epoch::new(1, v("a")),
            abc(),
            head(vec![], 0),
            settings(),
            0,
        );
        grant(&mut c, "a", head(vec![], 0));
        assert!(c.tick::<E>(50).is_empty());
        assert_eq!(sent_to(&c.tick::<E>(100)), ["b", "c"]);
        assert!(c.tick::<E>(150).is_empty());
        c.tick::<E>(1_000);
        assert_eq!(c.state(), &ClaimState::Failed(ClaimFailure::TimedOut));
    }

    #[test]
    fn the_timeout_counts_from_the_last_progress() {
        let (mut c, _) = Claim::start::<E>(
            v("a"),
            Epoch::new(1, v("a")),
            abc(),
            head(vec![], 0),
            settings(),
            0,
        );
        let e = c.epoch().clone();
        c.on_promise_reply::<E>(&v("a"), &e, PromiseAnswer::Granted(head(vec![], 0)), 900);
        c.tick::<E>(1_500);
        assert_eq!(c.state(), &ClaimState::Promising);
        c.tick::<E>(1_900);
        assert_eq!(c.state(), &ClaimState::Failed(ClaimFailure::TimedOut));
    }

    #[test]
    fn the_own_replica_promising_higher_supersedes_the_claim() {
        let (mut c, _) = Claim::start::<E>(
            v("a"),
            Epoch::new(1, v("a")),
            abc(),
            head(vec![], 0),
            settings(),
            0,
        );
        let mut h = head(vec![], 0);
        h.promised = Some(Epoch::new(2, v("b")));
        c.on_own_head::<E>(h, 0);
        assert!(matches!(
            c.state(),
            ClaimState::Failed(ClaimFailure::Superseded { .. })
        ));
    }
}
