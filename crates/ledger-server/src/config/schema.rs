//! Every setting of a node ([`Config`]), its defaults, and the environment variables that set
//! them ([`ENV_KEYS`]); what the embedded ledger, the listener and TLS take from it.

use crate::tls::TlsFiles;
use ledger_embedded::{Durability, LedgerConfig, Limits, RocksConfig};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// How log lines are written (to stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// When an acknowledged append is safe (see `ledger_storage::Durability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySetting {
    Sync,
    Buffered,
}

/// How durable an append must be before it is acknowledged, in a cluster (see
/// docs/ARCHITECTURE.md "Acknowledgement levels").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AckSetting {
    Writer,
    Quorum,
    All,
}

/// What a node does with an append for a context another node writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RouteSetting {
    /// Forward it to the writer and relay the answer.
    Forward,
    /// Refuse it with FAILED_PRECONDITION naming the writer in `x-ledger-writer`.
    Redirect,
}

/// What a node is in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RoleSetting {
    /// Holds replicas and can write contexts.
    Member,
    /// Replicates contexts read-only; never writes, never counts for acknowledgements.
    Mirror,
}

/// Every setting of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// RocksDB data directory.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub host: IpAddr,
    /// gRPC port (0 = any free port; the bound address is printed).
    pub port: u16,
    pub durability: DurabilitySetting,
    pub log_format: LogFormat,
    /// `tracing` filter, e.g. `info` or `ledger_server=debug,info`.
    pub log_level: String,
    /// Largest payload accepted by Append.
    pub max_payload_bytes: usize,
    /// Most items in one AppendBatch (beyond: RESOURCE_EXHAUSTED).
    pub max_batch_items: usize,
    /// Most payload bytes, summed over its items, in one AppendBatch (beyond:
    /// RESOURCE_EXHAUSTED).
    pub max_batch_bytes: usize,
    /// Most bytes of entries in one Get response (then `has_more` is set).
    pub max_response_bytes: usize,
    /// Largest gRPC message in either direction (bounds Snapshot and Load).
    pub max_message_bytes: usize,
    /// Live entries buffered per watched context before slow watchers read from storage.
    pub watch_buffer: usize,
    /// Appends that may wait for the writer before callers are slowed.
    pub queue_depth: usize,
    /// RocksDB block cache.
    pub block_cache_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// Name of this ledger: the first half of every checkpoint's origin line and the name of
    /// its signing key.
    pub ledger_name: String,
    /// Ed25519 signing key file (base64 of the 32-byte seed); default `<data_dir>/signing.key`,
    /// created on first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_file: Option<PathBuf>,
    /// The signing key itself (base64 seed), instead of a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    /// Client connections accepted at once; 0 = derived from the open-file limit (what is left
    /// after storage's share). Beyond it new connections are refused, never storage writes.
    pub max_connections: u64,
    /// Table files RocksDB keeps open; 0 = a quarter of the open-file limit, at most 1,024.
    pub rocksdb_max_open_files: u64,
    /// A connection that has not sent the HTTP/2 preface after this long is closed.
    pub handshake_timeout_ms: u64,
    /// HTTP/2 keepalive: the node pings a connection idle this long…
    pub keepalive_interval_ms: u64,
    /// …and closes it if the ping is not answered within this.
    pub keepalive_timeout_ms: u64,
    /// Concurrent requests (HTTP/2 streams) per connection.
    pub max_concurrent_streams: u32,
    /// An idempotency key is honoured for at least this long after its append…
    pub idempotency_window_ms: u64,
    /// …and, however old, while among the context's last this many keyed appends.
    pub idempotency_min_keys: u64,
    /// This node's id (default: generated once into the data dir's `node.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// host:port peers and clients use for this node's gRPC (default: host:port when host is
    /// a concrete address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
    /// host:port the gossip layer binds (default: host and port 7946). Setting it (or seeds)
    /// makes the node a cluster member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip_addr: Option<String>,
    /// Comma-separated gossip addresses (host:port or DNS names) of nodes to join; empty = a
    /// one-node cluster.
    pub seeds: String,
    /// Replicas of each context (capped at the member count).
    pub replication_factor: usize,
    /// Default acknowledgement level (`x-ledger-ack` overrides it per request).
    pub ack: AckSetting,
    /// Appends for contexts written by another node: forward or redirect.
    pub route: RouteSetting,
    /// member or mirror.
    pub role: RoleSetting,
    /// A mirror's comma-separated context-id prefixes: it replicates (and serves locally) only
    /// contexts whose id starts with one of them; empty = every context. Mirrors only.
    pub mirror_prefixes: String,
    /// A member dead for longer than this is removed from the cluster (0 = only by
    /// `cluster remove`).
    pub dead_member_timeout_ms: u64,
    /// A writer that has not heard from a majority of a context's replicas for this long stops
    /// accepting appends for it.
    pub writer_lease_ms: u64,
    /// Gossip failure detection: probe interval…
    pub gossip_probe_interval_ms: u64,
    /// …probe timeout…
    pub gossip_probe_timeout_ms: u64,
    /// …and how long a suspect member has to refute before it is declared dead.
    pub gossip_suspicion_timeout_ms: u64,
    /// Full gossip state exchange with a random member this often.
    pub gossip_push_pull_interval_ms: u64,
    /// Compare a digest of shared contexts with one peer this often (anti-entropy).
    pub anti_entropy_interval_ms: u64,
    /// A context's replication task with nothing to do for this long stops (it starts again
    /// on the next append or peer message); 0 = never.
    pub context_idle_ms: u64,
    /// Place contexts on the agreed, versioned placement view log instead of gossip's
    /// membership (new contexts with a member down, membership changes one at a time).
    /// Experimental in this version: off by default.
    pub placement_views: bool,
    /// host:port of the admin HTTP server (`/metrics`, the observer at `/`); unset = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<String>,
    /// PEM certificate (chain) of the public gRPC port; with `tls_key`, turns TLS on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: clients and peers must present a certificate it signed (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// The cluster's shared gossip key (base64 of 16, 24 or 32 random bytes): gossip
    /// encrypted and authenticated with it; every member needs the same key. Unset = clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip_key: Option<String>,
    /// TOML file of bearer tokens (`[[token]]` tables); unset = auth off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_file: Option<PathBuf>,
    /// Watch streams open on this node at once (beyond: RESOURCE_EXHAUSTED).
    pub max_watchers: usize,
    /// Watch streams open on one context at once (beyond: RESOURCE_EXHAUSTED).
    pub max_watchers_per_context: usize,
    /// AppendStream streams open on this node at once (beyond: RESOURCE_EXHAUSTED).
    pub max_append_streams: usize,
    /// Appends one AppendStream may have in flight; beyond it the node stops reading the
    /// stream until answers go out (flow control holds the client).
    pub append_stream_window: usize,
    /// Largest snapshot a Load or LoadStream accepts, in bytes (beyond: RESOURCE_EXHAUSTED).
    pub max_load_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        let ledger = LedgerConfig::default();
        Config {
            data_dir: PathBuf::from("./data"),
            host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 50051,
            durability: DurabilitySetting::Sync,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            max_payload_bytes: ledger.limits.max_payload_bytes,
            max_batch_items: ledger.limits.max_batch_items,
            max_batch_bytes: ledger.limits.max_batch_bytes,
            max_response_bytes: 16 << 20,
            max_message_bytes: 256 << 20,
            watch_buffer: ledger.watch_buffer,
            queue_depth: ledger.queue_depth,
            block_cache_bytes: ledger.rocks.block_cache_bytes,
            shutdown_grace_ms: 10_000,
            ledger_name: "converge-ledger".into(),
            signing_key_file: None,
            signing_key: None,
            max_connections: 0,
            rocksdb_max_open_files: 0,
            handshake_timeout_ms: 10_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 20_000,
            max_concurrent_streams: 1024,
            idempotency_window_ms: ledger.idempotency_window_ns / 1_000_000,
            idempotency_min_keys: ledger.idempotency_min_keys,
            node_id: None,
            advertise_addr: None,
            gossip_addr: None,
            seeds: String::new(),
            replication_factor: 3,
            ack: AckSetting::Quorum,
            route: RouteSetting::Forward,
            role: RoleSetting::Member,
            mirror_prefixes: String::new(),
            dead_member_timeout_ms: 24 * 3_600_000,
            writer_lease_ms: 2_000,
            gossip_probe_interval_ms: 1_000,
            gossip_probe_timeout_ms: 500,
            gossip_suspicion_timeout_ms: 4_000,
            gossip_push_pull_interval_ms: 30_000,
            anti_entropy_interval_ms: 10_000,
            context_idle_ms: 300_000,
            placement_views: false,
            admin_addr: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            gossip_key: None,
            auth_file: None,
            max_watchers: 100_000,
            max_watchers_per_context: 10_000,
            max_append_streams: 1_024,
            append_stream_window: 1_024,
            max_load_bytes: 16 << 30,
        }
    }
}

