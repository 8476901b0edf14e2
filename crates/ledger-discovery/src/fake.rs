//! An in-memory [`Discovery`] for tests of other crates: one shared [`FakeCluster`] registry
//! per test, one [`FakeDiscovery`] handle per simulated node. No sockets, no timers: members
//! change state only when the test says so, and every handle's change feed updates at once.
//!
//! - [`FakeCluster::start`] creates a node (alone, like a node with no seeds) or restarts one
//!   under an existing id with new metadata (a new incarnation); the old handle goes stale.
//! - [`Discovery::join`] with any non-empty seed list puts the node in the cluster: every
//!   joined node sees every other. With no seeds the node stays a one-node cluster.
//! - [`Discovery::leave`] marks it `left` for everyone; [`Discovery::shutdown`] only stops the
//!   handle (a crash): the others keep seeing it as it was until the test calls
//!   [`FakeCluster::set_state`] (there is no failure detector).
//! - [`FakeCluster::set_state_seen_by`] makes one node see another differently (a partition);
//!   [`FakeCluster::heal`] removes every such override.
//! - A node always sees itself alive (a real node refutes suspicion), or left after leaving.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::DiscoveryError;
use crate::model::{GossipState, Membership, NodeMeta};
use crate::view::{Observed, ViewBuilder};
use crate::{Discovery, JoinReport};

/// The shared registry of a fake cluster. Cheap to clone; clones share state.
#[derive(Clone, Debug, Default)]
pub struct FakeCluster {
    registry: Arc<Mutex<Registry>>,
}

#[derive(Debug, Default)]
struct Registry {
    nodes: BTreeMap<String, FakeNode>,
    /// (observer, subject) → the state the observer sees.
    overrides: HashMap<(String, String), GossipState>,
}

#[derive(Debug)]
struct FakeNode {
    /// What the current incarnation will advertise when it joins.
    local_meta: NodeMeta,
    /// What the cluster sees: `None` until the node first joins.
    public: Option<(NodeMeta, GossipState)>,
    /// The current handle has joined (a restarted node starts alone again).
    joined: bool,
    /// The current handle has neither left nor shut down.
    running: bool,
    /// Bumped by every restart; handles of older generations are stale.
    generation: u64,
    view: ViewBuilder,
    feed: Arc<watch::Sender<Membership>>,
}

const FAKE_GOSSIP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

