//! Serving: bind, announce, serve ContextService + health + reflection, drain on shutdown.
//!
//! Shutdown order (SIGTERM or Ctrl-C):
//! 1. health turns NOT_SERVING and every Watch stream ends with `UNAVAILABLE` (clients resume
//!    from their last sequence elsewhere or after restart); append streams stop reading,
//!    answer the appends already taken, then end with `UNAVAILABLE`;
//! 2. the gRPC server stops accepting connections and waits (up to `shutdown_grace_ms`) for
//!    in-flight requests, so started appends finish and are answered;
//! 3. the ledger drains its write queue, syncs and closes RocksDB.
//!
//! SIGHUP reloads the TLS certificates and the auth file ([`Security::reload`]): new
//! connections use them; established connections and their streams carry on.

use crate::auth::{AuthLayer, Policy};
use crate::cluster::Cluster;
use crate::cluster::service::ClusterApi;
use crate::config::Config;
use crate::conn::FdBudget;
use crate::identity::{Identity, NodeIdLayer};
use crate::integrity::IntegrityApi;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::pipeline::PipelineApi;
use crate::requests::RequestLayer;
use crate::service::ContextApi;
use crate::signer::Signer;
use crate::snapshots::SnapshotApi;
use crate::tls::{PeerTls, ServerTls};
use ledger_embedded::{CloseOutcome, Ledger};
use ledger_proto::cluster::v1::cluster_service_server::ClusterServiceServer;
use ledger_proto::framed::context_service_server::ContextServiceServer;
use ledger_proto::ledger::v1::append_pipeline_server::AppendPipelineServer;
use ledger_proto::ledger::v1::integrity_service_server::IntegrityServiceServer;
use ledger_proto::ledger::v1::snapshot_service_server::SnapshotServiceServer;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// Binds the configured address (port 0 picks a free port).
pub async fn bind(config: &Config) -> Result<TcpListener, String> {
    let addr = config.listen_addr();
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (setting host/port): {e}"))
}

/// The machine-readable line printed on stdout once the node accepts connections.
pub fn listening_line(
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    config: &Config,
    signer: &Signer,
    identity: &Identity,
    cluster: Option<&Cluster>,
) -> String {
    serde_json::json!({
        "cluster": cluster.map(|c| serde_json::json!({
            "advertise_addr": c.settings.advertise_addr,
            "gossip_addr": c.discovery().advertise_addr().to_string(),
            "replication_factor": c.settings.protocol.replication_factor,
        })),
        "event": "listening",
        "addr": addr.to_string(),
        "node_id": identity.node_id,
        "incarnation": identity.incarnation,
        "data_dir": config.data_dir.display().to_string(),
        "durability": format!("{:?}", config.durability).to_lowercase(),
        "ledger_name": signer.name(),
        "public_key": ledger_core::checkpoint::base64(signer.public_key().as_bytes()),
        "key_id": signer.key_id_hex(),
        "tls": config.tls_cert.is_some(),
        "mutual_tls": config.tls_client_ca.is_some(),
        "auth": config.auth_file.is_some(),
        "admin_addr": admin.map(|a| a.to_string()),
    })
    .to_string()
}

/// What a node serves with: the ledger, its signing key, its identity, its TLS and access
/// settings, and the cluster runtime when it is a cluster member.
#[derive(Debug)]
pub struct Opened {
    pub ledger: Ledger,
    pub signer: Arc<Signer>,
    pub identity: Identity,
    pub security: Security,
    pub metrics: Arc<Metrics>,
    pub cluster: Option<Arc<Cluster>>,
}

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
            Some(f) if crate::cluster::is_clustered(config) => Some(Arc::new(PeerTls::load(f)?)),
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
        if self.policy.auth_on()
            && crate::cluster::is_clustered(config)
            && config.tls_client_ca.is_none()
        {
            tracing::warn!(
                "auth is on but tls_client_ca is not set: the cluster's node-to-node service is not authenticated (set tls_cert, tls_key and tls_client_ca for mutual TLS between nodes)"
            );
        }
    }
}

