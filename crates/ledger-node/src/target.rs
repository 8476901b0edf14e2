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
    #[arg(long, env = "LEDGER_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(long, env = "LEDGER_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl Target {
    /// A target at `addr` without TLS or token.
    pub fn plain(addr: &str) -> Target {
        Target {
            addr: addr.to_owned(),
            token: None,
            ca: None,
            cert: None,
            key: None,
        }
    }

    /// TLS and token as given.
    pub fn options(&self) -> Result<ConnectOptions, ClientError> {
        let tls = if self.ca.is_some() || self.cert.is_some() || self.addr.starts_with("https://") {
            Some(TlsOptions::from_files(
                self.ca.as_deref(),
                self.cert.as_deref(),
                self.key.as_deref(),
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
