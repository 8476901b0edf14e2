//! The `Replicate` streams between peers: dialers (one per peer with a higher id, reconnecting
//! with backoff), the accepting side of a stream a peer opened, and the reader that hands each
//! envelope to its context's task. Queues and channels are [`crate::links::Links`].

use crate::cluster::Cluster;
use crate::error::PeerRequestError;
use crate::links::QUEUE;
use crate::membership::View;
use crate::wire::{self, Inbound};
use futures::StreamExt;
use ledger_proto::cluster::v1 as cpb;
use ledger_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

/// The envelopes a node sends on a stream a peer opened.
pub type Outbound =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<cpb::Envelope, Status>> + Send>>;

/// Why an accepted stream is refused: its first envelope must name the peer.
const NO_HELLO: &str = "a replication stream must start with a hello";

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
            let task = self.spawn(Arc::clone(self).dial(id.clone(), peer.addr.clone()));
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
    pub async fn accept(
        self: &Arc<Self>,
        mut inbound: Streaming<cpb::Envelope>,
    ) -> Result<Outbound, PeerRequestError> {
        let no_hello = || PeerRequestError::Malformed(NO_HELLO.to_owned());
        let first = inbound
            .message()
            .await
            .map_err(PeerRequestError::Stream)?
            .ok_or_else(no_hello)?;
        let from = match wire::decode(first).map_err(PeerRequestError::Malformed)? {
            Inbound::Hello { from } => from,
            Inbound::Message { .. } => return Err(no_hello()),
        };
        let peer = from.node.to_string();
        let (tx, rx) = mpsc::channel::<cpb::Envelope>(QUEUE);
        let _ = tx.try_send(wire::hello(&self.me));
        self.links.register(&peer, tx.clone());
        tracing::debug!(%peer, "replication stream accepted");
        let me = Arc::clone(self);
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        self.spawn(async move {
            if let Err(e) = me.read_stream(None, inbound).await {
                tracing::debug!(%peer, error = %e, "accepted replication stream failed");
            }
            me.links.unregister(&peer, &tx);
            let _ = closed_tx.send(());
        });
        // Our side: the peer's queue is the response stream (tonic encodes every envelope
        // ready at once into one write); it ends when the inbound side does.
        let out = ReceiverStream::new(rx).map(Ok).take_until(closed_rx);
        Ok(Box::pin(out))
    }
}
