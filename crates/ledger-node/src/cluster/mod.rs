//! The node's cluster runtime: gossip membership, one replication task per context, peer
//! links, and the routing of public requests to the node that should serve them.
//!
//! A node runs it only when `seeds` or `gossip_addr` is set; without them it is a one-node
//! cluster and serves exactly like a single node (no gossip, no replication, no extra hop).
//!
//! Who owns what (tasks stop when [`Cluster::shutdown`] raises the stop signal):
//! - the **view task** follows the gossip layer's membership, turns it into the protocol's
//!   view ([`members::view`]), publishes it on a watch channel read by every context task,
//!   forgets members dead for longer than `dead_member_timeout_ms`, and starts peer dialers;
//! - one **dialer** per peer with a higher node id keeps a `Replicate` stream open to it; a
//!   peer with a lower id dials us and the stream's response side is our link to it
//!   ([`peers`]): one bidirectional stream per pair of nodes;
//! - one **context task** ([`actor::Actor`]) per context this node writes or replicates,
//!   created on first use (an append routed here, a message from a peer, a read that waits,
//!   a difference found by anti-entropy);
//! - the **anti-entropy task** compares digests with one peer per interval ([`anti_entropy`]).
//!
//! Layout: [`settings`] (configuration), [`members`] (membership view), [`wire`] (envelopes),
//! [`peers`] (links), [`actor`] (context tasks), [`gate`] (what replicas may serve: the commit
//! index), [`route`] (serving public requests in a cluster), [`load`] (loads through the writer), [`service`] (the internal `converge.ledger.cluster.v1` service), [`status`]
//! (`cluster status`), [`error`].

pub mod actor;
pub mod anti_entropy;
pub mod error;
pub mod gate;
pub mod load;
pub mod members;
pub mod peers;
pub mod route;
pub mod service;
pub mod settings;
pub mod status;
pub mod wire;

pub use error::ClusterError;
pub use settings::{ClusterSettings, is_clustered};

use crate::identity::Identity;
use actor::{ActorMsg, ContextState};
use ledger_discovery::{Discovery, GossipConfig, GossipDiscovery, NodeMeta};
use ledger_embedded::Ledger;
use ledger_proto::cluster::v1 as cpb;
use ledger_replication::{Incarnation, NodeId, Voter};
use members::View;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Messages a context task may have queued before a peer stream's reader waits.
const MAILBOX: usize = 1_024;

/// What became of an idle context task's attempt to stop ([`Cluster::retire`]).
pub(crate) enum Retire {
    /// Its mailbox is closed and removed: the task ends.
    Done,
    /// Messages are waiting: it keeps running.
    Busy,
    /// These messages arrived as it closed; it handles them and keeps running on a new mailbox.
    Reopened(Vec<ActorMsg>),
}

/// A running cluster member. Shared by the gRPC services and every task it runs.
#[derive(Debug)]
pub struct Cluster {
    pub me: Voter,
    pub settings: ClusterSettings,
    pub ledger: Ledger,
    /// Metrics hooks (epoch changes, catch-ups, replica lag).
    pub metrics: Arc<crate::metrics::Metrics>,
    discovery: Arc<GossipDiscovery>,
    view_tx: watch::Sender<View>,
    links: peers::Links,
    actors: Mutex<HashMap<String, mpsc::Sender<ActorMsg>>>,
    started: Instant,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    joined: AtomicBool,
    quarantines: AtomicU64,
    pub anti_entropy: anti_entropy::AntiEntropy,
    /// Every context task's commit index: what reads here may serve.
    commits: gate::Commits,
    /// True once the first anti-entropy comparison with every live peer is done.
    ready: watch::Sender<bool>,
}

