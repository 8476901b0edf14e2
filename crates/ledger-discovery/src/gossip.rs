//! [`GossipDiscovery`]: the [`Discovery`] implementation on memberlist (SWIM + Lifeguard over
//! UDP probes/gossip and TCP push/pull) with the tokio runtime and the plain TCP/UDP transport.
//!
//! Tasks (all owned by the handle, all stopped by [`Discovery::leave`] /
//! [`Discovery::shutdown`] or by dropping the handle inside a tokio runtime):
//! - memberlist's own tasks: UDP packet and TCP stream listeners, probe, gossip and push/pull
//!   schedulers. Stopped by `Memberlist::shutdown`, which waits for the transport's tasks.
//! - `observer`: turns memberlist's member list into a [`Membership`] snapshot on every
//!   join/leave/update event and at least every `observe_interval` (memberlist reports no
//!   event when a member becomes *suspect*, so it polls), and publishes it on the watch channel
//!   when it changed.
//! - `prober`: pings every live member once per `probe_interval` with memberlist's own ping
//!   and marks a member *suspect* after [`MISSED_PINGS_FOR_SUSPECT`] consecutive misses, until
//!   it answers again or memberlist declares it dead. memberlist 0.8 runs the same check
//!   internally but does not expose its suspect state (see the crate docs).
//! - `rejoiner`: while seeds are set and no other member is live, re-resolves the seeds and
//!   joins again every `rejoin_interval` (pods that start together, a whole-cluster restart,
//!   a node cut off from every peer).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use memberlist::Options;
use memberlist::delegate::{CompositeDelegate, EventDelegate, NodeDelegate, VoidDelegate};
use memberlist::net::NetTransportOptions;
use memberlist::proto::{MaybeResolvedAddress, Meta, NodeState, State};
use memberlist::tokio::{TokioSocketAddrResolver, TokioTcp, TokioTcpMemberlist};
use memberlist::transport::Node;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::error::DiscoveryError;
use crate::meta;
use crate::model::{GossipState, Membership, NodeMeta};
use crate::seeds::{resolve_seeds, validate_seed};
use crate::view::{Observed, ViewBuilder};
use crate::{Discovery, JoinReport};

/// Consecutive missed pings after which a member memberlist still counts live is reported
/// suspect. Two, so a single slow answer on a loaded machine is not reported.
pub const MISSED_PINGS_FOR_SUSPECT: u32 = 2;

/// Port the gossip layer binds when `gossip_addr` gives none (memberlist's conventional port).
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;

/// Failure-detection and dissemination timing. Defaults are HashiCorp memberlist's LAN
/// profile; [`GossipTiming::fast`] is for tests on loopback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipTiming {
    /// How often each node probes one random member (SWIM protocol period). Default 1 s.
    pub probe_interval: Duration,
    /// How long to wait for a probe's ack before asking other members to probe indirectly.
    /// Should be under `probe_interval` and above the network's p99 RTT. Default 500 ms.
    pub probe_timeout: Duration,
    /// How long a member stays suspect before it is declared dead, in clusters of up to 10
    /// nodes where no confirmations are expected; above 10 nodes it grows with `log10(n)`.
    /// Rounded up to a whole number of probe intervals (memberlist's `suspicion_mult`).
    /// Default 4 s (4 probe intervals).
    pub suspicion_timeout: Duration,
    /// Upper bound on the suspicion timeout: when enough members can confirm a suspicion
    /// (more than `suspicion_timeout / probe_interval` nodes), it starts here and shrinks
    /// towards `suspicion_timeout` as confirmations arrive (Lifeguard). Default 24 s (6×).
    pub suspicion_max_timeout: Duration,
    /// How often piggybacked state changes are gossiped to a few random members. Default
    /// 200 ms.
    pub gossip_interval: Duration,
    /// How often a full state sync (TCP push/pull) with one random member runs; heals what
    /// gossip missed. Default 30 s.
    pub push_pull_interval: Duration,
    /// Timeout of TCP operations: join, push/pull, fallback pings. Default 10 s.
    pub stream_timeout: Duration,
    /// How long memberlist keeps gossiping about (and listing) a dead member before it drops
    /// it. This crate's view keeps dead members after that; see [`Discovery::forget`].
    /// Default 30 s.
    pub gossip_to_the_dead_time: Duration,
    /// After a member has been dead this long, a node with its id at a *different* address
    /// replaces it (a restarted pod with a new IP). Zero: only after memberlist dropped it.
    /// Default 5 s.
    pub dead_node_reclaim_time: Duration,
    /// While seeds are set and no other member is live, join the seeds again this often.
    /// Zero disables. Default 5 s.
    pub rejoin_interval: Duration,
    /// How long a leaving node keeps gossiping after its leave message went out, so that it
    /// reaches every member before the node stops answering (Serf's `LeavePropagateDelay`).
    /// Bounded by the timeout given to [`Discovery::leave`]. Default 1 s.
    pub leave_propagate_delay: Duration,
}

