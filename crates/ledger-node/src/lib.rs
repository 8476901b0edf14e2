//! The `converge-ledger` binary's command line: it parses a command and runs it. `serve`
//! starts a node (the server is `ledger-server`, the cluster runtime `ledger-cluster`); the
//! other commands are clients of a node (`ledger-client`) or local tools.
//!
//! # Layout
//! - [`cli`]: the command line, one file per command: [`cli::serve`], [`cli::append`] (one
//!   entry, or `--from-file` in batches), [`cli::get`], [`cli::watch`], [`cli::snapshot`],
//!   [`cli::load`], [`cli::verify`] (`verify …` and `head`), [`cli::cluster`], [`cli::certs`],
//!   [`cli::token`], [`cli::health`]; `cli` itself only parses and dispatches.
//! - [`target`]: the node a client command talks to (address, TLS, token).
//! - [`output`]: how the CLI prints entries, lines and progress.
//! - [`error`]: [`error::CliError`], why a command stopped early.

pub mod cli;
pub mod error;
pub mod output;
pub mod target;
