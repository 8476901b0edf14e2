//! The embedded ledger's error type. The gRPC layer maps it to status codes in one place.

use ledger_core::merkle::ProofError;
use ledger_core::snapshot::SnapshotError;
use ledger_core::validate::ValidationError;
use ledger_storage::StorageError;
use thiserror::Error;

/// Everything an embedded ledger call can fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The request's input breaks a documented limit.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// An argument is outside what the request allows (named in the message).
    #[error("{0}")]
    InvalidArgument(String),
    /// A sequence or tree size beyond the context's current size.
    #[error("{0}")]
    OutOfRange(String),
    #[error("context {context_id:?} has no entries")]
    NotFound { context_id: String },
    #[error("context {context_id:?} already has {size} entries and fail_if_exists was set")]
    AlreadyExists { context_id: String, size: u64 },
    #[error(
        "snapshot diverges from the history of context {context_id:?} at sequence {sequence}: the stored entry differs"
    )]
    Diverged { context_id: String, sequence: u64 },
    #[error("invalid snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("storage failure: {0}")]
    Storage(#[from] StorageError),
    /// Storage failed while writing this request's batch; nothing of it was acknowledged.
    #[error("storage failure while writing: {0}; the ledger stops accepting writes")]
    StorageFailed(String),
    /// A storage failure happened earlier; the ledger no longer accepts writes.
    #[error(
        "writes are stopped after a storage failure ({reason}); restart the node once storage is healthy"
    )]
    WritesStopped { reason: String },
    #[error("the ledger is shutting down")]
    ShuttingDown,
}

impl From<ProofError> for LedgerError {
    fn from(e: ProofError) -> Self {
        match e {
            ProofError::IndexOutOfRange { .. } | ProofError::SizesOutOfOrder { .. } => {
                LedgerError::OutOfRange(e.to_string())
            }
            other => LedgerError::InvalidArgument(other.to_string()),
        }
    }
}
