//! What the state machines exchange with each other and ask of the runtime: messages (the
//! internal wire contract, `converge.ledger.cluster.v1`), commands, persisted state, settings.
//!
//! # Carrying out commands
//! Every step of a state machine returns a `Vec<Command>`. The runtime carries them out **in
//! order**, and a storage command ([`Command::Quarantine`], [`Command::SaveState`],
//! [`Command::Append`]) must be durable before any later command takes effect; consecutive
//! storage commands may be written as one atomic batch. This is how "persist before reply" is
//! expressed: a promise is answered by `SaveState` then `Send`, a batch is acknowledged by
//! `Append` then `Send`. A crash part-way leaves a prefix of the commands done, which the
//! protocol tolerates: a history saved ahead of its entries is clipped on restore
//! ([`crate::replica::Replica::restore`]).
//!
//! One exception: the `Append` of a writer's own new entries (returned by
//! [`crate::Participant::append`]) may become durable after the commands that follow it, so the
//! writer ships while its own disk syncs; the runtime reports when it is durable with
//! [`crate::Participant::on_local_durable`] and must have finished it before it carries out a
//! [`Command::SteppedDown`].
//!
//! If the runtime cannot carry out a command (its Merkle check of an `Append` fails, a write
//! fails), it drops the rest of the list and rebuilds the context's state machines from storage,
//! exactly as after a crash.

use crate::epoch::{Epoch, EpochHistory, LogView};
use crate::identity::NodeId;
use crate::quorum::Quorum;
use ledger_core::Hash;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What the protocol needs to know about an entry: its sequence. Everything else (content hash,
/// Lamport clock, Merkle root) is verified by the runtime when it applies entries, with
/// `ledger_core::tail::TailVerifier`.
pub trait LogEntry: Clone + fmt::Debug {
    fn sequence(&self) -> u64;
}

impl LogEntry for ledger_core::Entry {
    fn sequence(&self) -> u64 {
        self.sequence
    }
}

/// A replica's persisted protocol state for one context, next to its entries. The log size is
/// not part of it: it is the number of entries stored.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PersistentState {
    /// The highest epoch this replica promised: it refuses entries and promises of lower ones.
    pub promised: Option<Epoch>,
    /// The epochs of the stored entries (see [`crate::epoch`]).
    pub history: EpochHistory,
    /// A position known to be acknowledged by a quorum (may lag; never ahead of the truth). Reads
    /// that must only see committed entries stop here.
    pub commit_index: u64,
    /// The highest placement view version a claimant of this context promised under: claims
    /// made under an older view are refused ([`PromiseAnswer::StaleView`]). 0: no views (and
    /// absent from the encoding, so state saved before views decodes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub promised_view: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A replica's head as it reports it: in promise answers, in cursors, in fetched batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub promised: Option<Epoch>,
    pub size: u64,
    pub history: EpochHistory,
    pub commit_index: u64,
}

impl Head {
    /// The head's log as a view without a tail.
    pub fn view(&self) -> LogView<'_> {
        LogView::new(&self.history, self.size)
    }

    /// The key "best history" maximises: highest last epoch, then longest.
    pub fn rank(&self) -> (Option<&Epoch>, u64) {
        (self.history.last_epoch(), self.size)
    }
}

/// A replica's answer to a promise request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromiseAnswer {
    /// Promised: from now on the replica refuses lower epochs. Carries its head.
    Granted(Head),
    /// Already promised a higher epoch.
    Refused { promised: Epoch },
    /// The claim was made under an older placement view than this replica has seen: the
    /// claimant must learn `view` first (a removed node with a stale view never creates or takes
    /// a context).
    StaleView { view: u64 },
}

/// Why a batch of entries is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntriesKind {
    /// From the writer of `epoch` to a follower: the follower makes its log a prefix of the
    /// writer's (quarantining what parts from it) and appends.
    Replicate,
    /// From a replica to the claimant of `epoch` that asked for them (catch-up to the best
    /// history found by a claim).
    Fetched,
}

/// Everything about a batch except the entries: what a state machine decides. The runtime reads
/// the entries (and the Merkle root at the batch's end) from its store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntriesHeader {
    pub kind: EntriesKind,
    /// The writer's epoch (`Replicate`) or the claim's epoch (`Fetched`).
    pub epoch: Epoch,
    /// The sender's log: for `Replicate` the writer's history and size, for `Fetched` the
    /// serving replica's.
    pub head: Head,
    /// The writer's quorum-acknowledged position (`Replicate` only; 0 otherwise).
    pub commit_index: u64,
}

/// A batch of consecutive entries `prev + 1 ..= prev + entries.len()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entries<E> {
    pub header: EntriesHeader,
    pub prev: u64,
    pub entries: Vec<E>,
    /// The sender's Merkle root after the last entry of the batch, if it had it; the receiver's
    /// root after appending must be equal.
    pub root: Option<Hash>,
}

