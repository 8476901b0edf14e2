//! Seeds: `host:port` strings whose host may be a DNS name resolving to several addresses
//! (a Kubernetes headless service returns one A/AAAA record per ready pod).

use std::net::SocketAddr;

use crate::error::DiscoveryError;

/// Splits a comma-separated seed list (the `seeds` setting), trimming blanks. An empty or
/// blank string gives no seeds: a one-node cluster.
pub fn parse_seed_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks that a seed is `host:port` with a non-empty host and a port in 1..=65535.
/// IPv6 literals are written `[::1]:7946`.
pub fn validate_seed(seed: &str) -> Result<(), DiscoveryError> {
    let bad = |reason: &str| DiscoveryError::InvalidSeed {
        seed: seed.to_owned(),
        reason: reason.to_owned(),
    };
    let (host, port) = seed
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    if host.is_empty() || host == "[]" {
        return Err(bad("empty host"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad("port must be 1..=65535")),
        Ok(_) => Ok(()),
    }
}

/// The outcome of resolving a seed list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedSeeds {
    /// Every address every seed resolved to, deduplicated, in seed order.
    pub addrs: Vec<SocketAddr>,
    /// Seeds that did not resolve, with the reason.
    pub failed: Vec<(String, String)>,
}

/// Resolves every seed to **all** its addresses with the system resolver (`getaddrinfo`, via
/// `tokio::net::lookup_host`), so a headless service name yields every pod.
pub async fn resolve_seeds(seeds: &[String]) -> ResolvedSeeds {
    let mut out = ResolvedSeeds::default();
    for seed in seeds {
        if let Err(e) = validate_seed(seed) {
            out.failed.push((seed.clone(), e.to_string()));
            continue;
        }
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(addrs) => {
                let mut any = false;
                for addr in addrs {
                    any = true;
                    if !out.addrs.contains(&addr) {
                        out.addrs.push(addr);
                    }
                }
                if !any {
                    out.failed
                        .push((seed.clone(), "resolved to no address".to_owned()));
                }
            }
            Err(e) => out.failed.push((seed.clone(), e.to_string())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_lists_split_on_commas_and_drop_blanks() {
        assert!(parse_seed_list("").is_empty());
        assert!(parse_seed_list(" , ").is_empty());
        assert_eq!(
            parse_seed_list("a:7946, 127.0.0.2:7946 ,,ledger.default.svc:7946"),
            ["a:7946", "127.0.0.2:7946", "ledger.default.svc:7946"]
        );
    }

    #[test]
    fn seeds_must_be_host_and_port() {
        assert!(validate_seed("ledger-headless.default.svc.cluster.local:7946").is_ok());
        assert!(validate_seed("127.0.0.1:7946").is_ok());
        assert!(validate_seed("[::1]:7946").is_ok());
        for bad in ["ledger", ":7946", "host:", "host:0", "host:70000", "[]:1"] {
            assert!(validate_seed(bad).is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn literal_seeds_resolve_and_bad_ones_are_reported() {
        let seeds = vec![
            "127.0.0.2:7946".to_owned(),
            "127.0.0.2:7946".to_owned(),
            "127.0.0.3:7000".to_owned(),
            "no-port".to_owned(),
        ];
        let out = resolve_seeds(&seeds).await;
        assert_eq!(
            out.addrs,
            vec![
                "127.0.0.2:7946".parse::<SocketAddr>().unwrap(),
                "127.0.0.3:7000".parse().unwrap()
            ]
        );
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].0, "no-port");
    }

    #[tokio::test]
    async fn a_name_resolves_to_all_of_its_addresses() {
        // `localhost` is the one name every machine resolves without a network; the system
        // resolver may return 127.0.0.1 and ::1, and every one of them must be kept.
        let out = resolve_seeds(&["localhost:7946".to_owned()]).await;
        assert!(out.failed.is_empty(), "{:?}", out.failed);
        assert!(!out.addrs.is_empty());
        assert!(
            out.addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7946)
        );
        let direct: Vec<SocketAddr> = tokio::net::lookup_host("localhost:7946")
            .await
            .unwrap()
            .collect();
        for addr in direct {
            assert!(out.addrs.contains(&addr), "{addr} dropped");
        }
    }
}
