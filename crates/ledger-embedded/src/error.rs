//! The embedded ledger's error type, and its one classification into kinds of failure (which
//! the gRPC layer maps to status codes).

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
        "idempotency key {key:?} of context {context_id:?} was already used by the entry at \
         sequence {sequence}, which has a different key, payload or metadata; use a new \
         idempotency key for a different append"
    )]
    IdempotencyConflict {
        context_id: String,
        key: String,
        sequence: u64,
    },
    #[error(
        "snapshot diverges from the history of context {context_id:?} at sequence {sequence}: the stored entry differs"
    )]
    Diverged { context_id: String, sequence: u64 },
    #[error("invalid snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error(
        "the snapshot of context {context_id:?} is larger than {limit} bytes (max_message_bytes); \
         save it with the streaming SnapshotStream call (`converge-ledger snapshot` does)"
    )]
    SnapshotTooLarge { context_id: String, limit: usize },
    #[error(
        "a load into context {context_id:?} is in progress; appends and other loads to it are \
         refused until it finishes (retry then)"
    )]
    LoadInProgress { context_id: String },
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
    /// A watch stream ended because the ledger is shutting down.
    #[error("the node is shutting down; resume with from_sequence {resume_from}")]
    WatchEnded { resume_from: u64 },
    /// A watch stream ended because its context was cut back below the stream's position (a
    /// divergent suffix was quarantined): entries it delivered beyond `size` are no longer part
    /// of the context. Watching again from a sequence at or below `size` continues gaplessly.
    #[error(
        "context {context_id:?} was cut back to {size} entries (a divergent suffix was \
         quarantined) after this watch had passed that point; the entries it delivered beyond \
         {size} are no longer part of the context: resume watching from a sequence at or below \
         {size}"
    )]
    Truncated { context_id: String, size: u64 },
    /// [`crate::Ledger::quarantined_entries`] of a quarantine the context does not have.
    #[error("context {context_id:?} has no quarantine {id}")]
    NoSuchQuarantine { context_id: String, id: u64 },
}

/// What kind of failure an error is: the one classification every API layer maps from.
/// Exhaustive on purpose: a new kind must be mapped everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's input is wrong; retrying the same request fails the same way.
    InvalidArgument,
    /// The input is over a configured size limit.
    ResourceExhausted,
    /// A sequence or size beyond what exists.
    OutOfRange,
    NotFound,
    AlreadyExists,
    /// The request conflicts with what is stored (a diverging snapshot).
    FailedPrecondition,
    /// Temporarily not possible (shutting down, writes stopped, a load in progress): retry
    /// later or elsewhere.
    Unavailable,
    /// The node failed (storage); not the caller's fault.
    Internal,
    /// The request was overtaken by a change to what it was following (a watched context was
    /// cut back below the watch's position): start again from an earlier point.
    Aborted,
}

impl LedgerError {
    /// The kind of failure. Every variant is classified here and nowhere else.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LedgerError::Invalid(v) if v.is_resource_exhausted() => ErrorKind::ResourceExhausted,
            LedgerError::Invalid(_) | LedgerError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            LedgerError::Snapshot(_) => ErrorKind::InvalidArgument,
            LedgerError::OutOfRange(_) | LedgerError::SnapshotTooLarge { .. } => {
                ErrorKind::OutOfRange
            }
            LedgerError::NotFound { .. } | LedgerError::NoSuchQuarantine { .. } => {
                ErrorKind::NotFound
            }
            LedgerError::AlreadyExists { .. } | LedgerError::IdempotencyConflict { .. } => {
                ErrorKind::AlreadyExists
            }
            LedgerError::Diverged { .. } => ErrorKind::FailedPrecondition,
            LedgerError::Storage(_) | LedgerError::StorageFailed(_) => ErrorKind::Internal,
            LedgerError::WritesStopped { .. }
            | LedgerError::ShuttingDown
            | LedgerError::WatchEnded { .. }
            | LedgerError::LoadInProgress { .. } => ErrorKind::Unavailable,
            LedgerError::Truncated { .. } => ErrorKind::Aborted,
        }
    }
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
