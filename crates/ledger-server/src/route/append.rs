//! Appends and batch appends in a cluster: served here when this node writes the context,
//! else forwarded to the writer (`route = forward`) or refused with its address (`route =
//! redirect`); refusals after which nothing was stored are retried for up to
//! [`APPEND_RETRY`].

use super::router::{
    ACK_HEADER, APPEND_RETRY, RETRY_PAUSE, Router, ack_name, ack_of, context_client, is_forwarded,
    refuse_reserved, to_writer,
};
use crate::auth::policy::{authorization_of, pass_on};
use crate::config::schema::RouteSetting;
use crate::error_status::{NOT_STORED_HEADER, cluster_status, shutting_down};
use futures::future::BoxFuture;
use ledger_cluster::ClusterError;
use ledger_proto::context::v1 as pb;
use ledger_proto::context::v1::context_service_client::ContextServiceClient;
use ledger_proto::convert::{
    append_request_from_pb, batch_request_from_pb, batch_response_to_pb, entry_to_pb,
};
use ledger_replication::AckLevel;
use std::time::{Duration, Instant};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Status};

impl Router {
    /// An append, served wherever it should be (see the module docs of [`crate::route`]).
    pub async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<pb::AppendResponse, Status> {
        refuse_reserved(&request.get_ref().context_id)?;
        let level = ack_of(&self.cluster, request.metadata()).map_err(cluster_status)?;
        let forwarded = is_forwarded(request.metadata());
        // The writer authenticates the caller again: its token goes along.
        let auth = authorization_of(request.metadata());
        let msg = request.into_inner();
        let deadline = Instant::now() + APPEND_RETRY;
        retry_until(deadline, &msg.context_id, "append", || {
            self.append_once(&msg, level, forwarded, deadline, auth.as_ref())
        })
        .await
    }

    async fn append_once(
        &self,
        msg: &pb::AppendRequest,
        level: AckLevel,
        forwarded: bool,
        deadline: Instant,
        auth: Option<&AsciiMetadataValue>,
    ) -> Result<pb::AppendResponse, Attempt> {
        let ctx = &msg.context_id;
        let (writer, addr) = self.writer_for(ctx)?;
        if writer == self.cluster.me.node.as_str() {
            let entry = append_request_from_pb(msg.clone());
            let e = self
                .cluster
                .append_here(entry, level)
                .await
                .map_err(Attempt::from)?;
            return Ok(pb::AppendResponse {
                entry: Some(entry_to_pb(&e)),
            });
        }
        let mut client = self.onward_to(ctx, forwarded, writer, addr)?;
        let req = onward_request(msg.clone(), auth, level, deadline);
        let retry_safe = msg.idempotency_key.is_some();
        answered(ctx, retry_safe, client.append(req).await)
    }

    /// The checks before this node, not the writer, passes a write on: a forwarded write is
    /// not forwarded again (the two views disagree for a gossip round; nothing was stored),
    /// and with `route = redirect` the caller is told the writer's address instead. Else a
    /// client of the writer.
    fn onward_to(
        &self,
        ctx: &str,
        forwarded: bool,
        writer: String,
        addr: String,
    ) -> Result<ContextServiceClient<Channel>, Attempt> {
        let me = self.cluster.me.node.as_str();
        if forwarded {
            return Err(Attempt::from(ClusterError::NotWriter {
                node: me.to_owned(),
                context_id: ctx.to_owned(),
                writer,
            }));
        }
        if self.route == RouteSetting::Redirect {
            return Err(Attempt::Final(cluster_status(ClusterError::Redirect {
                node: me.to_owned(),
                context_id: ctx.to_owned(),
                writer,
                writer_addr: addr,
            })));
        }
        self.channel(&addr)
            .map(context_client)
            .map_err(Attempt::Retry)
    }

    /// The writer of `ctx` (id and address), or why there is none.
    fn writer_for(&self, ctx: &str) -> Result<(String, String), Attempt> {
        self.cluster.writer_of(ctx).ok_or_else(|| {
            Attempt::from(ClusterError::NoWriter {
                context_id: ctx.to_owned(),
                why: "no live member in its replica set".into(),
            })
        })
    }

