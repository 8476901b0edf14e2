//! The wire contract of Converge Ledger, generated from `proto/` at build time: five services,
//! `converge.context.v1.ContextService` (the engine's contract), `converge.ledger.v1.
//! IntegrityService` (signed tree heads and proofs), `converge.ledger.v1.AppendPipeline`
//! (pipelined appends on one stream), `converge.ledger.v1.SnapshotService` (streamed snapshots
//! and loads) and `converge.ledger.cluster.v1.ClusterService` (the nodes' internal service).
//!
//! Generated types stay here and in the gRPC layer; the domain model (`ledger-core`) never
//! derives from prost. Conversions between the two live in [`convert`], used by the server,
//! the cluster runtime and the client alike.
//!
//! # Layout
//! - [`context`]: `converge.context.v1` (ContextService and its messages).
//! - [`framed`]: ContextService generated again for the server, Watch events as pre-encoded
//!   frames.
//! - [`ledger`]: `converge.ledger.v1` (IntegrityService, AppendPipeline, SnapshotService) and,
//!   nested, `converge.ledger.cluster.v1`, re-exported as [`cluster`] (ClusterService).
//! - [`convert`]: wire ↔ domain conversions.
//! - [`frame`]: [`frame::WatchFrame`], a message that encodes as bytes already encoded.
//! - [`codec`]: the gRPC codec that reserves a message's encoded length before writing it.
//! - [`FILE_DESCRIPTOR_SET`]: every service's descriptors, for server reflection.

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