impl Default for GossipTiming {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            suspicion_timeout: Duration::from_secs(4),
            suspicion_max_timeout: Duration::from_secs(24),
            gossip_interval: Duration::from_millis(200),
            push_pull_interval: Duration::from_secs(30),
            stream_timeout: Duration::from_secs(10),
            gossip_to_the_dead_time: Duration::from_secs(30),
            dead_node_reclaim_time: Duration::from_secs(5),
            rejoin_interval: Duration::from_secs(5),
            leave_propagate_delay: Duration::from_secs(1),
        }
    }
}

impl GossipTiming {
    /// Timings for tests on loopback: a crashed node is suspect within ~0.3 s and dead within
    /// about a second (in clusters of up to 8 nodes).
    pub fn fast() -> Self {
        Self {
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(50),
            suspicion_timeout: Duration::from_millis(600),
            suspicion_max_timeout: Duration::from_millis(1200),
            gossip_interval: Duration::from_millis(30),
            push_pull_interval: Duration::from_secs(2),
            stream_timeout: Duration::from_secs(1),
            gossip_to_the_dead_time: Duration::from_secs(5),
            dead_node_reclaim_time: Duration::from_millis(500),
            rejoin_interval: Duration::from_millis(500),
            leave_propagate_delay: Duration::from_millis(200),
        }
    }

    /// memberlist's suspicion multiplier: the suspicion timeout in whole probe intervals.
    fn suspicion_mult(&self) -> usize {
        whole_intervals(self.suspicion_timeout, self.probe_interval)
    }

    /// memberlist's suspicion max timeout multiplier: max over min, rounded up.
    fn suspicion_max_timeout_mult(&self) -> usize {
        let min = self.probe_interval * self.suspicion_mult() as u32;
        whole_intervals(self.suspicion_max_timeout, min)
    }

    /// How often the observer polls memberlist when no event arrives.
    fn observe_interval(&self) -> Duration {
        (self.probe_interval / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
    }

    fn options(&self) -> Options {
        Options::lan()
            .with_probe_interval(self.probe_interval)
            .with_probe_timeout(self.probe_timeout)
            .with_suspicion_mult(self.suspicion_mult())
            .with_suspicion_max_timeout_mult(self.suspicion_max_timeout_mult())
            .with_gossip_interval(self.gossip_interval)
            .with_push_pull_interval(self.push_pull_interval)
            .with_timeout(self.stream_timeout)
            .with_gossip_to_the_dead_time(self.gossip_to_the_dead_time)
            .with_dead_node_reclaim_time(self.dead_node_reclaim_time)
    }
}

/// `ceil(total / unit)`, at least 1.
fn whole_intervals(total: Duration, unit: Duration) -> usize {
    let unit = unit.as_nanos().max(1);
    let n = total.as_nanos().div_ceil(unit).max(1);
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Everything [`GossipDiscovery::start`] needs.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// This node's stable id.
    pub node_id: String,
    /// Address the gossip layer binds for both TCP and UDP (`gossip_addr`; default
    /// `0.0.0.0:7946`). Port 0 picks a free port (tests).
    pub bind_addr: SocketAddr,
    /// Address peers use to reach this node's gossip layer. `None`: the bind address, or,
    /// when that is unspecified (`0.0.0.0`), the first private address of this host.
    pub advertise_addr: Option<SocketAddr>,
    /// What this node advertises.
    pub meta: NodeMeta,
    /// Failure-detection timing.
    pub timing: GossipTiming,
    /// The cluster's shared gossip key (`gossip_key`): with it every gossip message and
    /// state exchange is encrypted and authenticated (AES-GCM), and a node without the same
    /// key can neither join nor be heard. `None`: gossip in the clear.
    pub key: Option<GossipKey>,
}

/// A gossip encryption key: 16, 24 or 32 random bytes (AES-128/192/256-GCM), written in
/// standard base64 (`head -c 32 /dev/urandom | base64`). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey(memberlist::proto::SecretKey);

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GossipKey(AES-{}, redacted)",
            AsRef::<[u8]>::as_ref(&self.0).len() * 8
        )
    }
}

