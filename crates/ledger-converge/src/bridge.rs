//! Streaming while the engine runs: a `StreamingCallback` and `ExperienceEventObserver` that
//! hands each fact and event to a bounded buffer and returns at once; one task (owned by the
//! bridge, stopped by [`StreamingBridge::shutdown`] or when the last handle is dropped) appends
//! them to the ledger, pipelined, with the same entries and idempotency keys a save uses.
//!
//! When the buffer is full (the ledger is slower than the engine, or unreachable) the fact or
//! event is **not** buffered: the engine never waits. It is counted in
//! [`BridgeReport::dropped`], its id kept (up to [`NOT_PERSISTED_IDS`]), and the next
//! `save_context` of the scope appends the missing facts (it finds them missing by id). An
//! append that still fails when its retry budget is spent is counted in
//! [`BridgeReport::failed`] the same way. Memory is bounded by the buffer's capacity plus the
//! appends in flight.

use crate::context_store::Scope;
use crate::experience::ExperienceLedger;
use crate::mapping;
use crate::writer::Ledger;
use converge_core::{
    ContextFact, ContextKey, ContextState, ExperienceEvent, ExperienceEventEnvelope,
    ExperienceEventObserver, StreamingCallback,
};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use ledger_core::NewEntry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Ids of facts not persisted that a report keeps (the counts are exact beyond it).
pub const NOT_PERSISTED_IDS: usize = 1000;

/// Settings of a bridge.
#[derive(Clone, Debug)]
pub struct BridgeOptions {
    /// Facts and events buffered before new ones are dropped (and left to the next save).
    pub capacity: usize,
    /// Appends in flight at once.
    pub window: usize,
    /// Where engine events go: the experience context of this tenant and correlation id.
    pub tenant: Option<String>,
    pub correlation: Option<String>,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            capacity: 4096,
            window: 64,
            tenant: None,
            correlation: None,
        }
    }
}

/// What a bridge did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeReport {
    /// Facts stored (or found stored) by the bridge.
    pub facts_persisted: u64,
    /// Events stored.
    pub events_persisted: u64,
    /// Facts and events not buffered because the buffer was full.
    pub dropped: u64,
    /// Facts and events whose append failed after every retry.
    pub failed: u64,
    /// (key, id) of facts dropped or failed, first [`NOT_PERSISTED_IDS`].
    pub not_persisted: Vec<(ContextKey, String)>,
    /// The last append error.
    pub last_error: Option<String>,
}

enum Item {
    Fact {
        key: ContextKey,
        id: String,
        position: u64,
        fact: Box<ContextFact>,
    },
    Event(Box<ExperienceEventEnvelope>),
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Stats {
    facts: AtomicU64,
    events: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    ids: Mutex<Vec<(ContextKey, String)>>,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    fn lost(&self, fact: Option<(ContextKey, String)>, dropped: bool) {
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(f) = fact {
            let mut ids = self.ids.lock().expect("ids lock");
            if ids.len() < NOT_PERSISTED_IDS {
                ids.push(f);
            }
        }
    }
}

/// Per key: the ids the engine's context holds, in order (the next position is the count).
type Positions = HashMap<ContextKey, HashSet<String>>;

/// The bridge. Share it as `Arc<StreamingBridge>` with the engine.
pub struct StreamingBridge {
    tx: Mutex<Option<mpsc::Sender<Item>>>,
    positions: Mutex<Positions>,
    stats: Arc<Stats>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    next_event: AtomicU64,
    event_prefix: String,
    tenant: Option<String>,
    correlation: Option<String>,
}

impl std::fmt::Debug for StreamingBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingBridge")
            .field("report", &self.report())
            .finish_non_exhaustive()
    }
}

impl StreamingBridge {
    pub(crate) fn start(
        ledger: Ledger,
        scope: Arc<Scope>,
        experience: Arc<ExperienceLedger>,
        start: Option<&ContextState>,
        options: BridgeOptions,
    ) -> Arc<StreamingBridge> {
        let (tx, rx) = mpsc::channel(options.capacity.max(1));
        let mut positions = Positions::new();
        if let Some(state) = start {
            for (key, facts) in state.snapshot().facts() {
                positions
                    .entry(*key)
                    .or_default()
                    .extend(facts.iter().map(|f| f.id().to_string()));
            }
        }
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(run(
            rx,
            ledger,
            scope,
            experience,
            Arc::clone(&stats),
            options.window.max(1),
        ));
        Arc::new(StreamingBridge {
            tx: Mutex::new(Some(tx)),
            positions: Mutex::new(positions),
            stats,
            task: Mutex::new(Some(task)),
            next_event: AtomicU64::new(0),
            event_prefix: uuid::Uuid::now_v7().simple().to_string(),
            tenant: options.tenant,
            correlation: options.correlation,
        })
    }

    fn offer(&self, item: Item, fact: Option<(ContextKey, String)>) {
        let tx = self.tx.lock().expect("tx lock").clone();
        let sent = tx.is_some_and(|tx| tx.try_send(item).is_ok());
        if !sent {
            self.stats.lost(fact, true);
        }
    }

