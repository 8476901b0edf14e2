//! The follow task: applies the view log's committed entries to this node's [`ViewLog`] and
//! republishes the membership view.
//!
//! [`ViewLog`]: ledger_replication::views::ViewLog

use super::{VIEWS_CONTEXT, codec};
use crate::cluster::Cluster;
use ledger_embedded::ReadQuery;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often the task re-reads the log without a commit notice (entries may be stored after
/// the commit index that covers them was learnt) and makes sure the log's context task runs.
const RECHECK: Duration = Duration::from_millis(300);
/// Entries read per step.
const PAGE: usize = 256;

impl Cluster {
    /// Runs until the node stops.
    pub(crate) async fn follow_views(self: Arc<Self>) {
        let mut commits = self.commits.subscribe(VIEWS_CONTEXT);
        let mut stop = self.stop_signal();
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The log's task never stays stopped: it learns the commit index from the writer.
            let _ = self.mailbox(VIEWS_CONTEXT);
            let committed = commits.borrow_and_update().unwrap_or(0);
            if let Err(e) = self.apply_views(committed).await {
                tracing::warn!(error = %e, "cannot read the placement view log");
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
                _ = recheck.tick() => {}
            }
        }
    }

    /// Applies the stored entries of the log up to `committed` not applied yet. A record that
    /// cannot be decoded or applied is skipped with a warning (every node skips it alike: the
    /// log is the same everywhere).
    async fn apply_views(&self, committed: u64) -> Result<(), String> {
        loop {
            let applied = self.views.applied.load(Ordering::Acquire);
            if applied >= committed {
                return Ok(());
            }
            let read = self
                .ledger
                .read(
                    VIEWS_CONTEXT,
                    ReadQuery {
                        after_sequence: applied,
                        key: None,
                        limit: Some(PAGE),
                        max_bytes: None,
                        up_to: Some(committed),
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            if read.entries.is_empty() {
                return Ok(());
            }
            let mut changed = false;
            let version = {
                let mut log = self.views.log.lock();
                for e in &read.entries {
                    match codec::decode(&e.payload) {
                        Ok(record) => match log.apply(&record) {
                            Ok(c) => changed |= c,
                            Err(err) => {
                                tracing::warn!(sequence = e.sequence, error = %err, "skipping a placement view record that does not apply");
                            }
                        },
                        Err(err) => {
                            tracing::warn!(sequence = e.sequence, error = %err, "skipping an unreadable placement view record");
                        }
                    }
                    self.views.applied.store(e.sequence, Ordering::Release);
                }
                log.version()
            };
            if changed {
                tracing::debug!(version, "placement view log moved");
                self.republish_view();
            }
        }
    }
}
