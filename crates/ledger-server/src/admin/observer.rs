//! The observer's API: what the page at `/` reads. Read-only, JSON, plus one server-sent-events
//! stream. Everything shown is what *this* node holds (in a cluster, each node shows its
//! replicas; the cluster view names the others).
//!
//! | path | what |
//! |---|---|
//! | `GET /api/node` | node id, ledger name, signing key (base64) and key id, auth on/off |
//! | `GET /api/contexts?after=&limit=` | contexts: id, size, last append, writer, replicas |
//! | `GET /api/entries?context=&after=&limit=&key=` | a page of entries (payload as base64, at most [`PREVIEW_BYTES`]) |
//! | `GET /api/head?context=` | the signed tree head (checkpoint text, signature, key id) |
//! | `GET /api/proof?context=&sequence=` | inclusion proof of an entry with the signed head of its tree |
//! | `GET /api/tail?context=&from=` | live tail (SSE): one `entry` event per entry, `id` = sequence; a reconnecting `EventSource` sends `Last-Event-ID` and resumes right after it, so the tail is gapless across reconnects |
//! | `GET /api/cluster` | members (and, for admin tokens or with auth off, contexts' replicas, lag and quarantines) |
//!
//! With auth on, each call needs a reader (or admin) token, as `Authorization: Bearer` or, for
//! the event stream (browsers cannot set its headers), `?token=`; a token limited to a prefix
//! sees only its contexts.

use crate::auth::policy::{AUTHORIZATION, Policy};
use crate::auth::tokens::{Principal, TokenRole};
use crate::error_status::to_status;
use crate::signer::Signer;
use crate::stream_limits::StreamLimits;
use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ledger_cluster::Cluster;
use ledger_embedded::{Ledger, LedgerError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Payload bytes sent per entry (the rest is marked truncated).
pub const PREVIEW_BYTES: usize = 64 << 10;
/// Entries per page at most.
const MAX_PAGE: u32 = 500;
/// Contexts per page at most.
const MAX_CONTEXTS: usize = 500;

/// What the observer reads from.
#[derive(Clone, Debug)]
pub struct Observer {
    pub ledger: Ledger,
    pub signer: Arc<Signer>,
    pub node_id: String,
    pub cluster: Option<Arc<Cluster>>,
    pub policy: Arc<Policy>,
    pub limits: Arc<StreamLimits>,
}

/// An API error: HTTP status and a message a person can act on.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        let code = match s.code() {
            tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, s.message().to_owned())
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        to_status(e).into()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The observer's routes.
pub fn routes(o: Observer) -> Router {
    Router::new()
        .route("/api/node", get(node))
        .route("/api/contexts", get(contexts))
        .route("/api/entries", get(entries))
        .route("/api/head", get(head))
        .route("/api/proof", get(proof))
        .route("/api/tail", get(tail))
        .route("/api/cluster", get(cluster))
        .with_state(o)
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    context: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
    key: Option<String>,
    sequence: Option<u64>,
    from: Option<u64>,
    token: Option<String>,
}

impl Params {
    fn context(&self) -> Result<&str, ApiError> {
        self.context
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "give ?context=<id>".into()))
    }
}

/// The gRPC method whose access rule an API call follows.
const READ_RULE: &str = "/converge.context.v1.ContextService/Get";
const MEMBERS_RULE: &str = "/converge.ledger.cluster.v1.ClusterService/Status";

impl Observer {
    /// The caller, by the same policy as gRPC (reader rule), token from the header or `?token=`.
    fn caller(
        &self,
        headers: &HeaderMap,
        params: &Params,
        rule: &str,
    ) -> Result<Option<Principal>, ApiError> {
        let mut h = tonic::codegen::http::HeaderMap::new();
        if let Some(v) = headers.get(axum::http::header::AUTHORIZATION)
            && let Ok(v) = tonic::codegen::http::HeaderValue::from_bytes(v.as_bytes())
        {
            h.insert(AUTHORIZATION, v);
        } else if let Some(t) = &params.token
            && let Ok(v) = tonic::codegen::http::HeaderValue::from_str(&format!("Bearer {t}"))
        {
            h.insert(AUTHORIZATION, v);
        }
        Ok(self.policy.decide(rule, &h, None)?)
    }

    /// The caller may read `context`.
    fn reader_of(
        &self,
        headers: &HeaderMap,
        params: &Params,
        context: &str,
    ) -> Result<(), ApiError> {
        if let Some(p) = self.caller(headers, params, READ_RULE)? {
            p.check_context(context)?;
        }
        Ok(())
    }
}

