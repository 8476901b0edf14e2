//! Pipelined appends: many appends in flight on one `converge.ledger.v1.AppendPipeline`
//! stream, shared by every task that holds the [`AppendPipeline`].
//!
//! Each [`AppendPipeline::append`] sends one request on the stream and waits for its answer, so
//! the call reads exactly like [`crate::LedgerClient::append`], while many concurrent callers
//! share one HTTP/2 stream (as Redis and NATS clients pipeline commands on one connection).
//! Answers come back in request order; a queue of waiting callers in the same order routes
//! them, and the echoed request id checks the routing.
//!
//! When the stream breaks (the node restarts, the connection drops), every append still
//! waiting fails with that error, and the next append opens a new stream. A failed append is
//! never retried here: it may have been stored, and only the caller knows whether to append
//! again after reading the context.

use crate::Transport;
use crate::{ClientError, convert, invalid};
use ledger_core::{Entry, Metadata, NewEntry};
use ledger_proto::ledger::v1 as lpb;
use lpb::append_pipeline_client::AppendPipelineClient;
use lpb::append_stream_response::Result as Outcome;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

/// Requests the client queues on a stream before a caller waits for room.
pub const PIPELINE_WINDOW: usize = 1024;

/// What the node answered a request of the stream with.
#[derive(Debug)]
enum Answered {
    Entry(Entry),
    Batch(Vec<Entry>),
}

type Reply = oneshot::Sender<Result<Answered, ClientError>>;

/// A handle to a pipelined append stream. Cheap to clone; clones share the stream.
#[derive(Clone, Debug)]
pub struct AppendPipeline {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: AppendPipelineClient<Transport>,
    current: Mutex<Option<Arc<Stream>>>,
    /// Serialises opening a new stream.
    opening: tokio::sync::Mutex<()>,
}

/// One open stream: the sending half, and the state it shares with its answer reader.
#[derive(Debug)]
struct Stream {
    tx: mpsc::Sender<lpb::AppendStreamRequest>,
    state: Arc<Mutex<State>>,
}

/// The callers waiting for answers, in request order.
#[derive(Debug, Default)]
struct State {
    next_id: u64,
    waiting: VecDeque<(u64, Reply)>,
    /// Set once the stream has ended: why.
    ended: Option<Ended>,
}

#[derive(Clone, Debug)]
enum Ended {
    Status(Code, String),
    Invalid(String),
}

