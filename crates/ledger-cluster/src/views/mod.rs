//! The cluster's placement view log at runtime: the agreed, versioned membership ordinary
//! contexts are placed on (`ledger_replication::views` decides; this carries it out).
//!
//! The log lives in one reserved context, [`VIEWS_CONTEXT`], replicated by the same protocol as
//! every other context but placed by gossip on *every* node (so any majority of the nodes holds
//! it). Each entry's payload is one view record ([`codec`]). Three tasks per node:
//! - **follow** ([`follow`]): applies the log's committed entries, in order, to this node's
//!   [`ViewLog`] and republishes the membership view every context task works on;
//! - **coordinate** ([`coordinate`]): on the view log's writer only, turns gossip into records:
//!   the settled marks members announce, then at most one membership change at a time
//!   (`ViewLog::next_change`: a join, an update of a member that came back with a new
//!   incarnation or role, or the leave of a member that is down and was removed by `cluster
//!   remove` or `dead_member_timeout_ms`), only once every live member settled the current view;
//! - **settle** ([`settle`]): makes sure every context this node holds whose replica set
//!   changed between the views a claim must still consult was claimed again under the current
//!   view (asking each context's writer), then announces the version settled in its gossip
//!   metadata.
//!
//! Public requests never reach the reserved contexts (`__ledger/…`): the server refuses them.

pub mod codec;
pub mod coordinate;
pub mod follow;
pub mod settle;

use ledger_replication::views::ViewLog;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The reserved context holding the placement view log.
pub const VIEWS_CONTEXT: &str = "__ledger/views";
/// Context ids starting with this are the cluster's own; clients cannot write or load them.
pub const RESERVED_PREFIX: &str = "__ledger/";

/// Whether `context_id` is one of the cluster's own contexts.
pub fn is_reserved(context_id: &str) -> bool {
    context_id.starts_with(RESERVED_PREFIX)
}

/// This node's copy of the view log and what it did with it.
#[derive(Debug)]
pub struct Views {
    log: Mutex<ViewLog>,
    /// Entries of [`VIEWS_CONTEXT`] applied to `log`.
    applied: AtomicU64,
    /// The version this node announced settled.
    announced: AtomicU64,
    /// The coordinator's change waiting for members to settle, for `cluster status`.
    pending: Mutex<Option<Pending>>,
}

/// A membership change the coordinator holds back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The change, as text.
    pub change: String,
    /// The live members that have not settled the current view yet.
    pub waiting_for: Vec<String>,
}

impl Default for Views {
    fn default() -> Self {
        Views {
            log: Mutex::new(ViewLog::new()),
            applied: AtomicU64::new(0),
            announced: AtomicU64::new(0),
            pending: Mutex::new(None),
        }
    }
}

impl Views {
    /// Runs `f` on the log (briefly: it is locked).
    pub fn with_log<T>(&self, f: impl FnOnce(&ViewLog) -> T) -> T {
        f(&self.log.lock())
    }

    /// The current view's version (0 before the first).
    pub fn version(&self) -> u64 {
        self.log.lock().version()
    }

    /// The version this node announced settled.
    pub fn announced(&self) -> u64 {
        self.announced.load(Ordering::Acquire)
    }

    /// The change the coordinator holds back, if this node coordinates and one waits.
    pub fn pending(&self) -> Option<Pending> {
        self.pending.lock().clone()
    }
}
