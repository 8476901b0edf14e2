//! `converge.ledger.v1.AppendPipeline`: appends pipelined on one bidirectional stream.
//!
//! Each stream's response body reads requests, hands each to the ledger as soon as it arrives
//! (so the sequencer can group appends of many requests into one write and one fsync), and
//! answers in request order as the appends become durable. It reads at most [`MAX_IN_FLIGHT`]
//! requests ahead of its answers, and reads nothing while the client does not take answers, so
//! a slow client holds back only itself (HTTP/2 flow control does the rest).

use crate::cluster::Cluster;
use crate::status::{cluster_status, to_status};
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, Stream, StreamExt};
use ledger_embedded::Ledger;
use ledger_proto::convert::{append_request_from_pb, entry_to_pb};
use ledger_proto::ledger::v1 as lpb;
use ledger_replication::AckLevel;
use lpb::append_pipeline_server::AppendPipeline;
use lpb::append_stream_response::Result as Outcome;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

/// Requests a stream may have in the ledger before its oldest one is answered.
pub const MAX_IN_FLIGHT: usize = 1024;

/// The AppendPipeline implementation.
#[derive(Clone, Debug)]
pub struct PipelineApi {
    ledger: Ledger,
    /// Becomes true when the node starts shutting down: streams stop taking requests, answer
    /// those in flight and end with UNAVAILABLE.
    draining: watch::Receiver<bool>,
    /// In a cluster, appends go through [`Cluster::submit`].
    cluster: Option<Arc<Cluster>>,
}

impl PipelineApi {
    pub fn new(
        ledger: Ledger,
        draining: watch::Receiver<bool>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        PipelineApi {
            ledger,
            draining,
            cluster,
        }
    }
}

#[tonic::async_trait]
impl AppendPipeline for PipelineApi {
    type AppendStreamStream =
        Pin<Box<dyn Stream<Item = Result<lpb::AppendStreamResponse, Status>> + Send>>;

    async fn append_stream(
        &self,
        request: Request<Streaming<lpb::AppendStreamRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        if *self.draining.borrow() {
            return Err(shutting_down());
        }
        let cluster = match &self.cluster {
            Some(c) => Some((
                Arc::clone(c),
                crate::cluster::route::ack_of(c, request.metadata()).map_err(cluster_status)?,
            )),
            None => None,
        };
        let state = StreamState {
            ledger: self.ledger.clone(),
            cluster,
            inbound: request.into_inner(),
            draining: self.draining.clone(),
            in_flight: FuturesOrdered::new(),
            reading: true,
            end: None,
        };
        // The response body drives the stream itself (no task and channel in between): each
        // time HTTP/2 wants the next answer it reads requests, submits them and waits for the
        // oldest one.
        Ok(Response::new(Box::pin(futures::stream::unfold(
            state,
            StreamState::next_answer,
        ))))
    }
}

fn shutting_down() -> Status {
    Status::unavailable(
        "the node is shutting down; appends without a response may or may not be stored: \
         read the context's latest sequence, then append the rest on another stream",
    )
}

/// One stream: requests read, appends in flight (oldest first), and how it ends.
struct StreamState {
    ledger: Ledger,
    cluster: Option<(Arc<Cluster>, AckLevel)>,
    inbound: Streaming<lpb::AppendStreamRequest>,
    draining: watch::Receiver<bool>,
    in_flight: FuturesOrdered<BoxFuture<'static, lpb::AppendStreamResponse>>,
    reading: bool,
    /// The status the stream ends with once every answer is out (shutdown).
    end: Option<Status>,
}

impl StreamState {
    /// The next answer, in request order; the stream ends when the client has ended its side
    /// and every answer is out, or when the node shuts down (after the answers it owes). If the
    /// client goes away, the body is dropped with it: appends already handed to the ledger
    /// complete there (like a cancelled unary Append), nobody is left to tell.
    async fn next_answer(mut self) -> Option<(Result<lpb::AppendStreamResponse, Status>, Self)> {
        loop {
            if !self.reading && self.in_flight.is_empty() {
                return self.end.take().map(|status| (Err(status), self));
            }
            tokio::select! {
                biased;
                Some(answer) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    return Some((Ok(answer), self));
                }
                changed = self.draining.changed(), if self.reading => {
                    if changed.is_err() || *self.draining.borrow() {
                        self.reading = false;
                        self.end = Some(shutting_down());
                    }
                }
                message = self.inbound.message(), if self.reading && self.in_flight.len() < MAX_IN_FLIGHT => {
                    match message {
                        Ok(Some(request)) => {
                            // Queued here, one request after another, so appends are applied in
                            // stream order; only their acknowledgements run concurrently.
                            let answer = match &self.cluster {
                                Some((c, level)) => submit_clustered(c, *level, request).await,
                                None => submit(&self.ledger, request).await,
                            };
                            self.in_flight.push_back(answer);
                        }
                        Ok(None) => self.reading = false,
                        Err(status) => {
                            // A broken or cancelled client stream: answer nothing more.
                            tracing::debug!(code = ?status.code(), message = status.message(), "append stream ended by the client");
                            return None;
                        }
                    }
                }
            }
        }
    }
}

/// Validates and queues one request's append (waiting for room in the ledger's queue) and
/// returns the future of its answer: the stored entry once durable, or the status the unary
/// Append would return.
async fn submit(
    ledger: &Ledger,
    request: lpb::AppendStreamRequest,
) -> BoxFuture<'static, lpb::AppendStreamResponse> {
    let request_id = request.request_id;
    let queued = match request.append {
        None => Err(Status::invalid_argument(
            "AppendStreamRequest.append is missing: set it to the AppendRequest to apply",
        )),
        Some(append) => ledger
            .submit(append_request_from_pb(append))
            .await
            .map_err(to_status),
    };
    Box::pin(async move {
        let result = match queued {
            Ok(ack) => ack.await.map(|e| entry_to_pb(&e)).map_err(to_status),
            Err(status) => Err(status),
        };
        answer(request_id, result)
    })
}

/// [`submit`] on a cluster node (see [`Cluster::submit`] for the order it keeps).
async fn submit_clustered(
    cluster: &Arc<Cluster>,
    level: AckLevel,
    request: lpb::AppendStreamRequest,
) -> BoxFuture<'static, lpb::AppendStreamResponse> {
    let request_id = request.request_id;
    let pending = match request.append {
        None => {
            return Box::pin(futures::future::ready(answer(
                request_id,
                Err(Status::invalid_argument(
                    "AppendStreamRequest.append is missing: set it to the AppendRequest to apply",
                )),
            )));
        }
        Some(append) => cluster.submit(append, level).await,
    };
    Box::pin(async move {
        answer(
            request_id,
            pending.await.map(|r| r.entry.unwrap_or_default()),
        )
    })
}

fn answer(
    request_id: u64,
    result: Result<ledger_proto::context::v1::Entry, Status>,
) -> lpb::AppendStreamResponse {
    lpb::AppendStreamResponse {
        request_id,
        result: Some(match result {
            Ok(entry) => Outcome::Entry(entry),
            Err(status) => Outcome::Error(lpb::AppendError {
                code: status.code() as i32,
                message: status.message().to_owned(),
            }),
        }),
    }
}
