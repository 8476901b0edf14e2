//! Prometheus metrics (prometheus-client), served as text on the admin port's `/metrics`.
//!
//! Two kinds:
//! - counted where they happen: requests by method and code, appends by code and their
//!   latency, watchers, proofs and heads served, limit refusals, and the cluster's hooks (one
//!   line each in the cluster code: epoch changes, catch-ups, replica lag);
//! - read at scrape time ([`Snapshot`] collector): the embedded ledger's write-path counters
//!   (commits, entries, bytes, fsyncs, group-commit and fsync sizes, queue depth) and the
//!   cluster's membership, anti-entropy repairs and quarantines.
//!
//! Every metric is listed, with its meaning, in docs/OPERATIONS.md "Metrics".

use crate::cluster::Cluster;
use ledger_embedded::{Ledger, SizeHistogram};
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tonic::Code;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

/// The gRPC name of a status code, as a label value (`OK`, `INVALID_ARGUMENT`, …).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The methods the node serves, as label values (anything else is `other`): a fixed set, so
/// a client cannot grow the label space.
pub fn method_name(path: &str) -> &'static str {
    const METHODS: &[&str] = &[
        "Append",
        "Get",
        "Snapshot",
        "Load",
        "Watch",
        "AppendStream",
        "SnapshotStream",
        "LoadStream",
        "GetTreeHead",
        "GetInclusionProof",
        "GetConsistencyProof",
        "GetPublicKey",
        "Replicate",
        "ContextState",
        "Status",
        "RemoveMember",
        "Quarantines",
        "ExportQuarantine",
        "Digest",
        "Check",
        "ServerReflectionInfo",
    ];
    let method = path.rsplit('/').next().unwrap_or("");
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// Replica lag as the writer sees it: peer → context → entries not yet acknowledged.
#[derive(Debug, Default)]
struct LagTable {
    by_peer: Mutex<HashMap<String, HashMap<String, u64>>>,
}

/// The node's metrics. Cheap to share (`Arc`); every method is one atomic operation or a
/// short lock.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    grpc_requests: Family<RequestLabels, Counter>,
    grpc_duration: Family<MethodLabels, Histogram>,
    appends: Family<CodeLabels, Counter>,
    append_duration: Histogram,
    watchers: Gauge,
    watch_fallbacks: Counter,
    proofs: Family<KindLabels, Counter>,
    tree_heads: Counter,
    limit_refusals: Family<LimitLabels, Counter>,
    epoch_changes: Counter,
    catch_ups: Counter,
    lag: Arc<LagTable>,
    cluster: Arc<OnceLock<Arc<Cluster>>>,
}

