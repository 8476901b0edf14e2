//! Where a context lives, as this node sees it: its writer, its replica set, whether this node
//! holds it (placement of `ledger_replication` over the current view: see
//! [`View::placement`](crate::membership::View::placement)).

use crate::cluster::Cluster;
use ledger_replication::{Settings, placement, placement_writer, replica_set};

impl Cluster {
    /// The context's writer as this node sees it: (id, gRPC address).
    pub fn writer_of(&self, context_id: &str) -> Option<(String, String)> {
        let view = self.view();
        let (members, _, r) = view.placement(context_id, self.replication_factor());
        let id = placement_writer(context_id, members, r)?;
        let addr = view.addr_of(id.as_str())?.to_owned();
        Some((id.to_string(), addr))
    }

    /// The context's replica set as this node sees it (ids).
    pub fn replicas_of(&self, context_id: &str) -> Vec<String> {
        let view = self.view();
        let (members, _, r) = view.placement(context_id, self.replication_factor());
        replica_set(context_id, members, r)
            .into_iter()
            .map(|n| n.to_string())
            .collect()
    }

    /// Whether this node holds `context_id`: it is in its replica set, or a mirror of it.
    pub fn holds(&self, context_id: &str) -> bool {
        if self.settings.role == ledger_discovery::GossipRole::Mirror {
            return context_id == crate::views::VIEWS_CONTEXT
                || placement::mirror_matches(&self.settings.mirror_prefixes, context_id);
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

    /// The replication factor of ordinary contexts (setting `replication_factor`).
    pub fn replication_factor(&self) -> usize {
        self.settings.protocol.replication_factor
    }

    /// The protocol settings a context's participant runs with: the view log's context is
    /// replicated to every node.
    pub(crate) fn protocol_for(&self, context_id: &str) -> Settings {
        let mut s = self.settings.protocol.clone();
        if context_id == crate::views::VIEWS_CONTEXT {
            s.replication_factor = usize::MAX;
        }
        s
    }
}