    /// Waits until everything buffered before this call has been appended (or given up on).
    pub async fn flush(&self) {
        let tx = self.tx.lock().expect("tx lock").clone();
        let Some(tx) = tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Item::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Flushes, stops the task and returns the final report.
    pub async fn shutdown(&self) -> BridgeReport {
        self.flush().await;
        self.tx.lock().expect("tx lock").take();
        let task = self.task.lock().expect("task lock").take();
        if let Some(t) = task {
            let _ = t.await;
        }
        self.report()
    }

    /// What the bridge did so far.
    pub fn report(&self) -> BridgeReport {
        BridgeReport {
            facts_persisted: self.stats.facts.load(Ordering::Relaxed),
            events_persisted: self.stats.events.load(Ordering::Relaxed),
            dropped: self.stats.dropped.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            not_persisted: self.stats.ids.lock().expect("ids lock").clone(),
            last_error: self.stats.last_error.lock().expect("error lock").clone(),
        }
    }
}

impl Drop for StreamingBridge {
    fn drop(&mut self) {
        // Closing the buffer lets the task append what is buffered, then end (while the
        // runtime runs; what a process exit cuts short, the next load does not find and the
        // engine derives again).
        self.tx.lock().expect("tx lock").take();
    }
}

impl StreamingCallback for StreamingBridge {
    fn on_cycle_start(&self, _cycle: u32) {}

    fn on_fact(&self, _cycle: u32, fact: &ContextFact) {
        let key = fact.key();
        let id = fact.id().to_string();
        let position = {
            let mut p = self.positions.lock().expect("positions lock");
            let ids = p.entry(key).or_default();
            if !ids.insert(id.clone()) {
                return; // the engine offers a fact it already holds: nothing new
            }
            ids.len() as u64 - 1
        };
        self.offer(
            Item::Fact {
                key,
                id: id.clone(),
                position,
                fact: Box::new(fact.clone()),
            },
            Some((key, id)),
        );
    }

    fn on_cycle_end(&self, _cycle: u32, _facts_added: usize) {}
}

impl ExperienceEventObserver for StreamingBridge {
    fn on_event(&self, event: &ExperienceEvent) {
        let n = self.next_event.fetch_add(1, Ordering::Relaxed);
        let mut env =
            ExperienceEventEnvelope::new(format!("evt-{}-{n}", self.event_prefix), event.clone())
                .with_timestamp(crate::now_iso8601());
        if let Some(t) = &self.tenant {
            env = env.with_tenant(t.clone());
        }
        if let Some(c) = &self.correlation {
            env = env.with_correlation(c.clone());
        }
        self.offer(Item::Event(Box::new(env)), None);
    }
}

type Done = (Option<(ContextKey, String, u64)>, Result<(), crate::Error>);

async fn run(
    mut rx: mpsc::Receiver<Item>,
    ledger: Ledger,
    scope: Arc<Scope>,
    experience: Arc<ExperienceLedger>,
    stats: Arc<Stats>,
    window: usize,
) {
    let mut inflight: FuturesOrdered<futures::future::BoxFuture<'static, Done>> =
        FuturesOrdered::new();
    let finish = |d: Done, stats: &Stats| match d {
        (fact, Ok(())) => {
            if let Some((key, id, pos)) = fact {
                stats.facts.fetch_add(1, Ordering::Relaxed);
                scope
                    .state
                    .lock()
                    .expect("scope lock")
                    .known
                    .entry((key, id))
                    .or_insert(pos);
            } else {
                stats.events.fetch_add(1, Ordering::Relaxed);
            }
        }
        (fact, Err(e)) => {
            *stats.last_error.lock().expect("error lock") = Some(e.to_string());
            stats.lost(fact.map(|(k, i, _)| (k, i)), false);
        }
    };
    loop {
        tokio::select! {
            biased;
            Some(d) = inflight.next(), if !inflight.is_empty() => finish(d, &stats),
            item = rx.recv(), if inflight.len() < window => match item {
                None => break,
                Some(Item::Flush(done)) => {
                    while let Some(d) = inflight.next().await {
                        finish(d, &stats);
                    }
                    let _ = done.send(());
                }
                Some(Item::Fact { key, id, position, fact }) => {
                    let stored = scope
                        .state
                        .lock()
                        .expect("scope lock")
                        .known
                        .contains_key(&(key, id.clone()));
                    if stored {
                        continue;
                    }
                    let entry = match mapping::fact_entry(&fact, position) {
                        Ok((payload, metadata)) => {
                            let mut e = NewEntry::new(
                                &scope.context,
                                mapping::ledger_key(key),
                                payload,
                                metadata,
                                None,
                            );
                            e.idempotency_key = Some(mapping::fact_idempotency_key(key, &id));
                            e
                        }
                        Err(reason) => {
                            finish(
                                (
                                    Some((key, id, position)),
                                    Err(crate::Error::Encode { what: "fact", reason }),
                                ),
                                &stats,
                            );
                            continue;
                        }
                    };
                    let ledger = ledger.clone();
                    inflight.push_back(Box::pin(async move {
                        let r = ledger.append(entry).await.map(|_| ());
                        (Some((key, id, position)), r)
                    }));
                }
                Some(Item::Event(env)) => {
                    let experience = Arc::clone(&experience);
                    inflight.push_back(Box::pin(async move {
                        (None, experience.append_event(&env).await)
                    }));
                }
            },
        }
    }
    while let Some(d) = inflight.next().await {
        finish(d, &stats);
    }
}
