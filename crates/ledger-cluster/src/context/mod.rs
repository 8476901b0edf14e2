//! Context tasks: one task per context this node takes part in (`ContextTask`). It owns the
//! context's replication [`Participant`](ledger_replication::Participant), feeds it appends,
//! peer messages, membership views and clock ticks, and carries out the commands it returns, in
//! order, against the embedded ledger and the peer links.
//!
//! - **Writer.** An append is checked against the participant (is this node the active
//!   writer, within its lease?), then sequenced by the embedded ledger like any local append
//!   (ids, clocks, hashes, group commit, watchers). As soon as it is *sequenced*, in sequence
//!   order, it is handed to the participant, which ships it to the followers while the
//!   writer's own disk syncs it (the participant's own `Append` of those entries is skipped:
//!   the ledger is storing them already). When the local sync completes the participant is
//!   told (`on_local_durable`): the writer counts itself for acknowledgements only from then.
//!   Appends are answered when their level is reached (`Command::Acknowledged`). A batch
//!   (`ContextMsg::AppendBatch`) is sequenced by the ledger in one step, its entries handed
//!   on with the appends around it, and it is answered once its last entry's level is reached.
//! - **Follower.** Batches from the writer go through `Ledger::apply` (content hashes, clocks
//!   and the writer's root verified, then the normal group commit, so watchers here see them
//!   like local appends); the cursor back to the writer goes out only after that.
//! - **Failure.** If a command cannot be carried out (a batch fails verification, storage
//!   fails), the rest is dropped, waiting appends end with "outcome unknown", and the
//!   participant is rebuilt from storage, exactly as after a restart.
//!
//! - **Idle.** A task with nothing to do stops, so a node's background work does not grow with
//!   every context it ever served (each running task ticks, and a writer heartbeats every
//!   follower several times a second). After `context_idle_ms` without a client request and
//!   without the log moving, with nothing in flight: a writer stops once it is quiet (every
//!   entry committed and held by every replica it ships to: [`ledger_replication::Writer::
//!   is_quiet`]); a follower stops once it holds everything it knows committed and has heard
//!   no peer for longer than a heartbeat interval but less than its poll interval — so it
//!   stops after its writer did, before it would poll the writer and start it again. Nothing
//!   is lost: the next append, peer message, anti-entropy repair or status request starts the
//!   task again from storage, as after a restart; a writer then claims a new epoch before its
//!   first append (one round trip to the replicas). Reads on a stopped follower keep the
//!   commit index it last published.
//!
//! The mailbox is bounded: a peer stream that delivers faster than the context stores waits,
//! so a slow context slows only its own stream's reader, never the writer's memory.
//!
//! # Layout
//! - [`messages`]: what a task is asked (`ContextMsg`) and what it reports
//!   ([`ContextState`](messages::ContextState)).
//! - `registry`: the mailboxes of the running tasks, handed out and retired under one lock.
//! - `task`: the task itself: its state, the mailbox loop, the idle rule.
//! - `writer`: the writer's local appends, batches and loads, from sequenced to answered.
//! - `pipeline`: the queues those local appends wait in (sequenced, then durable).
//! - `acks`: appends waiting for their acknowledgement level, and when they are answered.
//! - `executor`: carrying out the participant's commands against storage and peer links.
//! - `coalesce`: several peer messages' commands stored in one write.
//! - `recent`: the newest entries (and their idempotency keys), shipped without a read.

mod acks;
mod coalesce;
mod executor;
pub mod messages;
mod pipeline;
mod recent;
pub(crate) mod registry;
pub(crate) mod task;
mod writer;
