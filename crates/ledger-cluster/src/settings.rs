//! [`ClusterSettings`]: what the runtime needs to know, as plain values (the server builds them
//! from its configuration).

use ledger_replication::AckLevel;
use std::time::Duration;

/// Everything the cluster runtime needs from the configuration.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// `host:port` peers and clients use for this node's gRPC.
    pub advertise_addr: String,
    /// Gossip addresses (host:port or DNS names) of the nodes to join.
    pub seeds: Vec<String>,
    /// The acknowledgement level of an append that names none.
    pub ack: AckLevel,
    /// What this node is in the cluster: a member or a mirror.
    pub role: ledger_discovery::GossipRole,
    /// A mirror's context-id prefixes (empty: every context).
    pub mirror_prefixes: Vec<String>,
    /// A member dead for longer than this is forgotten (`None`: only by an operator).
    pub dead_member_timeout: Option<Duration>,
    pub protocol: ledger_replication::Settings,
    /// How often anti-entropy compares digests with a peer.
    pub anti_entropy_interval: Duration,
    /// A context task with nothing to do for this long stops (`None`: never).
    pub context_idle: Option<Duration>,
    /// Run the placement view log ([`crate::views`]); off: contexts are placed on gossip's
    /// membership as before (view 0).
    pub placement_views: bool,
}
