//! What can go wrong with a request in a cluster, beyond what the embedded ledger reports.
//! Mapped to gRPC status codes by the server (`ledger_server::error_status`, the one place).

use ledger_embedded::LedgerError;
use thiserror::Error;

/// A cluster request's failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A majority of a replica set the context needs is down (`lost`: it left the cluster, so
    /// only `cluster accept-loss` brings the context back). Nothing was stored; retrying
    /// before a member returns fails the same way.
    #[error("context {context_id:?} cannot take appends: {} of its replica set {} (the writer needs a majority of it); nothing was stored", .missing.join(", "), if *.lost { "left the cluster: an operator may run `cluster accept-loss`" } else { "are down" })]
    QuorumUnavailable {
        context_id: String,
        missing: Vec<String>,
        lost: bool,
    },
    /// `cluster accept-loss` on a context that has not lost a quorum, or on a node that does
    /// not write it.
    #[error("cannot accept the loss of context {context_id:?}: {why}")]
    NoLossToAccept { context_id: String, why: String },
    /// The context id is one of the cluster's own (`__ledger/…`, e.g. the placement view log):
    /// clients may read it but not write or load it.
    #[error(
        "context {context_id:?} is reserved for the cluster's own use (ids starting with \"__ledger/\"); choose another context id"
    )]
    Reserved { context_id: String },
    /// This node does not write the context (its view changed under the request). Nothing was
    /// stored; retrying (on the writer) is safe.
    #[error("node {node} does not write context {context_id:?} (writer: {writer}); retry")]
    NotWriter {
        node: String,
        context_id: String,
        writer: String,
    },
    /// The writer is still establishing its epoch (promises, catch-up). Nothing was stored.
    #[error("the writer of context {context_id:?} is establishing its epoch; retry shortly")]
    Establishing { context_id: String },
    /// The writer has not heard from a majority of the replica set within its lease. Nothing
    /// was stored.
    #[error(
        "the writer of context {context_id:?} has heard from no majority of its replicas for {lease_ms} ms; it accepts no appends until it does"
    )]
    LeaseExpired { context_id: String, lease_ms: u64 },
    /// No live member can write the context. Nothing was stored.
    #[error("no live member can write context {context_id:?} ({why}); retry when members return")]
    NoWriter { context_id: String, why: String },
    /// The append may or may not have been stored: the writer stepped down (or its state was
    /// rebuilt) before the acknowledgement level was reached.
    #[error(
        "the append to context {context_id:?} may or may not have been stored: {reason}; retry with an idempotency key to be safe"
    )]
    OutcomeUnknown { context_id: String, reason: String },
    /// `route = redirect`: the client must send the append to the writer.
    #[error(
        "node {node} does not write context {context_id:?}: send it to {writer_addr} (writer {writer})"
    )]
    Redirect {
        node: String,
        context_id: String,
        writer: String,
        writer_addr: String,
    },
    /// A read asked for a tree size this replica does not know to be committed yet (held by
    /// a quorum). Nothing past the commit index is served: it could still be cut off.
    #[error(
        "size {size} of context {context_id:?} is not committed yet on this node (committed: {committed}); retry, or send x-ledger-min-sequence: {size} to wait for it"
    )]
    NotCommitted {
        context_id: String,
        size: u64,
        committed: u64,
    },
    /// Bad request metadata (`x-ledger-ack`, `x-ledger-min-sequence`).
    #[error("{0}")]
    InvalidMetadata(String),
    /// A storage or validation failure of the embedded ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl ClusterError {
    /// Nothing was stored: the request may be retried as is.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClusterError::NotWriter { .. }
                | ClusterError::Establishing { .. }
                | ClusterError::LeaseExpired { .. }
                | ClusterError::NoWriter { .. }
        )
    }
}

/// Why [`crate::cluster::Cluster::load_here`] failed: the cluster refused or lost the load, or
/// the load itself failed (`E`, the caller's error).
#[derive(Debug)]
pub enum LoadFailure<E> {
    Cluster(ClusterError),
    Load(E),
}

/// A peer's request this node refuses; the internal service answers with the status named.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PeerRequestError {
    /// The peer sent something malformed (`INVALID_ARGUMENT`).
    #[error("{0}")]
    Malformed(String),
    /// This node cannot answer now, e.g. its storage failed a read (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// This node failed to build its answer (`INTERNAL`).
    #[error("{0}")]
    Internal(String),
    /// The peer's stream failed before its first message: its own status, passed on.
    #[error("{0}")]
    Stream(tonic::Status),
}
