//! The membership model every [`Discovery`](crate::Discovery) implementation reports: who is in
//! the cluster, what each member advertises, and in which state this node believes it is.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::DiscoveryError;

/// What a node does in the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GossipRole {
    /// Holds replicas and can be a context's writer (the default).
    #[default]
    Member,
    /// Read-only mirror: replicates contexts, never writes, never counts for acknowledgements.
    Mirror,
}

impl GossipRole {
    /// The lowercase name used in configuration and `cluster status` (`member`, `mirror`).
    pub fn as_str(self) -> &'static str {
        match self {
            GossipRole::Member => "member",
            GossipRole::Mirror => "mirror",
        }
    }
}

impl fmt::Display for GossipRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GossipRole {
    type Err = DiscoveryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "member" => Ok(GossipRole::Member),
            "mirror" => Ok(GossipRole::Mirror),
            other => Err(DiscoveryError::InvalidRole(other.to_owned())),
        }
    }
}

/// The state this node believes a member is in (SWIM's states).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GossipState {
    /// Answers probes.
    Alive,
    /// Missed a probe; declared dead unless it refutes before the suspicion timeout.
    Suspect,
    /// Failed: did not refute a suspicion in time. Stays in the view until forgotten.
    Dead,
    /// Left gracefully. Stays in the view until forgotten.
    Left,
}

impl GossipState {
    /// The lowercase name used by `cluster status` (`alive`, `suspect`, `dead`, `left`).
    pub fn as_str(self) -> &'static str {
        match self {
            GossipState::Alive => "alive",
            GossipState::Suspect => "suspect",
            GossipState::Dead => "dead",
            GossipState::Left => "left",
        }
    }

    /// `Alive` or `Suspect`: the member may still be running. A suspect member is not yet
    /// failed (SWIM gives it the suspicion timeout to refute), so placement treats it as live.
    pub fn is_live(self) -> bool {
        matches!(self, GossipState::Alive | GossipState::Suspect)
    }
}

impl fmt::Display for GossipState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a node advertises about itself to the cluster. Travels in the gossip layer's node
/// metadata, at most [`MAX_META_LEN`](crate::MAX_META_LEN) bytes once encoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeMeta {
    /// `host:port` peers and clients use for this node's gRPC.
    pub grpc_addr: String,
    /// The node's Ed25519 public key (raw bytes), the one it signs tree heads with.
    pub public_key: Vec<u8>,
    /// The node's software version.
    pub version: String,
    /// Member or mirror.
    pub role: GossipRole,
    /// Created with the data dir: a new value under an old node id tells peers the node came
    /// back with an empty (or lost) data dir and has forgotten its promises.
    pub incarnation: String,
    /// A mirror replicates only the contexts whose id starts with one of these; empty: every
    /// context. (Members ignore it.)
    pub mirror_prefixes: Vec<String>,
    /// The placement view version this node has settled: every context it holds was claimed
    /// under that view (see `ledger_replication::views`); 0 before the first.
    pub views_settled: u64,
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GossipMember {
    /// Stable node id (generated once into the data dir, or configured).
    pub id: String,
    /// Address the member's gossip layer answers on. (The fake uses `0.0.0.0:0`.)
    pub gossip_addr: SocketAddr,
    /// What the member advertises.
    pub meta: NodeMeta,
    /// What this node believes about it.
    pub state: GossipState,
    /// When this node first saw the member in `state` with this incarnation (local clock).
    pub since: SystemTime,
}

impl GossipMember {
    /// Shorthand for `self.meta.grpc_addr`.
    pub fn grpc_addr(&self) -> &str {
        &self.meta.grpc_addr
    }

    /// Shorthand for `self.meta.role`.
    pub fn role(&self) -> GossipRole {
        self.meta.role
    }

    /// Shorthand for `self.meta.incarnation`.
    pub fn incarnation(&self) -> &str {
        &self.meta.incarnation
    }
}

