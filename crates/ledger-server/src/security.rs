//! [`Security`]: the node's TLS and access settings, loaded at start and reloaded on SIGHUP
//! (new connections use them; established connections and their streams carry on).

use crate::auth::policy::Policy;
use crate::config::cluster::is_clustered;
use crate::config::schema::Config;
use crate::tls::{PeerTls, ServerTls};
use ledger_cluster::Cluster;
use std::sync::Arc;

/// The node's TLS and access settings: loaded at start, reloaded on SIGHUP.
#[derive(Debug)]
pub struct Security {
    pub policy: Arc<Policy>,
    /// TLS on the public port.
    pub tls: Option<Arc<ServerTls>>,
    /// Mutual TLS to peers (a cluster member with TLS).
    pub peer_tls: Option<Arc<PeerTls>>,
}

impl Security {
    /// Reads the certificates and the auth file the configuration names.
    pub fn load(config: &Config) -> Result<Security, String> {
        let files = config.tls_files();
        let tls = files
            .clone()
            .map(ServerTls::load)
            .transpose()?
            .map(Arc::new);
        let peer_tls = match files {
            Some(f) if is_clustered(config) => Some(Arc::new(PeerTls::load(f)?)),
            _ => None,
        };
        let policy = Arc::new(Policy::load(
            config.auth_file.as_deref(),
            config.tls_client_ca.is_some(),
        )?);
        Ok(Security {
            policy,
            tls,
            peer_tls,
        })
    }

    /// Reads certificates and tokens again; what fails to load is reported and the settings
    /// in force stay.
    pub fn reload(&self, cluster: Option<&Cluster>) {
        if let Some(t) = &self.tls {
            match t.reload() {
                Ok(()) => {
                    tracing::info!("SIGHUP: TLS certificates reloaded; new connections use them")
                }
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: TLS certificates not reloaded; the previous ones stay in use")
                }
            }
        }
        if let Some(p) = &self.peer_tls {
            match p.reload() {
                Ok(()) => {
                    if let Some(c) = cluster {
                        c.tls_reloaded();
                    }
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: peer TLS not reloaded"),
            }
        }
        if self.policy.auth_on() {
            match self.policy.reload() {
                Ok(n) => tracing::info!(tokens = n, "SIGHUP: auth file reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: auth file not reloaded; the previous tokens stay in force")
                }
            }
        }
    }

    /// Warnings about an exposed node, logged at start.
    pub fn warn_if_exposed(&self, config: &Config) {
        let beyond_loopback = !config.host.is_loopback();
        if beyond_loopback && !self.policy.auth_on() {
            tracing::warn!(host = %config.host, "listening beyond loopback without auth: anyone who can reach this port can read and append to every context (set auth_file, see docs/OPERATIONS.md \"Securing a node\")");
        }
        if beyond_loopback && self.policy.auth_on() && self.tls.is_none() {
            tracing::warn!(host = %config.host, "auth is on but TLS is off: tokens cross the network in clear text (set tls_cert and tls_key)");
        }
        if self.policy.auth_on() && is_clustered(config) && config.tls_client_ca.is_none() {
            tracing::warn!(
                "auth is on but tls_client_ca is not set: the cluster's node-to-node service is not authenticated (set tls_cert, tls_key and tls_client_ca for mutual TLS between nodes)"
            );
        }
    }
}
