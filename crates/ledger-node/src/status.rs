//! The one mapping from domain errors to gRPC status codes. Handlers never build a `Status`
//! from an error any other way.

use ledger_core::snapshot::SnapshotError;
use ledger_embedded::LedgerError;
use tonic::{Code, Status};

/// The status a [`LedgerError`] is reported with; the message is the error's own, which names
/// the field, limit, sequence or setting involved.
pub fn to_status(e: LedgerError) -> Status {
    let code = match &e {
        LedgerError::Invalid(v) if v.is_resource_exhausted() => Code::ResourceExhausted,
        LedgerError::Invalid(_) | LedgerError::InvalidArgument(_) => Code::InvalidArgument,
        LedgerError::OutOfRange(_) => Code::OutOfRange,
        LedgerError::NotFound { .. } => Code::NotFound,
        LedgerError::AlreadyExists { .. } => Code::AlreadyExists,
        LedgerError::Diverged { .. } => Code::FailedPrecondition,
        LedgerError::Snapshot(SnapshotError::UnsupportedVersion(_)) => Code::InvalidArgument,
        LedgerError::Snapshot(_) => Code::InvalidArgument,
        LedgerError::Storage(_) | LedgerError::StorageFailed(_) => Code::Internal,
        LedgerError::WritesStopped { .. } | LedgerError::ShuttingDown => Code::Unavailable,
        _ => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %e, "request failed with an internal error");
    }
    Status::new(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
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
    }
}