async fn node(State(o): State<Observer>) -> Json<Value> {
    Json(json!({
        "node_id": o.node_id,
        "ledger_name": o.signer.name(),
        "public_key": B64.encode(o.signer.public_key().as_bytes()),
        "key_id": o.signer.key_id_hex(),
        "auth": o.policy.auth_on(),
        "clustered": o.cluster.is_some(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn contexts(
    State(o): State<Observer>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> ApiResult {
    let principal = o.caller(&headers, &q, READ_RULE)?;
    let limit = q.limit.map_or(100, |l| (l as usize).clamp(1, MAX_CONTEXTS));
    let ids = o.ledger.list_contexts(q.after.as_deref(), limit).await?;
    let next_after = (ids.len() == limit).then(|| ids.last().cloned()).flatten();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if principal
            .as_ref()
            .is_some_and(|p| p.check_context(&id).is_err())
        {
            continue;
        }
        let head = o.ledger.head(&id).await?;
        let (size, last) = head
            .as_ref()
            .map_or((0, 0), |h| (h.size(), h.last_appended_at_ns));
        let (writer, replicas) = match &o.cluster {
            Some(c) => (c.writer_of(&id).map(|(w, _)| w), Some(c.replicas_of(&id))),
            None => (Some(o.node_id.clone()), None),
        };
        out.push(json!({
            "id": id,
            "size": size,
            "last_appended_at_ns": last,
            "writer": writer,
            "replicas": replicas,
        }));
    }
    Ok(Json(json!({ "contexts": out, "next_after": next_after })))
}

fn entry_json(e: &ledger_core::Entry) -> Value {
    let mut v = ledger_client::render::entry_json(e);
    let shown = &e.payload[..e.payload.len().min(PREVIEW_BYTES)];
    v["payload_b64"] = Value::String(B64.encode(shown));
    v["payload_len"] = json!(e.payload.len());
    v["payload_truncated"] = json!(e.payload.len() > PREVIEW_BYTES);
    if e.payload.len() > PREVIEW_BYTES {
        // The full text form is not sent: the preview is the base64 above.
        v["payload"] = Value::Null;
    }
    v
}

async fn entries(
    State(o): State<Observer>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> ApiResult {
    let ctx = q.context()?;
    o.reader_of(&headers, &q, ctx)?;
    let after = q
        .after
        .as_deref()
        .map(|a| {
            a.parse::<u64>()
                .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "after must be a sequence".into()))
        })
        .transpose()?
        .unwrap_or(0);
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE) as usize;
    let key = q.key.as_deref().filter(|k| !k.is_empty());
    let page = o.ledger.get(ctx, key, after, Some(limit)).await?;
    Ok(Json(json!({
        "entries": page.entries.iter().map(entry_json).collect::<Vec<_>>(),
        "latest_sequence": page.latest_sequence,
        "has_more": page.has_more,
        "next_after_sequence": page.next_after_sequence,
    })))
}

fn head_json(h: &ledger_core::checkpoint::SignedTreeHead) -> Value {
    json!({
        "context_id": h.context_id,
        "tree_size": h.tree_size,
        "root": B64.encode(h.root.as_bytes()),
        "root_hex": h.root.to_hex(),
        "key_name": h.key_name,
        "key_id": ledger_core::checkpoint::hex4(&h.key_id),
        "checkpoint": h.checkpoint,
        "signature": B64.encode(h.signature),
        "timestamp_ns": h.timestamp_ns,
    })
}

async fn head(State(o): State<Observer>, headers: HeaderMap, Query(q): Query<Params>) -> ApiResult {
    let ctx = q.context()?;
    o.reader_of(&headers, &q, ctx)?;
    let t = o.ledger.tree_state(ctx, 0).await?;
    let h = o
        .signer
        .sign(ctx, t.size, t.root, t.lamport_clock, t.appended_at_ns);
    Ok(Json(head_json(&h)))
}

async fn proof(
    State(o): State<Observer>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> ApiResult {
    let ctx = q.context()?;
    o.reader_of(&headers, &q, ctx)?;
    let seq = q
        .sequence
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "give ?sequence=<n>".into()))?;
    let p = o.ledger.inclusion_proof(ctx, seq, 0).await?;
    let (lamport, time) = o.ledger.clock_at(ctx, p.tree_size).await?;
    let h = o.signer.sign(ctx, p.tree_size, p.root, lamport, time);
    Ok(Json(json!({
        "sequence": seq,
        "leaf_index": p.leaf_index,
        "tree_size": p.tree_size,
        "leaf_hash": p.leaf_hash.to_hex(),
        "path": p.path.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
        "tree_head": head_json(&h),
    })))
}

async fn tail(
    State(o): State<Observer>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let ctx = q.context()?.to_owned();
    o.reader_of(&headers, &q, &ctx)?;
    // A reconnecting EventSource names the last event it got: resume right after it.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let from = resume.or(q.from).unwrap_or(0);
    let permit = o.limits.watcher(&ctx)?;
    let key = q.key.clone().filter(|k| !k.is_empty());
    let stream = o.ledger.watch(&ctx, key.as_deref(), from)?;
    let events = futures::stream::unfold(
        (stream, permit, false),
        |(mut stream, permit, ended)| async move {
            if ended {
                return None;
            }
            match stream.next().await {
                Ok(e) => {
                    let ev = Event::default()
                        .event("entry")
                        .id(e.sequence.to_string())
                        .data(entry_json(&e).to_string());
                    Some((Ok(ev), (stream, permit, false)))
                }
                Err(e) => {
                    let ev = Event::default()
                        .event("end")
                        .data(json!({ "error": e.to_string() }).to_string());
                    Some((Ok(ev), (stream, permit, true)))
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn cluster(
    State(o): State<Observer>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> ApiResult {
    let principal = o.caller(&headers, &q, MEMBERS_RULE)?;
    let Some(c) = &o.cluster else {
        return Ok(Json(json!({ "clustered": false, "node": o.node_id })));
    };
    let full = principal
        .as_ref()
        .is_none_or(|p| p.role.permits(TokenRole::Admin));
    let mut doc = if full {
        c.status_json(None, 100).await
    } else {
        c.members_json()
    };
    doc["clustered"] = json!(true);
    Ok(Json(doc))
}
