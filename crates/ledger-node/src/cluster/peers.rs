//! Peer links: one bidirectional `Replicate` stream per pair of nodes.
//!
//! The node with the lower id dials (a task per peer, reconnecting with backoff); the other
//! side answers on the same stream's response direction. Each side's first envelope is a hello
//! naming it. Envelopes to a peer go through one bounded queue per peer ([`QUEUE`]); when it
//! is full (a slow or unreachable peer) new envelopes are dropped and counted, never
//! buffered without bound — the protocol resends what matters (batches after
//! `retransmit_ms`, cursors on poll, heartbeats), so a slow follower slows only itself.
//!
//! Connections for forwarding and status calls share one lazily connected channel per
//! address ([`Links::channel`]).

use super::Cluster;
use super::members::View;
use super::wire::{self, Inbound};
use futures::StreamExt;
use ledger_proto::cluster::v1 as cpb;
use ledger_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// The envelopes a node sends on a stream a peer opened.
pub type Outbound =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<cpb::Envelope, Status>> + Send>>;

/// Envelopes queued for one peer before new ones are dropped.
pub const QUEUE: usize = 4_096;
/// How long a dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Links {
    /// Mutual TLS to peers, when TLS is on.
    tls: Option<Arc<crate::tls::PeerTls>>,
    /// Peer id → the queue of its current stream.
    queues: Mutex<HashMap<String, mpsc::Sender<cpb::Envelope>>>,
    /// Peer id → (address dialed, dialer task).
    dialers: Mutex<HashMap<String, (String, JoinHandle<()>)>>,
    /// Address → channel, for forwarding and status calls.
    channels: Mutex<HashMap<String, Channel>>,
    dropped: AtomicU64,
}

impl Links {
    pub fn new(tls: Option<Arc<crate::tls::PeerTls>>) -> Self {
        Links {
            tls,
            ..Links::default()
        }
    }

    /// Forgets cached channels so new ones use reloaded certificates (open streams carry on).
    pub fn tls_reloaded(&self) {
        self.channels.lock().clear();
    }

    pub fn send(&self, to: &str, env: cpb::Envelope) {
        let q = self.queues.lock().get(to).cloned();
        match q {
            Some(q) if q.try_send(env).is_ok() => {}
            _ => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Envelopes dropped because a peer's queue was full or its link down.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn clear(&self) {
        self.queues.lock().clear();
        for (_, (_, t)) in self.dialers.lock().drain() {
            t.abort();
        }
    }

    /// A channel to `addr` (connected on first use, reconnecting as needed).
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = self.endpoint(addr)?.connect_lazy();
        channels.insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    fn register(&self, peer: &str, q: mpsc::Sender<cpb::Envelope>) {
        self.queues.lock().insert(peer.to_owned(), q);
    }

    /// Removes `peer`'s queue if it is still `q` (a newer stream may have replaced it).
    fn unregister(&self, peer: &str, q: &mpsc::Sender<cpb::Envelope>) {
        let mut queues = self.queues.lock();
        if queues.get(peer).is_some_and(|cur| cur.same_channel(q)) {
            queues.remove(peer);
        }
    }
}

impl Links {
    /// An endpoint for a peer: mutual TLS with this node's certificate when TLS is on.
    fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut e = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(tls) = &self.tls {
            e = e
                .tls_config(tls.client_config())
                .map_err(|e| format!("TLS to peer {addr}: {e}"))?;
        }
        Ok(e)
    }
}

impl Cluster {
    /// Starts a dialer for every peer with a higher id (and restarts it when the peer's address
    /// changed); stops dialers of peers no longer in the view.
    pub(crate) fn ensure_dialers(self: &Arc<Self>, view: &View) {
        let me = self.me.node.as_str();
        let mut dialers = self.links.dialers.lock();
        dialers.retain(|id, (addr, task)| {
            let keep = view.addr_of(id) == Some(addr.as_str());
            if !keep {
                task.abort();
            }
            keep
        });
        for (id, peer) in view.peers.iter() {
            if id.as_str() <= me || dialers.contains_key(id) {
                continue;
            }
            let task = tokio::spawn(Arc::clone(self).dial(id.clone(), peer.addr.clone()));
            dialers.insert(id.clone(), (peer.addr.clone(), task));
        }
    }

