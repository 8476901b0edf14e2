//! The writer's pipeline of local appends: [`Sequencing`] holds what was queued to the embedded
//! ledger until it is sequenced, [`Syncing`] what was sequenced until it is durable, both in
//! submission order. What the task does at each step is in [`super::writer`].

use super::messages::{AppendReply, BatchReply};
use futures::FutureExt;
use futures::stream::{FuturesOrdered, StreamExt};
use ledger_core::{Entry, Hash};
use ledger_embedded::{AppendAck, BatchAck, LedgerError, SequencedAppend, SequencedBatch};
use ledger_replication::AckLevel;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Most local appends handed on in one step.
const MAX_STEP: usize = 512;

type Queue<T> = FuturesOrdered<Pin<Box<dyn Future<Output = T> + Send>>>;

/// A local append or batch that was sequenced (or refused), in submission order.
pub(crate) enum Local {
    One(LocalOne),
    Batch(LocalBatch),
}

/// A local batch: its entries once sequenced (`None`: refused, `durable` says why).
pub(crate) struct LocalBatch {
    pub entries: Option<Vec<Arc<Entry>>>,
    pub durable: BatchAck,
    pub level: AckLevel,
    pub reply: BatchReply,
}

/// A local append that was sequenced (or refused).
pub(crate) struct LocalOne {
    /// `None`: refused before sequencing (`durable` says why).
    pub entry: Option<Arc<Entry>>,
    /// Its idempotency key and fingerprint, if it had one (shipped with the entry).
    pub key: Option<(String, Hash)>,
    pub durable: AppendAck,
    pub level: AckLevel,
    pub reply: AppendReply,
}

/// A local append's durability, in submission order.
pub(crate) enum Synced {
    /// A fresh entry of this writer, now durable (or its store failed).
    Entry {
        sequence: u64,
        result: Result<Arc<Entry>, LedgerError>,
    },
    /// An append the sequencer refused: answer with why.
    Refused {
        result: Result<Arc<Entry>, LedgerError>,
        reply: AppendReply,
    },
    /// A batch the sequencer refused: answer with why.
    RefusedBatch {
        result: Result<Vec<Arc<Entry>>, LedgerError>,
        reply: BatchReply,
    },
}

/// Appends queued to the ledger, until sequenced.
#[derive(Default)]
pub(crate) struct Sequencing(Queue<Local>);

impl Sequencing {
    /// An append queued to the ledger, answered at `level` once sequenced and acknowledged.
    pub(crate) fn append(
        &mut self,
        queued: SequencedAppend,
        key: Option<(String, Hash)>,
        level: AckLevel,
        reply: AppendReply,
    ) {
        self.0.push_back(Box::pin(async move {
            Local::One(LocalOne {
                key,
                entry: queued.sequenced.await,
                durable: queued.durable,
                level,
                reply,
            })
        }));
    }

    /// A batch queued to the ledger, answered at `level` once its last entry is acknowledged.
    pub(crate) fn batch(&mut self, queued: SequencedBatch, level: AckLevel, reply: BatchReply) {
        self.0.push_back(Box::pin(async move {
            Local::Batch(LocalBatch {
                entries: queued.sequenced.await,
                durable: queued.durable,
                level,
                reply,
            })
        }));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The oldest append, once sequenced.
    pub(crate) async fn next(&mut self) -> Option<Local> {
        self.0.next().await
    }

    /// The oldest appends sequenced, as many as are ready (at most a step's worth).
    pub(crate) async fn next_step(&mut self) -> Option<Vec<Local>> {
        step(&mut self.0).await
    }
}

/// Sequenced appends, until durable.
#[derive(Default)]
pub(crate) struct Syncing(Queue<Synced>);

impl Syncing {
    /// This writer's fresh entry at `sequence`, durable once `durable` completes.
    pub(crate) fn entry(&mut self, sequence: u64, durable: AppendAck) {
        self.0.push_back(Box::pin(async move {
            Synced::Entry {
                sequence,
                result: durable.await,
            }
        }));
    }

    /// A batch of this writer's fresh entries ending at `last`, durable with the whole batch.
    pub(crate) fn batch(&mut self, last: u64, durable: BatchAck) {
        self.0.push_back(Box::pin(async move {
            Synced::Entry {
                sequence: last,
                result: durable
                    .await
                    .map(|mut v| v.pop().expect("a batch has entries")),
            }
        }));
    }

    /// An append the sequencer refused: `durable` says why.
    pub(crate) fn refused(&mut self, durable: AppendAck, reply: AppendReply) {
        self.0.push_back(Box::pin(async move {
            Synced::Refused {
                result: durable.await,
                reply,
            }
        }));
    }

    /// A batch the sequencer refused: `durable` says why.
    pub(crate) fn refused_batch(&mut self, durable: BatchAck, reply: BatchReply) {
        self.0.push_back(Box::pin(async move {
            Synced::RefusedBatch {
                result: durable.await,
                reply,
            }
        }));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The oldest append, once durable (or failed).
    pub(crate) async fn next(&mut self) -> Option<Synced> {
        self.0.next().await
    }

    /// The oldest appends durable, as many as are ready (at most a step's worth).
    pub(crate) async fn next_step(&mut self) -> Option<Vec<Synced>> {
        step(&mut self.0).await
    }
}

/// The next item of `queue` and those ready right behind it, up to [`MAX_STEP`].
async fn step<T>(queue: &mut Queue<T>) -> Option<Vec<T>> {
    let first = queue.next().await?;
    let mut done = vec![first];
    while done.len() < MAX_STEP {
        match queue.next().now_or_never() {
            Some(Some(item)) => done.push(item),
            _ => break,
        }
    }
    Some(done)
}
