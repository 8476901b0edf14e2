//! `converge.context.v1.ContextService` over the embedded ledger.

use crate::status::to_status;
use ledger_client::convert::entry_to_pb;
use ledger_embedded::{Ledger, LedgerError, Metadata};
use ledger_proto::context::v1 as pb;
use pb::context_service_server::ContextService;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Events buffered per Watch stream between the ledger and the HTTP/2 stream. When the client
/// reads slower than this drains, the watcher's live buffer overflows and it catches up from
/// storage later; appends never wait for it.
const WATCH_STREAM_BUFFER: usize = 256;

/// The ContextService implementation.
#[derive(Clone, Debug)]
pub struct ContextApi {
    ledger: Ledger,
}

impl ContextApi {
    pub fn new(ledger: Ledger) -> Self {
        ContextApi { ledger }
    }
}

fn log_result<T>(rpc: &'static str, context_id: &str, start: Instant, r: &Result<T, Status>) {
    let micros = start.elapsed().as_micros() as u64;
    match r {
        Ok(_) => tracing::debug!(rpc, context_id, micros, "ok"),
        Err(s) => {
            tracing::debug!(rpc, context_id, micros, code = ?s.code(), message = s.message(), "failed")
        }
    }
}

fn key_filter(key: &str) -> Option<&str> {
    (!key.is_empty()).then_some(key)
}

#[tonic::async_trait]
impl ContextService for ContextApi {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let start = Instant::now();
        let r = request.into_inner();
        let metadata: Metadata = r.metadata.into_iter().collect();
        let result = self
            .ledger
            .append(
                &r.context_id,
                &r.key,
                r.payload,
                metadata,
                r.received_lamport_clock,
            )
            .await
            .map(|e| {
                Response::new(pb::AppendResponse {
                    entry: Some(entry_to_pb(&e)),
                })
            })
            .map_err(to_status);
        log_result("Append", &r.context_id, start, &result);
        result
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let start = Instant::now();
        let r = request.into_inner();
        let limit = (r.limit > 0).then_some(r.limit as usize);
        let result = self
            .ledger
            .get(&r.context_id, key_filter(&r.key), r.after_sequence, limit)
            .await
            .map(|page| {
                Response::new(pb::GetResponse {
                    entries: page.entries.iter().map(entry_to_pb).collect(),
                    latest_sequence: page.latest_sequence,
                    has_more: page.has_more,
                    next_after_sequence: page.next_after_sequence,
                })
            })
            .map_err(to_status);
        log_result("Get", &r.context_id, start, &result);
        result
    }

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let start = Instant::now();
        let r = request.into_inner();
        let result = self
            .ledger
            .snapshot(&r.context_id)
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

    async fn load(
        &self,
        request: Request<pb::LoadRequest>,
    ) -> Result<Response<pb::LoadResponse>, Status> {
        let start = Instant::now();
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

    type WatchStream = ReceiverStream<Result<pb::WatchEvent, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = request.into_inner();
        let mut stream = self
            .ledger
            .watch(&r.context_id, key_filter(&r.key), r.from_sequence)
            .map_err(to_status)?;
        tracing::debug!(
            rpc = "Watch",
            context_id = r.context_id,
            from = r.from_sequence,
            "started"
        );
        let (tx, rx) = mpsc::channel(WATCH_STREAM_BUFFER);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    next = stream.next() => match next {
                        Ok(e) => {
                            let ev = pb::WatchEvent { entry: Some(entry_to_pb(&e)) };
                            if tx.send(Ok(ev)).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let status = match e {
                                LedgerError::ShuttingDown => Status::unavailable(format!(
                                    "the node is shutting down; resume with from_sequence {}",
                                    stream.position()
                                )),
                                other => to_status(other),
                            };
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                    }
                }
            }
            tracing::debug!(
                rpc = "Watch",
                context_id = r.context_id,
                position = stream.position(),
                "ended"
            );
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
