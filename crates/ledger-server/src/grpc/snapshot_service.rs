//! `converge.ledger.v1.SnapshotService`: snapshots streamed out and in, in pieces, so contexts
//! of any size are saved and restored with bounded memory.

use crate::auth::policy::{authorization_of, check_context, pass_on};
use crate::auth::tokens::Principal;
use crate::error_status::{
    chunk_too_large, cluster_status, load_stream_empty, load_stream_other_context,
    load_stream_stalled, shutting_down, to_status,
};
use crate::route::load::LoadAt;
use crate::route::read::Serve;
use crate::route::router::{Router, ack_of, to_writer};
use crate::stream_limits::StreamLimits;
use ledger_cluster::ReadCap;
use ledger_embedded::Ledger;
use ledger_proto::context::v1 as pb;
use ledger_proto::ledger::v1 as lpb;
use lpb::snapshot_service_server::SnapshotService;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status, Streaming};

/// Default piece size of a streamed snapshot.
const DEFAULT_CHUNK_BYTES: usize = 1 << 20;
/// Largest piece a client may ask for.
const MAX_CHUNK_BYTES: usize = 16 << 20;
/// A LoadStream that sends nothing for this long is abandoned: a load holds its context
/// (appends to it are refused), so a stalled client must not hold it forever.
const LOAD_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The next message of a LoadStream, or an error if the client stalls.
async fn next_piece(
    inbound: &mut Streaming<lpb::LoadStreamRequest>,
) -> Result<Option<lpb::LoadStreamRequest>, Status> {
    tokio::time::timeout(LOAD_IDLE_TIMEOUT, inbound.message())
        .await
        .map_err(|_| load_stream_stalled(LOAD_IDLE_TIMEOUT.as_secs()))?
}

/// The SnapshotService implementation. In a cluster, snapshots are served by a replica up
/// to its commit index (other nodes forward them); loads run on the context's writer
/// ([`crate::route::load`]).
#[derive(Clone, Debug)]
pub struct SnapshotApi {
    ledger: Ledger,
    cluster: Option<Router>,
    /// `max_load_bytes`.
    limits: Arc<StreamLimits>,
}

impl SnapshotApi {
    pub fn new(ledger: Ledger, cluster: Option<Router>, limits: Arc<StreamLimits>) -> Self {
        SnapshotApi {
            ledger,
            cluster,
            limits,
        }
    }
}

/// Loads the pieces of a LoadStream (`first`, then the rest of `inbound`) into `context_id`:
/// all or nothing, bounded by `max_load_bytes`. Owns what it uses: in a cluster it runs to
/// its end even if the request goes away ([`Router::load_here`]).
async fn load_pieces(
    ledger: Ledger,
    limits: Arc<StreamLimits>,
    context_id: String,
    fail_if_exists: bool,
    first: lpb::LoadStreamRequest,
    mut inbound: Streaming<lpb::LoadStreamRequest>,
) -> Result<ledger_embedded::LoadOutcome, Status> {
    let mut session = ledger
        .begin_load(&context_id, fail_if_exists)
        .await
        .map_err(to_status)?;
    let mut next = Some(first);
    let mut received: u64 = 0;
    while let Some(msg) = next {
        received += msg.data.len() as u64;
        // Refused before staging more: the session is dropped and nothing is stored.
        limits.check_load(&context_id, received)?;
        if !msg.context_id.is_empty() && msg.context_id != context_id {
            return Err(load_stream_other_context(&msg.context_id, &context_id));
        }
        if !msg.data.is_empty() {
            // Decoding, hashing and staging are blocking work.
            session =
                tokio::task::spawn_blocking(move || session.feed(&msg.data).map(|()| session))
                    .await
                    .map_err(|_| shutting_down())?
                    .map_err(to_status)?;
        }
        next = next_piece(&mut inbound).await?;
    }
    session.finish().await.map_err(to_status)
}

/// Sends a LoadStream on to the context's writer: the pieces as they come (`first` was read
/// already), with the caller's token and acknowledgement level. A client stream that breaks
/// ends the forwarded one early, and the writer, missing pieces, stores nothing.
async fn forward_load(
    cluster: &Router,
    channel: tonic::transport::Channel,
    meta: &tonic::metadata::MetadataMap,
    auth: Option<&tonic::metadata::AsciiMetadataValue>,
    first: lpb::LoadStreamRequest,
    inbound: Streaming<lpb::LoadStreamRequest>,
) -> Result<Response<pb::LoadResponse>, Status> {
    let level = ack_of(&cluster.cluster, meta).map_err(cluster_status)?;
    let rest = futures::stream::unfold(inbound, |mut s| async move {
        match next_piece(&mut s).await {
            Ok(Some(m)) => Some((m, s)),
            _ => None,
        }
    });
    let pieces = futures::StreamExt::chain(futures::stream::iter([first]), rest);
    let request = to_writer(pass_on(auth, Request::new(pieces)), level);
    lpb::snapshot_service_client::SnapshotServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
        .load_stream(request)
        .await
}

