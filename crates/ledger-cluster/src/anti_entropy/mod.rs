//! Anti-entropy: every `anti_entropy_interval_ms` a node compares, with one random live peer, a
//! digest of the contexts both should hold (`ledger_replication::digest`: range hashes over
//! `(context, size, root, epoch)`, descending only into ranges that differ, so two nodes with
//! 100,000 equal contexts exchange about 40 bytes). Each context found lagging, missing or
//! different on either side gets its replication task started on both nodes: the writer's task
//! then probes its followers and ships what they miss (a new or wiped replica included), a
//! follower's task polls its writer, and a divergent log is quarantined by the protocol as it
//! catches up. This heals what live streams missed: restarts, a wiped data dir, a new node, a
//! partition that ended while no one appended.
//!
//! The exchange runs over `ClusterService/Digest`, one unary call per turn; the responder keeps
//! the session (keyed by peer and session id) until it finishes or goes stale.

//!
//! Layout: [`sessions`] (the responder's sessions and the counters), [`rounds`] (the exchanges:
//! the first comparison with every peer, the periodic rounds, the responder's turns, repairs).

pub(crate) mod rounds;
pub mod sessions;