/// A snapshot of the membership as one node sees it: every member it knows, itself included,
/// sorted by id. Dead and left members stay until [`Discovery::forget`](crate::Discovery::forget)
/// removes them (or, for a restarted node, until it is seen alive again). Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    local_id: Arc<str>,
    members: Arc<Vec<GossipMember>>,
}

impl Membership {
    /// A snapshot from members in any order; sorts them by id. If two entries share an id the
    /// last one wins.
    pub fn new(
        local_id: impl Into<Arc<str>>,
        members: impl IntoIterator<Item = GossipMember>,
    ) -> Self {
        let by_id: BTreeMap<String, GossipMember> =
            members.into_iter().map(|m| (m.id.clone(), m)).collect();
        Self {
            local_id: local_id.into(),
            members: Arc::new(by_id.into_values().collect()),
        }
    }

    /// Id of the node this view belongs to.
    pub fn local_id(&self) -> &str {
        &self.local_id
    }

    /// This node's own record, if it is in the view (it always is for the shipped
    /// implementations).
    pub fn local(&self) -> Option<&GossipMember> {
        self.get(&self.local_id)
    }

    /// Every known member, sorted by id, whatever its state.
    pub fn members(&self) -> &[GossipMember] {
        &self.members
    }

    /// The member with this id.
    pub fn get(&self, id: &str) -> Option<&GossipMember> {
        self.members
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.members[i])
    }

    /// Members that may be running ([`GossipState::is_live`]: alive or suspect), sorted by id.
    pub fn live(&self) -> impl Iterator<Item = &GossipMember> {
        self.members.iter().filter(|m| m.state.is_live())
    }

    /// Members in exactly `state`, sorted by id.
    pub fn in_state(&self, state: GossipState) -> impl Iterator<Item = &GossipMember> {
        self.members.iter().filter(move |m| m.state == state)
    }

    /// What changed from `previous` to `self`, in id order. Pure: the change feed sends
    /// snapshots, and a consumer that wants events diffs consecutive ones with this.
    pub fn changes_since(&self, previous: &Membership) -> Vec<MemberChange> {
        let mut changes = Vec::new();
        let (mut old, mut new) = (
            previous.members.iter().peekable(),
            self.members.iter().peekable(),
        );
        loop {
            match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(o), None) => {
                    changes.push(MemberChange::Forgotten(o.id.clone()));
                    old.next();
                }
                (None, Some(n)) => {
                    changes.push(MemberChange::Joined((*n).clone()));
                    new.next();
                }
                (Some(o), Some(n)) => match o.id.cmp(&n.id) {
                    std::cmp::Ordering::Less => {
                        changes.push(MemberChange::Forgotten(o.id.clone()));
                        old.next();
                    }
                    std::cmp::Ordering::Greater => {
                        changes.push(MemberChange::Joined((*n).clone()));
                        new.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if o.meta.incarnation != n.meta.incarnation {
                            changes.push(MemberChange::Restarted {
                                member: (*n).clone(),
                                previous_incarnation: o.meta.incarnation.clone(),
                            });
                        } else {
                            if o.meta != n.meta || o.gossip_addr != n.gossip_addr {
                                changes.push(MemberChange::Updated((*n).clone()));
                            }
                            if o.state != n.state {
                                changes.push(MemberChange::StateChanged {
                                    id: n.id.clone(),
                                    from: o.state,
                                    to: n.state,
                                });
                            }
                        }
                        old.next();
                        new.next();
                    }
                },
            }
        }
        changes
    }
}

