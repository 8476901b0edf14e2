//! `cluster status`: the cluster as one node sees it, as one JSON document.
//!
//! ```json
//! {"node": "n1", "members": [{"id", "addr", "role", "state", "version", "mirror_prefixes",
//!                            "views_settled"}],
//!  "views": {"enabled", "version", "floor", "settled_here", "members": [{"id", "incarnation", "role",
//!            "settled"}], "pending": "join d (Member)" | null, "waiting_for": ["b"]},
//!  "contexts": [{"context", "state": "ok" | "waiting" | "lost_quorum" | "no_writer",
//!                "blocked": [ids], "epoch", "epoch_writer", "writer": {"id", "addr"},
//!                "replicas": [{"id", "addr", "state", "size", "root", "commit_index",
//!                              "lag_entries", "lag_ms"}],
//!                "mirrors": [same as replicas: the mirrors holding the context]}],
//!  "quarantines": [{"context", "id", "from_sequence", "count", "quarantined_at_ns", "reason"}]}
//! ```
//! Each replica's size and root come from that replica itself (a `ContextState` call with a
//! short timeout); a replica that does not answer is listed with `"error"` instead.

use crate::cluster::Cluster;
use ledger_core::Hash;
use ledger_proto::cluster::v1 as cpb;
use ledger_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use ledger_replication::PersistentState;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// How long `cluster status` waits for each replica's answer.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(2);
/// Contexts listed when no context is named and no limit given.
pub const DEFAULT_LIMIT: usize = 100;

/// One holder of a context: its id, address, and what it answered (or why it did not).
type HeldState = (String, String, Result<cpb::ContextStateResponse, String>);

/// The quarantines this node holds (of one context, or all), as JSON objects.
pub fn quarantines_json(
    ledger: &ledger_embedded::Ledger,
    context: Option<&str>,
) -> Result<Vec<Value>, ledger_embedded::LedgerError> {
    Ok(ledger
        .quarantines(context)?
        .into_iter()
        .map(|q| {
            json!({
                "context": q.context_id,
                "id": q.id,
                "from_sequence": q.from_sequence,
                "count": q.count,
                "quarantined_at_ns": q.quarantined_at_ns,
                "reason": q.reason,
            })
        })
        .collect())
}

impl Cluster {
    /// What this node holds of a context, from storage (no task is started).
    pub async fn local_context_state(
        &self,
        context_id: &str,
    ) -> Result<cpb::ContextStateResponse, String> {
        let head = self
            .ledger
            .head(context_id)
            .await
            .map_err(|e| e.to_string())?;
        let state: PersistentState = match self
            .ledger
            .replication_state(context_id)
            .map_err(|e| e.to_string())?
        {
            Some(b) => serde_json::from_slice(&b).map_err(|e| e.to_string())?,
            None => PersistentState::default(),
        };
        let epoch = state
            .history
            .last_epoch()
            .cloned()
            .max(state.promised.clone());
        let (size, root, last) = match &head {
            Some(h) => (h.size(), h.root(), h.last_appended_at_ns),
            None => (0, ledger_core::Frontier::new().root(), 0),
        };
        Ok(cpb::ContextStateResponse {
            node_id: self.me.node.to_string(),
            size,
            root: root.as_bytes().to_vec(),
            epoch: epoch.as_ref().map_or(0, |e| e.number),
            epoch_writer: epoch.map(|e| e.node().to_string()).unwrap_or_default(),
            commit_index: state.commit_index.min(size),
            last_appended_at_ns: last,
            view: self.views.version(),
            views_settled: self.views.announced(),
            incarnation: self.me.incarnation.0,
            ..self.running_availability(context_id).await
        })
    }

    /// Whether the context's running task (none is started) can take appends: its settled
    /// view, availability and blockers; defaults when no task runs.
    async fn running_availability(&self, context_id: &str) -> cpb::ContextStateResponse {
        let mut out = cpb::ContextStateResponse::default();
        let Some(tx) = self.contexts.running_mailbox(context_id) else {
            return out;
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        if tx
            .try_send(crate::context::messages::ContextMsg::State { reply })
            .is_err()
        {
            return out;
        }
        if let Ok(Ok(s)) = tokio::time::timeout(REPLICA_TIMEOUT, rx).await {
            out.settled = s.settled;
            s.availability.clone_into(&mut out.availability);
            out.blocked = s.blocked;
        }
        out
    }

    /// Asks the node at `addr` for its `ContextState` of `context_id` (with `settle`, its task
    /// settles the current placement view first), waiting at most `timeout`.
    pub(crate) async fn remote_context_state(
        &self,
        addr: &str,
        context_id: &str,
        settle: bool,
        timeout: Duration,
    ) -> Result<cpb::ContextStateResponse, String> {
        let ch = self.links.channel(addr)?;
        let mut client = ClusterServiceClient::new(ch);
        let mut req = tonic::Request::new(cpb::ContextStateRequest {
            context_id: context_id.to_owned(),
            settle,
        });
        req.set_timeout(timeout);
        tokio::time::timeout(timeout, client.context_state(req))
            .await
            .map_err(|_| "no answer".to_string())?
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_owned())
    }

    /// The members part of the status document (what clients route with).
    pub fn members_json(&self) -> Value {
        json!({
            "node": self.me.node.to_string(),
            "replication_factor": self.settings.protocol.replication_factor,
            "members": self.members_list(),
        })
    }

