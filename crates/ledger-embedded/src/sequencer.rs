//! The sequencer: the single writer of every context.
//!
//! The sequencer thread (`ledger-sequencer`) owns the heads of all contexts it has touched. It
//! takes every queued command (up to a batch limit), assigns sequence, Lamport clock, time, id
//! and content hash to each append, extends the Merkle frontier, and groups the result into one
//! commit per context. It hands each group to the committer (see [`crate::commit`]) through a
//! rendezvous: while the committer writes group N, the sequencer prepares group N+1 from
//! everything that arrived meanwhile, so the disk never waits for hashing and groups grow with
//! load.
//!
//! Pre-sequenced entries (a load's verified tail) are **applied** through the same groups: a
//! load reserves its context ([`Command::LoadBegin`]), stages its rows off this thread, and
//! sends one [`Command::Apply`] whose commit makes them visible, durable and published like any
//! append. Other contexts' appends never wait for a load.
//!
//! A quarantine ([`Command::Quarantine`], carried out by `Sequencer::quarantine`) waits, like a load's start,
//! for everything sequenced before it to be durable, then cuts its context back on this thread,
//! so the cached head, the durable view, the idempotency cache and the watchers all change
//! before the next command is sequenced.

use crate::commit::{Group, Reply, Work, WritePath, entries_in};
use crate::dedupe::{Dedupe, Seen};
use crate::error::LedgerError;
use crate::fail::FailState;
use ledger_core::{Entry, Hash, LamportClock, NewEntry};
use ledger_storage::{ContextCommit, ContextHead, LogStore, QuarantineInfo};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Heads kept in memory; the map is emptied when it grows past this (heads reload lazily).
const HEAD_CACHE_LIMIT: usize = 200_000;
/// Idempotency keys and counts kept in memory (the store has them all).
const DEDUPE_CACHE_LIMIT: usize = 100_000;

pub(crate) struct AppendCmd {
    pub entry: NewEntry,
    pub reply: oneshot::Sender<Result<Arc<Entry>, LedgerError>>,
    /// Told the entry as soon as it is sequenced (before it is durable), if given.
    pub sequenced: Option<oneshot::Sender<Arc<Entry>>>,
}

/// A batch append: every entry sequenced consecutively into one commit of one group (so all
/// or none are stored), answered once.
pub(crate) struct BatchCmd {
    pub context_id: String,
    pub entries: Vec<NewEntry>,
    pub reply: oneshot::Sender<Result<Vec<Arc<Entry>>, LedgerError>>,
    /// Told the entries as soon as they are sequenced (before they are durable), if given.
    pub sequenced: Option<oneshot::Sender<Vec<Arc<Entry>>>>,
}

/// Reserve a context for a load: appends to it are refused until the load applies or gives up.
pub(crate) struct LoadBeginCmd {
    pub context_id: String,
    pub token: u64,
    /// The context's head once everything sequenced before is durable.
    pub reply: oneshot::Sender<Result<ContextHead, LedgerError>>,
}

/// Apply a verified commit of pre-sequenced entries (and rows staged before it).
pub(crate) struct ApplyCmd {
    pub commit: ContextCommit,
    /// The load reservation this apply ends, if any.
    pub token: Option<u64>,
    /// Idempotency keys of the commit's entries: (sequence, key, fingerprint), by sequence.
    pub keys: Vec<(u64, String, Hash)>,
    pub reply: oneshot::Sender<Result<ContextHead, LedgerError>>,
}

/// Cut a context back to `from_sequence - 1` entries, moving the rest aside.
pub(crate) struct QuarantineCmd {
    pub context_id: String,
    pub from_sequence: u64,
    pub reason: String,
    pub reply: oneshot::Sender<Result<Option<QuarantineInfo>, LedgerError>>,
}

pub(crate) enum Command {
    Append(AppendCmd),
    AppendBatch(BatchCmd),
    LoadBegin(LoadBeginCmd),
    Apply(ApplyCmd),
    Quarantine(QuarantineCmd),
}

impl Command {
    fn weight(&self) -> usize {
        match self {
            Command::Append(a) => a.entry.payload.len() + 256,
            Command::AppendBatch(b) => b.entries.iter().map(|e| e.payload.len() + 256).sum(),
            Command::LoadBegin(_) | Command::Quarantine(_) => 256,
            Command::Apply(a) => a.commit.entries.iter().map(|e| e.encoded_len()).sum(),
        }
    }
}

/// Contexts reserved by loads in progress: context id → the load's token.
pub(crate) type Reservations = Arc<Mutex<HashMap<String, u64>>>;

/// What a load did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOutcome {
    /// Entries written by this load (0 when the snapshot was already contained).
    pub entries_restored: u64,
    /// The context's size afterwards.
    pub latest_sequence: u64,
}