impl std::str::FromStr for GossipKey {
    type Err = DiscoveryError;

    fn from_str(s: &str) -> Result<Self, DiscoveryError> {
        s.trim().parse().map(GossipKey).map_err(|e| {
            DiscoveryError::InvalidGossipKey(format!(
                "{e}; expected 16, 24 or 32 random bytes in base64, e.g. the output of `head -c 32 /dev/urandom | base64`"
            ))
        })
    }
}

impl GossipConfig {
    /// A config binding `0.0.0.0:7946` with default timing.
    pub fn new(node_id: impl Into<String>, meta: NodeMeta) -> Self {
        Self {
            node_id: node_id.into(),
            bind_addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_GOSSIP_PORT)),
            advertise_addr: None,
            meta,
            timing: GossipTiming::default(),
            key: None,
        }
    }
}

type NodeId = Arc<str>;

/// memberlist with tokio, plain TCP/UDP and already-resolved socket addresses (this crate
/// resolves seeds itself, so that a DNS name yields *all* its addresses).
type List = TokioTcpMemberlist<
    NodeId,
    TokioSocketAddrResolver,
    CompositeDelegate<
        NodeId,
        SocketAddr,
        VoidDelegate<NodeId, SocketAddr>,
        VoidDelegate<NodeId, SocketAddr>,
        Arc<Hooks>,
        VoidDelegate<NodeId, SocketAddr>,
        Arc<Hooks>,
        VoidDelegate<NodeId, SocketAddr>,
    >,
>;

/// memberlist's callbacks: hands out this node's metadata, and wakes the observer on events.
#[derive(Debug)]
struct Hooks {
    /// Encoded [`NodeMeta`] and `leaving` flag; replaced once, when leaving.
    meta: Mutex<Meta>,
    changed: Arc<Notify>,
}

impl NodeDelegate for Hooks {
    async fn node_meta(&self, _limit: usize) -> Meta {
        // `start` checked the size against memberlist's limit; the leaving flag does not
        // change it.
        lock(&self.meta).clone()
    }
}

impl EventDelegate for Hooks {
    type Id = NodeId;
    type Address = SocketAddr;

    async fn notify_join(&self, _node: Arc<NodeState<NodeId, SocketAddr>>) {
        self.changed.notify_one();
    }

    async fn notify_leave(&self, _node: Arc<NodeState<NodeId, SocketAddr>>) {
        self.changed.notify_one();
    }

    async fn notify_update(&self, _node: Arc<NodeState<NodeId, SocketAddr>>) {
        self.changed.notify_one();
    }
}

/// Membership by gossip with memberlist. See the module docs for the tasks it runs.
#[derive(Debug)]
pub struct GossipDiscovery {
    shared: Arc<Shared>,
}

