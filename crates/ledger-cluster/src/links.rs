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
//! address ([`Links::channel`]). The streams themselves (dialing, accepting, reading) are in
//! [`crate::peer_streams`].

use ledger_proto::cluster::v1 as cpb;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Envelopes queued for one peer before new ones are dropped.
pub const QUEUE: usize = 4_096;
/// How long a dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where mutual TLS to peers comes from when TLS is on: the node's certificates, reloadable
/// (the server's certificate store implements it).
pub trait PeerTlsSource: Send + Sync + std::fmt::Debug {
    /// The client TLS configuration for a new peer connection (the certificates in force now).
    fn client_config(&self) -> ClientTlsConfig;
}

/// The links to every peer: stream queues, dialers, channels.
#[derive(Debug, Default)]
pub struct Links {
    /// Mutual TLS to peers, when TLS is on.
    tls: Option<Arc<dyn PeerTlsSource>>,
    /// Peer id → the queue of its current stream.
    queues: Mutex<HashMap<String, mpsc::Sender<cpb::Envelope>>>,
    /// Peer id → (address dialed, dialer task).
    pub(crate) dialers: Mutex<HashMap<String, (String, AbortHandle)>>,
    /// Address → channel, for forwarding and status calls.
    channels: Mutex<HashMap<String, Channel>>,
    dropped: AtomicU64,
}

impl Links {
    pub fn new(tls: Option<Arc<dyn PeerTlsSource>>) -> Self {
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

    pub(crate) fn register(&self, peer: &str, q: mpsc::Sender<cpb::Envelope>) {
        self.queues.lock().insert(peer.to_owned(), q);
    }

    /// Removes `peer`'s queue if it is still `q` (a newer stream may have replaced it).
    pub(crate) fn unregister(&self, peer: &str, q: &mpsc::Sender<cpb::Envelope>) {
        let mut queues = self.queues.lock();
        if queues.get(peer).is_some_and(|cur| cur.same_channel(q)) {
            queues.remove(peer);
        }
    }
}

impl Links {
    /// An endpoint for a peer: mutual TLS with this node's certificate when TLS is on.
    pub(crate) fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
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
