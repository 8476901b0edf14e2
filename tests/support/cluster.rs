//! Real-process clusters for the end-to-end tests: N nodes, each on its own loopback address
//! (127.0.NET.10, .11, …; one NET per test so tests can run in parallel), gRPC on port 50051
//! and gossip on 7946 of that address, fast gossip timings, the first node as the seed.

use super::{BIN, Node};
use ledger_launcher::{Launch, Membership, cluster_node};
use ledger_proto::cluster::v1 as cpb;
use ledger_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use std::time::{Duration, Instant};

pub struct TestCluster {
    pub nodes: Vec<Node>,
    pub dirs: Vec<tempfile::TempDir>,
    pub net: u8,
    pub extra: Vec<String>,
    /// Nodes the cluster is started with (all of them are every node's seeds).
    pub size: usize,
}

pub fn node_id(i: usize) -> String {
    format!("n{}", i + 1)
}

impl TestCluster {
    /// Starts `n` nodes on network `net` with `extra` flags each, and waits until every node
    /// sees all `n` alive.
    pub async fn start(net: u8, n: usize, extra: &[&str]) -> TestCluster {
        let mut c = TestCluster {
            nodes: Vec::new(),
            dirs: Vec::new(),
            net,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            size: n,
        };
        for i in 0..n {
            c.dirs.push(super::data_dir());
            let node = Node::launch(c.launch(i));
            c.nodes.push(node);
        }
        c.wait_alive(n).await;
        c
    }

    /// How node `i` is started.
    pub fn launch(&self, i: usize) -> Launch {
        cluster_node(BIN, self.dirs[i].path(), self.net, i, self.size).args(&self.extra)
    }

    /// Adds node number `self.nodes.len()`.
    pub fn add_node(&mut self) -> usize {
        self.add_node_with(&[])
    }

    /// Adds node number `self.nodes.len()` with `args` besides the cluster's own.
    pub fn add_node_with(&mut self, args: &[&str]) -> usize {
        let i = self.nodes.len();
        self.dirs.push(super::data_dir());
        let node = Node::launch(self.launch(i).args(args));
        self.nodes.push(node);
        i
    }

    pub async fn status_of(&self, i: usize, context: Option<&str>) -> serde_json::Value {
        status(&self.nodes[i], context).await
    }

    /// Waits until every running node sees `n` members alive and in its placement view.
    pub async fn wait_alive(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for (i, node) in self.nodes.iter().enumerate() {
            loop {
                let s = status(node, Some("probe")).await;
                let m = Membership::of(&s);
                if m.ready(n) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {i} sees {} of {n} members alive, {} in its view: {s}",
                    m.alive,
                    m.in_view
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Index of the node whose status names it the writer of `context`.
    pub async fn writer_index(&self, via: usize, context: &str) -> Option<usize> {
        let s = self.status_of(via, Some(context)).await;
        let id = s["contexts"][0]["writer"]["id"].as_str()?.to_owned();
        (0..self.nodes.len()).find(|i| node_id(*i) == id)
    }
}

/// `cluster status` of one node, as JSON.
pub async fn status(node: &Node, context: Option<&str>) -> serde_json::Value {
    status_at(&node.url, context).await.expect("cluster status")
}

/// `cluster status` of the node at `url`, as JSON.
pub async fn status_at(url: &str, context: Option<&str>) -> Result<serde_json::Value, String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    let r = ClusterServiceClient::new(channel)
        .status(cpb::StatusRequest {
            context_id: context.unwrap_or_default().to_owned(),
            limit: 0,
            members_only: false,
        })
        .await
        .map_err(|e| format!("cluster status on {url}: {e}"))?
        .into_inner();
    serde_json::from_str(&r.json).map_err(|e| format!("status json: {e}"))
}

/// Waits until every replica of `context` listed by node `via` reports `size` entries and the
/// same root; returns the root.
pub async fn wait_converged(node: &Node, context: &str, size: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(node, Some(context)).await;
        let replicas = s["contexts"][0]["replicas"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let roots: Vec<_> = replicas.iter().map(|r| r["root"].clone()).collect();
        let sizes: Vec<_> = replicas.iter().map(|r| r["size"].as_u64()).collect();
        if !replicas.is_empty()
            && sizes.iter().all(|s| *s == Some(size))
            && roots.iter().all(|r| *r == roots[0])
        {
            return roots[0].as_str().unwrap_or_default().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "context {context} did not converge to {size} entries: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
