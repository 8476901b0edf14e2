//! One node's part in one context: its [`Replica`], plus a [`Claim`] or a [`Writer`] when
//! placement names it the writer. This is the single state machine the node runtime drives per
//! context: it feeds membership views, messages, appends and clock ticks, and carries out the
//! returned commands.
//!
//! Messages a node sends itself (the claim asking its own replica for a promise, the writer
//! handing new entries to its own replica, the replica's cursor back to its writer) are
//! delivered in process, in place, so the returned commands are only effects on the outside:
//! storage, network, client acknowledgements.
//!
//! Placement decides *who should* write ([`crate::placement::writer`]); epochs decide who *may*.
//! When placement names this node it claims a new epoch; when placement moves away, or the
//! replica set changes (a member joined, was removed, or came back with lost data), the writer
//! steps down and, if still named, claims again with the new set (a joint quorum, see
//! [`crate::claim`]).
//!
//! # Placement views
//! With [`Participant::on_view`] membership is a versioned [`crate::views`] view: claims are
//! made under it and consult the context's sets in the earlier views the [`ViewRange`] names;
//! a member whose incarnation differs from this node's counts as gone (this node lost its data
//! and is not that voter; it waits for the view to name its new incarnation). The runtime
//! settles a view per context with [`Participant::settle`] (the writer confirms that the
//! context's placement did not change since its claim, or claims again) and reads the result
//! from [`Participant::settled_view`] and [`Participant::is_settled`].
//! [`Participant::on_membership`] is the view-less form (view 0): gossip's membership as it is.

use crate::availability::{AcceptLossError, Availability, VoterState, assess};
use crate::claim::{Claim, ClaimFailure, ClaimScope, ClaimState, learned_quorum};
use crate::epoch::Epoch;
use crate::identity::{NodeId, Voter};
use crate::placement::{self, Member, Role, score};
use crate::protocol::{
    Command, Entries, EntriesKind, LogEntry, Message, PersistentState, Settings, StepDown,
};
use crate::replica::Replica;
use crate::views::{PlacementView, ViewRange, set_changed};
use crate::writer::{AppendError, Writer};
use std::collections::BTreeSet;

/// What this node does for the context besides holding its replica.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum RoleState {
    Follower,
    Claiming(Claim),
    Writing(Writer),
}

/// One node's state machine for one context.
#[derive(Clone, Debug)]
pub struct Participant {
    context: String,
    me: Voter,
    settings: Settings,
    replica: Replica,
    role: RoleState,
    /// The current view's members, with gossip's liveness.
    members: Vec<Member>,
    /// The placement view version of `members` (0: no views, [`Self::on_membership`]).
    view: u64,
    /// The views a claim consults besides the current one (versions from the floor up).
    earlier: Vec<PlacementView>,
    /// Highest epoch number seen in any message (volatile; the promise is the persisted bound).
    max_seen: u64,
    /// No new claim before this time (after a failed one).
    claim_after: u64,
    /// The view the current claim, or the writer's epoch, was made under.
    claimed_under: Option<PlacementView>,
    /// The latest view the writer's epoch is known to be placed as in ([`Self::settle`]).
    settled_through: u64,
    /// An epoch whose claim ended before choosing a history: the next claim uses it again.
    retry_epoch: Option<Epoch>,
    /// No claims before the view reaches this version (a replica has seen it).
    awaiting_view: u64,
}

