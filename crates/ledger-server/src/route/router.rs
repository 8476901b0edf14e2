//! Serving the public API in a cluster: which node answers a request.
//!
//! - **Appends** (and batch appends) go to the context's writer (the first live member of its replica set, by
//!   the same placement function the Rust client uses). On the writer they enter the
//!   context's task; elsewhere they are forwarded (`route = forward`, the default) or refused
//!   with FAILED_PRECONDITION and the writer's address in `x-ledger-writer` (`route =
//!   redirect`). Refusals after which nothing was stored (no writer yet, the writer is
//!   establishing its epoch, views disagree for a moment) are retried for up to
//!   [`APPEND_RETRY`], so the engine rarely sees a failover.
//! - **Reads** are served locally by a replica (or a mirror) from what it durably holds; a
//!   node that holds no replica forwards them to the writer (or another live replica).
//!   `x-ledger-min-sequence: N` makes a replica wait up to [`MIN_SEQUENCE_WAIT`] until it holds
//!   N, then forward to the writer: read-your-writes through any node.
//!
//! A forwarded request carries `x-ledger-forwarded`, and is never forwarded again.

use super::Cluster;
use super::actor::ActorMsg;
use super::error::ClusterError;
use super::gate::ReadCap;
use crate::config::RouteSetting;
use crate::status::{NOT_STORED_HEADER, cluster_status};
use futures::future::BoxFuture;
use ledger_core::{Entry, NewEntry};
use ledger_proto::context::v1 as pb;
use ledger_proto::context::v1::context_service_client::ContextServiceClient;
use ledger_replication::{AckLevel, placement, placement_writer, replica_set};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Request metadata: the acknowledgement level of an append.
pub const ACK_HEADER: &str = "x-ledger-ack";
/// Request metadata: serve a read only once this sequence is held.
pub const MIN_SEQUENCE_HEADER: &str = "x-ledger-min-sequence";
/// Request metadata set on requests one node forwards to another.
pub const FORWARDED_HEADER: &str = "x-ledger-forwarded";

/// How long an append keeps being retried while nothing was stored (failover, epochs).
pub const APPEND_RETRY: Duration = Duration::from_secs(6);
/// How long a read waits for `x-ledger-min-sequence` before it goes to the writer.
pub const MIN_SEQUENCE_WAIT: Duration = Duration::from_secs(2);
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Where a read is served.
#[derive(Debug)]
pub enum ReadAt {
    /// Here, up to the context's commit index.
    Local(ReadCap),
    /// By another node.
    Remote(Channel),
}

/// Where a public read is served, for the services that also run without a cluster.
#[derive(Debug)]
pub enum Serve {
    /// Here; in a cluster only up to the context's commit index.
    Local(Option<ReadCap>),
    /// By another node, over this channel (send the request [`Cluster::forwarded`]).
    Remote(Arc<Cluster>, Channel),
}

impl Serve {
    /// Where a read of `context_id` is served: here without a cluster, else where
    /// [`Cluster::read_at`] says.
    pub async fn read(
        cluster: Option<&Arc<Cluster>>,
        context_id: &str,
        meta: &MetadataMap,
    ) -> Result<Serve, Status> {
        let Some(c) = cluster else {
            return Ok(Serve::Local(None));
        };
        Ok(match c.read_at(context_id, meta).await? {
            ReadAt::Local(cap) => Serve::Local(Some(cap)),
            ReadAt::Remote(ch) => Serve::Remote(Arc::clone(c), ch),
        })
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
            super::settings::parse_ack(text).map_err(ClusterError::InvalidMetadata)
        }
    }
}

fn min_sequence(meta: &MetadataMap) -> Result<u64, ClusterError> {
    match meta.get(MIN_SEQUENCE_HEADER) {
        None => Ok(0),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ClusterError::InvalidMetadata(
                    "x-ledger-min-sequence must be a sequence number (a decimal integer)".into(),
                )
            }),
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

