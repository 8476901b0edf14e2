//! Where a context lives, as this node sees it: its writer, its replica set, whether this node
//! holds it (placement of `ledger_replication` over the current view).

use crate::cluster::Cluster;
use ledger_replication::{placement, placement_writer, replica_set};

impl Cluster {
    /// The context's writer as this node sees it: (id, gRPC address).
    pub fn writer_of(&self, context_id: &str) -> Option<(String, String)> {
        let view = self.view();
        let id = placement_writer(
            context_id,
            &view.members,
            self.settings.protocol.replication_factor,
        )?;
        let addr = view.addr_of(id.as_str())?.to_owned();
        Some((id.to_string(), addr))
    }

    /// The context's replica set as this node sees it (ids).
    pub fn replicas_of(&self, context_id: &str) -> Vec<String> {
        let view = self.view();
        replica_set(
            context_id,
            &view.members,
            self.settings.protocol.replication_factor,
        )
        .into_iter()
        .map(|n| n.to_string())
        .collect()
    }

    /// Whether this node holds `context_id`: it is in its replica set, or a mirror of it.
    pub fn holds(&self, context_id: &str) -> bool {
        if self.settings.role == ledger_discovery::GossipRole::Mirror {
            return placement::mirror_matches(&self.settings.mirror_prefixes, context_id);
        }
        self.replicas_of(context_id)
            .iter()
            .any(|r| r.as_str() == self.me.node.as_str())
    }

    /// Whether this node is the context's writer, as it sees it.
    pub fn writes(&self, context_id: &str) -> bool {
        self.writer_of(context_id)
            .is_some_and(|(w, _)| w == self.me.node.as_str())
    }
}
