//! Placement: which members hold a context and which one writes it.
//!
//! The replica set of context `C` is the first `R` members in rendezvous (highest random weight)
//! order of `score(C, node)`, where the score is the first 8 bytes, big-endian, of
//! `SHA-256(C ‖ 0x00 ‖ node id)`. Candidates are members with role [`Role::Member`] that joined and
//! were not removed: [`MemberState::Alive`], [`MemberState::Suspect`] **and**
//! [`MemberState::Dead`]. A dead member keeps its place, so a crash never reshuffles who holds a
//! context; only a join or a removal ([`MemberState::Left`], or absence from the list) changes a
//! replica set, and then only for the contexts whose top `R` the member enters or leaves (about
//! `R/N` of them). The writer is the first member of the replica set that is alive or suspect.
//!
//! The same pure functions run in the node and in the Rust client, so both compute the same
//! writer from the same membership view.

use crate::identity::{Incarnation, NodeId, Voter};
use ledger_core::hash::sha256;
use serde::{Deserialize, Serialize};

/// What a node does in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Role {
    /// Holds replicas and can be a writer (the default).
    #[default]
    Member,
    /// A read-only mirror: replicates contexts, never writes, never counts for acknowledgements.
    Mirror,
}

/// A member's state in the membership view (the gossip layer's failure detector, plus removal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberState {
    Alive,
    Suspect,
    /// Stays in every replica set it was part of until an operator removes it or it has been
    /// dead for longer than `dead_member_timeout`.
    Dead,
    /// Left or was removed: no longer a candidate for any replica set.
    Left,
}

impl MemberState {
    /// Alive or suspect: can be reached, can be a writer.
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }

    /// Still a member (holds its replicas, dead or alive).
    pub fn is_member(self) -> bool {
        !matches!(self, MemberState::Left)
    }
}

/// One node of the membership view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    /// The incarnation the member announced (changes when it lost its data).
    pub incarnation: Incarnation,
    pub role: Role,
    pub state: MemberState,
    /// A mirror holds only the contexts whose id starts with one of these; empty: every
    /// context. Members ignore it.
    pub mirror_prefixes: Vec<String>,
}

impl Member {
    pub fn new(id: impl Into<NodeId>, incarnation: u64, role: Role, state: MemberState) -> Self {
        Member {
            id: id.into(),
            incarnation: Incarnation(incarnation),
            role,
            state,
            mirror_prefixes: Vec::new(),
        }
    }

    /// The same member mirroring only contexts whose id starts with one of `prefixes`.
    pub fn with_mirror_prefixes(mut self, prefixes: Vec<String>) -> Self {
        self.mirror_prefixes = prefixes;
        self
    }

    /// A mirror whose prefixes (if any) match `context`.
    pub fn mirrors(&self, context: &str) -> bool {
        self.role == Role::Mirror && mirror_matches(&self.mirror_prefixes, context)
    }

    /// The member as a voter (its id in its announced incarnation).
    pub fn voter(&self) -> Voter {
        Voter {
            node: self.id.clone(),
            incarnation: self.incarnation,
        }
    }
}

/// Rendezvous score of `node` for `context`: the first 8 bytes, big-endian, of
/// `SHA-256(context ‖ 0x00 ‖ node)`. The `0x00` keeps `("ab", "c")` and `("a", "bc")` apart
/// (context ids never contain NUL).
pub fn score(context: &str, node: &NodeId) -> u64 {
    let mut input = Vec::with_capacity(context.len() + 1 + node.0.len());
    input.extend_from_slice(context.as_bytes());
    input.push(0);
    input.extend_from_slice(node.0.as_bytes());
    let digest = sha256(&input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.0[..8]);
    u64::from_be_bytes(first)
}

/// The members that hold `context`, in rendezvous order (highest score first, ties by id), at
/// most `r`. Members listed twice count once (the first entry wins).
pub fn replica_members<'a>(context: &str, members: &'a [Member], r: usize) -> Vec<&'a Member> {
    let mut candidates: Vec<(u64, &Member)> = Vec::with_capacity(members.len());
    for m in members {
        if m.role != Role::Member || !m.state.is_member() {
            continue;
        }
        if candidates.iter().any(|(_, c)| c.id == m.id) {
            continue;
        }
        candidates.push((score(context, &m.id), m));
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    candidates.truncate(r);
    candidates.into_iter().map(|(_, m)| m).collect()
}

/// The node ids of `context`'s replica set: the first `min(r, members)` members in rendezvous
/// order, dead or alive.
pub fn replica_set(context: &str, members: &[Member], r: usize) -> Vec<NodeId> {
    replica_members(context, members, r)
        .into_iter()
        .map(|m| m.id.clone())
        .collect()
}

/// The replica set as voters (node ids with the incarnations the membership view announces).
pub fn replica_voters(context: &str, members: &[Member], r: usize) -> Vec<Voter> {
    replica_members(context, members, r)
        .into_iter()
        .map(Member::voter)
        .collect()
}

