//! The write path after sequencing: the committer writes groups, the syncer makes them durable,
//! and only durable entries are published, answered, or shown to readers.
//!
//! - **Committer thread** (`ledger-committer`): writes each group as **one** store commit (one
//!   RocksDB write batch). In sync mode it writes without waiting for the disk and passes the
//!   group on to the syncer, so it can write the next group while the disk syncs.
//! - **Syncer thread** (`ledger-syncer`, sync mode only): takes every group written so far and
//!   makes them durable with **one** fsync of the write-ahead log (group commit: one fsync for
//!   everything written while the previous fsync ran). Then, in order, it records their heads as
//!   durable, publishes their entries to watchers and answers their callers.
//!
//! In buffered mode the committer publishes and answers right after its write.
//!
//! **A lone small group goes straight through.** When nothing is in flight in either thread
//! (every group handed to them is durable and published) and a group holds at most
//! [`INLINE_ENTRIES`] entries (and so did each of the last eight groups: the load is light),
//! the sequencer commits it itself ([`WritePath::commit_inline`]):
//! one store write that syncs the log (sync mode), then the same finish (durable view,
//! watchers, answers). Durable heads and watchers still advance in sequence order, and a single
//! writer waiting for each acknowledgement saves two thread hand-offs per append (measured:
//! `ledger-bench latency`). Under load groups are in flight or large, and the pipelined threads
//! take them. A handed-off group stops counting as in flight once published, just before its
//! callers are answered, so their next appends find the pipeline idle.
//!
//! Readers never see an entry before it is durable: [`DurableView`] holds the durable head of
//! every context with writes in flight, and reads are capped at it. A storage error stops all
//! writing: nothing of the failed group or any later one is acknowledged.

use crate::error::LedgerError;
use crate::fail::FailState;
use crate::hub::WatchHub;
use ledger_core::Entry;
use ledger_storage::{ContextCommit, ContextHead, Durability, LogStore};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use tokio::sync::oneshot;

/// Groups written but not yet synced that the committer may run ahead by.
const SYNC_QUEUE: usize = 64;

/// Largest group (entries) the sequencer commits itself when nothing is in flight.
pub(crate) const INLINE_ENTRIES: u64 = 8;

/// A caller waiting for its part of a group to be durable, and what it will be told.
pub(crate) enum Reply {
    /// An append (or a retry of one): the entry as stored.
    Append(oneshot::Sender<Result<Arc<Entry>, LedgerError>>, Arc<Entry>),
    /// A batch append: its entries as stored, in order.
    Batch(
        oneshot::Sender<Result<Vec<Arc<Entry>>, LedgerError>>,
        Vec<Arc<Entry>>,
    ),
    /// An apply of pre-sequenced entries: the context's head after them.
    Applied(
        oneshot::Sender<Result<ContextHead, LedgerError>>,
        ContextHead,
    ),
}

impl Reply {
    fn answer(self) {
        match self {
            Reply::Append(tx, e) => {
                let _ = tx.send(Ok(e));
            }
            Reply::Batch(tx, e) => {
                let _ = tx.send(Ok(e));
            }
            Reply::Applied(tx, h) => {
                let _ = tx.send(Ok(h));
            }
        }
    }

    pub(crate) fn refuse(self, e: LedgerError) {
        match self {
            Reply::Append(tx, _) => {
                let _ = tx.send(Err(e));
            }
            Reply::Batch(tx, _) => {
                let _ = tx.send(Err(e));
            }
            Reply::Applied(tx, _) => {
                let _ = tx.send(Err(e));
            }
        }
    }
}

/// The appends of one batch: one commit per context, and the callers to answer.
#[derive(Default)]
pub(crate) struct Group {
    pub commits: Vec<ContextCommit>,
    /// The head of each commit's context before it (same order as `commits`).
    pub bases: Vec<ContextHead>,
    pub index: HashMap<String, usize>,
    pub replies: Vec<Reply>,
}

