//! The embedded Converge Ledger: open a data directory and append, read, snapshot, load, watch
//! and prove, in-process. The gRPC node is a thin layer over this API, and an engine can embed
//! it directly.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ledger_embedded::LedgerError> {
//! use ledger_embedded::{Ledger, LedgerConfig};
//! let ledger = Ledger::open("./data", LedgerConfig::default())?;
//! let e = ledger.append("ctx-1", "facts", b"{}".to_vec(), Default::default(), None).await?;
//! assert_eq!(e.sequence, 1);
//! let page = ledger.get("ctx-1", None, 0, None).await?;
//! assert_eq!(page.latest_sequence, 1);
//! ledger.close().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`Ledger`]: the API. Appends go to the sequencer; reads go straight to the store on
//!   tokio's blocking pool.
//! - `sequencer`: the single writer thread and its group commit.
//! - `hub`: live delivery of committed entries to watchers.
//! - [`WatchStream`]: gapless watching.
//! - [`LedgerError`]: what can go wrong.
//!
//! Appends to one context are serialized (one writer owns every head); appends to different
//! contexts share commits and fsyncs rather than waiting for each other.

mod commit;
mod error;
mod hub;
mod sequencer;
mod watch;

pub use error::LedgerError;
pub use ledger_core::validate::Limits;
pub use ledger_core::{Entry, Hash, Metadata};
pub use ledger_storage::{ContextHead, Durability, ReadQuery, ReadResult, RocksConfig};
pub use sequencer::LoadOutcome;
pub use watch::WatchStream;

/// A queued append (from [`Ledger::submit_append`]): resolves to the stored entry once it is
/// durable, or to the error that stopped it.
#[derive(Debug)]
#[must_use = "the append is queued either way; the ack tells whether and how it was stored"]
pub struct AppendAck(oneshot::Receiver<Result<Arc<Entry>, LedgerError>>);

impl std::future::Future for AppendAck {
    type Output = Result<Arc<Entry>, LedgerError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(LedgerError::ShuttingDown)))
    }
}

pub use commit::Stats;
use commit::{DurableView, WritePath};
use hub::WatchHub;
use ledger_core::merkle::{self, NodeId};
use ledger_core::snapshot::{self, SnapshotEncoder};
use ledger_core::validate;
use ledger_storage::{LogStore, RocksStore};
use parking_lot::{Mutex, RwLock};
use sequencer::{AppendCmd, Command, FailState, LoadCmd, Sequencer, unix_ns};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Settings of an embedded ledger.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// Input limits (payload size).
    pub limits: Limits,
    /// RocksDB settings, durability included.
    pub rocks: RocksConfig,
    /// Most appends in one commit.
    pub max_batch_entries: usize,
    /// Most payload bytes in one commit.
    pub max_batch_bytes: usize,
    /// Appends that may wait for the sequencer; callers wait (asynchronously) when it is full.
    pub queue_depth: usize,
    /// Live entries buffered per watched context before slow watchers fall back to storage.
    pub watch_buffer: usize,
    /// Default most bytes of entries in one [`Ledger::get`] answer.
    pub max_read_bytes: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            limits: Limits::default(),
            rocks: RocksConfig::default(),
            max_batch_entries: 8192,
            max_batch_bytes: 64 << 20,
            queue_depth: 65_536,
            watch_buffer: 1024,
            max_read_bytes: 16 << 20,
        }
    }
}

/// A snapshot of one context, encoded.
#[derive(Clone, Debug)]
pub struct SnapshotBlob {
    /// The snapshot bytes (format in `docs/SNAPSHOT.md`).
    pub bytes: Vec<u8>,
    /// Sequence of the last entry = entry count = tree size.
    pub sequence: u64,
    pub merkle_root: Hash,
    pub lamport_clock: u64,
    pub created_at_ns: u64,
}

/// Proof that one entry is in a context's tree of some size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    /// `sequence - 1`.
    pub leaf_index: u64,
    pub tree_size: u64,
    /// The entry's content hash.
    pub leaf_hash: Hash,
    /// RFC 9162 audit path, leaf to root.
    pub path: Vec<Hash>,
    /// Root of the tree of `tree_size`.
    pub root: Hash,
}