/// Joins the cluster when `seeds` or `gossip_addr` is set (a no-op otherwise), with the
/// gRPC address actually bound.
pub async fn start_cluster(
    config: &Config,
    opened: &mut Opened,
    bound: SocketAddr,
) -> Result<(), String> {
    if !crate::cluster::is_clustered(config) {
        return Ok(());
    }
    let mut settings = crate::cluster::ClusterSettings::from_config(config, bound)?;
    settings.peer_tls = opened.security.peer_tls.clone();
    let cluster = Cluster::start(
        settings,
        &opened.identity,
        opened.signer.public_key().as_bytes().to_vec(),
        opened.ledger.clone(),
        Arc::clone(&opened.metrics),
    )
    .await?;
    opened.metrics.attach_cluster(Arc::clone(&cluster));
    opened.cluster = Some(cluster);
    Ok(())
}

/// Opens the ledger in the configured data dir and loads (or creates) the signing key and the
/// node identity. RocksDB keeps at most `fds.rocksdb_open_files` table files open.
pub fn open(config: &Config, fds: &FdBudget) -> Result<Opened, String> {
    let ledger_config = config.ledger_config(fds.rocksdb_open_files);
    let ledger = Ledger::open(&config.data_dir, ledger_config).map_err(|e| {
        format!(
            "cannot open the data dir {} (setting data_dir): {e}",
            config.data_dir.display()
        )
    })?;
    let signer = Arc::new(Signer::load_or_create(config)?);
    let identity = crate::identity::load_or_create(&config.data_dir, config.node_id.as_deref())?;
    let security = Security::load(config)?;
    let metrics = Metrics::new(ledger.clone());
    Ok(Opened {
        ledger,
        signer,
        identity,
        security,
        metrics,
        cluster: None,
    })
}