/// Work for the committer thread.
pub(crate) enum Work {
    Group(Group),
    /// Answered once every earlier group is durable, published and answered.
    Barrier(SyncSender<()>),
}

/// Counters of the write path.
#[derive(Debug, Default)]
pub struct Stats {
    /// Store commits written (each one write batch).
    pub commits: AtomicU64,
    /// Entries in those commits.
    pub entries: AtomicU64,
    /// Payload bytes of those entries.
    pub bytes: AtomicU64,
    /// Write-ahead-log fsyncs that made commits durable (sync mode).
    pub syncs: AtomicU64,
    /// Commits the sequencer wrote itself because nothing was in flight (see the module docs);
    /// included in `commits`.
    pub inline_commits: AtomicU64,
    /// Entries per commit (group-commit size).
    pub commit_sizes: SizeHistogram,
    /// Entries made durable per fsync (sync mode).
    pub sync_sizes: SizeHistogram,
}

/// Buckets of power-of-two upper bounds: 1, 2, 4, … 2^15, then everything.
const SIZE_BUCKETS: usize = 17;

/// A histogram of sizes (entry counts) with power-of-two buckets, kept in atomics so the write
/// path pays one addition per observation.
#[derive(Debug, Default)]
pub struct SizeHistogram {
    buckets: [AtomicU64; SIZE_BUCKETS],
    sum: AtomicU64,
}

impl SizeHistogram {
    pub fn observe(&self, n: u64) {
        let i = (u64::BITS - n.saturating_sub(1).leading_zeros()) as usize;
        self.buckets[i.min(SIZE_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(n, Ordering::Relaxed);
    }

    /// Buckets `(upper bound, observations in this bucket)` (not cumulative; the last bound
    /// is `None`: everything above), the sum and the count of observations.
    pub fn read(&self) -> (Vec<(Option<u64>, u64)>, u64, u64) {
        let mut total = 0;
        let mut out = Vec::with_capacity(SIZE_BUCKETS);
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            total += n;
            let le = (i + 1 < SIZE_BUCKETS).then_some(1 << i);
            out.push((le, n));
        }
        (out, self.sum.load(Ordering::Relaxed), total)
    }
}

pub(crate) fn entries_in(commits: &[ContextCommit]) -> u64 {
    commits
        .iter()
        .map(|c| c.entries.len() as u64 + c.staged)
        .sum()
}

/// The durable head of every context that has had writes in flight in this process. A context
/// missing here has nothing in flight: its stored head is durable.
#[derive(Debug, Default)]
pub(crate) struct DurableView {
    heads: RwLock<HashMap<String, ContextHead>>,
}

/// Durable heads kept; beyond this, heads with nothing in flight are dropped.
const DURABLE_VIEW_LIMIT: usize = 100_000;

impl DurableView {
    /// The durable head of `context_id`, if it has had writes in flight.
    pub(crate) fn head(&self, context_id: &str) -> Option<ContextHead> {
        self.heads.read().get(context_id).cloned()
    }

    /// The durable size of `context_id`, if it has had writes in flight.
    pub(crate) fn size(&self, context_id: &str) -> Option<u64> {
        self.heads.read().get(context_id).map(ContextHead::size)
    }