fn lock(m: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeCluster {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts node `id` (alone until it joins). If `id` exists, this is a restart: the node
    /// gets `meta` (give it a new `incarnation` to simulate a wiped data dir), its previous
    /// handle goes stale, and the others keep seeing its old record until it joins again.
    pub fn start(&self, id: &str, meta: NodeMeta) -> FakeDiscovery {
        let mut reg = lock(&self.registry);
        let generation = match reg.nodes.get_mut(id) {
            Some(node) => {
                node.generation += 1;
                node.local_meta = meta;
                node.joined = false;
                node.running = true;
                node.view = ViewBuilder::new(id);
                node.feed = Arc::new(watch::channel(Membership::new(id, [])).0);
                node.generation
            }
            None => {
                reg.nodes.insert(
                    id.to_owned(),
                    FakeNode {
                        local_meta: meta,
                        public: None,
                        joined: false,
                        running: true,
                        generation: 0,
                        view: ViewBuilder::new(id),
                        feed: Arc::new(watch::channel(Membership::new(id, [])).0),
                    },
                );
                0
            }
        };
        let feed = reg.nodes[id].feed.clone();
        reg.recompute();
        FakeDiscovery {
            cluster: self.clone(),
            id: id.to_owned(),
            generation,
            feed,
        }
    }

    /// Sets the state every node sees `id` in (except `id` itself, which always sees itself
    /// alive). No effect on a node that never joined.
    pub fn set_state(&self, id: &str, state: GossipState) {
        let mut reg = lock(&self.registry);
        if let Some((_, s)) = reg.nodes.get_mut(id).and_then(|n| n.public.as_mut()) {
            *s = state;
        }
        reg.recompute();
    }

    /// Makes `observer` see `subject` in `state`, whatever the others see (a partition, a
    /// false suspicion). Undone by [`FakeCluster::heal`].
    pub fn set_state_seen_by(&self, observer: &str, subject: &str, state: GossipState) {
        let mut reg = lock(&self.registry);
        reg.overrides
            .insert((observer.to_owned(), subject.to_owned()), state);
        reg.recompute();
    }

    /// Removes every per-observer override.
    pub fn heal(&self) {
        let mut reg = lock(&self.registry);
        reg.overrides.clear();
        reg.recompute();
    }

    /// The state the cluster at large sees `id` in (`None`: unknown or never joined).
    pub fn state_of(&self, id: &str) -> Option<GossipState> {
        lock(&self.registry)
            .nodes
            .get(id)
            .and_then(|n| n.public.as_ref())
            .map(|(_, s)| *s)
    }
}

impl Registry {
    /// Recomputes and publishes the view of every running, current node.
    fn recompute(&mut self) {
        let now = SystemTime::now();
        let public: Vec<(String, NodeMeta, GossipState)> = self
            .nodes
            .iter()
            .filter_map(|(id, n)| n.public.clone().map(|(m, s)| (id.clone(), m, s)))
            .collect();
        for (id, node) in self.nodes.iter_mut() {
            if !node.running {
                continue;
            }
            let own = Observed {
                id: id.clone(),
                gossip_addr: FAKE_GOSSIP_ADDR,
                meta: node.local_meta.clone(),
                state: GossipState::Alive,
            };
            let mut observed = vec![own];
            if node.joined {
                for (other, meta, state) in &public {
                    if other == id {
                        continue;
                    }
                    let state = self
                        .overrides
                        .get(&(id.clone(), other.clone()))
                        .copied()
                        .unwrap_or(*state);
                    observed.push(Observed {
                        id: other.clone(),
                        gossip_addr: FAKE_GOSSIP_ADDR,
                        meta: meta.clone(),
                        state,
                    });
                }
            }
            let next = node.view.next(&node.feed.borrow(), observed, now);
            publish(&node.feed, next);
        }
    }
}

fn publish(feed: &watch::Sender<Membership>, next: Membership) {
    feed.send_if_modified(|current| {
        if *current == next {
            false
        } else {
            *current = next;
            true
        }
    });
}

/// One simulated node's handle on a [`FakeCluster`].
#[derive(Debug)]
pub struct FakeDiscovery {
    cluster: FakeCluster,
    id: String,
    generation: u64,
    feed: Arc<watch::Sender<Membership>>,
}

impl FakeDiscovery {
    /// The cluster this node belongs to.
    pub fn cluster(&self) -> &FakeCluster {
        &self.cluster
    }

    /// Runs `f` on this handle's node if the handle is current and running.
    fn with_node<R>(&self, f: impl FnOnce(&mut FakeNode) -> R) -> Option<R> {
        let mut reg = lock(&self.cluster.registry);
        let node = reg.nodes.get_mut(&self.id)?;
        if node.generation != self.generation || !node.running {
            return None;
        }
        let r = f(node);
        reg.recompute();
        Some(r)
    }
}

#[async_trait]
impl Discovery for FakeDiscovery {
    fn local_id(&self) -> &str {
        &self.id
    }

    async fn join(&self, seeds: &[String]) -> Result<JoinReport, DiscoveryError> {
        if seeds.is_empty() {
            return if self.with_node(|_| ()).is_some() {
                Ok(JoinReport::default())
            } else {
                Err(DiscoveryError::NotRunning)
            };
        }
        self.with_node(|node| {
            node.joined = true;
            node.public = Some((node.local_meta.clone(), GossipState::Alive));
        })
        .ok_or(DiscoveryError::NotRunning)?;
        Ok(JoinReport {
            resolved: seeds.to_vec(),
            contacted: seeds.to_vec(),
            errors: Vec::new(),
        })
    }

    fn membership(&self) -> Membership {
        self.feed.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Membership> {
        self.feed.subscribe()
    }

    fn forget(&self, node_id: &str) -> bool {
        self.with_node(|node| {
            // The read guard must be gone before publishing: same lock.
            let next = node.view.forget(&node.feed.borrow(), node_id);
            match next {
                Some(next) => {
                    publish(&node.feed, next);
                    true
                }
                None => false,
            }
        })
        .unwrap_or(false)
    }

    async fn announce_views_settled(&self, version: u64) -> Result<(), DiscoveryError> {
        self.with_node(|node| {
            node.local_meta.views_settled = node.local_meta.views_settled.max(version);
            let meta = node.local_meta.clone();
            if let Some((public, _)) = node.public.as_mut() {
                *public = meta;
            }
        })
        .ok_or(DiscoveryError::NotRunning)
    }

    async fn leave(&self, _timeout: Duration) -> Result<(), DiscoveryError> {
        let id = self.id.clone();
        self.with_node(|node| {
            if let Some((_, state)) = node.public.as_mut() {
                *state = GossipState::Left;
            }
            // Own view ends with itself left, like the gossip implementation.
            let mut last = node.feed.borrow().members().to_vec();
            for m in &mut last {
                if m.id == id {
                    m.state = GossipState::Left;
                    m.since = SystemTime::now();
                }
            }
            publish(&node.feed, Membership::new(id.as_str(), last));
            node.running = false;
        });
        Ok(())
    }

    async fn shutdown(&self) {
        self.with_node(|node| node.running = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GossipRole;

    fn meta(id: &str, incarnation: &str) -> NodeMeta {
        NodeMeta {
            grpc_addr: format!("{id}:50051"),
            public_key: vec![9; 32],
            version: "0.1.0".to_owned(),
            role: GossipRole::Member,
            incarnation: incarnation.to_owned(),
            mirror_prefixes: Vec::new(),
            views_settled: 0,
        }
    }

    fn states(view: &Membership) -> Vec<(String, GossipState)> {
        view.members()
            .iter()
            .map(|m| (m.id.clone(), m.state))
            .collect()
    }

    fn seeds() -> Vec<String> {
        vec!["seed:7946".to_owned()]
    }

    #[tokio::test]
    async fn nodes_without_seeds_are_alone_and_joined_nodes_see_each_other() {
        let cluster = FakeCluster::new();
        let a = cluster.start("a", meta("a", "1"));
        let b = cluster.start("b", meta("b", "1"));
        a.join(&[]).await.unwrap();
        assert_eq!(
            states(&a.membership()),
            [("a".to_owned(), GossipState::Alive)]
        );
        let mut feed = b.subscribe();
        a.join(&seeds()).await.unwrap();
        b.join(&seeds()).await.unwrap();
        assert!(feed.has_changed().unwrap());
        let view = feed.borrow_and_update().clone();
        assert_eq!(view.live().count(), 2);
        assert_eq!(view.get("a").unwrap().meta, meta("a", "1"));
        assert_eq!(a.membership().live().count(), 2);
    }

    #[tokio::test]
    async fn tests_drive_states_partitions_leave_and_restart() {
        let cluster = FakeCluster::new();
        let a = cluster.start("a", meta("a", "1"));
        let b = cluster.start("b", meta("b", "1"));
        let c = cluster.start("c", meta("c", "1"));
        for n in [&a, &b, &c] {
            n.join(&seeds()).await.unwrap();
        }

        // Crash c: nobody notices until the test says so.
        c.shutdown().await;
        assert_eq!(a.membership().get("c").unwrap().state, GossipState::Alive);
        cluster.set_state("c", GossipState::Suspect);
        assert_eq!(a.membership().get("c").unwrap().state, GossipState::Suspect);
        cluster.set_state("c", GossipState::Dead);
        assert_eq!(b.membership().get("c").unwrap().state, GossipState::Dead);
        assert!(
            c.join(&seeds()).await.is_err(),
            "a shut-down handle is stale"
        );

        // Partition: a sees b dead, b still sees a alive.
        cluster.set_state_seen_by("a", "b", GossipState::Dead);
        assert_eq!(a.membership().get("b").unwrap().state, GossipState::Dead);
        assert_eq!(b.membership().get("a").unwrap().state, GossipState::Alive);
        cluster.heal();
        assert_eq!(a.membership().get("b").unwrap().state, GossipState::Alive);

        // Restart c with a wiped data dir: a new incarnation, visible once it joins.
        let c2 = cluster.start("c", meta("c", "2"));
        assert_eq!(a.membership().get("c").unwrap().incarnation(), "1");
        c2.join(&seeds()).await.unwrap();
        let seen = a.membership().get("c").unwrap().clone();
        assert_eq!((seen.state, seen.incarnation()), (GossipState::Alive, "2"));

        // Graceful leave.
        b.leave(Duration::from_secs(1)).await.unwrap();
        assert_eq!(a.membership().get("b").unwrap().state, GossipState::Left);
        assert_eq!(b.membership().get("b").unwrap().state, GossipState::Left);
        assert_eq!(cluster.state_of("b"), Some(GossipState::Left));

        // Forget the left member on a; it stays forgotten while it is left.
        assert!(!a.forget("c"), "a live member cannot be forgotten");
        assert!(a.forget("b"));
        assert!(a.membership().get("b").is_none());
        cluster.set_state("c", GossipState::Suspect);
        assert!(a.membership().get("b").is_none());
        assert_eq!(c2.membership().get("b").unwrap().state, GossipState::Left);
    }
}
