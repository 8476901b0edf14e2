//! `converge.ledger.v1.AppendPipeline`: appends pipelined on one bidirectional stream.
//!
//! Each stream gets one task that reads requests, hands each to the ledger as soon as it
//! arrives (so the sequencer can group appends of many requests into one write and one fsync),
//! and answers in request order as the appends become durable. It reads at most
//! [`MAX_IN_FLIGHT`] requests ahead of its answers, and stops reading while the client does not
//! take answers, so a slow client holds back only itself (HTTP/2 flow control does the rest).

use crate::status::to_status;
use futures::stream::{FuturesOrdered, StreamExt};
use ledger_client::convert::entry_to_pb;
use ledger_embedded::{Ledger, Metadata};
use ledger_proto::context::v1 as pb;
use ledger_proto::ledger::v1 as lpb;
use lpb::append_pipeline_server::AppendPipeline;
use lpb::append_stream_response::Result as Outcome;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Requests a stream may have in the ledger before its oldest one is answered.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Answers buffered between a stream's task and the HTTP/2 stream.
const RESPONSE_BUFFER: usize = 256;

/// The AppendPipeline implementation.
#[derive(Clone, Debug)]
pub struct PipelineApi {
    ledger: Ledger,
    /// Becomes true when the node starts shutting down: streams stop taking requests, answer
    /// those in flight and end with UNAVAILABLE.
    draining: watch::Receiver<bool>,
}

impl PipelineApi {
    pub fn new(ledger: Ledger, draining: watch::Receiver<bool>) -> Self {
        PipelineApi { ledger, draining }
    }
}

#[tonic::async_trait]
impl AppendPipeline for PipelineApi {
    type AppendStreamStream = ReceiverStream<Result<lpb::AppendStreamResponse, Status>>;

    async fn append_stream(
        &self,
        request: Request<Streaming<lpb::AppendStreamRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        if *self.draining.borrow() {
            return Err(shutting_down());
        }
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        tokio::spawn(run_stream(
            self.ledger.clone(),
            request.into_inner(),
            tx,
            self.draining.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn shutting_down() -> Status {
    Status::unavailable(
        "the node is shutting down; appends without a response may or may not be stored: \
         read the context's latest sequence, then append the rest on another stream",
    )
}

/// One stream: read, submit, answer in order; end when the client ends its side and every
/// answer is out, or when the node shuts down.
async fn run_stream(
    ledger: Ledger,
    mut inbound: Streaming<lpb::AppendStreamRequest>,
    tx: mpsc::Sender<Result<lpb::AppendStreamResponse, Status>>,
    mut draining: watch::Receiver<bool>,
) {
    let mut in_flight = FuturesOrdered::new();
    let mut reading = true;
    let mut end: Option<Status> = None;
    while reading || !in_flight.is_empty() {
        tokio::select! {
            biased;
            Some(answer) = in_flight.next(), if !in_flight.is_empty() => {
                if tx.send(Ok(answer)).await.is_err() {
                    // The client is gone. Appends already handed to the ledger complete there
                    // (like a cancelled unary Append); nobody is left to tell.
                    return;
                }
            }
            changed = draining.changed(), if reading => {
                if changed.is_err() || *draining.borrow() {
                    reading = false;
                    end = Some(shutting_down());
                }
            }
            message = inbound.message(), if reading && in_flight.len() < MAX_IN_FLIGHT => {
                match message {
                    Ok(Some(request)) => in_flight.push_back(append_one(ledger.clone(), request)),
                    Ok(None) => reading = false,
                    Err(status) => {
                        // A broken or cancelled client stream: answer nothing more.
                        tracing::debug!(code = ?status.code(), message = status.message(), "append stream ended by the client");
                        return;
                    }
                }
            }
        }
    }
    if let Some(status) = end {
        let _ = tx.send(Err(status)).await;
    }
}

/// The answer to one request: the stored entry, or the status the unary Append would return.
async fn append_one(
    ledger: Ledger,
    request: lpb::AppendStreamRequest,
) -> lpb::AppendStreamResponse {
    let request_id = request.request_id;
    let result = match request.append {
        None => Err(Status::invalid_argument(
            "AppendStreamRequest.append is missing: set it to the AppendRequest to apply",
        )),
        Some(pb::AppendRequest {
            context_id,
            key,
            payload,
            metadata,
            received_lamport_clock,
        }) => {
            let metadata: Metadata = metadata.into_iter().collect();
            ledger
                .append(&context_id, &key, payload, metadata, received_lamport_clock)
                .await
                .map_err(to_status)
        }
    };
    lpb::AppendStreamResponse {
        request_id,
        result: Some(match result {
            Ok(entry) => Outcome::Entry(entry_to_pb(&entry)),
            Err(status) => Outcome::Error(lpb::AppendError {
                code: status.code() as i32,
                message: status.message().to_owned(),
            }),
        }),
    }
}
