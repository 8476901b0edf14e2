//! [`Cluster`]: a running cluster member, what it owns and how it stops.

use crate::anti_entropy::sessions::AntiEntropy;
use crate::commit_index::Commits;
use crate::context::messages::ContextMsg;
use crate::context::registry::{Registry, Retire};
use crate::links::{Links, PeerTlsSource};
use crate::membership::{self, View};
use crate::metrics::ClusterMetrics;
use crate::settings::ClusterSettings;
use crate::tasks::TaskSet;
use crate::views::Views;
use crate::views::coordinate::hold_log_back;
use ledger_discovery::Discovery;
use ledger_embedded::Ledger;
use ledger_proto::cluster::v1 as cpb;
use ledger_replication::Voter;
use parking_lot::Mutex;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tonic::transport::Channel;

/// How long [`Cluster::shutdown`] waits for its tasks (context tasks answering what they hold,
/// stream readers) before it aborts those still running.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A running cluster member. Shared by the gRPC services and every task it runs.
#[derive(Debug)]
pub struct Cluster {
    pub me: Voter,
    pub settings: ClusterSettings,
    pub ledger: Ledger,
    /// Metrics hooks (epoch changes, catch-ups, replica lag).
    pub(crate) metrics: Arc<dyn ClusterMetrics>,
    pub(crate) discovery: Arc<dyn Discovery>,
    /// The placement view log ([`crate::views`]).
    pub views: Views,
    view_tx: watch::Sender<View>,
    pub(crate) links: Links,
    /// The context tasks' mailboxes.
    pub(crate) contexts: Registry,
    /// Every task this member spawned: [`Cluster::shutdown`] waits for them.
    tasks: TaskSet,
    /// The view and anti-entropy tasks: stopped at once on shutdown (they hold nothing to
    /// answer).
    background: Mutex<Vec<AbortHandle>>,
    started: Instant,
    stop: watch::Sender<bool>,
    joined: AtomicBool,
    /// This node reached a seed when it joined (or was given none: it starts the cluster).
    /// Until then, or until gossip shows it another node, it never bootstraps the placement
    /// view log: nodes started together, each alone for a moment, would each create one.
    pub(crate) contacted: AtomicBool,
    quarantines: AtomicU64,
    pub anti_entropy: AntiEntropy,
    /// Every context task's commit index: what reads here may serve.
    pub(crate) commits: Commits,
    /// True once the first anti-entropy comparison with every live peer is done.
    pub(crate) ready: watch::Sender<bool>,
}

impl Cluster {
    /// Starts the member on a started `discovery` (which announces this node to the others):
    /// the view task follows its membership, the seeds are joined, then anti-entropy starts.
    /// `me` is this node's voter (node id and incarnation), `peer_tls` how peers are dialed
    /// when TLS is on.
    pub async fn start(
        settings: ClusterSettings,
        me: Voter,
        ledger: Ledger,
        discovery: Arc<dyn Discovery>,
        metrics: Arc<dyn ClusterMetrics>,
        peer_tls: Option<Arc<dyn PeerTlsSource>>,
    ) -> Result<Arc<Cluster>, String> {
        let (view, _) = membership::view(&discovery.membership(), None, SystemTime::now());
        let view = hold_log_back(view, &settings, 0, false);
        let (view_tx, _) = watch::channel(view);
        let (stop, _) = watch::channel(false);
        let cluster = Arc::new(Cluster {
            me,
            settings,
            ledger,
            metrics,
            discovery,
            views: Views::default(),
            view_tx,
            links: Links::new(peer_tls),
            contexts: Registry::default(),
            tasks: TaskSet::default(),
            background: Mutex::new(Vec::new()),
            started: Instant::now(),
            stop,
            joined: AtomicBool::new(false),
            contacted: AtomicBool::new(false),
            quarantines: AtomicU64::new(0),
            anti_entropy: AntiEntropy::default(),
            commits: Commits::default(),
            ready: watch::channel(false).0,
        });
        let view_task = cluster.spawn(Arc::clone(&cluster).follow_membership());
        cluster.background.lock().push(view_task);
        if cluster.settings.placement_views {
            for task in [
                cluster.spawn(Arc::clone(&cluster).follow_views()),
                cluster.spawn(Arc::clone(&cluster).coordinate_views()),
                cluster.spawn(Arc::clone(&cluster).settle_views()),
            ] {
                cluster.background.lock().push(task);
            }
        }
        let seeds = cluster.settings.seeds.clone();
        let report = cluster
            .discovery
            .join(&seeds)
            .await
            .map_err(|e| format!("cannot join the seeds {seeds:?} (setting seeds): {e}"))?;
        if !seeds.is_empty() && !report.joined() {
            tracing::warn!(seeds = ?seeds, errors = ?report.errors, "no seed answered yet; running alone and retrying in the background");
        } else {
            tracing::info!(seeds = ?seeds, contacted = ?report.contacted, "joined the cluster");
        }
        if seeds.is_empty() || report.joined() {
            cluster.contacted.store(true, Ordering::Release);
        }
        cluster.joined.store(true, Ordering::Release);
        let ae = cluster.spawn(Arc::clone(&cluster).anti_entropy_loop());
        cluster.background.lock().push(ae);
        Ok(cluster)
    }

