//! The Converge Ledger node: the `converge-ledger` binary's server and command line.
//!
//! # Layout
//! - [`config`]: figment configuration (defaults, TOML, environment, flags) and validation.
//! - [`server`]: bind, announce, serve, drain on shutdown.
//! - [`service`]: `converge.context.v1.ContextService` over the embedded ledger.
//! - [`status`]: the one mapping from domain errors to gRPC status codes.
//! - [`cli`]: the command line (serve, append, get, watch, snapshot, load).
//! - [`output`]: how the CLI prints entries.

pub mod cli;
pub mod config;
pub mod output;
pub mod server;
pub mod service;
pub mod status;
