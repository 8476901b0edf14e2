//! The settle task: a node settles view `v` once every context it holds whose replica set
//! changed between the views a claim must still consult and `v` was claimed again under `v`
//! (by its writer, asked with `ContextState { settle: true }`); then it announces `v` in its
//! gossip metadata and the coordinator records it. The floor of the log (the oldest view a
//! claim consults) rises to the lowest version every member settled.

use super::{VIEWS_CONTEXT, is_reserved};
use crate::cluster::Cluster;
use ledger_replication::views::set_changed;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often the task tries to settle the current view.
const EVERY: Duration = Duration::from_millis(300);
/// How long one writer may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Contexts listed per storage read.
const PAGE: usize = 512;

impl Cluster {
    /// Runs until the node stops.
    pub(crate) async fn settle_views(self: Arc<Self>) {
        let mut stop = self.stop_signal();
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The highest version gossip carries for this node (an announce can fail: it is tried
        // again; the view log's writer also reads the mark directly).
        let mut gossiped = 0u64;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            let version = self.views.version();
            if version > 0 && self.views.announced() < version {
                match self.settle_version(version).await {
                    Ok(true) => {
                        self.views.announced.fetch_max(version, Ordering::AcqRel);
                        tracing::info!(version, "settled the placement view");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(version, error = %e, "cannot settle the placement view");
                    }
                }
            }
            let announced = self.views.announced();
            if announced > gossiped {
                match self.discovery.announce_views_settled(announced).await {
                    Ok(()) => gossiped = announced,
                    Err(e) => {
                        tracing::warn!(version = announced, error = %e, "settled the placement view but could not announce it yet; retrying");
                    }
                }
            }
        }
    }

    /// Whether every context held here whose set changed is claimed under `version` (asking
    /// each one's writer, so they all claim at once).
    async fn settle_version(self: &Arc<Self>, version: u64) -> Result<bool, String> {
        let view = self.view();
        if view.range.version != version {
            return Ok(false);
        }
        let (current, earlier) = self
            .views
            .with_log(|log| (log.current().clone(), view.range.earlier.clone()));
        let r = self.replication_factor();
        let mut all = true;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .ledger
                .list_contexts(after.as_deref(), PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for ctx in page {
                if ctx == VIEWS_CONTEXT || is_reserved(&ctx) {
                    continue;
                }
                if !earlier.iter().any(|e| set_changed(&ctx, e, &current, r)) {
                    continue;
                }
                let settled = self.ask_settle(&ctx).await.unwrap_or(0);
                all &= settled >= version;
            }
            after = Some(last);
        }
        Ok(all)
    }

    /// Asks `context_id`'s writer (this node's task, or the writer's node) to settle it:
    /// the view version its epoch stands on.
    async fn ask_settle(self: &Arc<Self>, context_id: &str) -> Option<u64> {
        let (writer, addr) = self.writer_of(context_id)?;
        if writer == self.me.node.as_str() {
            return Some(self.settle_here(context_id).await.settled);
        }
        self.remote_context_state(&addr, context_id, true, ASK_TIMEOUT)
            .await
            .ok()
            .map(|answer| answer.settled)
    }
}
