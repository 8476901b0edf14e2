//! The one mapping from domain errors to gRPC status codes. Handlers never build a `Status`
//! from an error any other way.

use ledger_embedded::{ErrorKind, LedgerError};
use tonic::{Code, Status};

/// The gRPC code of each kind of failure. Exhaustive: a new kind does not compile until it is
/// mapped here.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Aborted => Code::Aborted,
    }
}

/// The status a [`LedgerError`] is reported with; the message is the error's own, which names
/// the field, limit, sequence or setting involved.
pub fn to_status(e: LedgerError) -> Status {
    let code = code_of(e.kind());
    if code == Code::Internal {
        tracing::error!(error = %e, "request failed with an internal error");
    }
    Status::new(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::snapshot::SnapshotError;
    use ledger_core::validate::ValidationError;

    #[test]
    fn codes_follow_the_contract() {
        let cases: Vec<(LedgerError, Code)> = vec![
            (
                ValidationError::Empty {
                    field: "key",
                    max: 128,
                }
                .into(),
                Code::InvalidArgument,
            ),
            (
                ValidationError::PayloadTooLarge { len: 5, max: 4 }.into(),
                Code::ResourceExhausted,
            ),
            (
                LedgerError::NotFound {
                    context_id: "c".into(),
                },
                Code::NotFound,
            ),
            (
                LedgerError::AlreadyExists {
                    context_id: "c".into(),
                    size: 1,
                },
                Code::AlreadyExists,
            ),
            (
                LedgerError::Diverged {
                    context_id: "c".into(),
                    sequence: 3,
                },
                Code::FailedPrecondition,
            ),
            (
                SnapshotError::UnsupportedVersion(9).into(),
                Code::InvalidArgument,
            ),
            (
                SnapshotError::ChecksumMismatch.into(),
                Code::InvalidArgument,
            ),
            (LedgerError::OutOfRange("x".into()), Code::OutOfRange),
            (LedgerError::StorageFailed("disk".into()), Code::Internal),
            (LedgerError::ShuttingDown, Code::Unavailable),
            (
                LedgerError::WatchEnded { resume_from: 7 },
                Code::Unavailable,
            ),
            (
                LedgerError::LoadInProgress {
                    context_id: "c".into(),
                },
                Code::Unavailable,
            ),
            (
                LedgerError::IdempotencyConflict {
                    context_id: "c".into(),
                    key: "k".into(),
                    sequence: 4,
                },
                Code::AlreadyExists,
            ),
            (
                LedgerError::SnapshotTooLarge {
                    context_id: "c".into(),
                    limit: 10,
                },
                Code::OutOfRange,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(to_status(e).code(), code);
        }
        let s = to_status(SnapshotError::UnsupportedVersion(9).into());
        assert!(
            s.message().contains("unsupported snapshot version 9"),
            "{}",
            s.message()
        );
        let s = to_status(LedgerError::Diverged {
            context_id: "c".into(),
            sequence: 3,
        });
        assert!(s.message().contains("sequence 3"));
        let s = to_status(LedgerError::WatchEnded { resume_from: 7 });
        assert!(s.message().contains("from_sequence 7"), "{}", s.message());
    }
}