fn latency_buckets() -> Histogram {
    // 50 µs … ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    /// The metrics of a node serving `ledger`.
    pub fn new(ledger: Ledger) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let grpc_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "ledger_grpc_requests",
            "gRPC requests finished, by method and status code",
            grpc_requests.clone(),
        );
        let grpc_duration =
            Family::<MethodLabels, Histogram>::new_with_constructor(latency_buckets as fn() -> _);
        registry.register_with_unit(
            "ledger_grpc_request_duration",
            "Time from request to status of unary gRPC requests, by method",
            Unit::Seconds,
            grpc_duration.clone(),
        );
        let appends = Family::<CodeLabels, Counter>::default();
        registry.register(
            "ledger_appends",
            "Appends answered (unary and streamed, forwarded ones included), by status code",
            appends.clone(),
        );
        let append_duration = latency_buckets();
        registry.register_with_unit(
            "ledger_append_duration",
            "Time from receiving an append to answering it (durable at the requested level)",
            Unit::Seconds,
            append_duration.clone(),
        );
        let watchers = Gauge::default();
        registry.register("ledger_watchers", "Watch streams open", watchers.clone());
        let watch_fallbacks = Counter::default();
        registry.register(
            "ledger_watch_storage_fallbacks",
            "Times a slow watcher fell behind the live buffer and read from storage",
            watch_fallbacks.clone(),
        );
        let proofs = Family::<KindLabels, Counter>::default();
        registry.register(
            "ledger_proofs_served",
            "Merkle proofs served, by kind (inclusion, consistency)",
            proofs.clone(),
        );
        let tree_heads = Counter::default();
        registry.register(
            "ledger_tree_heads_served",
            "Signed tree heads served by GetTreeHead",
            tree_heads.clone(),
        );
        let limit_refusals = Family::<LimitLabels, Counter>::default();
        registry.register(
            "ledger_limit_refusals",
            "Requests refused with RESOURCE_EXHAUSTED by a limit, by limit",
            limit_refusals.clone(),
        );
        let epoch_changes = Counter::default();
        registry.register(
            "ledger_cluster_epoch_changes",
            "Times this node became the writer of a context (a new epoch)",
            epoch_changes.clone(),
        );
        let catch_ups = Counter::default();
        registry.register(
            "ledger_cluster_catch_ups",
            "Batches shipped to a lagging replica from storage (beyond the writer's recent cache)",
            catch_ups.clone(),
        );
        let lag = Arc::new(LagTable::default());
        let cluster = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(Snapshot {
            ledger,
            lag: Arc::clone(&lag),
            cluster: Arc::clone(&cluster),
        }));
        Arc::new(Metrics {
            registry,
            grpc_requests,
            grpc_duration,
            appends,
            append_duration,
            watchers,
            watch_fallbacks,
            proofs,
            tree_heads,
            limit_refusals,
            epoch_changes,
            catch_ups,
            lag,
            cluster,
        })
    }

    /// The cluster runtime, once started (its membership and counters are read at scrape).
    pub fn attach_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The Prometheus text exposition (OpenMetrics text, as Prometheus reads it).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// A gRPC request of `method` ([`method_name`]) finished with `code`; `unary_elapsed` for
    /// unary requests.
    pub fn request(&self, method: &'static str, code: Code, unary_elapsed: Option<Duration>) {
        self.grpc_requests
            .get_or_create(&RequestLabels {
                method,
                code: code_name(code),
            })
            .inc();
        if let Some(d) = unary_elapsed {
            self.grpc_duration
                .get_or_create(&MethodLabels { method })
                .observe(d.as_secs_f64());
        }
    }

    /// An append was answered with `code` after `elapsed`.
    pub fn append(&self, code: Code, elapsed: Duration) {
        self.appends
            .get_or_create(&CodeLabels {
                code: code_name(code),
            })
            .inc();
        if code == Code::Ok {
            self.append_duration.observe(elapsed.as_secs_f64());
        }
    }

    pub fn watcher_opened(&self) {
        self.watchers.inc();
    }

    pub fn watcher_closed(&self) {
        self.watchers.dec();
    }

    /// `n` more storage reads by slow watchers.
    pub fn watch_fallbacks(&self, n: u64) {
        self.watch_fallbacks.inc_by(n);
    }

    pub fn proof(&self, kind: &'static str) {
        self.proofs.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn tree_head(&self) {
        self.tree_heads.inc();
    }

    /// A request refused by `limit` (the setting's name).
    pub fn refused(&self, limit: &'static str) {
        self.limit_refusals
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// Cluster hook: this node became the writer of a context.
    pub fn epoch_change(&self) {
        self.epoch_changes.inc();
    }

    /// Cluster hook: a batch for a lagging replica was read from storage.
    pub fn catch_up(&self) {
        self.catch_ups.inc();
    }

    /// Cluster hook: as writer of `context`, `peer` has `lag` stored entries unacknowledged.
    pub fn replica_lag(&self, context: &str, peer: &str, lag: u64) {
        let mut t = self.lag.by_peer.lock();
        let per = t.entry(peer.to_owned()).or_default();
        match per.get_mut(context) {
            Some(v) => *v = lag,
            None => {
                per.insert(context.to_owned(), lag);
            }
        }
    }

    /// Cluster hook: this node no longer writes `context`.
    pub fn forget_lag(&self, context: &str) {
        let mut t = self.lag.by_peer.lock();
        for per in t.values_mut() {
            per.remove(context);
        }
        t.retain(|_, per| !per.is_empty());
    }
}

/// What is read at scrape time.
#[derive(Debug)]
struct Snapshot {
    ledger: Ledger,
    lag: Arc<LagTable>,
    cluster: Arc<OnceLock<Arc<Cluster>>>,
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
        let s = self.ledger.stats();
        counter(
            &mut enc,
            "ledger_commits",
            "Store commits written (each a group of appends in one write batch)",
            s.commits.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "ledger_inline_commits",
            "Store commits written by the sequencer itself, nothing else being in flight (a lone writer's path)",
            s.inline_commits.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "ledger_entries_stored",
            "Entries written to storage since start (appends, applied replicas and loads)",
            s.entries.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "ledger_payload_bytes_stored",
            "Payload bytes of the entries written since start",
            s.bytes.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "ledger_fsyncs",
            "Write-ahead-log fsyncs that made commits durable (durability = sync)",
            s.syncs.load(Ordering::Relaxed),
        )?;
        sizes(
            &mut enc,
            "ledger_group_commit_entries",
            "Entries per store commit (group-commit size)",
            &s.commit_sizes,
        )?;
        sizes(
            &mut enc,
            "ledger_fsync_entries",
            "Entries made durable per fsync",
            &s.sync_sizes,
        )?;
        gauge(
            &mut enc,
            "ledger_queue_depth",
            "Appends queued for the sequencer (bounded by queue_depth)",
            i64::try_from(self.ledger.queue_len()).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut enc,
            "ledger_watched_contexts",
            "Contexts with at least one live watcher",
            i64::try_from(self.ledger.watched_contexts()).unwrap_or(i64::MAX),
        )?;
        let Some(cluster) = self.cluster.get() else {
            return Ok(());
        };
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
        fam.encode(m)?;
        let lag = Family::<PeerLabels, Gauge>::default();
        for (peer, per) in self.lag.by_peer.lock().iter() {
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
        lag.encode(m)?;
        gauge(
            &mut enc,
            "ledger_cluster_context_tasks",
            "Contexts with a running replication task on this node (idle ones stop after context_idle_ms)",
            i64::try_from(cluster.context_tasks()).unwrap_or(i64::MAX),
        )?;
        counter(
            &mut enc,
            "ledger_cluster_anti_entropy_repairs",
            "Contexts found different by anti-entropy and handed to replication",
            cluster.anti_entropy.repairs.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "ledger_cluster_anti_entropy_rounds",
            "Anti-entropy digest exchanges completed as initiator",
            cluster.anti_entropy.rounds.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "ledger_cluster_quarantines",
            "Divergent suffixes this node moved aside since start",
            cluster.quarantine_count(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), ledger_embedded::LedgerConfig::default()).unwrap();
        let m = Metrics::new(ledger);
        let append = method_name("/converge.context.v1.ContextService/Append");
        m.request(append, Code::Ok, Some(Duration::from_millis(2)));
        m.append(Code::Ok, Duration::from_millis(2));
        m.request(method_name("/evil/\"{}"), Code::Unimplemented, None);
        let text = m.encode();
        for needle in [
            "ledger_grpc_requests_total{method=\"Append\",code=\"OK\"} 1",
            "ledger_grpc_requests_total{method=\"other\",code=\"UNIMPLEMENTED\"} 1",
            "ledger_appends_total{code=\"OK\"} 1",
            "ledger_append_duration_seconds_count 1",
            "ledger_commits_total 0",
            "ledger_group_commit_entries_count 0",
            "ledger_queue_depth 0",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
    }
}
