//! The replication protocol of a Converge Ledger cluster, as pure, synchronous state machines.
//!
//! Nothing here does I/O, spawns tasks or reads a clock: each state machine takes an event (a
//! membership view, a message, an append, the current time in milliseconds) and returns
//! [`Command`]s — persist this, append that, send this message, acknowledge those appends — which
//! the node runtime carries out in order (see [`protocol`] for the exact contract). So the whole
//! protocol runs in a deterministic simulation (`tests/simulation.rs`) with crashes, restarts,
//! lost data, message loss, reordering and partitions, thousands of schedules per test run.
//!
//! # The protocol in one page
//! No Raft log and no per-entry votes: the writer of a context is **designated** by placement,
//! and **epochs** fence it.
//!
//! - **Placement** ([`placement`]): the replica set of context `C` is the first `R` members in
//!   rendezvous order of `SHA-256(C ‖ 0 ‖ node)`, dead or alive; the writer is the first live one.
//!   Members come from an agreed, versioned **placement view** ([`views`]): every node applies
//!   the same view changes in the same order (gossip only says who is alive).
//! - **Epochs** ([`epoch`]): `(number, writer)`, totally ordered. Every replica keeps the
//!   `(epoch, first sequence)` history of its log, like Kafka's leader-epoch checkpoint.
//! - **Claim** ([`claim`]): a node that placement names writer asks the replica set to promise a
//!   new epoch (above every epoch it has seen) under its current view. A replica promises only
//!   epochs above the one it holds and only for claims of a view at least as new as it has seen,
//!   saves the promise before answering, and answers with its head. With promises from a majority
//!   of the target set, of every set the histories name as not yet committed, and of the
//!   context's set in every earlier view not yet settled everywhere, the claimant takes the best
//!   history among the answers (highest last epoch, then longest), catches up to it, writes its
//!   epoch record, and only then accepts appends.
//! - **Replication** ([`writer`], [`replica`]): the writer assigns sequences and ships batches; a
//!   follower accepts only epochs at or above its promise, quarantines whatever part of its log is
//!   not the writer's (KIP-101 truncation, by comparing epoch histories), appends, and acknowledges
//!   only what is durable.
//! - **Acknowledgement** levels `writer | quorum | all` ([`AckLevel`]); `quorum` counts a majority
//!   of the replica set including the writer, never mirrors, and only replicas holding the
//!   current epoch's record.
//! - **Lease**: a writer that has not heard from a majority for `writer_lease_ms` stops accepting
//!   appends. Safety never depends on it (epochs do that); it keeps the divergent tail of a writer
//!   cut off in a minority short.
//! - **Lost data** ([`identity`]): a node that lost its data comes back as a new incarnation, a
//!   new voter; the sets recorded for earlier epochs name the old one, so the next epoch needs a
//!   majority without it (a joint quorum), and it counts for acknowledgements only once it holds
//!   the new epoch's record, i.e. once it caught up.
//!
//! # Safety argument (what the simulation checks after every step)
//! 1. *Fencing.* Epochs are totally ordered and a replica never goes back on a promise, which it
//!    saves before answering or accepting. A writer below a replica's promise gets nothing from it.
//! 2. *Log matching.* A writer assigns each sequence once in its epoch and never reuses an epoch
//!    (the epoch includes its incarnation); a replica accepts a writer's entries only in order,
//!    after truncating to the writer's log. So the same epoch at the same sequence means the same
//!    entries up to there, and epoch histories alone show where two logs part (Merkle roots are
//!    checked on top by the runtime).
//! 3. *Promise majorities meet acknowledgement majorities.* An entry acknowledged at `quorum` in
//!    epoch `e` is durable on a majority of every set of `e`'s quorum; a later epoch needs promises
//!    from a majority of a set it shares with `e` (the same target, or a joint quorum during a
//!    reconfiguration), so one answer comes from a replica that accepted the entry before
//!    promising. Its history ranks at least as high as the entry's epoch, so the best history
//!    contains the entry, and the new writer catches up to it before writing: **an acknowledged
//!    entry survives every change of writer while a majority survives.**
//! 4. *Quarantine, not merge.* What a replica removes is exactly what parts from the current
//!    writer's log; by 3 it was never acknowledged at `quorum`. It is moved aside, never served as
//!    committed ([`replica::Replica::commit_index`] bounds committed reads).
//! 5. *Membership changes by views.* Every entry acknowledged at `quorum` lives on a majority of
//!    the context's set in the view its epoch was claimed under, or (once its writer confirmed or
//!    re-claimed the context under a later view and that record committed) in a later view. A
//!    member records *settled* at `v` only when every context it holds lives so in a view `≥ v`;
//!    the **floor** is the lowest settled mark over the current members, dead ones included
//!    (a dead member may hold the only copies an older set's majority had, so it holds the floor
//!    until it leaves). A claim consults the context's set in every view from the floor up, so it
//!    meets a holder of every acknowledged entry: through any number of joins, leaves, updates
//!    and wipes, in any order, as long as each set loses at most a minority of its copies
//!    before it is settled again.
//! 6. *Creation.* A claim that finds no history in any of those majorities creates the context:
//!    had it ever held an acknowledged entry, one of those majorities would hold it (5). Replicas
//!    refuse claims of a view older than one they saw ([`PromiseAnswer::StaleView`]): a claim of a
//!    view older than the floor could skip sets still needed, but every current member saw a view
//!    at least at the floor, and the sets of the newer views a creating claim consulted promised
//!    under that newer view (saved with the promise), so a removed node with a stale view never
//!    creates or takes a context. A node the view names in another incarnation (it lost its data)
//!    takes no part as a member until a view names its new incarnation.
//! 7. *Compaction.* An epoch record that covers no entry (the next record starts at the same
//!    sequence) is dropped, except the newest committed one: no sequence changes epoch, so log
//!    matching and truncation are unchanged; an epoch that wrote nothing acknowledged nothing;
//!    the record after it was claimed with its sets required; claims need only the newest
//!    committed record's target set. Idle stop/start cycles leave at most two records besides
//!    those covering entries.
//!
//! # Design choices
//! - **Epoch writer is a voter.** `Epoch { number, writer }` names the writer's node id *and*
//!   incarnation: a node that lost its data could otherwise pick the number its previous
//!   incarnation wrote in and collide with entries it no longer knows about.
//! - **Re-granting the same epoch.** A replica grants a promise iff the epoch is not below the one
//!   it holds; equal means the same claimant asking again after a lost answer.
//! - **Epoch records carry their quorum.** Each `(epoch, first sequence)` record also holds the
//!   replica sets it was established with and a `committed` flag (held by majorities of all of
//!   them). A claim needs majorities of: its target set, the target set of the latest committed
//!   record it learns of, and every set of each later record. That is the "old and new set"
//!   rule of a reconfiguration, learned from histories rather than from (unsynchronised) gossip.
//! - **Creating a context needs majorities, not the whole set.** Under a placement view a claim
//!   that finds no history creates the context with majorities of the target set and of the
//!   context's sets in the unsettled earlier views (6), so one dead member never blocks new
//!   contexts. Without views (view 0, [`Participant::on_membership`]) it still needs every member
//!   of the target set: a majority could be a newcomer plus a member that never received
//!   anything.
//! - **Views change one at a time, by agreement.** [`ViewLog::next_change`] makes at most one
//!   change at a time and only once every live member settled the current version; new
//!   incarnations and promotions first, then joins, then demotions, then leaves of dead members,
//!   never shrinking the sets below what the operator asked for on the way. Safety does not rest
//!   on the pacing (every unsettled view's set is consulted, 5); the pacing keeps the number of
//!   sets a claim needs small. Removing a member that still holds copies (or a wipe) is a data
//!   fault; a set survives one before it settled again. When a set's majority left the view,
//!   its context reports [`Availability::LostQuorum`] until an operator accepts the loss
//!   ([`Participant::accept_loss`]: the survivors' history becomes the context's).
//! - **No epoch duels.** A claim that ends before it chose a history (no majority answered, or a
//!   newer view was seen) is retried with the same epoch, so a node cut off from a majority does
//!   not raise epochs and cannot depose a healthy writer when it heals.
//! - **Quorum counts the epoch record.** A follower counts for `quorum` only once it holds the
//!   current epoch's record (reached its first sequence), so older epochs' entries are committed
//!   only together with the new epoch (Raft's rule), and a new incarnation counts only once caught
//!   up.
//! - **Catch-up through the own replica.** The claimant's fetched entries go through the same
//!   [`Replica::on_entries`] path as a writer's batches (with the best history as the "writer's"
//!   log), so its own divergent suffix is quarantined by the same code.
//! - **The writer ships ahead of its own fsync.** The `Append` of the writer's own new entries
//!   (from [`Participant::append`]) is the one storage command the runtime may complete *after*
//!   the commands that follow it: the entries go to the followers while the writer's disk syncs,
//!   so the writer's and the followers' fsyncs overlap instead of adding up. The writer counts
//!   itself for acknowledgements only up to what the runtime reports durable
//!   ([`Participant::on_local_durable`]); a follower's cursor still reports only its durable log.
//!   So an entry acknowledged at `quorum` is still on a majority's disks, the writer possibly not
//!   among them. If the writer crashes before its own sync, its log restarts shorter than what
//!   the followers hold *in its own epoch*; that is the ordinary "replica behind" case of the
//!   next claim (the best history is the longest of the highest epoch), not a divergence.
//!
//! # Layout
//! - [`identity`]: node ids, incarnations, voters.
//! - [`placement`]: members, rendezvous replica sets, the writer.
//! - [`views`]: the versioned placement view log: records, settled marks, the floor, the
//!   coordinator's next change.
//! - [`availability`]: whether a context can get a writer, and what blocks it.
//! - [`quorum`]: majorities of one or several replica sets.
//! - [`epoch`]: epochs, epoch histories, KIP-101 `end_of_epoch`, `common_prefix`.
//! - [`protocol`]: messages (the internal wire contract), commands, persisted state, settings.
//! - [`replica`]: promises, fencing, truncation, appends, cursors.
//! - [`claim`]: becoming writer: promises, best history, catch-up, activation.
//! - [`writer`]: the active writer: sequences, shipping, acknowledgements, lease, stepping down.
//! - [`participant`]: one node's part in one context, composing the three; what the runtime
//!   drives.
//! - [`digest`]: anti-entropy between two nodes: a tree of fixed token ranges over
//!   `(context, size, root, epoch)` items, compared range by range in a bounded conversation
//!   ([`DigestSession`]) that yields the contexts on which they differ.
//!
//! # What the runtime must do
//! - Persist [`PersistentState`] (promise, epoch history, commit index) with the context's head,
//!   atomically with or before the entries a command list appends, and restore it with the
//!   number of stored entries ([`Participant::new`]).
//! - Generate an [`Incarnation`] (a random `u64`) when it creates the data directory, keep it
//!   there, announce it in gossip; a node whose data directory is gone must come back with a new
//!   one.
//! - Carry [`Message`]s between nodes in envelopes naming the context and the sender's
//!   [`Voter`]; fill [`Command::SendEntries`] from the store, with the Merkle root at `upto`.
//! - Verify every [`Command::Append`] with `ledger_core::tail::TailVerifier` (and its
//!   `expected_root`), and on any failure rebuild the participant from storage.
//! - Report the local log's durable size after storing the writer's own entries
//!   ([`Participant::on_local_durable`]); finish those stores before acting on a `SteppedDown`.
//! - Feed membership views, appends and a clock ([`Participant::tick`] every few tens of ms).
//! - Keep the [`ViewLog`] (a reserved context every node holds), apply what
//!   [`ViewLog::next_change`] proposes (on the node that writes that context) and nothing else,
//!   and give every participant the current view's members with gossip's liveness (a member
//!   whose announced incarnation differs from the view's is dead) and [`ViewLog::range`]
//!   ([`Participant::on_view`]), before it handles messages after a restart.
//! - Settle: call [`Participant::settle`] on the contexts it holds and append
//!   [`ViewRecord::Settled`] for its view once every context it holds (stored entries or an
//!   epoch history) is settled there: [`Participant::settled_view`] on its writer, or
//!   [`Participant::is_settled`] on a replica.
//!
//! [`NodeId`] is a cluster node's id (a Merkle tree node is `ledger_core::TreeNodeId`).

