//! `converge.ledger.v1.IntegrityService`: signed tree heads and proofs, read-only.

use crate::auth::policy::check_context;
use crate::error_status::{cluster_status, to_status};
use crate::metrics::Metrics;
use crate::route::read::{Forward, Serve};
use crate::route::router::Router;
use crate::signer::Signer;
use ledger_cluster::ReadCap;
use ledger_core::Hash;
use ledger_core::checkpoint::SignedTreeHead;
use ledger_embedded::{Ledger, LedgerError, TreeState};
use ledger_proto::convert::tree_head_to_pb;
use ledger_proto::ledger::v1 as lpb;
use lpb::integrity_service_client::IntegrityServiceClient;
use lpb::integrity_service_server::IntegrityService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The IntegrityService implementation. In a cluster a replica answers about what is
/// committed (sizes past its commit index are refused) and other nodes forward to one.
#[derive(Clone, Debug)]
pub struct IntegrityApi {
    ledger: Ledger,
    signer: Arc<Signer>,
    cluster: Option<Router>,
    metrics: Arc<Metrics>,
}

/// How a request is answered: here (with the tree sizes it may name), or by another node.
enum Here {
    Yes(Option<ReadCap>),
    Forward(Forward),
}

/// A requested tree size, within what this node may serve (0 = the latest).
fn size_within(cap: &Option<ReadCap>, size: u64, context_id: &str) -> Result<u64, Status> {
    match cap {
        None => Ok(size),
        Some(c) => c.resolve_size(size, context_id).map_err(cluster_status),
    }
}

impl IntegrityApi {
    pub fn new(
        ledger: Ledger,
        signer: Arc<Signer>,
        cluster: Option<Router>,
        metrics: Arc<Metrics>,
    ) -> Self {
        IntegrityApi {
            ledger,
            signer,
            cluster,
            metrics,
        }
    }

    async fn here<T>(&self, context_id: &str, request: &Request<T>) -> Result<Here, Status> {
        Ok(
            match Serve::read(self.cluster.as_ref(), context_id, request.metadata()).await? {
                Serve::Local(cap) => Here::Yes(cap),
                Serve::Remote(to) => Here::Forward(to),
            },
        )
    }

    /// The signed head of `context_id` at `size` (0 = current).
    pub async fn head(&self, context_id: &str, size: u64) -> Result<SignedTreeHead, LedgerError> {
        let t: TreeState = self.ledger.tree_state(context_id, size).await?;
        Ok(self.signer.sign(
            context_id,
            t.size,
            t.root,
            t.lamport_clock,
            t.appended_at_ns,
        ))
    }

    /// The signed head of a size whose root is already known (from a proof just computed).
    async fn head_with_root(
        &self,
        context_id: &str,
        size: u64,
        root: Hash,
    ) -> Result<SignedTreeHead, LedgerError> {
        let (lamport, time) = self.ledger.clock_at(context_id, size).await?;
        Ok(self.signer.sign(context_id, size, root, lamport, time))
    }
}

#[tonic::async_trait]
impl IntegrityService for IntegrityApi {
    async fn get_tree_head(
        &self,
        request: Request<lpb::GetTreeHeadRequest>,
    ) -> Result<Response<lpb::SignedTreeHead>, Status> {
        check_context(&request, &request.get_ref().context_id)?;
        let cap = match self.here(&request.get_ref().context_id, &request).await? {
            Here::Forward(to) => {
                return to
                    .call(request, |ch, req| async move {
                        IntegrityServiceClient::new(ch).get_tree_head(req).await
                    })
                    .await;
            }
            Here::Yes(cap) => cap,
        };
        self.metrics.tree_head();
        let r = request.into_inner();
        let size = size_within(&cap, 0, &r.context_id)?;
        let h = self.head(&r.context_id, size).await.map_err(to_status)?;
        Ok(Response::new(tree_head_to_pb(&h)))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<lpb::GetInclusionProofRequest>,
    ) -> Result<Response<lpb::InclusionProof>, Status> {
        check_context(&request, &request.get_ref().context_id)?;
        let cap = match self.here(&request.get_ref().context_id, &request).await? {
            Here::Forward(to) => {
                return to
                    .call(request, |ch, req| async move {
                        IntegrityServiceClient::new(ch)
                            .get_inclusion_proof(req)
                            .await
                    })
                    .await;
            }
            Here::Yes(cap) => cap,
        };
        self.metrics.proof("inclusion");
        let r = request.into_inner();
        let tree_size = size_within(&cap, r.tree_size, &r.context_id)?;
        let p = self
            .ledger
            .inclusion_proof(&r.context_id, r.sequence, tree_size)
            .await
            .map_err(to_status)?;
        let head = self
            .head_with_root(&r.context_id, p.tree_size, p.root)
            .await
            .map_err(to_status)?;
        Ok(Response::new(lpb::InclusionProof {
            leaf_index: p.leaf_index,
            tree_size: p.tree_size,
            leaf_hash: p.leaf_hash.as_bytes().to_vec(),
            audit_path: p.path.iter().map(|h| h.as_bytes().to_vec()).collect(),
            tree_head: Some(tree_head_to_pb(&head)),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<lpb::GetConsistencyProofRequest>,
    ) -> Result<Response<lpb::ConsistencyProof>, Status> {
        check_context(&request, &request.get_ref().context_id)?;
        let cap = match self.here(&request.get_ref().context_id, &request).await? {
            Here::Forward(to) => {
                return to
                    .call(request, |ch, req| async move {
                        IntegrityServiceClient::new(ch)
                            .get_consistency_proof(req)
                            .await
                    })
                    .await;
            }
            Here::Yes(cap) => cap,
        };
        self.metrics.proof("consistency");
        let r = request.into_inner();
        let second = size_within(&cap, r.second_size, &r.context_id)?;
        let p = self
            .ledger
            .consistency_proof(&r.context_id, r.first_size, second)
            .await
            .map_err(to_status)?;
        let first = self
            .head_with_root(&r.context_id, p.first, p.first_root)
            .await
            .map_err(to_status)?;
        let second = self
            .head_with_root(&r.context_id, p.second, p.second_root)
            .await
            .map_err(to_status)?;
        Ok(Response::new(lpb::ConsistencyProof {
            first_size: p.first,
            second_size: p.second,
            path: p.path.iter().map(|h| h.as_bytes().to_vec()).collect(),
            first_tree_head: Some(tree_head_to_pb(&first)),
            second_tree_head: Some(tree_head_to_pb(&second)),
        }))
    }

    async fn get_public_key(
        &self,
        _request: Request<lpb::GetPublicKeyRequest>,
    ) -> Result<Response<lpb::PublicKey>, Status> {
        Ok(Response::new(lpb::PublicKey {
            algorithm: "ed25519".into(),
            public_key: self.signer.public_key().as_bytes().to_vec(),
            key_name: self.signer.name().to_owned(),
            key_id: self.signer.key_id_hex(),
        }))
    }
}
