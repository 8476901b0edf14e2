//! The cluster settings of a configuration ([`ClusterConfig`]): whether the node runs as a
//! cluster member at all, the runtime's settings ([`ClusterSettings`]), the gossip layer's
//! addresses, timings and key, and the replication protocol's timings; and their validation.

use super::schema::{AckSetting, Config, RoleSetting};
use ledger_cluster::ClusterSettings;
use ledger_discovery::{
    DEFAULT_GOSSIP_PORT, GossipConfig, GossipKey, GossipTiming, NodeMeta, parse_seed_list,
};
use ledger_replication::AckLevel;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// What the configuration says about the cluster: the runtime's settings and the gossip
/// layer's.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub runtime: ClusterSettings,
    /// Address the gossip layer binds.
    pub gossip_bind: SocketAddr,
    /// Address peers reach the gossip layer at (the bind address unless it is unspecified).
    pub gossip_advertise: Option<SocketAddr>,
    pub timing: GossipTiming,
    /// The shared gossip key, if gossip is encrypted.
    pub gossip_key: Option<GossipKey>,
}

/// True when the node joins a cluster: `seeds` or `gossip_addr` is set. Otherwise it is a
/// one-node cluster and behaves exactly like a single node (no gossip, no replication).
pub fn is_clustered(config: &Config) -> bool {
    config.gossip_addr.is_some() || !parse_seed_list(&config.seeds).is_empty()
}

pub fn ack_level(a: AckSetting) -> AckLevel {
    match a {
        AckSetting::Writer => AckLevel::Writer,
        AckSetting::Quorum => AckLevel::Quorum,
        AckSetting::All => AckLevel::All,
    }
}

fn bad(setting: &str, why: impl std::fmt::Display) -> String {
    format!("invalid setting {setting}: {why}")
}

/// Checks the cluster settings (called from `Config::validate`).
pub fn validate_cluster(config: &Config) -> Result<(), String> {
    if config.replication_factor == 0 {
        return Err(bad("replication_factor", "must be at least 1"));
    }
    if config.writer_lease_ms == 0 {
        return Err(bad("writer_lease_ms", "must be at least 1"));
    }
    for (setting, v) in [
        ("gossip_probe_interval_ms", config.gossip_probe_interval_ms),
        ("gossip_probe_timeout_ms", config.gossip_probe_timeout_ms),
        (
            "gossip_suspicion_timeout_ms",
            config.gossip_suspicion_timeout_ms,
        ),
        (
            "gossip_push_pull_interval_ms",
            config.gossip_push_pull_interval_ms,
        ),
        ("anti_entropy_interval_ms", config.anti_entropy_interval_ms),
    ] {
        if v == 0 {
            return Err(bad(setting, "must be at least 1"));
        }
    }
    if let Some(a) = &config.advertise_addr {
        check_host_port("advertise_addr", a)?;
    }
    if let Some(g) = &config.gossip_addr {
        check_host_port("gossip_addr", g)?;
    }
    for s in parse_seed_list(&config.seeds) {
        ledger_discovery::seeds::validate_seed(&s).map_err(|e| bad("seeds", e))?;
    }
    let prefixes = parse_prefixes(&config.mirror_prefixes);
    if !prefixes.is_empty() && config.role != RoleSetting::Mirror {
        return Err(bad(
            "mirror_prefixes",
            "only a mirror (role = mirror) replicates by prefix; a member holds the contexts placement gives it",
        ));
    }
    // They travel in the node's gossip metadata (512 bytes with everything else).
    let len = ledger_discovery::encoded_prefixes_len(&prefixes);
    if prefixes.len() > MAX_MIRROR_PREFIXES || len > MAX_MIRROR_PREFIX_BYTES {
        return Err(bad(
            "mirror_prefixes",
            format!(
                "{} prefixes of {len} bytes in all: at most {MAX_MIRROR_PREFIXES} prefixes and {MAX_MIRROR_PREFIX_BYTES} bytes (2 per prefix plus its length) fit in the node's gossip metadata",
                prefixes.len()
            ),
        ));
    }
    Ok(())
}

