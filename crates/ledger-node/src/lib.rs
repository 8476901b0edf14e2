//! The Converge Ledger node: the `converge-ledger` binary's server and command line.
//!
//! # Layout
//! - [`config`]: figment configuration (defaults, TOML, environment, flags) and validation.
//! - [`server`]: bind, announce, serve, drain on shutdown.
//! - [`service`]: `converge.context.v1.ContextService` over the embedded ledger.
//! - [`integrity`]: `converge.ledger.v1.IntegrityService`: signed tree heads and proofs.
//! - [`pipeline`]: `converge.ledger.v1.AppendPipeline`: appends pipelined on one stream.
//! - [`snapshots`]: `converge.ledger.v1.SnapshotService`: snapshots streamed out and in.
//! - [`conn`]: file-descriptor budget, connection cap, handshake timeout, TLS handshakes.
//! - [`tls`]: TLS on the public port and mutual TLS between nodes, reloaded on SIGHUP.
//! - [`auth`]: bearer tokens with roles and context prefixes.
//! - [`requests`]: around every request: per-connection limit, deadlines, request metrics.
//! - [`limits`]: watchers, append streams and load size.
//! - [`metrics`]: Prometheus metrics.
//! - [`admin`]: the admin HTTP server: `/metrics` and the observer page.
//! - [`certs`]: `converge-ledger certs dev`, throwaway certificates.
//! - [`target`]: the node a CLI command talks to (address, TLS, token).
//! - [`signer`]: the node's Ed25519 key.
//! - [`identity`]: the node id and data-dir incarnation (`node.json`), the `x-ledger-node`
//!   response header.
//! - [`verify_cli`]: `converge-ledger verify …` and `head`: checks done locally.
//! - [`status`]: the one mapping from domain errors to gRPC status codes.
//! - [`cli`]: the command line (serve, append, get, watch, snapshot, load, health).
//! - [`batch_cli`]: `append --from-file`: JSON lines appended in batches.
//! - [`health`]: `converge-ledger health`: the grpc.health.v1 check for probes.
//! - [`output`]: how the CLI prints entries.

pub mod admin;
pub mod auth;
pub mod batch_cli;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod cluster_cli;
pub mod config;
pub mod conn;
pub mod health;
pub mod identity;
pub mod integrity;
pub mod limits;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod request_log;
pub mod requests;
pub mod server;
pub mod service;
pub mod signer;
pub mod snapshots;
pub mod status;
pub mod target;
pub mod tls;
pub mod verify_cli;
pub mod watch_stream;
