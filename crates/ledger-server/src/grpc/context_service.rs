//! `converge.context.v1.ContextService` over the embedded ledger. In a cluster, requests go
//! where [`crate::route`] says: appends to the context's writer, reads to a replica.

use super::watch_stream::{self, FrameCache, FrameStream, key_filter};
use crate::auth::policy::check_context;
use crate::error_status::to_status;
use crate::metrics::Metrics;
use crate::middleware::request_log::log_result;
use crate::route::read::Serve;
use crate::route::router::{Router, context_client};
use crate::signer::Signer;
use crate::stream_limits::StreamLimits;
use ledger_cluster::ReadCap;
use ledger_embedded::Ledger;
use ledger_proto::context::v1 as pb;
use ledger_proto::convert::{
    append_request_from_pb, batch_request_from_pb, batch_response_to_pb, entry_into_pb, entry_to_pb,
};
use ledger_proto::frame::WatchFrame;
use ledger_proto::framed::context_service_server::ContextService;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

/// The ContextService implementation.
#[derive(Clone, Debug)]
pub struct ContextApi {
    ledger: Ledger,
    signer: Arc<Signer>,
    /// Largest snapshot answered in one message (the node's message limit, less framing).
    max_snapshot_bytes: usize,
    /// The cluster runtime, when this node is a cluster member.
    cluster: Option<Router>,
    metrics: Arc<Metrics>,
    limits: Arc<StreamLimits>,
    /// Entry events encoded once for all of a context's watchers.
    frames: Arc<FrameCache>,
}

/// Room left in a Snapshot response for its other fields and protobuf framing.
const SNAPSHOT_RESPONSE_OVERHEAD: usize = 1024;

impl ContextApi {
    pub fn new(
        ledger: Ledger,
        signer: Arc<Signer>,
        max_message_bytes: usize,
        cluster: Option<Router>,
        metrics: Arc<Metrics>,
        limits: Arc<StreamLimits>,
    ) -> Self {
        ContextApi {
            ledger,
            signer,
            max_snapshot_bytes: max_message_bytes.saturating_sub(SNAPSHOT_RESPONSE_OVERHEAD),
            cluster,
            metrics,
            limits,
            frames: Arc::default(),
        }
    }

    /// Where a read is served (here, up to what is committed in a cluster, or elsewhere).
    async fn serve<T>(&self, context_id: &str, request: &Request<T>) -> Result<Serve, Status> {
        Serve::read(self.cluster.as_ref(), context_id, request.metadata()).await
    }
}

fn code_of<T>(r: &Result<T, Status>) -> tonic::Code {
    r.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok)
}

