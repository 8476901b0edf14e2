//! How a client reaches a node: address, TLS and bearer token.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ledger_client::ClientError> {
//! use ledger_client::{ConnectOptions, LedgerClient, TlsOptions};
//! let options = ConnectOptions {
//!     token: Some("cl_…".into()),
//!     tls: Some(TlsOptions::from_files(Some("ca.pem".as_ref()), None, None)?),
//! };
//! let client = LedgerClient::connect_with("https://ledger.internal:50051", &options).await?;
//! # Ok(()) }
//! ```
//!
//! With TLS options a bare `host:port` or an `http://` address is dialled as `https://`. The
//! token goes with every call as `authorization: Bearer <token>`.

use crate::ClientError;
use std::path::Path;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The transport under every generated client of [`crate::LedgerClient`]: a channel whose
/// requests carry the token.
pub type Transport = InterceptedService<Channel, Auth>;

/// TLS settings of a client: the CA that signed the node's certificate, and a client
/// certificate and key for nodes that ask for one (`tls_client_ca`).
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM of the CA certificate(s) to trust.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of the client certificate (with `key_pem`).
    pub cert_pem: Option<Vec<u8>>,
    /// PEM of the client certificate's private key.
    pub key_pem: Option<Vec<u8>>,
    /// The name to expect in the node's certificate (default: the address's host).
    pub domain: Option<String>,
}

impl TlsOptions {
    /// Reads the PEM files (`--ca`, `--cert`, `--key`). A certificate needs its key and the
    /// other way round.
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<TlsOptions, ClientError> {
        if cert.is_some() != key.is_some() {
            return Err(ClientError::Options(
                "a client certificate needs its key and the other way round: give both --cert and --key".into(),
            ));
        }
        let read = |p: Option<&Path>, what: &str| -> Result<Option<Vec<u8>>, ClientError> {
            p.map(|p| {
                std::fs::read(p).map_err(|e| {
                    ClientError::Options(format!("cannot read the {what} {}: {e}", p.display()))
                })
            })
            .transpose()
        };
        Ok(TlsOptions {
            ca_pem: read(ca, "CA certificate")?,
            cert_pem: read(cert, "client certificate")?,
            key_pem: read(key, "client key")?,
            domain: None,
        })
    }

    fn config(&self) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new();
        if let Some(ca) = &self.ca_pem {
            c = c.ca_certificate(Certificate::from_pem(ca));
        }
        if let (Some(cert), Some(key)) = (&self.cert_pem, &self.key_pem) {
            c = c.identity(Identity::from_pem(cert, key));
        }
        if let Some(d) = &self.domain {
            c = c.domain_name(d.clone());
        }
        c
    }
}

/// Everything a client needs besides the address.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Bearer token (`converge-ledger token new`).
    pub token: Option<String>,
    /// TLS; `None` dials plain HTTP/2.
    pub tls: Option<TlsOptions>,
}

impl ConnectOptions {
    /// The URL to dial: `https://` with TLS, `http://` without (a bare `host:port` gets the
    /// scheme).
    pub fn url(&self, addr: &str) -> String {
        let rest = addr
            .strip_prefix("http://")
            .or_else(|| addr.strip_prefix("https://"));
        match (rest, self.tls.is_some()) {
            (Some(r), true) => format!("https://{r}"),
            (None, true) => format!("https://{addr}"),
            (Some(_), false) => addr.to_owned(),
            (None, false) => format!("http://{addr}"),
        }
    }

    /// An endpoint for `addr` with these TLS settings.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, ClientError> {
        let url = self.url(addr);
        let err = |source| ClientError::Connect {
            addr: url.clone(),
            source,
        };
        let mut e = Endpoint::from_shared(url.clone()).map_err(err)?;
        if url.starts_with("https://") {
            let tls = self.tls.clone().unwrap_or_default();
            if tls.ca_pem.is_none() {
                return Err(ClientError::Options(format!(
                    "{url} is TLS: give the CA that signed the node's certificate (--ca)"
                )));
            }
            e = e.tls_config(tls.config()).map_err(err)?;
        }
        Ok(e)
    }

    /// The interceptor that puts the token on every request.
    pub fn auth(&self) -> Result<Auth, ClientError> {
        match &self.token {
            None => Ok(Auth::default()),
            Some(t) => {
                let v =
                    AsciiMetadataValue::try_from(format!("Bearer {}", t.trim())).map_err(|_| {
                        ClientError::Options("the token must be printable ASCII text".into())
                    })?;
                Ok(Auth(Some(v)))
            }
        }
    }
}

/// Puts `authorization: Bearer <token>` on every request (nothing without a token).
#[derive(Clone, Debug, Default)]
pub struct Auth(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_switches_the_scheme() {
        let plain = ConnectOptions::default();
        assert_eq!(plain.url("127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(plain.url("http://h:1"), "http://h:1");
        let tls = ConnectOptions {
            tls: Some(TlsOptions::default()),
            ..Default::default()
        };
        assert_eq!(tls.url("127.0.0.1:1"), "https://127.0.0.1:1");
        assert_eq!(tls.url("http://h:1"), "https://h:1");
        assert!(matches!(
            tls.endpoint("h:1"),
            Err(ClientError::Options(m)) if m.contains("--ca")
        ));
        assert!(
            ConnectOptions {
                token: Some("bad\ntoken".into()),
                ..Default::default()
            }
            .auth()
            .is_err()
        );
    }
}
