//! The membership view the replication protocol works on, built from the gossip layer's.
//!
//! - A member's state maps one to one, except `left`: a node that shut down gracefully (a
//!   rolling restart) is treated like a dead one, so it keeps its place in every replica set;
//!   only `cluster remove` or `dead_member_timeout_ms` takes a member out.
//! - The incarnation of `node.json` (16 hex digits) is the protocol's 64-bit incarnation.
//! - Alongside, an address book: each member's gRPC address, role and gossip state, for
//!   routing, peer links and `cluster status`.
//! - Once the cluster's placement view log has its first view ([`crate::views`]), ordinary
//!   contexts are placed on the *view's* members (the agreed, versioned membership) with the
//!   liveness gossip reports for them; gossip alone places only the view log's own context,
//!   held by every node ([`View::placement`]).

use crate::views::VIEWS_CONTEXT;
use ledger_discovery::{GossipRole, GossipState, Membership};
use ledger_replication::views::{ViewLog, ViewRange};
use ledger_replication::{Incarnation, Member, MemberState, NodeId, Role, Voter};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What the node knows about one member, for routing and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub addr: String,
    pub role: GossipRole,
    pub state: GossipState,
    pub version: String,
    pub incarnation: u64,
    /// A mirror's context-id prefixes (empty: every context).
    pub mirror_prefixes: Vec<String>,
    /// The placement view version the member announced it settled.
    pub views_settled: u64,
}

/// One consistent view: the protocol's members and the address book.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Where ordinary contexts are placed: the placement view's members with their gossip
    /// liveness (gossip's members until the first view is agreed).
    pub members: Arc<Vec<Member>>,
    /// The views a claim consults: the current version and the earlier ones not yet settled
    /// by every member (version 0 until the first view).
    pub range: Arc<ViewRange>,
    /// Gossip's members, every mirror holding every context: where the view log's own
    /// context lives (on every node).
    pub gossip: Arc<Vec<Member>>,
    /// Where the view log's own context is placed: gossip's members, or nobody while this node
    /// may not create the log yet ([`View::without_log_placement`]).
    pub log_members: Arc<Vec<Member>>,
    pub peers: Arc<BTreeMap<String, Peer>>,
}

impl View {
    /// The members `context_id` is placed on, the view it is claimed under and its
    /// replication factor: the view log's context lives on every node (placed by gossip),
    /// every other context on `replication_factor` of the view's members.
    pub fn placement(
        &self,
        context_id: &str,
        replication_factor: usize,
    ) -> (&Arc<Vec<Member>>, ViewRange, usize) {
        if context_id == VIEWS_CONTEXT {
            (&self.log_members, ViewRange::default(), usize::MAX)
        } else {
            (&self.members, (*self.range).clone(), replication_factor)
        }
    }

    /// Places ordinary contexts on `log`'s current view (from its first version on), each
    /// member alive as far as gossip sees the same incarnation alive; a member gossip no
    /// longer knows, or knows under another incarnation, is down.
    pub fn with_log(mut self, log: &ViewLog) -> View {
        if log.version() == 0 {
            return self;
        }
        let members = log
            .current()
            .members
            .iter()
            .map(|m| {
                let state = self
                    .gossip
                    .iter()
                    .find(|g| g.id == m.id && g.incarnation == m.incarnation)
                    .map_or(MemberState::Dead, |g| g.state);
                let mut m = m.clone();
                m.state = state;
                m
            })
            .collect();
        self.members = Arc::new(members);
        self.range = Arc::new(log.range());
        self
    }

    /// The same view with the view log's context placed nowhere: this node neither claims it
    /// nor counts anyone as its writer (it still follows and promises). A node started together
    /// with others, alone for a moment, would otherwise create a log of its own and write it
    /// alone (a split brain the first real claim cannot merge).
    pub fn without_log_placement(mut self) -> View {
        self.log_members = Arc::new(Vec::new());
        self
    }

    pub fn peer(&self, id: &str) -> Option<&Peer> {
        self.peers.get(id)
    }

    pub fn addr_of(&self, id: &str) -> Option<&str> {
        self.peers.get(id).map(|p| p.addr.as_str())
    }
}

