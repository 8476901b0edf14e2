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
//! - **Epochs** ([`epoch`]): `(number, writer)`, totally ordered. Every replica keeps the
//!   `(epoch, first sequence)` history of its log, like Kafka's leader-epoch checkpoint.
//! - **Claim** ([`claim`]): a node that placement names writer asks the replica set to promise a
//!   new epoch (above every epoch it has seen). A replica promises only epochs above the one it
//!   holds, saves the promise before answering, and answers with its head. With promises from a
//!   majority (of the old *and* the new replica set while the set changes), the claimant takes the
//!   best history among the answers (highest last epoch, then longest), catches up to it, writes
//!   its epoch record, and only then accepts appends.
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
//! - **Creating a context needs the whole set.** A claim that finds no history at all (its own log
//!   and every answer empty) needs every member of the target set: after a change of the set a
//!   majority may be a newcomer plus a member that never received anything.
//! - **One reconfiguration at a time.** A replica set may change by one member at a time, the next
//!   change waiting until the previous one is established ([`Participant::is_settled`]); likewise
//!   a member that lost its data must be caught up before another change. Two overlapping changes
//!   (or a change while a wiped member recovers) are two faults, and a 3-replica set survives one.
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
//! - Apply membership removals one at a time ([`Participant::is_settled`]).
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
