//! The anti-entropy exchanges (see the module docs of [`crate::anti_entropy`]).

use crate::cluster::Cluster;
use crate::error::PeerRequestError;
use ledger_proto::cluster::v1 as cpb;
use ledger_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use ledger_replication::digest::{
    Digest, DigestItem, DigestMessage, DigestSession, DigestSettings,
};
use ledger_replication::placement::holds;
use ledger_replication::{NodeId, PersistentState};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Contexts listed per storage page while building a digest.
const PAGE: usize = 1_000;
/// The longest the first comparison waits for the contexts this node writes to catch up.
const FIRST_CATCH_UP: Duration = Duration::from_secs(30);
impl Cluster {
    /// Runs anti-entropy rounds until the cluster stops: first one comparison with every live
    /// peer (then the node is ready), then one round per interval with the peers in turn.
    pub(crate) async fn anti_entropy_loop(self: Arc<Self>) {
        let mut stop = self.stop_signal();
        if !self.first_comparisons(&mut stop).await {
            return;
        }
        self.ready.send_replace(true);
        let mut round = 0u64;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.settings.anti_entropy_interval) => {}
                _ = stop.changed() => return,
            }
            let peers = self.live_peers();
            if peers.is_empty() {
                continue;
            }
            round += 1;
            let peer = &peers[usize::try_from(round).unwrap_or(0) % peers.len()];
            match self.anti_entropy_round(peer).await {
                Ok(differ) if !differ.is_empty() => {
                    tracing::info!(%peer, contexts = differ.len(), "anti-entropy found contexts that differ; repairing");
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(%peer, error = %e, "anti-entropy round failed"),
            }
        }
    }

    /// One comparison with every live peer, right away; the contexts this node writes that
    /// differ are then caught up (their claim done: a claim catches up to the best history
    /// before it writes). The node reports SERVING after that (`Cluster::wait_ready`). False
    /// if the cluster stopped meanwhile.
    async fn first_comparisons(self: &Arc<Self>, stop: &mut watch::Receiver<bool>) -> bool {
        let mut mine = std::collections::BTreeSet::new();
        for peer in &self.live_peers() {
            match self.anti_entropy_round(peer).await {
                Ok(differ) => mine.extend(differ.into_iter().filter(|c| self.writes(c))),
                Err(e) => tracing::warn!(%peer, error = %e, "first anti-entropy comparison failed"),
            }
        }
        // Bounded: a context without a majority gets no writer, and must not keep the node
        // out of service (nor stop the periodic rounds) for long.
        let deadline = Instant::now() + FIRST_CATCH_UP;
        for ctx in &mine {
            while Instant::now() < deadline
                && self
                    .context_state(ctx)
                    .await
                    .is_some_and(|s| s.role != "writer")
                && self.writes(ctx)
            {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stop.changed() => return false,
                }
            }
        }
        true
    }

    /// The live peers of the current view (ids), this node left out.
    fn live_peers(&self) -> Vec<String> {
        self.view()
            .peers
            .values()
            .filter(|p| p.state.is_live() && p.id != self.me.node.as_str())
            .map(|p| p.id.clone())
            .collect()
    }

    /// The digest items of the contexts this node holds that `peer` should hold too (each in
    /// the context's replica set or a mirror of it).
    pub async fn digest_items(&self, peer: &str) -> Result<Vec<DigestItem>, String> {
        let view = self.view();
        let r = self.settings.protocol.replication_factor;
        let me = self.me.node.clone();
        let peer = NodeId::new(peer.to_owned());
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .ledger
                .list_contexts(after.as_deref(), PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for ctx in page {
                let (members, _, r) = view.placement(&ctx, r);
                let shared = holds(&ctx, &me, members, r) && holds(&ctx, &peer, members, r);
                if !shared {
                    continue;
                }
                let Some(head) = self.ledger.head(&ctx).await.map_err(|e| e.to_string())? else {
                    continue;
                };
                let state: PersistentState = match self.ledger.replication_state(&ctx) {
                    Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_default(),
                    _ => PersistentState::default(),
                };
                let epoch = state.history.clipped(head.size()).last_epoch().cloned();
                items.push(DigestItem::new(ctx, head.size(), head.root(), epoch));
            }
            after = Some(last);
        }
        Ok(items)
    }

    /// One exchange with `peer` as initiator; returns the contexts that differed.
    pub async fn anti_entropy_round(self: &Arc<Self>, peer: &str) -> Result<Vec<String>, String> {
        let addr = self
            .view()
            .addr_of(peer)
            .ok_or_else(|| format!("{peer} is not a member"))?
            .to_owned();
        let digest = Digest::new(self.digest_items(peer).await?).map_err(|e| e.to_string())?;
        let (mut session, first) = DigestSession::initiator(digest, DigestSettings::default());
        let mut client = ClusterServiceClient::new(self.links.channel(&addr)?)
            .max_decoding_message_size(usize::MAX);
        let id = rand_u64();
        let mut out = first;
        loop {
            let bytes = out.encode();
            self.anti_entropy
                .bytes_sent
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let mut req = tonic::Request::new(cpb::DigestRequest {
                from_node: self.me.node.to_string(),
                session: id,
                message: bytes,
            });
            req.set_timeout(Duration::from_secs(10));
            let reply = client
                .digest(req)
                .await
                .map_err(|s| s.message().to_owned())?
                .into_inner()
                .message;
            if reply.is_empty() {
                break;
            }
            let reply = DigestMessage::decode(&reply).map_err(|e| e.to_string())?;
            match session.on_message(reply).map_err(|e| e.to_string())? {
                Some(next) => out = next,
                None => break,
            }
        }
        self.anti_entropy.rounds.fetch_add(1, Ordering::Relaxed);
        let contexts: Vec<String> = session.differences().map(|d| d.context.clone()).collect();
        self.repair(&contexts);
        Ok(contexts)
    }

    /// Answers one turn of a peer's exchange. An empty answer: the conversation is over.
    pub async fn on_digest(
        self: &Arc<Self>,
        request: cpb::DigestRequest,
    ) -> Result<Vec<u8>, PeerRequestError> {
        let key = (request.from_node.clone(), request.session);
        let message = DigestMessage::decode(&request.message)
            .map_err(|e| PeerRequestError::Malformed(format!("digest message: {e}")))?;
        let mut session = match self.anti_entropy.take_session(&key) {
            Some(s) => s,
            None => {
                let items = self
                    .digest_items(&request.from_node)
                    .await
                    .map_err(PeerRequestError::Unavailable)?;
                let digest =
                    Digest::new(items).map_err(|e| PeerRequestError::Internal(e.to_string()))?;
                DigestSession::responder(digest, DigestSettings::default())
            }
        };
        let reply = session
            .on_message(message)
            .map_err(|e| PeerRequestError::Malformed(format!("digest exchange: {e}")))?;
        if session.is_finished() {
            let contexts: Vec<String> = session.differences().map(|d| d.context.clone()).collect();
            self.repair(&contexts);
        } else {
            self.anti_entropy.keep_session(key, session);
        }
        let bytes = reply.map(|m| m.encode()).unwrap_or_default();
        self.anti_entropy
            .bytes_sent
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Starts the replication task of each context (it probes, polls, claims and ships as the
    /// protocol requires).
    fn repair(self: &Arc<Self>, contexts: &[String]) {
        for ctx in contexts {
            let _ = self.mailbox(ctx);
        }
        self.anti_entropy
            .repairs
            .fetch_add(contexts.len() as u64, Ordering::Relaxed);
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}