/// The protocol incarnation of a `node.json` incarnation (hex text); other text is hashed.
pub fn incarnation_number(text: &str) -> u64 {
    match u64::from_str_radix(text, 16) {
        Ok(n) if !text.is_empty() && text.len() <= 16 => n,
        _ => {
            let h = ledger_core::hash::sha256(text.as_bytes());
            u64::from_be_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
        }
    }
}

/// This node's voter: its node id and the protocol incarnation of its `node.json` incarnation.
pub fn voter(node_id: &str, incarnation: &str) -> Voter {
    Voter {
        node: NodeId::new(node_id.to_owned()),
        incarnation: Incarnation(incarnation_number(incarnation)),
    }
}

/// The view of `membership`. Members dead for longer than `dead_timeout` are returned in the
/// second list (to be forgotten) and left out.
pub fn view(
    membership: &Membership,
    dead_timeout: Option<Duration>,
    now: SystemTime,
) -> (View, Vec<String>) {
    let mut members = Vec::new();
    let mut everywhere = Vec::new();
    let mut peers = BTreeMap::new();
    let mut expired = Vec::new();
    for m in membership.members() {
        let down = matches!(m.state, GossipState::Dead | GossipState::Left);
        if down
            && m.id != membership.local_id()
            && dead_timeout.is_some_and(|t| now.duration_since(m.since).unwrap_or_default() > t)
        {
            expired.push(m.id.clone());
            continue;
        }
        let incarnation = incarnation_number(m.incarnation());
        let state = match m.state {
            GossipState::Alive => MemberState::Alive,
            GossipState::Suspect => MemberState::Suspect,
            GossipState::Dead | GossipState::Left => MemberState::Dead,
        };
        let role = match m.role() {
            GossipRole::Member => Role::Member,
            GossipRole::Mirror => Role::Mirror,
        };
        everywhere.push(Member::new(m.id.as_str(), incarnation, role, state));
        members.push(
            Member::new(m.id.as_str(), incarnation, role, state)
                .with_mirror_prefixes(m.meta.mirror_prefixes.clone()),
        );
        peers.insert(
            m.id.clone(),
            Peer {
                id: m.id.clone(),
                addr: m.grpc_addr().to_owned(),
                role: m.role(),
                state: m.state,
                version: m.meta.version.clone(),
                incarnation,
                mirror_prefixes: m.meta.mirror_prefixes.clone(),
                views_settled: m.meta.views_settled,
            },
        );
    }
    let everywhere = Arc::new(everywhere);
    (
        View {
            members: Arc::new(members),
            range: Arc::new(ViewRange::default()),
            log_members: Arc::clone(&everywhere),
            gossip: everywhere,
            peers: Arc::new(peers),
        },
        expired,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_discovery::{GossipMember, NodeMeta};

    fn member(id: &str, state: GossipState, since: SystemTime) -> GossipMember {
        GossipMember {
            id: id.into(),
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            meta: NodeMeta {
                grpc_addr: format!("{id}:50051"),
                public_key: vec![],
                version: "0.1.0".into(),
                role: GossipRole::Member,
                incarnation: "00000000000000ff".into(),
                mirror_prefixes: Vec::new(),
                views_settled: 0,
            },
            state,
            since,
        }
    }

    #[test]
    fn left_members_keep_their_place_and_expired_ones_go() {
        let now = SystemTime::now();
        let old = now - Duration::from_secs(100);
        let m = Membership::new(
            "a",
            [
                member("a", GossipState::Alive, old),
                member("b", GossipState::Left, now),
                member("c", GossipState::Dead, old),
            ],
        );
        let (v, expired) = view(&m, Some(Duration::from_secs(10)), now);
        assert_eq!(expired, vec!["c".to_string()]);
        let states: Vec<_> = v.members.iter().map(|m| (m.id.as_str(), m.state)).collect();
        assert_eq!(
            states,
            vec![("a", MemberState::Alive), ("b", MemberState::Dead)]
        );
        assert_eq!(v.addr_of("b"), Some("b:50051"));
        assert_eq!(v.members[0].incarnation.0, 255);
        let (v, expired) = view(&m, None, now);
        assert!(expired.is_empty());
        assert_eq!(v.members.len(), 3);
    }

    #[test]
    fn incarnations() {
        assert_eq!(incarnation_number("0a"), 10);
        assert_ne!(incarnation_number("not hex"), incarnation_number("other"));
    }
}
