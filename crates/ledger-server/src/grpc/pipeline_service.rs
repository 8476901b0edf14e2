//! `converge.ledger.v1.AppendPipeline`: appends pipelined on one bidirectional stream.
//!
//! Each stream's response body reads requests, hands each to the ledger as soon as it arrives
//! (so the sequencer can group appends of many requests into one write and one fsync), and
//! answers in request order as the appends become durable. It reads at most
//! `append_stream_window` requests ahead of its answers, and reads nothing while the client
//! does not take answers, so a slow client holds back only itself (HTTP/2 flow control does
//! the rest). A node serves at most `max_append_streams` streams at once; one more is refused
//! with RESOURCE_EXHAUSTED.

use crate::auth::policy::{authorization_of, pass_on};
use crate::auth::tokens::Principal;
use crate::error_status::{
    append_stream_both_set, append_stream_draining, append_stream_empty_request, cluster_status,
    to_status,
};
use crate::metrics::Metrics;
use crate::route::router::{ACK_HEADER, Router, ack_name, ack_of};
use crate::stream_limits::{StreamLimits, StreamPermit};
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, Stream, StreamExt};
use ledger_embedded::Ledger;
use ledger_proto::convert::{
    append_request_from_pb, batch_request_from_pb, batch_response_to_pb, entry_to_pb,
};
use ledger_proto::ledger::v1 as lpb;
use ledger_replication::AckLevel;
use lpb::append_pipeline_server::AppendPipeline;
use lpb::append_stream_response::Result as Outcome;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

/// The AppendPipeline implementation.
#[derive(Clone, Debug)]
pub struct PipelineApi {
    ledger: Ledger,
    /// Becomes true when the node starts shutting down: streams stop taking requests, answer
    /// those in flight and end with UNAVAILABLE.
    draining: watch::Receiver<bool>,
    /// In a cluster, appends go through [`Router::submit`].
    cluster: Option<Router>,
    metrics: Arc<Metrics>,
    limits: Arc<StreamLimits>,
}

impl PipelineApi {
    pub fn new(
        ledger: Ledger,
        draining: watch::Receiver<bool>,
        cluster: Option<Router>,
        metrics: Arc<Metrics>,
        limits: Arc<StreamLimits>,
    ) -> Self {
        PipelineApi {
            ledger,
            draining,
            cluster,
            metrics,
            limits,
        }
    }
}

