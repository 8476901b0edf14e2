//! Placement views: the agreed, versioned membership that replica sets are computed from.
//!
//! Gossip says who is *alive*; a [`PlacementView`] says who is a *member*: a numbered list of
//! members (id, incarnation, role, mirror prefixes) that every node learns in the same order.
//! The runtime replicates the [`ViewLog`] (its [`ViewRecord`]s) as a reserved context on every
//! node; this module is the pure part: applying records, the coordinator's next decision, and
//! what a claim must consult.
//!
//! # Records
//! - [`ViewRecord::Change`] makes version `v + 1` from version `v`: the first one is a
//!   [`ViewChange::Bootstrap`], then one [`ViewChange::Join`], [`ViewChange::Update`] (same id,
//!   new incarnation, role or prefixes) or [`ViewChange::Leave`] at a time.
//! - [`ViewRecord::Settled`] says that a member (in one incarnation) holds every context it
//!   holds on the replica sets of that version: each one's writer claimed (or confirmed) its
//!   epoch under a view with the same set, and that epoch's record is committed. A joining or
//!   updated member starts at `version - 1` (it holds nothing of the new view yet); marks only
//!   move forward and only count for the incarnation the current view names.
//!
//! # The floor
//! The **floor** is the lowest settled mark over the current members, dead ones included: a
//! dead member may hold the only copies that a majority of an older set had, so it holds the
//! floor down until it is removed ([`ViewChange::Leave`]). Views below the floor are pruned;
//! views from the floor up are the [`ViewRange`] a claim consults: a claim for a context needs
//! majorities of the context's replica set in every one of them (see [`crate::claim`]). Once
//! every member settled `v`, every context lives on a majority of its set in some view `≥ v`, so
//! the sets of older views are no longer needed.
//!
//! # The coordinator
//! [`ViewLog::next_change`] is the decision of whoever writes the views context: bootstrap,
//! then at most one change at a time, and only once every *live* member settled the current
//! version. Updates of live members first — a wiped node's new incarnation, then a mirror
//! becoming a member — then joins of desired live nodes, then the other updates (a member
//! becoming a mirror, new prefixes), then leaves of members no longer desired — a leave only
//! once that member is down. So sets grow before they shrink, and a change that takes a member
//! out waits while the view has no more members than desired (the replacement is not live).

use crate::identity::{Incarnation, NodeId, Voter};
use crate::placement::{self, Member, MemberState, Role};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// One version of the membership. Members are stored sorted by id with state
/// [`MemberState::Alive`]: liveness comes from gossip when a view is used.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PlacementView {
    pub version: u64,
    pub members: Vec<Member>,
}

impl PlacementView {
    /// The member with this id.
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members.iter().find(|m| &m.id == id)
    }

    /// `context`'s replica set in this view as voters, sorted.
    pub fn replica_voters(&self, context: &str, r: usize) -> Vec<Voter> {
        let mut v = placement::replica_voters(context, &self.members, r);
        v.sort();
        v
    }

    /// The mirrors holding `context` in this view as voters, sorted.
    pub fn mirror_voters(&self, context: &str) -> Vec<Voter> {
        let mut v: Vec<Voter> = placement::mirror_holders(context, &self.members)
            .into_iter()
            .map(Member::voter)
            .collect();
        v.sort();
        v
    }
}

/// Whether `context` is placed differently in `a` and `b`: its replica set (voters, so a new
/// incarnation counts as a change) or its mirrors differ.
pub fn set_changed(context: &str, a: &PlacementView, b: &PlacementView, r: usize) -> bool {
    a.replica_voters(context, r) != b.replica_voters(context, r)
        || a.mirror_voters(context) != b.mirror_voters(context)
}

/// What one view change does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewChange {
    /// The first view (version 1 only): these members, each settled at version 1.
    Bootstrap(Vec<Member>),
    /// A node that is not a member becomes one.
    Join(Member),
    /// A member changes incarnation (it lost its data), role or mirror prefixes.
    Update(Member),
    /// A member leaves (it is down and no longer desired).
    Leave(NodeId),
}

/// One record of the view log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewRecord {
    /// Makes version `version` (the current version plus one).
    Change { version: u64, change: ViewChange },
    /// `node` in `incarnation` holds everything it holds on the sets of `version`.
    Settled {
        node: NodeId,
        incarnation: u64,
        version: u64,
    },
}

