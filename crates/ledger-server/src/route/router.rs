//! [`Router`]: the cluster as the public services see it. Request metadata (`x-ledger-ack`,
//! `x-ledger-min-sequence`, `x-ledger-forwarded`, `x-ledger-wait-ms`) and requests passed on
//! to another node with the caller's token. Where a read is served: [`super::read`].

use crate::auth::policy::{authorization_of, pass_on};
use crate::config::schema::RouteSetting;
use crate::error_status::{cluster_status, no_channel};
use ledger_cluster::{Cluster, ClusterError};
use ledger_proto::context::v1::context_service_client::ContextServiceClient;
use ledger_replication::AckLevel;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Request metadata: the acknowledgement level of an append.
pub const ACK_HEADER: &str = "x-ledger-ack";
/// Request metadata: serve a read only once this sequence is held.
pub const MIN_SEQUENCE_HEADER: &str = "x-ledger-min-sequence";
/// Request metadata set on requests one node forwards to another.
pub const FORWARDED_HEADER: &str = "x-ledger-forwarded";
/// Request metadata of a read one node forwards to another with `x-ledger-min-sequence`:
/// how many milliseconds the other node may still wait for it.
pub const WAIT_HEADER: &str = "x-ledger-wait-ms";

/// How long an append keeps being retried while nothing was stored (failover, epochs).
pub const APPEND_RETRY: Duration = Duration::from_secs(6);
/// Pause between two attempts of a write refused before anything was stored.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// The cluster runtime, and what this node does with writes another node should serve
/// (`route`: forward or redirect).
#[derive(Clone, Debug)]
pub struct Router {
    pub cluster: Arc<Cluster>,
    pub route: RouteSetting,
}

/// Parses the `x-ledger-ack` request metadata value.
/// Writes and loads of the cluster's own contexts (`__ledger/…`) are refused.
pub fn refuse_reserved(context_id: &str) -> Result<(), Status> {
    if ledger_cluster::views::is_reserved(context_id) {
        return Err(cluster_status(ClusterError::Reserved {
            context_id: context_id.to_owned(),
        }));
    }
    Ok(())
}

pub fn parse_ack(value: &str) -> Result<AckLevel, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "writer" => Ok(AckLevel::Writer),
        "quorum" => Ok(AckLevel::Quorum),
        "all" => Ok(AckLevel::All),
        other => Err(format!(
            "x-ledger-ack {other:?} is not an acknowledgement level: use writer, quorum or all"
        )),
    }
}

/// The request's `x-ledger-ack`, or the node's default.
pub fn ack_of(cluster: &Cluster, meta: &MetadataMap) -> Result<AckLevel, ClusterError> {
    match meta.get(ACK_HEADER) {
        None => Ok(cluster.settings.ack),
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                ClusterError::InvalidMetadata("x-ledger-ack must be ASCII text".into())
            })?;
            parse_ack(text).map_err(ClusterError::InvalidMetadata)
        }
    }
}

pub(crate) fn is_forwarded(meta: &MetadataMap) -> bool {
    meta.contains_key(FORWARDED_HEADER)
}

pub(crate) fn ack_name(level: AckLevel) -> &'static str {
    match level {
        AckLevel::Writer => "writer",
        AckLevel::Quorum => "quorum",
        AckLevel::All => "all",
    }
}

/// Adds `x-ledger-forwarded` to a request forwarded to another node.
pub fn forwarded<T>(mut request: Request<T>) -> Request<T> {
    request
        .metadata_mut()
        .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
    request
}

/// A write passed on to the context's writer: marked forwarded (the writer serves it, never
/// forwards it again), at the caller's acknowledgement level.
pub fn to_writer<T>(request: Request<T>, level: AckLevel) -> Request<T> {
    let mut request = forwarded(request);
    request
        .metadata_mut()
        .insert(ACK_HEADER, MetadataValue::from_static(ack_name(level)));
    request
}

/// A read forwarded to another node: the message, with the caller's token (the other node
/// authenticates the caller again).
pub fn onward<T>(request: Request<T>) -> Request<T> {
    let auth = authorization_of(request.metadata());
    pass_on(auth.as_ref(), Request::new(request.into_inner()))
}

/// A client of another node's ContextService (for a forwarded request).
pub fn context_client(ch: Channel) -> ContextServiceClient<Channel> {
    ContextServiceClient::new(ch)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

impl Router {
    /// The channel to another node's public services (for forwarding).
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel, Status> {
        self.cluster.channel(addr).map_err(no_channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_metadata_values() {
        assert_eq!(parse_ack("writer"), Ok(AckLevel::Writer));
        assert_eq!(parse_ack(" Quorum"), Ok(AckLevel::Quorum));
        assert_eq!(parse_ack("all"), Ok(AckLevel::All));
        assert!(
            parse_ack("most")
                .unwrap_err()
                .contains("writer, quorum or all")
        );
    }
}