    /// Waits (at most `timeout`) until the node has joined, compared its contexts with every
    /// live peer once, and the placement view log names it a member.
    pub async fn wait_ready(&self, timeout: Duration) {
        let me = self.me.clone();
        let ready = async {
            let mut rx = self.ready.subscribe();
            let _ = rx.wait_for(|r| *r).await;
            if !self.settings.placement_views {
                return;
            }
            let mut views = self.view_feed();
            let _ = views
                .wait_for(|v| v.range.version >= 1 && v.members.iter().any(|m| m.voter() == me))
                .await;
        };
        let _ = tokio::time::timeout(timeout, ready).await;
    }

    /// Joined the cluster (the seeds were tried).
    pub fn is_joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    /// Leaves the cluster (peers see this node `left` at once instead of after the failure
    /// detector's timeout), stops every context task and peer link, and waits for every task
    /// it spawned (those still running after a few seconds are aborted). Appends in flight end
    /// with UNAVAILABLE.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        if let Err(e) = self.discovery.leave(Duration::from_secs(2)).await {
            tracing::warn!(error = %e, "could not announce leaving the cluster");
        }
        self.contexts.clear();
        for t in self.background.lock().drain(..) {
            t.abort();
        }
        self.links.clear();
        self.tasks.shutdown(SHUTDOWN_WAIT).await;
    }

    /// Runs `task` as one of this member's tasks (waited for at shutdown).
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> AbortHandle {
        self.tasks.spawn(task)
    }

    /// Milliseconds since this node started: the protocol's clock.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The current membership view.
    pub fn view(&self) -> View {
        self.view_tx.borrow().clone()
    }

    pub(crate) fn view_feed(&self) -> watch::Receiver<View> {
        self.view_tx.subscribe()
    }

    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Contexts whose task is running (an idle one stops: see [`crate::context`]), the view
    /// log's own (always running) left out.
    pub fn context_tasks(&self) -> usize {
        self.contexts.running_except(crate::views::VIEWS_CONTEXT)
    }

    /// Places ordinary contexts on the view log's current view again (after it moved).
    pub(crate) fn republish_view(&self) {
        self.views.with_log(|log| {
            self.view_tx.send_if_modified(|v| {
                let next = v.clone().with_log(log);
                if *v == next {
                    false
                } else {
                    *v = next;
                    true
                }
            });
        });
    }

    /// The node is shutting down (context tasks end, none start).
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    pub(crate) fn count_quarantine(&self) {
        self.quarantines.fetch_add(1, Ordering::Relaxed);
    }

    /// Quarantines made by this node since it started.
    pub fn quarantine_count(&self) -> u64 {
        self.quarantines.load(Ordering::Relaxed)
    }

    /// Certificates were reloaded (SIGHUP): new peer connections use them.
    pub fn tls_reloaded(&self) {
        self.links.tls_reloaded();
    }

    /// A channel to another node's gRPC at `addr` (connected on first use, shared), with
    /// mutual TLS when TLS is on: for forwarded requests and status calls.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        self.links.channel(addr)
    }

    /// Removes a dead or left member from this node's view (`cluster remove`); see
    /// [`Discovery::forget`].
    pub fn forget_member(&self, node_id: &str) -> bool {
        self.discovery.forget(node_id)
    }

    /// Publishes membership changes to every context task, forgets members dead too long, and
    /// keeps a dialer running for every peer this node dials.
    async fn follow_membership(self: Arc<Self>) {
        let mut feed = self.discovery.subscribe();
        let mut stop = self.stop_signal();
        loop {
            let current = feed.borrow_and_update().clone();
            let (view, expired) = membership::view(
                &current,
                self.settings.dead_member_timeout,
                SystemTime::now(),
            );
            for id in expired {
                if self.discovery.forget(&id) {
                    tracing::warn!(node = %id, "removed a member dead for longer than dead_member_timeout_ms");
                }
            }
            self.ensure_dialers(&view);
            let view = hold_log_back(
                view,
                &self.settings,
                self.views.version(),
                self.contacted.load(Ordering::Acquire),
            );
            let view = self.views.with_log(|log| view.with_log(log));
            self.view_tx.send_if_modified(|v| {
                if *v == view {
                    false
                } else {
                    *v = view;
                    true
                }
            });
            tokio::select! {
                changed = feed.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
                // Re-check expiry now and then even without gossip changes.
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Called by an idle context task: see [`Registry::retire`].
    pub(crate) fn retire(&self, context_id: &str, rx: &mut mpsc::Receiver<ContextMsg>) -> Retire {
        self.contexts.retire(context_id, rx)
    }

    /// Records a context task's commit index for the readers of the context.
    pub(crate) fn publish_committed(&self, context_id: &str, committed: u64) {
        self.commits.publish(context_id, committed);
    }

    /// Sends an envelope to a peer over its link, if one is up; dropped otherwise (the
    /// protocol retransmits).
    pub(crate) fn send(&self, to: &str, env: cpb::Envelope) {
        self.links.send(to, env);
    }
}