/// The views a claim consults besides the current one.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ViewRange {
    /// The current version.
    pub version: u64,
    /// The views with versions in `[floor, version)`, oldest first.
    pub earlier: Vec<PlacementView>,
}

/// The coordinator's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextChange {
    /// Nothing to change.
    None,
    /// Append this record to the view log.
    Propose(ViewRecord),
    /// `change` is next, once these live members settled the current version.
    Waiting {
        change: ViewChange,
        for_nodes: Vec<NodeId>,
    },
}

/// Why a record does not apply (the log is left unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ViewError {
    #[error("view change {found} does not follow version {current}")]
    OutOfOrder { current: u64, found: u64 },
    #[error("a bootstrap is only the first view change (version 1), found as version {version}")]
    BootstrapNotFirst { version: u64 },
    #[error("the first view change must be a bootstrap")]
    NotBootstrapped,
    #[error("a bootstrap without members")]
    EmptyBootstrap,
    #[error("node {node} is listed twice")]
    DuplicateMember { node: NodeId },
    #[error("node {node} is already a member of view {version}")]
    AlreadyMember { node: NodeId, version: u64 },
    #[error("node {node} is not a member of view {version}")]
    UnknownMember { node: NodeId, version: u64 },
    #[error("node {node} settled version {settled}, beyond the current version {version}")]
    SettledAhead {
        node: NodeId,
        settled: u64,
        version: u64,
    },
}

/// The view log as applied so far: the current view, the views from the floor up, and every
/// member's settled mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewLog {
    /// Versions `floor..=version`.
    views: BTreeMap<u64, PlacementView>,
    version: u64,
    /// Settled mark per current member.
    settled: BTreeMap<NodeId, u64>,
}

impl Default for ViewLog {
    fn default() -> Self {
        ViewLog::new()
    }
}

/// A member as a view stores it: alive (liveness is gossip's), nothing else changed.
fn normalized(m: &Member) -> Member {
    Member {
        state: MemberState::Alive,
        ..m.clone()
    }
}

/// Same placement-relevant fields (liveness ignored).
fn same_member(a: &Member, b: &Member) -> bool {
    a.id == b.id
        && a.incarnation == b.incarnation
        && a.role == b.role
        && a.mirror_prefixes == b.mirror_prefixes
}

