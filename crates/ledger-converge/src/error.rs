//! The crate's one error enum, and its mapping to converge-core's store errors (in one place).

use converge_core::ExperienceStoreError;
use converge_core::traits::StoreError;
use thiserror::Error;

/// What the ledger-backed stores can fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The ledger could not be reached, or did not answer within the retry budget.
    #[error("the ledger is unavailable for context {context:?}: {source}")]
    Unavailable {
        context: String,
        #[source]
        source: ledger_client::ClientError,
    },
    /// The ledger refused a request for good (input error, permission).
    #[error("the ledger refused a request for context {context:?}: {source}")]
    Refused {
        context: String,
        #[source]
        source: ledger_client::ClientError,
    },
    /// The ledger's own proofs do not verify what it served.
    #[error("context {context:?} does not verify against the ledger's signed tree head: {reason}")]
    LedgerVerification { context: String, reason: String },
    /// An entry this crate wrote cannot be read back (not JSON of the expected shape).
    #[error("context {context:?}, entry {sequence}: {reason}")]
    Decode {
        context: String,
        sequence: u64,
        reason: String,
    },
    /// converge-core refused the rebuilt context (its Merkle root, duplicate ids, payloads).
    #[error(
        "context {context:?}: converge-core refused the context rebuilt from the ledger: {reason}"
    )]
    Rehydration { context: String, reason: String },
    /// Some entries of a save could not be stored within the retry budget (a later save
    /// appends them: they are found missing by id).
    #[error("context {context:?}: {not_persisted} entries were not persisted: {first}")]
    Incomplete {
        context: String,
        not_persisted: u64,
        first: String,
    },
    /// A value could not be encoded for the ledger.
    #[error("cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    /// HITL: no pause recorded, a decision for another gate, or a replay that did not reach the
    /// recorded gate.
    #[error("HITL resume of scope {scope:?}: {reason}")]
    Hitl { scope: String, reason: String },
}

impl Error {
    /// An error of a client call on `context`: transient failures are `Unavailable`.
    pub(crate) fn client(context: &str, source: ledger_client::ClientError) -> Self {
        if ledger_client::retry::is_retryable(&source) {
            Error::Unavailable {
                context: context.to_owned(),
                source,
            }
        } else {
            Error::Refused {
                context: context.to_owned(),
                source,
            }
        }
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Unavailable { .. } | Error::Incomplete { .. } => {
                StoreError::Unavailable { message }
            }
            Error::Refused { .. } => StoreError::Internal { message },
            Error::Decode { .. } | Error::Encode { .. } => {
                StoreError::SerializationFailed { message }
            }
            Error::LedgerVerification { .. } | Error::Rehydration { .. } => {
                StoreError::InvariantViolation { message }
            }
            Error::Hitl { .. } => StoreError::InvalidQuery { message },
        }
    }
}

impl From<Error> for ExperienceStoreError {
    fn from(e: Error) -> Self {
        ExperienceStoreError::StorageError {
            message: e.to_string(),
        }
    }
}

/// `value` as JSON for a ledger payload; `what` names it in the error.
pub(crate) fn encode_json<T: serde::Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Encode {
        what,
        reason: e.to_string(),
    })
}
