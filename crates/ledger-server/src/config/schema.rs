//! Node configuration: defaults ← TOML file (`--config`) ← environment (`GRPC_PORT`, then
//! `LEDGER_*`) ← command-line flags. Every setting is listed in `docs/OPERATIONS.md`.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ledger_embedded::{Durability, LedgerConfig, Limits, RocksConfig};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

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
    /// `tracing` filter, e.g. `info` or `ledger_node=debug,info`.
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

/// Settings given as command-line flags (only those present override).
#[derive(Clone, Debug, Default, Serialize, clap::Args)]
pub struct Overrides {
    /// Data directory [default: ./data]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<IpAddr>,
    /// gRPC port, 0 for any free port [default: 50051]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// sync: fsync before acknowledging; buffered: OS buffers only [default: sync]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<DurabilitySetting>,
    /// Log line format [default: text]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// tracing filter [default: info]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Largest payload accepted by Append [default: 4194304]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_payload_bytes: Option<usize>,
    /// Most items in one AppendBatch [default: 10000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_items: Option<usize>,
    /// Most payload bytes in one AppendBatch [default: 16777216]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_bytes: Option<usize>,
    /// Most entry bytes in one Get response [default: 16777216]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<usize>,
    /// Largest gRPC message [default: 268435456]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    /// Ledger name in checkpoints and key name [default: converge-ledger]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_name: Option<String>,
    /// Signing key file [default: <data-dir>/signing.key]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key_file: Option<PathBuf>,
    /// Client connections at once, 0 = from the open-file limit [default: 0]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// Close connections without an HTTP/2 handshake after this many ms [default: 10000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_timeout_ms: Option<u64>,
    /// Honour idempotency keys for at least this many ms [default: 600000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_window_ms: Option<u64>,
    /// This node's id [default: generated once into <data-dir>/node.json]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// host:port peers and clients reach this node's gRPC at [default: host:port]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
    /// host:port the gossip layer binds; makes the node a cluster member [default: host:7946]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_addr: Option<String>,
    /// Comma-separated gossip seeds (host:port or DNS names) [default: none, one-node cluster]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeds: Option<String>,
    /// Replicas per context [default: 3]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<usize>,
    /// Acknowledge appends once on the writer, a quorum, or all replicas [default: quorum]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<AckSetting>,
    /// Appends for another node's context: forward or redirect [default: forward]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSetting>,
    /// member, or mirror (read-only replica) [default: member]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleSetting>,
    /// A mirror's comma-separated context-id prefixes (it replicates only contexts starting
    /// with one) [default: none, every context]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_prefixes: Option<String>,
    /// Remove members dead this long, 0 = never [default: 86400000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_member_timeout_ms: Option<u64>,
    /// Stop writing a context without a majority for this long [default: 2000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer_lease_ms: Option<u64>,
    /// Gossip probe interval [default: 1000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_probe_interval_ms: Option<u64>,
    /// Gossip probe timeout [default: 500]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_probe_timeout_ms: Option<u64>,
    /// Suspect members are declared dead after this [default: 4000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_suspicion_timeout_ms: Option<u64>,
    /// Full gossip state exchange interval [default: 30000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_push_pull_interval_ms: Option<u64>,
    /// Anti-entropy digest comparison with one peer this often [default: 10000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anti_entropy_interval_ms: Option<u64>,
    /// A context's replication task idle this long stops; 0 = never [default: 300000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_idle_ms: Option<u64>,
    /// host:port of the admin HTTP server: /metrics and the observer [default: none]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<String>,
    /// PEM certificate of the gRPC port; with --tls-key turns TLS on [default: none]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [default: none]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that client and peer certificates must be signed by (mutual TLS) [default: none]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Shared gossip encryption key, base64 of 16/24/32 random bytes; prefer LEDGER_GOSSIP_KEY
    /// or the config file, which other local users cannot read in the process list
    /// [default: none]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_key: Option<String>,
    /// TOML file of bearer tokens; turns auth on [default: none]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_file: Option<PathBuf>,
    /// Watch streams open on the node at once [default: 100000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_watchers: Option<usize>,
    /// Watch streams open on one context at once [default: 10000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_watchers_per_context: Option<usize>,
    /// AppendStream streams open on the node at once [default: 1024]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_append_streams: Option<usize>,
    /// Appends in flight per AppendStream before the node stops reading it [default: 1024]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub append_stream_window: Option<usize>,
    /// Largest snapshot Load accepts, in bytes [default: 17179869184]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_load_bytes: Option<u64>,
    /// Concurrent requests per connection [default: 1024]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
}