impl Cluster {
    /// Starts gossip on the configured address, joins the seeds and starts the view task.
    /// `public_key` is the node's signing key, announced to the cluster.
    pub async fn start(
        settings: ClusterSettings,
        identity: &Identity,
        public_key: Vec<u8>,
        ledger: Ledger,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Arc<Cluster>, String> {
        let me = Voter {
            node: NodeId::new(identity.node_id.clone()),
            incarnation: Incarnation(members::incarnation_number(&identity.incarnation)),
        };
        let meta = NodeMeta {
            grpc_addr: settings.advertise_addr.clone(),
            public_key,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            role: settings.role,
            incarnation: identity.incarnation.clone(),
            mirror_prefixes: settings.mirror_prefixes.clone(),
        };
        let mut gossip = GossipConfig::new(identity.node_id.clone(), meta);
        gossip.bind_addr = settings.gossip_bind;
        gossip.advertise_addr = settings.gossip_advertise;
        gossip.timing = settings.timing.clone();
        gossip.key = settings.gossip_key.clone();
        let discovery = GossipDiscovery::start(gossip).await.map_err(|e| {
            format!(
                "cannot start gossip on {} (setting gossip_addr): {e}",
                settings.gossip_bind
            )
        })?;
        let (view, _) = members::view(&discovery.membership(), None, SystemTime::now());
        let (view_tx, _) = watch::channel(view);
        let (stop, _) = watch::channel(false);
        let links = peers::Links::new(settings.peer_tls.clone());
        let cluster = Arc::new(Cluster {
            me,
            settings,
            ledger,
            metrics,
            discovery: Arc::new(discovery),
            view_tx,
            links,
            actors: Mutex::new(HashMap::new()),
            started: Instant::now(),
            stop,
            tasks: Mutex::new(Vec::new()),
            joined: AtomicBool::new(false),
            quarantines: AtomicU64::new(0),
            anti_entropy: anti_entropy::AntiEntropy::default(),
            commits: gate::Commits::default(),
            ready: watch::channel(false).0,
        });
        let view_task = tokio::spawn(Arc::clone(&cluster).follow_membership());
        cluster.tasks.lock().push(view_task);
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
        cluster.joined.store(true, Ordering::Release);
        let ae = tokio::spawn(Arc::clone(&cluster).anti_entropy_loop());
        cluster.tasks.lock().push(ae);
        Ok(cluster)
    }

    /// Waits (at most `timeout`) until the node has joined and compared its contexts with every
    /// live peer once.
    pub async fn wait_ready(&self, timeout: Duration) {
        let mut rx = self.ready.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await;
    }

    /// Joined the cluster (the seeds were tried).
    pub fn is_joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    /// Leaves the cluster (peers see this node `left` at once instead of after the failure
    /// detector's timeout), stops every context task and peer link. Appends in flight end
    /// with UNAVAILABLE.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        if let Err(e) = self.discovery.leave(Duration::from_secs(2)).await {
            tracing::warn!(error = %e, "could not announce leaving the cluster");
        }
        self.actors.lock().clear();
        let tasks: Vec<_> = self.tasks.lock().drain(..).collect();
        for t in tasks {
            t.abort();
        }
        self.links.clear();
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

    /// Contexts whose task is running (an idle one stops: module docs of [`actor`]).
    pub fn context_tasks(&self) -> usize {
        self.actors
            .lock()
            .values()
            .filter(|tx| !tx.is_closed())
            .count()
    }

