//! Serving: bind, announce, serve ContextService + health + reflection, drain on shutdown.
//!
//! Shutdown order (SIGTERM or Ctrl-C):
//! 1. health turns NOT_SERVING and every Watch stream ends with `UNAVAILABLE` (clients resume
//!    from their last sequence elsewhere or after restart); append streams stop reading,
//!    answer the appends already taken, then end with `UNAVAILABLE`; a cluster member leaves
//!    the cluster and waits for its tasks;
//! 2. the gRPC server stops accepting connections and waits (up to `shutdown_grace_ms`) for
//!    in-flight requests, so started appends finish and are answered;
//! 3. the ledger drains its write queue, syncs and closes RocksDB.
//!
//! SIGHUP reloads the TLS certificates and the auth file ([`Security::reload`]): new
//! connections use them; established connections and their streams carry on.

use crate::admin::observer::Observer;
use crate::auth::layer::AuthLayer;
use crate::config::cluster::{ClusterConfig, is_clustered};
use crate::config::schema::Config;
use crate::conn::FdBudget;
use crate::grpc::cluster_service::ClusterApi;
use crate::grpc::context_service::ContextApi;
use crate::grpc::integrity_service::IntegrityApi;
use crate::grpc::pipeline_service::PipelineApi;
use crate::grpc::snapshot_service::SnapshotApi;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::middleware::node_id::NodeIdLayer;
use crate::middleware::requests::RequestLayer;
use crate::route::router::Router;
use crate::security::Security;
use crate::signer::Signer;
use crate::stream_limits::StreamLimits;
use ledger_cluster::{Cluster, ClusterMetrics, PeerTlsSource, membership};
use ledger_discovery::GossipDiscovery;
use ledger_embedded::{CloseOutcome, Ledger};
use ledger_proto::cluster::v1::cluster_service_server::ClusterServiceServer;
use ledger_proto::framed::context_service_server::ContextServiceServer;
use ledger_proto::ledger::v1::append_pipeline_server::AppendPipelineServer;
use ledger_proto::ledger::v1::integrity_service_server::IntegrityServiceServer;
use ledger_proto::ledger::v1::snapshot_service_server::SnapshotServiceServer;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;

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
    opened: &Opened,
) -> String {
    let (signer, identity) = (&opened.signer, &opened.identity);
    serde_json::json!({
        "cluster": opened.cluster.as_ref().map(|c| serde_json::json!({
            "advertise_addr": c.settings.advertise_addr,
            "gossip_addr": opened.gossip_addr.map(|a| a.to_string()),
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
    /// Where peers reach this member's gossip layer.
    pub gossip_addr: Option<SocketAddr>,
}

/// Joins the cluster when `seeds` or `gossip_addr` is set (a no-op otherwise), with the
/// gRPC address actually bound: starts gossip (announcing the node's signing key), then the
/// cluster runtime on it.
pub async fn start_cluster(
    config: &Config,
    opened: &mut Opened,
    bound: SocketAddr,
) -> Result<(), String> {
    if !is_clustered(config) {
        return Ok(());
    }
    let plan = ClusterConfig::from_config(config, bound)?;
    let identity = &opened.identity;
    let gossip = plan.gossip(
        &identity.node_id,
        &identity.incarnation,
        opened.signer.public_key().as_bytes().to_vec(),
    );
    let discovery = GossipDiscovery::start(gossip).await.map_err(|e| {
        format!(
            "cannot start gossip on {} (setting gossip_addr): {e}",
            plan.gossip_bind
        )
    })?;
    let gossip_addr = discovery.advertise_addr();
    let peer_tls = opened
        .security
        .peer_tls
        .clone()
        .map(|t| t as Arc<dyn PeerTlsSource>);
    let cluster = Cluster::start(
        plan.runtime,
        membership::voter(&identity.node_id, &identity.incarnation),
        opened.ledger.clone(),
        Arc::new(discovery),
        Arc::clone(&opened.metrics) as Arc<dyn ClusterMetrics>,
        peer_tls,
    )
    .await?;
    opened.metrics.attach_cluster(Arc::clone(&cluster));
    opened.cluster = Some(cluster);
    opened.gossip_addr = Some(gossip_addr);
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
        gossip_addr: None,
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
        ..
    } = opened;
    let limits = StreamLimits::new(&config, Arc::clone(&metrics));
    let security = Arc::new(security);
    let hangups = tokio::spawn(reload_on_hangup(Arc::clone(&security), cluster.clone()));
    let stopping = Arc::new(AtomicBool::new(false));
    let (reporter, health, ready) = health(cluster.as_ref(), &stopping).await;
    let reflection = reflection()?;
    let route = config.route;
    let router = cluster.clone().map(|cluster| Router { cluster, route });
    let (stop_streams, streams_stopping) = watch::channel(false);
    let services = Services {
        ledger: &ledger,
        signer: &signer,
        router: &router,
        metrics: &metrics,
        limits: &limits,
        max_message_bytes: config.max_message_bytes,
    };
    let admin_task = admin.map(|l| {
        let observer = Observer {
            ledger: ledger.clone(),
            signer: Arc::clone(&signer),
            node_id: identity.node_id.clone(),
            cluster: cluster.clone(),
            policy: Arc::clone(&security.policy),
            limits: Arc::clone(&limits),
        };
        let admin =
            crate::admin::serve(l, Arc::clone(&metrics), observer, streams_stopping.clone());
        tokio::spawn(admin)
    });
    let draining = Arc::new(Notify::new());
    let signal = shutdown_sequence(
        shutdown,
        ShutdownParts {
            stopping,
            reporter,
            ledger: ledger.clone(),
            stop_streams,
            cluster: cluster.clone(),
            draining: Arc::clone(&draining),
        },
    );
    let requests = RequestLayer::new(Arc::clone(&metrics), config.max_concurrent_streams);
    let server = tonic::transport::Server::builder()
        .layer(NodeIdLayer::new(&identity.node_id)?)
        .layer(requests)
        .layer(AuthLayer::new(Arc::clone(&security.policy)))
        .http2_keepalive_interval(Some(Duration::from_millis(config.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(config.keepalive_timeout_ms)))
        // Twice the per-connection request limit: past the limit a client is answered
        // RESOURCE_EXHAUSTED (crate::middleware::requests) instead of being queued by its
        // HTTP/2 stack.
        .max_concurrent_streams(Some(config.max_concurrent_streams.saturating_mul(2)))
        .add_service(health)
        .add_service(reflection.0)
        .add_service(reflection.1)
        .add_service(services.context())
        .add_service(services.integrity())
        .add_service(services.pipeline(streams_stopping))
        .add_service(services.snapshots())
        .add_optional_service(cluster.clone().map(cluster_service))
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
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    tokio::select! {
        r = server => r.map_err(|e| format!("gRPC server failed: {e}"))?,
        () = async { draining.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = config.shutdown_grace_ms, "in-flight requests did not finish in time; closing anyway");
        }
    }
    stop_tasks([Some(hangups), admin_task, ready].into_iter().flatten());
    close(&ledger).await
}

/// The longest a cluster member waits for its first anti-entropy comparisons before it reports
/// SERVING anyway (a peer that never answers must not keep it out forever).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The health service and its reporter. A single node is SERVING at once; a cluster member is
/// NOT_SERVING until it has joined (done before serving) and compared its contexts with every
/// live peer once (anti-entropy), so that the contexts it writes have started catching up.
/// The task waiting for a cluster member to be ready is returned, to be stopped at shutdown.
async fn health(
    cluster: Option<&Arc<Cluster>>,
    stopping: &Arc<AtomicBool>,
) -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    Option<JoinHandle<()>>,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let ready = match cluster {
        None => {
            set_public_health(&reporter, true).await;
            None
        }
        Some(c) => {
            set_public_health(&reporter, false).await;
            let (c, reporter, stopping) = (Arc::clone(c), reporter.clone(), Arc::clone(stopping));
            Some(tokio::spawn(async move {
                c.wait_ready(READY_TIMEOUT).await;
                if !stopping.load(Ordering::Acquire) {
                    set_public_health(&reporter, true).await;
                    tracing::info!(
                        "serving: joined the cluster and compared contexts with every live peer"
                    );
                }
            }))
        }
    };
    (reporter, health, ready)
}

type Reflection<T> = tonic_reflection::server::v1::ServerReflectionServer<T>;
type ReflectionAlpha<T> = tonic_reflection::server::v1alpha::ServerReflectionServer<T>;

/// Server reflection (both versions) over the node's and health's file descriptors.
fn reflection() -> Result<
    (
        Reflection<impl tonic_reflection::server::v1::ServerReflection>,
        ReflectionAlpha<impl tonic_reflection::server::v1alpha::ServerReflection>,
    ),
    String,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ledger_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| format!("reflection: {e}"))?;
    Ok((v1, v1alpha))
}

/// What the public services are built from.
struct Services<'a> {
    ledger: &'a Ledger,
    signer: &'a Arc<Signer>,
    router: &'a Option<Router>,
    metrics: &'a Arc<Metrics>,
    limits: &'a Arc<StreamLimits>,
    max_message_bytes: usize,
}

