//! The wire contract of Converge Ledger, generated from `proto/` at build time:
//! `converge.context.v1.ContextService` and `converge.ledger.v1.IntegrityService`.
//!
//! Generated types stay here and in the gRPC layer; the domain model (`ledger-core`) never
//! derives from prost. Conversions between the two live in [`convert`], used by the node, the
//! client and replication alike.

#![allow(missing_debug_implementations)]

pub mod codec;
pub mod convert;
pub mod frame;

/// `converge.context.v1`: the engine's ContextService.
#[allow(clippy::all)]
pub mod context {
    pub mod v1 {
        tonic::include_proto!("converge.context.v1");
    }
}

/// The node's side of `converge.context.v1.ContextService`, generated a second time with
/// `WatchEvent` mapped to [`frame::WatchFrame`]: the same service on the wire, with Watch
/// events encoded once per entry rather than once per watcher. Every other type is
/// [`context::v1`]'s.
#[allow(clippy::all)]
pub mod framed {
    include!(concat!(env!("OUT_DIR"), "/framed/converge.context.v1.rs"));
}

/// `converge.ledger.v1`: the IntegrityService (signed tree heads and proofs) and the
/// AppendPipeline (pipelined appends on one stream) and the SnapshotService (streamed
/// snapshots).
#[allow(clippy::all)]
pub mod ledger {
    pub mod v1 {
        tonic::include_proto!("converge.ledger.v1");
    }

    /// `converge.ledger.cluster.v1`.
    pub mod cluster {
        pub mod v1 {
            tonic::include_proto!("converge.ledger.cluster.v1");
        }
    }
}

/// `converge.ledger.cluster.v1`: the nodes' internal service (replication streams, cluster
/// status, anti-entropy digests). Generated inside [`ledger`] (its package nests there).
pub use ledger::cluster;

/// Encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
