//! The one mapping from domain errors to gRPC status codes. Handlers never build a `Status`
//! from an error any other way: a domain error goes through its map ([`to_status`],
//! [`cluster_status`], [`peer_status`], [`load_status`]); a refusal of the request itself
//! (a malformed argument, a limit, auth, shutdown) is one of the named constructors below,
//! so every message a client can see is written in this file.

use ledger_cluster::{ClusterError, LoadFailure, PeerRequestError};
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
        ClusterError::Reserved { .. } => return Status::invalid_argument(e.to_string()),
        ClusterError::NoLossToAccept { .. } => {
            return Status::failed_precondition(e.to_string());
        }
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
        ClusterError::QuorumUnavailable { .. } => {
            let mut s = Status::unavailable(e.to_string());
            s.metadata_mut()
                .insert(NOT_STORED_HEADER, MetadataValue::from_static("1"));
            return s;
        }
        ClusterError::NotWriter { .. }
        | ClusterError::Establishing { .. }
        | ClusterError::LeaseExpired { .. }
        | ClusterError::NoWriter { .. }
        | ClusterError::OutcomeUnknown { .. } => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    };
    if retryable {
        status
            .metadata_mut()
            .insert(NOT_STORED_HEADER, MetadataValue::from_static("1"));
    }
    status
}

/// The status of a peer's request this node refuses (the internal cluster service).
pub fn peer_status(e: PeerRequestError) -> Status {
    match e {
        PeerRequestError::Malformed(m) => Status::invalid_argument(m),
        PeerRequestError::Unavailable(m) => Status::unavailable(m),
        PeerRequestError::Internal(m) => Status::internal(m),
        PeerRequestError::Stream(s) => s,
        other => Status::internal(other.to_string()),
    }
}

/// The status of a load on the writer: the cluster's refusal, or the load's own failure.
pub fn load_status(e: LoadFailure<Status>) -> Status {
    match e {
        LoadFailure::Cluster(e) => cluster_status(e),
        LoadFailure::Load(s) => s,
    }
}

// Refusals of a request itself, by what refuses it.

/// The node is shutting down: nothing was done.
pub fn shutting_down() -> Status {
    Status::unavailable("the node is shutting down")
}

/// No channel to another node could be made (a bad address, TLS settings).
pub fn no_channel(why: String) -> Status {
    Status::unavailable(why)
}

/// A read of a context none of whose replicas is alive.
pub fn no_live_replica(context_id: &str) -> Status {
    Status::unavailable(format!(
        "no live replica of context {context_id:?} to read from; retry when members return"
    ))
}

/// A read with `x-ledger-min-sequence: min` that `node` could not serve within its wait:
/// it knows `held` entries of the context committed (`None`: it holds no replica of it),
/// `writer` says who writes the context, `unreached` the node the read was to go on to and
/// why it could not be reached. Nothing below `min` is ever served instead.
pub fn min_sequence_not_reached(
    min: u64,
    node: &str,
    context_id: &str,
    held: Option<u64>,
    writer: &str,
    unreached: Option<(&str, &str)>,
) -> Status {
    let held = match held {
        Some(n) => format!("holds {n} committed entries of context {context_id:?}"),
        None => format!("holds no replica of context {context_id:?}"),
    };
    let unreached = unreached.map_or_else(String::new, |(next, why)| {
        format!("; {next} could not be reached ({why})")
    });
    Status::unavailable(format!(
        "min-sequence {min} not reached: node {node} {held} (writer: {writer}){unreached}; nothing was served: retry, or read without x-ledger-min-sequence"
    ))
}

/// An argument that fails validation (a context id, …): its message says which and why.
pub fn invalid_argument(why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(why.to_string())
}

/// The node failed to build an answer it should have had.
pub fn internal(why: impl std::fmt::Display) -> Status {
    Status::internal(why.to_string())
}

/// A limit of the node's settings refused the request (`message` names the setting).
pub fn limit_exceeded(message: String) -> Status {
    Status::resource_exhausted(message)
}

/// One request more than `max_concurrent_streams` on a connection.
pub fn too_many_requests(max_per_connection: u32) -> Status {
    Status::resource_exhausted(format!(
        "this connection already has {max_per_connection} requests open (setting max_concurrent_streams); wait for some to finish or open another connection"
    ))
}