pub(crate) struct Sequencer {
    pub path: WritePath,
    pub store: Arc<dyn LogStore>,
    pub failed: Arc<FailState>,
    pub max_batch_entries: usize,
    pub max_batch_bytes: usize,
    pub heads: HashMap<String, ContextHead>,
    pub dedupe: Dedupe,
    pub reserved: Reservations,
    pub recent: RecentGroups,
}

/// Sizes of the last few groups: a lone small group is committed by the sequencer itself only
/// while the load is light. Under many writers a small group often follows a large one (the
/// writers it answered come back a few at a time); committing that one inline would hold the
/// sequencer for a whole fsync while the rest queue, and the next large group would then be
/// prepared while the disk idles instead of during an fsync.
#[derive(Debug, Default)]
pub(crate) struct RecentGroups {
    sizes: [u64; 8],
    next: usize,
}

impl RecentGroups {
    /// Whether every recent group was small enough to have been committed inline.
    fn light(&self) -> bool {
        self.sizes
            .iter()
            .all(|&n| n <= crate::commit::INLINE_ENTRIES)
    }

    fn record(&mut self, entries: u64) {
        self.sizes[self.next] = entries;
        self.next = (self.next + 1) % self.sizes.len();
    }
}

pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Sequencer {
    /// Runs until every sender of `rx` is gone and the queue is drained, then waits for the
    /// committer to write everything it was handed.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<Work>(0);
        let path = self.path.clone();
        let committer = std::thread::Builder::new()
            .name("ledger-committer".into())
            .spawn(move || path.run(work_rx))
            .expect("spawn the committer thread");
        let mut batch: Vec<Command> = Vec::with_capacity(self.max_batch_entries);
        let mut carry: Option<Command> = None;
        loop {
            let first = match carry.take() {
                Some(c) => c,
                None => match rx.blocking_recv() {
                    Some(c) => c,
                    None => break,
                },
            };
            let mut weight = first.weight();
            batch.push(first);
            while batch.len() < self.max_batch_entries && weight < self.max_batch_bytes {
                match rx.try_recv() {
                    Ok(c) => {
                        let w = c.weight();
                        if weight + w > self.max_batch_bytes {
                            carry = Some(c);
                            break;
                        }
                        weight += w;
                        batch.push(c);
                    }
                    Err(_) => break,
                }
            }
            self.process(&mut batch, &work_tx);
        }
        drop(work_tx);
        let _ = committer.join();
        tracing::debug!("sequencer stopped: queue closed and drained");
    }

    fn process(&mut self, batch: &mut Vec<Command>, work: &std::sync::mpsc::SyncSender<Work>) {
        let mut group = Group::default();
        let now = unix_ns();
        for cmd in batch.drain(..) {
            match cmd {
                Command::Append(a) => self.add_append(&mut group, a, now),
                Command::AppendBatch(b) => self.add_batch(&mut group, b, now),
                Command::LoadBegin(l) => {
                    // The load compares and stages against stored rows: everything sequenced
                    // before it must be written first. (One commit's wait, once per load.)
                    self.hand_off(&mut group, work);
                    barrier(work);
                    let reply = self.begin_load(&l.context_id, l.token);
                    let _ = l.reply.send(reply);
                }
                Command::Apply(a) => self.add_apply(&mut group, a, work),
                Command::Quarantine(q) => {
                    // The cut reads and rewrites stored rows, and the caches must describe
                    // them: everything sequenced before it must be written first.
                    self.hand_off(&mut group, work);
                    barrier(work);
                    let reply = self.quarantine(&q);
                    let _ = q.reply.send(reply);
                }
            }
        }
        self.hand_off(&mut group, work);
        if self.heads.len() > HEAD_CACHE_LIMIT || self.dedupe.len() > DEDUPE_CACHE_LIMIT {
            // Only state with nothing in flight may be dropped: wait for the committer first.
            barrier(work);
            self.heads.clear();
            self.dedupe.clear();
        }
    }

    /// Records the group's heads as the new in-memory heads and gives it to the committer
    /// (waiting until the committer has finished the previous group).
    fn hand_off(&mut self, group: &mut Group, work: &std::sync::mpsc::SyncSender<Work>) {
        if group.commits.is_empty() && group.replies.is_empty() {
            return;
        }
        let g = std::mem::take(group);
        for c in &g.commits {
            self.heads.insert(c.head.context_id.clone(), c.head.clone());
        }
        let entries = entries_in(&g.commits);
        let light = self.recent.light();
        self.recent.record(entries);
        if light && self.path.may_inline(entries) {
            return self.path.commit_inline(g);
        }
        self.path.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(std::sync::mpsc::SendError(Work::Group(mut g))) = work.send(Work::Group(g)) {
            self.path.in_flight.fetch_sub(1, Ordering::AcqRel);
            for r in g.replies.drain(..) {
                r.refuse(LedgerError::ShuttingDown);
            }
        }
    }

    fn head(&mut self, context_id: &str) -> Result<ContextHead, LedgerError> {
        if let Some(h) = self.heads.get(context_id) {
            return Ok(h.clone());
        }
        let head = self
            .store
            .head(context_id)?
            .unwrap_or_else(|| ContextHead::empty(context_id));
        self.heads.insert(context_id.to_owned(), head.clone());
        Ok(head)
    }

    /// The group's commit slot for `context_id`, created from the current head.
    fn slot(&mut self, group: &mut Group, context_id: &str) -> Result<usize, LedgerError> {
        if let Some(i) = group.index.get(context_id) {
            return Ok(*i);
        }
        let head = self.head(context_id).inspect_err(|e| {
            self.failed.fail(e.to_string());
        })?;
        group.commits.push(ContextCommit {
            base_size: head.size(),
            staged: 0,
            entries: Vec::new(),
            head: head.clone(),
            nodes: Vec::new(),
            idempotency: Vec::new(),
        });
        group.bases.push(head);
        group
            .index
            .insert(context_id.to_owned(), group.commits.len() - 1);
        Ok(group.commits.len() - 1)
    }

    fn add_append(&mut self, group: &mut Group, cmd: AppendCmd, now: u64) {
        let AppendCmd {
            entry: a,
            reply,
            sequenced,
        } = cmd;
        let tell = |e: &Arc<Entry>| {
            if let Some(tx) = sequenced {
                let _ = tx.send(Arc::clone(e));
            }
        };
        if let Err(e) = self.failed.check() {
            let _ = reply.send(Err(e));
            return;
        }
        if self.reserved.lock().contains_key(&a.context_id) {
            let _ = reply.send(Err(LedgerError::LoadInProgress {
                context_id: a.context_id,
            }));
            return;
        }
        let fingerprint = a
            .idempotency_key
            .as_ref()
            .map(|_| ledger_core::idempotency::fingerprint(&a.key, &a.payload, &a.metadata));
        if let (Some(k), Some(fp)) = (&a.idempotency_key, &fingerprint) {
            match self
                .dedupe
                .check(self.store.as_ref(), &a.context_id, k, fp, now)
            {
                Ok(Seen::New) => {}
                Ok(Seen::Same(entry)) => {
                    // Answered once everything before it is durable, like any append.
                    tell(&entry);
                    group.replies.push(Reply::Append(reply, entry));
                    return;
                }
                Ok(Seen::Conflict(sequence)) => {
                    let _ = reply.send(Err(LedgerError::IdempotencyConflict {
                        context_id: a.context_id,
                        key: k.clone(),
                        sequence,
                    }));
                    return;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let slot = match self.slot(group, &a.context_id) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let commit = &mut group.commits[slot];
        let mut clock = LamportClock::new(commit.head.lamport_clock);
        let Some(lamport) = clock.advance(a.received_lamport_clock) else {
            let _ = reply.send(Err(LedgerError::InvalidArgument(format!(
                "the Lamport clock of context {:?} cannot advance past {}",
                a.context_id, commit.head.lamport_clock
            ))));
            return;
        };
        let entry = Arc::new(Entry::new(
            uuid::Uuid::now_v7().to_string(),
            a.key,
            a.payload,
            commit.head.size() + 1,
            now.max(commit.head.last_appended_at_ns),
            a.metadata,
            lamport,
        ));
        if let (Some(k), Some(fp)) = (a.idempotency_key, fingerprint) {
            match self
                .dedupe
                .record(self.store.as_ref(), k, fp, &entry, &a.context_id)
            {
                Ok(r) => group.commits[slot].idempotency.push(r),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let commit = &mut group.commits[slot];
        commit
            .head
            .push(&entry, &mut commit.nodes)
            .expect("sequence assigned from the head");
        commit.entries.push(Arc::clone(&entry));
        tell(&entry);
        group.replies.push(Reply::Append(reply, entry));
    }

    /// Sequences a whole batch into the context's commit of this group: every item after the
    /// context's appends so far and before any later one, or (if any item cannot be sequenced)
    /// none of them. The group is one store commit, so the batch is stored all or nothing.
    fn add_batch(&mut self, group: &mut Group, cmd: BatchCmd, now: u64) {
        let BatchCmd {
            context_id,
            entries,
            reply,
            sequenced,
        } = cmd;
        if let Err(e) = self.failed.check() {
            let _ = reply.send(Err(e));
            return;
        }
        if self.reserved.lock().contains_key(&context_id) {
            let _ = reply.send(Err(LedgerError::LoadInProgress { context_id }));
            return;
        }
        let slot = match self.slot(group, &context_id) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let commit = &mut group.commits[slot];
        // Every clock first: a refusal must leave the commit untouched.
        let mut clock = LamportClock::new(commit.head.lamport_clock);
        let mut clocks = Vec::with_capacity(entries.len());
        for (index, a) in entries.iter().enumerate() {
            let Some(lamport) = clock.advance(a.received_lamport_clock) else {
                let _ = reply.send(Err(LedgerError::InvalidArgument(format!(
                    "batch item {index}: the Lamport clock of context {context_id:?} cannot \
                     advance past {}",
                    clock.value()
                ))));
                return;
            };
            clocks.push(lamport);
        }
        let at = now.max(commit.head.last_appended_at_ns);
        let mut stored = Vec::with_capacity(entries.len());
        for (a, lamport) in entries.into_iter().zip(clocks) {
            let entry = Arc::new(Entry::new(
                uuid::Uuid::now_v7().to_string(),
                a.key,
                a.payload,
                commit.head.size() + 1,
                at,
                a.metadata,
                lamport,
            ));
            commit
                .head
                .push(&entry, &mut commit.nodes)
                .expect("sequence assigned from the head");
            commit.entries.push(Arc::clone(&entry));
            stored.push(entry);
        }
        if let Some(tx) = sequenced {
            let _ = tx.send(stored.clone());
        }
        group.replies.push(Reply::Batch(reply, stored));
    }

    fn begin_load(&mut self, context_id: &str, token: u64) -> Result<ContextHead, LedgerError> {
        self.failed.check()?;
        let head = self.head(context_id)?;
        let mut reserved = self.reserved.lock();
        if reserved.contains_key(context_id) {
            return Err(LedgerError::LoadInProgress {
                context_id: context_id.to_owned(),
            });
        }
        reserved.insert(context_id.to_owned(), token);
        Ok(head)
    }

    fn add_apply(
        &mut self,
        group: &mut Group,
        a: ApplyCmd,
        work: &std::sync::mpsc::SyncSender<Work>,
    ) {
        let context_id = a.commit.head.context_id.clone();
        let release = |reserved: &Reservations| {
            if let Some(t) = a.token {
                let mut r = reserved.lock();
                if r.get(&context_id) == Some(&t) {
                    r.remove(&context_id);
                }
            }
        };
        if let Err(e) = self.failed.check() {
            release(&self.reserved);
            let _ = a.reply.send(Err(e));
            return;
        }
        if a.token.is_none() && self.reserved.lock().contains_key(&context_id) {
            // Shipped entries wait for a load of their context like appends do.
            let _ = a
                .reply
                .send(Err(LedgerError::LoadInProgress { context_id }));
            return;
        }
        if group.index.contains_key(&context_id) {
            // The commit must follow the context's other commits, not merge with them.
            self.hand_off(group, work);
        }
        let head = match self.head(&context_id) {
            Ok(h) => h,
            Err(e) => {
                release(&self.reserved);
                let _ = a.reply.send(Err(e));
                return;
            }
        };
        if head.size() != a.commit.base_size {
            release(&self.reserved);
            let _ = a.reply.send(Err(LedgerError::Storage(
                ledger_storage::StorageError::SizeConflict {
                    context_id,
                    expected: a.commit.base_size,
                    actual: head.size(),
                },
            )));
            return;
        }
        let mut commit = a.commit;
        for (sequence, key, fingerprint) in a.keys {
            let Some(entry) = commit.entries.iter().find(|e| e.sequence == sequence) else {
                continue;
            };
            let entry = Arc::clone(entry);
            match self
                .dedupe
                .record(self.store.as_ref(), key, fingerprint, &entry, &context_id)
            {
                Ok(r) => commit.idempotency.push(r),
                Err(e) => {
                    release(&self.reserved);
                    let _ = a.reply.send(Err(e));
                    return;
                }
            }
        }
        let new_head = commit.head.clone();
        group.commits.push(commit);
        group.bases.push(head);
        group
            .index
            .insert(context_id.clone(), group.commits.len() - 1);
        group.replies.push(Reply::Applied(a.reply, new_head));
        // Appends sequenced from now on follow the applied entries.
        release(&self.reserved);
    }
}

/// Waits until the committer has written every group handed to it so far.
fn barrier(work: &std::sync::mpsc::SyncSender<Work>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    if work.send(Work::Barrier(tx)).is_ok() {
        let _ = rx.recv();
    }
}