    /// A batch append, served like an append: on the writer it enters the context's task as
    /// one message (sequenced in one step, shipped, answered once its last entry is
    /// acknowledged at the request's level); elsewhere it is forwarded (or redirected), and
    /// refusals that stored nothing are retried for up to [`APPEND_RETRY`].
    pub async fn append_batch(
        &self,
        request: Request<pb::AppendBatchRequest>,
    ) -> Result<pb::AppendBatchResponse, Status> {
        refuse_reserved(&request.get_ref().context_id)?;
        let level = ack_of(&self.cluster, request.metadata()).map_err(cluster_status)?;
        let forwarded = is_forwarded(request.metadata());
        let auth = authorization_of(request.metadata());
        let msg = request.into_inner();
        let deadline = Instant::now() + APPEND_RETRY;
        retry_until(deadline, &msg.context_id, "batch", || {
            self.append_batch_once(&msg, level, forwarded, deadline, auth.as_ref())
        })
        .await
    }

    async fn append_batch_once(
        &self,
        msg: &pb::AppendBatchRequest,
        level: AckLevel,
        forwarded: bool,
        deadline: Instant,
        auth: Option<&AsciiMetadataValue>,
    ) -> Result<pb::AppendBatchResponse, Attempt> {
        let ctx = &msg.context_id;
        let (writer, addr) = self.writer_for(ctx)?;
        if writer == self.cluster.me.node.as_str() {
            let (context_id, items) = batch_request_from_pb(msg.clone());
            // Checked here, before the context's task: a bad batch costs it nothing.
            ledger_core::validate::validate_batch(
                &context_id,
                &items,
                &self.cluster.ledger.config().limits,
            )
            .map_err(|e| Attempt::from(ClusterError::Ledger(e.into())))?;
            let entries = self
                .cluster
                .append_batch_here(&context_id, items, level)
                .await
                .map_err(Attempt::from)?;
            return Ok(batch_response_to_pb(entries.iter().map(|e| &**e)));
        }
        let mut client = self.onward_to(ctx, forwarded, writer, addr)?;
        let req = onward_request(msg.clone(), auth, level, deadline);
        // A batch carries no idempotency key: a broken connection leaves its outcome unknown.
        answered(ctx, false, client.append_batch(req).await)
    }

    /// Queues one append of a pipelined stream. On the writer it enters the context's mailbox
    /// before this returns, so a stream's appends keep their order while their
    /// acknowledgements are awaited concurrently (no retries here: a retry could reorder).
    /// Elsewhere it is forwarded and awaited before this returns (in order, one at a time).
    /// `auth` is the caller's `authorization`, passed on when the append is forwarded.
    pub async fn submit(
        &self,
        msg: pb::AppendRequest,
        level: AckLevel,
        auth: Option<&AsciiMetadataValue>,
    ) -> BoxFuture<'static, Result<pb::AppendResponse, Status>> {
        if let Err(s) = refuse_reserved(&msg.context_id) {
            return Box::pin(futures::future::ready(Err(s)));
        }
        if !self.cluster.writes(&msg.context_id) {
            let mut req = pass_on(auth, Request::new(msg));
            req.metadata_mut()
                .insert(ACK_HEADER, MetadataValue::from_static(ack_name(level)));
            let r = self.append(req).await;
            return Box::pin(futures::future::ready(r));
        }
        let context_id = msg.context_id.clone();
        let entry = append_request_from_pb(msg);
        let Ok(rx) = self.cluster.queue_append(entry, level).await else {
            return Box::pin(futures::future::ready(Err(shutting_down())));
        };
        Box::pin(async move {
            match rx.await {
                Ok(Ok(e)) => Ok(pb::AppendResponse {
                    entry: Some(entry_to_pb(&e)),
                }),
                Ok(Err(e)) => Err(cluster_status(e)),
                Err(_) => Err(cluster_status(ClusterError::OutcomeUnknown {
                    context_id,
                    reason: "the node is shutting down".into(),
                })),
            }
        })
    }
}

/// One attempt's failure: worth retrying (nothing stored) or final.
enum Attempt {
    Retry(Status),
    Final(Status),
}

impl From<ClusterError> for Attempt {
    fn from(e: ClusterError) -> Self {
        if e.is_retryable() {
            Attempt::Retry(cluster_status(e))
        } else {
            Attempt::Final(cluster_status(e))
        }
    }
}