/// The caller's `grpc-timeout` passed.
pub fn deadline_exceeded() -> Status {
    Status::deadline_exceeded(
        "the request's deadline (grpc-timeout) passed before it finished; what was answered before stands",
    )
}

/// Auth: no usable token (`why` says what is wrong with the header).
pub fn unauthenticated(why: &str) -> Status {
    Status::unauthenticated(why.to_owned())
}

/// Auth: the token's role does not allow `what`.
pub fn role_denied(what: &str, need: &str, role: &str) -> Status {
    Status::permission_denied(format!(
        "permission denied (role): {what} needs a {need} token; this token's role is {role}"
    ))
}

/// Auth: the token is limited to contexts starting with `prefix`.
pub fn prefix_denied(role: &str, prefix: &str, context_id: &str) -> Status {
    Status::permission_denied(format!(
        "permission denied (prefix): this {role} token is limited to contexts starting with {prefix:?}; context {context_id:?} is outside it"
    ))
}

/// Auth: a node-to-node method called without a node certificate.
pub fn node_certificate_required(method: &str) -> Status {
    Status::permission_denied(format!(
        "permission denied (node certificate): {method} is node-to-node and needs a node certificate signed by tls_client_ca (a certificate for server use); client certificates and tokens are not enough"
    ))
}

/// A watch with signed tree heads and a key filter.
pub fn heads_need_every_entry() -> Status {
    Status::invalid_argument(
        "include_tree_heads needs every entry of the context: it cannot be combined with a key filter",
    )
}

/// A watch held back at the commit index whose context task is gone.
pub fn watch_shutting_down() -> Status {
    Status::unavailable("the node is shutting down; reconnect to resume")
}

/// An AppendStream at shutdown: it answered what it took and ends.
pub fn append_stream_draining() -> Status {
    Status::unavailable(
        "the node is shutting down; appends without a response may or may not be stored: \
         read the context's latest sequence, then append the rest on another stream",
    )
}

/// An AppendStreamRequest with neither an append nor a batch.
pub fn append_stream_empty_request() -> Status {
    Status::invalid_argument(
        "AppendStreamRequest has neither append nor batch: set one to the request to apply",
    )
}

/// An AppendStreamRequest with both an append and a batch.
pub fn append_stream_both_set() -> Status {
    Status::invalid_argument(
        "AppendStreamRequest has both append and batch: send them as two requests",
    )
}

/// A SnapshotStream asking for pieces above the limit.
pub fn chunk_too_large(chunk_bytes: usize, max: usize) -> Status {
    Status::invalid_argument(format!(
        "chunk_bytes {chunk_bytes} is above the limit of {max}"
    ))
}

/// A LoadStream that sent nothing for `idle_secs`.
pub fn load_stream_stalled(idle_secs: u64) -> Status {
    Status::deadline_exceeded(format!(
        "LoadStream sent nothing for {idle_secs} s; the load was abandoned and nothing of it stored"
    ))
}

/// A LoadStream without a first message.
pub fn load_stream_empty() -> Status {
    Status::invalid_argument("LoadStream got no message: the first must name the context_id")
}

/// A LoadStream message naming another context than the stream's.
pub fn load_stream_other_context(named: &str, loading: &str) -> Status {
    Status::invalid_argument(format!(
        "LoadStream message names context {named:?}, but the stream loads {loading:?}"
    ))
}

/// `cluster remove` of a node that is not a member.
pub fn not_a_member(node_id: &str) -> Status {
    Status::not_found(format!(
        "node {node_id:?} is not a member (see cluster status)"
    ))
}

/// `cluster remove` of a member that is alive or suspect.
pub fn member_is_live(node_id: &str, state: &str) -> Status {
    Status::failed_precondition(format!(
        "node {node_id:?} is {state}: only dead or left members can be removed; stop it first"
    ))
}

/// `cluster quarantine export` of a quarantine the context does not have.
pub fn no_such_quarantine(context_id: &str, id: u64) -> Status {
    Status::not_found(format!(
        "context {context_id:?} has no quarantine {id} (see cluster quarantine list)"
    ))
}

/// `cluster quarantine export` of a quarantine whose prefix the context no longer holds.
pub fn quarantine_prefix_gone(context_id: &str, held: usize, from_sequence: u64) -> Status {
    Status::failed_precondition(format!(
        "context {context_id:?} now holds {held} entries before the quarantined suffix, which starts at {from_sequence}: the prefix was not kept"
    ))
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
