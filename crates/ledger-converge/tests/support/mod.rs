//! Real `converge-ledger` processes for the tests: a 3-node cluster on loopback network
//! 127.0.NET.x (NET 90–99 are this crate's; other tests use other nets), or one node; and the
//! `engine_run` example as a process.

#![allow(dead_code)]

use ledger_client::ledger_proto::cluster::v1 as cpb;
use ledger_client::ledger_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use ledger_launcher::{Launch, NodeProcess, cluster_node};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The node binary: `LEDGER_BIN`, else next to the test executable.
pub fn ledger_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LEDGER_BIN") {
        return PathBuf::from(p);
    }
    let b = ledger_launcher::binary_next_to_current_exe();
    assert!(
        b.exists(),
        "no converge-ledger binary: set LEDGER_BIN or build it (looked at {})",
        b.display()
    );
    b
}

/// The `engine_run` example next to the test executable (target/<profile>/examples).
pub fn engine_run_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("examples").join("engine_run"))
        .find(|p| p.exists())
        .expect("target/<profile>/examples/engine_run (cargo builds examples with the tests)")
}

pub struct Cluster {
    pub nodes: Vec<NodeProcess>,
    pub dirs: Vec<tempfile::TempDir>,
    pub net: u8,
}

impl Cluster {
    /// Three nodes on network `net`, every one seeing all three alive.
    pub async fn start(net: u8) -> Cluster {
        let bin = ledger_bin();
        let mut c = Cluster {
            nodes: Vec::new(),
            dirs: Vec::new(),
            net,
        };
        for i in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let node = NodeProcess::start(cluster_node(&bin, dir.path(), net, i, 3))
                .unwrap_or_else(|e| panic!("node {i}: {e}"));
            c.dirs.push(dir);
            c.nodes.push(node);
        }
        for i in 0..3 {
            c.wait_alive(i, 3).await;
        }
        c
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// Waits until node `i` sees `n` members alive (and in its placement view, if on).
    pub async fn wait_alive(&self, i: usize, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(s) = status(&self.nodes[i].url, Some("probe")).await
                && ledger_launcher::Membership::of(&s).ready(n)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} does not see {n} members alive"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every acknowledged entry of `context`: the longest copy any node serves. A save returns
    /// once a quorum holds its entries, so one given node may still lag; the writer never does.
    pub async fn acknowledged(&self, context: &str) -> Vec<ledger_core::Entry> {
        let mut longest = Vec::new();
        for n in &self.nodes {
            let held = entries(&n.url, context).await;
            if held.len() > longest.len() {
                longest = held;
            }
        }
        longest
    }

    /// Index of the node node `via`'s status names the writer of `context`.
    pub async fn writer_index(&self, via: usize, context: &str) -> Option<usize> {
        let s = status(&self.nodes[via].url, Some(context)).await.ok()?;
        let id = s["contexts"][0]["writer"]["id"].as_str()?.to_owned();
        (0..self.nodes.len()).find(|i| format!("n{}", i + 1) == id)
    }
}

/// One node on 127.0.0.1, any free port.
pub fn single_node() -> (NodeProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = NodeProcess::start(Launch::new(ledger_bin(), dir.path())).expect("node starts");
    (node, dir)
}

/// `cluster status` of the node at `url`, as JSON.
pub async fn status(url: &str, context: Option<&str>) -> Result<serde_json::Value, String> {
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

/// Every entry of `context` as node `url` serves it (empty while it does not exist).
pub async fn entries(url: &str, context: &str) -> Vec<ledger_core::Entry> {
    match ledger_client::LedgerClient::connect(url).await {
        Ok(c) => c.get_all(context, "", 0).await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// The fact entries of `entries`: (ledger key, fact id) in sequence order.
pub fn fact_ids(entries: &[ledger_core::Entry]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|e| ledger_converge::mapping::context_key(&e.key).is_some())
        .map(|e| {
            (
                e.key.clone(),
                e.metadata[ledger_converge::mapping::META_FACT_ID].clone(),
            )
        })
        .collect()
}

/// Asserts no fact is stored twice; returns how many facts are stored.
pub fn assert_no_fact_twice(entries: &[ledger_core::Entry]) -> usize {
    let ids = fact_ids(entries);
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a fact is stored twice: {ids:?}");
    ids.len()
}

/// Waits (up to 60 s) until `cond` holds.
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `engine_run ARGS…` to its end; its last stdout line as JSON.
pub fn engine_run(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(engine_run_bin())
        .args(args)
        .output()
        .expect("engine_run starts");
    assert!(
        out.status.success(),
        "engine_run {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{last:?}: {e}"))
}
