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
//!
//! Layout: this module ([`Metrics`]: the registry, what is counted where it happens, the
//! cluster's hooks), [`labels`] (label sets, code and method names), [`lag`] (replica lag
//! per peer, as the writer sees it), [`scrape`] (what is read at scrape time).

pub mod labels;
pub mod lag;
pub mod scrape;

pub use labels::{code_name, method_name};

use labels::{CodeLabels, KindLabels, LimitLabels, MethodLabels, RequestLabels};
use lag::LagTable;
use ledger_cluster::{Cluster, ClusterMetrics};
use ledger_embedded::Ledger;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tonic::Code;

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
    losses_accepted: Counter,
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
        let losses_accepted = Counter::default();
        registry.register(
            "ledger_cluster_losses_accepted",
            "Contexts whose surviving replicas' history an operator made the context's (cluster accept-loss)",
            losses_accepted.clone(),
        );
        let lag = Arc::new(LagTable::default());
        let cluster = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(scrape::Snapshot {
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
            losses_accepted,
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
}

/// The cluster runtime reports through these hooks (one line each in its code).
impl ClusterMetrics for Metrics {
    /// Cluster hook: this node became the writer of a context.
    fn epoch_change(&self) {
        self.epoch_changes.inc();
    }

    /// Cluster hook: a batch for a lagging replica was read from storage.
    fn catch_up(&self) {
        self.catch_ups.inc();
    }

    /// Cluster hook: as writer of `context`, `peer` has `lag` stored entries unacknowledged.
    fn replica_lag(&self, context: &str, peer: &str, lag: u64) {
        self.lag.set(context, peer, lag);
    }

    /// Cluster hook: an operator accepted the loss of a context's majority.
    fn loss_accepted(&self, _context: &str) {
        self.losses_accepted.inc();
    }

    /// Cluster hook: this node no longer writes `context`.
    fn forget_lag(&self, context: &str) {
        self.lag.forget(context);
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
