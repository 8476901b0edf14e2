//! `converge.ledger.cluster.v1.ClusterService`: the nodes' internal service. It accepts peers'
//! `Replicate` streams and digest turns (carried out by the cluster runtime), answers context
//! states and the cluster status, and serves the operator's `cluster remove` and `cluster
//! quarantine` commands.

use crate::auth::policy::{authorization_of, pass_on, require_role};
use crate::auth::tokens::TokenRole;
use crate::error_status::{
    cluster_status, internal, invalid_argument, member_is_live, no_such_quarantine, not_a_member,
    peer_status, quarantine_prefix_gone, to_status,
};
use crate::route::router::{FORWARDED_HEADER, forwarded};
use ledger_cluster::peer_streams::Outbound;
use ledger_cluster::status_report::{DEFAULT_LIMIT, quarantines_json};
use ledger_cluster::{Cluster, ClusterError};
use ledger_proto::cluster::v1 as cpb;
use ledger_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use ledger_proto::cluster::v1::cluster_service_server::ClusterService;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// The ClusterService implementation.
#[derive(Clone, Debug)]
pub struct ClusterApi {
    cluster: Arc<Cluster>,
}

impl ClusterApi {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        ClusterApi { cluster }
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    type ReplicateStream = Outbound;

    async fn replicate(
        &self,
        request: Request<Streaming<cpb::Envelope>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        self.cluster
            .accept(request.into_inner())
            .await
            .map(Response::new)
            .map_err(peer_status)
    }

    async fn context_state(
        &self,
        request: Request<cpb::ContextStateRequest>,
    ) -> Result<Response<cpb::ContextStateResponse>, Status> {
        let r = request.into_inner();
        let ctx = r.context_id;
        ledger_core::validate::validate_context_id(&ctx).map_err(invalid_argument)?;
        if r.settle {
            return Ok(Response::new(self.cluster.settle_here(&ctx).await));
        }
        self.cluster
            .local_context_state(&ctx)
            .await
            .map(Response::new)
            .map_err(internal)
    }

    async fn status(
        &self,
        request: Request<cpb::StatusRequest>,
    ) -> Result<Response<cpb::StatusResponse>, Status> {
        // Any token reads the members (clients route with them); the full status is admin's.
        if !request.get_ref().members_only {
            require_role(&request, TokenRole::Admin, "the full cluster status")?;
        }
        let r = request.into_inner();
        let context = (!r.context_id.is_empty()).then_some(r.context_id.as_str());
        if let Some(c) = context {
            ledger_core::validate::validate_context_id(c).map_err(invalid_argument)?;
        }
        let limit = match r.limit {
            0 => DEFAULT_LIMIT,
            n => n as usize,
        };
        let doc = if r.members_only {
            self.cluster.members_json()
        } else {
            self.cluster.status_json(context, limit).await
        };
        Ok(Response::new(cpb::StatusResponse {
            json: doc.to_string(),
        }))
    }

    /// Forgets a dead or left member on this node and on every live peer.
    async fn remove_member(
        &self,
        request: Request<cpb::RemoveMemberRequest>,
    ) -> Result<Response<cpb::RemoveMemberResponse>, Status> {
        let was_forwarded = request.metadata().contains_key(FORWARDED_HEADER);
        // Peers without mutual TLS authenticate the operator's token again.
        let auth = authorization_of(request.metadata());
        let id = request.into_inner().node_id;
        let view = self.cluster.view();
        let Some(peer) = view.peer(&id) else {
            return Err(not_a_member(&id));
        };
        if peer.state.is_live() {
            return Err(member_is_live(&id, &peer.state.to_string()));
        }
        let removed = self.cluster.forget_member(&id);
        if !was_forwarded {
            for p in view.peers.values() {
                if !p.state.is_live() || p.id == self.cluster.me.node.as_str() {
                    continue;
                }
                let Ok(ch) = self.cluster.channel(&p.addr) else {
                    continue;
                };
                let req = forwarded(pass_on(
                    auth.as_ref(),
                    Request::new(cpb::RemoveMemberRequest {
                        node_id: id.clone(),
                    }),
                ));
                if let Err(e) = ClusterServiceClient::new(ch).remove_member(req).await {
                    tracing::warn!(peer = %p.id, node = %id, error = %e.message(), "a peer did not remove the member");
                }
            }
        }
        tracing::warn!(node = %id, removed, "member removed by an operator");
        Ok(Response::new(cpb::RemoveMemberResponse { removed }))
    }