/// One figment error as "invalid setting <name>: <problem> (from <source>)".
fn describe(e: figment::Error) -> String {
    let source = e.metadata.as_ref().map(|m| match &m.source {
        Some(figment::Source::File(path)) => format!("{} {}", m.name, path.display()),
        _ => m.name.to_string(),
    });
    let from = source.map(|s| format!(" (from {s})")).unwrap_or_default();
    if e.path.is_empty() {
        format!("invalid configuration: {}{from}", e.kind)
    } else {
        let setting = e.path.join(".").to_lowercase();
        format!("invalid setting {setting}: {}{from}", e.kind)
    }
}

impl Config {
    /// Resolves the configuration from every source, in precedence order, and validates it.
    /// Errors name the setting and where it came from.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Config, String> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        // GRPC_PORT is the old ledger's variable; LEDGER_PORT wins when both are set.
        let grpc_port = Env::raw().only(&["GRPC_PORT"]).map(|_| "port".into());
        let prefixed = Env::prefixed("LEDGER_").only(ENV_KEYS);
        fig = fig
            .merge(grpc_port)
            .merge(prefixed)
            .merge(Serialized::defaults(flags));
        let config: Config = fig
            .extract()
            .map_err(|e| e.into_iter().map(describe).collect::<Vec<_>>().join("\n"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let bad = |setting: &str, why: String| Err(format!("invalid setting {setting}: {why}"));
        if self.max_payload_bytes == 0 {
            return bad("max_payload_bytes", "must be at least 1".into());
        }
        if self.max_batch_items == 0 || self.max_batch_bytes == 0 {
            return bad(
                "max_batch_items/max_batch_bytes",
                "must be at least 1".into(),
            );
        }
        if self.max_response_bytes < 1024 {
            return bad(
                "max_response_bytes",
                format!("{} is below the minimum of 1024", self.max_response_bytes),
            );
        }
        if self.max_message_bytes < self.max_payload_bytes + (64 << 10) {
            return bad(
                "max_message_bytes",
                format!(
                    "{} must exceed max_payload_bytes ({}) by at least 65536 so an append fits",
                    self.max_message_bytes, self.max_payload_bytes
                ),
            );
        }
        if self.max_message_bytes < self.max_response_bytes {
            return bad(
                "max_message_bytes",
                format!(
                    "{} is smaller than max_response_bytes ({})",
                    self.max_message_bytes, self.max_response_bytes
                ),
            );
        }
        for (setting, v) in [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("keepalive_interval_ms", self.keepalive_interval_ms),
            ("keepalive_timeout_ms", self.keepalive_timeout_ms),
        ] {
            if v == 0 {
                return bad(setting, "must be at least 1".into());
            }
        }
        if let Some(id) = &self.node_id {
            crate::identity::validate_node_id(id)?;
        }
        crate::cluster::settings::validate(self)?;
        if self.max_concurrent_streams == 0 {
            return bad("max_concurrent_streams", "must be at least 1".into());
        }
        for (setting, v) in [
            ("max_watchers", self.max_watchers),
            ("max_watchers_per_context", self.max_watchers_per_context),
            ("max_append_streams", self.max_append_streams),
            ("append_stream_window", self.append_stream_window),
        ] {
            if v == 0 {
                return bad(setting, "must be at least 1".into());
            }
        }
        if self.max_load_bytes == 0 {
            return bad("max_load_bytes", "must be at least 1".into());
        }
        self.validate_security()?;
        if self.watch_buffer == 0 || self.queue_depth == 0 {
            return bad("watch_buffer/queue_depth", "must be at least 1".into());
        }
        if self.ledger_name.is_empty()
            || !self
                .ledger_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return bad(
                "ledger_name",
                format!(
                    "{:?} must be non-empty and use only letters, digits, '.', '_' and '-'",
                    self.ledger_name
                ),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return bad(
                "log_level",
                format!("{:?} is not a valid tracing filter", self.log_level),
            );
        }
        Ok(())
    }

    /// TLS and admin settings that only make sense together.
    fn validate_security(&self) -> Result<(), String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(
                    "invalid setting tls_key: tls_cert is set, so its key is needed too".into(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "invalid setting tls_cert: tls_key is set, so its certificate is needed too"
                        .into(),
                );
            }
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err("invalid setting tls_client_ca: client certificates need TLS; set tls_cert and tls_key too".into());
        }
        if self.tls_cert.is_some()
            && self.tls_client_ca.is_none()
            && crate::cluster::is_clustered(self)
        {
            return Err("invalid setting tls_client_ca: a cluster with TLS needs it, so nodes can verify each other's certificates (mutual TLS between nodes)".into());
        }
        if let Some(k) = &self.gossip_key {
            k.parse::<ledger_discovery::GossipKey>()
                .map_err(|e| format!("invalid setting gossip_key: {e}"))?;
        }
        if let Some(a) = &self.admin_addr {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(format!(
                    "invalid setting admin_addr: {a:?} is not host:port (port 0 picks a free port)"
                ));
            }
        }
        Ok(())
    }

    /// The node's TLS files, when TLS is on.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
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

