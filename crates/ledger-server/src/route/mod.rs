//! Serving the public API in a cluster: which node answers a request.
//!
//! - **Appends** (and batch appends) go to the context's writer (the first live member of its
//!   replica set, by the same placement function the Rust client uses). On the writer they enter the
//!   context's task; elsewhere they are forwarded (`route = forward`, the default) or refused
//!   with FAILED_PRECONDITION and the writer's address in `x-ledger-writer` (`route =
//!   redirect`). Refusals after which nothing was stored (no writer yet, the writer is
//!   establishing its epoch, views disagree for a moment) are retried for up to
//!   [`APPEND_RETRY`](router::APPEND_RETRY), so the engine rarely sees a failover.
//! - **Reads** are served locally by a replica (or a mirror) from what it durably holds; a
//!   node that holds no replica forwards them to the writer (or another live replica).
//!   `x-ledger-min-sequence: N` is read-your-writes through any node, never answered OK
//!   below N ([`read`]): the read waits within its deadline (a replica for half of it, then
//!   the writer for the rest), else UNAVAILABLE names N and what is held.
//!
//! - **Loads** go to the writer like appends ([`load`]): its context task refuses appends
//!   between the load's start and end, the embedded ledger loads the snapshot all or nothing,
//!   and the writer ships the loaded entries like appends before the load is answered.
//!
//! A forwarded request carries `x-ledger-forwarded`, and is never forwarded again.
//!
//! Layout: [`router`] ([`Router`]: request metadata, requests passed on), [`read`] (where a
//! read is served, min-sequence on every path), [`append`] (appends and batches: here,
//! forwarded or redirected, retried while nothing was stored), [`load`] (loads through the
//! writer).

pub mod append;
pub mod load;
pub mod read;
pub mod router;

pub use read::Serve;
pub use router::Router;