    /// `cluster accept-loss`: on the context's writer (forwarded there from any node).
    async fn accept_loss(
        &self,
        request: Request<cpb::AcceptLossRequest>,
    ) -> Result<Response<cpb::AcceptLossResponse>, Status> {
        require_role(
            &request,
            TokenRole::Admin,
            "accepting the loss of a context's quorum",
        )?;
        let was_forwarded = request.metadata().contains_key(FORWARDED_HEADER);
        let auth = authorization_of(request.metadata());
        let ctx = request.into_inner().context_id;
        ledger_core::validate::validate_context_id(&ctx).map_err(invalid_argument)?;
        if !self.cluster.writes(&ctx) && !was_forwarded {
            let Some((writer, addr)) = self.cluster.writer_of(&ctx) else {
                return Err(cluster_status(ClusterError::NoWriter {
                    context_id: ctx,
                    why: "no live member in its replica set".into(),
                }));
            };
            let ch = self.cluster.channel(&addr).map_err(internal)?;
            let req = forwarded(pass_on(
                auth.as_ref(),
                Request::new(cpb::AcceptLossRequest {
                    context_id: ctx.clone(),
                }),
            ));
            tracing::info!(context_id = %ctx, writer = %writer, "accept-loss forwarded to the context's writer");
            return ClusterServiceClient::new(ch).accept_loss(req).await;
        }
        let (epoch, size) = self
            .cluster
            .accept_loss_here(&ctx)
            .await
            .map_err(cluster_status)?;
        Ok(Response::new(cpb::AcceptLossResponse { epoch, size }))
    }

    async fn quarantines(
        &self,
        request: Request<cpb::QuarantinesRequest>,
    ) -> Result<Response<cpb::QuarantinesResponse>, Status> {
        let ctx = request.into_inner().context_id;
        let context = (!ctx.is_empty()).then_some(ctx.as_str());
        let json = quarantines_json(&self.cluster.ledger, context).map_err(to_status)?;
        Ok(Response::new(cpb::QuarantinesResponse {
            json: serde_json::Value::Array(json).to_string(),
        }))
    }

    async fn export_quarantine(
        &self,
        request: Request<cpb::ExportQuarantineRequest>,
    ) -> Result<Response<cpb::ExportQuarantineResponse>, Status> {
        let r = request.into_inner();
        let ledger = &self.cluster.ledger;
        let info = ledger
            .quarantines(Some(&r.context_id))
            .map_err(to_status)?
            .into_iter()
            .find(|q| q.id == r.id)
            .ok_or_else(|| no_such_quarantine(&r.context_id, r.id))?;
        let suffix = ledger
            .quarantined_entries(&r.context_id, r.id)
            .map_err(to_status)?;
        // The divergent history: the log before the quarantined suffix, then the suffix.
        let mut entries = Vec::new();
        let mut after = 0;
        while after + 1 < info.from_sequence {
            let page = ledger
                .read(
                    &r.context_id,
                    ledger_embedded::ReadQuery {
                        after_sequence: after,
                        up_to: Some(info.from_sequence - 1),
                        ..Default::default()
                    },
                )
                .await
                .map_err(to_status)?;
            if page.entries.is_empty() {
                break;
            }
            after = page.next_after_sequence;
            entries.extend(page.entries);
        }
        if entries.len() as u64 + 1 != info.from_sequence {
            return Err(quarantine_prefix_gone(
                &r.context_id,
                entries.len(),
                info.from_sequence,
            ));
        }
        entries.extend(suffix);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let snapshot = ledger_core::snapshot::encode(&r.context_id, now, &entries)
            .map_err(|e| internal(format!("cannot encode the snapshot: {e}")))?;
        Ok(Response::new(cpb::ExportQuarantineResponse {
            snapshot,
            entries: entries.len() as u64,
        }))
    }

    async fn digest(
        &self,
        request: Request<cpb::DigestRequest>,
    ) -> Result<Response<cpb::DigestResponse>, Status> {
        let message = self
            .cluster
            .on_digest(request.into_inner())
            .await
            .map_err(peer_status)?;
        Ok(Response::new(cpb::DigestResponse { message }))
    }
}