impl ViewLog {
    /// Version 0: no members.
    pub fn new() -> Self {
        let mut views = BTreeMap::new();
        views.insert(0, PlacementView::default());
        ViewLog {
            views,
            version: 0,
            settled: BTreeMap::new(),
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn current(&self) -> &PlacementView {
        &self.views[&self.version]
    }

    /// The lowest settled mark over the current members, dead ones included (the current
    /// version when there are none).
    pub fn floor(&self) -> u64 {
        self.settled.values().copied().min().unwrap_or(self.version)
    }

    /// `node`'s settled mark, if it is a current member.
    pub fn settled(&self, node: &NodeId) -> Option<u64> {
        self.settled.get(node).copied()
    }

    /// The current version and the views in `[floor, version)`.
    pub fn range(&self) -> ViewRange {
        ViewRange {
            version: self.version,
            earlier: self
                .views
                .range(self.floor()..self.version)
                .map(|(_, v)| v.clone())
                .collect(),
        }
    }

    /// The view of `version`, kept for versions from the floor up.
    pub fn view(&self, version: u64) -> Option<&PlacementView> {
        self.views.get(&version)
    }

    /// Applies one record. Returns whether anything changed (a settled mark that does not move
    /// forward, or names a departed member or another incarnation, changes nothing). On an
    /// error nothing changed.
    pub fn apply(&mut self, record: &ViewRecord) -> Result<bool, ViewError> {
        match record {
            ViewRecord::Change { version, change } => {
                self.apply_change(*version, change)?;
                self.prune();
                Ok(true)
            }
            ViewRecord::Settled {
                node,
                incarnation,
                version,
            } => {
                if *version > self.version {
                    return Err(ViewError::SettledAhead {
                        node: node.clone(),
                        settled: *version,
                        version: self.version,
                    });
                }
                let current = self.current().member(node).map(|m| m.incarnation);
                if current != Some(Incarnation(*incarnation)) {
                    return Ok(false);
                }
                let mark = self.settled.entry(node.clone()).or_insert(0);
                if *version <= *mark {
                    return Ok(false);
                }
                *mark = *version;
                self.prune();
                Ok(true)
            }
        }
    }

    fn apply_change(&mut self, version: u64, change: &ViewChange) -> Result<(), ViewError> {
        if version != self.version + 1 {
            return Err(ViewError::OutOfOrder {
                current: self.version,
                found: version,
            });
        }
        let mut members = self.current().members.clone();
        let mut settled = self.settled.clone();
        match change {
            ViewChange::Bootstrap(list) => {
                if version != 1 {
                    return Err(ViewError::BootstrapNotFirst { version });
                }
                if list.is_empty() {
                    return Err(ViewError::EmptyBootstrap);
                }
                for m in list {
                    if members.iter().any(|x| x.id == m.id) {
                        return Err(ViewError::DuplicateMember { node: m.id.clone() });
                    }
                    members.push(normalized(m));
                    // Nothing before the first view: every member holds all of it.
                    settled.insert(m.id.clone(), version);
                }
            }
            _ if version == 1 => return Err(ViewError::NotBootstrapped),
            ViewChange::Join(m) => {
                if members.iter().any(|x| x.id == m.id) {
                    return Err(ViewError::AlreadyMember {
                        node: m.id.clone(),
                        version: self.version,
                    });
                }
                members.push(normalized(m));
                settled.insert(m.id.clone(), version - 1);
            }
            ViewChange::Update(m) => {
                let Some(slot) = members.iter_mut().find(|x| x.id == m.id) else {
                    return Err(ViewError::UnknownMember {
                        node: m.id.clone(),
                        version: self.version,
                    });
                };
                *slot = normalized(m);
                settled.insert(m.id.clone(), version - 1);
            }
            ViewChange::Leave(id) => {
                let before = members.len();
                members.retain(|x| &x.id != id);
                if members.len() == before {
                    return Err(ViewError::UnknownMember {
                        node: id.clone(),
                        version: self.version,
                    });
                }
                settled.remove(id);
            }
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        self.views
            .insert(version, PlacementView { version, members });
        self.version = version;
        self.settled = settled;
        Ok(())
    }

    /// Drops the views below the floor.
    fn prune(&mut self) {
        let floor = self.floor();
        self.views = self.views.split_off(&floor);
    }

    /// The coordinator's next step towards `desired` (the members the operator and the
    /// failure policy want: `cluster remove` and `dead_member_timeout` take a node out of it).
    /// `is_live` is gossip's liveness (alive or suspect, in the incarnation `desired` names; a
    /// member the view names in another incarnation is not waited for).
    pub fn next_change(&self, desired: &[Member], is_live: impl Fn(&NodeId) -> bool) -> NextChange {
        let mut wanted: Vec<Member> = Vec::new();
        for m in desired {
            if !wanted.iter().any(|x| x.id == m.id) {
                wanted.push(normalized(m));
            }
        }
        wanted.sort_by(|a, b| a.id.cmp(&b.id));
        if self.version == 0 {
            if wanted.is_empty() {
                return NextChange::None;
            }
            return NextChange::Propose(ViewRecord::Change {
                version: 1,
                change: ViewChange::Bootstrap(wanted),
            });
        }
        let current = self.current();
        #[cfg(ledger_mutant = "floor_ignores_dead")]
        for m in &current.members {
            // Broken on purpose: a dead member is taken as settled, so it no longer holds the
            // floor (and the views its copies may be needed for are pruned).
            if !is_live(&m.id) && self.settled(&m.id).is_some_and(|s| s < self.version) {
                return NextChange::Propose(ViewRecord::Settled {
                    node: m.id.clone(),
                    incarnation: m.incarnation.0,
                    version: self.version,
                });
            }
        }
        // Updates of live members: a new incarnation first (it replaces a voter that is gone),
        // then promotions to member; then joins; then the other updates (a member becoming a
        // mirror, new mirror prefixes); then leaves. So replica sets grow before they shrink and
        // never drop below what `desired` asks for on the way.
        let class = |m: &Member, d: &Member| {
            if m.incarnation != d.incarnation {
                0
            } else if d.role == Role::Member && m.role != Role::Member {
                1
            } else {
                2
            }
        };
        let update = |k: u8| {
            wanted.iter().find(|d| {
                is_live(&d.id)
                    && current
                        .member(&d.id)
                        .is_some_and(|m| !same_member(m, d) && class(m, d) == k)
            })
        };
        let join = || {
            wanted
                .iter()
                .find(|d| is_live(&d.id) && current.member(&d.id).is_none())
        };
        let leave = || {
            current
                .members
                .iter()
                .find(|m| !is_live(&m.id) && !wanted.iter().any(|d| d.id == m.id))
        };
        let change = if let Some(m) = update(0).or_else(|| update(1)) {
            ViewChange::Update(m.clone())
        } else if let Some(m) = join() {
            ViewChange::Join(m.clone())
        } else if let Some(m) = update(2) {
            ViewChange::Update(m.clone())
        } else if let Some(m) = leave() {
            ViewChange::Leave(m.id.clone())
        } else {
            return NextChange::None;
        };
        // A change that takes a member out of the replica sets waits while the view has no
        // more members than `desired` asks for (its replacement is not live yet).
        let members =
            |ms: &mut dyn Iterator<Item = &Member>| ms.filter(|m| m.role == Role::Member).count();
        let shrinks = match &change {
            ViewChange::Update(d) => {
                d.role != Role::Member
                    && current
                        .member(&d.id)
                        .is_some_and(|m| m.role == Role::Member)
            }
            ViewChange::Leave(id) => current.member(id).is_some_and(|m| m.role == Role::Member),
            _ => false,
        };
        if shrinks && members(&mut current.members.iter()) <= members(&mut wanted.iter()) {
            return NextChange::None;
        }
        // A member that `desired` names in another incarnation lost its data: the voter the
        // view names is gone and never settles (the update replaces it).
        let live_voter = |m: &Member| {
            is_live(&m.id)
                && wanted
                    .iter()
                    .find(|d| d.id == m.id)
                    .is_none_or(|d| d.incarnation == m.incarnation)
        };
        let for_nodes: Vec<NodeId> = current
            .members
            .iter()
            .filter(|m| live_voter(m) && self.settled(&m.id).is_none_or(|s| s < self.version))
            .map(|m| m.id.clone())
            .collect();
        if for_nodes.is_empty() {
            NextChange::Propose(ViewRecord::Change {
                version: self.version + 1,
                change,
            })
        } else {
            NextChange::Waiting { change, for_nodes }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, inc: u64) -> Member {
        Member::new(id, inc, Role::Member, MemberState::Alive)
    }

    fn settled(node: &str, inc: u64, version: u64) -> ViewRecord {
        ViewRecord::Settled {
            node: NodeId::from(node),
            incarnation: inc,
            version,
        }
    }

    fn change(version: u64, change: ViewChange) -> ViewRecord {
        ViewRecord::Change { version, change }
    }

    fn abc() -> ViewLog {
        let mut log = ViewLog::new();
        let boot = change(
            1,
            ViewChange::Bootstrap(vec![m("c", 1), m("a", 1), m("b", 1)]),
        );
        assert_eq!(log.apply(&boot), Ok(true));
        log
    }

    fn ids(v: &PlacementView) -> Vec<&str> {
        v.members.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn an_empty_log_is_version_zero_without_members() {
        let log = ViewLog::new();
        assert_eq!(log.version(), 0);
        assert!(log.current().members.is_empty());
        assert_eq!(log.floor(), 0);
        assert_eq!(log.range(), ViewRange::default());
    }

    #[test]
    fn bootstrap_comes_first_and_only_first() {
        let mut log = ViewLog::new();
        assert_eq!(
            log.apply(&change(1, ViewChange::Join(m("a", 1)))),
            Err(ViewError::NotBootstrapped)
        );
        assert_eq!(
            log.apply(&change(1, ViewChange::Bootstrap(vec![]))),
            Err(ViewError::EmptyBootstrap)
        );
        assert_eq!(
            log.apply(&change(
                1,
                ViewChange::Bootstrap(vec![m("a", 1), m("a", 2)])
            )),
            Err(ViewError::DuplicateMember {
                node: NodeId::from("a")
            })
        );
        assert_eq!(log, ViewLog::new(), "errors leave the log unchanged");
        let mut log = abc();
        assert_eq!(ids(log.current()), ["a", "b", "c"]);
        assert_eq!(log.floor(), 1, "bootstrap members hold all of version 1");
        assert_eq!(
            log.apply(&change(2, ViewChange::Bootstrap(vec![m("d", 1)]))),
            Err(ViewError::BootstrapNotFirst { version: 2 })
        );
    }

    #[test]
    fn changes_apply_in_order_only() {
        let mut log = abc();
        let before = log.clone();
        assert_eq!(
            log.apply(&change(3, ViewChange::Join(m("d", 1)))),
            Err(ViewError::OutOfOrder {
                current: 1,
                found: 3
            })
        );
        assert_eq!(
            log.apply(&change(1, ViewChange::Join(m("d", 1)))),
            Err(ViewError::OutOfOrder {
                current: 1,
                found: 1
            })
        );
        assert_eq!(
            log.apply(&change(2, ViewChange::Join(m("a", 5)))),
            Err(ViewError::AlreadyMember {
                node: NodeId::from("a"),
                version: 1
            })
        );
        assert_eq!(
            log.apply(&change(2, ViewChange::Update(m("z", 1)))),
            Err(ViewError::UnknownMember {
                node: NodeId::from("z"),
                version: 1
            })
        );
        assert_eq!(
            log.apply(&change(2, ViewChange::Leave(NodeId::from("z")))),
            Err(ViewError::UnknownMember {
                node: NodeId::from("z"),
                version: 1
            })
        );
        assert_eq!(log, before);
    }

    #[test]
    fn a_joiner_holds_the_floor_until_it_settles_the_new_version() {
        let mut log = abc();
        assert_eq!(log.apply(&change(2, ViewChange::Join(m("d", 1)))), Ok(true));
        assert_eq!(log.version(), 2);
        assert_eq!(log.settled(&NodeId::from("d")), Some(1));
        assert_eq!(log.floor(), 1);
        let range = log.range();
        assert_eq!(range.version, 2);
        assert_eq!(range.earlier.len(), 1);
        assert_eq!(ids(&range.earlier[0]), ["a", "b", "c"]);
        for n in ["a", "b", "c"] {
            assert_eq!(log.apply(&settled(n, 1, 2)), Ok(true));
        }
        assert_eq!(log.floor(), 1, "d has not settled yet");
        assert_eq!(log.apply(&settled("d", 1, 2)), Ok(true));
        assert_eq!(log.floor(), 2);
        assert!(log.range().earlier.is_empty());
        assert!(log.view(1).is_none(), "pruned below the floor");
        assert_eq!(ids(log.view(2).unwrap()), ["a", "b", "c", "d"]);
    }

    #[test]
    fn settled_marks_move_forward_only_and_only_for_the_current_incarnation() {
        let mut log = abc();
        log.apply(&change(2, ViewChange::Update(m("b", 2))))
            .unwrap();
        assert_eq!(log.settled(&NodeId::from("b")), Some(1));
        assert_eq!(
            log.apply(&settled("b", 1, 2)),
            Ok(false),
            "the old incarnation"
        );
        assert_eq!(log.apply(&settled("z", 1, 2)), Ok(false), "not a member");
        assert_eq!(log.apply(&settled("a", 1, 1)), Ok(false), "not forward");
        assert_eq!(
            log.apply(&settled("a", 1, 3)),
            Err(ViewError::SettledAhead {
                node: NodeId::from("a"),
                settled: 3,
                version: 2
            })
        );
        assert_eq!(log.apply(&settled("b", 2, 2)), Ok(true));
        assert_eq!(log.settled(&NodeId::from("b")), Some(2));
        assert_eq!(
            log.current()
                .member(&NodeId::from("b"))
                .unwrap()
                .incarnation,
            Incarnation(2)
        );
    }

    #[test]
    fn a_dead_member_holds_the_floor_until_it_leaves() {
        let mut log = abc();
        log.apply(&change(2, ViewChange::Join(m("d", 1)))).unwrap();
        // c is dead: it never settles version 2.
        for n in ["a", "b", "d"] {
            log.apply(&settled(n, 1, 2)).unwrap();
        }
        assert_eq!(log.floor(), 1);
        log.apply(&change(3, ViewChange::Leave(NodeId::from("c"))))
            .unwrap();
        assert_eq!(log.settled(&NodeId::from("c")), None);
        assert_eq!(log.floor(), 2, "with c gone the floor is the others' marks");
        let range = log.range();
        assert_eq!(range.version, 3);
        assert_eq!(
            range.earlier.iter().map(|v| v.version).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(ids(log.current()), ["a", "b", "d"]);
    }

    #[test]
    fn views_store_members_alive_and_sorted() {
        let mut log = ViewLog::new();
        let dead = Member::new("b", 1, Role::Member, MemberState::Dead);
        log.apply(&change(1, ViewChange::Bootstrap(vec![dead, m("a", 1)])))
            .unwrap();
        assert_eq!(ids(log.current()), ["a", "b"]);
        assert!(
            log.current()
                .members
                .iter()
                .all(|m| m.state == MemberState::Alive)
        );
    }

    #[test]
    fn set_changed_sees_voters_incarnations_and_mirrors() {
        let view = |version: u64, members: Vec<Member>| PlacementView { version, members };
        let a = view(1, vec![m("a", 1), m("b", 1), m("c", 1)]);
        assert!(!set_changed("x", &a, &a.clone(), 3));
        let wiped = view(2, vec![m("a", 1), m("b", 2), m("c", 1)]);
        assert!(set_changed("x", &a, &wiped, 3));
        let mirror = Member::new("m", 1, Role::Mirror, MemberState::Alive);
        let mut with_mirror = a.clone();
        with_mirror.members.push(mirror.clone());
        assert!(set_changed("x", &a, &with_mirror, 3));
        // A mirror of other prefixes does not hold the context.
        let mut other = a.clone();
        other
            .members
            .push(mirror.with_mirror_prefixes(vec!["y".into()]));
        assert!(!set_changed("x", &a, &other, 3));
        assert!(set_changed("y", &a, &other, 3));
        // A fourth member changes only the contexts it ranks into.
        let mut four = a.clone();
        four.members.push(m("d", 1));
        let moved = (0..100)
            .filter(|i| set_changed(&format!("c{i}"), &a, &four, 3))
            .count();
        assert!(moved > 40 && moved < 100, "moved {moved}");
    }

    fn live(dead: &'static [&'static str]) -> impl Fn(&NodeId) -> bool {
        move |n: &NodeId| !dead.contains(&n.as_str())
    }

    #[test]
    fn the_coordinator_bootstraps_then_makes_one_change_at_a_time() {
        let log = ViewLog::new();
        assert_eq!(log.next_change(&[], live(&[])), NextChange::None);
        let boot = log.next_change(&[m("b", 1), m("a", 1)], live(&[]));
        let NextChange::Propose(ViewRecord::Change {
            version: 1,
            change: ViewChange::Bootstrap(list),
        }) = boot
        else {
            panic!("expected a bootstrap, got {boot:?}");
        };
        assert_eq!(
            list.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let mut log = abc();
        let desired = [m("a", 1), m("b", 1), m("c", 1), m("d", 1), m("e", 1)];
        assert_eq!(
            log.next_change(&desired, live(&[])),
            NextChange::Propose(change(2, ViewChange::Join(m("d", 1))))
        );
        log.apply(&change(2, ViewChange::Join(m("d", 1)))).unwrap();
        // Nobody settled version 2 yet: the next join waits.
        assert_eq!(
            log.next_change(&desired, live(&[])),
            NextChange::Waiting {
                change: ViewChange::Join(m("e", 1)),
                for_nodes: ["a", "b", "c", "d"].map(NodeId::from).to_vec()
            }
        );
        for n in ["a", "b", "d"] {
            log.apply(&settled(n, 1, 2)).unwrap();
        }
        // c is dead: only live members are waited for (c holds the floor instead).
        assert_eq!(
            log.next_change(&desired, live(&["c"])),
            NextChange::Propose(change(3, ViewChange::Join(m("e", 1))))
        );
        assert_eq!(log.floor(), 1);
    }

    #[test]
    fn updates_go_first_then_joins_then_leaves_of_dead_members_only() {
        let mut log = abc();
        let desired = [m("a", 1), m("b", 2), m("d", 1)];
        // b came back with a new incarnation, d wants to join, c is no longer desired.
        assert_eq!(
            log.next_change(&desired, live(&["c"])),
            NextChange::Propose(change(2, ViewChange::Update(m("b", 2))))
        );
        log.apply(&change(2, ViewChange::Update(m("b", 2))))
            .unwrap();
        for (n, i) in [("a", 1), ("b", 2)] {
            log.apply(&settled(n, i, 2)).unwrap();
        }
        assert_eq!(
            log.next_change(&desired, live(&["c"])),
            NextChange::Propose(change(3, ViewChange::Join(m("d", 1))))
        );
        log.apply(&change(3, ViewChange::Join(m("d", 1)))).unwrap();
        for (n, i) in [("a", 1), ("b", 2), ("d", 1)] {
            log.apply(&settled(n, i, 3)).unwrap();
        }
        // c is undesired but alive: never removed while it is live.
        assert_eq!(log.next_change(&desired, live(&[])), NextChange::None);
        assert_eq!(
            log.next_change(&desired, live(&["c"])),
            NextChange::Propose(change(4, ViewChange::Leave(NodeId::from("c"))))
        );
        // An update of a member that is down waits until it is live again.
        let role = [
            m("a", 1),
            Member::new("b", 2, Role::Mirror, MemberState::Alive),
            m("c", 1),
            m("d", 1),
        ];
        assert_eq!(log.next_change(&role, live(&["b"])), NextChange::None);
        assert_eq!(
            log.next_change(&role, live(&["c"])),
            NextChange::Propose(change(4, ViewChange::Update(role[1].clone())))
        );
    }

    #[test]
    fn a_member_back_under_a_new_incarnation_is_updated_without_waiting_for_its_old_one() {
        let mut log = abc();
        log.apply(&change(2, ViewChange::Join(m("d", 1)))).unwrap();
        for n in ["a", "c", "d"] {
            log.apply(&settled(n, 1, 2)).unwrap();
        }
        // b lost its data before it settled version 2: b#1 never will.
        let desired = [m("a", 1), m("b", 2), m("c", 1), m("d", 1)];
        assert_eq!(
            log.next_change(&desired, live(&[])),
            NextChange::Propose(change(3, ViewChange::Update(m("b", 2))))
        );
        assert_eq!(log.floor(), 1, "b#1 still holds the floor");
    }

    #[test]
    fn sets_grow_before_they_shrink() {
        let mut log = abc();
        let mirror = |id: &str| Member::new(id, 1, Role::Mirror, MemberState::Alive);
        // a becomes a mirror, the mirror m a member, d joins.
        log.apply(&change(2, ViewChange::Join(mirror("m"))))
            .unwrap();
        for n in ["a", "b", "c", "m"] {
            log.apply(&settled(n, 1, 2)).unwrap();
        }
        let desired = [mirror("a"), m("b", 1), m("c", 1), m("d", 1), m("m", 1)];
        assert_eq!(
            log.next_change(&desired, live(&[])),
            NextChange::Propose(change(3, ViewChange::Update(m("m", 1))))
        );
        log.apply(&change(3, ViewChange::Update(m("m", 1))))
            .unwrap();
        for n in ["a", "b", "c", "m"] {
            log.apply(&settled(n, 1, 3)).unwrap();
        }
        assert_eq!(
            log.next_change(&desired, live(&[])),
            NextChange::Propose(change(4, ViewChange::Join(m("d", 1))))
        );
        log.apply(&change(4, ViewChange::Join(m("d", 1)))).unwrap();
        for n in ["a", "b", "c", "d", "m"] {
            log.apply(&settled(n, 1, 4)).unwrap();
        }
        assert_eq!(
            log.next_change(&desired, live(&[])),
            NextChange::Propose(change(5, ViewChange::Update(mirror("a"))))
        );
    }

    #[test]
    fn a_member_is_not_taken_out_before_its_replacement_is_in() {
        let log = abc();
        let mirror = |id: &str| Member::new(id, 1, Role::Mirror, MemberState::Alive);
        // a should become a mirror and d join in its place; d is down.
        let desired = [mirror("a"), m("b", 1), m("c", 1), m("d", 1)];
        assert_eq!(log.next_change(&desired, live(&["d"])), NextChange::None);
        assert_eq!(
            log.next_change(&desired, live(&[])),
            NextChange::Propose(change(2, ViewChange::Join(m("d", 1))))
        );
        // Removing a dead member without a replacement shrinks the sets as asked.
        assert_eq!(
            log.next_change(&[m("b", 1), m("c", 1)], live(&["a"])),
            NextChange::Propose(change(2, ViewChange::Leave(NodeId::from("a"))))
        );
    }

    #[test]
    fn liveness_in_desired_members_is_ignored() {
        let log = abc();
        let desired = [
            Member::new("a", 1, Role::Member, MemberState::Dead),
            m("b", 1),
            m("c", 1),
        ];
        assert_eq!(log.next_change(&desired, live(&[])), NextChange::None);
    }
}