    /// Keeps a stream open to `peer` at `addr`, reconnecting with backoff.
    async fn dial(self: Arc<Self>, peer: String, addr: String) {
        let mut backoff = Duration::from_millis(50);
        let mut stop = self.stop_signal();
        loop {
            let started = std::time::Instant::now();
            match self.connect_once(&peer, &addr).await {
                Ok(()) => tracing::debug!(%peer, %addr, "replication stream closed"),
                Err(e) => tracing::debug!(%peer, %addr, error = %e, "replication stream failed"),
            }
            if started.elapsed() > Duration::from_secs(5) {
                backoff = Duration::from_millis(50);
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    async fn connect_once(self: &Arc<Self>, peer: &str, addr: &str) -> Result<(), String> {
        let channel = self
            .links
            .endpoint(addr)?
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tx.try_send(wire::hello(&self.me))
            .map_err(|e| e.to_string())?;
        let mut client = ClusterServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let responses = client
            .replicate(Request::new(ReceiverStream::new(rx)))
            .await
            .map_err(|e| format!("open: {e}"))?
            .into_inner();
        self.links.register(peer, tx.clone());
        tracing::debug!(%peer, %addr, "replication stream open");
        let r = self.read_stream(Some(peer), responses).await;
        self.links.unregister(peer, &tx);
        r
    }

    /// Reads envelopes until the stream ends, handing each to its context's task. Checks the
    /// peer's hello names `expected` when given.
    async fn read_stream(
        self: &Arc<Self>,
        expected: Option<&str>,
        mut stream: Streaming<cpb::Envelope>,
    ) -> Result<(), String> {
        let mut stop = self.stop_signal();
        loop {
            let env = tokio::select! {
                m = stream.message() => m.map_err(|e| e.to_string())?,
                _ = stop.changed() => return Ok(()),
            };
            let Some(env) = env else { return Ok(()) };
            match wire::decode(env)? {
                Inbound::Hello { from } => {
                    if let Some(x) = expected
                        && from.node.as_str() != x
                    {
                        return Err(format!("dialed {x} but {} answered", from.node));
                    }
                }
                Inbound::Message {
                    context_id,
                    from,
                    message,
                    keys,
                } => self.deliver(context_id, from, message, keys).await,
            }
        }
    }

    /// Serves a stream a peer (with a lower id) opened: its first envelope names it; our
    /// envelopes to it go out on the response side.
    pub(crate) async fn accept(
        self: &Arc<Self>,
        mut inbound: Streaming<cpb::Envelope>,
    ) -> Result<Response<Outbound>, Status> {
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("a replication stream must start with a hello")
        })?;
        let from = match wire::decode(first).map_err(Status::invalid_argument)? {
            Inbound::Hello { from } => from,
            Inbound::Message { .. } => {
                return Err(Status::invalid_argument(
                    "a replication stream must start with a hello",
                ));
            }
        };
        let peer = from.node.to_string();
        let (tx, rx) = mpsc::channel::<cpb::Envelope>(QUEUE);
        let _ = tx.try_send(wire::hello(&self.me));
        self.links.register(&peer, tx.clone());
        tracing::debug!(%peer, "replication stream accepted");
        let me = Arc::clone(self);
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            if let Err(e) = me.read_stream(None, inbound).await {
                tracing::debug!(%peer, error = %e, "accepted replication stream failed");
            }
            me.links.unregister(&peer, &tx);
            let _ = closed_tx.send(());
        });
        // Our side: the peer's queue is the response stream (tonic encodes every envelope
        // ready at once into one write); it ends when the inbound side does.
        let out = ReceiverStream::new(rx).map(Ok).take_until(closed_rx);
        Ok(Response::new(Box::pin(out)))
    }
}