/// Serves `ledger` on `listener` until `shutdown` completes, then drains as described in the
/// module docs. Accepts at most `fds.max_connections` connections at once. An error when
/// storage failed at any point (the node then exits non-zero).
pub async fn serve(
    config: Config,
    opened: Opened,
    listener: TcpListener,
    admin: Option<TcpListener>,
    fds: FdBudget,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let Opened {
        ledger,
        signer,
        identity,
        security,
        metrics,
        cluster,
    } = opened;
    let limits = Limits::new(&config, Arc::clone(&metrics));
    let security = Arc::new(security);
    let hangups = tokio::spawn(reload_on_hangup(Arc::clone(&security), cluster.clone()));
    let (reporter, health) = tonic_health::server::health_reporter();
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    match &cluster {
        None => set_public_health(&reporter, true).await,
        Some(c) => {
            // A cluster member is NOT_SERVING until it has joined (done before serving) and
            // compared its contexts with every live peer once (anti-entropy), so that the
            // contexts it writes have started catching up.
            set_public_health(&reporter, false).await;
            let (c, reporter, stopping) = (Arc::clone(c), reporter.clone(), Arc::clone(&stopping));
            tokio::spawn(async move {
                c.wait_ready(READY_TIMEOUT).await;
                if !stopping.load(Ordering::Acquire) {
                    set_public_health(&reporter, true).await;
                    tracing::info!(
                        "serving: joined the cluster and compared contexts with every live peer"
                    );
                }
            });
        }
    }
    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(ledger_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| format!("reflection: {e}"))?;
    let api = ContextServiceServer::new(ContextApi::new(
        ledger.clone(),
        Arc::clone(&signer),
        config.max_message_bytes,
        cluster.clone(),
        Arc::clone(&metrics),
        Arc::clone(&limits),
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);
    let snapshots = SnapshotServiceServer::new(SnapshotApi::new(
        ledger.clone(),
        cluster.clone(),
        Arc::clone(&limits),
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);
    let integrity = IntegrityServiceServer::new(IntegrityApi::new(
        ledger.clone(),
        Arc::clone(&signer),
        cluster.clone(),
        Arc::clone(&metrics),
    ));
    let (stop_streams, streams_stopping) = watch::channel(false);
    let admin_task = admin.map(|l| {
        let observer = crate::admin::observer::Observer {
            ledger: ledger.clone(),
            signer: Arc::clone(&signer),
            node_id: identity.node_id.clone(),
            cluster: cluster.clone(),
            policy: Arc::clone(&security.policy),
            limits: Arc::clone(&limits),
        };
        tokio::spawn(crate::admin::serve(
            l,
            Arc::clone(&metrics),
            observer,
            streams_stopping.clone(),
        ))
    });
    let pipeline = AppendPipelineServer::new(PipelineApi::new(
        ledger.clone(),
        streams_stopping,
        cluster.clone(),
        Arc::clone(&metrics),
        Arc::clone(&limits),
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);

    let cluster_api = cluster.clone().map(|c| {
        ClusterServiceServer::new(ClusterApi::new(c))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    });
    let draining = Arc::new(Notify::new());
    let signal = {
        let (draining, ledger) = (Arc::clone(&draining), ledger.clone());
        let cluster_for_signal = cluster.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: ending watch streams, finishing in-flight requests");
            stopping.store(true, Ordering::Release);
            set_public_health(&reporter, false).await;
            ledger.stop_watchers();
            let _ = stop_streams.send(true);
            if let Some(c) = &cluster_for_signal {
                c.shutdown().await;
            }
            draining.notify_one();
        }
    };
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let server = tonic::transport::Server::builder()
        .layer(NodeIdLayer::new(&identity.node_id)?)
        .layer(RequestLayer::new(
            Arc::clone(&metrics),
            config.max_concurrent_streams,
        ))
        .layer(AuthLayer::new(Arc::clone(&security.policy)))
        .http2_keepalive_interval(Some(Duration::from_millis(config.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(config.keepalive_timeout_ms)))
        // Twice the per-connection request limit: past the limit a client is answered
        // RESOURCE_EXHAUSTED (crate::requests) instead of being queued by its HTTP/2 stack.
        .max_concurrent_streams(Some(config.max_concurrent_streams.saturating_mul(2)))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api)
        .add_service(integrity)
        .add_service(pipeline)
        .add_service(snapshots)
        .add_optional_service(cluster_api)
        .serve_with_incoming_shutdown(
            // Capped, with a handshake timeout; nodelay so replies never wait for Nagle's
            // algorithm and delayed ACKs (up to 40 ms).
            crate::conn::incoming(
                listener,
                usize::try_from(fds.max_connections).unwrap_or(usize::MAX),
                Duration::from_millis(config.handshake_timeout_ms),
                security.tls.clone(),
            ),
            signal,
        );
    tokio::select! {
        r = server => r.map_err(|e| format!("gRPC server failed: {e}"))?,
        () = async { draining.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = config.shutdown_grace_ms, "in-flight requests did not finish in time; closing anyway");
        }
    }
    hangups.abort();
    if let Some(t) = admin_task {
        t.abort();
    }
    let closed = ledger.close().await;
    let stats = ledger.stats();
    let (entries, commits, syncs) = (
        stats.entries.load(Ordering::Relaxed),
        stats.commits.load(Ordering::Relaxed),
        stats.syncs.load(Ordering::Relaxed),
    );
    match closed {
        CloseOutcome::Clean => {
            tracing::info!(entries, commits, syncs, "stopped; storage closed cleanly");
            Ok(())
        }
        CloseOutcome::StorageFailed(reason) => {
            tracing::error!(entries, commits, syncs, %reason, "stopped after a storage failure: appends acknowledged before it are durable, none after it was acknowledged");
            Err(format!(
                "storage failed ({reason}); appends acknowledged before the failure are durable, nothing after it was acknowledged; check the disk and data dir, then restart"
            ))
        }
    }
}

/// The longest a cluster member waits for its first anti-entropy comparisons before it reports
/// SERVING anyway (a peer that never answers must not keep it out forever).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Sets the health of the public services and of the whole server (`""`) together.
async fn set_public_health(reporter: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic::server::NamedService;
    use tonic_health::ServingStatus;
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in [
        "",
        <ContextServiceServer<ContextApi> as NamedService>::NAME,
        <IntegrityServiceServer<IntegrityApi> as NamedService>::NAME,
        <AppendPipelineServer<PipelineApi> as NamedService>::NAME,
        <SnapshotServiceServer<SnapshotApi> as NamedService>::NAME,
    ] {
        reporter.set_service_status(name, status).await;
    }
}

/// Reloads certificates and tokens on every SIGHUP, until aborted at shutdown.
async fn reload_on_hangup(security: Arc<Security>, cluster: Option<Arc<Cluster>>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!(
                "cannot listen for SIGHUP: certificates and tokens reload only on restart"
            );
            return;
        };
        while hup.recv().await.is_some() {
            security.reload(cluster.as_deref());
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (security, cluster);
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