/// Most prefixes a mirror may list.
const MAX_MIRROR_PREFIXES: usize = 32;
/// Most bytes they may take in the gossip metadata (each prefix plus a 2-byte length).
const MAX_MIRROR_PREFIX_BYTES: usize = 256;

/// The prefixes of the comma-separated `mirror_prefixes` setting (blank items dropped).
pub fn parse_prefixes(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn check_host_port(setting: &str, value: &str) -> Result<(), String> {
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(bad(
            setting,
            format!("{value:?} must be host:port, e.g. 10.0.0.5:50051"),
        )),
    }
}

impl ClusterConfig {
    /// The cluster settings of `config`, with the gRPC port actually bound (`port = 0` binds a
    /// free one).
    pub fn from_config(config: &Config, bound: SocketAddr) -> Result<Self, String> {
        let advertise_addr = match &config.advertise_addr {
            Some(a) => a.clone(),
            None if !bound.ip().is_unspecified() => bound.to_string(),
            None => {
                return Err(bad(
                    "advertise_addr",
                    format!(
                        "the node listens on {bound}, which peers cannot dial; set advertise_addr \
                         to the host:port they should use"
                    ),
                ));
            }
        };
        let gossip_bind = match &config.gossip_addr {
            Some(g) => resolve_one("gossip_addr", g)?,
            None => SocketAddr::new(config.host, DEFAULT_GOSSIP_PORT),
        };
        let gossip_advertise = if gossip_bind.ip().is_unspecified() {
            // Peers reach the gossip layer on the advertised gRPC host.
            let host = advertise_addr
                .rsplit_once(':')
                .map_or(advertise_addr.as_str(), |(h, _)| h);
            resolve_one("advertise_addr", &format!("{host}:{}", gossip_bind.port())).ok()
        } else {
            None
        };
        let ms = Duration::from_millis;
        let timing = GossipTiming {
            probe_interval: ms(config.gossip_probe_interval_ms),
            probe_timeout: ms(config.gossip_probe_timeout_ms),
            suspicion_timeout: ms(config.gossip_suspicion_timeout_ms),
            suspicion_max_timeout: ms(config.gossip_suspicion_timeout_ms.saturating_mul(2)),
            push_pull_interval: ms(config.gossip_push_pull_interval_ms),
            gossip_interval: ms((config.gossip_probe_interval_ms / 5).max(10)),
            stream_timeout: ms(config
                .gossip_probe_interval_ms
                .saturating_mul(10)
                .max(1_000)),
            dead_node_reclaim_time: ms(config.gossip_suspicion_timeout_ms),
            rejoin_interval: ms(config.gossip_probe_interval_ms.saturating_mul(5)),
            leave_propagate_delay: ms(config.gossip_probe_interval_ms.saturating_mul(2)),
            ..GossipTiming::default()
        };
        let protocol = ledger_replication::Settings {
            replication_factor: config.replication_factor,
            writer_lease_ms: config.writer_lease_ms,
            // A follower hears from its writer several times per lease.
            heartbeat_ms: (config.writer_lease_ms / 10).clamp(10, 500),
            poll_ms: (config.writer_lease_ms / 4).clamp(50, 1_000),
            claim_timeout_ms: config.writer_lease_ms.max(500),
            ..ledger_replication::Settings::default()
        };
        let runtime = ClusterSettings {
            advertise_addr,
            seeds: parse_seed_list(&config.seeds),
            ack: ack_level(config.ack),
            role: match config.role {
                RoleSetting::Member => ledger_discovery::GossipRole::Member,
                RoleSetting::Mirror => ledger_discovery::GossipRole::Mirror,
            },
            mirror_prefixes: parse_prefixes(&config.mirror_prefixes),
            dead_member_timeout: (config.dead_member_timeout_ms > 0)
                .then(|| ms(config.dead_member_timeout_ms)),
            protocol,
            anti_entropy_interval: ms(config.anti_entropy_interval_ms),
            context_idle: (config.context_idle_ms > 0).then(|| ms(config.context_idle_ms)),
            placement_views: config.placement_views,
        };
        Ok(ClusterConfig {
            runtime,
            gossip_bind,
            gossip_advertise,
            timing,
            gossip_key: match &config.gossip_key {
                Some(k) => Some(k.parse().map_err(|e| bad("gossip_key", e))?),
                None => None,
            },
        })
    }

