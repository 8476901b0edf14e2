//! The one mapping from domain errors to gRPC status codes. Handlers never build a `Status`
//! from an error any other way.

use crate::cluster::ClusterError;
use ledger_embedded::{ErrorKind, LedgerError};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Trailing metadata of a redirect: the writer's gRPC address.
pub const WRITER_HEADER: &str = "x-ledger-writer";
/// Trailing metadata of a cluster refusal after which nothing was stored: retrying is safe.
pub const NOT_STORED_HEADER: &str = "x-ledger-not-stored";

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

/// The status of a cluster failure. Refusals that stored nothing carry `x-ledger-not-stored`
/// (a forwarding node retries those); a redirect names the writer in `x-ledger-writer`.
pub fn cluster_status(e: ClusterError) -> Status {
    let retryable = e.is_retryable();
    let mut status = match e {
        ClusterError::Ledger(e) => return to_status(e),
        ClusterError::InvalidMetadata(m) => return Status::invalid_argument(m),
        ClusterError::NotCommitted { .. } => return Status::out_of_range(e.to_string()),
        ClusterError::Redirect {
            ref writer_addr, ..
        } => {
            let addr = MetadataValue::try_from(writer_addr.as_str()).ok();
            let mut s = Status::failed_precondition(e.to_string());
            if let Some(a) = addr {
                s.metadata_mut().insert(WRITER_HEADER, a);
            }
            s
        }
        ClusterError::NotWriter { .. }
        | ClusterError::Establishing { .. }
        | ClusterError::LeaseExpired { .. }
        | ClusterError::NoWriter { .. }
        | ClusterError::OutcomeUnknown { .. } => Status::unavailable(e.to_string()),
    };
    if retryable {
        status
            .metadata_mut()
            .insert(NOT_STORED_HEADER, MetadataValue::from_static("1"));
    }
    status
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

    #[test]
    fn cluster_codes_follow_the_contract() {
        let s = cluster_status(ClusterError::Redirect {
            node: "a".into(),
            context_id: "c".into(),
            writer: "b".into(),
            writer_addr: "127.0.0.2:50051".into(),
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            s.metadata().get(WRITER_HEADER).unwrap().to_str().unwrap(),
            "127.0.0.2:50051"
        );
        let s = cluster_status(ClusterError::Establishing {
            context_id: "c".into(),
        });
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.metadata().get(NOT_STORED_HEADER).is_some());
        let s = cluster_status(ClusterError::OutcomeUnknown {
            context_id: "c".into(),
            reason: "stepped down".into(),
        });
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.metadata().get(NOT_STORED_HEADER).is_none());
        let s = cluster_status(ClusterError::InvalidMetadata("x-ledger-ack".into()));
        assert_eq!(s.code(), Code::InvalidArgument);
    }
}