impl Cluster {
    /// The context's writer as this node sees it: (id, gRPC address).
    pub fn writer_of(&self, context_id: &str) -> Option<(String, String)> {
        let view = self.view();
        let id = placement_writer(
            context_id,
            &view.members,
            self.settings.protocol.replication_factor,
        )?;
        let addr = view.addr_of(id.as_str())?.to_owned();
        Some((id.to_string(), addr))
    }

    /// The context's replica set as this node sees it (ids).
    pub fn replicas_of(&self, context_id: &str) -> Vec<String> {
        let view = self.view();
        replica_set(
            context_id,
            &view.members,
            self.settings.protocol.replication_factor,
        )
        .into_iter()
        .map(|n| n.to_string())
        .collect()
    }

    /// Whether this node holds `context_id`: it is in its replica set, or a mirror of it.
    fn holds(&self, context_id: &str) -> bool {
        if self.settings.role == ledger_discovery::Role::Mirror {
            return placement::mirror_matches(&self.settings.mirror_prefixes, context_id);
        }
        self.replicas_of(context_id)
            .iter()
            .any(|r| r.as_str() == self.me.node.as_str())
    }

    fn client(&self, addr: &str) -> Result<ContextServiceClient<Channel>, Status> {
        Ok(ContextServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// The channel to another node's public services (for forwarding).
    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        self.links.channel(addr).map_err(Status::unavailable)
    }

    /// An append, served wherever it should be (see the module docs).
    pub async fn append(
        self: &Arc<Self>,
        request: Request<pb::AppendRequest>,
    ) -> Result<pb::AppendResponse, Status> {
        let level = ack_of(self, request.metadata()).map_err(cluster_status)?;
        let forwarded = is_forwarded(request.metadata());
        // The writer authenticates the caller again: its token goes along.
        let auth = crate::auth::authorization_of(request.metadata());
        let msg = request.into_inner();
        let deadline = Instant::now() + APPEND_RETRY;
        retry_until(deadline, &msg.context_id, "append", || {
            self.append_once(&msg, level, forwarded, deadline, auth.as_ref())
        })
        .await
    }

    async fn append_once(
        self: &Arc<Self>,
        msg: &pb::AppendRequest,
        level: AckLevel,
        forwarded: bool,
        deadline: Instant,
        auth: Option<&tonic::metadata::AsciiMetadataValue>,
    ) -> Result<pb::AppendResponse, Attempt> {
        let ctx = &msg.context_id;
        let me = self.me.node.as_str();
        let (writer, addr) = self.writer_for(ctx)?;
        if writer == me {
            let entry = ledger_proto::convert::append_request_from_pb(msg.clone());
            let e = self
                .append_here(entry, level)
                .await
                .map_err(Attempt::from)?;
            return Ok(pb::AppendResponse {
                entry: Some(ledger_proto::convert::entry_to_pb(&e)),
            });
        }
        let mut client = self.onward_to(ctx, forwarded, writer, addr)?;
        let req = onward_request(msg.clone(), auth, level, deadline);
        answered(client.append(req).await)
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
        let me = self.me.node.as_str();
        if forwarded {
            return Err(Attempt::from(ClusterError::NotWriter {
                node: me.to_owned(),
                context_id: ctx.to_owned(),
                writer,
            }));
        }
        if self.settings.route == RouteSetting::Redirect {
            return Err(Attempt::Final(cluster_status(ClusterError::Redirect {
                node: me.to_owned(),
                context_id: ctx.to_owned(),
                writer,
                writer_addr: addr,
            })));
        }
        self.client(&addr).map_err(Attempt::Retry)
    }

    /// An append on this node, the context's writer.
    async fn append_here(
        self: &Arc<Self>,
        entry: NewEntry,
        level: AckLevel,
    ) -> Result<Arc<Entry>, ClusterError> {
        let context_id = entry.context_id.clone();
        self.ask_actor(&context_id, |reply| ActorMsg::Append {
            entry,
            ack: level,
            reply,
        })
        .await
    }

    /// The writer of `ctx` (id and address), or why there is none.
    fn writer_for(&self, ctx: &str) -> Result<(String, String), Attempt> {
        self.writer_of(ctx).ok_or_else(|| {
            Attempt::from(ClusterError::NoWriter {
                context_id: ctx.to_owned(),
                why: "no live member in its replica set".into(),
            })
        })
    }

    /// Sends the context's task the message `msg` builds around a reply channel and waits
    /// for the answer. A task that is gone (the node is shutting down) took nothing: not the
    /// writer; an answer that never comes leaves the outcome unknown.
    async fn ask_actor<T>(
        self: &Arc<Self>,
        context_id: &str,
        msg: impl FnOnce(oneshot::Sender<Result<T, ClusterError>>) -> ActorMsg,
    ) -> Result<T, ClusterError> {
        let (reply, rx) = oneshot::channel();
        self.to_actor(context_id, msg(reply))
            .await
            .map_err(|_| ClusterError::NotWriter {
                node: self.me.node.to_string(),
                context_id: context_id.to_owned(),
                writer: "unknown (the node is shutting down)".into(),
            })?;
        rx.await.unwrap_or_else(|_| {
            Err(ClusterError::OutcomeUnknown {
                context_id: context_id.to_owned(),
                reason: "the node is shutting down".into(),
            })
        })
    }

    /// A batch append, served like an append: on the writer it enters the context's task as
    /// one message (sequenced in one step, shipped, answered once its last entry is
    /// acknowledged at the request's level); elsewhere it is forwarded (or redirected), and
    /// refusals that stored nothing are retried for up to [`APPEND_RETRY`].
    pub async fn append_batch(
        self: &Arc<Self>,
        request: Request<pb::AppendBatchRequest>,
    ) -> Result<pb::AppendBatchResponse, Status> {
        let level = ack_of(self, request.metadata()).map_err(cluster_status)?;
        let forwarded = is_forwarded(request.metadata());
        let auth = crate::auth::authorization_of(request.metadata());
        let msg = request.into_inner();
        let deadline = Instant::now() + APPEND_RETRY;
        retry_until(deadline, &msg.context_id, "batch", || {
            self.append_batch_once(&msg, level, forwarded, deadline, auth.as_ref())
        })
        .await
    }

    async fn append_batch_once(
        self: &Arc<Self>,
        msg: &pb::AppendBatchRequest,
        level: AckLevel,
        forwarded: bool,
        deadline: Instant,
        auth: Option<&tonic::metadata::AsciiMetadataValue>,
    ) -> Result<pb::AppendBatchResponse, Attempt> {
        let ctx = &msg.context_id;
        let me = self.me.node.as_str();
        let (writer, addr) = self.writer_for(ctx)?;
        if writer == me {
            let (context_id, items) = ledger_proto::convert::batch_request_from_pb(msg.clone());
            // Checked here, before the context's task: a bad batch costs it nothing.
            ledger_core::validate::validate_batch(
                &context_id,
                &items,
                &self.ledger.config().limits,
            )
            .map_err(|e| Attempt::from(ClusterError::Ledger(e.into())))?;
            let entries = self
                .ask_actor(&context_id, |reply| ActorMsg::AppendBatch {
                    items,
                    ack: level,
                    reply,
                })
                .await
                .map_err(Attempt::from)?;
            return Ok(ledger_proto::convert::batch_response_to_pb(
                entries.iter().map(|e| &**e),
            ));
        }
        let mut client = self.onward_to(ctx, forwarded, writer, addr)?;
        let req = onward_request(msg.clone(), auth, level, deadline);
        answered(client.append_batch(req).await)
    }

    /// Queues one append of a pipelined stream. On the writer it enters the context's mailbox
    /// before this returns, so a stream's appends keep their order while their
    /// acknowledgements are awaited concurrently (no retries here: a retry could reorder).
    /// Elsewhere it is forwarded and awaited before this returns (in order, one at a time).
    /// `auth` is the caller's `authorization`, passed on when the append is forwarded.
    pub async fn submit(
        self: &Arc<Self>,
        msg: pb::AppendRequest,
        level: AckLevel,
        auth: Option<&tonic::metadata::AsciiMetadataValue>,
    ) -> BoxFuture<'static, Result<pb::AppendResponse, Status>> {
        let here = self
            .writer_of(&msg.context_id)
            .is_some_and(|(w, _)| w == self.me.node.as_str());
        if !here {
            let mut req = crate::auth::pass_on(auth, Request::new(msg));
            req.metadata_mut()
                .insert(ACK_HEADER, MetadataValue::from_static(ack_name(level)));
            let r = self.append(req).await;
            return Box::pin(futures::future::ready(r));
        }
        let (reply, rx) = oneshot::channel();
        let context_id = msg.context_id.clone();
        let entry = ledger_proto::convert::append_request_from_pb(msg);
        if self
            .to_actor(
                &context_id,
                ActorMsg::Append {
                    entry,
                    ack: level,
                    reply,
                },
            )
            .await
            .is_err()
        {
            return Box::pin(futures::future::ready(Err(Status::unavailable(
                "the node is shutting down",
            ))));
        }
        Box::pin(async move {
            match rx.await {
                Ok(Ok(e)) => Ok(pb::AppendResponse {
                    entry: Some(ledger_proto::convert::entry_to_pb(&e)),
                }),
                Ok(Err(e)) => Err(cluster_status(e)),
                Err(_) => Err(cluster_status(ClusterError::OutcomeUnknown {
                    context_id,
                    reason: "the node is shutting down".into(),
                })),
            }
        })
    }