/// A context's tree at some size: what a tree head states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeState {
    pub size: u64,
    pub root: Hash,
    /// Lamport clock of the entry at `size` (0 for the empty tree).
    pub lamport_clock: u64,
    /// `appended_at_ns` of the entry at `size` (0 for the empty tree).
    pub appended_at_ns: u64,
}

/// Proof that a context's tree of `first` entries is a prefix of its tree of `second`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub first: u64,
    pub second: u64,
    pub path: Vec<Hash>,
    pub first_root: Hash,
    pub second_root: Hash,
}

/// The embedded ledger. Cheap to clone; all clones share one store and one sequencer.
#[derive(Clone, Debug)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn LogStore>,
    tx: RwLock<Option<mpsc::Sender<Command>>>,
    sequencer: Mutex<Option<std::thread::JoinHandle<()>>>,
    hub: Arc<WatchHub>,
    failed: Arc<FailState>,
    stats: Arc<Stats>,
    durable: Arc<DurableView>,
    config: LedgerConfig,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("config", &self.config)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx.write().take();
        if let Some(h) = self.sequencer.lock().take() {
            let _ = h.join();
        }
    }
}

impl Ledger {
    /// Opens (or creates) a ledger in `dir` on RocksDB.
    pub fn open(dir: impl AsRef<Path>, config: LedgerConfig) -> Result<Self, LedgerError> {
        let store = RocksStore::open(dir, &config.rocks)?;
        Ok(Self::with_store(Arc::new(store), config))
    }

    /// A ledger over any store (the in-memory one in tests).
    pub fn with_store(store: Arc<dyn LogStore>, config: LedgerConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let hub = Arc::new(WatchHub::new(config.watch_buffer));
        let failed = Arc::new(FailState::default());
        let stats = Arc::new(Stats::default());
        let durable = Arc::new(DurableView::default());
        let seq = Sequencer {
            path: WritePath {
                store: Arc::clone(&store),
                hub: Arc::clone(&hub),
                failed: Arc::clone(&failed),
                stats: Arc::clone(&stats),
                durable: Arc::clone(&durable),
            },
            store: Arc::clone(&store),
            failed: Arc::clone(&failed),
            max_batch_entries: config.max_batch_entries.max(1),
            max_batch_bytes: config.max_batch_bytes.max(1),
            heads: HashMap::new(),
        };
        let handle = std::thread::Builder::new()
            .name("ledger-sequencer".into())
            .spawn(move || seq.run(rx))
            .expect("spawn the sequencer thread");
        Ledger {
            inner: Arc::new(Inner {
                store,
                tx: RwLock::new(Some(tx)),
                sequencer: Mutex::new(Some(handle)),
                hub,
                failed,
                stats,
                durable,
                config,
            }),
        }
    }

    /// The configuration this ledger runs with.
    pub fn config(&self) -> &LedgerConfig {
        &self.inner.config
    }

    /// Counters of the write path (commits and the entries in them).
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn LogStore> {
        &self.inner.store
    }

    /// True while appends are accepted (not closed, no storage failure).
    pub fn is_writable(&self) -> bool {
        self.inner.tx.read().is_some() && self.inner.failed.check().is_ok()
    }

    async fn send(&self, cmd: Command) -> Result<(), LedgerError> {
        let tx = self
            .inner
            .tx
            .read()
            .clone()
            .ok_or(LedgerError::ShuttingDown)?;
        tx.send(cmd).await.map_err(|_| LedgerError::ShuttingDown)
    }

    /// Appends one entry and returns it as stored: with its id, sequence, time, Lamport clock
    /// and content hash. Returns once the entry is durable (per the durability mode).
    ///
    /// `received_lamport_clock` is the clock of an event in another context that caused this
    /// one; the entry's clock is then `max(local, received) + 1`.
    pub async fn append(
        &self,
        context_id: &str,
        key: &str,
        payload: Vec<u8>,
        metadata: Metadata,
        received_lamport_clock: Option<u64>,
    ) -> Result<Arc<Entry>, LedgerError> {
        self.submit_append(context_id, key, payload, metadata, received_lamport_clock)
            .await?
            .await
    }

