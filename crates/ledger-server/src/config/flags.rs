//! [`Overrides`]: the settings given as `serve` flags.

use super::schema::{AckSetting, DurabilitySetting, LogFormat, RoleSetting, RouteSetting};
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;

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
    /// Place contexts on the versioned placement view log (experimental) [default: false]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement_views: Option<bool>,
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
