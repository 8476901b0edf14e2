//! [`ClusterMetrics`]: the hooks the runtime reports through where things happen (the server's
//! metrics registry implements them; what the runtime counts itself, such as running context
//! tasks, quarantines and anti-entropy rounds, is read from [`crate::cluster::Cluster`] at
//! scrape time).

/// Where the runtime reports what happens as it happens.
pub trait ClusterMetrics: Send + Sync + std::fmt::Debug {
    /// This node became the writer of a context (a new epoch).
    fn epoch_change(&self);
    /// A batch for a lagging replica was read from storage (beyond the recent entries).
    fn catch_up(&self);
    /// As writer of `context`, `peer` has `lag` stored entries unacknowledged.
    fn replica_lag(&self, context: &str, peer: &str, lag: u64);
    /// This node no longer writes `context`.
    fn forget_lag(&self, context: &str);
    /// An operator made the survivors' history `context`'s (`cluster accept-loss`).
    fn loss_accepted(&self, context: &str);
}

/// Hooks that record nothing (tools and tests without a metrics registry).
#[derive(Debug, Default)]
pub struct NoMetrics;

impl ClusterMetrics for NoMetrics {
    fn epoch_change(&self) {}
    fn catch_up(&self) {}
    fn replica_lag(&self, _context: &str, _peer: &str, _lag: u64) {}
    fn forget_lag(&self, _context: &str) {}
    fn loss_accepted(&self, _context: &str) {}
}
