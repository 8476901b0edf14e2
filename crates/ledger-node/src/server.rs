//! Serving: bind, announce, serve ContextService + health + reflection, drain on shutdown.
//!
//! Shutdown order (SIGTERM or Ctrl-C):
//! 1. health turns NOT_SERVING and every Watch stream ends with `UNAVAILABLE` (clients resume
//!    from their last sequence elsewhere or after restart); append streams stop reading,
//!    answer the appends already taken, then end with `UNAVAILABLE`;
//! 2. the gRPC server stops accepting connections and waits (up to `shutdown_grace_ms`) for
//!    in-flight requests, so started appends finish and are answered;
//! 3. the ledger drains its write queue, syncs and closes RocksDB.

use crate::cluster::Cluster;
use crate::cluster::service::ClusterApi;
use crate::config::Config;
use crate::conn::FdBudget;
use crate::identity::{Identity, NodeIdLayer};
use crate::integrity::IntegrityApi;
use crate::pipeline::PipelineApi;
use crate::service::ContextApi;
use crate::signer::Signer;
use crate::snapshots::SnapshotApi;
use ledger_embedded::{CloseOutcome, Ledger};
use ledger_proto::cluster::v1::cluster_service_server::ClusterServiceServer;
use ledger_proto::context::v1::context_service_server::ContextServiceServer;
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
    })
    .to_string()
}

/// What a node serves with: the ledger, its signing key, its identity, and the cluster
/// runtime when it is a cluster member.
#[derive(Debug)]
pub struct Opened {
    pub ledger: Ledger,
    pub signer: Arc<Signer>,
    pub identity: Identity,
    pub cluster: Option<Arc<Cluster>>,
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
    let settings = crate::cluster::ClusterSettings::from_config(config, bound)?;
    let cluster = Cluster::start(
        settings,
        &opened.identity,
        opened.signer.public_key().as_bytes().to_vec(),
        opened.ledger.clone(),
    )
    .await?;
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
    Ok(Opened {
        ledger,
        signer,
        identity,
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
    fds: FdBudget,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let Opened {
        ledger,
        signer,
        identity,
        cluster,
    } = opened;
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
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);
    let snapshots = SnapshotServiceServer::new(SnapshotApi::new(ledger.clone(), cluster.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let integrity =
        IntegrityServiceServer::new(IntegrityApi::new(ledger.clone(), signer, cluster.clone()));
    let (stop_streams, streams_stopping) = watch::channel(false);
    let pipeline = AppendPipelineServer::new(PipelineApi::new(
        ledger.clone(),
        streams_stopping,
        cluster.clone(),
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
        .http2_keepalive_interval(Some(Duration::from_millis(config.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(config.keepalive_timeout_ms)))
        .max_concurrent_streams(Some(config.max_concurrent_streams))
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
            ),
            signal,
        );
    tokio::select! {
        r = server => r.map_err(|e| format!("gRPC server failed: {e}"))?,
        () = async { draining.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = config.shutdown_grace_ms, "in-flight requests did not finish in time; closing anyway");
        }
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