#[tonic::async_trait]
impl ContextService for ContextApi {
    #[tracing::instrument(name = "request", skip_all, fields(rpc = "Append", context_id = %request.get_ref().context_id, sequence = tracing::field::Empty))]
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let start = Instant::now();
        check_context(&request, &request.get_ref().context_id)?;
        if let Some(c) = &self.cluster {
            let context_id = request.get_ref().context_id.clone();
            let result = c.append(request).await.map(Response::new);
            log_result("Append", &context_id, start, &result);
            self.metrics.append(code_of(&result), start.elapsed());
            return result;
        }
        let append = append_request_from_pb(request.into_inner());
        let context_id = append.context_id.clone();
        let result = self
            .ledger
            .append_entry(append)
            .await
            .map(|e| {
                Response::new(pb::AppendResponse {
                    entry: Some(entry_to_pb(&e)),
                })
            })
            .map_err(to_status);
        log_result("Append", &context_id, start, &result);
        self.metrics.append(code_of(&result), start.elapsed());
        result
    }

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "AppendBatch", context_id = %request.get_ref().context_id, items = request.get_ref().items.len(), sequence = tracing::field::Empty))]
    async fn append_batch(
        &self,
        request: Request<pb::AppendBatchRequest>,
    ) -> Result<Response<pb::AppendBatchResponse>, Status> {
        let start = Instant::now();
        check_context(&request, &request.get_ref().context_id)?;
        if let Some(c) = &self.cluster {
            let context_id = request.get_ref().context_id.clone();
            let result = c.append_batch(request).await.map(Response::new);
            log_result("AppendBatch", &context_id, start, &result);
            self.metrics.append(code_of(&result), start.elapsed());
            return result;
        }
        let (context_id, items) = batch_request_from_pb(request.into_inner());
        let result = self
            .ledger
            .append_batch(&context_id, items)
            .await
            .map(|entries| Response::new(batch_response_to_pb(entries.iter().map(|e| &**e))))
            .map_err(to_status);
        log_result("AppendBatch", &context_id, start, &result);
        self.metrics.append(code_of(&result), start.elapsed());
        result
    }

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "Get", context_id = %request.get_ref().context_id, sequence = tracing::field::Empty))]
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let start = Instant::now();
        check_context(&request, &request.get_ref().context_id)?;
        let cap = match self.serve(&request.get_ref().context_id, &request).await? {
            Serve::Remote(to) => {
                return to
                    .call(request, |ch, req| async move {
                        context_client(ch).get(req).await
                    })
                    .await;
            }
            Serve::Local(cap) => cap,
        };
        let r = request.into_inner();
        let limit = (r.limit > 0).then_some(r.limit as usize);
        let result = self
            .ledger
            .get_up_to(
                &r.context_id,
                key_filter(&r.key),
                r.after_sequence,
                limit,
                cap.as_ref().map(ReadCap::committed),
            )
            .await
            .map(|page| {
                Response::new(pb::GetResponse {
                    entries: page.entries.into_iter().map(entry_into_pb).collect(),
                    latest_sequence: page.latest_sequence,
                    has_more: page.has_more,
                    next_after_sequence: page.next_after_sequence,
                })
            })
            .map_err(to_status);
        log_result("Get", &r.context_id, start, &result);
        result
    }

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "Snapshot", context_id = %request.get_ref().context_id, sequence = tracing::field::Empty))]
    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let start = Instant::now();
        check_context(&request, &request.get_ref().context_id)?;
        let cap = match self.serve(&request.get_ref().context_id, &request).await? {
            Serve::Remote(to) => {
                return to
                    .call(request, |ch, req| async move {
                        context_client(ch).snapshot(req).await
                    })
                    .await;
            }
            Serve::Local(cap) => cap,
        };
        let r = request.into_inner();
        let result = self
            .ledger
            .snapshot_within(
                &r.context_id,
                Some(self.max_snapshot_bytes),
                cap.as_ref().map(ReadCap::committed),
            )
            .await
            .map(|s| {
                Response::new(pb::SnapshotResponse {
                    sequence: s.sequence,
                    metadata: Some(pb::SnapshotMetadata {
                        created_at_ns: s.created_at_ns,
                        entry_count: s.sequence,
                        version: u32::from(ledger_core::snapshot::VERSION),
                        merkle_root: s.merkle_root.as_bytes().to_vec(),
                    }),
                    snapshot: s.bytes,
                })
            })
            .map_err(to_status);
        log_result("Snapshot", &r.context_id, start, &result);
        result
    }

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "Load", context_id = %request.get_ref().context_id, sequence = tracing::field::Empty))]
    async fn load(
        &self,
        request: Request<pb::LoadRequest>,
    ) -> Result<Response<pb::LoadResponse>, Status> {
        let start = Instant::now();
        check_context(&request, &request.get_ref().context_id)?;
        self.limits.check_load(
            &request.get_ref().context_id,
            request.get_ref().snapshot.len() as u64,
        )?;
        if let Some(c) = &self.cluster {
            let context_id = request.get_ref().context_id.clone();
            let result = c.load(request).await.map(Response::new);
            log_result("Load", &context_id, start, &result);
            return result;
        }
        let r = request.into_inner();
        let result = self
            .ledger
            .load(&r.context_id, r.snapshot, r.fail_if_exists)
            .await
            .map(|o| {
                Response::new(pb::LoadResponse {
                    entries_restored: o.entries_restored,
                    latest_sequence: o.latest_sequence,
                })
            })
            .map_err(to_status);
        log_result("Load", &r.context_id, start, &result);
        result
    }

    type WatchStream = FrameStream;

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "Watch", context_id = %request.get_ref().context_id, sequence = tracing::field::Empty))]
    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        check_context(&request, &request.get_ref().context_id)?;
        let permit = self.limits.watcher(&request.get_ref().context_id)?;
        let cap = match self.serve(&request.get_ref().context_id, &request).await? {
            Serve::Remote(to) => {
                let stream = to
                    .call(request, |ch, req| async move {
                        context_client(ch).watch(req).await
                    })
                    .await?
                    .into_inner();
                // The permit lives as long as the relayed stream.
                use futures::StreamExt as _;
                let stream = stream.map(move |ev| {
                    let _held = &permit;
                    ev.map(|ev| WatchFrame::encode(&ev))
                });
                return Ok(Response::new(Box::pin(stream)));
            }
            Serve::Local(cap) => cap,
        };
        let stream = watch_stream::local(
            &self.ledger,
            &self.signer,
            &self.frames,
            &self.metrics,
            request.into_inner(),
            cap,
            permit,
        )
        .await?;
        Ok(Response::new(stream))
    }
}
