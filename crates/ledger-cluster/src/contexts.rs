//! How the rest of the runtime reaches context tasks: a context's mailbox (its task started on
//! first use, or again after it stopped idle), messages handed to it, what it may serve and
//! what it holds.

use crate::cluster::Cluster;
use crate::commit_index::{FIRST_VALUE_WAIT, ReadCap};
use crate::context::messages::{ContextMsg, ContextState};
use crate::context::task::ContextTask;
use crate::error::ClusterError;
use crate::wire::KeyRecord;
use ledger_replication::Voter;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

impl Cluster {
    /// The context's task mailbox, starting the task on first use (or again, after it stopped
    /// idle). While the node shuts down: a closed mailbox.
    pub(crate) fn mailbox(self: &Arc<Self>, context_id: &str) -> mpsc::Sender<ContextMsg> {
        self.contexts.mailbox(
            context_id,
            || self.stopping(),
            |rx| {
                self.spawn(ContextTask::run(
                    Arc::clone(self),
                    context_id.to_owned(),
                    rx,
                ));
            },
        )
    }

    /// Puts `msg` in the context task's mailbox (waiting for room), starting the task if it is
    /// not running or stopped meanwhile (an idle task stops: see [`crate::context`]). Gives the
    /// message back only when the node is shutting down.
    pub(crate) async fn to_task(
        self: &Arc<Self>,
        context_id: &str,
        mut msg: ContextMsg,
    ) -> Result<(), ContextMsg> {
        loop {
            match self.mailbox(context_id).send(msg).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(m)) if !self.stopping() => msg = m,
                Err(mpsc::error::SendError(m)) => return Err(m),
            }
        }
    }

    /// Hands a peer's message to its context's task (waiting for room in the mailbox).
    pub(crate) async fn deliver(
        self: &Arc<Self>,
        context_id: String,
        from: Voter,
        message: ledger_replication::Message<ledger_core::Entry>,
        keys: Vec<KeyRecord>,
    ) {
        let msg = ContextMsg::Deliver {
            from,
            message,
            keys,
        };
        let _ = self.to_task(&context_id, msg).await;
    }

    /// What this node may serve of `context_id`: its commit index (starting the context's task
    /// if needed, which then learns it from the writer).
    pub async fn read_cap(self: &Arc<Self>, context_id: &str) -> ReadCap {
        self.read_cap_within(context_id, FIRST_VALUE_WAIT).await
    }

    /// [`Cluster::read_cap`], waiting at most `wait` for a task that has just started to say
    /// what is committed (a read with a deadline of its own).
    pub async fn read_cap_within(self: &Arc<Self>, context_id: &str, wait: Duration) -> ReadCap {
        let rx = self.commits.subscribe(context_id);
        if rx.borrow().is_none() {
            let _ = self.mailbox(context_id);
        }
        ReadCap::new(rx, wait.min(FIRST_VALUE_WAIT)).await
    }

    /// `context_id`'s task settles the current placement view (see [`crate::views::settle`]):
    /// what storage holds, with the view its epoch stands on and whether it can take appends.
    pub async fn settle_here(
        self: &Arc<Self>,
        context_id: &str,
    ) -> ledger_proto::cluster::v1::ContextStateResponse {
        let (reply, rx) = oneshot::channel();
        let state = match self.to_task(context_id, ContextMsg::Settle { reply }).await {
            Ok(()) => rx.await.ok(),
            Err(_) => None,
        };
        let mut answer = self
            .local_context_state(context_id)
            .await
            .unwrap_or_default();
        answer.view = self.views.version();
        if let Some(s) = state {
            answer.settled = s.settled;
            s.availability.clone_into(&mut answer.availability);
            answer.blocked = s.blocked;
        }
        answer
    }

    /// `cluster accept-loss` on this node, the context's writer: see [`ContextMsg::AcceptLoss`].
    pub async fn accept_loss_here(
        self: &Arc<Self>,
        context_id: &str,
    ) -> Result<(u64, u64), ClusterError> {
        let (reply, rx) = oneshot::channel();
        self.to_task(context_id, ContextMsg::AcceptLoss { reply })
            .await
            .map_err(|_| ClusterError::NoLossToAccept {
                context_id: context_id.to_owned(),
                why: "the node is shutting down".into(),
            })?;
        rx.await.unwrap_or_else(|_| {
            Err(ClusterError::NoLossToAccept {
                context_id: context_id.to_owned(),
                why: "the node is shutting down".into(),
            })
        })
    }

    /// What this node holds of `context_id` (starting its task if needed).
    pub async fn context_state(self: &Arc<Self>, context_id: &str) -> Option<ContextState> {
        let (reply, rx) = oneshot::channel();
        self.to_task(context_id, ContextMsg::State { reply })
            .await
            .ok()?;
        rx.await.ok()
    }
}