struct Shared {
    local_id: String,
    list: List,
    hooks: Arc<Hooks>,
    /// This node's metadata as announced (its views mark moves forward).
    local_meta: Mutex<NodeMeta>,
    /// Consecutive missed pings per live member (written by the prober).
    missed: Mutex<HashMap<String, u32>>,
    advertise: SocketAddr,
    bind: SocketAddr,
    timing: GossipTiming,
    seeds: Mutex<Vec<String>>,
    view: Mutex<ViewBuilder>,
    /// Peers whose metadata could not be decoded, so each is logged once.
    undecodable: Mutex<Vec<String>>,
    feed: watch::Sender<Membership>,
    changed: Arc<Notify>,
    stop: watch::Sender<bool>,
    running: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipDiscovery")
            .field("local_id", &self.local_id)
            .field("advertise", &self.advertise)
            .field("running", &self.running.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here leaves the data consistent, so a panic elsewhere while
    // holding the lock does not make it unusable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GossipDiscovery {
    /// Binds the gossip address, starts memberlist and the observer. The node is a one-node
    /// cluster until [`Discovery::join`] reaches a seed (or a peer joins it).
    pub async fn start(config: GossipConfig) -> Result<Self, DiscoveryError> {
        if config.node_id.is_empty() {
            return Err(DiscoveryError::EmptyNodeId);
        }
        let meta_bytes = meta::encode(&config.meta, false)?;
        let meta_len = meta_bytes.len();
        let meta = Meta::try_from(meta_bytes).map_err(|_| DiscoveryError::MetaTooLarge {
            len: meta_len,
            max: meta::MAX_META_LEN,
        })?;
        let changed = Arc::new(Notify::new());
        let hooks = Arc::new(Hooks {
            meta: Mutex::new(meta),
            changed: changed.clone(),
        });
        let delegate = CompositeDelegate::new()
            .with_node_delegate(hooks.clone())
            .with_event_delegate(hooks.clone());

        let node_id: NodeId = Arc::from(config.node_id.as_str());
        let mut transport =
            NetTransportOptions::<NodeId, TokioSocketAddrResolver, TokioTcp>::new(node_id);
        transport.add_bind_address(config.bind_addr);
        if let Some(addr) = config.advertise_addr {
            transport = transport.with_advertise_address(addr);
        }
        let mut options = config.timing.options();
        if let Some(GossipKey(key)) = &config.key {
            // Both directions enforced: a node without the key is neither heard nor told.
            options = options
                .with_primary_key(*key)
                .with_encryption_algo(memberlist::proto::EncryptionAlgorithm::default())
                .with_gossip_verify_incoming(true)
                .with_gossip_verify_outgoing(true);
        }
        let list = List::with_delegate(delegate, transport, options)
            .await
            .map_err(|e| DiscoveryError::Start {
                addr: config.bind_addr,
                reason: e.to_string(),
            })?;
        let advertise = *list.advertise_address();
        let bind = config.bind_addr;

        let local = Membership::new(config.node_id.as_str(), []);
        let (feed, _) = watch::channel(local);
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            local_id: config.node_id.clone(),
            list,
            hooks,
            local_meta: Mutex::new(config.meta),
            missed: Mutex::new(HashMap::new()),
            advertise,
            bind,
            timing: config.timing,
            seeds: Mutex::new(Vec::new()),
            view: Mutex::new(ViewBuilder::new(config.node_id)),
            undecodable: Mutex::new(Vec::new()),
            feed,
            changed,
            stop,
            running: AtomicBool::new(true),
            tasks: Mutex::new(Vec::new()),
        });
        shared.refresh().await;
        let observer = tokio::spawn(observer(shared.clone()));
        let rejoiner = tokio::spawn(rejoiner(shared.clone()));
        let prober = tokio::spawn(prober(shared.clone()));
        lock(&shared.tasks).extend([observer, rejoiner, prober]);
        tracing::info!(
            node = %shared.local_id,
            gossip_addr = %advertise,
            encrypted = config.key.is_some(),
            "gossip membership started"
        );
        Ok(Self { shared })
    }

    /// The address peers reach this node's gossip layer on (with port 0 in the config, the
    /// port actually bound).
    pub fn advertise_addr(&self) -> SocketAddr {
        self.shared.advertise
    }
}

