//! Turning what the membership layer reports right now into the [`Membership`] snapshot this
//! crate publishes. Pure (no I/O, the clock is a parameter) and shared by the gossip
//! implementation and the fake, so both retain and forget members the same way.
//!
//! Rules:
//! - A member keeps its `since` while its state and incarnation stay the same.
//! - Dead and left members are retained after the membership layer stops reporting them
//!   (memberlist drops them after `gossip_to_the_dead_time`): placement keeps a dead member in
//!   replica sets until an operator removes it, so the view must not silently lose it.
//! - [`ViewBuilder::forget`] removes a dead or left member; it stays hidden while the layer
//!   still reports it dead or left, and reappears when it is reported alive or suspect again.
//! - The local node is never forgotten.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::model::{GossipMember, GossipState, Membership, NodeMeta};

/// One member as the membership layer reports it at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Observed {
    pub id: String,
    pub gossip_addr: SocketAddr,
    pub meta: NodeMeta,
    pub state: GossipState,
}

/// Builds successive snapshots for one node.
#[derive(Debug)]
pub(crate) struct ViewBuilder {
    local_id: String,
    forgotten: HashSet<String>,
}

impl ViewBuilder {
    pub fn new(local_id: impl Into<String>) -> Self {
        Self {
            local_id: local_id.into(),
            forgotten: HashSet::new(),
        }
    }

    /// The snapshot that follows `previous` given what is observed now.
    pub fn next(
        &mut self,
        previous: &Membership,
        observed: impl IntoIterator<Item = Observed>,
        now: SystemTime,
    ) -> Membership {
        let mut members: BTreeMap<String, GossipMember> = BTreeMap::new();
        for o in observed {
            if self.forgotten.contains(&o.id) {
                if o.state.is_live() {
                    self.forgotten.remove(&o.id);
                } else {
                    continue;
                }
            }
            let since = match previous.get(&o.id) {
                Some(p) if p.state == o.state && p.meta.incarnation == o.meta.incarnation => {
                    p.since
                }
                _ => now,
            };
            members.insert(
                o.id.clone(),
                GossipMember {
                    id: o.id,
                    gossip_addr: o.gossip_addr,
                    meta: o.meta,
                    state: o.state,
                    since,
                },
            );
        }
        for p in previous.members() {
            if members.contains_key(&p.id) || self.forgotten.contains(&p.id) {
                continue;
            }
            let mut kept = p.clone();
            if kept.state.is_live() {
                // The layer forgot a member it had not declared failed: only a failed member
                // may be reaped, so record it as dead.
                kept.state = GossipState::Dead;
                kept.since = now;
            }
            members.insert(kept.id.clone(), kept);
        }
        Membership::new(self.local_id.as_str(), members.into_values())
    }

    /// Removes a dead or left member from `current`. `None` if `id` is the local node, unknown,
    /// or still live (alive or suspect): those cannot be forgotten.
    pub fn forget(&mut self, current: &Membership, id: &str) -> Option<Membership> {
        if id == self.local_id {
            return None;
        }
        let member = current.get(id)?;
        if member.state.is_live() {
            return None;
        }
        self.forgotten.insert(id.to_owned());
        Some(Membership::new(
            self.local_id.as_str(),
            current.members().iter().filter(|m| m.id != id).cloned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::GossipRole;

    fn obs(id: &str, state: GossipState, incarnation: &str) -> Observed {
        Observed {
            id: id.to_owned(),
            gossip_addr: "127.0.0.1:7946".parse().unwrap(),
            meta: NodeMeta {
                grpc_addr: format!("{id}:50051"),
                public_key: vec![1; 32],
                version: "0.1.0".to_owned(),
                role: GossipRole::Member,
                incarnation: incarnation.to_owned(),
                mirror_prefixes: Vec::new(),
                views_settled: 0,
            },
            state,
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn since_is_kept_until_state_or_incarnation_changes() {
        let mut b = ViewBuilder::new("a");
        let v0 = Membership::new("a", []);
        let v1 = b.next(
            &v0,
            [
                obs("a", GossipState::Alive, "1"),
                obs("b", GossipState::Alive, "1"),
            ],
            t(1),
        );
        let v2 = b.next(
            &v1,
            [
                obs("a", GossipState::Alive, "1"),
                obs("b", GossipState::Alive, "1"),
            ],
            t(2),
        );
        assert_eq!(v2, v1);
        let v3 = b.next(
            &v2,
            [
                obs("a", GossipState::Alive, "1"),
                obs("b", GossipState::Suspect, "1"),
            ],
            t(3),
        );
        assert_eq!(v3.get("b").unwrap().since, t(3));
        assert_eq!(v3.get("a").unwrap().since, t(1));
        let v4 = b.next(
            &v3,
            [
                obs("a", GossipState::Alive, "1"),
                obs("b", GossipState::Suspect, "2"),
            ],
            t(4),
        );
        assert_eq!(v4.get("b").unwrap().since, t(4));
    }

    #[test]
    fn reaped_dead_members_are_retained_and_forget_hides_them_until_they_return() {
        let mut b = ViewBuilder::new("a");
        let v1 = b.next(
            &Membership::new("a", []),
            [
                obs("a", GossipState::Alive, "1"),
                obs("b", GossipState::Dead, "1"),
                obs("c", GossipState::Left, "1"),
            ],
            t(1),
        );
        // The layer reaps b and c: both stay, in their last state.
        let v2 = b.next(&v1, [obs("a", GossipState::Alive, "1")], t(2));
        assert_eq!(v2, v1);

        assert!(
            b.forget(&v2, "a").is_none(),
            "the local node cannot be forgotten"
        );
        assert!(b.forget(&v2, "zz").is_none());
        let v3 = b.forget(&v2, "b").unwrap();
        assert!(v3.get("b").is_none());
        // Still reported dead by the layer: stays hidden.
        let v4 = b.next(
            &v3,
            [
                obs("a", GossipState::Alive, "1"),
                obs("b", GossipState::Dead, "1"),
            ],
            t(3),
        );
        assert!(v4.get("b").is_none());
        // Back alive (restarted): visible again, and no longer forgotten.
        let v5 = b.next(
            &v4,
            [
                obs("a", GossipState::Alive, "1"),
                obs("b", GossipState::Alive, "2"),
            ],
            t(4),
        );
        assert_eq!(v5.get("b").unwrap().state, GossipState::Alive);
        let v6 = b.next(
            &v5,
            [
                obs("a", GossipState::Alive, "1"),
                obs("b", GossipState::Dead, "2"),
            ],
            t(5),
        );
        assert_eq!(v6.get("b").unwrap().state, GossipState::Dead);
    }

    #[test]
    fn live_members_cannot_be_forgotten_and_vanishing_live_members_become_dead() {
        let mut b = ViewBuilder::new("a");
        let v1 = b.next(
            &Membership::new("a", []),
            [
                obs("a", GossipState::Alive, "1"),
                obs("b", GossipState::Suspect, "1"),
            ],
            t(1),
        );
        assert!(b.forget(&v1, "b").is_none());
        let v2 = b.next(&v1, [obs("a", GossipState::Alive, "1")], t(2));
        let b2 = v2.get("b").unwrap();
        assert_eq!((b2.state, b2.since), (GossipState::Dead, t(2)));
    }
}