type ChunkStream = Pin<Box<dyn futures::Stream<Item = Result<lpb::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl SnapshotService for SnapshotApi {
    type SnapshotStreamStream = ChunkStream;

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "SnapshotStream", context_id = %request.get_ref().context_id))]
    async fn snapshot_stream(
        &self,
        request: Request<lpb::SnapshotStreamRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        check_context(&request, &request.get_ref().context_id)?;
        let cap = match Serve::read(
            self.cluster.as_ref(),
            &request.get_ref().context_id,
            request.metadata(),
        )
        .await?
        {
            Serve::Remote(to) => {
                let stream = to
                    .call(request, |ch, req| async move {
                        lpb::snapshot_service_client::SnapshotServiceClient::new(ch)
                            .max_decoding_message_size(usize::MAX)
                            .snapshot_stream(req)
                            .await
                    })
                    .await?
                    .into_inner();
                return Ok(Response::new(Box::pin(stream)));
            }
            Serve::Local(cap) => cap,
        };
        let r = request.into_inner();
        let chunk = match r.chunk_bytes as usize {
            0 => DEFAULT_CHUNK_BYTES,
            n if n > MAX_CHUNK_BYTES => return Err(chunk_too_large(n, MAX_CHUNK_BYTES)),
            n => n,
        };
        let stream = self
            .ledger
            .snapshot_stream(&r.context_id, chunk, cap.as_ref().map(ReadCap::committed))
            .await
            .map_err(to_status)?;
        tracing::debug!(
            rpc = "SnapshotStream",
            context_id = r.context_id,
            entries = stream.info.sequence,
            "started"
        );
        let metadata = pb::SnapshotMetadata {
            created_at_ns: stream.info.created_at_ns,
            entry_count: stream.info.sequence,
            version: u32::from(ledger_core::snapshot::VERSION),
            merkle_root: stream.info.merkle_root.as_bytes().to_vec(),
        };
        let body = futures::stream::unfold(
            (stream, Some(metadata), false),
            |(mut stream, mut metadata, ended)| async move {
                if ended {
                    return None;
                }
                match stream.next().await? {
                    Ok(piece) => Some((
                        Ok(lpb::SnapshotChunk {
                            data: piece.data,
                            entries_through: piece.entries_through,
                            metadata: metadata.take(),
                        }),
                        (stream, metadata, false),
                    )),
                    Err(e) => Some((Err(to_status(e)), (stream, metadata, true))),
                }
            },
        );
        Ok(Response::new(Box::pin(body)))
    }

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "LoadStream"))]
    async fn load_stream(
        &self,
        request: Request<Streaming<lpb::LoadStreamRequest>>,
    ) -> Result<Response<pb::LoadResponse>, Status> {
        let start = Instant::now();
        let principal = request.extensions().get::<Principal>().cloned();
        let meta = request.metadata().clone();
        let auth = authorization_of(&meta);
        let mut inbound = request.into_inner();
        let first = next_piece(&mut inbound)
            .await?
            .ok_or_else(load_stream_empty)?;
        let context_id = first.context_id.clone();
        if let Some(p) = &principal {
            p.check_context(&context_id)?;
        }
        let fail_if_exists = first.fail_if_exists;
        let outcome = match self
            .cluster
            .as_ref()
            .map(|c| (c, c.load_at(&context_id, &meta)))
        {
            None => {
                load_pieces(
                    self.ledger.clone(),
                    Arc::clone(&self.limits),
                    context_id.clone(),
                    fail_if_exists,
                    first,
                    inbound,
                )
                .await?
            }
            Some((_, Err(refused))) => return Err(refused),
            Some((c, Ok(LoadAt::Writer(ch)))) => {
                return forward_load(c, ch, &meta, auth.as_ref(), first, inbound).await;
            }
            Some((c, Ok(LoadAt::Here(level)))) => {
                let load = load_pieces(
                    self.ledger.clone(),
                    Arc::clone(&self.limits),
                    context_id.clone(),
                    fail_if_exists,
                    first,
                    inbound,
                );
                c.load_here(&context_id, level, load).await?
            }
        };
        tracing::debug!(
            rpc = "LoadStream",
            context_id,
            restored = outcome.entries_restored,
            micros = start.elapsed().as_micros() as u64,
            "ok"
        );
        Ok(Response::new(pb::LoadResponse {
            entries_restored: outcome.entries_restored,
            latest_sequence: outcome.latest_sequence,
        }))
    }
}