    /// Where a read of `context_id` is served (see the module docs).
    pub async fn read_at(
        self: &Arc<Self>,
        context_id: &str,
        meta: &MetadataMap,
    ) -> Result<ReadAt, Status> {
        if is_forwarded(meta) {
            return Ok(ReadAt::Local(self.read_cap(context_id).await));
        }
        let min = min_sequence(meta).map_err(cluster_status)?;
        if self.holds(context_id) {
            let mut cap = self.read_cap(context_id).await;
            if min == 0 || cap.wait_for(min, MIN_SEQUENCE_WAIT).await {
                return Ok(ReadAt::Local(cap));
            }
            return match self.writer_of(context_id) {
                Some((w, addr)) if w != self.me.node.as_str() => {
                    Ok(ReadAt::Remote(self.channel(&addr)?))
                }
                _ => Ok(ReadAt::Local(cap)),
            };
        }
        let view = self.view();
        let target = self.writer_of(context_id).map(|(_, a)| a).or_else(|| {
            self.replicas_of(context_id).iter().find_map(|r| {
                view.peer(r)
                    .filter(|p| p.state.is_live())
                    .map(|p| p.addr.clone())
            })
        });
        match target {
            Some(addr) => Ok(ReadAt::Remote(self.channel(&addr)?)),
            None => Err(Status::unavailable(format!(
                "no live replica of context {context_id:?} to read from; retry when members return"
            ))),
        }
    }