impl Services<'_> {
    fn context(&self) -> ContextServiceServer<ContextApi> {
        ContextServiceServer::new(ContextApi::new(
            self.ledger.clone(),
            Arc::clone(self.signer),
            self.max_message_bytes,
            self.router.clone(),
            Arc::clone(self.metrics),
            Arc::clone(self.limits),
        ))
        .max_decoding_message_size(self.max_message_bytes)
        .max_encoding_message_size(self.max_message_bytes)
    }

    fn snapshots(&self) -> SnapshotServiceServer<SnapshotApi> {
        SnapshotServiceServer::new(SnapshotApi::new(
            self.ledger.clone(),
            self.router.clone(),
            Arc::clone(self.limits),
        ))
        .max_decoding_message_size(self.max_message_bytes)
        .max_encoding_message_size(self.max_message_bytes)
    }

    fn integrity(&self) -> IntegrityServiceServer<IntegrityApi> {
        IntegrityServiceServer::new(IntegrityApi::new(
            self.ledger.clone(),
            Arc::clone(self.signer),
            self.router.clone(),
            Arc::clone(self.metrics),
        ))
    }

    /// The AppendPipeline; its streams stop taking requests when `draining` turns true.
    fn pipeline(&self, draining: watch::Receiver<bool>) -> AppendPipelineServer<PipelineApi> {
        AppendPipelineServer::new(PipelineApi::new(
            self.ledger.clone(),
            draining,
            self.router.clone(),
            Arc::clone(self.metrics),
            Arc::clone(self.limits),
        ))
        .max_decoding_message_size(self.max_message_bytes)
        .max_encoding_message_size(self.max_message_bytes)
    }
}

