//! Loads in a cluster: a snapshot is loaded by the context's writer and replicated like
//! appends.
//!
//! Any node accepts a `Load` or `LoadStream`. A node that does not write the context forwards
//! it to the writer (`route = forward`, with the caller's token) or refuses it with
//! FAILED_PRECONDITION and `x-ledger-writer` (`route = redirect`). On the writer:
//!
//! 1. the context's task is asked to begin ([`ActorMsg::LoadBegin`]): it answers with its
//!    epoch if it is the active writer (retried for up to [`APPEND_RETRY`] while the epoch is
//!    being established) and refuses appends to the context until the load ends;
//! 2. the embedded ledger loads the snapshot exactly as on a single node: verified, all or
//!    nothing, durable;
//! 3. the task is told it ended ([`ActorMsg::LoadEnd`], also when the load failed or its
//!    caller went away: a guard sends it): the writer takes the loaded entries as its next
//!    entries, ships them to its followers like appends (who verify them again), and the load
//!    is answered once they are acknowledged at the request's level (`x-ledger-ack`).

use super::Cluster;
use super::actor::{ActorMsg, Loaded};
use super::error::ClusterError;
use super::route::{ACK_HEADER, APPEND_RETRY, FORWARDED_HEADER, ack_name, ack_of, is_forwarded};
use crate::config::RouteSetting;
use crate::status::{cluster_status, to_status};
use ledger_embedded::LoadOutcome;
use ledger_proto::context::v1 as pb;
use ledger_proto::context::v1::context_service_client::ContextServiceClient;
use ledger_replication::AckLevel;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Status};

const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Where a load of a context runs.
#[derive(Debug)]
pub enum LoadAt {
    /// Here, the context's writer, acknowledged at this level.
    Here(AckLevel),
    /// On the writer, over this channel.
    Writer(Channel),
}

/// Tells the context's task that a load ended without storing anything, unless disarmed:
/// a load whose caller went away must not keep the context's appends refused.
struct EndGuard {
    tx: mpsc::Sender<ActorMsg>,
    armed: bool,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if self.armed {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(ActorMsg::LoadEnd { loaded: None }).await;
            });
        }
    }
}

impl Cluster {
    /// Where a load of `context_id` runs (see the module docs).
    pub fn load_at(&self, context_id: &str, meta: &MetadataMap) -> Result<LoadAt, Status> {
        let level = ack_of(self, meta).map_err(cluster_status)?;
        let me = self.me.node.as_str();
        let Some((writer, addr)) = self.writer_of(context_id) else {
            return Err(cluster_status(ClusterError::NoWriter {
                context_id: context_id.to_owned(),
                why: "no live member in its replica set".into(),
            }));
        };
        if writer == me {
            return Ok(LoadAt::Here(level));
        }
        if is_forwarded(meta) {
            return Err(cluster_status(ClusterError::NotWriter {
                node: me.to_owned(),
                context_id: context_id.to_owned(),
                writer,
            }));
        }
        if self.settings.route == RouteSetting::Redirect {
            return Err(cluster_status(ClusterError::Redirect {
                node: me.to_owned(),
                context_id: context_id.to_owned(),
                writer,
                writer_addr: addr,
            }));
        }
        self.links
            .channel(&addr)
            .map(LoadAt::Writer)
            .map_err(Status::unavailable)
    }

    /// Marks a load forwarded to the writer: the writer serves it, at the caller's level.
    pub fn forwarded_load<T>(&self, mut request: Request<T>, level: AckLevel) -> Request<T> {
        request
            .metadata_mut()
            .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
        request
            .metadata_mut()
            .insert(ACK_HEADER, MetadataValue::from_static(ack_name(level)));
        request
    }

    /// Runs `load` (the embedded ledger's load of a snapshot of `context_id`) on this node,
    /// the writer, between the context task's `LoadBegin` and `LoadEnd`, and waits until the
    /// loaded entries are acknowledged at `level`.
    pub async fn load_here<F>(
        self: &Arc<Self>,
        context_id: &str,
        level: AckLevel,
        load: F,
    ) -> Result<LoadOutcome, Status>
    where
        F: Future<Output = Result<LoadOutcome, Status>>,
    {
        let gone = || {
            cluster_status(ClusterError::NotWriter {
                node: self.me.node.to_string(),
                context_id: context_id.to_owned(),
                writer: "unknown (the node is shutting down)".into(),
            })
        };
        let deadline = Instant::now() + APPEND_RETRY;
        let (tx, epoch) = loop {
            // The task that answers with an epoch keeps running until LoadEnd (it is not idle
            // while a load runs), so LoadEnd goes to the same mailbox.
            let tx = self.actor(context_id);
            let (reply, rx) = oneshot::channel();
            if tx.send(ActorMsg::LoadBegin { reply }).await.is_err() {
                if self.stopping() {
                    return Err(gone());
                }
                continue; // it stopped (idle) meanwhile: start it again
            }
            match rx.await.map_err(|_| gone())? {
                Ok(epoch) => break (tx, epoch),
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(cluster_status(e)),
            }
        };
        let mut guard = EndGuard {
            tx: tx.clone(),
            armed: true,
        };
        let outcome = load.await?;
        guard.armed = false;
        let (reply, rx) = oneshot::channel();
        tx.send(ActorMsg::LoadEnd {
            loaded: Some(Loaded {
                epoch,
                outcome,
                ack: level,
                reply,
            }),
        })
        .await
        .map_err(|_| gone())?;
        match rx.await {
            Ok(r) => r.map_err(cluster_status),
            Err(_) => Err(cluster_status(ClusterError::OutcomeUnknown {
                context_id: context_id.to_owned(),
                reason: "the node is shutting down".into(),
            })),
        }
    }

    /// A unary `Load`, served wherever it should be (see the module docs).
    pub async fn load(
        self: &Arc<Self>,
        request: Request<pb::LoadRequest>,
    ) -> Result<pb::LoadResponse, Status> {
        let ctx = request.get_ref().context_id.clone();
        let level = match self.load_at(&ctx, request.metadata())? {
            LoadAt::Here(level) => level,
            LoadAt::Writer(ch) => {
                let level = ack_of(self, request.metadata()).map_err(cluster_status)?;
                let forwarded = self.forwarded_load(crate::service::onward(request), level);
                return ContextServiceClient::new(ch)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX)
                    .load(forwarded)
                    .await
                    .map(tonic::Response::into_inner);
            }
        };
        let r = request.into_inner();
        let ledger = self.ledger.clone();
        let outcome = self
            .load_here(&ctx, level, async move {
                ledger
                    .load(&r.context_id, r.snapshot, r.fail_if_exists)
                    .await
                    .map_err(to_status)
            })
            .await?;
        Ok(pb::LoadResponse {
            entries_restored: outcome.entries_restored,
            latest_sequence: outcome.latest_sequence,
        })
    }
}