pub mod availability;
pub mod claim;
pub mod digest;
pub mod epoch;
pub mod identity;
pub mod participant;
pub mod placement;
pub mod protocol;
pub mod quorum;
pub mod replica;
pub mod views;
pub mod writer;

pub use availability::{AcceptLossError, Availability};
pub use claim::{Claim, ClaimFailure, ClaimScope, ClaimState};
pub use digest::{
    Difference, DifferenceKind, Digest, DigestError, DigestItem, DigestMessage, DigestPart,
    DigestSession, DigestSettings, DigestStats, RangeId, RangeSummary,
};
pub use epoch::{Epoch, EpochHistory, EpochRecord, LogView, common_prefix, end_of_epoch};
pub use identity::{Incarnation, NodeId, Voter};
pub use participant::{Participant, RoleState};
pub use placement::{Member, MemberState, Role, replica_set, writer as placement_writer};
pub use protocol::{
    AckLevel, Command, Entries, EntriesHeader, EntriesKind, Head, LogEntry, Message,
    PersistentState, PromiseAnswer, Settings, StepDown,
};
pub use quorum::Quorum;
pub use replica::Replica;
pub use views::{
    NextChange, PlacementView, ViewChange, ViewError, ViewLog, ViewRange, ViewRecord, set_changed,
};
pub use writer::{AppendError, Writer};
