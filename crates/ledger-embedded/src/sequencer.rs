//! The sequencer: the single writer of every context.
//!
//! The sequencer thread (`ledger-sequencer`) owns the heads of all contexts it has touched. It
//! takes every queued command (up to a batch limit), assigns sequence, Lamport clock, time, id
//! and content hash to each append, extends the Merkle frontier, and groups the result into one
//! commit per context. It hands each group to the committer (see [`crate::commit`]) through a
//! rendezvous: while the committer writes group N, the sequencer prepares group N+1 from
//! everything that arrived meanwhile, so the disk never waits for hashing and groups grow with
//! load.

use crate::commit::{Group, Work, WritePath};
use crate::error::LedgerError;
use ledger_core::merkle::{self, NodeId};
use ledger_core::snapshot::Snapshot;
use ledger_core::{Entry, Hash, LamportClock, Metadata};
use ledger_storage::{ContextCommit, ContextHead, LogStore};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Heads kept in memory; the map is emptied when it grows past this (heads reload lazily).
const HEAD_CACHE_LIMIT: usize = 200_000;
/// Entries per commit when loading a snapshot.
const LOAD_CHUNK: usize = 8192;

pub(crate) struct AppendCmd {
    pub context_id: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub metadata: Metadata,
    pub received_lamport_clock: Option<u64>,
    pub reply: oneshot::Sender<Result<Arc<Entry>, LedgerError>>,
}

pub(crate) struct LoadCmd {
    pub context_id: String,
    pub snapshot: Snapshot,
    pub fail_if_exists: bool,
    pub reply: oneshot::Sender<Result<LoadOutcome, LedgerError>>,
}

pub(crate) enum Command {
    Append(AppendCmd),
    Load(LoadCmd),
}

impl Command {
    fn weight(&self) -> usize {
        match self {
            Command::Append(a) => a.payload.len() + 256,
            Command::Load(_) => usize::MAX / 2,
        }
    }
}

/// What a load did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOutcome {
    /// Entries written by this load (0 when the snapshot was already contained).
    pub entries_restored: u64,
    /// The context's size afterwards.
    pub latest_sequence: u64,
}

