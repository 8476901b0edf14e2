//! A client that talks to a cluster the way the engine should: it computes each context's
//! writer with the same placement function the nodes use and sends appends straight there (no
//! forwarding hop), following redirects and refreshing its view of the membership when the
//! view is stale.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ledger_client::ClientError> {
//! use ledger_client::cluster::ClusterClient;
//! let cluster = ClusterClient::connect(&["http://10.0.0.5:50051"]).await?;
//! let e = cluster.append("ctx-1", "facts", b"{}".to_vec(), Default::default()).await?;
//! let page = cluster.reader("ctx-1").await?.get("ctx-1", "", 0, 0).await?;
//! # Ok(()) }
//! ```

use crate::{ClientError, ConnectOptions, LedgerClient};
use ledger_core::{Entry, Metadata, NewEntry};
use ledger_proto::cluster::v1 as cpb;
use ledger_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use ledger_replication::{Member, MemberState, Role, placement_writer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Redirects followed (with a refreshed view) before an append gives up.
const MAX_REDIRECTS: usize = 4;
/// A view older than this is refreshed before routing.
const VIEW_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct View {
    members: Vec<Member>,
    addrs: HashMap<String, String>,
    replication_factor: usize,
    fetched: Option<Instant>,
}

/// A cluster-aware client: appends go to each context's writer.
#[derive(Clone, Debug)]
pub struct ClusterClient {
    seeds: Vec<String>,
    options: ConnectOptions,
    view: Arc<RwLock<View>>,
    clients: Arc<Mutex<HashMap<String, LedgerClient>>>,
}

impl ClusterClient {
    /// Connects through any of `seeds` (node gRPC addresses) and reads the membership.
    pub async fn connect(seeds: &[&str]) -> Result<Self, ClientError> {
        Self::connect_with(seeds, &ConnectOptions::default()).await
    }

    /// Connects through any of `seeds` with TLS and a token as `options` say. The token needs
    /// no particular role to read the membership (any valid token does).
    pub async fn connect_with(
        seeds: &[&str],
        options: &ConnectOptions,
    ) -> Result<Self, ClientError> {
        let c = ClusterClient {
            options: options.clone(),
            seeds: seeds.iter().map(|s| options.url(s)).collect(),
            view: Arc::default(),
            clients: Arc::default(),
        };
        c.refresh().await?;
        Ok(c)
    }

    /// Re-reads the membership from the first node that answers (known members first).
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let mut candidates: Vec<String> = {
            let v = self.view.read().expect("view lock");
            v.addrs.values().map(|a| self.options.url(a)).collect()
        };
        candidates.extend(self.seeds.iter().cloned());
        let mut last = None;
        for addr in candidates {
            match Self::fetch(&addr, &self.options).await {
                Ok(v) => {
                    *self.view.write().expect("view lock") = v;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::InvalidResponse("no seed address given".into())))
    }

    async fn fetch(addr: &str, options: &ConnectOptions) -> Result<View, ClientError> {
        let channel = options
            .endpoint(addr)?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        let json = ClusterServiceClient::with_interceptor(channel, options.auth()?)
            .status(cpb::StatusRequest {
                members_only: true,
                ..Default::default()
            })
            .await?
            .into_inner()
            .json;
        let doc: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| ClientError::InvalidResponse(format!("cluster status: {e}")))?;
        let mut view = View {
            replication_factor: doc["replication_factor"].as_u64().unwrap_or(3) as usize,
            fetched: Some(Instant::now()),
            ..View::default()
        };
        for m in doc["members"].as_array().into_iter().flatten() {
            let (Some(id), Some(addr)) = (m["id"].as_str(), m["addr"].as_str()) else {
                continue;
            };
            let state = match m["state"].as_str() {
                Some("alive") => MemberState::Alive,
                Some("suspect") => MemberState::Suspect,
                // A node that left or died keeps its place in replica sets (see the node).
                _ => MemberState::Dead,
            };
            let role = match m["role"].as_str() {
                Some("mirror") => Role::Mirror,
                _ => Role::Member,
            };
            view.members.push(Member::new(id, 0, role, state));
            view.addrs.insert(id.to_owned(), addr.to_owned());
        }
        Ok(view)
    }

    /// Members in this client's view (dead ones included).
    pub fn member_count(&self) -> usize {
        self.view.read().expect("view lock").members.len()
    }

    /// The gRPC address of the node that writes `context_id`, as this client sees it.
    pub fn writer_addr(&self, context_id: &str) -> Option<String> {
        let v = self.view.read().expect("view lock");
        let id = placement_writer(context_id, &v.members, v.replication_factor.max(1))?;
        v.addrs.get(id.as_str()).cloned()
    }

    async fn client(&self, addr: &str) -> Result<LedgerClient, ClientError> {
        if let Some(c) = self.clients.lock().expect("clients lock").get(addr) {
            return Ok(c.clone());
        }
        let c = LedgerClient::connect_with(addr, &self.options).await?;
        self.clients
            .lock()
            .expect("clients lock")
            .insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    /// A client of the writer of `context_id` (for reads that must see every acknowledged
    /// append at once; replicas serve reads too).
    pub async fn reader(&self, context_id: &str) -> Result<LedgerClient, ClientError> {
        self.route(context_id).await
    }

    async fn route(&self, context_id: &str) -> Result<LedgerClient, ClientError> {
        let addr = self.route_addr(context_id).await?;
        self.client(&addr).await
    }

    /// The address appends to `context_id` go to (refreshing a stale view first).
    async fn route_addr(&self, context_id: &str) -> Result<String, ClientError> {
        let stale = self
            .view
            .read()
            .expect("view lock")
            .fetched
            .is_none_or(|t| t.elapsed() > VIEW_TTL);
        if stale {
            // A failed refresh keeps the old view: routing still works, a redirect corrects it.
            let _ = self.refresh().await;
        }
        match self.writer_addr(context_id) {
            Some(a) => Ok(a),
            None => self
                .seeds
                .first()
                .cloned()
                .ok_or_else(|| ClientError::InvalidResponse("no seed address given".into())),
        }
    }

    /// Pipelined appends through each context's writer (one `AppendPipeline` stream per
    /// writer node, shared by every clone): for many tasks appending at once.
    pub fn pipeline(&self) -> ClusterPipeline {
        ClusterPipeline {
            cluster: self.clone(),
            pipes: Arc::default(),
        }
    }

    /// Appends one entry through the context's writer.
    pub async fn append(
        &self,
        context_id: &str,
        key: &str,
        payload: Vec<u8>,
        metadata: Metadata,
    ) -> Result<Entry, ClientError> {
        self.append_entry(NewEntry::new(context_id, key, payload, metadata, None))
            .await
    }

    /// Appends `entry` through its context's writer; a node that redirects (its view differs)
    /// names the writer in `x-ledger-writer`, which is followed after refreshing the view.
    pub async fn append_entry(&self, entry: NewEntry) -> Result<Entry, ClientError> {
        let context_id = entry.context_id.clone();
        self.through_writer(&context_id, |c| {
            let entry = entry.clone();
            async move { c.append_entry(entry).await }
        })
        .await
    }

    /// Appends `items` to `context_id` as one batch (all or nothing, consecutive sequences)
    /// through the context's writer, following redirects like [`Self::append_entry`].
    pub async fn append_batch(
        &self,
        context_id: &str,
        items: Vec<NewEntry>,
    ) -> Result<Vec<Entry>, ClientError> {
        self.through_writer(context_id, |c| {
            let items = items.clone();
            async move { c.append_batch(context_id, items).await }
        })
        .await
    }

    /// Runs `op` against the context's writer; a `FAILED_PRECONDITION` naming another writer
    /// (`x-ledger-writer`: nothing was stored) refreshes the view and runs it there.
    async fn through_writer<T, F, Fut>(&self, context_id: &str, op: F) -> Result<T, ClientError>
    where
        F: Fn(LedgerClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut client = self.route(context_id).await?;
        for _ in 0..MAX_REDIRECTS {
            match op(client.clone()).await {
                Err(ClientError::Status(s)) if s.code() == tonic::Code::FailedPrecondition => {
                    let Some(writer) = s
                        .metadata()
                        .get("x-ledger-writer")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                    else {
                        return Err(ClientError::Status(s));
                    };
                    let _ = self.refresh().await;
                    client = self.client(&writer).await?;
                }
                other => return other,
            }
        }
        Err(ClientError::InvalidResponse(format!(
            "context {context_id:?}: still redirected after {MAX_REDIRECTS} tries"
        )))
    }
}

/// Pipelined appends to a cluster (from [`ClusterClient::pipeline`]): each append goes on the
/// stream to its context's writer, so appends of one context from one task keep their order.
/// A node that redirects (a stale view, `route = redirect`) stored nothing: the append is then
/// made with [`ClusterClient::append_entry`], which follows the redirect.
#[derive(Clone, Debug)]
pub struct ClusterPipeline {
    cluster: ClusterClient,
    pipes: Arc<Mutex<HashMap<String, crate::AppendPipeline>>>,
}

impl ClusterPipeline {
    /// Appends `entry` through its context's writer and returns it as stored.
    pub async fn append_entry(&self, entry: NewEntry) -> Result<Entry, ClientError> {
        let pipe = self.pipe_for(&entry.context_id).await?;
        match pipe.append_entry(entry.clone()).await {
            Err(ClientError::Status(s)) if s.code() == tonic::Code::FailedPrecondition => {
                self.cluster.append_entry(entry).await
            }
            other => other,
        }
    }

    /// Appends `items` to `context_id` as one batch on the stream to the context's writer.
    pub async fn append_batch(
        &self,
        context_id: &str,
        items: Vec<NewEntry>,
    ) -> Result<Vec<Entry>, ClientError> {
        let pipe = self.pipe_for(context_id).await?;
        match pipe.append_batch(context_id, items.clone()).await {
            Err(ClientError::Status(s)) if s.code() == tonic::Code::FailedPrecondition => {
                self.cluster.append_batch(context_id, items).await
            }
            other => other,
        }
    }

    /// The stream to the writer of `context_id` (opened on first use, shared afterwards).
    async fn pipe_for(&self, context_id: &str) -> Result<crate::AppendPipeline, ClientError> {
        let addr = self.cluster.route_addr(context_id).await?;
        let existing = self.pipes.lock().expect("pipes lock").get(&addr).cloned();
        Ok(match existing {
            Some(p) => p,
            None => {
                let p = self.cluster.client(&addr).await?.pipeline();
                self.pipes
                    .lock()
                    .expect("pipes lock")
                    .entry(addr)
                    .or_insert(p)
                    .clone()
            }
        })
    }
}
