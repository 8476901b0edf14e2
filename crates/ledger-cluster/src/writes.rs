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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Pause between two attempts to begin a load while the writer establishes its epoch.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Tells this node's loads apart (a context task ends only the load it began).
static NEXT_LOAD: AtomicU64 = AtomicU64::new(1);

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
    /// 3. the task is told it ended ([`ContextMsg::LoadEnd`]): the writer takes the loaded
    ///    entries as its next entries and ships them to its followers like appends (who verify
    ///    them again).
    ///
    /// Steps 2 and 3 run in a task of this member's, not in the caller: a caller that goes away
    /// (its deadline, its client gone) after the load's final apply must not leave the context's
    /// task believing the old size. A guard ends the load as unseen if that task is aborted
    /// (shutdown) or the caller goes away before the load starts; the context's task then
    /// compares its size with storage's.
    pub async fn load_here<F, E>(
        self: &Arc<Self>,
        context_id: &str,
        level: AckLevel,
        deadline: Instant,
        load: F,
    ) -> Result<LoadOutcome, LoadFailure<E>>
    where
        F: Future<Output = Result<LoadOutcome, E>> + Send + 'static,
        E: Send + 'static,
    {
        let gone = || {
            LoadFailure::Cluster(ClusterError::NotWriter {
                node: self.me.node.to_string(),
                context_id: context_id.to_owned(),
                writer: "unknown (the node is shutting down)".into(),
            })
        };
        let token = NEXT_LOAD.fetch_add(1, Ordering::Relaxed);
        let (guard, epoch) = loop {
            // The task that answers with an epoch keeps running until LoadEnd (it is not idle
            // while a load runs), so LoadEnd goes to the same mailbox.
            let tx = self.mailbox(context_id);
            let (reply, rx) = oneshot::channel();
            // Armed before the task can answer: a caller gone while the answer is on its way
            // still ends the load.
            let guard = EndGuard {
                cluster: Arc::clone(self),
                tx: tx.clone(),
                token,
                armed: true,
            };
            if tx
                .send(ContextMsg::LoadBegin { token, reply })
                .await
                .is_err()
            {
                guard.disarm();
                if self.stopping() {
                    return Err(gone());
                }
                continue; // it stopped (idle) meanwhile: start it again
            }
            match rx.await {
                Ok(Ok(epoch)) => break (guard, epoch),
                Ok(Err(e)) if e.is_retryable() && Instant::now() < deadline => {
                    guard.disarm();
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Err(e)) => {
                    guard.disarm();
                    return Err(LoadFailure::Cluster(e));
                }
                Err(_) => {
                    guard.disarm();
                    return Err(gone());
                }
            }
        };
        let (done, answer) = oneshot::channel();
        let ctx = context_id.to_owned();
        self.spawn(async move {
            let r = match load.await {
                Err(e) => {
                    guard.end(None).await;
                    Err(LoadFailure::Load(e))
                }
                Ok(outcome) => {
                    let (reply, acked) = oneshot::channel();
                    let loaded = Loaded {
                        epoch,
                        outcome,
                        ack: level,
                        reply,
                    };
                    guard.end(Some(loaded)).await;
                    let acknowledged = acked.await.unwrap_or_else(|_| {
                        Err(ClusterError::OutcomeUnknown {
                            context_id: ctx,
                            reason: "the node is shutting down".into(),
                        })
                    });
                    acknowledged.map_err(LoadFailure::Cluster)
                }
            };
            let _ = done.send(r);
        });
        answer.await.unwrap_or_else(|_| {
            Err(LoadFailure::Cluster(ClusterError::OutcomeUnknown {
                context_id: context_id.to_owned(),
                reason: "the node is shutting down".into(),
            }))
        })
    }
}

/// Ends load `token` on the context's task as unseen (`LoadEnd` without an outcome) when
/// dropped armed: a load whose caller or runner went away must not keep the context's appends
/// refused, nor leave the task unaware of what the load stored.
struct EndGuard {
    cluster: Arc<Cluster>,
    tx: mpsc::Sender<ContextMsg>,
    token: u64,
    armed: bool,
}

impl EndGuard {
    /// The load was not begun: nothing to end.
    fn disarm(mut self) {
        self.armed = false;
    }

    /// Tells the task the load ended (`loaded`: what it stored). If this is dropped before the
    /// message is in the mailbox, the guard ends the load as unseen instead.
    async fn end(mut self, loaded: Option<Loaded>) {
        let end = ContextMsg::LoadEnd {
            token: self.token,
            loaded,
        };
        // A closed mailbox: the task is gone (shutdown), and with it what it believed.
        let _ = self.tx.send(end).await;
        self.armed = false;
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if self.armed {
            let (tx, token) = (self.tx.clone(), self.token);
            self.cluster.spawn(async move {
                let _ = tx
                    .send(ContextMsg::LoadEnd {
                        token,
                        loaded: None,
                    })
                    .await;
            });
        }
    }
}