    /// Adds `x-ledger-forwarded` to a read forwarded to another node.
    pub fn forwarded<T>(&self, mut request: Request<T>) -> Request<T> {
        request
            .metadata_mut()
            .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
        request
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

/// The forwarding connection could not be made: the request never left this node.
fn is_connect_failure(s: &Status) -> bool {
    use std::error::Error;
    let mut source = s.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            );
        }
        source = e.source();
    }
    false
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
    auth: Option<&tonic::metadata::AsciiMetadataValue>,
    level: AckLevel,
    deadline: Instant,
) -> Request<T> {
    let mut req = crate::auth::pass_on(auth, Request::new(msg));
    req.metadata_mut()
        .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
    req.metadata_mut()
        .insert(ACK_HEADER, MetadataValue::from_static(ack_name(level)));
    req.set_timeout(deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5));
    req
}

/// The writer's answer to a passed-on write: refusals after which nothing was stored, and
/// failures to reach it, are worth retrying; anything else is the caller's answer.
fn answered<T>(r: Result<tonic::Response<T>, Status>) -> Result<T, Attempt> {
    match r {
        Ok(r) => Ok(r.into_inner()),
        Err(s) if s.metadata().contains_key(NOT_STORED_HEADER) => Err(Attempt::Retry(s)),
        Err(s) if is_connect_failure(&s) => Err(Attempt::Retry(s)),
        Err(s) => Err(Attempt::Final(s)),
    }
}