impl Participant {
    /// A participant restored from storage (see [`Replica::restore`]). It does nothing until it
    /// is given a membership view.
    pub fn new(
        context: impl Into<String>,
        me: Voter,
        state: PersistentState,
        size: u64,
        settings: Settings,
    ) -> Self {
        let replica = Replica::restore(me.clone(), state, size);
        let max_seen = replica.promised().map_or(0, |p| p.number);
        Participant {
            context: context.into(),
            me,
            settings,
            replica,
            role: RoleState::Follower,
            members: Vec::new(),
            view: 0,
            earlier: Vec::new(),
            max_seen,
            claim_after: 0,
            claimed_under: None,
            settled_through: 0,
            retry_epoch: None,
            awaiting_view: 0,
        }
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    pub fn me(&self) -> &Voter {
        &self.me
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    pub fn role(&self) -> &RoleState {
        &self.role
    }

    /// The placement view version this participant works under (0: no views).
    pub fn view(&self) -> u64 {
        self.view
    }

    /// The writer state machine, while this node writes the context.
    pub fn writer(&self) -> Option<&Writer> {
        match &self.role {
            RoleState::Writing(w) => Some(w),
            _ => None,
        }
    }

    /// The replica set for the current membership view (with the incarnations it announces).
    pub fn target(&self) -> Vec<Voter> {
        placement::replica_voters(
            &self.context,
            &self.members,
            self.settings.replication_factor,
        )
    }

    /// The node placement names writer in the current view.
    pub fn placement_writer(&self) -> Option<NodeId> {
        placement::writer(
            &self.context,
            &self.members,
            self.settings.replication_factor,
        )
    }

    /// The context's current replica set is established: the latest epoch record this replica
    /// holds is committed and was established for the replica set of the current membership
    /// view (so the context's history is on a majority of that set). With placement views a
    /// node settles a view once this holds for every context it holds (or their writers'
    /// [`Self::settled_view`] reached it). Without views, the runtime should hold back the next
    /// membership removal (or a second join) until every context it would change is settled on
    /// some replica, just as it waits for a wiped node to be caught up.
    pub fn is_settled(&self) -> bool {
        let mut target = self.target();
        target.sort();
        self.replica
            .history()
            .last()
            .is_some_and(|r| r.committed && r.quorum.target() == target.as_slice())
    }

    /// While this node is the active writer and its epoch's record is committed: the latest
    /// view version the epoch is known to be placed as in (the view it was claimed under, raised
    /// by [`Self::settle`] while the context's placement stays the same).
    pub fn settled_view(&self) -> Option<u64> {
        match &self.role {
            RoleState::Writing(w)
                if w.stopped().is_none()
                    && w.history()
                        .last()
                        .is_some_and(|r| &r.epoch == w.epoch() && r.committed) =>
            {
                Some(self.settled_through)
            }
            _ => None,
        }
    }

    /// The sequence the next append gets, if this node accepts appends now.
    pub fn next_sequence(&self, now: u64) -> Result<u64, AppendError> {
        match &self.role {
            RoleState::Writing(w) => {
                w.can_accept(now)?;
                Ok(w.next_sequence())
            }
            RoleState::Claiming(_) => Err(AppendError::Establishing),
            RoleState::Follower => Err(AppendError::NotWriter {
                writer: self.writer_hint(),
            }),
        }
    }

    /// Where appends should go, as far as this node knows.
    pub fn writer_hint(&self) -> Option<NodeId> {
        self.placement_writer()
            .or_else(|| self.replica.writer().map(|e| e.node().clone()))
    }

    /// Appends entries numbered from [`Self::next_sequence`].
    pub fn append<E: LogEntry>(
        &mut self,
        entries: Vec<E>,
        now: u64,
    ) -> Result<Vec<Command<E>>, AppendError> {
        let cmds = match &mut self.role {
            RoleState::Writing(w) => w.append(entries, now)?,
            RoleState::Claiming(_) => return Err(AppendError::Establishing),
            RoleState::Follower => {
                return Err(AppendError::NotWriter {
                    writer: self.writer_hint(),
                });
            }
        };
        let mut out = Vec::new();
        self.route(cmds, now, &mut out);
        self.follow_up(now, &mut out);
        Ok(out)
    }

    /// The prefix of the log known to be held by a quorum: the writer's commit index while
    /// writing, else what the writer last said (never ahead of the local log). Entries past it
    /// may still be quarantined, so replicas serve reads only up to it.
    pub fn committed(&self) -> u64 {
        match &self.role {
            RoleState::Writing(w) => w.commit_index().min(self.replica.size()),
            _ => self.replica.commit_index(),
        }
    }

    /// The local log is durable up to `size`. The runtime reports this after it stores the
    /// writer's own entries (the `Append` an [`Self::append`] returns), which it may carry out
    /// after the `SendEntries` that follow it: the writer ships ahead of its own fsync and counts
    /// itself for acknowledgements only up to what was reported here.
    pub fn on_local_durable<E: LogEntry>(&mut self, size: u64, now: u64) -> Vec<Command<E>> {
        let mut out = Vec::new();
        if let RoleState::Writing(w) = &mut self.role {
            let cmds = w.on_own_durable(size);
            self.route(cmds, now, &mut out);
        }
        self.follow_up(now, &mut out);
        out
    }

    /// A new membership view without versions (gossip's membership as it is; view 0).
    pub fn on_membership<E: LogEntry>(
        &mut self,
        mut members: Vec<Member>,
        now: u64,
    ) -> Vec<Command<E>> {
        // This node knows its own incarnation better than gossip.
        for m in &mut members {
            if m.id == self.me.node {
                m.incarnation = self.me.incarnation;
            }
        }
        self.members = members;
        self.members_changed(now)
    }

    /// A new placement view: `members` are the members of view `range.version` with gossip's
    /// liveness (a member whose announced incarnation differs from the view's counts as dead),
    /// `range.earlier` the views from the floor up that claims consult too. A member with this
    /// node's id but another incarnation is not this node: it takes no part as a member until a
    /// view names its incarnation.
    pub fn on_view<E: LogEntry>(
        &mut self,
        members: Vec<Member>,
        range: ViewRange,
        now: u64,
    ) -> Vec<Command<E>> {
        #[cfg(ledger_mutant = "stale_incarnation_claims")]
        let members = {
            // Broken on purpose: this node takes the view's entry for its id as itself.
            let mut members = members;
            for m in &mut members {
                if m.id == self.me.node {
                    m.incarnation = self.me.incarnation;
                }
            }
            members
        };
        self.members = members;
        self.view = self.view.max(range.version);
        self.earlier = range.earlier;
        self.replica.set_view(range.version);
        self.members_changed(now)
    }

    fn members_changed<E: LogEntry>(&mut self, now: u64) -> Vec<Command<E>> {
        let mut out = Vec::new();
        let live = self.live();
        let mirrors = placement::mirrors(&self.context, &self.members);
        if let RoleState::Writing(w) = &mut self.role {
            w.add_learners(&mirrors);
            let cmds = w.set_live(live);
            self.route(cmds, now, &mut out);
        }
        self.follow_up(now, &mut out);
        out
    }

    /// Settles the current view for this context: if this node is the active writer and the
    /// context's placement (replica set or mirrors, [`set_changed`]) changed between the view
    /// its epoch was claimed under and the current one, it claims again under the current view;
    /// otherwise its epoch counts as placed in the current view ([`Self::settled_view`]).
    pub fn settle<E: LogEntry>(&mut self, now: u64) -> Vec<Command<E>> {
        let mut out = Vec::new();
        let current = self.current_view();
        let r = self.settings.replication_factor;
        let changed = self
            .claimed_under
            .as_ref()
            .is_none_or(|u| set_changed(&self.context, u, &current, r));
        if let RoleState::Writing(w) = &mut self.role
            && w.stopped().is_none()
        {
            if changed {
                let cmds = w.step_down_for(StepDown::Placement);
                self.role = RoleState::Follower;
                self.route(cmds, now, &mut out);
                if self.should_write() {
                    let target = self.target();
                    self.start_claim(target, self.scope(), now, &mut out);
                }
            } else {
                self.settled_through = self.view;
            }
        }
        self.follow_up(now, &mut out);
        out
    }

    /// Whether the context can get (or keep) a writer, and which members block it.
    pub fn availability(&self) -> Availability {
        let sets: Vec<Vec<Voter>> = match &self.role {
            RoleState::Claiming(c) => c.promise_quorum().sets().to_vec(),
            RoleState::Writing(w) => w.quorum().sets().to_vec(),
            RoleState::Follower => {
                let target = self.target();
                if target.is_empty() {
                    return Availability::Ok;
                }
                let head = self.replica.head();
                let mut q = learned_quorum(&target, std::iter::once(&head));
                for set in self.scope().earlier {
                    q.require(set);
                }
                q.sets().to_vec()
            }
        };
        let claim = match &self.role {
            RoleState::Claiming(c) => Some(c),
            _ => None,
        };
        assess(&sets, |v| {
            if claim.is_some_and(|c| c.granted_by(v)) {
                VoterState::Reachable
            } else {
                self.voter_state(v)
            }
        })
    }

    /// The operator accepts possible loss for this context (it lost its quorum, or waits for
    /// members that may never come back): this node, the placement writer, claims with the live
    /// voters only — the earlier views' sets reduced to their live voters, no sets learned from
    /// histories — and the new epoch's record names only the target set. The survivors' best
    /// history becomes the context's; what only the others held is lost (or, if they return,
    /// quarantined as divergent).
    pub fn accept_loss<E: LogEntry>(
        &mut self,
        now: u64,
    ) -> Result<Vec<Command<E>>, AcceptLossError> {
        if !self.should_write() {
            return Err(AcceptLossError::NotWriter {
                writer: self.placement_writer(),
            });
        }
        if self.availability() == Availability::Ok {
            return Err(AcceptLossError::Available);
        }
        let mut scope = self.scope();
        scope.accept_loss = true;
        scope.earlier = scope
            .earlier
            .into_iter()
            .map(|set| {
                set.into_iter()
                    .filter(|v| self.voter_state(v) == VoterState::Reachable)
                    .collect::<Vec<_>>()
            })
            .filter(|set| !set.is_empty())
            .collect();
        let mut out = Vec::new();
        match std::mem::replace(&mut self.role, RoleState::Follower) {
            RoleState::Writing(mut w) => {
                let cmds = w.step_down_for(StepDown::Placement);
                self.route(cmds, now, &mut out);
            }
            RoleState::Claiming(c) => self.abandon(&c),
            RoleState::Follower => {}
        }
        let target = self.target();
        self.start_claim(target, scope, now, &mut out);
        self.follow_up(now, &mut out);
        Ok(out)
    }

    /// A message from another node (or a test).
    pub fn on_message<E: LogEntry>(
        &mut self,
        from: Voter,
        message: Message<E>,
        now: u64,
    ) -> Vec<Command<E>> {
        let mut out = Vec::new();
        let cmds = self.deliver(&from, message, now);
        self.route(cmds, now, &mut out);
        self.follow_up(now, &mut out);
        out
    }

    /// Time passes.
    pub fn tick<E: LogEntry>(&mut self, now: u64) -> Vec<Command<E>> {
        let mut cmds = self.replica.poll(now, self.settings.poll_ms);
        if let (RoleState::Follower, Some(w)) = (&self.role, self.placement_writer()) {
            cmds.extend(self.replica.poll_placement(w, now, self.settings.poll_ms));
        }
        match &mut self.role {
            RoleState::Claiming(c) => cmds.extend(c.tick(now)),
            RoleState::Writing(w) => cmds.extend(w.tick(now)),
            RoleState::Follower => {}
        }
        let mut out = Vec::new();
        self.route(cmds, now, &mut out);
        self.follow_up(now, &mut out);
        out
    }

    fn deliver<E: LogEntry>(
        &mut self,
        from: &Voter,
        message: Message<E>,
        now: u64,
    ) -> Vec<Command<E>> {
        if let Some(e) = message.epoch_hint() {
            self.max_seen = self.max_seen.max(e.number);
        }
        match message {
            Message::PromiseRequest { epoch, view } => {
                self.replica.on_promise_request(from, epoch, view)
            }
            Message::FetchRequest { epoch, after, upto } => {
                self.replica.on_fetch_request(from, epoch, after, upto)
            }
            Message::PromiseReply { epoch, answer } => match &mut self.role {
                RoleState::Claiming(c) => c.on_promise_reply(from, &epoch, answer, now),
                _ => Vec::new(),
            },
            Message::Entries(batch) => match batch.header.kind {
                EntriesKind::Replicate => self.replica.on_entries(from, batch, now),
                EntriesKind::Fetched => match &mut self.role {
                    RoleState::Claiming(c) => c.on_fetched(from, batch, now),
                    _ => Vec::new(),
                },
            },
            Message::Cursor(head) => match &mut self.role {
                RoleState::Writing(w) => w.on_cursor(from, &head, now),
                _ => Vec::new(),
            },
        }
    }

    /// Delivers messages to self in place; everything else is for the runtime.
    fn route<E: LogEntry>(&mut self, cmds: Vec<Command<E>>, now: u64, out: &mut Vec<Command<E>>) {
        for c in cmds {
            match c {
                Command::Send { to, message } if to == self.me.node => {
                    let me = self.me.clone();
                    let more = self.deliver(&me, message, now);
                    self.route(more, now, out);
                }
                Command::SendEntries {
                    to,
                    header,
                    after,
                    upto,
                } if to == self.me.node && after == upto => {
                    let me = self.me.clone();
                    let message = Message::Entries(Entries {
                        header,
                        prev: after,
                        entries: Vec::new(),
                        root: None,
                    });
                    let more = self.deliver(&me, message, now);
                    self.route(more, now, out);
                }
                other => out.push(other),
            }
        }
    }

    /// Follows up on what the last step changed: fencing, claim progress, placement.
    fn follow_up<E: LogEntry>(&mut self, now: u64, out: &mut Vec<Command<E>>) {
        // Each pass changes the role at most once; a few passes always suffice.
        for _ in 0..8 {
            let mut changed = false;
            // A writer whose own replica promised a higher epoch stops at once.
            if let RoleState::Writing(w) = &mut self.role {
                if let Some(p) = self.replica.promised() {
                    out.extend(w.observe(p));
                }
                if w.stopped().is_some() {
                    self.role = RoleState::Follower;
                    changed = true;
                }
            }
            // A claim follows its own replica (promises, catch-up, the epoch record).
            let mut cmds = Vec::new();
            if let RoleState::Claiming(c) = &mut self.role {
                cmds = c.on_own_head(self.replica.head(), now);
            }
            self.route(cmds, now, out);
            let outcome = match &self.role {
                RoleState::Claiming(c) => Some(c.state().clone()),
                _ => None,
            };
            match outcome {
                Some(ClaimState::Ready) => {
                    if let RoleState::Claiming(c) =
                        std::mem::replace(&mut self.role, RoleState::Follower)
                    {
                        self.activate(c, now, out);
                    }
                    changed = true;
                }
                Some(ClaimState::Failed(why)) => {
                    if let RoleState::Claiming(c) =
                        std::mem::replace(&mut self.role, RoleState::Follower)
                    {
                        if let ClaimFailure::StaleView { view } = why {
                            self.awaiting_view = self.awaiting_view.max(view);
                        }
                        if matches!(why, ClaimFailure::TimedOut | ClaimFailure::StaleView { .. }) {
                            self.abandon(&c);
                        }
                        self.claim_after = now + self.backoff(c.epoch());
                    }
                    changed = true;
                }
                _ => {}
            }
            changed |= self.reconcile(now, out);
            if !changed {
                break;
            }
        }
    }

    /// A claim ends without a writer: if it never chose a history, its epoch is claimed again
    /// next time (no epoch is raised by a node that cannot reach a majority).
    fn abandon(&mut self, claim: &Claim) {
        if !claim.chose_history() {
            self.retry_epoch = Some(claim.epoch().clone());
        }
    }

    fn activate<E: LogEntry>(&mut self, claim: Claim, now: u64, out: &mut Vec<Command<E>>) {
        let (mut w, mut cmds) = Writer::new(
            self.me.clone(),
            claim.epoch().clone(),
            self.replica.history().clone(),
            self.replica.size(),
            &claim.granted(),
            &placement::mirrors(&self.context, &self.members),
            self.settings.clone(),
            now,
        );
        self.settled_through = claim.scope().view;
        cmds.extend(w.set_live(self.live()));
        self.role = RoleState::Writing(w);
        self.route(cmds, now, out);
    }

    fn live(&self) -> BTreeSet<NodeId> {
        self.members
            .iter()
            .filter(|m| m.state.is_live())
            .map(|m| m.id.clone())
            .collect()
    }

    /// Where `v` is in the current view.
    fn voter_state(&self, v: &Voter) -> VoterState {
        if *v == self.me {
            return VoterState::Reachable;
        }
        match self
            .members
            .iter()
            .find(|m| m.id == v.node && m.incarnation == v.incarnation && m.state.is_member())
        {
            Some(m) if m.state.is_live() => VoterState::Reachable,
            Some(_) => VoterState::Down,
            None => VoterState::Gone,
        }
    }

    /// The current view as a [`PlacementView`].
    fn current_view(&self) -> PlacementView {
        PlacementView {
            version: self.view,
            members: self.members.clone(),
        }
    }

    /// What a claim made now consults: the current view, and this context's replica sets in
    /// the earlier views.
    fn scope(&self) -> ClaimScope {
        let r = self.settings.replication_factor;
        ClaimScope {
            view: self.view,
            earlier: self
                .earlier
                .iter()
                .map(|v| v.replica_voters(&self.context, r))
                .collect(),
            accept_loss: false,
        }
    }

    /// A deterministic spread of claim retries, so two nodes that both think they should write
    /// do not retry in lockstep.
    fn backoff(&self, epoch: &Epoch) -> u64 {
        let base = self.settings.claim_backoff_ms.max(1);
        let jitter =
            score(&self.context, &self.me.node) ^ epoch.number.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        base + jitter % base
    }

    /// Placement names this node writer: it is a member in its own incarnation, in the replica
    /// set, and the first live one there.
    fn should_write(&self) -> bool {
        let is_member = self.members.iter().any(|m| {
            m.id == self.me.node
                && m.incarnation == self.me.incarnation
                && m.role == Role::Member
                && m.state.is_member()
        });
        is_member
            && self.target().contains(&self.me)
            && self.placement_writer().as_ref() == Some(&self.me.node)
    }

    /// Claims, restarts a claim, or steps down as placement requires. Returns whether the role
    /// changed.
    fn reconcile<E: LogEntry>(&mut self, now: u64, out: &mut Vec<Command<E>>) -> bool {
        let target = self.target();
        let should = self.should_write() && self.view >= self.awaiting_view;
        let same = |a: &[Voter]| {
            let mut a = a.to_vec();
            let mut b = target.clone();
            a.sort();
            b.sort();
            a == b
        };
        match &mut self.role {
            RoleState::Follower => {
                if should && now >= self.claim_after {
                    self.start_claim(target.clone(), self.scope(), now, out);
                    return true;
                }
                false
            }
            RoleState::Claiming(c) => {
                let outdated =
                    !same(c.target()) || (c.scope().view != self.view && !c.chose_history());
                if !should || outdated {
                    if let RoleState::Claiming(c) =
                        std::mem::replace(&mut self.role, RoleState::Follower)
                    {
                        self.abandon(&c);
                    }
                    if should {
                        self.start_claim(target.clone(), self.scope(), now, out);
                    }
                    return true;
                }
                false
            }
            RoleState::Writing(w) => {
                if should && same(w.quorum().target()) {
                    return false;
                }
                let cmds = w.step_down_for(StepDown::Placement);
                self.role = RoleState::Follower;
                self.route(cmds, now, out);
                if should {
                    self.start_claim(target.clone(), self.scope(), now, out);
                }
                true
            }
        }
    }

    fn start_claim<E: LogEntry>(
        &mut self,
        target: Vec<Voter>,
        scope: ClaimScope,
        now: u64,
        out: &mut Vec<Command<E>>,
    ) {
        let fresh = self
            .max_seen
            .max(self.replica.promised().map_or(0, |p| p.number))
            + 1;
        let epoch = match self.retry_epoch.take() {
            Some(e)
                if e.writer == self.me
                    && e.number >= self.max_seen
                    && self.replica.promised().is_none_or(|p| *p <= e) =>
            {
                e
            }
            _ => Epoch::new(fresh, self.me.clone()),
        };
        self.max_seen = self.max_seen.max(epoch.number);
        self.claimed_under = Some(self.current_view());
        let (claim, cmds) = Claim::start_scoped(
            self.me.clone(),
            epoch,
            target,
            scope,
            self.replica.head(),
            self.settings.clone(),
            now,
        );
        self.role = RoleState::Claiming(claim);
        self.route(cmds, now, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::MemberState;
    use crate::protocol::AckLevel;
    use std::collections::{BTreeMap, VecDeque};

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct E(u64, u32);

    impl LogEntry for E {
        fn sequence(&self) -> u64 {
            self.0
        }
    }

    /// A tiny lossless cluster: nodes, storage, an in-order network. The property-heavy
    /// randomized version is `tests/simulation.rs`.
    struct Cluster {
        nodes: BTreeMap<String, (Participant, Vec<E>)>,
        net: VecDeque<(Voter, NodeId, Message<E>)>,
        acked: Vec<(AckLevel, u64)>,
        events: Vec<String>,
        now: u64,
    }

    impl Cluster {
        fn new(names: &[&str]) -> Self {
            let members: Vec<Member> = names
                .iter()
                .map(|n| Member::new(*n, 1, Role::Member, MemberState::Alive))
                .collect();
            let mut c = Cluster {
                nodes: BTreeMap::new(),
                net: VecDeque::new(),
                acked: Vec::new(),
                events: Vec::new(),
                now: 0,
            };
            for n in names {
                let p = Participant::new(
                    "ctx",
                    Voter::new(*n, 1),
                    PersistentState::default(),
                    0,
                    Settings::default(),
                );
                c.nodes.insert((*n).to_owned(), (p, Vec::new()));
            }
            for n in names {
                let cmds = c
                    .nodes
                    .get_mut(*n)
                    .unwrap()
                    .0
                    .on_membership(members.clone(), 0);
                c.exec(n, cmds);
            }
            c
        }

        fn exec(&mut self, node: &str, cmds: Vec<Command<E>>) {
            let me = self.nodes[node].0.me().clone();
            for c in cmds {
                match c {
                    Command::Send { to, message } => self.net.push_back((me.clone(), to, message)),
                    Command::SendEntries {
                        to,
                        header,
                        after,
                        upto,
                    } => {
                        let log = &self.nodes[node].1;
                        let entries = log[after as usize..upto as usize].to_vec();
                        self.net.push_back((
                            me.clone(),
                            to,
                            Message::Entries(Entries {
                                header,
                                prev: after,
                                entries,
                                root: None,
                            }),
                        ));
                    }
                    Command::Quarantine { from_sequence } => {
                        self.nodes
                            .get_mut(node)
                            .unwrap()
                            .1
                            .truncate(from_sequence as usize - 1);
                    }
                    Command::Append { entries, .. } => {
                        let log = &mut self.nodes.get_mut(node).unwrap().1;
                        assert_eq!(entries[0].0, log.len() as u64 + 1);
                        log.extend(entries);
                    }
                    Command::SaveState(_) => {}
                    Command::Acknowledged { level, through, .. } => {
                        self.acked.push((level, through))
                    }
                    Command::Activated { epoch, .. } => self
                        .events
                        .push(format!("{node} activated {}", epoch.number)),
                    Command::SteppedDown { epoch, .. } => self
                        .events
                        .push(format!("{node} stepped down {}", epoch.number)),
                }
            }
        }

        fn run(&mut self) {
            while let Some((from, to, msg)) = self.net.pop_front() {
                let Some((p, _)) = self.nodes.get_mut(to.as_str()) else {
                    continue;
                };
                let cmds = p.on_message(from, msg, self.now);
                self.exec(to.as_str(), cmds);
            }
        }

        fn writer(&self) -> Option<&str> {
            self.nodes
                .iter()
                .find(|(_, (p, _))| p.writer().is_some_and(|w| w.stopped().is_none()))
                .map(|(n, _)| n.as_str())
        }

        fn append(&mut self, n: u32) {
            let w = self.writer().unwrap().to_owned();
            let p = &mut self.nodes.get_mut(&w).unwrap().0;
            let seq = p.next_sequence(self.now).unwrap();
            let cmds = p
                .append((0..n as u64).map(|i| E(seq + i, 1)).collect(), self.now)
                .unwrap();
            self.exec(&w, cmds);
            // The writer's own store completes (this runtime stores at once).
            let (p, log) = self.nodes.get_mut(&w).unwrap();
            let cmds = p.on_local_durable(log.len() as u64, self.now);
            self.exec(&w, cmds);
            self.run();
        }
    }

    #[test]
    fn three_nodes_elect_the_placement_writer_and_replicate() {
        let mut c = Cluster::new(&["n1", "n2", "n3"]);
        c.run();
        let expected = placement::writer(
            "ctx",
            &["n1", "n2", "n3"].map(|n| Member::new(n, 1, Role::Member, MemberState::Alive)),
            3,
        )
        .unwrap();
        assert_eq!(c.writer(), Some(expected.as_str()));
        assert_eq!(c.events, [format!("{expected} activated 1")]);
        c.append(3);
        assert!(c.acked.contains(&(AckLevel::Quorum, 3)));
        assert!(c.acked.contains(&(AckLevel::All, 3)));
        for (p, log) in c.nodes.values() {
            assert_eq!(log.len(), 3);
            assert_eq!(p.replica().size(), 3);
        }
    }

    #[test]
    fn a_follower_refuses_appends_and_names_the_writer() {
        let mut c = Cluster::new(&["n1", "n2", "n3"]);
        c.run();
        let w = c.writer().unwrap().to_owned();
        let follower = c.nodes.keys().find(|n| **n != w).unwrap().clone();
        let p = &mut c.nodes.get_mut(&follower).unwrap().0;
        assert_eq!(
            p.append(vec![E(1, 0)], 0),
            Err(AppendError::NotWriter {
                writer: Some(NodeId::from(w.as_str()))
            })
        );
    }

    #[test]
    fn the_next_writer_takes_over_when_the_first_dies_and_keeps_acknowledged_entries() {
        let names = ["n1", "n2", "n3"];
        let mut c = Cluster::new(&names);
        c.run();
        c.append(2);
        let old = c.writer().unwrap().to_owned();
        c.nodes.remove(&old);
        let members: Vec<Member> = names
            .iter()
            .map(|n| {
                let state = if *n == old {
                    MemberState::Dead
                } else {
                    MemberState::Alive
                };
                Member::new(*n, 1, Role::Member, state)
            })
            .collect();
        let ids: Vec<String> = c.nodes.keys().cloned().collect();
        for n in &ids {
            let cmds = c
                .nodes
                .get_mut(n)
                .unwrap()
                .0
                .on_membership(members.clone(), 10);
            c.exec(n, cmds);
        }
        c.run();
        let new = c.writer().unwrap().to_owned();
        assert_ne!(new, old);
        assert_eq!(c.nodes[&new].0.writer().unwrap().start(), 3);
        c.append(1);
        for (_, log) in c.nodes.values() {
            assert_eq!(log.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3]);
        }
        assert!(c.acked.contains(&(AckLevel::Quorum, 3)));
    }

    #[test]
    fn a_new_incarnation_of_a_member_makes_the_writer_claim_a_joint_epoch() {
        let names = ["n1", "n2", "n3"];
        let mut c = Cluster::new(&names);
        c.run();
        c.append(2);
        let w = c.writer().unwrap().to_owned();
        let wiped = c.nodes.keys().find(|n| **n != w).unwrap().clone();
        // The wiped node restarts empty under a new incarnation.
        let p = Participant::new(
            "ctx",
            Voter::new(wiped.as_str(), 2),
            PersistentState::default(),
            0,
            Settings::default(),
        );
        c.nodes.insert(wiped.clone(), (p, Vec::new()));
        let members: Vec<Member> = names
            .iter()
            .map(|n| {
                Member::new(
                    *n,
                    if *n == wiped { 2 } else { 1 },
                    Role::Member,
                    MemberState::Alive,
                )
            })
            .collect();
        for n in names {
            let cmds = c
                .nodes
                .get_mut(n)
                .unwrap()
                .0
                .on_membership(members.clone(), 10);
            c.exec(n, cmds);
        }
        c.run();
        assert_eq!(c.writer(), Some(w.as_str()));
        let writer = c.nodes[&w].0.writer().unwrap();
        assert_eq!(writer.epoch().number, 2);
        assert!(writer.quorum().is_joint());
        c.append(1);
        assert_eq!(c.nodes[&wiped].1.len(), 3, "caught up from the writer");
        // The joint record is committed (all three hold it), so the next claim is single-set.
        assert!(c.nodes[&w].0.replica().history().last().unwrap().committed);
        assert!(c.nodes.values().all(|(p, _)| p.is_settled()));
    }

    fn set_views(c: &mut Cluster, names: &[&str], dead: &[&str], now: u64) {
        let members: Vec<Member> = names
            .iter()
            .map(|n| {
                let state = if dead.contains(n) {
                    MemberState::Dead
                } else {
                    MemberState::Alive
                };
                Member::new(*n, 1, Role::Member, state)
            })
            .collect();
        let ids: Vec<String> = c.nodes.keys().cloned().collect();
        for n in &ids {
            let cmds = c
                .nodes
                .get_mut(n)
                .unwrap()
                .0
                .on_membership(members.clone(), now);
            c.exec(n, cmds);
        }
        c.run();
    }

    #[test]
    fn placement_moving_away_and_back_hands_the_context_over_without_loss() {
        let names = ["n1", "n2", "n3"];
        let mut c = Cluster::new(&names);
        c.run();
        c.append(2);
        let first = c.writer().unwrap().to_owned();
        // A false suspicion everywhere: the first writer steps down, the next one takes over.
        set_views(&mut c, &names, &[first.as_str()], 10);
        let second = c.writer().unwrap().to_owned();
        assert_ne!(first, second);
        assert!(c.events.contains(&format!("{first} stepped down 1")));
        c.append(1);
        // Back alive: placement names it again; it claims a higher epoch and the second writer
        // is fenced.
        set_views(&mut c, &names, &[], 20);
        assert_eq!(c.writer(), Some(first.as_str()));
        assert_eq!(c.nodes[&first].0.writer().unwrap().epoch().number, 3);
        assert!(c.events.contains(&format!("{second} stepped down 2")));
        c.append(1);
        for (_, log) in c.nodes.values() {
            assert_eq!(log.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        }
        assert!(c.acked.contains(&(AckLevel::Quorum, 4)));
    }

    #[test]
    fn ten_thousand_idle_changes_of_writer_leave_at_most_three_epoch_records() {
        let names = ["n1", "n2", "n3"];
        let mut c = Cluster::new(&names);
        c.run();
        c.append(3);
        let first = c.writer().unwrap().to_owned();
        let mut longest = 0;
        for k in 0..5_000u64 {
            // Suspected and back: two claims, neither writes anything.
            set_views(&mut c, &names, &[first.as_str()], 10 + 2 * k);
            set_views(&mut c, &names, &[], 11 + 2 * k);
            for (p, _) in c.nodes.values() {
                longest = longest.max(p.replica().history().len());
            }
        }
        let w = c.nodes[&first].0.writer().unwrap();
        assert_eq!(w.epoch().number, 10_001, "10,000 claims after the first");
        assert!(longest <= 3, "a history of {longest} records");
        c.append(1);
        for (_, log) in c.nodes.values() {
            assert_eq!(log.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        }
    }

    #[test]
    fn a_participant_with_no_membership_does_nothing() {
        let mut p = Participant::new(
            "ctx",
            Voter::new("n1", 1),
            PersistentState::default(),
            0,
            Settings::default(),
        );
        assert!(p.tick::<E>(1_000).is_empty());
        assert!(matches!(p.role(), RoleState::Follower));
        assert_eq!(
            p.next_sequence(0),
            Err(AppendError::NotWriter { writer: None })
        );
    }

    #[test]
    fn a_single_node_cluster_writes_alone() {
        let mut p = Participant::new(
            "ctx",
            Voter::new("solo", 1),
            PersistentState::default(),
            0,
            Settings::default(),
        );
        let cmds = p.on_membership::<E>(
            vec![Member::new("solo", 1, Role::Member, MemberState::Alive)],
            0,
        );
        assert!(cmds.iter().any(|c| matches!(c, Command::Activated { .. })));
        let cmds = p.append(vec![E(1, 0), E(2, 0)], 0).unwrap();
        // Nothing is acknowledged before the node's own disk holds the entries.
        assert!(
            !cmds
                .iter()
                .any(|c| matches!(c, Command::Acknowledged { .. }))
        );
        let cmds = p.on_local_durable::<E>(2, 0);
        assert!(cmds.iter().any(|c| matches!(
            c,
            Command::Acknowledged {
                level: AckLevel::Quorum,
                through: 2,
                ..
            }
        )));
    }

    use crate::views::{ViewChange, ViewLog, ViewRecord};

    /// Gives every node the log's current view and range, with `dead` members down.
    fn push_log(c: &mut Cluster, log: &ViewLog, dead: &[&str], now: u64) {
        let members: Vec<Member> = log
            .current()
            .members
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if dead.contains(&m.id.as_str()) {
                    m.state = MemberState::Dead;
                }
                m
            })
            .collect();
        let ids: Vec<String> = c.nodes.keys().cloned().collect();
        for n in &ids {
            let cmds = c
                .nodes
                .get_mut(n)
                .unwrap()
                .0
                .on_view(members.clone(), log.range(), now);
            c.exec(n, cmds);
        }
        c.run();
    }

    fn member(n: &str) -> Member {
        Member::new(n, 1, Role::Member, MemberState::Alive)
    }

    fn booted(names: &[&str]) -> ViewLog {
        let mut log = ViewLog::new();
        log.apply(&ViewRecord::Change {
            version: 1,
            change: ViewChange::Bootstrap(names.iter().map(|n| member(n)).collect()),
        })
        .unwrap();
        log
    }

    fn settle_all(c: &mut Cluster, now: u64) {
        let ids: Vec<String> = c.nodes.keys().cloned().collect();
        for n in &ids {
            let cmds = c.nodes.get_mut(n).unwrap().0.settle(now);
            c.exec(n, cmds);
        }
        c.run();
    }

    #[test]
    fn a_claim_that_reaches_no_majority_retries_with_the_same_epoch() {
        let mut p = Participant::new(
            "ctx",
            Voter::new("n1", 1),
            PersistentState::default(),
            0,
            Settings::default(),
        );
        let log = booted(&["n1", "n2", "n3"]);
        // n1 writes "ctx" only if it ranks first; make the others dead so it is the writer.
        let members: Vec<Member> = log
            .current()
            .members
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if m.id.as_str() != "n1" {
                    m.state = MemberState::Dead;
                }
                m
            })
            .collect();
        let epochs = |cmds: &[Command<E>]| -> Vec<u64> {
            cmds.iter()
                .filter_map(|c| match c {
                    Command::Send {
                        message: Message::PromiseRequest { epoch, view },
                        ..
                    } => {
                        assert_eq!(*view, 1);
                        Some(epoch.number)
                    }
                    _ => None,
                })
                .collect()
        };
        let first = epochs(&p.on_view::<E>(members, log.range(), 0));
        assert_eq!(first, [1, 1], "n2 and n3 are asked (n1 answers itself)");
        let mut now = 0;
        let mut seen = Vec::new();
        for _ in 0..200 {
            now += 100;
            seen.extend(epochs(&p.tick::<E>(now)));
        }
        assert!(seen.len() > 10, "it keeps asking");
        assert!(
            seen.iter().all(|&n| n == 1),
            "never raises its epoch: {seen:?}"
        );
        assert_eq!(
            p.availability(),
            Availability::Waiting {
                blocked: vec![NodeId::from("n2"), NodeId::from("n3")]
            }
        );
    }

    #[test]
    fn settling_confirms_an_unchanged_placement_and_claims_again_for_a_changed_one() {
        let names = ["n1", "n2", "n3"];
        let mut c = Cluster::new(&names);
        let mut log = booted(&names);
        push_log(&mut c, &log, &[], 0);
        c.append(1);
        let w = c.writer().unwrap().to_owned();
        let epoch = c.nodes[&w].0.writer().unwrap().epoch().clone();
        assert_eq!(c.nodes[&w].0.settled_view(), Some(1));
        // A member that does not rank into ctx's set: its placement is unchanged.
        let outsider = (0..)
            .map(|i| format!("x{i}"))
            .find(|x| {
                let mut ms: Vec<Member> = names.iter().map(|n| member(n)).collect();
                ms.push(member(x));
                !placement::replica_set("ctx", &ms, 3).contains(&NodeId::from(x.as_str()))
            })
            .unwrap();
        log.apply(&ViewRecord::Change {
            version: 2,
            change: ViewChange::Join(member(&outsider)),
        })
        .unwrap();
        push_log(&mut c, &log, &[], 10);
        assert_eq!(c.nodes[&w].0.settled_view(), Some(1), "not yet settled");
        settle_all(&mut c, 10);
        assert_eq!(c.nodes[&w].0.settled_view(), Some(2));
        assert_eq!(c.nodes[&w].0.writer().unwrap().epoch(), &epoch);
        // A mirror of every context joins: the writer claims again under view 3.
        log.apply(&ViewRecord::Change {
            version: 3,
            change: ViewChange::Join(Member::new("m", 1, Role::Mirror, MemberState::Alive)),
        })
        .unwrap();
        push_log(&mut c, &log, &[], 20);
        settle_all(&mut c, 20);
        let again = c.nodes[&w].0.writer().unwrap().epoch().clone();
        assert!(again > epoch);
        assert_eq!(c.nodes[&w].0.settled_view(), Some(3));
        // The followers learn that the new record is committed with the next batch.
        c.append(1);
        assert!(c.nodes.values().all(|(p, _)| p.is_settled()));
    }

    #[test]
    fn a_node_the_view_names_in_another_incarnation_takes_no_part_as_a_member() {
        let mut p = Participant::new(
            "ctx",
            Voter::new("solo", 2),
            PersistentState::default(),
            0,
            Settings::default(),
        );
        let log = booted(&["solo"]); // names incarnation 1
        let cmds = p.on_view::<E>(log.current().members.clone(), log.range(), 0);
        assert!(cmds.is_empty(), "no claim: {cmds:?}");
        assert!(matches!(p.role(), RoleState::Follower));
        assert_eq!(
            p.accept_loss::<E>(0),
            Err(AcceptLossError::NotWriter {
                writer: Some(NodeId::from("solo"))
            })
        );
    }
}