impl Ended {
    fn error(&self) -> ClientError {
        match self {
            Ended::Status(code, message) => ClientError::Status(Status::new(*code, message)),
            Ended::Invalid(message) => invalid(message.clone()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (every step is one push or pop).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AppendPipeline {
    pub(crate) fn new(client: AppendPipelineClient<Transport>) -> Self {
        AppendPipeline {
            inner: Arc::new(Inner {
                client,
                current: Mutex::new(None),
                opening: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Appends one entry and returns it as stored, once durable: the same contract as
    /// [`crate::LedgerClient::append`]. Appends to one context from one task are applied in
    /// call order.
    pub async fn append(
        &self,
        context_id: &str,
        key: &str,
        payload: Vec<u8>,
        metadata: Metadata,
        received_lamport_clock: Option<u64>,
    ) -> Result<Entry, ClientError> {
        self.append_entry(NewEntry::new(
            context_id,
            key,
            payload,
            metadata,
            received_lamport_clock,
        ))
        .await
    }

    /// Appends `entry` with every option (an idempotency key, for one) on the shared stream.
    pub async fn append_entry(&self, entry: NewEntry) -> Result<Entry, ClientError> {
        match self
            .send(lpb::AppendStreamRequest {
                request_id: 0,
                append: Some(convert::append_request_to_pb(entry)),
                batch: None,
            })
            .await?
        {
            Answered::Entry(e) => Ok(e),
            Answered::Batch(_) => Err(invalid("a single append was answered with a batch".into())),
        }
    }

    /// Appends `items` to `context_id` as one batch on the shared stream (as
    /// [`crate::LedgerClient::append_batch`]: all stored with consecutive sequences, or none),
    /// in order with the other requests of the stream.
    pub async fn append_batch(
        &self,
        context_id: &str,
        items: Vec<NewEntry>,
    ) -> Result<Vec<Entry>, ClientError> {
        crate::refuse_keyed_batch_items(&items)?;
        match self
            .send(lpb::AppendStreamRequest {
                request_id: 0,
                append: None,
                batch: Some(convert::batch_request_to_pb(context_id, items)),
            })
            .await?
        {
            Answered::Batch(entries) => Ok(entries),
            Answered::Entry(_) => Err(invalid("a batch was answered with a single entry".into())),
        }
    }

    /// Sends `request` (its id is set here) and waits for its answer.
    async fn send(&self, mut request: lpb::AppendStreamRequest) -> Result<Answered, ClientError> {
        let stream = self.stream().await?;
        let permit = match stream.tx.reserve().await {
            Ok(p) => p,
            Err(_) => return Err(lock(&stream.state).ended_error()),
        };
        let (reply, answer) = oneshot::channel();
        {
            let mut state = lock(&stream.state);
            if let Some(ended) = &state.ended {
                return Err(ended.error());
            }
            state.next_id += 1;
            request.request_id = state.next_id;
            state.waiting.push_back((request.request_id, reply));
            // Sent while holding the lock, so the wire order is the order of `waiting`.
            permit.send(request);
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(lock(&stream.state).ended_error()),
        }
    }

    /// The open stream, or a new one if there is none or it has ended.
    async fn stream(&self) -> Result<Arc<Stream>, ClientError> {
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let _opening = self.inner.opening.lock().await;
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let (tx, rx) = mpsc::channel(PIPELINE_WINDOW);
        let inbound = self
            .inner
            .client
            .clone()
            .append_stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let state = Arc::new(Mutex::new(State::default()));
        tokio::spawn(read_answers(Arc::clone(&state), inbound));
        let stream = Arc::new(Stream { tx, state });
        *lock(&self.inner.current) = Some(Arc::clone(&stream));
        Ok(stream)
    }

    fn live(&self) -> Option<Arc<Stream>> {
        lock(&self.inner.current)
            .as_ref()
            .filter(|s| lock(&s.state).ended.is_none())
            .cloned()
    }
}

impl State {
    fn ended_error(&self) -> ClientError {
        self.ended
            .as_ref()
            .map_or_else(|| invalid("the append stream closed".into()), Ended::error)
    }
}

/// Routes each answer to its caller, in order; on the stream's end, fails every caller still
/// waiting with the reason.
async fn read_answers(state: Arc<Mutex<State>>, mut inbound: Streaming<lpb::AppendStreamResponse>) {
    let ended = loop {
        let answer = match inbound.message().await {
            Ok(Some(a)) => a,
            Ok(None) => {
                break Ended::Status(Code::Unavailable, "the node ended the append stream".into());
            }
            Err(s) => break Ended::Status(s.code(), s.message().to_owned()),
        };
        let Some((request_id, reply)) = lock(&state).waiting.pop_front() else {
            break Ended::Invalid(format!(
                "answer to request {} that was never sent",
                answer.request_id
            ));
        };
        if answer.request_id != request_id {
            let _ = reply.send(Err(invalid(format!(
                "answer to request {} where request {request_id} was next",
                answer.request_id
            ))));
            break Ended::Invalid("answers out of order".into());
        }
        let result = match answer.result {
            Some(Outcome::Entry(e)) => convert::entry_from_pb(e)
                .map(Answered::Entry)
                .map_err(invalid),
            Some(Outcome::Error(e)) => Err(ClientError::Status(Status::new(
                Code::from_i32(e.code),
                e.message,
            ))),
            Some(Outcome::Batch(b)) => b
                .entries
                .into_iter()
                .map(convert::entry_from_pb)
                .collect::<Result<Vec<_>, _>>()
                .map(Answered::Batch)
                .map_err(invalid),
            None => Err(invalid(format!("answer to request {request_id} is empty"))),
        };
        let _ = reply.send(result);
    };
    let waiting = {
        let mut state = lock(&state);
        state.ended = Some(ended.clone());
        std::mem::take(&mut state.waiting)
    };
    for (_, reply) in waiting {
        let _ = reply.send(Err(ended.error()));
    }
}
