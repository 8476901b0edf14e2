//! The Converge Ledger node: the `converge-ledger` binary's server and command line.
//!
//! # Layout
//! - [`config`]: figment configuration (defaults, TOML, environment, flags) and validation.
//! - [`server`]: bind, announce, serve, drain on shutdown.
//! - [`service`]: `converge.context.v1.ContextService` over the embedded ledger.
//! - [`integrity`]: `converge.ledger.v1.IntegrityService`: signed tree heads and proofs.
//! - [`pipeline`]: `converge.ledger.v1.AppendPipeline`: appends pipelined on one stream.
//! - [`snapshots`]: `converge.ledger.v1.SnapshotService`: snapshots streamed out and in.
//! - [`conn`]: file-descriptor budget, connection cap and handshake timeout.
//! - [`signer`]: the node's Ed25519 key.
//! - [`identity`]: the node id and data-dir incarnation (`node.json`), the `x-ledger-node`
//!   response header.
//! - [`verify_cli`]: `converge-ledger verify …` and `head`: checks done locally.
//! - [`status`]: the one mapping from domain errors to gRPC status codes.
//! - [`cli`]: the command line (serve, append, get, watch, snapshot, load, health).
//! - [`health`]: `converge-ledger health`: the grpc.health.v1 check for probes.
//! - [`output`]: how the CLI prints entries.

pub mod cli;
pub mod cluster;
pub mod cluster_cli;
pub mod config;
pub mod conn;
pub mod health;
pub mod identity;
pub mod integrity;
pub mod output;
pub mod pipeline;
pub mod server;
pub mod service;
pub mod signer;
pub mod snapshots;
pub mod status;
pub mod verify_cli;
