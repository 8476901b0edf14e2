//! The gRPC services a node serves, one file each, and the Watch streams.
//!
//! Layout: [`context_service`] (`converge.context.v1.ContextService` over the embedded ledger),
//! [`watch_stream`] (its Watch streams: entries encoded once per node, held back at the commit
//! index, signed heads along the way), [`integrity_service`] (`converge.ledger.v1.
//! IntegrityService`: signed tree heads and proofs), [`pipeline_service`]
//! (`converge.ledger.v1.AppendPipeline`: appends pipelined on one stream),
//! [`snapshot_service`] (`converge.ledger.v1.SnapshotService`: snapshots streamed out and in),
//! [`cluster_service`] (`converge.ledger.cluster.v1.ClusterService`, the nodes' internal
//! service, carried out by `ledger-cluster`).

pub mod cluster_service;
pub mod context_service;
pub mod integrity_service;
pub mod pipeline_service;
pub mod snapshot_service;
pub mod watch_stream;