    /// The node is shutting down (context tasks end, none start).
    pub(crate) fn stopping(&self) -> bool {
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

    /// The gossip layer (for `cluster remove`).
    pub fn discovery(&self) -> &GossipDiscovery {
        &self.discovery
    }

    /// Publishes membership changes to every context task, forgets members dead too long, and
    /// keeps a dialer running for every peer this node dials.
    async fn follow_membership(self: Arc<Self>) {
        let mut feed = self.discovery.subscribe();
        let mut stop = self.stop_signal();
        loop {
            let membership = feed.borrow_and_update().clone();
            let (view, expired) = members::view(
                &membership,
                self.settings.dead_member_timeout,
                SystemTime::now(),
            );
            for id in expired {
                if self.discovery.forget(&id) {
                    tracing::warn!(node = %id, "removed a member dead for longer than dead_member_timeout_ms");
                }
            }
            self.ensure_dialers(&view);
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

    /// The context's task mailbox, starting the task on first use (or again, after it stopped
    /// idle). While the node shuts down: a closed mailbox.
    pub(crate) fn actor(self: &Arc<Self>, context_id: &str) -> mpsc::Sender<ActorMsg> {
        let mut actors = self.actors.lock();
        if let Some(tx) = actors.get(context_id)
            && !tx.is_closed()
        {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(MAILBOX);
        if self.stopping() {
            return tx; // rx is dropped: sends fail
        }
        actors.insert(context_id.to_owned(), tx.clone());
        tokio::spawn(actor::Actor::run(
            Arc::clone(self),
            context_id.to_owned(),
            rx,
        ));
        tx
    }

    /// Puts `msg` in the context task's mailbox (waiting for room), starting the task if it is
    /// not running or stopped meanwhile (an idle task stops: see [`actor`]). Gives the message
    /// back only when the node is shutting down.
    pub(crate) async fn to_actor(
        self: &Arc<Self>,
        context_id: &str,
        mut msg: ActorMsg,
    ) -> Result<(), ActorMsg> {
        loop {
            match self.actor(context_id).send(msg).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(m)) if !self.stopping() => msg = m,
                Err(mpsc::error::SendError(m)) => return Err(m),
            }
        }
    }

    /// Called by an idle context task: closes its mailbox if it is empty and removes it, so
    /// the next message starts a new task. Messages that slipped in between are handed back
    /// with a new mailbox for the same task, which then keeps running.
    pub(crate) fn retire(&self, context_id: &str, rx: &mut mpsc::Receiver<ActorMsg>) -> Retire {
        let mut actors = self.actors.lock();
        if !rx.is_empty() {
            return Retire::Busy;
        }
        rx.close();
        let mut left = Vec::new();
        while let Ok(m) = rx.try_recv() {
            left.push(m);
        }
        if left.is_empty() {
            // Ours is closed now; another task's mailbox (after a shutdown) is left alone.
            if actors.get(context_id).is_some_and(mpsc::Sender::is_closed) {
                actors.remove(context_id);
            }
            return Retire::Done;
        }
        let (tx, new_rx) = mpsc::channel(MAILBOX);
        actors.insert(context_id.to_owned(), tx);
        *rx = new_rx;
        Retire::Reopened(left)
    }

    /// Hands a peer's message to its context's task (waiting for room in the mailbox).
    pub(crate) async fn deliver(
        self: &Arc<Self>,
        context_id: String,
        from: Voter,
        message: ledger_replication::Message<ledger_core::Entry>,
        keys: Vec<wire::KeyRecord>,
    ) {
        let msg = ActorMsg::Deliver {
            from,
            message,
            keys,
        };
        let _ = self.to_actor(&context_id, msg).await;
    }

    /// What this node may serve of `context_id`: its commit index (starting the context's task
    /// if needed, which then learns it from the writer).
    pub async fn read_cap(self: &Arc<Self>, context_id: &str) -> gate::ReadCap {
        let rx = self.commits.subscribe(context_id);
        if rx.borrow().is_none() {
            let _ = self.actor(context_id);
        }
        gate::ReadCap::new(rx, gate::FIRST_VALUE_WAIT).await
    }

    /// Records a context task's commit index for the readers of the context.
    pub(crate) fn publish_committed(&self, context_id: &str, committed: u64) {
        self.commits.publish(context_id, committed);
    }

    /// What this node holds of `context_id` (starting its task if needed).
    pub async fn context_state(self: &Arc<Self>, context_id: &str) -> Option<ContextState> {
        let (reply, rx) = oneshot::channel();
        self.to_actor(context_id, ActorMsg::State { reply })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Sends an envelope to a peer over its link, if one is up; dropped otherwise (the
    /// protocol retransmits).
    pub(crate) fn send(&self, to: &str, env: cpb::Envelope) {
        self.links.send(to, env);
    }
}