/// Every setting, as read from the environment with the `LEDGER_` prefix (`LEDGER_DATA_DIR`, …).
/// Deployment files (deploy/compose, deploy/helm) are checked against it.
pub const ENV_KEYS: &[&str] = &[
    "data_dir",
    "host",
    "port",
    "durability",
    "log_format",
    "log_level",
    "max_payload_bytes",
    "max_batch_items",
    "max_batch_bytes",
    "max_response_bytes",
    "max_message_bytes",
    "watch_buffer",
    "queue_depth",
    "block_cache_bytes",
    "shutdown_grace_ms",
    "ledger_name",
    "signing_key_file",
    "signing_key",
    "max_connections",
    "rocksdb_max_open_files",
    "handshake_timeout_ms",
    "keepalive_interval_ms",
    "keepalive_timeout_ms",
    "max_concurrent_streams",
    "idempotency_window_ms",
    "idempotency_min_keys",
    "node_id",
    "advertise_addr",
    "gossip_addr",
    "seeds",
    "replication_factor",
    "ack",
    "route",
    "role",
    "mirror_prefixes",
    "dead_member_timeout_ms",
    "writer_lease_ms",
    "gossip_probe_interval_ms",
    "gossip_probe_timeout_ms",
    "gossip_suspicion_timeout_ms",
    "gossip_push_pull_interval_ms",
    "anti_entropy_interval_ms",
    "context_idle_ms",
    "placement_views",
    "admin_addr",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "gossip_key",
    "auth_file",
    "max_watchers",
    "max_watchers_per_context",
    "max_append_streams",
    "append_stream_window",
    "max_load_bytes",
];

impl Config {
    /// The node's TLS files, when TLS is on.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// The address to bind.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// The embedded ledger's settings, with RocksDB's open files from the descriptor budget.
    pub fn ledger_config(&self, rocksdb_open_files: u64) -> LedgerConfig {
        let defaults = LedgerConfig::default();
        LedgerConfig {
            limits: Limits {
                max_payload_bytes: self.max_payload_bytes,
                max_batch_items: self.max_batch_items,
                max_batch_bytes: self.max_batch_bytes,
            },
            rocks: RocksConfig {
                durability: match self.durability {
                    DurabilitySetting::Sync => Durability::Sync,
                    DurabilitySetting::Buffered => Durability::Buffered,
                },
                block_cache_bytes: self.block_cache_bytes,
                max_open_files: i32::try_from(rocksdb_open_files).unwrap_or(i32::MAX),
                ..defaults.rocks
            },
            watch_buffer: self.watch_buffer,
            queue_depth: self.queue_depth,
            max_read_bytes: self.max_response_bytes,
            idempotency_window_ns: self.idempotency_window_ms.saturating_mul(1_000_000),
            idempotency_min_keys: self.idempotency_min_keys,
            ..defaults
        }
    }
}
