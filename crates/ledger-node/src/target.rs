//! The node a CLI command talks to: its address and how to reach it (TLS, token). Shared by
//! every client command (`append`, `get`, `cluster status`, `verify entry`, …).

use ledger_client::{ClientError, ConnectOptions, LedgerClient, TlsOptions};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Node address
    #[arg(long, env = "LEDGER_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Bearer token (see `converge-ledger token new`)
    #[arg(long, env = "LEDGER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) that signed the node's certificate; turns TLS on
    #[arg(long, env = "LEDGER_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for nodes that require one (tls_client_ca)
    #[arg(long, env = "LEDGER_CERT")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with --cert. (In `get` and `watch`,
    /// `--key` without `--cert` is the entry-key filter, as before.)
    #[arg(long = "key", id = "tls_key", value_name = "KEY", env = "LEDGER_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// What a reading command (`get`, `watch`) reads: a node, a context, and the entry key to
/// keep (none: every entry).
#[derive(clap::Args, Debug, Clone)]
pub struct ContextRead {
    #[command(flatten)]
    pub target: Target,
    pub context: String,
    /// Only entries with this key (also `--key` when no --cert is given)
    #[arg(long = "entry-key")]
    pub key: Option<String>,
}

impl ContextRead {
    /// The target, the context and the entry-key filter ("": none), `--key` taken as the
    /// filter when no `--cert` is given ([`Target::take_key_filter`]).
    pub fn into_parts(self) -> (Target, String, String) {
        let ContextRead {
            mut target,
            context,
            key,
        } = self;
        let key = target.take_key_filter(key);
        (target, context, key)
    }
}

impl Target {
    /// A target at `addr` without TLS or token.
    pub fn plain(addr: &str) -> Target {
        Target {
            addr: addr.to_owned(),
            token: None,
            ca: None,
            cert: None,
            tls_key: None,
        }
    }

    /// For `get` and `watch`, whose `--key` has always been the entry-key filter: without
    /// `--cert`, a `--key` value is that filter (a TLS key needs its certificate anyway).
    /// Returns the filter: `--entry-key` if given, else that `--key`.
    pub fn take_key_filter(&mut self, entry_key: Option<String>) -> String {
        if self.cert.is_none()
            && let Some(k) = self.tls_key.take()
        {
            return entry_key.unwrap_or_else(|| k.to_string_lossy().into_owned());
        }
        entry_key.unwrap_or_default()
    }

    /// TLS and token as given.
    pub fn options(&self) -> Result<ConnectOptions, ClientError> {
        if self.tls_key.is_some() && self.cert.is_none() {
            return Err(ClientError::Options(
                "--key is the client certificate's key: give --cert with it".into(),
            ));
        }
        let tls = if self.ca.is_some() || self.cert.is_some() || self.addr.starts_with("https://") {
            Some(TlsOptions::from_files(
                self.ca.as_deref(),
                self.cert.as_deref(),
                self.tls_key.as_deref(),
            )?)
        } else {
            None
        };
        Ok(ConnectOptions {
            token: self.token.clone().filter(|t| !t.trim().is_empty()),
            tls,
        })
    }

    /// A connected client.
    pub async fn client(&self) -> Result<LedgerClient, ClientError> {
        LedgerClient::connect_with(&self.addr, &self.options()?).await
    }
}
