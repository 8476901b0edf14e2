//! What a replica may serve of a context: the prefix a quorum holds, its **commit index**
//! (Kafka's high watermark). Entries past it are durable here but may still be cut off and
//! quarantined (a deposed writer's unreplicated tail), so `Get`, `Watch`, `Snapshot` and the
//! IntegrityService stop there: no reader ever sees an entry that is later replaced.
//!
//! Each context task publishes its participant's commit index on a watch channel
//! ([`Commits::publish`]); readers hold a [`ReadCap`], a receiver of it. The writer knows its
//! commit index first; followers learn it with every batch and heartbeat (the writer sends a
//! heartbeat as soon as it advances), so replicas serve new entries a round trip after the
//! writer does.

use crate::error::ClusterError;
use ledger_embedded::LedgerError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;

/// How long a read waits for a context task to say what is committed (a task that has just
/// started reads its state from storage first).
pub const FIRST_VALUE_WAIT: Duration = Duration::from_secs(2);

/// The commit index of every context with a task, as watch channels.
#[derive(Debug, Default)]
pub struct Commits {
    feeds: Mutex<HashMap<String, watch::Sender<Option<u64>>>>,
}

impl Commits {
    /// Records `committed` as `context_id`'s commit index if it is higher (waking its readers).
    /// Never lower: a commit index only grows, and a context task started again after it
    /// stopped idle begins from its stored state, whose commit index may trail the one the
    /// stopped task had learnt from heartbeats (it is saved with entries, not with every
    /// heartbeat). What was served as committed stays served.
    pub fn publish(&self, context_id: &str, committed: u64) {
        let mut feeds = self.feeds.lock();
        match feeds.get(context_id) {
            Some(tx) => {
                tx.send_if_modified(|v| {
                    let raised = v.is_none_or(|c| committed > c);
                    if raised {
                        *v = Some(committed);
                    }
                    raised
                });
            }
            None => {
                feeds.insert(context_id.to_owned(), watch::channel(Some(committed)).0);
            }
        }
    }

    /// A receiver of `context_id`'s commit index (`None` until its task has published one).
    pub fn subscribe(&self, context_id: &str) -> watch::Receiver<Option<u64>> {
        self.feeds
            .lock()
            .entry(context_id.to_owned())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }
}

/// A reader's view of one context's commit index.
#[derive(Clone, Debug)]
pub struct ReadCap {
    rx: watch::Receiver<Option<u64>>,
}

impl ReadCap {
    /// Waits (up to `wait`) for the context task's first value.
    pub async fn new(mut rx: watch::Receiver<Option<u64>>, wait: Duration) -> ReadCap {
        let _ = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        ReadCap { rx }
    }

    /// The entries a reader may see: `1 ..= committed()`.
    pub fn committed(&self) -> u64 {
        self.rx.borrow().unwrap_or(0)
    }

    /// Waits up to `timeout` until `sequence` is committed.
    pub async fn wait_for(&mut self, sequence: u64, timeout: Duration) -> bool {
        let reached = self.rx.wait_for(|v| v.is_some_and(|c| c >= sequence));
        matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(_)))
    }

    /// Completes when the commit index changes; false if its task is gone.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    /// A tree size a client asked for, within what is committed: 0 (the latest) becomes the
    /// commit index (`NotFound` while nothing is committed); anything past it is refused.
    pub fn resolve_size(&self, size: u64, context_id: &str) -> Result<u64, ClusterError> {
        let committed = self.committed();
        match size {
            0 if committed == 0 => Err(ClusterError::Ledger(LedgerError::NotFound {
                context_id: context_id.to_owned(),
            })),
            0 => Ok(committed),
            s if s <= committed => Ok(s),
            s => Err(ClusterError::NotCommitted {
                context_id: context_id.to_owned(),
                size: s,
                committed,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_follow_the_published_commit_index() {
        let commits = Commits::default();
        let rx = commits.subscribe("c");
        commits.publish("c", 3);
        let mut cap = ReadCap::new(rx, FIRST_VALUE_WAIT).await;
        assert_eq!(cap.committed(), 3);
        assert_eq!(cap.resolve_size(0, "c").unwrap(), 3);
        assert_eq!(cap.resolve_size(2, "c").unwrap(), 2);
        assert!(matches!(
            cap.resolve_size(4, "c"),
            Err(ClusterError::NotCommitted { committed: 3, .. })
        ));
        let waiting = tokio::spawn({
            let mut cap = cap.clone();
            async move { cap.wait_for(5, Duration::from_secs(5)).await }
        });
        commits.publish("c", 4);
        commits.publish("c", 5);
        assert!(waiting.await.unwrap());
        assert!(!cap.wait_for(9, Duration::from_millis(20)).await);
        assert_eq!(cap.committed(), 5);
    }

    #[tokio::test]
    async fn a_published_commit_index_never_goes_back() {
        let commits = Commits::default();
        commits.publish("c", 7);
        // A task started again from stored state that trails what was served.
        commits.publish("c", 4);
        let cap = ReadCap::new(commits.subscribe("c"), FIRST_VALUE_WAIT).await;
        assert_eq!(cap.committed(), 7);
        assert_eq!(cap.resolve_size(0, "c").unwrap(), 7);
        commits.publish("c", 8);
        assert_eq!(*commits.subscribe("c").borrow(), Some(8));
    }

    #[tokio::test]
    async fn a_context_without_a_task_reads_as_nothing_committed() {
        let commits = Commits::default();
        let cap = ReadCap::new(commits.subscribe("none"), Duration::from_millis(10)).await;
        assert_eq!(cap.committed(), 0);
        assert!(matches!(
            cap.resolve_size(0, "none"),
            Err(ClusterError::Ledger(LedgerError::NotFound { .. }))
        ));
    }
}
