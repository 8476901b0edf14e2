//! What a context task is asked to do ([`ContextMsg`]) and what it reports of its context
//! ([`ContextState`]).

use crate::error::ClusterError;
use crate::wire::KeyRecord;
use ledger_core::{Entry, Hash, NewEntry};
use ledger_embedded::LoadOutcome;
use ledger_replication::{AckLevel, Epoch, Message, Voter};
use std::sync::Arc;
use tokio::sync::oneshot;

pub(crate) type AppendReply = oneshot::Sender<Result<Arc<Entry>, ClusterError>>;
pub(crate) type LoadReply = oneshot::Sender<Result<LoadOutcome, ClusterError>>;
pub(crate) type BatchReply = oneshot::Sender<Result<Vec<Arc<Entry>>, ClusterError>>;

/// What a context task is asked to do.
pub(crate) enum ContextMsg {
    Append {
        entry: NewEntry,
        ack: AckLevel,
        reply: AppendReply,
    },
    /// A batch append (all or nothing, consecutive): sequenced in one step of the ledger,
    /// shipped like appends, answered once its last entry is acknowledged at `ack`.
    AppendBatch {
        items: Vec<NewEntry>,
        ack: AckLevel,
        reply: BatchReply,
    },
    Deliver {
        from: Voter,
        message: Message<Entry>,
        /// Idempotency keys of a batch's entries.
        keys: Vec<KeyRecord>,
    },
    State {
        reply: oneshot::Sender<ContextState>,
    },
    /// A replica settling a placement view asks: if this node writes the context and its
    /// replica set changed since its epoch was claimed, claim again under the current view.
    /// Answered with the state (its `settled` view) once the claim started or was not needed.
    Settle {
        reply: oneshot::Sender<ContextState>,
    },
    /// An operator accepts the loss of a majority the context's claim must consult: claim
    /// with the surviving replicas (answered with the epoch number and the size it starts
    /// from, or why not).
    AcceptLoss {
        reply: oneshot::Sender<Result<(u64, u64), ClusterError>>,
    },
    /// A load (`token`, unique on this node) is about to run on this node: answer with the
    /// epoch it runs in, if this node is the context's active writer (else why not; nothing was
    /// stored). Appends wait for its [`ContextMsg::LoadEnd`] (they are refused as "load in
    /// progress", like on one node).
    LoadBegin {
        token: u64,
        reply: oneshot::Sender<Result<Epoch, ClusterError>>,
    },
    /// The load `token` ended: `Some` if it stored its entries in the epoch it began in; `None`
    /// if this task is not told what it stored (it failed, or it was abandoned), so the task
    /// compares what it believes with what storage holds.
    LoadEnd { token: u64, loaded: Option<Loaded> },
}

/// A load that stored its entries (the last `outcome.entries_restored` up to
/// `outcome.latest_sequence`): replicate them, answer once acknowledged at `ack`.
pub(crate) struct Loaded {
    pub epoch: Epoch,
    pub outcome: LoadOutcome,
    pub ack: AckLevel,
    pub reply: LoadReply,
}

/// What this node holds of a context and does for it.
#[derive(Clone, Debug)]
pub struct ContextState {
    pub size: u64,
    pub root: Hash,
    /// The epoch of the last stored entry (or the writer's, while writing).
    pub epoch: Option<Epoch>,
    pub promised: Option<Epoch>,
    pub commit_index: u64,
    pub role: &'static str,
    /// While writing: each follower's durable, matching position.
    pub followers: Vec<(String, u64)>,
    /// The placement view version the writer's epoch was claimed under (0: not writing).
    pub settled: u64,
    /// `ok`, `waiting` (a required majority lacks members that are down) or `lost_quorum` (a
    /// majority of a set the claim must consult left the cluster: `cluster accept-loss`).
    pub availability: &'static str,
    /// The members a waiting or lost claim lacks.
    pub blocked: Vec<String>,
}
