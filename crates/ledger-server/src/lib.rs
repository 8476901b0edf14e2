//! The Converge Ledger server: what a node serves and how. The gRPC services over the embedded
//! ledger, the routing of public requests to the node that should serve them when the node is
//! a cluster member (on top of the `ledger-cluster` runtime), everything around each request
//! (auth, limits, deadlines, metrics, the request log), configuration, TLS, the admin HTTP
//! server, and `serve` itself. The `converge-ledger` binary (`ledger-node`) parses its command
//! line and calls [`serve`].
//!
//! # Layout
//! - [`serve`]: bind, open, start the cluster member, serve, drain on shutdown.
//! - [`config`]: figment configuration (defaults, TOML, environment, flags), validation, the
//!   cluster's settings.
//! - [`grpc`]: the services (ContextService and its Watch streams, IntegrityService,
//!   AppendPipeline, SnapshotService, the internal ClusterService).
//! - [`route`]: in a cluster, where a request is served: appends and loads to the writer,
//!   reads to a replica, forwarded or redirected.
//! - [`error_status`]: the one mapping from domain errors (and refusals) to gRPC statuses.
//! - [`auth`]: bearer tokens with roles and context prefixes, the policy, its layer.
//! - [`middleware`]: the node id header, per-connection request limit, deadlines, request
//!   metrics, the request log.
//! - [`stream_limits`]: watchers, append streams and load size.
//! - [`conn`]: file-descriptor budget, connection cap, handshake timeout, TLS handshakes.
//! - [`tls`]: TLS on the public port and mutual TLS between nodes, reloaded on SIGHUP.
//! - [`security`]: the TLS and access settings in force, reloaded on SIGHUP.
//! - [`metrics`]: Prometheus metrics (reads the cluster runtime's counters at scrape time).
//! - [`admin`]: the admin HTTP server: `/metrics` and the observer page.
//! - [`signer`]: the node's Ed25519 key.
//! - [`identity`]: the node id and data-dir incarnation (`node.json`).

pub mod admin;
pub mod auth;
pub mod config;
pub mod conn;
pub mod error_status;
pub mod grpc;
pub mod identity;
pub mod metrics;
pub mod middleware;
pub mod route;
pub mod security;
pub mod serve;
pub mod signer;
pub mod stream_limits;
pub mod tls;