impl Shared {
    /// Reads memberlist's member list and publishes a new snapshot if it changed.
    ///
    /// memberlist 0.8's `members()` reports every member's state as `Alive` whatever it is
    /// (the state lives in a private field), so the state is derived from what the public API
    /// does tell: `online_members()` filters on the real state (alive or suspect), a missed-ping
    /// count from the prober tells suspect from alive, and the `leaving` flag in the metadata
    /// tells left from dead. A state other than `Alive` reported by memberlist itself (a
    /// later, fixed version) is taken as is.
    async fn refresh(&self) {
        // All members first, then the live ones: a member that joins in between is simply
        // missing until the next refresh, never reported dead.
        let states = self.list.members().await;
        let live: HashSet<NodeId> = self
            .list
            .online_members()
            .await
            .iter()
            .map(|s| s.id().clone())
            .collect();
        let suspects: HashSet<String> = lock(&self.missed)
            .iter()
            .filter(|(_, missed)| **missed >= MISSED_PINGS_FOR_SUSPECT)
            .map(|(id, _)| id.clone())
            .collect();
        let mut observed = Vec::with_capacity(states.len());
        let mut bad = Vec::new();
        for s in states.iter() {
            let (meta, leaving) = match meta::decode(s.meta().as_bytes()) {
                Ok(decoded) => decoded,
                Err(e) => {
                    bad.push((s.id().to_string(), *s.address(), e));
                    continue;
                }
            };
            let id = s.id().to_string();
            let reported = s.state();
            let state = if live.contains(s.id()) {
                if reported == State::Suspect || suspects.contains(&id) {
                    GossipState::Suspect
                } else {
                    GossipState::Alive
                }
            } else if leaving || reported == State::Left {
                GossipState::Left
            } else {
                GossipState::Dead
            };
            observed.push(Observed {
                id,
                gossip_addr: *s.address(),
                meta,
                state,
            });
        }
        if !bad.is_empty() {
            let mut seen = lock(&self.undecodable);
            for (id, addr, e) in bad {
                if !seen.contains(&id) {
                    tracing::warn!(peer = %id, gossip_addr = %addr, error = %e, "ignoring gossip member with unreadable metadata");
                    seen.push(id);
                }
            }
        }
        let mut view = lock(&self.view);
        let next = view.next(&self.feed.borrow(), observed, SystemTime::now());
        self.publish(next);
    }

    /// Pings every live member once, concurrently, and updates the missed-ping counts.
    async fn probe_live_members(&self) {
        let targets: Vec<Node<NodeId, SocketAddr>> = self
            .list
            .online_members()
            .await
            .iter()
            .filter(|s| s.id().as_ref() != self.local_id)
            .map(|s| Node::new(s.id().clone(), *s.address()))
            .collect();
        let mut pings = tokio::task::JoinSet::new();
        for node in &targets {
            let list = self.list.clone();
            let id = node.id().to_string();
            let node = node.clone();
            pings.spawn(async move { (id, list.ping(node).await.is_ok()) });
        }
        let mut results = Vec::with_capacity(targets.len());
        while let Some(done) = pings.join_next().await {
            if let Ok(result) = done {
                results.push(result);
            }
        }
        let changed = {
            let mut missed = lock(&self.missed);
            let before = missed.clone();
            missed.retain(|id, _| targets.iter().any(|t| t.id().as_ref() == id.as_str()));
            for (id, answered) in results {
                if answered {
                    missed.remove(&id);
                } else {
                    *missed.entry(id).or_insert(0) += 1;
                }
            }
            let suspect = |m: &HashMap<String, u32>| -> HashSet<String> {
                m.iter()
                    .filter(|(_, n)| **n >= MISSED_PINGS_FOR_SUSPECT)
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            suspect(&before) != suspect(&missed)
        };
        if changed {
            self.changed.notify_one();
        }
    }

    fn publish(&self, next: Membership) {
        self.feed.send_if_modified(|current| {
            if *current == next {
                false
            } else {
                *current = next;
                true
            }
        });
    }

    fn is_self(&self, addr: &SocketAddr) -> bool {
        *addr == self.advertise || (!self.bind.ip().is_unspecified() && *addr == self.bind)
    }

    async fn join_seeds(&self, seeds: &[String]) -> JoinReport {
        let resolved = resolve_seeds(seeds).await;
        let mut report = JoinReport {
            resolved: resolved.addrs.iter().map(ToString::to_string).collect(),
            contacted: Vec::new(),
            errors: resolved
                .failed
                .iter()
                .map(|(seed, e)| format!("{seed}: {e}"))
                .collect(),
        };
        let peers: Vec<SocketAddr> = resolved
            .addrs
            .into_iter()
            .filter(|a| !self.is_self(a))
            .collect();
        if peers.is_empty() {
            return report;
        }
        // One `join` per address, concurrently: memberlist's `join_many` future is not `Send`
        // (it holds a `RefCell` across an await), so it cannot run on tokio's multi-threaded
        // runtime.
        let mut joins = tokio::task::JoinSet::new();
        for addr in peers {
            let list = self.list.clone();
            joins.spawn(async move {
                let result = list.join(MaybeResolvedAddress::Resolved(addr)).await;
                (addr, result.map(|_| ()).map_err(|e| e.to_string()))
            });
        }
        while let Some(done) = joins.join_next().await {
            match done {
                Ok((addr, Ok(()))) => report.contacted.push(addr.to_string()),
                Ok((addr, Err(e))) => report.errors.push(format!("{addr}: {e}")),
                Err(e) => report.errors.push(format!("join task failed: {e}")),
            }
        }
        report.contacted.sort();
        self.refresh().await;
        report
    }

    /// Stops our tasks and memberlist's. Idempotent.
    async fn stop_all(&self) {
        if !self.running.swap(false, Ordering::AcqRel) {
            return;
        }
        self.stop.send_replace(true);
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        for t in tasks {
            // A task that panicked has nothing left to clean up.
            let _ = t.await;
        }
        if let Err(e) = self.list.shutdown().await {
            tracing::warn!(node = %self.local_id, error = %e, "gossip transport shutdown failed");
        }
        tracing::info!(node = %self.local_id, "gossip membership stopped");
    }
}

async fn observer(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let every = shared.timing.observe_interval();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = shared.changed.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
        shared.refresh().await;
    }
}