/// The request never reached the writer: the connection could not be made, or hyper
/// dropped the request before dispatching it (the connection had closed).
fn is_unsent(s: &Status) -> bool {
    use std::error::Error;
    let mut source = s.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            );
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_canceled() || h.is_closed())
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The status was made on this side of the connection (tonic's transport failed), not
/// answered by the writer: a status from the wire carries no source error.
fn is_transport_failure(s: &Status) -> bool {
    std::error::Error::source(s).is_some()
}

/// Runs `attempt` until it answers, fails for good, or `deadline` passes: a write refused
/// before anything was stored (no writer yet, an epoch being established, views disagreeing
/// for a gossip round) is tried again after a pause, so the caller rarely sees a failover.
async fn retry_until<T, F>(
    deadline: Instant,
    context_id: &str,
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T, Status>
where
    F: std::future::Future<Output = Result<T, Attempt>>,
{
    loop {
        match attempt().await {
            Err(Attempt::Retry(s)) if Instant::now() < deadline => {
                tracing::debug!(context_id, error = %s.message(), "{what} refused before storing; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(Attempt::Retry(s) | Attempt::Final(s)) => return Err(s),
            Ok(r) => return Ok(r),
        }
    }
}

/// A write passed on to the context's writer: marked forwarded (never forwarded twice), with
/// the caller's token, ack level and what is left of its deadline.
fn onward_request<T>(
    msg: T,
    auth: Option<&AsciiMetadataValue>,
    level: AckLevel,
    deadline: Instant,
) -> Request<T> {
    let mut req = to_writer(pass_on(auth, Request::new(msg)), level);
    req.set_timeout(deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5));
    req
}

/// The writer's answer to a passed-on write: refusals after which nothing was stored, and
/// failures to reach it, are worth retrying. A connection that broke after the request left
/// leaves its outcome unknown: retried when the append carries an idempotency key (the writer
/// answers a repeat with the entry first stored), else answered UNAVAILABLE saying so.
/// Anything else is the caller's answer.
fn answered<T>(
    context_id: &str,
    retry_safe: bool,
    r: Result<tonic::Response<T>, Status>,
) -> Result<T, Attempt> {
    match r {
        Ok(r) => Ok(r.into_inner()),
        Err(s) if s.metadata().contains_key(NOT_STORED_HEADER) => Err(Attempt::Retry(s)),
        Err(s) if is_unsent(&s) => Err(Attempt::Retry(s)),
        Err(s) if is_transport_failure(&s) && retry_safe => Err(Attempt::Retry(s)),
        Err(s) if is_transport_failure(&s) => Err(Attempt::Final(cluster_status(
            ClusterError::OutcomeUnknown {
                context_id: context_id.to_owned(),
                reason: format!("the connection to its writer broke ({})", s.message()),
            },
        ))),
        Err(s) => Err(Attempt::Final(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport_status() -> Status {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        Status::from_error(Box::new(io))
    }

    #[test]
    fn a_refusal_that_stored_nothing_is_retried() {
        let mut s = Status::unavailable("establishing");
        s.metadata_mut()
            .insert(NOT_STORED_HEADER, MetadataValue::from_static("1"));
        assert!(matches!(
            answered::<()>("c", false, Err(s)),
            Err(Attempt::Retry(_))
        ));
    }

    #[test]
    fn a_broken_connection_is_retried_only_with_an_idempotency_key() {
        assert!(matches!(
            answered::<()>("c", true, Err(transport_status())),
            Err(Attempt::Retry(_))
        ));
        let Err(Attempt::Final(s)) = answered::<()>("c", false, Err(transport_status())) else {
            panic!("a keyless append over a broken connection must be answered");
        };
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(
            s.message().contains("may or may not have been stored"),
            "{}",
            s.message()
        );
        assert!(s.metadata().get(NOT_STORED_HEADER).is_none());
    }

    #[test]
    fn a_refused_connection_is_retried() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(
            answered::<()>("c", false, Err(Status::from_error(Box::new(io)))),
            Err(Attempt::Retry(_))
        ));
    }

    #[test]
    fn the_writers_own_answer_is_final() {
        let s = Status::invalid_argument("bad key");
        let Err(Attempt::Final(s)) = answered::<()>("c", true, Err(s)) else {
            panic!("the writer's refusal must reach the caller");
        };
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
    }
}