/// The nodes' internal service of a cluster member.
fn cluster_service(cluster: Arc<Cluster>) -> ClusterServiceServer<ClusterApi> {
    ClusterServiceServer::new(ClusterApi::new(cluster))
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// What the shutdown sequence acts on.
struct ShutdownParts {
    stopping: Arc<AtomicBool>,
    reporter: HealthReporter,
    ledger: Ledger,
    stop_streams: watch::Sender<bool>,
    cluster: Option<Arc<Cluster>>,
    /// Notified when the server should stop waiting for in-flight requests soon.
    draining: Arc<Notify>,
}

/// Waits for `shutdown`, then step 1 of the module docs: NOT_SERVING, watch and append
/// streams end, the cluster member leaves and stops. Completing it stops the gRPC server.
async fn shutdown_sequence(shutdown: impl Future<Output = ()>, parts: ShutdownParts) {
    shutdown.await;
    tracing::info!("shutting down: ending watch streams, finishing in-flight requests");
    parts.stopping.store(true, Ordering::Release);
    set_public_health(&parts.reporter, false).await;
    parts.ledger.stop_watchers();
    let _ = parts.stop_streams.send(true);
    if let Some(c) = &parts.cluster {
        c.shutdown().await;
    }
    parts.draining.notify_one();
}

/// The server's own tasks, once the gRPC server has stopped: the SIGHUP listener, the admin
/// server, the wait for a cluster member to be ready.
fn stop_tasks(tasks: impl IntoIterator<Item = JoinHandle<()>>) {
    for t in tasks {
        t.abort();
    }
}

/// Closes the ledger (drains its queue, syncs, closes RocksDB) and says how it went.
async fn close(ledger: &Ledger) -> Result<(), String> {
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

/// Sets the health of the public services and of the whole server (`""`) together.
async fn set_public_health(reporter: &HealthReporter, serving: bool) {
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
