//! What is read at scrape time ([`Snapshot`]): the embedded ledger's write-path counters and,
//! on a cluster member, the membership, replica lag and the runtime's own counters.

use super::labels::{PeerLabels, StateLabels};
use super::lag::LagTable;
use ledger_cluster::Cluster;
use ledger_embedded::{Ledger, SizeHistogram};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

/// What is read at scrape time.
#[derive(Debug)]
pub(super) struct Snapshot {
    pub(super) ledger: Ledger,
    pub(super) lag: Arc<LagTable>,
    pub(super) cluster: Arc<OnceLock<Arc<Cluster>>>,
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

fn sizes(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &SizeHistogram,
) -> Result<(), std::fmt::Error> {
    let (buckets, sum, count) = h.read();
    // prometheus-client takes per-bucket counts and writes `+Inf` for `f64::MAX`.
    let buckets: Vec<(f64, u64)> = buckets
        .into_iter()
        .map(|(le, n)| (le.map_or(f64::MAX, |b| b as f64), n))
        .collect();
    let mut m = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Histogram,
    )?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum as f64, count, &buckets, None)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_write_path(&mut enc, &self.ledger)?;
        let Some(cluster) = self.cluster.get() else {
            return Ok(());
        };
        encode_members(&mut enc, cluster)?;
        encode_lag(&mut enc, &self.lag)?;
        encode_cluster_counters(&mut enc, cluster)
    }
}

/// The embedded ledger's write path: commits, entries, bytes, fsyncs, group-commit and fsync
/// sizes, queue depth, watched contexts.
fn encode_write_path(enc: &mut DescriptorEncoder, ledger: &Ledger) -> Result<(), std::fmt::Error> {
    let s = ledger.stats();
    counter(
        enc,
        "ledger_commits",
        "Store commits written (each a group of appends in one write batch)",
        s.commits.load(Ordering::Relaxed),
    )?;
    counter(
        enc,
        "ledger_inline_commits",
        "Store commits written by the sequencer itself, nothing else being in flight (a lone writer's path)",
        s.inline_commits.load(Ordering::Relaxed),
    )?;
    counter(
        enc,
        "ledger_entries_stored",
        "Entries written to storage since start (appends, applied replicas and loads)",
        s.entries.load(Ordering::Relaxed),
    )?;
    counter(
        enc,
        "ledger_payload_bytes_stored",
        "Payload bytes of the entries written since start",
        s.bytes.load(Ordering::Relaxed),
    )?;
    counter(
        enc,
        "ledger_fsyncs",
        "Write-ahead-log fsyncs that made commits durable (durability = sync)",
        s.syncs.load(Ordering::Relaxed),
    )?;
    sizes(
        enc,
        "ledger_group_commit_entries",
        "Entries per store commit (group-commit size)",
        &s.commit_sizes,
    )?;
    sizes(
        enc,
        "ledger_fsync_entries",
        "Entries made durable per fsync",
        &s.sync_sizes,
    )?;
    gauge(
        enc,
        "ledger_queue_depth",
        "Appends queued for the sequencer (bounded by queue_depth)",
        i64::try_from(ledger.queue_len()).unwrap_or(i64::MAX),
    )?;
    gauge(
        enc,
        "ledger_watched_contexts",
        "Contexts with at least one live watcher",
        i64::try_from(ledger.watched_contexts()).unwrap_or(i64::MAX),
    )?;
    Ok(())
}

/// Cluster members as this node sees them, by state (every state listed, 0 included).
fn encode_members(enc: &mut DescriptorEncoder, cluster: &Cluster) -> Result<(), std::fmt::Error> {
    let view = cluster.view();
    let mut by_state: HashMap<String, i64> = ["alive", "suspect", "dead", "left"]
        .iter()
        .map(|s| ((*s).to_owned(), 0))
        .collect();
    for p in view.peers.values() {
        *by_state.entry(p.state.as_str().to_owned()).or_default() += 1;
    }
    let fam = Family::<StateLabels, Gauge>::default();
    for (state, n) in by_state {
        fam.get_or_create(&StateLabels { state }).set(n);
    }
    let m = enc.encode_descriptor(
        "ledger_cluster_members",
        "Cluster members as this node sees them, by state",
        None,
        fam.metric_type(),
    )?;
    fam.encode(m)
}

/// Entries a replica has not acknowledged, summed over the contexts this node writes, by
/// peer.
fn encode_lag(enc: &mut DescriptorEncoder, table: &LagTable) -> Result<(), std::fmt::Error> {
    let lag = Family::<PeerLabels, Gauge>::default();
    for (peer, per) in table.by_peer.lock().iter() {
        let total: u64 = per.values().sum();
        lag.get_or_create(&PeerLabels { peer: peer.clone() })
            .set(i64::try_from(total).unwrap_or(i64::MAX));
    }
    let m = enc.encode_descriptor(
            "ledger_replication_lag_entries",
            "Entries stored on this node (as writer) that a replica has not acknowledged, summed over contexts, by peer",
            None,
            lag.metric_type(),
        )?;
    lag.encode(m)
}

/// What the cluster runtime counts itself: running context tasks, anti-entropy repairs and
/// rounds, quarantines.
fn encode_cluster_counters(
    enc: &mut DescriptorEncoder,
    cluster: &Cluster,
) -> Result<(), std::fmt::Error> {
    gauge(
        enc,
        "ledger_cluster_context_tasks",
        "Contexts with a running replication task on this node (idle ones stop after context_idle_ms)",
        i64::try_from(cluster.context_tasks()).unwrap_or(i64::MAX),
    )?;
    counter(
        enc,
        "ledger_cluster_anti_entropy_repairs",
        "Contexts found different by anti-entropy and handed to replication",
        cluster.anti_entropy.repairs.load(Ordering::Relaxed),
    )?;
    counter(
        enc,
        "ledger_cluster_anti_entropy_rounds",
        "Anti-entropy digest exchanges completed as initiator",
        cluster.anti_entropy.rounds.load(Ordering::Relaxed),
    )?;
    counter(
        enc,
        "ledger_cluster_quarantines",
        "Divergent suffixes this node moved aside since start",
        cluster.quarantine_count(),
    )?;
    Ok(())
}