/// The internal replication messages. Each travels in an envelope naming the context and the
/// sending [`crate::identity::Voter`] (node id and incarnation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<E> {
    /// Claimant → replica: promise `epoch`, claimed under placement view `view` (0: no views).
    PromiseRequest { epoch: Epoch, view: u64 },
    /// Replica → claimant.
    PromiseReply { epoch: Epoch, answer: PromiseAnswer },
    /// Writer → follower (`Replicate`), or replica → claimant (`Fetched`).
    Entries(Entries<E>),
    /// Follower → writer: where my log is (durable), after every batch and when polling.
    Cursor(Head),
    /// Claimant → replica: send me entries `after + 1 ..= upto` of your log.
    FetchRequest { epoch: Epoch, after: u64, upto: u64 },
}

impl<E> Message<E> {
    /// The highest epoch the message tells of (used to track the highest epoch number seen).
    pub fn epoch_hint(&self) -> Option<&Epoch> {
        match self {
            Message::PromiseRequest { epoch, .. } | Message::FetchRequest { epoch, .. } => {
                Some(epoch)
            }
            Message::PromiseReply { epoch, answer } => match answer {
                PromiseAnswer::Refused { promised } => Some(promised.max(epoch)),
                PromiseAnswer::Granted(_) | PromiseAnswer::StaleView { .. } => Some(epoch),
            },
            Message::Entries(e) => Some(&e.header.epoch),
            Message::Cursor(head) => head.promised.as_ref(),
        }
    }
}

/// How durable an append must be before the client hears "ok".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AckLevel {
    /// On the writer's disk. A writer crash can lose the unreplicated tail (Kafka `acks=1`).
    Writer,
    /// On the disks of a majority of every set of the epoch's quorum (mirrors never count): never
    /// lost while a majority survives.
    Quorum,
    /// `Quorum`, and on every live member of the replica set.
    All,
}

/// Why a writer stopped writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepDown {
    /// A replica promised (or a writer holds) a higher epoch.
    Fenced { by: Epoch },
    /// Placement no longer names this node writer, or the replica set changed (a new epoch with
    /// a joint quorum follows).
    Placement,
}

/// What the runtime must do. See the module docs for the ordering contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<E> {
    /// Send a message to a node (in the envelope: the context and this voter).
    Send { to: NodeId, message: Message<E> },
    /// Read entries `after + 1 ..= upto` (and the Merkle root at `upto`) from the local store and
    /// send them as [`Message::Entries`] with this header (`after == upto`: no entries, a
    /// heartbeat or an epoch announcement).
    SendEntries {
        to: NodeId,
        header: EntriesHeader,
        after: u64,
        upto: u64,
    },
    /// Move entries `from_sequence..` out of the log into the context's quarantine (kept, never
    /// served, never merged). Durable before anything after it.
    Quarantine { from_sequence: u64 },
    /// Persist the protocol state (promise, history, commit index) with the context's head.
    SaveState(PersistentState),
    /// Append these entries (consecutive, right after the log's end) after verifying them with
    /// `TailVerifier`; if `expected_root` is set the root after the last one must equal it.
    Append {
        entries: Vec<E>,
        expected_root: Option<Hash>,
    },
    /// Appends of `epoch` up to `through` have reached `level` (complete waiting client requests
    /// of that epoch whose sequence is at most `through`).
    Acknowledged {
        epoch: Epoch,
        level: AckLevel,
        through: u64,
    },
    /// This node is now the writer of the context in `epoch`, established with `quorum`; its
    /// first entry gets `first_sequence`.
    Activated {
        epoch: Epoch,
        first_sequence: u64,
        quorum: Quorum,
    },
    /// This node stopped writing the context: pending client requests of that epoch end with
    /// an unknown outcome (they may or may not survive).
    SteppedDown { epoch: Epoch, reason: StepDown },
}

/// Protocol timings and limits. Every duration is in milliseconds of the clock the runtime
/// passes in (the state machines never read a clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Replication factor R (capped at the member count).
    pub replication_factor: usize,
    /// A writer that has not heard from a majority for this long stops accepting appends.
    pub writer_lease_ms: u64,
    /// A writer sends a heartbeat to a follower it has sent nothing to for this long.
    pub heartbeat_ms: u64,
    /// Unacknowledged batches are sent again after this long.
    pub retransmit_ms: u64,
    /// A follower that heard nothing from its writer for this long sends it a cursor.
    pub poll_ms: u64,
    /// A claim that has not completed after this long starts over with a higher epoch.
    pub claim_timeout_ms: u64,
    /// Wait this long after a claim was refused before claiming again.
    pub claim_backoff_ms: u64,
    /// Most entries in one batch.
    pub max_batch: u64,
    /// Most entries sent to a follower beyond what it acknowledged (flow control).
    pub max_in_flight: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            replication_factor: 3,
            writer_lease_ms: 2_000,
            heartbeat_ms: 100,
            retransmit_ms: 500,
            poll_ms: 500,
            claim_timeout_ms: 2_000,
            claim_backoff_ms: 200,
            max_batch: 512,
            max_in_flight: 4_096,
        }
    }
}