#[tonic::async_trait]
impl AppendPipeline for PipelineApi {
    type AppendStreamStream =
        Pin<Box<dyn Stream<Item = Result<lpb::AppendStreamResponse, Status>> + Send>>;

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "AppendStream"))]
    async fn append_stream(
        &self,
        request: Request<Streaming<lpb::AppendStreamRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        if *self.draining.borrow() {
            return Err(append_stream_draining());
        }
        let permit = self.limits.append_stream()?;
        let cluster = match &self.cluster {
            Some(r) => Some((
                r.clone(),
                ack_of(&r.cluster, request.metadata()).map_err(cluster_status)?,
            )),
            None => None,
        };
        let principal = request.extensions().get::<Principal>().cloned();
        let auth = authorization_of(request.metadata());
        let state = StreamState {
            _permit: permit,
            window: self.limits.append_stream_window,
            metrics: Arc::clone(&self.metrics),
            ledger: self.ledger.clone(),
            cluster,
            principal,
            auth,
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

/// One stream: requests read, appends in flight (oldest first), and how it ends.
struct StreamState {
    /// This stream's place under `max_append_streams`.
    _permit: StreamPermit,
    /// Requests read ahead of answers at most.
    window: usize,
    metrics: Arc<Metrics>,
    ledger: Ledger,
    cluster: Option<(Router, AckLevel)>,
    /// The caller (auth on): each request's context is checked against its prefix.
    principal: Option<Principal>,
    /// The caller's `authorization`, passed on with appends forwarded to a writer.
    auth: Option<tonic::metadata::AsciiMetadataValue>,
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
                        self.end = Some(append_stream_draining());
                    }
                }
                message = self.inbound.message(), if self.reading && self.in_flight.len() < self.window => {
                    match message {
                        Ok(Some(request)) => {
                            // Queued here, one request after another, so appends are applied in
                            // stream order; only their acknowledgements run concurrently.
                            let denied = self.principal.as_ref().and_then(|p| {
                                let ctx = match (&request.append, &request.batch) {
                                    (Some(a), _) => a.context_id.as_str(),
                                    (None, Some(b)) => b.context_id.as_str(),
                                    (None, None) => "",
                                };
                                p.check_context(ctx).err()
                            });
                            let pending: BoxFuture<'static, lpb::AppendStreamResponse> = match (denied, &self.cluster) {
                                (Some(status), _) => {
                                    let id = request.request_id;
                                    Box::pin(futures::future::ready(answer(id, Err(status))))
                                }
                                (None, Some((c, level))) => {
                                    submit_clustered(c, *level, self.auth.as_ref(), request).await
                                }
                                (None, None) => submit(&self.ledger, request).await,
                            };
                            let (metrics, started) = (Arc::clone(&self.metrics), Instant::now());
                            self.in_flight.push_back(Box::pin(async move {
                                let a = pending.await;
                                metrics.append(outcome_code(&a), started.elapsed());
                                a
                            }));
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
    let queued = match (request.append, request.batch) {
        (Some(_), Some(_)) => Err(append_stream_both_set()),
        (None, Some(batch)) => return submit_batch(ledger, request_id, batch).await,
        (None, None) => Err(append_stream_empty_request()),
        (Some(append), None) => ledger
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

/// [`submit`] of a batch request: answered with the batch's stored entries once durable.
async fn submit_batch(
    ledger: &Ledger,
    request_id: u64,
    batch: ledger_proto::context::v1::AppendBatchRequest,
) -> BoxFuture<'static, lpb::AppendStreamResponse> {
    let (context_id, items) = batch_request_from_pb(batch);
    let queued = ledger
        .submit_batch(&context_id, items)
        .await
        .map_err(to_status);
    Box::pin(async move {
        let result = match queued {
            Ok(ack) => ack.await.map_err(to_status),
            Err(status) => Err(status),
        };
        lpb::AppendStreamResponse {
            request_id,
            result: Some(match result {
                Ok(entries) => Outcome::Batch(batch_response_to_pb(entries.iter().map(|e| &**e))),
                Err(status) => Outcome::Error(error_of(&status)),
            }),
        }
    })
}

/// [`submit`] on a cluster node (see [`Router::submit`] for the order it keeps).
async fn submit_clustered(
    cluster: &Router,
    level: AckLevel,
    auth: Option<&tonic::metadata::AsciiMetadataValue>,
    request: lpb::AppendStreamRequest,
) -> BoxFuture<'static, lpb::AppendStreamResponse> {
    let request_id = request.request_id;
    let refused = |status| Box::pin(futures::future::ready(answer(request_id, Err(status))));
    let pending = match (request.append, request.batch) {
        (Some(_), Some(_)) => return refused(append_stream_both_set()),
        (None, None) => return refused(append_stream_empty_request()),
        (None, Some(batch)) => {
            // Served whole (forwarded to the writer if need be) before the next request is
            // read, so it keeps its place in the stream.
            let mut req = pass_on(auth, tonic::Request::new(batch));
            req.metadata_mut().insert(
                ACK_HEADER,
                tonic::metadata::MetadataValue::from_static(ack_name(level)),
            );
            let result = cluster.append_batch(req).await;
            return Box::pin(futures::future::ready(lpb::AppendStreamResponse {
                request_id,
                result: Some(match result {
                    Ok(b) => Outcome::Batch(b),
                    Err(status) => Outcome::Error(error_of(&status)),
                }),
            }));
        }
        (Some(append), None) => cluster.submit(append, level, auth).await,
    };
    Box::pin(async move {
        answer(
            request_id,
            pending.await.map(|r| r.entry.unwrap_or_default()),
        )
    })
}

fn outcome_code(a: &lpb::AppendStreamResponse) -> tonic::Code {
    match &a.result {
        Some(Outcome::Error(e)) => tonic::Code::from_i32(e.code),
        _ => tonic::Code::Ok,
    }
}

fn answer(
    request_id: u64,
    result: Result<ledger_proto::context::v1::Entry, Status>,
) -> lpb::AppendStreamResponse {
    lpb::AppendStreamResponse {
        request_id,
        result: Some(match result {
            Ok(entry) => Outcome::Entry(entry),
            Err(status) => Outcome::Error(error_of(&status)),
        }),
    }
}

fn error_of(status: &Status) -> lpb::AppendError {
    lpb::AppendError {
        code: status.code() as i32,
        message: status.message().to_owned(),
    }
}