#[cfg(test)]
// figment::Jail closures return figment::Error, which is large; fine in tests.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    fn with_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            out = Some(f());
            Ok(())
        });
        out.expect("jail ran")
    }

    #[test]
    fn defaults_are_the_embedded_default() {
        let c = with_env(&[], || Config::load(None, &Overrides::default()).unwrap());
        assert_eq!(c.port, 50051);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.durability, DurabilitySetting::Sync);
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ledger.toml",
                "port = 7000\ndata_dir = \"/file\"\nlog_format = \"json\"\n",
            )?;
            let file = Path::new("ledger.toml");
            let c = Config::load(Some(file), &Overrides::default()).unwrap();
            assert_eq!((c.port, c.log_format), (7000, LogFormat::Json));
            jail.set_env("GRPC_PORT", "7100");
            assert_eq!(
                Config::load(Some(file), &Overrides::default())
                    .unwrap()
                    .port,
                7100
            );
            jail.set_env("LEDGER_PORT", "7200");
            jail.set_env("LEDGER_DATA_DIR", "/env");
            let c = Config::load(Some(file), &Overrides::default()).unwrap();
            assert_eq!((c.port, c.data_dir.clone()), (7200, PathBuf::from("/env")));
            let flags = Overrides {
                port: Some(7300),
                ..Default::default()
            };
            let c = Config::load(Some(file), &flags).unwrap();
            assert_eq!((c.port, c.data_dir), (7300, PathBuf::from("/env")));
            Ok(())
        });
    }

    #[test]
    fn every_setting_has_an_environment_variable() {
        let all = Config {
            signing_key_file: Some("k".into()),
            signing_key: Some("k".into()),
            node_id: Some("n".into()),
            advertise_addr: Some("a:1".into()),
            gossip_addr: Some("g:1".into()),
            admin_addr: Some("127.0.0.1:9090".into()),
            tls_cert: Some("c".into()),
            tls_key: Some("k".into()),
            tls_client_ca: Some("ca".into()),
            gossip_key: Some("k".into()),
            auth_file: Some("a".into()),
            ..Config::default()
        };
        let json = serde_json::to_value(&all).unwrap();
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = ENV_KEYS.to_vec();
        fields.sort_unstable();
        keys.sort_unstable();
        assert_eq!(fields, keys, "ENV_KEYS lists exactly the settings");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = with_env(&[("LEDGER_PORT", "not-a-port")], || {
            Config::load(None, &Overrides::default()).unwrap_err()
        });
        assert!(e.contains("port"), "{e}");
        let e = with_env(&[("LEDGER_DURABILITY", "sometimes")], || {
            Config::load(None, &Overrides::default()).unwrap_err()
        });
        assert!(e.contains("durability"), "{e}");
        let e = with_env(&[], || {
            Config::load(
                None,
                &Overrides {
                    max_payload_bytes: Some(0),
                    ..Default::default()
                },
            )
            .unwrap_err()
        });
        assert!(e.contains("max_payload_bytes"), "{e}");
        // A gossip key that is not 16/24/32 bytes of base64 is refused with what to use
        // instead, without echoing the value.
        let e = with_env(&[("LEDGER_GOSSIP_KEY", "c2hvcnQ=")], || {
            Config::load(None, &Overrides::default()).unwrap_err()
        });
        assert!(
            e.contains("gossip_key") && e.contains("/dev/urandom"),
            "{e}"
        );
        assert!(!e.contains("c2hvcnQ="), "{e}");
        let ok = with_env(
            &[(
                "LEDGER_GOSSIP_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )],
            || Config::load(None, &Overrides::default()),
        );
        assert!(ok.is_ok(), "{ok:?}");
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "prot = 1\n")?;
            let e = Config::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
            assert!(e.contains("prot"), "{e}");
            Ok(())
        });
        let e = with_env(&[], || {
            Config::load(
                Some(Path::new("/nonexistent/ledger.toml")),
                &Overrides::default(),
            )
            .unwrap_err()
        });
        assert!(e.contains("does not exist"), "{e}");
    }
}