/// Set once, when storage fails; every later write is refused with the reason.
#[derive(Debug, Default)]
pub(crate) struct FailState {
    failed: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl FailState {
    pub(crate) fn check(&self) -> Result<(), LedgerError> {
        if self.failed.load(Ordering::Acquire) {
            let reason = self.reason.lock().clone().unwrap_or_default();
            return Err(LedgerError::WritesStopped { reason });
        }
        Ok(())
    }

    pub(crate) fn fail(&self, reason: String) {
        tracing::error!(%reason, "storage failure: the ledger stops accepting writes");
        *self.reason.lock() = Some(reason);
        self.failed.store(true, Ordering::Release);
    }
}

pub(crate) struct Sequencer {
    pub path: WritePath,
    pub store: Arc<dyn LogStore>,
    pub failed: Arc<FailState>,
    pub max_batch_entries: usize,
    pub max_batch_bytes: usize,
    pub heads: HashMap<String, ContextHead>,
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
                Command::Load(l) => {
                    self.hand_off(&mut group, work);
                    // Loads read the store, so everything before them must be written first.
                    barrier(work);
                    let reply = self.load(&l.context_id, l.snapshot, l.fail_if_exists);
                    let _ = l.reply.send(reply);
                }
            }
        }
        self.hand_off(&mut group, work);
        if self.heads.len() > HEAD_CACHE_LIMIT {
            // Only heads with nothing in flight may be dropped: wait for the committer first.
            barrier(work);
            self.heads.clear();
        }
    }

    /// Records the group's heads as the new in-memory heads and gives it to the committer
    /// (waiting until the committer has finished the previous group).
    fn hand_off(&mut self, group: &mut Group, work: &std::sync::mpsc::SyncSender<Work>) {
        if group.commits.is_empty() {
            return;
        }
        let g = std::mem::take(group);
        for c in &g.commits {
            self.heads.insert(c.head.context_id.clone(), c.head.clone());
        }
        if let Err(std::sync::mpsc::SendError(Work::Group(mut g))) = work.send(Work::Group(g)) {
            for (reply, _) in g.replies.drain(..) {
                let _ = reply.send(Err(LedgerError::ShuttingDown));
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

    fn add_append(&mut self, group: &mut Group, a: AppendCmd, now: u64) {
        if let Err(e) = self.failed.check() {
            let _ = a.reply.send(Err(e));
            return;
        }
        let slot = match group.index.get(&a.context_id) {
            Some(i) => *i,
            None => {
                let head = match self.head(&a.context_id) {
                    Ok(h) => h,
                    Err(e) => {
                        self.failed.fail(e.to_string());
                        let _ = a.reply.send(Err(e));
                        return;
                    }
                };
                group.commits.push(ContextCommit {
                    base_size: head.size(),
                    entries: Vec::new(),
                    head: head.clone(),
                    nodes: Vec::new(),
                });
                group.bases.push(head);
                group
                    .index
                    .insert(a.context_id.clone(), group.commits.len() - 1);
                group.commits.len() - 1
            }
        };
        let commit = &mut group.commits[slot];
        let mut clock = LamportClock::new(commit.head.lamport_clock);
        let Some(lamport) = clock.advance(a.received_lamport_clock) else {
            let _ = a.reply.send(Err(LedgerError::InvalidArgument(format!(
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
        commit
            .head
            .push(&entry, &mut commit.nodes)
            .expect("sequence assigned from the head");
        commit.entries.push(Arc::clone(&entry));
        group.replies.push((a.reply, entry));
    }

    fn load(
        &mut self,
        context_id: &str,
        snapshot: Snapshot,
        fail_if_exists: bool,
    ) -> Result<LoadOutcome, LedgerError> {
        self.failed.check()?;
        let head = self.head(context_id)?;
        let existing = head.size();
        let incoming = snapshot.tree_size();
        if existing > 0 && fail_if_exists {
            return Err(LedgerError::AlreadyExists {
                context_id: context_id.to_owned(),
                size: existing,
            });
        }
        let leaves: Vec<Hash> = snapshot.entries.iter().map(|e| e.content_hash).collect();
        if existing > 0 {
            let contained = if incoming <= existing {
                // The snapshot is a prefix iff the stored tree of its size has its root.
                let stored_root = if incoming == existing {
                    head.root()
                } else {
                    let plan = merkle::root_plan(incoming);
                    plan.assemble(&self.store.nodes(context_id, plan.nodes())?)[0]
                };
                stored_root == snapshot.merkle_root
            } else {
                // The snapshot extends the stored history iff a consistency proof from the
                // stored tree to the snapshot's tree verifies.
                let tree = SnapshotTree::new(&leaves);
                let plan = merkle::consistency_plan(existing, incoming)?;
                let proof = plan
                    .assemble_with::<()>(|id| Ok(tree.node(id)))
                    .expect("snapshot tree has every node");
                merkle::verify_consistency(
                    existing,
                    incoming,
                    &head.root(),
                    &snapshot.merkle_root,
                    &proof,
                )
                .is_ok()
            };
            if !contained {
                let sequence = self.first_difference(context_id, &leaves, existing)?;
                return Err(LedgerError::Diverged {
                    context_id: context_id.to_owned(),
                    sequence,
                });
            }
            if incoming <= existing {
                return Ok(LoadOutcome {
                    entries_restored: 0,
                    latest_sequence: existing,
                });
            }
        }
        // Append the missing tail, entries exactly as they are in the snapshot.
        let mut head = head;
        let tail: Vec<Arc<Entry>> = snapshot
            .entries
            .into_iter()
            .skip(usize::try_from(existing).unwrap_or(usize::MAX))
            .map(Arc::new)
            .collect();
        let restored = tail.len() as u64;
        for chunk in tail.chunks(LOAD_CHUNK) {
            let commit = head.extend(chunk.to_vec())?;
            let next = commit.head.clone();
            let written = self
                .path
                .commit_now(std::slice::from_ref(&commit), std::slice::from_ref(&head));
            if let Err(reason) = written {
                self.heads.clear();
                return Err(LedgerError::StorageFailed(reason));
            }
            self.heads.insert(context_id.to_owned(), next.clone());
            head = next;
        }
        Ok(LoadOutcome {
            entries_restored: restored,
            latest_sequence: head.size(),
        })
    }

    /// First sequence where the stored leaves and the snapshot's differ.
    fn first_difference(
        &self,
        context_id: &str,
        leaves: &[Hash],
        existing: u64,
    ) -> Result<u64, LedgerError> {
        let common = leaves
            .len()
            .min(usize::try_from(existing).unwrap_or(usize::MAX));
        let mut start = 0usize;
        while start < common {
            let end = (start + 4096).min(common);
            let ids: Vec<NodeId> = (start..end).map(|i| NodeId::leaf(i as u64)).collect();
            let stored = self.store.nodes(context_id, &ids)?;
            if let Some(off) = stored
                .iter()
                .zip(&leaves[start..end])
                .position(|(a, b)| a != b)
            {
                return Ok((start + off + 1) as u64);
            }
            start = end;
        }
        // Every common leaf matches, so the histories differ only past the shorter one; this
        // cannot happen for a prefix check that failed, but answer with the next sequence.
        Ok(common as u64 + 1)
    }
}

/// Waits until the committer has written every group handed to it so far.
fn barrier(work: &std::sync::mpsc::SyncSender<Work>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    if work.send(Work::Barrier(tx)).is_ok() {
        let _ = rx.recv();
    }
}

/// Every complete subtree of a snapshot's leaves, level by level.
struct SnapshotTree {
    levels: Vec<Vec<Hash>>,
}

impl SnapshotTree {
    fn new(leaves: &[Hash]) -> Self {
        let mut levels: Vec<Vec<Hash>> = vec![Vec::with_capacity(leaves.len())];
        let mut f = merkle::Frontier::new();
        for l in leaves {
            f.push(*l, |id, h| {
                let level = id.level as usize;
                if levels.len() <= level {
                    levels.push(Vec::new());
                }
                debug_assert_eq!(levels[level].len() as u64, id.index);
                levels[level].push(h);
            });
        }
        SnapshotTree { levels }
    }

    fn node(&self, id: NodeId) -> Hash {
        self.levels[id.level as usize][id.index as usize]
    }
}
