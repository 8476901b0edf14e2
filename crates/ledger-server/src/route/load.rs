//! Loads in a cluster: a snapshot is loaded by the context's writer and replicated like
//! appends.
//!
//! Any node accepts a `Load` or `LoadStream`. A node that does not write the context forwards
//! it to the writer (`route = forward`, with the caller's token) or refuses it with
//! FAILED_PRECONDITION and `x-ledger-writer` (`route = redirect`). On the writer the load runs
//! between the context task's `LoadBegin` and `LoadEnd` ([`ledger_cluster::Cluster::load_here`],
//! begun within [`APPEND_RETRY`] while the epoch is being established), and is answered once
//! the loaded entries are acknowledged at the request's level (`x-ledger-ack`).

use super::router::{
    APPEND_RETRY, Router, ack_of, context_client, is_forwarded, onward, refuse_reserved, to_writer,
};
use crate::config::schema::RouteSetting;
use crate::error_status::{cluster_status, load_status, to_status};
use ledger_cluster::ClusterError;
use ledger_embedded::LoadOutcome;
use ledger_proto::context::v1 as pb;
use ledger_replication::AckLevel;
use std::future::Future;
use std::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Where a load of a context runs.
#[derive(Debug)]
pub enum LoadAt {
    /// Here, the context's writer, acknowledged at this level.
    Here(AckLevel),
    /// On the writer, over this channel.
    Writer(Channel),
}

impl Router {
    /// Where a load of `context_id` runs (see the module docs).
    pub fn load_at(&self, context_id: &str, meta: &MetadataMap) -> Result<LoadAt, Status> {
        refuse_reserved(context_id)?;
        let level = ack_of(&self.cluster, meta).map_err(cluster_status)?;
        let me = self.cluster.me.node.as_str();
        let Some((writer, addr)) = self.cluster.writer_of(context_id) else {
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
        if self.route == RouteSetting::Redirect {
            return Err(cluster_status(ClusterError::Redirect {
                node: me.to_owned(),
                context_id: context_id.to_owned(),
                writer,
                writer_addr: addr,
            }));
        }
        self.channel(&addr).map(LoadAt::Writer)
    }

    /// Runs `load` (the embedded ledger's load of a snapshot of `context_id`) on this node,
    /// the writer, and waits until the loaded entries are acknowledged at `level`. The load
    /// runs to its end even if this request goes away meanwhile (its deadline, its client
    /// gone), so the context's task always learns what it stored.
    pub async fn load_here<F>(
        &self,
        context_id: &str,
        level: AckLevel,
        load: F,
    ) -> Result<LoadOutcome, Status>
    where
        F: Future<Output = Result<LoadOutcome, Status>> + Send + 'static,
    {
        let deadline = Instant::now() + APPEND_RETRY;
        self.cluster
            .load_here(context_id, level, deadline, load)
            .await
            .map_err(load_status)
    }

    /// A unary `Load`, served wherever it should be (see the module docs).
    pub async fn load(
        &self,
        request: Request<pb::LoadRequest>,
    ) -> Result<pb::LoadResponse, Status> {
        let ctx = request.get_ref().context_id.clone();
        let level = match self.load_at(&ctx, request.metadata())? {
            LoadAt::Here(level) => level,
            LoadAt::Writer(ch) => {
                let level = ack_of(&self.cluster, request.metadata()).map_err(cluster_status)?;
                let forwarded = to_writer(onward(request), level);
                return context_client(ch)
                    .load(forwarded)
                    .await
                    .map(tonic::Response::into_inner);
            }
        };
        let r = request.into_inner();
        let ledger = self.cluster.ledger.clone();
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