async fn rejoiner(shared: Arc<Shared>) {
    let every = shared.timing.rejoin_interval;
    if every.is_zero() {
        return;
    }
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(every) => {}
        }
        let seeds = lock(&shared.seeds).clone();
        if seeds.is_empty() {
            continue;
        }
        let alone = {
            let view = shared.feed.borrow();
            !view.live().any(|m| m.id != shared.local_id)
        };
        if !alone {
            continue;
        }
        let report = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            report = shared.join_seeds(&seeds) => report,
        };
        if report.contacted.is_empty() {
            tracing::debug!(node = %shared.local_id, errors = ?report.errors, "no seed reachable yet");
        } else {
            tracing::info!(node = %shared.local_id, contacted = ?report.contacted, "rejoined the cluster through seeds");
        }
    }
}

async fn prober(shared: Arc<Shared>) {
    let every = shared.timing.probe_interval;
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(every) => {}
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = shared.probe_live_members() => {}
        }
    }
}

#[async_trait]
impl Discovery for GossipDiscovery {
    fn local_id(&self) -> &str {
        &self.shared.local_id
    }

    async fn join(&self, seeds: &[String]) -> Result<JoinReport, DiscoveryError> {
        if !self.shared.running.load(Ordering::Acquire) {
            return Err(DiscoveryError::NotRunning);
        }
        for seed in seeds {
            validate_seed(seed)?;
        }
        *lock(&self.shared.seeds) = seeds.to_vec();
        let report = self.shared.join_seeds(seeds).await;
        if seeds.is_empty() {
            tracing::info!(node = %self.shared.local_id, "no seeds: one-node cluster");
        } else if report.contacted.is_empty() {
            tracing::warn!(
                node = %self.shared.local_id,
                seeds = ?seeds,
                errors = ?report.errors,
                "no seed reachable; running alone and retrying"
            );
        } else {
            tracing::info!(node = %self.shared.local_id, contacted = ?report.contacted, "joined the cluster");
        }
        Ok(report)
    }