    /// Called before a commit is written: a context seen for the first time is recorded at its
    /// pre-commit (durable) head, so readers stay capped while the commit is in flight.
    fn before_write(&self, commits: &[ContextCommit], bases: &[ContextHead]) {
        let missing: Vec<usize> = {
            let heads = self.heads.read();
            (0..commits.len())
                .filter(|i| !heads.contains_key(&commits[*i].head.context_id))
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        let mut heads = self.heads.write();
        for i in missing {
            heads
                .entry(commits[i].head.context_id.clone())
                .or_insert_with(|| bases[i].clone());
        }
    }

    /// Called once commits are durable.
    fn durable(&self, commits: &[ContextCommit]) {
        let mut heads = self.heads.write();
        for c in commits {
            heads.insert(c.head.context_id.clone(), c.head.clone());
        }
    }

    /// Records `head` as its context's durable head, whatever it was: for a context cut back
    /// by a quarantine, with nothing in flight (the sequencer waited for everything before).
    pub(crate) fn set(&self, head: ContextHead) {
        self.heads.write().insert(head.context_id.clone(), head);
    }

    /// Forgets every head when the view is large and nothing is in flight.
    fn trim(&self, nothing_in_flight: bool) {
        if nothing_in_flight && self.heads.read().len() > DURABLE_VIEW_LIMIT {
            self.heads.write().clear();
        }
    }
}

/// What both write-path threads share.
#[derive(Clone)]
pub(crate) struct WritePath {
    pub store: Arc<dyn LogStore>,
    pub hub: Arc<WatchHub>,
    pub failed: Arc<FailState>,
    pub stats: Arc<Stats>,
    pub durable: Arc<DurableView>,
    /// Groups handed to the committer and not yet published (or refused).
    pub in_flight: Arc<AtomicUsize>,
}

/// A group written to the store, waiting for the fsync that makes it durable.
struct Written {
    commits: Vec<ContextCommit>,
    replies: Vec<Reply>,
}

impl WritePath {
    /// Records heads as durable, publishes entries and answers callers, in that order.
    fn finish(&self, commits: &[ContextCommit], replies: &mut Vec<Reply>) {
        self.publish(commits);
        Self::answer(replies);
    }

    /// Records heads as durable and publishes their entries to watchers.
    fn publish(&self, commits: &[ContextCommit]) {
        self.durable.durable(commits);
        for c in commits {
            self.hub.publish(&c.head.context_id, &c.entries);
        }
    }

    fn answer(replies: &mut Vec<Reply>) {
        for r in replies.drain(..) {
            r.answer();
        }
    }

    /// [`Self::finish`] of a group handed to the committer: it stops counting as in flight once
    /// published, before its callers are answered, so a caller's next append finds nothing in
    /// flight (and may be committed by the sequencer itself).
    fn finish_handed(&self, commits: &[ContextCommit], replies: &mut Vec<Reply>) {
        self.publish(commits);
        self.done();
        Self::answer(replies);
    }

    /// [`Self::refuse`] of a group handed to the committer.
    fn refuse_handed(&self, replies: &mut Vec<Reply>, reason: &str) {
        self.done();
        Self::refuse(replies, reason);
    }