    /// The gossip layer's configuration for this node (`node_id` and `incarnation` from its
    /// identity), announcing its gRPC address, signing key, version, role and mirror prefixes.
    pub fn gossip(&self, node_id: &str, incarnation: &str, public_key: Vec<u8>) -> GossipConfig {
        let meta = NodeMeta {
            grpc_addr: self.runtime.advertise_addr.clone(),
            public_key,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            role: self.runtime.role,
            incarnation: incarnation.to_owned(),
            mirror_prefixes: self.runtime.mirror_prefixes.clone(),
            views_settled: 0,
        };
        let mut gossip = GossipConfig::new(node_id.to_owned(), meta);
        gossip.bind_addr = self.gossip_bind;
        gossip.advertise_addr = self.gossip_advertise;
        gossip.timing = self.timing.clone();
        gossip.key = self.gossip_key.clone();
        gossip
    }
}

fn resolve_one(setting: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .to_socket_addrs()
        .map_err(|e| bad(setting, format!("{value:?}: {e}")))?
        .next()
        .ok_or_else(|| bad(setting, format!("{value:?} resolves to no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clustered_only_with_seeds_or_gossip_addr() {
        let mut c = Config::default();
        assert!(!is_clustered(&c));
        c.seeds = "127.0.0.1:7946".into();
        assert!(is_clustered(&c));
        c.seeds = String::new();
        c.gossip_addr = Some("127.0.0.1:7946".into());
        assert!(is_clustered(&c));
    }

    #[test]
    fn unspecified_host_needs_an_advertised_address() {
        let c = Config {
            gossip_addr: Some("127.0.0.1:0".into()),
            ..Config::default()
        };
        let e = ClusterConfig::from_config(&c, "0.0.0.0:50051".parse().unwrap()).unwrap_err();
        assert!(e.contains("advertise_addr"), "{e}");
        let s = ClusterConfig::from_config(&c, "127.0.0.7:50051".parse().unwrap()).unwrap();
        assert_eq!(s.runtime.advertise_addr, "127.0.0.7:50051");
    }

    #[test]
    fn bad_cluster_settings_name_the_setting() {
        let c = Config {
            advertise_addr: Some("nohost".into()),
            ..Config::default()
        };
        assert!(validate_cluster(&c).unwrap_err().contains("advertise_addr"));
        let c = Config {
            replication_factor: 0,
            ..Config::default()
        };
        assert!(
            validate_cluster(&c)
                .unwrap_err()
                .contains("replication_factor")
        );
    }

    #[test]
    fn mirror_prefixes_belong_to_mirrors_and_fit_in_the_gossip_metadata() {
        assert_eq!(parse_prefixes(" obs-, ,tenant-7/,"), ["obs-", "tenant-7/"]);
        let member = Config {
            mirror_prefixes: "obs-".into(),
            ..Config::default()
        };
        let e = validate_cluster(&member).unwrap_err();
        assert!(
            e.contains("mirror_prefixes") && e.contains("role = mirror"),
            "{e}"
        );
        let mirror = Config {
            role: RoleSetting::Mirror,
            ..member
        };
        assert_eq!(validate_cluster(&mirror), Ok(()));
        let s = ClusterConfig::from_config(&mirror, "127.0.0.7:50051".parse().unwrap()).unwrap();
        assert_eq!(s.runtime.mirror_prefixes, ["obs-"]);
        let too_many = Config {
            mirror_prefixes: (0..40)
                .map(|i| format!("p{i}"))
                .collect::<Vec<_>>()
                .join(","),
            ..mirror.clone()
        };
        assert!(
            validate_cluster(&too_many)
                .unwrap_err()
                .contains("at most 32 prefixes")
        );
        let too_long = Config {
            mirror_prefixes: "x".repeat(300),
            ..mirror
        };
        assert!(
            validate_cluster(&too_long)
                .unwrap_err()
                .contains("256 bytes")
        );
    }
}
