//! TLS on the public port and mutual TLS between nodes (rustls, ring).
//!
//! - [`ServerTls`]: the node's certificate and key (`tls_cert`, `tls_key`) and, with
//!   `tls_client_ca`, the CA every client and peer certificate must be signed by. The accept
//!   loop ([`crate::conn::incoming`]) takes the configuration in force for each new connection,
//!   so [`ServerTls::reload`] (SIGHUP) changes what new connections see while established
//!   connections and their streams carry on untouched.
//! - [`PeerIdentity`]: what a connection's certificate proves. A *node* certificate is one the
//!   CA signed for server use (extended key usage `serverAuth`, like every node's own
//!   certificate, which it also presents when it dials a peer); a client certificate
//!   (`clientAuth` only) is not one. Only nodes may call the cluster's node-to-node methods
//!   ([`crate::auth`]).
//! - [`PeerTls`]: how this node dials its peers: TLS with its own certificate as the client
//!   identity, trusting `tls_client_ca`. Read again on SIGHUP; new peer connections use it
//!   (the cluster runtime takes it as its [`ledger_cluster::PeerTlsSource`]).

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The files of the node's TLS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// What a connection's peer proved with its certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerIdentity {
    /// No certificate (plain TCP, or TLS without client certificates).
    #[default]
    Anonymous,
    /// A client certificate signed by `tls_client_ca`.
    Client,
    /// A node certificate signed by `tls_client_ca` (server use).
    Node,
}

fn read(path: &Path, setting: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path)
        .map_err(|e| format!("cannot read {} (setting {setting}): {e}", path.display()))
}

fn certs(pem: &[u8], path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "{} (setting {setting}) is not PEM certificates: {e:?}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{} (setting {setting}) holds no certificate",
            path.display()
        ));
    }
    Ok(certs)
}

fn private_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        format!(
            "{} (setting tls_key) holds no PEM private key: {e:?}",
            path.display()
        )
    })
}

/// rustls with *ring* (no C toolchain beyond what RocksDB needs, unlike aws-lc-rs). rustls
/// deprecates ring's provider only because it lacks post-quantum key exchange.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA's certificates as trust anchors.
fn anchors(
    ca: &[CertificateDer<'static>],
) -> Result<Vec<rustls::pki_types::TrustAnchor<'static>>, String> {
    ca.iter()
        .map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .map(|a| a.to_owned())
                .map_err(|e| format!("tls_client_ca: not a usable CA certificate: {e}"))
        })
        .collect()
}

/// One loaded configuration.
#[derive(Debug)]
struct Loaded {
    config: Arc<rustls::ServerConfig>,
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
}

fn load(files: &TlsFiles) -> Result<Loaded, String> {
    let chain = certs(&read(&files.cert, "tls_cert")?, &files.cert, "tls_cert")?;
    let key = private_key(&read(&files.key, "tls_key")?, &files.key)?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let (builder, anchors) = match &files.client_ca {
        None => (builder.with_no_client_auth(), Vec::new()),
        Some(path) => {
            let ca = certs(&read(path, "tls_client_ca")?, path, "tls_client_ca")?;
            let mut roots = rustls::RootCertStore::empty();
            for c in &ca {
                roots
                    .add(c.clone())
                    .map_err(|e| format!("{} (setting tls_client_ca): {e}", path.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| format!("{} (setting tls_client_ca): {e}", path.display()))?;
            (builder.with_client_cert_verifier(verifier), anchors(&ca)?)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "tls_cert {} and tls_key {} do not make a usable certificate: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        anchors,
    })
}

/// The public port's TLS configuration, reloadable.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
}

impl ServerTls {
    /// Reads and checks the files.
    pub fn load(files: TlsFiles) -> Result<ServerTls, String> {
        let loaded = load(&files)?;
        Ok(ServerTls {
            files,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Reads the files again; new connections use them. On error the configuration in force
    /// stays.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = load(&self.files)?;
        *self.current.write() = Arc::new(loaded);
        Ok(())
    }

    /// Whether clients and peers must present certificates.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The acceptor for a new connection: the configuration in force now.
    pub fn acceptor(&self) -> Acceptor {
        Acceptor {
            loaded: Arc::clone(&self.current.read()),
        }
    }
}

/// Accepts one connection with the configuration in force when it was made.
#[derive(Debug)]
pub struct Acceptor {
    loaded: Arc<Loaded>,
}

impl Acceptor {
    /// The TLS handshake, and what the peer's certificate proves.
    pub async fn accept<IO>(
        &self,
        io: IO,
    ) -> std::io::Result<(tokio_rustls::server::TlsStream<IO>, PeerIdentity)>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.loaded.config));
        let stream = acceptor.accept(io).await?;
        let peer = match stream.get_ref().1.peer_certificates() {
            Some(chain) => identify(&self.loaded.anchors, chain),
            None => PeerIdentity::Anonymous,
        };
        Ok((stream, peer))
    }
}

/// What a verified client chain proves: a node certificate is valid for server use under the
/// same CA.
fn identify(
    anchors: &[rustls::pki_types::TrustAnchor<'static>],
    chain: &[CertificateDer<'_>],
) -> PeerIdentity {
    let Some((ee, intermediates)) = chain.split_first() else {
        return PeerIdentity::Anonymous;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(ee) else {
        return PeerIdentity::Client;
    };
    let algs = provider().signature_verification_algorithms.all;
    let node = cert
        .verify_for_usage(
            algs,
            anchors,
            intermediates,
            UnixTime::now(),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .is_ok();
    if node {
        PeerIdentity::Node
    } else {
        PeerIdentity::Client
    }
}

/// PEMs this node dials its peers with.
#[derive(Clone, Debug)]
struct PeerPems {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// How this node dials its peers (mutual TLS), reloadable.
#[derive(Debug)]
pub struct PeerTls {
    files: TlsFiles,
    pems: RwLock<PeerPems>,
}

impl PeerTls {
    /// Needs `tls_client_ca`: peers are verified against it.
    pub fn load(files: TlsFiles) -> Result<PeerTls, String> {
        let pems = Self::read(&files)?;
        Ok(PeerTls {
            files,
            pems: RwLock::new(pems),
        })
    }

    fn read(files: &TlsFiles) -> Result<PeerPems, String> {
        let ca = files.client_ca.as_ref().ok_or(
            "a cluster with TLS needs tls_client_ca: nodes verify each other's certificates against it",
        )?;
        Ok(PeerPems {
            ca: read(ca, "tls_client_ca")?,
            cert: read(&files.cert, "tls_cert")?,
            key: read(&files.key, "tls_key")?,
        })
    }

    pub fn reload(&self) -> Result<(), String> {
        let pems = Self::read(&self.files)?;
        *self.pems.write() = pems;
        Ok(())
    }
}

/// The cluster runtime dials its peers with these certificates.
impl ledger_cluster::PeerTlsSource for PeerTls {
    /// The client TLS configuration for a new peer connection.
    fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        let p = self.pems.read().clone();
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(p.ca))
            .identity(tonic::transport::Identity::from_pem(p.cert, p.key))
    }
}