    /// Whether a group of `entries` may be committed by the sequencer itself: nothing is in
    /// flight in the committer and syncer, and the group is small.
    pub(crate) fn may_inline(&self, entries: u64) -> bool {
        entries <= INLINE_ENTRIES && self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Commits `g` on the calling thread (see the module docs): one store write, durable when
    /// it returns in sync mode, then the usual finish. Only when [`Self::may_inline`].
    pub(crate) fn commit_inline(&self, mut g: Group) {
        let sync = self.store.durability() == Durability::Sync;
        match self.write(&g.commits, &g.bases, true) {
            Ok(()) => {
                if !g.commits.is_empty() {
                    self.stats.inline_commits.fetch_add(1, Ordering::Relaxed);
                    if sync {
                        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                        self.stats.sync_sizes.observe(entries_in(&g.commits));
                    }
                }
                self.finish(&g.commits, &mut g.replies);
            }
            Err(reason) => Self::refuse(&mut g.replies, &reason),
        }
    }

    /// Called once a group handed to the committer is published or refused.
    fn done(&self) {
        self.in_flight.fetch_sub(1, Ordering::Release);
    }

    fn refuse(replies: &mut Vec<Reply>, reason: &str) {
        for r in replies.drain(..) {
            r.refuse(LedgerError::StorageFailed(reason.to_owned()));
        }
    }

    fn count(&self, commits: &[ContextCommit]) {
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        let n = entries_in(commits);
        self.stats.entries.fetch_add(n, Ordering::Relaxed);
        self.stats.commit_sizes.observe(n);
        let bytes: u64 = commits
            .iter()
            .flat_map(|c| c.entries.iter())
            .map(|e| e.payload.len() as u64)
            .sum();
        self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Runs the committer (and, in sync mode, the syncer) until `rx` closes.
    pub(crate) fn run(self, rx: Receiver<Work>) {
        if self.store.durability() == Durability::Buffered {
            return self.run_buffered(rx);
        }
        let (tx, sync_rx) = sync_channel::<SyncWork>(SYNC_QUEUE);
        let syncer = {
            let path = self.clone();
            std::thread::Builder::new()
                .name("ledger-syncer".into())
                .spawn(move || path.run_syncer(sync_rx))
                .expect("spawn the syncer thread")
        };
        for work in rx {
            match work {
                Work::Group(mut g) => {
                    if let Err(reason) = self.write(&g.commits, &g.bases, false) {
                        self.refuse_handed(&mut g.replies, &reason);
                        continue;
                    }
                    let written = Written {
                        commits: g.commits,
                        replies: g.replies,
                    };
                    if let Err(std::sync::mpsc::SendError(SyncWork::Written(mut w))) =
                        tx.send(SyncWork::Written(written))
                    {
                        self.refuse_handed(&mut w.replies, "the syncer thread stopped");
                        break;
                    }
                }
                Work::Barrier(done) => {
                    let _ = tx.send(SyncWork::Barrier(done));
                }
            }
        }
        drop(tx);
        let _ = syncer.join();
    }

    fn run_buffered(self, rx: Receiver<Work>) {
        for work in rx {
            match work {
                Work::Group(mut g) => match self.write(&g.commits, &g.bases, true) {
                    Ok(()) => self.finish_handed(&g.commits, &mut g.replies),
                    Err(reason) => self.refuse_handed(&mut g.replies, &reason),
                },
                Work::Barrier(done) => {
                    self.durable.trim(true);
                    let _ = done.send(());
                }
            }
        }
    }

    /// One store commit; `durable` asks the store to wait for durability itself.
    fn write(
        &self,
        commits: &[ContextCommit],
        bases: &[ContextHead],
        durable: bool,
    ) -> Result<(), String> {
        self.failed.check().map_err(|e| e.to_string())?;
        if commits.is_empty() {
            // Only answers to retried appends: nothing to write, but they still wait for
            // everything before them to be durable.
            return Ok(());
        }
        self.durable.before_write(commits, bases);
        let r = if durable {
            self.store.commit(commits)
        } else {
            self.store.commit_deferred(commits)
        };
        if let Err(e) = r {
            let reason = e.to_string();
            self.failed.fail(reason.clone());
            return Err(reason);
        }
        self.count(commits);
        Ok(())
    }

    fn run_syncer(self, rx: Receiver<SyncWork>) {
        let mut pending: Vec<Written> = Vec::new();
        let mut barriers: Vec<SyncSender<()>> = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(w) = next.take() {
                match w {
                    SyncWork::Written(g) => pending.push(g),
                    SyncWork::Barrier(b) => barriers.push(b),
                }
                next = rx.try_recv().ok();
            }
            if !pending.is_empty() {
                let synced = self
                    .failed
                    .check()
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        self.store.sync().map_err(|e| {
                            let reason = e.to_string();
                            self.failed.fail(reason.clone());
                            reason
                        })
                    });
                self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                let synced_entries = pending.iter().map(|g| entries_in(&g.commits)).sum();
                self.stats.sync_sizes.observe(synced_entries);
                for mut g in pending.drain(..) {
                    match &synced {
                        Ok(()) => self.finish_handed(&g.commits, &mut g.replies),
                        Err(reason) => self.refuse_handed(&mut g.replies, reason),
                    }
                }
            }
            for b in barriers.drain(..) {
                self.durable.trim(true);
                let _ = b.send(());
            }
        }
    }
}

enum SyncWork {
    Written(Written),
    Barrier(SyncSender<()>),
}