    /// The first half of [`Ledger::append`]: validates the append and queues it for the
    /// sequencer, waiting only for room in the queue. The returned [`AppendAck`] resolves to
    /// the stored entry once it is durable.
    ///
    /// Appends queued one after another (each `submit_append` awaited before the next starts)
    /// are applied in that order, while their acknowledgements are awaited concurrently: this
    /// is how a pipelined stream keeps many appends of one context in flight without
    /// reordering them.
    pub async fn submit_append(
        &self,
        context_id: &str,
        key: &str,
        payload: Vec<u8>,
        metadata: Metadata,
        received_lamport_clock: Option<u64>,
    ) -> Result<AppendAck, LedgerError> {
        validate::validate_append(
            context_id,
            key,
            &payload,
            &metadata,
            received_lamport_clock,
            &self.inner.config.limits,
        )?;
        self.inner.failed.check()?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append(AppendCmd {
            context_id: context_id.to_owned(),
            key: key.to_owned(),
            payload,
            metadata,
            received_lamport_clock,
            reply,
        }))
        .await?;
        Ok(AppendAck(rx))
    }

    /// Entries of a context after `after_sequence`, optionally only those with key
    /// `key_filter`, at most `limit` of them and at most the configured response bytes.
    /// A context without entries reads as empty with `latest_sequence` 0.
    pub async fn get(
        &self,
        context_id: &str,
        key_filter: Option<&str>,
        after_sequence: u64,
        limit: Option<usize>,
    ) -> Result<ReadResult, LedgerError> {
        self.read(
            context_id,
            ReadQuery {
                after_sequence,
                key: key_filter.map(str::to_owned),
                limit,
                max_bytes: Some(self.inner.config.max_read_bytes),
                up_to: None,
            },
        )
        .await
    }

    /// A read with every knob of [`ReadQuery`]. Only durable entries are visible.
    pub async fn read(
        &self,
        context_id: &str,
        mut query: ReadQuery,
    ) -> Result<ReadResult, LedgerError> {
        validate::validate_context_id(context_id)?;
        if let Some(k) = &query.key {
            validate::validate_key_filter(k)?;
        }
        let cap = self.cap_at_durable(context_id, &mut query);
        let store = Arc::clone(&self.inner.store);
        let ctx = context_id.to_owned();
        let mut r = blocking(move || store.read(&ctx, &query)).await?;
        Self::report_durable(&mut r, cap);
        Ok(r)
    }

    /// Caps a read at the context's durable size; returns the cap.
    fn cap_at_durable(&self, context_id: &str, query: &mut ReadQuery) -> Option<u64> {
        let cap = self.inner.durable.size(context_id);
        if let Some(cap) = cap {
            query.up_to = Some(query.up_to.map_or(cap, |u| u.min(cap)));
        }
        cap
    }

    /// Entries written but not yet durable are not reported, not even by number.
    fn report_durable(r: &mut ReadResult, cap: Option<u64>) {
        if let Some(cap) = cap {
            r.latest_sequence = r.latest_sequence.min(cap);
        }
    }

    /// Sequence of the context's last entry (0 if it has none).
    pub async fn current_sequence(&self, context_id: &str) -> Result<u64, LedgerError> {
        Ok(self.head(context_id).await?.map_or(0, |h| h.size()))
    }

    /// The context's head (size, Lamport clock, Merkle frontier and root); `None` if empty.
    pub async fn head(&self, context_id: &str) -> Result<Option<ContextHead>, LedgerError> {
        validate::validate_context_id(context_id)?;
        if let Some(h) = self.inner.durable.head(context_id) {
            return Ok((h.size() > 0).then_some(h));
        }
        let store = Arc::clone(&self.inner.store);
        let ctx = context_id.to_owned();
        blocking(move || store.head(&ctx)).await
    }

    async fn require_head(&self, context_id: &str) -> Result<ContextHead, LedgerError> {
        self.head(context_id)
            .await?
            .ok_or_else(|| LedgerError::NotFound {
                context_id: context_id.to_owned(),
            })
    }

    /// Encodes a snapshot of the context as it is now.
    pub async fn snapshot(&self, context_id: &str) -> Result<SnapshotBlob, LedgerError> {
        let head = self.require_head(context_id).await?;
        let store = Arc::clone(&self.inner.store);
        let ctx = context_id.to_owned();
        blocking(move || {
            let created_at_ns = unix_ns();
            let size = head.size();
            let root = head.root();
            let mut enc =
                SnapshotEncoder::new(&ctx, created_at_ns, size, head.lamport_clock, root, 0);
            let mut after = 0;
            while after < size {
                let page = store.read(
                    &ctx,
                    &ReadQuery {
                        after_sequence: after,
                        limit: Some(16_384),
                        max_bytes: Some(64 << 20),
                        up_to: Some(size),
                        key: None,
                    },
                )?;
                for e in &page.entries {
                    enc.push(e).map_err(|e| {
                        ledger_storage::StorageError::Corrupt(format!("snapshot of {ctx:?}: {e}"))
                    })?;
                }
                after = page.next_after_sequence;
            }
            let bytes = enc.finish().map_err(|e| {
                ledger_storage::StorageError::Corrupt(format!(
                    "stored entries of {ctx:?} do not match its head: {e}"
                ))
            })?;
            Ok(SnapshotBlob {
                bytes,
                sequence: size,
                merkle_root: root,
                lamport_clock: head.lamport_clock,
                created_at_ns,
            })
        })
        .await
    }

    /// Loads a snapshot into `context_id` (which may differ from the id inside the snapshot).
    ///
    /// Into an empty context it restores every entry exactly. With `fail_if_exists` and existing
    /// entries it fails. Otherwise it appends only the missing tail when the snapshot extends the
    /// stored history (checked with a consistency proof), does nothing when the snapshot is a
    /// prefix of it, and fails naming the first differing sequence when they diverge. It never
    /// overwrites anything.
    pub async fn load(
        &self,
        context_id: &str,
        blob: Vec<u8>,
        fail_if_exists: bool,
    ) -> Result<LoadOutcome, LedgerError> {
        validate::validate_context_id(context_id)?;
        let snapshot = tokio::task::spawn_blocking(move || -> Result<_, LedgerError> {
            let s = snapshot::decode(&blob)?;
            for e in &s.entries {
                validate::validate_key(&e.key).map_err(|err| {
                    LedgerError::InvalidArgument(format!("snapshot entry {}: {err}", e.sequence))
                })?;
                validate::validate_metadata(&e.metadata).map_err(|err| {
                    LedgerError::InvalidArgument(format!("snapshot entry {}: {err}", e.sequence))
                })?;
            }
            Ok(s)
        })
        .await
        .map_err(|_| LedgerError::ShuttingDown)??;
        self.inner.failed.check()?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Load(LoadCmd {
            context_id: context_id.to_owned(),
            snapshot,
            fail_if_exists,
            reply,
        }))
        .await?;
        rx.await.map_err(|_| LedgerError::ShuttingDown)?
    }

    /// The durable size of a context (0 if it has no entries), read without touching entries.
    /// Small point reads like this one run on the caller's task: they take microseconds.
    fn durable_size(&self, context_id: &str) -> Result<u64, LedgerError> {
        validate::validate_context_id(context_id)?;
        match self.inner.durable.size(context_id) {
            Some(n) => Ok(n),
            None => Ok(self.inner.store.size(context_id)?),
        }
    }

    fn require_size(&self, context_id: &str) -> Result<u64, LedgerError> {
        match self.durable_size(context_id)? {
            0 => Err(LedgerError::NotFound {
                context_id: context_id.to_owned(),
            }),
            n => Ok(n),
        }
    }

    /// Proof that entry `sequence` is in the context's tree of `tree_size` entries
    /// (0 = the current size). One size read and one batched read of O(log n) stored subtree
    /// hashes.
    pub async fn inclusion_proof(
        &self,
        context_id: &str,
        sequence: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, LedgerError> {
        let current = self.require_size(context_id)?;
        let size = resolve_size(tree_size, current)?;
        if sequence == 0 {
            return Err(LedgerError::InvalidArgument(
                "sequence must be at least 1 (sequences start at 1)".into(),
            ));
        }
        if sequence > size {
            return Err(LedgerError::OutOfRange(format!(
                "sequence {sequence} is beyond the tree of size {size}"
            )));
        }
        let index = sequence - 1;
        let plan = merkle::inclusion_plan(index, size)?;
        let root_plan = merkle::root_plan(size);
        let n = plan.nodes().len();
        let mut ids: Vec<NodeId> = Vec::with_capacity(n + 1 + root_plan.nodes().len());
        ids.extend_from_slice(plan.nodes());
        ids.push(NodeId::leaf(index));
        ids.extend_from_slice(root_plan.nodes());
        let hashes = self.inner.store.nodes(context_id, &ids)?;
        Ok(InclusionProof {
            leaf_index: index,
            tree_size: size,
            leaf_hash: hashes[n],
            path: plan.assemble(&hashes[..n]),
            root: root_plan.assemble(&hashes[n + 1..])[0],
        })
    }

    /// Proof that the context's tree of `first` entries is a prefix of its tree of `second`
    /// (0 = the current size), with both roots.
    pub async fn consistency_proof(
        &self,
        context_id: &str,
        first: u64,
        second: u64,
    ) -> Result<ConsistencyProof, LedgerError> {
        let current = self.require_size(context_id)?;
        let second = resolve_size(second, current)?;
        if first > second {
            return Err(LedgerError::InvalidArgument(format!(
                "first size {first} is larger than second size {second}"
            )));
        }
        let plan = merkle::consistency_plan(first, second)?;
        let (first_plan, second_plan) = (merkle::root_plan(first), merkle::root_plan(second));
        let mut ids = plan.nodes().to_vec();
        ids.extend_from_slice(first_plan.nodes());
        ids.extend_from_slice(second_plan.nodes());
        let hashes = self.inner.store.nodes(context_id, &ids)?;
        let (a, b) = (
            plan.nodes().len(),
            plan.nodes().len() + first_plan.nodes().len(),
        );
        let root_of = |p: &merkle::ProofPlan, hs: &[Hash]| {
            p.assemble(hs)
                .first()
                .copied()
                .unwrap_or_else(ledger_core::hash::empty_root)
        };
        Ok(ConsistencyProof {
            first,
            second,
            path: plan.assemble(&hashes[..a]),
            first_root: root_of(&first_plan, &hashes[a..b]),
            second_root: root_of(&second_plan, &hashes[b..]),
        })
    }

    /// The context's tree at `size` (0 = the current durable size): root, and the Lamport
    /// clock and time of the entry at that size. `NotFound` for a context without entries.
    pub async fn tree_state(&self, context_id: &str, size: u64) -> Result<TreeState, LedgerError> {
        let current = self.require_size(context_id)?;
        let size = resolve_size(size, current)?;
        if let Some(h) = self
            .inner
            .durable
            .head(context_id)
            .filter(|h| h.size() == size)
        {
            return Ok(TreeState {
                size,
                root: h.root(),
                lamport_clock: h.lamport_clock,
                appended_at_ns: h.last_appended_at_ns,
            });
        }
        let plan = merkle::root_plan(size);
        let root = plan
            .assemble(&self.inner.store.nodes(context_id, plan.nodes())?)
            .first()
            .copied()
            .unwrap_or_else(ledger_core::hash::empty_root);
        let (lamport_clock, appended_at_ns) = if size == 0 {
            (0, 0)
        } else {
            let page = self
                .read(
                    context_id,
                    ReadQuery {
                        after_sequence: size - 1,
                        limit: Some(1),
                        up_to: Some(size),
                        ..ReadQuery::default()
                    },
                )
                .await?;
            let e = page.entries.first().ok_or_else(|| {
                LedgerError::Storage(ledger_storage::StorageError::Corrupt(format!(
                    "entry {size} of {context_id:?} is missing"
                )))
            })?;
            (e.lamport_clock, e.appended_at_ns)
        };
        Ok(TreeState {
            size,
            root,
            lamport_clock,
            appended_at_ns,
        })
    }

    /// The Lamport clock and append time of entry `size` (both 0 for size 0), without
    /// touching the tree: what a tree head of that size states besides its root.
    pub async fn clock_at(&self, context_id: &str, size: u64) -> Result<(u64, u64), LedgerError> {
        if size == 0 {
            return Ok((0, 0));
        }
        if let Some(h) = self
            .inner
            .durable
            .head(context_id)
            .filter(|h| h.size() == size)
        {
            return Ok((h.lamport_clock, h.last_appended_at_ns));
        }
        // One entry: read on the caller's task, like the other point reads.
        let mut query = ReadQuery {
            after_sequence: size - 1,
            limit: Some(1),
            up_to: Some(size),
            ..ReadQuery::default()
        };
        self.cap_at_durable(context_id, &mut query);
        let page = self.inner.store.read(context_id, &query)?;
        let e = page.entries.first().ok_or_else(|| {
            LedgerError::OutOfRange(format!("entry {size} of {context_id:?} does not exist"))
        })?;
        Ok((e.lamport_clock, e.appended_at_ns))
    }

    /// The Merkle frontier of the context's first `size` entries (for following the tree as
    /// entries arrive, e.g. to sign heads along a watch stream).
    pub async fn frontier_at(
        &self,
        context_id: &str,
        size: u64,
    ) -> Result<ledger_core::Frontier, LedgerError> {
        let current = self.durable_size(context_id)?;
        if size > current {
            return Err(LedgerError::OutOfRange(format!(
                "size {size} is beyond the context's current size {current}"
            )));
        }
        let mut ids = Vec::new();
        merkle::range_decomposition(0, size, &mut ids);
        let hashes = if ids.is_empty() {
            Vec::new()
        } else {
            self.inner.store.nodes(context_id, &ids)?
        };
        ledger_core::Frontier::from_parts(size, hashes)
            .map_err(|e| LedgerError::Storage(ledger_storage::StorageError::Corrupt(e.to_string())))
    }

    /// Watches a context: entries with sequence above `from_sequence` (0 = from the start),
    /// optionally only those with key `key`, in order, each exactly once, then live ones.
    pub fn watch(
        &self,
        context_id: &str,
        key: Option<&str>,
        from_sequence: u64,
    ) -> Result<WatchStream, LedgerError> {
        validate::validate_context_id(context_id)?;
        if let Some(k) = key {
            validate::validate_key_filter(k)?;
        }
        let rx = self
            .inner
            .hub
            .subscribe(context_id)
            .ok_or(LedgerError::ShuttingDown)?;
        Ok(WatchStream::new(
            self.clone(),
            context_id.to_owned(),
            key.filter(|k| !k.is_empty()).map(str::to_owned),
            from_sequence,
            rx,
        ))
    }

    /// Context ids with entries, in storage order, after `after`, at most `limit`.
    pub async fn list_contexts(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, LedgerError> {
        let store = Arc::clone(&self.inner.store);
        let after = after.map(str::to_owned);
        blocking(move || store.list_contexts(after.as_deref(), limit)).await
    }

    /// Number of contexts that currently have live watchers.
    pub fn watched_contexts(&self) -> usize {
        self.inner.hub.watched_contexts()
    }

    /// Ends every watch stream (they return [`LedgerError::ShuttingDown`]) and refuses new
    /// watches; appends continue. The first step of a graceful shutdown.
    pub fn stop_watchers(&self) {
        self.inner.hub.close();
    }

    /// Stops accepting appends, finishes the queued ones, ends every watch stream, and flushes
    /// storage so the next open is fast. Idempotent.
    pub async fn close(&self) {
        self.inner.tx.write().take();
        let handle = self.inner.sequencer.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.inner.hub.close();
        let store = Arc::clone(&self.inner.store);
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final storage flush failed"),
            Err(e) => tracing::warn!(error = %e, "final storage flush did not run"),
        }
    }
}

fn resolve_size(requested: u64, current: u64) -> Result<u64, LedgerError> {
    match requested {
        0 => Ok(current),
        n if n > current => Err(LedgerError::OutOfRange(format!(
            "tree size {n} is beyond the context's current size {current}"
        ))),
        n => Ok(n),
    }
}

async fn blocking<T, F>(f: F) -> Result<T, LedgerError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ledger_storage::StorageError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| LedgerError::ShuttingDown)?
        .map_err(LedgerError::from)
}
