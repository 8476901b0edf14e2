//! Writes this node serves as a context's writer: appends, batch appends and loads, handed to
//! the context's task and answered once acknowledged at their level. Where a write should go
//! (this node or another) is the caller's decision (the server's routing).

use crate::cluster::Cluster;
use crate::context::messages::{ContextMsg, Loaded};
use crate::error::{ClusterError, LoadFailure};
use ledger_core::{Entry, NewEntry};
use ledger_embedded::LoadOutcome;
use ledger_replication::AckLevel;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Pause between two attempts to begin a load while the writer establishes its epoch.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// The answer to an append queued with [`Cluster::queue_append`].
pub type AppendAnswer = oneshot::Receiver<Result<Arc<Entry>, ClusterError>>;

/// The node is shutting down: the context's task took nothing.
#[derive(Debug)]
pub struct ShuttingDown;

impl Cluster {
    /// An append on this node, the context's writer, answered once acknowledged at `level`.
    pub async fn append_here(
        self: &Arc<Self>,
        entry: NewEntry,
        level: AckLevel,
    ) -> Result<Arc<Entry>, ClusterError> {
        let context_id = entry.context_id.clone();
        self.ask_task(&context_id, |reply| ContextMsg::Append {
            entry,
            ack: level,
            reply,
        })
        .await
    }

    /// A batch append on this node, the context's writer: one message to the context's task
    /// (sequenced in one step, shipped, answered once its last entry is acknowledged at
    /// `level`). The caller validated the batch.
    pub async fn append_batch_here(
        self: &Arc<Self>,
        context_id: &str,
        items: Vec<NewEntry>,
        level: AckLevel,
    ) -> Result<Vec<Arc<Entry>>, ClusterError> {
        self.ask_task(context_id, |reply| ContextMsg::AppendBatch {
            items,
            ack: level,
            reply,
        })
        .await
    }

    /// Puts an append in its context's mailbox before this returns (so a stream's appends keep
    /// their order) and gives the receiver of its answer.
    pub async fn queue_append(
        self: &Arc<Self>,
        entry: NewEntry,
        level: AckLevel,
    ) -> Result<AppendAnswer, ShuttingDown> {
        let (reply, rx) = oneshot::channel();
        let context_id = entry.context_id.clone();
        self.to_task(
            &context_id,
            ContextMsg::Append {
                entry,
                ack: level,
                reply,
            },
        )
        .await
        .map_err(|_| ShuttingDown)?;
        Ok(rx)
    }

    /// Sends the context's task the message `msg` builds around a reply channel and waits
    /// for the answer. A task that is gone (the node is shutting down) took nothing: not the
    /// writer; an answer that never comes leaves the outcome unknown.
    async fn ask_task<T>(
        self: &Arc<Self>,
        context_id: &str,
        msg: impl FnOnce(oneshot::Sender<Result<T, ClusterError>>) -> ContextMsg,
    ) -> Result<T, ClusterError> {
        let (reply, rx) = oneshot::channel();
        self.to_task(context_id, msg(reply))
            .await
            .map_err(|_| ClusterError::NotWriter {
                node: self.me.node.to_string(),
                context_id: context_id.to_owned(),
                writer: "unknown (the node is shutting down)".into(),
            })?;
        rx.await.unwrap_or_else(|_| {
            Err(ClusterError::OutcomeUnknown {
                context_id: context_id.to_owned(),
                reason: "the node is shutting down".into(),
            })
        })
    }

    /// Runs `load` (the embedded ledger's load of a snapshot of `context_id`) on this node,
    /// the writer, between the context task's `LoadBegin` and `LoadEnd`, and waits until the
    /// loaded entries are acknowledged at `level`. Beginning is retried until `deadline` while
    /// the writer establishes its epoch.
    ///
    /// 1. the context's task is asked to begin ([`ContextMsg::LoadBegin`]): it answers with its
    ///    epoch if it is the active writer and refuses appends to the context until the load
    ///    ends;
    /// 2. `load` runs: the embedded ledger loads the snapshot exactly as on a single node
    ///    (verified, all or nothing, durable);
    /// 3. the task is told it ended ([`ContextMsg::LoadEnd`], also when the load failed or its
    ///    caller went away: a guard sends it): the writer takes the loaded entries as its next
    ///    entries and ships them to its followers like appends (who verify them again).
    pub async fn load_here<F, E>(
        self: &Arc<Self>,
        context_id: &str,
        level: AckLevel,
        deadline: Instant,
        load: F,
    ) -> Result<LoadOutcome, LoadFailure<E>>
    where
        F: Future<Output = Result<LoadOutcome, E>>,
    {
        let gone = || {
            LoadFailure::Cluster(ClusterError::NotWriter {
                node: self.me.node.to_string(),
                context_id: context_id.to_owned(),
                writer: "unknown (the node is shutting down)".into(),
            })
        };
        let (tx, epoch) = loop {
            // The task that answers with an epoch keeps running until LoadEnd (it is not idle
            // while a load runs), so LoadEnd goes to the same mailbox.
            let tx = self.mailbox(context_id);
            let (reply, rx) = oneshot::channel();
            if tx.send(ContextMsg::LoadBegin { reply }).await.is_err() {
                if self.stopping() {
                    return Err(gone());
                }
                continue; // it stopped (idle) meanwhile: start it again
            }
            match rx.await.map_err(|_| gone())? {
                Ok(epoch) => break (tx, epoch),
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(LoadFailure::Cluster(e)),
            }
        };
        let mut guard = EndGuard {
            cluster: Arc::clone(self),
            tx: tx.clone(),
            armed: true,
        };
        let outcome = load.await.map_err(LoadFailure::Load)?;
        guard.armed = false;
        let (reply, rx) = oneshot::channel();
        tx.send(ContextMsg::LoadEnd {
            loaded: Some(Loaded {
                epoch,
                outcome,
                ack: level,
                reply,
            }),
        })
        .await
        .map_err(|_| gone())?;
        match rx.await {
            Ok(r) => r.map_err(LoadFailure::Cluster),
            Err(_) => Err(LoadFailure::Cluster(ClusterError::OutcomeUnknown {
                context_id: context_id.to_owned(),
                reason: "the node is shutting down".into(),
            })),
        }
    }
}

/// Tells the context's task that a load ended without storing anything, unless disarmed:
/// a load whose caller went away must not keep the context's appends refused.
struct EndGuard {
    cluster: Arc<Cluster>,
    tx: mpsc::Sender<ContextMsg>,
    armed: bool,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if self.armed {
            let tx = self.tx.clone();
            self.cluster.spawn(async move {
                let _ = tx.send(ContextMsg::LoadEnd { loaded: None }).await;
            });
        }
    }
}
