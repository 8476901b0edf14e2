//! Who takes part: node ids, incarnations, and voters (a node id in one incarnation).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's stable id, generated once into its data directory (or configured).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn new(id: impl Into<String>) -> Self {
        NodeId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(s.to_owned())
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        NodeId(s)
    }
}

/// Created with a node's data directory (a random number), carried in gossip and in every
/// replication message. A node that comes back with an empty or lost data directory under its old
/// id has a new incarnation: it has forgotten its promises and its entries, so for the protocol it
/// is a *different* voter (see [`Voter`]).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Incarnation(pub u64);

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One replica as the protocol counts it: a node id in one incarnation.
///
/// Promises and durable acknowledgements belong to a voter, not to a node id: after a node lost
/// its data, the voters recorded for earlier epochs name its old incarnation, which will never
/// answer again, so a new epoch needs majorities without it (see [`crate::quorum`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Voter {
    pub node: NodeId,
    pub incarnation: Incarnation,
}

impl Voter {
    pub fn new(node: impl Into<NodeId>, incarnation: u64) -> Self {
        Voter {
            node: node.into(),
            incarnation: Incarnation(incarnation),
        }
    }
}

impl fmt::Display for Voter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.node, self.incarnation)
    }
}