/// The writer of `context`: the first live (alive or suspect) member of its replica set, or
/// `None` when every member of the set is dead (then nobody may write the context).
pub fn writer(context: &str, members: &[Member], r: usize) -> Option<NodeId> {
    replica_members(context, members, r)
        .into_iter()
        .find(|m| m.state.is_live())
        .map(|m| m.id.clone())
}

/// Whether a mirror with these prefixes holds `context` (no prefixes: every context).
pub fn mirror_matches(prefixes: &[String], context: &str) -> bool {
    prefixes.is_empty() || prefixes.iter().any(|p| context.starts_with(p.as_str()))
}

/// The live mirrors of `context` (every mirror without prefixes, and those with a prefix of
/// the context's id); they never count for acknowledgements.
pub fn mirrors(context: &str, members: &[Member]) -> Vec<NodeId> {
    mirror_holders(context, members)
        .into_iter()
        .filter(|m| m.state.is_live())
        .map(|m| m.id.clone())
        .collect()
}

/// Every mirror that holds `context`, dead or alive (as with replica sets; a removed one
/// holds nothing).
pub fn mirror_holders<'a>(context: &str, members: &'a [Member]) -> Vec<&'a Member> {
    members
        .iter()
        .filter(|m| m.mirrors(context) && m.state.is_member())
        .collect()
}