    fn membership(&self) -> Membership {
        self.shared.feed.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Membership> {
        self.shared.feed.subscribe()
    }

    fn forget(&self, node_id: &str) -> bool {
        let mut view = lock(&self.shared.view);
        let next = view.forget(&self.shared.feed.borrow(), node_id);
        match next {
            Some(next) => {
                self.shared.publish(next);
                true
            }
            None => false,
        }
    }

    async fn announce_views_settled(&self, version: u64) -> Result<(), DiscoveryError> {
        if !self.shared.running.load(Ordering::Acquire) {
            return Err(DiscoveryError::NotRunning);
        }
        let bytes = {
            let mut local = lock(&self.shared.local_meta);
            // An equal version is broadcast again: the last announce of it may have failed.
            if version < local.views_settled {
                return Ok(());
            }
            local.views_settled = version;
            meta::encode(&local, false)?
        };
        let len = bytes.len();
        let meta = Meta::try_from(bytes).map_err(|_| DiscoveryError::MetaTooLarge {
            len,
            max: meta::MAX_META_LEN,
        })?;
        *lock(&self.shared.hooks.meta) = meta;
        self.shared
            .list
            .update_node(Duration::from_secs(2))
            .await
            .map_err(|e| DiscoveryError::Announce(e.to_string()))
    }

    async fn leave(&self, timeout: Duration) -> Result<(), DiscoveryError> {
        if !self.shared.running.load(Ordering::Acquire) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let remaining = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let shared = &self.shared;
        // 1. Announce the intent in the metadata, so that peers that learn of the departure
        //    by any route (gossip, push/pull, failed probes) record `left`, not `dead`.
        let mut problems = Vec::new();
        let local = lock(&shared.local_meta).clone();
        match meta::encode(&local, true).map(Meta::try_from) {
            Ok(Ok(meta)) => {
                *lock(&shared.hooks.meta) = meta;
                if let Err(e) = shared.list.update_node(remaining()).await {
                    problems.push(format!("announcing the leave: {e}"));
                }
            }
            // Same size as the metadata `start` accepted.
            Ok(Err(_)) | Err(_) => problems.push("leaving flag does not fit".to_owned()),
        }
        // 2. memberlist's leave: broadcast our own death, which peers record as a leave.
        if let Err(e) = shared.list.leave(remaining()).await {
            problems.push(e.to_string());
        }
        // 3. Keep answering while the message spreads (if anyone is there to hear it), then
        //    stop.
        let anyone = shared
            .list
            .online_members()
            .await
            .iter()
            .any(|m| m.id().as_ref() != shared.local_id);
        if anyone {
            let propagate = shared.timing.leave_propagate_delay.min(remaining());
            tokio::time::sleep(propagate).await;
        }
        shared.refresh().await;
        shared.stop_all().await;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DiscoveryError::Leave(problems.join("; ")))
        }
    }

    async fn shutdown(&self) {
        self.shared.stop_all().await;
    }
}

impl Drop for GossipDiscovery {
    fn drop(&mut self) {
        if !self.shared.running.load(Ordering::Acquire) {
            return;
        }
        // Dropped without leave/shutdown: stop the tasks anyway (the others see a crash).
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let shared = self.shared.clone();
                handle.spawn(async move { shared.stop_all().await });
            }
            Err(_) => {
                self.shared.stop.send_replace(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_timeouts_become_whole_probe_intervals() {
        let t = GossipTiming::default();
        assert_eq!(t.suspicion_mult(), 4);
        assert_eq!(t.suspicion_max_timeout_mult(), 6);
        let fast = GossipTiming::fast();
        assert_eq!(fast.suspicion_mult(), 6);
        assert_eq!(fast.suspicion_max_timeout_mult(), 2);
        let odd = GossipTiming {
            probe_interval: Duration::from_millis(300),
            suspicion_timeout: Duration::from_millis(1000),
            suspicion_max_timeout: Duration::from_millis(100),
            ..GossipTiming::default()
        };
        assert_eq!(odd.suspicion_mult(), 4, "rounded up");
        assert_eq!(
            odd.suspicion_max_timeout_mult(),
            1,
            "never below the minimum"
        );
        assert_eq!(fast.observe_interval(), Duration::from_millis(25));
        assert_eq!(t.observe_interval(), Duration::from_millis(250));
    }
}