    /// The placement view log as this node applied it: the current version, the floor (the
    /// oldest view claims still consult), each member's settled mark, and the change the
    /// coordinator holds back (on the log's writer) with the members it waits for.
    fn views_json(&self) -> Value {
        let pending = self.views.pending();
        self.views.with_log(|log| {
            json!({
                "enabled": self.settings.placement_views,
                "version": log.version(),
                "floor": log.floor(),
                "settled_here": self.views.announced(),
                "members": log.current().members.iter().map(|m| json!({
                    "id": m.id.to_string(),
                    "incarnation": format!("{:016x}", m.incarnation.0),
                    "role": match m.role { ledger_replication::Role::Member => "member", ledger_replication::Role::Mirror => "mirror" },
                    "settled": log.settled(&m.id).unwrap_or(0),
                })).collect::<Vec<_>>(),
                "pending": pending.as_ref().map(|p| p.change.clone()),
                "waiting_for": pending.map(|p| p.waiting_for).unwrap_or_default(),
            })
        })
    }

    fn members_list(&self) -> Vec<Value> {
        self.view()
            .peers
            .values()
            .map(|p| {
                json!({
                    "id": p.id,
                    "addr": p.addr,
                    "role": p.role.as_str(),
                    "state": p.state.as_str(),
                    "version": p.version,
                    "mirror_prefixes": p.mirror_prefixes,
                    "views_settled": p.views_settled,
                })
            })
            .collect()
    }

    /// The `cluster status --json` document.
    pub async fn status_json(self: &Arc<Self>, context: Option<&str>, limit: usize) -> Value {
        let members = self.members_list();
        let contexts: Vec<String> = match context {
            Some(c) => vec![c.to_owned()],
            None => self
                .ledger
                .list_contexts(None, limit.max(1))
                .await
                .unwrap_or_default(),
        };
        let mut out = Vec::new();
        for c in contexts {
            out.push(self.context_json(&c).await);
        }
        let quarantines = quarantines_json(&self.ledger, context).unwrap_or_default();
        json!({
            "node": self.me.node.to_string(),
            "replication_factor": self.settings.protocol.replication_factor,
            "members": members,
            "views": self.views_json(),
            "contexts": out,
            "quarantines": quarantines,
        })
    }

    async fn context_json(self: &Arc<Self>, context_id: &str) -> Value {
        let view = self.view();
        let writer = self.writer_of(context_id);
        let replicas = self
            .states_of(&self.replicas_of(context_id), context_id)
            .await;
        let mirror_ids: Vec<String> = ledger_replication::placement::mirror_holders(
            context_id,
            view.placement(context_id, self.replication_factor()).0,
        )
        .iter()
        .map(|m| m.id.to_string())
        .collect();
        let mirrors = self.states_of(&mirror_ids, context_id).await;
        let writer_state = writer
            .as_ref()
            .and_then(|(w, _)| replicas.iter().find(|(id, _, _)| id == w))
            .and_then(|(_, _, s)| s.as_ref().ok())
            .cloned();
        let best = replicas
            .iter()
            .filter_map(|(_, _, s)| s.as_ref().ok())
            .max_by_key(|s| s.epoch);
        let json_of = |states: &[HeldState]| -> Vec<Value> {
            states
                .iter()
                .map(|(id, addr, s)| {
                    let member_state = view.peer(id).map_or("unknown", |p| p.state.as_str());
                    match s {
                        Ok(s) => {
                            let (lag_entries, lag_ms) = match &writer_state {
                                Some(w) => (
                                    w.size.saturating_sub(s.size),
                                    w.last_appended_at_ns.saturating_sub(s.last_appended_at_ns)
                                        / 1_000_000,
                                ),
                                None => (0, 0),
                            };
                            json!({
                                "id": id,
                                "addr": addr,
                                "state": member_state,
                                "size": s.size,
                                "root": Hash::from_slice(&s.root).map(|h| h.to_hex()).unwrap_or_default(),
                                "epoch": s.epoch,
                                "commit_index": s.commit_index,
                                "lag_entries": lag_entries,
                                "lag_ms": lag_ms,
                            })
                        }
                        Err(e) => json!({"id": id, "addr": addr, "state": member_state, "error": e}),
                    }
                })
                .collect()
        };
        // The writer's own word on whether the context takes appends.
        let (state, blocked) = match &writer_state {
            Some(w) if !w.availability.is_empty() => (w.availability.clone(), w.blocked.clone()),
            Some(_) => ("ok".to_owned(), Vec::new()),
            None => ("no_writer".to_owned(), Vec::new()),
        };
        json!({
            "context": context_id,
            "state": state,
            "blocked": blocked,
            "epoch": best.map_or(0, |s| s.epoch),
            "epoch_writer": best.map(|s| s.epoch_writer.clone()).unwrap_or_default(),
            "writer": writer.map(|(id, addr)| json!({"id": id, "addr": addr})),
            "replicas": json_of(&replicas),
            "mirrors": json_of(&mirrors),
        })
    }

    /// What each of `nodes` holds of `context_id` (asked of the node itself; this node's own
    /// state read locally).
    async fn states_of(self: &Arc<Self>, nodes: &[String], context_id: &str) -> Vec<HeldState> {
        let view = self.view();
        let mut states = Vec::new();
        for id in nodes {
            let addr = view.addr_of(id).unwrap_or_default().to_owned();
            let state = if id.as_str() == self.me.node.as_str() {
                self.local_context_state(context_id).await
            } else {
                self.remote_context_state(&addr, context_id, false, REPLICA_TIMEOUT)
                    .await
            };
            states.push((id.clone(), addr, state));
        }
        states
    }
}
