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
//! - [`Ledger`] (this file): opening, wiring and the lifecycle.
//! - `append`: appends and idempotent retries ([`NewEntry`], [`AppendAck`]).
//! - `batch`: batch appends, all or nothing with consecutive sequences ([`BatchAck`]).
//! - `apply`: pre-sequenced entries shipped by a writer, verified and stored ([`Applied`]).
//! - `read`: pages of entries, heads and sizes, capped at what is durable.
//! - `snapshot` / `load`: snapshots out (whole or streamed) and in (all or nothing,
//!   [`LoadSession`]).
//! - `proofs`: inclusion and consistency proofs, tree states.
//! - `quarantine`: a divergent suffix moved aside ([`QuarantineInfo`]); `replication`: the
//!   replication layer's saved state per context.
//! - `sequencer`: the single writer thread; `dedupe`: its idempotency keys.
//! - `commit`: group commit, durability, publishing; `fail`: the storage-failure latch.
//! - `hub` and [`WatchStream`]: live delivery and gapless watching.
//! - [`config`]: settings; `error`: [`LedgerError`], what can go wrong, classified by
//!   [`ErrorKind`].
//!
//! Appends to one context are serialized (one writer owns every head); appends to different
//! contexts share commits and fsyncs rather than waiting for each other.

mod append;
mod apply;
mod batch;
mod commit;
pub mod config;
mod dedupe;
mod error;
mod fail;
mod hub;
mod load;
mod proofs;
mod quarantine;
mod read;
mod replication;
mod sequencer;
mod snapshot;
mod watch;

pub use append::{Ack, AppendAck, Sequenced, SequencedAppend};
pub use apply::Applied;
pub use batch::{BatchAck, SequencedBatch, SequencedEntries};
pub use commit::{SizeHistogram, Stats};
pub use config::LedgerConfig;
pub use error::{ErrorKind, LedgerError};
pub use ledger_core::validate::Limits;
pub use ledger_core::{Entry, Hash, Metadata, NewEntry};
pub use ledger_storage::{
    ContextHead, Durability, QuarantineInfo, ReadQuery, ReadResult, RocksConfig,
};
pub use load::LoadSession;
pub use proofs::{ConsistencyProof, InclusionProof, TreeState};
pub use sequencer::LoadOutcome;
pub use snapshot::{SnapshotBlob, SnapshotInfo, SnapshotPiece, SnapshotStream};
pub use watch::WatchStream;

use commit::{DurableView, WritePath};
use dedupe::Dedupe;
use fail::FailState;
use hub::WatchHub;
use ledger_core::validate;
use ledger_storage::{LogStore, RocksStore};
use parking_lot::{Mutex, RwLock};
use sequencer::{Command, Reservations, Sequencer};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;

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
    reserved: Reservations,
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

/// How a ledger closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseOutcome {
    /// Everything acknowledged is durable and storage was flushed.
    Clean,
    /// Storage failed (while running or in the final flush): what was acknowledged before the
    /// failure is durable, nothing after it was acknowledged. The reason says what failed.
    StorageFailed(String),
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
        let reserved: Reservations = Arc::default();
        let seq = Sequencer {
            path: WritePath {
                store: Arc::clone(&store),
                hub: Arc::clone(&hub),
                failed: Arc::clone(&failed),
                stats: Arc::clone(&stats),
                durable: Arc::clone(&durable),
                in_flight: Arc::default(),
            },
            store: Arc::clone(&store),
            failed: Arc::clone(&failed),
            max_batch_entries: config.max_batch_entries.max(1),
            max_batch_bytes: config.max_batch_bytes.max(1),
            heads: HashMap::new(),
            dedupe: Dedupe::new(config.idempotency_window_ns, config.idempotency_min_keys),
            reserved: Arc::clone(&reserved),
            recent: Default::default(),
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
                reserved,
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

    /// Appends (and other commands) waiting in the sequencer's queue (at most `queue_depth`).
    pub fn queue_len(&self) -> usize {
        self.inner
            .tx
            .read()
            .as_ref()
            .map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }

    /// True while appends are accepted (not closed, no storage failure).
    pub fn is_writable(&self) -> bool {
        self.inner.tx.read().is_some() && self.inner.failed.check().is_ok()
    }

    pub(crate) async fn send(&self, cmd: Command) -> Result<(), LedgerError> {
        let tx = self
            .inner
            .tx
            .read()
            .clone()
            .ok_or(LedgerError::ShuttingDown)?;
        tx.send(cmd).await.map_err(|_| LedgerError::ShuttingDown)
    }

    /// Watches a context: entries with sequence above `from_sequence` (0 = from the start),
    /// optionally only those with key `key`, in order, each exactly once, then live ones. If
    /// the context is cut back below the stream's position ([`Ledger::quarantine`]), the stream
    /// ends with [`LedgerError::Truncated`].
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
        // Cuts from here on are the stream's to notice (taken before subscribing, so none can
        // fall between the two).
        let cuts_seen = self.inner.hub.cut_count();
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
            cuts_seen,
        ))
    }

    /// Number of contexts that currently have live watchers.
    pub fn watched_contexts(&self) -> usize {
        self.inner.hub.watched_contexts()
    }

    /// Ends every watch stream (they return [`LedgerError::WatchEnded`]) and refuses new
    /// watches; appends continue. The first step of a graceful shutdown.
    pub fn stop_watchers(&self) {
        self.inner.hub.close();
    }

    /// Stops accepting appends, finishes the queued ones, ends every watch stream, and flushes
    /// storage so the next open is fast. Idempotent. Says whether storage failed at any point.
    pub async fn close(&self) -> CloseOutcome {
        self.inner.tx.write().take();
        let handle = self.inner.sequencer.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.inner.hub.close();
        if let Some(reason) = self.inner.failed.reason() {
            // Flushing a store that failed could only fail again or hide the failure.
            return CloseOutcome::StorageFailed(reason);
        }
        let store = Arc::clone(&self.inner.store);
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => CloseOutcome::Clean,
            Ok(Err(e)) => CloseOutcome::StorageFailed(format!("final storage flush failed: {e}")),
            Err(e) => CloseOutcome::StorageFailed(format!("final storage flush did not run: {e}")),
        }
    }
}

pub(crate) async fn blocking<T, F>(f: F) -> Result<T, LedgerError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ledger_storage::StorageError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| LedgerError::ShuttingDown)?
        .map_err(LedgerError::from)
}