/// Whether `node` should hold `context`: a member of its replica set, or a mirror of it (dead
/// or alive, as with replica sets). Anti-entropy compares the contexts two nodes both hold.
pub fn holds(context: &str, node: &NodeId, members: &[Member], r: usize) -> bool {
    mirror_holders(context, members)
        .iter()
        .any(|m| &m.id == node)
        || replica_members(context, members, r)
            .iter()
            .any(|m| &m.id == node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| {
                Member::new(
                    format!("node-{i}"),
                    i as u64,
                    Role::Member,
                    MemberState::Alive,
                )
            })
            .collect()
    }

    fn set_state(ms: &mut [Member], id: &NodeId, state: MemberState) {
        ms.iter_mut().find(|m| &m.id == id).unwrap().state = state;
    }

    #[test]
    fn score_is_sha256_prefix_of_context_nul_node() {
        // SHA-256("ctx\0n1") computed independently of this module.
        let digest = sha256(b"ctx\0n1");
        let expected = u64::from_be_bytes(digest.0[..8].try_into().unwrap());
        assert_eq!(score("ctx", &NodeId::from("n1")), expected);
        assert_ne!(
            score("ab", &NodeId::from("c")),
            score("a", &NodeId::from("bc"))
        );
    }

    #[test]
    fn replica_set_is_deterministic_and_independent_of_member_order() {
        let ms = members(7);
        let mut reversed = ms.clone();
        reversed.reverse();
        for c in 0..50 {
            let ctx = format!("ctx-{c}");
            let a = replica_set(&ctx, &ms, 3);
            assert_eq!(a.len(), 3);
            assert_eq!(a, replica_set(&ctx, &reversed, 3));
            assert_eq!(a, replica_set(&ctx, &ms, 3));
            // Highest score first.
            let scores: Vec<u64> = a.iter().map(|n| score(&ctx, n)).collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]));
        }
    }

    #[test]
    fn replica_set_is_capped_at_the_member_count() {
        let ms = members(2);
        assert_eq!(replica_set("c", &ms, 3).len(), 2);
        assert!(replica_set("c", &[], 3).is_empty());
        assert_eq!(writer("c", &[], 3), None);
    }

    #[test]
    fn a_dead_member_keeps_its_place_and_only_the_writer_moves() {
        let mut ms = members(5);
        for c in 0..100 {
            let ctx = format!("ctx-{c}");
            let before = replica_set(&ctx, &ms, 3);
            let first = before[0].clone();
            assert_eq!(writer(&ctx, &ms, 3), Some(first.clone()));
            set_state(&mut ms, &first, MemberState::Dead);
            assert_eq!(
                replica_set(&ctx, &ms, 3),
                before,
                "a crash must not reshuffle"
            );
            assert_eq!(writer(&ctx, &ms, 3), Some(before[1].clone()));
            set_state(&mut ms, &first, MemberState::Suspect);
            assert_eq!(
                writer(&ctx, &ms, 3),
                Some(first.clone()),
                "suspect still writes"
            );
            set_state(&mut ms, &first, MemberState::Alive);
        }
    }

    #[test]
    fn nobody_writes_when_the_whole_set_is_dead() {
        let mut ms = members(3);
        for m in &mut ms {
            m.state = MemberState::Dead;
        }
        assert_eq!(replica_set("c", &ms, 3).len(), 3);
        assert_eq!(writer("c", &ms, 3), None);
    }

    #[test]
    fn removed_members_and_mirrors_are_not_candidates() {
        let mut ms = members(4);
        ms.push(Member::new("mirror", 9, Role::Mirror, MemberState::Alive));
        for c in 0..50 {
            let ctx = format!("ctx-{c}");
            assert!(!replica_set(&ctx, &ms, 5).contains(&NodeId::from("mirror")));
        }
        let left = ms[0].id.clone();
        set_state(&mut ms, &left, MemberState::Left);
        for c in 0..50 {
            assert!(!replica_set(&format!("ctx-{c}"), &ms, 4).contains(&left));
        }
        assert_eq!(mirrors("ctx-1", &ms), vec![NodeId::from("mirror")]);
    }

    #[test]
    fn a_mirror_with_prefixes_holds_only_the_contexts_they_start() {
        let mut ms = members(3);
        ms.push(Member::new("all", 7, Role::Mirror, MemberState::Alive));
        ms.push(
            Member::new("obs", 8, Role::Mirror, MemberState::Alive)
                .with_mirror_prefixes(vec!["obs-".into(), "tenant-7/".into()]),
        );
        let (all, obs) = (NodeId::from("all"), NodeId::from("obs"));
        assert_eq!(mirrors("obs-1", &ms), vec![all.clone(), obs.clone()]);
        assert_eq!(mirrors("tenant-7/run", &ms), vec![all.clone(), obs.clone()]);
        assert_eq!(mirrors("other", &ms), vec![all.clone()]);
        assert_eq!(mirrors("ob", &ms), vec![all.clone()]);
        assert!(holds("obs-1", &obs, &ms, 3));
        assert!(!holds("other", &obs, &ms, 3));
        assert!(holds("other", &all, &ms, 3));
        // Every member holds every context when R = N; a member's prefixes mean nothing.
        ms[0].mirror_prefixes = vec!["obs-".into()];
        for m in &ms[..3] {
            assert!(holds("other", &m.id, &ms, 3));
        }
        // A dead mirror still holds what it held (it catches up when it returns) but is not
        // shipped to; a removed one holds nothing.
        ms[4].state = MemberState::Dead;
        assert!(holds("obs-1", &obs, &ms, 3));
        assert_eq!(mirrors("obs-1", &ms), vec![all.clone()]);
        ms[4].state = MemberState::Left;
        assert!(!holds("obs-1", &obs, &ms, 3));
    }

    #[test]
    fn duplicates_count_once() {
        let mut ms = members(3);
        ms.push(ms[0].clone());
        assert_eq!(replica_set("c", &ms, 4).len(), 3);
    }

    #[test]
    fn voters_carry_the_announced_incarnation() {
        let ms = members(3);
        for v in replica_voters("c", &ms, 3) {
            let m = ms.iter().find(|m| m.id == v.node).unwrap();
            assert_eq!(v.incarnation, m.incarnation);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Adding an (N+1)-th member changes about R/(N+1) of the replica sets, and only by
        /// letting the new member in: no other member moves.
        #[test]
        fn a_join_moves_about_one_nth_of_contexts(n in 3usize..12, salt in 0u64..1_000_000) {
            let r = 3usize;
            let ms = members(n);
            let mut grown = ms.clone();
            let newcomer = NodeId::new(format!("joiner-{salt}"));
            grown.push(Member {
                id: newcomer.clone(),
                incarnation: Incarnation(1),
                role: Role::Member,
                state: MemberState::Alive,
                mirror_prefixes: Vec::new(),
            });
            let contexts = 3000;
            let mut changed = 0usize;
            let mut writer_moved = 0usize;
            for c in 0..contexts {
                let ctx = format!("ctx-{salt}-{c}");
                let before = replica_set(&ctx, &ms, r);
                let after = replica_set(&ctx, &grown, r);
                if before != after {
                    changed += 1;
                    prop_assert!(after.contains(&newcomer));
                    // Everyone else keeps their relative order; exactly one old member drops out.
                    let kept: Vec<_> = after.iter().filter(|n| **n != newcomer).cloned().collect();
                    prop_assert_eq!(&kept[..], &before[..r - 1]);
                }
                if writer(&ctx, &ms, r) != writer(&ctx, &grown, r) {
                    writer_moved += 1;
                    prop_assert_eq!(writer(&ctx, &grown, r), Some(newcomer.clone()));
                }
            }
            let expected = contexts as f64 * r as f64 / (n + 1) as f64;
            prop_assert!((changed as f64 - expected).abs() < expected * 0.25 + 30.0,
                "changed {} expected ~{}", changed, expected);
            let expected_writer = contexts as f64 / (n + 1) as f64;
            let off = (writer_moved as f64 - expected_writer).abs();
            prop_assert!(off < expected_writer * 0.3 + 30.0,
                "writer moved {} expected ~{}", writer_moved, expected_writer);
        }

        /// Removing a member only affects the contexts it held.
        #[test]
        fn a_removal_moves_only_the_removed_members_contexts(n in 4usize..10, pick in 0usize..100) {
            let ms = members(n);
            let removed = ms[pick % n].id.clone();
            let mut shrunk = ms.clone();
            set_state(&mut shrunk, &removed, MemberState::Left);
            for c in 0..500 {
                let ctx = format!("ctx-{c}");
                let before = replica_set(&ctx, &ms, 3);
                let after = replica_set(&ctx, &shrunk, 3);
                if before.contains(&removed) {
                    prop_assert!(!after.contains(&removed));
                    let kept: Vec<_> = before.iter().filter(|x| **x != removed).cloned().collect();
                    prop_assert_eq!(&after[..2], &kept[..]);
                } else {
                    prop_assert_eq!(before, after);
                }
            }
        }
    }
}