/// One difference between two [`Membership`] snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// A member this node had not known.
    Joined(GossipMember),
    /// Same incarnation, new state (e.g. `alive → suspect`, `suspect → dead`, `alive → left`).
    StateChanged {
        /// The member's id.
        id: String,
        /// State in the previous snapshot.
        from: GossipState,
        /// State now.
        to: GossipState,
    },
    /// Same id, new incarnation id: the node came back with a new (empty) data dir.
    Restarted {
        /// The member as it is now.
        member: GossipMember,
        /// Its incarnation in the previous snapshot.
        previous_incarnation: String,
    },
    /// Same incarnation, different metadata or gossip address (e.g. a new version after an
    /// upgrade restart that kept the data dir).
    Updated(GossipMember),
    /// Removed from the view ([`Discovery::forget`](crate::Discovery::forget)).
    Forgotten(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, state: GossipState, incarnation: &str) -> GossipMember {
        GossipMember {
            id: id.to_owned(),
            gossip_addr: "127.0.0.1:7946".parse().unwrap(),
            meta: NodeMeta {
                grpc_addr: format!("{id}:50051"),
                public_key: vec![7; 32],
                version: "0.1.0".to_owned(),
                role: GossipRole::Member,
                incarnation: incarnation.to_owned(),
                mirror_prefixes: Vec::new(),
                views_settled: 0,
            },
            state,
            since: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn membership_sorts_by_id_and_finds_members() {
        let view = Membership::new(
            "b",
            [
                member("c", GossipState::Dead, "1"),
                member("a", GossipState::Alive, "1"),
                member("b", GossipState::Suspect, "1"),
            ],
        );
        let ids: Vec<_> = view.members().iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(view.local().unwrap().id, "b");
        assert_eq!(view.get("c").unwrap().state, GossipState::Dead);
        assert!(view.get("d").is_none());
        let live: Vec<_> = view.live().map(|m| m.id.as_str()).collect();
        assert_eq!(live, ["a", "b"]);
        assert_eq!(view.in_state(GossipState::Dead).count(), 1);
    }

    #[test]
    fn changes_since_reports_joins_states_restarts_updates_and_forgets() {
        let before = Membership::new(
            "a",
            [
                member("a", GossipState::Alive, "1"),
                member("b", GossipState::Alive, "1"),
                member("c", GossipState::Alive, "1"),
                member("d", GossipState::Dead, "1"),
                member("e", GossipState::Alive, "1"),
            ],
        );
        let mut e = member("e", GossipState::Alive, "1");
        e.meta.version = "0.2.0".to_owned();
        let after = Membership::new(
            "a",
            [
                member("a", GossipState::Alive, "1"),
                member("b", GossipState::Suspect, "1"),
                member("c", GossipState::Alive, "2"),
                e.clone(),
                member("f", GossipState::Alive, "1"),
            ],
        );
        assert_eq!(
            after.changes_since(&before),
            vec![
                MemberChange::StateChanged {
                    id: "b".to_owned(),
                    from: GossipState::Alive,
                    to: GossipState::Suspect,
                },
                MemberChange::Restarted {
                    member: member("c", GossipState::Alive, "2"),
                    previous_incarnation: "1".to_owned(),
                },
                MemberChange::Forgotten("d".to_owned()),
                MemberChange::Updated(e),
                MemberChange::Joined(member("f", GossipState::Alive, "1")),
            ]
        );
        assert!(after.changes_since(&after).is_empty());
    }

    #[test]
    fn role_and_state_names_round_trip() {
        assert_eq!("member".parse::<GossipRole>().unwrap(), GossipRole::Member);
        assert_eq!(
            " Mirror ".parse::<GossipRole>().unwrap(),
            GossipRole::Mirror
        );
        assert!("writer".parse::<GossipRole>().is_err());
        assert_eq!(GossipRole::Mirror.to_string(), "mirror");
        let names: Vec<_> = [
            GossipState::Alive,
            GossipState::Suspect,
            GossipState::Dead,
            GossipState::Left,
        ]
        .iter()
        .map(|s| s.as_str())
        .collect();
        assert_eq!(names, ["alive", "suspect", "dead", "left"]);
        assert!(GossipState::Suspect.is_live());
        assert!(!GossipState::Left.is_live());
    }
}
