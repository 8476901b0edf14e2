//! `converge.context.v1.ContextService` over the embedded ledger. In a cluster, requests go
//! where [`crate::cluster::route`] says: appends to the context's writer, reads to a replica.

use crate::cluster::Cluster;
use crate::cluster::gate::ReadCap;
use crate::cluster::route::Serve;
use crate::limits::{Limits, WatchPermit};
use crate::metrics::Metrics;
use crate::request_log::log_result;
use crate::signer::Signer;
use crate::status::to_status;
use ledger_core::{Entry, Frontier};
use ledger_embedded::Ledger;
use ledger_proto::context::v1 as pb;
use ledger_proto::convert::{
    append_request_from_pb, batch_request_from_pb, batch_response_to_pb, entry_into_pb,
    entry_to_pb, tree_head_to_pb,
};
use pb::context_service_client::ContextServiceClient;
use pb::context_service_server::ContextService;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

/// Default tree-head interval of a watch stream, in entries.
const DEFAULT_HEAD_EVERY_ENTRIES: u64 = 100;
/// Default tree-head interval of a watch stream, in milliseconds.
const DEFAULT_HEAD_EVERY_MS: u64 = 1000;

/// The ContextService implementation.
#[derive(Clone, Debug)]
pub struct ContextApi {
    ledger: Ledger,
    signer: Arc<Signer>,
    /// Largest snapshot answered in one message (the node's message limit, less framing).
    max_snapshot_bytes: usize,
    /// The cluster runtime, when this node is a cluster member.
    cluster: Option<Arc<Cluster>>,
    metrics: Arc<Metrics>,
    limits: Arc<Limits>,
}

/// Room left in a Snapshot response for its other fields and protobuf framing.
const SNAPSHOT_RESPONSE_OVERHEAD: usize = 1024;

impl ContextApi {
    pub fn new(
        ledger: Ledger,
        signer: Arc<Signer>,
        max_message_bytes: usize,
        cluster: Option<Arc<Cluster>>,
        metrics: Arc<Metrics>,
        limits: Arc<Limits>,
    ) -> Self {
        ContextApi {
            ledger,
            signer,
            max_snapshot_bytes: max_message_bytes.saturating_sub(SNAPSHOT_RESPONSE_OVERHEAD),
            cluster,
            metrics,
            limits,
        }
    }

    /// Where a read is served (here, up to what is committed in a cluster, or elsewhere).
    async fn serve<T>(&self, context_id: &str, request: &Request<T>) -> Result<Serve, Status> {
        Serve::read(self.cluster.as_ref(), context_id, request.metadata()).await
    }
}

/// A client of another node's ContextService (for a forwarded read).
fn remote(ch: tonic::transport::Channel) -> ContextServiceClient<tonic::transport::Channel> {
    ContextServiceClient::new(ch)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// Signs heads along a watch stream: follows the tree of the delivered entries.
struct HeadTrail {
    signer: Arc<Signer>,
    context_id: String,
    frontier: Frontier,
    every_entries: u64,
    since_head: u64,
    lamport_clock: u64,
    appended_at_ns: u64,
}

impl HeadTrail {
    fn event(&mut self) -> pb::WatchEvent {
        self.since_head = 0;
        let h = self.signer.sign(
            &self.context_id,
            self.frontier.size(),
            self.frontier.root(),
            self.lamport_clock,
            self.appended_at_ns,
        );
        pb::WatchEvent {
            entry: None,
            tree_head: Some(tree_head_to_pb(&h)),
        }
    }

    /// Records a delivered entry; returns a head event when one is due.
    fn entry(&mut self, e: &Entry) -> Option<pb::WatchEvent> {
        self.frontier.push_leaf(e.content_hash);
        self.lamport_clock = e.lamport_clock;
        self.appended_at_ns = e.appended_at_ns;
        self.since_head += 1;
        (self.since_head >= self.every_entries).then(|| self.event())
    }

    /// A head event if entries arrived since the last head.
    fn tick(&mut self) -> Option<pb::WatchEvent> {
        (self.since_head > 0).then(|| self.event())
    }
}

/// A read forwarded to another node: the message, with the caller's token (the other node
/// authenticates the caller again).
pub(crate) fn onward<T>(request: Request<T>) -> Request<T> {
    let auth = crate::auth::authorization_of(request.metadata());
    crate::auth::pass_on(auth.as_ref(), Request::new(request.into_inner()))
}

fn code_of<T>(r: &Result<T, Status>) -> tonic::Code {
    r.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok)
}

fn key_filter(key: &str) -> Option<&str> {
    (!key.is_empty()).then_some(key)
}

#[tonic::async_trait]
impl ContextService for ContextApi {
    #[tracing::instrument(name = "request", skip_all, fields(rpc = "Append", context_id = %request.get_ref().context_id, sequence = tracing::field::Empty))]
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let start = Instant::now();
        crate::auth::check_context(&request, &request.get_ref().context_id)?;
        if let Some(c) = &self.cluster {
            let context_id = request.get_ref().context_id.clone();
            let result = c.append(request).await.map(Response::new);
            log_result("Append", &context_id, start, &result);
            self.metrics.append(code_of(&result), start.elapsed());
            return result;
        }
        let append = append_request_from_pb(request.into_inner());
        let context_id = append.context_id.clone();
        let result = self
            .ledger
            .append_entry(append)
            .await
            .map(|e| {
                Response::new(pb::AppendResponse {
                    entry: Some(entry_to_pb(&e)),
                })
            })
            .map_err(to_status);
        log_result("Append", &context_id, start, &result);
        self.metrics.append(code_of(&result), start.elapsed());
        result
    }

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "AppendBatch", context_id = %request.get_ref().context_id, items = request.get_ref().items.len(), sequence = tracing::field::Empty))]
    async fn append_batch(
        &self,
        request: Request<pb::AppendBatchRequest>,
    ) -> Result<Response<pb::AppendBatchResponse>, Status> {
        let start = Instant::now();
        crate::auth::check_context(&request, &request.get_ref().context_id)?;
        if let Some(c) = &self.cluster {
            let context_id = request.get_ref().context_id.clone();
            let result = c.append_batch(request).await.map(Response::new);
            log_result("AppendBatch", &context_id, start, &result);
            self.metrics.append(code_of(&result), start.elapsed());
            return result;
        }
        let (context_id, items) = batch_request_from_pb(request.into_inner());
        let result = self
            .ledger
            .append_batch(&context_id, items)
            .await
            .map(|entries| Response::new(batch_response_to_pb(entries.iter().map(|e| &**e))))
            .map_err(to_status);
        log_result("AppendBatch", &context_id, start, &result);
        self.metrics.append(code_of(&result), start.elapsed());
        result
    }

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "Get", context_id = %request.get_ref().context_id, sequence = tracing::field::Empty))]
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let start = Instant::now();
        crate::auth::check_context(&request, &request.get_ref().context_id)?;
        let cap = match self.serve(&request.get_ref().context_id, &request).await? {
            Serve::Remote(c, ch) => {
                return remote(ch).get(c.forwarded(onward(request))).await;
            }
            Serve::Local(cap) => cap,
        };
        let r = request.into_inner();
        let limit = (r.limit > 0).then_some(r.limit as usize);
        let result = self
            .ledger
            .get_up_to(
                &r.context_id,
                key_filter(&r.key),
                r.after_sequence,
                limit,
                cap.as_ref().map(ReadCap::committed),
            )
            .await
            .map(|page| {
                Response::new(pb::GetResponse {
                    entries: page.entries.into_iter().map(entry_into_pb).collect(),
                    latest_sequence: page.latest_sequence,
                    has_more: page.has_more,
                    next_after_sequence: page.next_after_sequence,
                })
            })
            .map_err(to_status);
        log_result("Get", &r.context_id, start, &result);
        result
    }

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "Snapshot", context_id = %request.get_ref().context_id, sequence = tracing::field::Empty))]
    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let start = Instant::now();
        crate::auth::check_context(&request, &request.get_ref().context_id)?;
        let cap = match self.serve(&request.get_ref().context_id, &request).await? {
            Serve::Remote(c, ch) => {
                return remote(ch).snapshot(c.forwarded(onward(request))).await;
            }
            Serve::Local(cap) => cap,
        };
        let r = request.into_inner();
        let result = self
            .ledger
            .snapshot_within(
                &r.context_id,
                Some(self.max_snapshot_bytes),
                cap.as_ref().map(ReadCap::committed),
            )
            .await
            .map(|s| {
                Response::new(pb::SnapshotResponse {
                    sequence: s.sequence,
                    metadata: Some(pb::SnapshotMetadata {
                        created_at_ns: s.created_at_ns,
                        entry_count: s.sequence,
                        version: u32::from(ledger_core::snapshot::VERSION),
                        merkle_root: s.merkle_root.as_bytes().to_vec(),
                    }),
                    snapshot: s.bytes,
                })
            })
            .map_err(to_status);
        log_result("Snapshot", &r.context_id, start, &result);
        result
    }

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "Load", context_id = %request.get_ref().context_id, sequence = tracing::field::Empty))]
    async fn load(
        &self,
        request: Request<pb::LoadRequest>,
    ) -> Result<Response<pb::LoadResponse>, Status> {
        let start = Instant::now();
        crate::auth::check_context(&request, &request.get_ref().context_id)?;
        self.limits.check_load(
            &request.get_ref().context_id,
            request.get_ref().snapshot.len() as u64,
        )?;
        if let Some(c) = &self.cluster {
            let context_id = request.get_ref().context_id.clone();
            let result = c.load(request).await.map(Response::new);
            log_result("Load", &context_id, start, &result);
            return result;
        }
        let r = request.into_inner();
        let result = self
            .ledger
            .load(&r.context_id, r.snapshot, r.fail_if_exists)
            .await
            .map(|o| {
                Response::new(pb::LoadResponse {
                    entries_restored: o.entries_restored,
                    latest_sequence: o.latest_sequence,
                })
            })
            .map_err(to_status);
        log_result("Load", &r.context_id, start, &result);
        result
    }

    type WatchStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

    #[tracing::instrument(name = "request", skip_all, fields(rpc = "Watch", context_id = %request.get_ref().context_id, sequence = tracing::field::Empty))]
    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        crate::auth::check_context(&request, &request.get_ref().context_id)?;
        let permit = self.limits.watcher(&request.get_ref().context_id)?;
        let cap = match self.serve(&request.get_ref().context_id, &request).await? {
            Serve::Remote(c, ch) => {
                let stream = remote(ch)
                    .watch(c.forwarded(onward(request)))
                    .await?
                    .into_inner();
                // The permit lives as long as the relayed stream.
                use futures::StreamExt as _;
                let stream = stream.map(move |ev| {
                    let _held = &permit;
                    ev
                });
                return Ok(Response::new(Box::pin(stream)));
            }
            Serve::Local(cap) => cap,
        };
        let r = request.into_inner();
        let mut trail = if r.include_tree_heads {
            if !r.key.is_empty() {
                return Err(Status::invalid_argument(
                    "include_tree_heads needs every entry of the context: it cannot be combined with a key filter",
                ));
            }
            let frontier = self
                .ledger
                .frontier_at(&r.context_id, r.from_sequence)
                .await
                .map_err(to_status)?;
            let t = if r.from_sequence > 0 {
                Some(
                    self.ledger
                        .tree_state(&r.context_id, r.from_sequence)
                        .await
                        .map_err(to_status)?,
                )
            } else {
                None
            };
            Some(HeadTrail {
                signer: Arc::clone(&self.signer),
                context_id: r.context_id.clone(),
                frontier,
                every_entries: match r.tree_head_every_entries {
                    0 => DEFAULT_HEAD_EVERY_ENTRIES,
                    n => u64::from(n),
                },
                since_head: 0,
                lamport_clock: t.as_ref().map_or(0, |t| t.lamport_clock),
                appended_at_ns: t.as_ref().map_or(0, |t| t.appended_at_ns),
            })
        } else {
            None
        };
        let every_ms = match r.tree_head_every_ms {
            0 => DEFAULT_HEAD_EVERY_MS,
            n => u64::from(n),
        };
        let stream = self
            .ledger
            .watch(&r.context_id, key_filter(&r.key), r.from_sequence)
            .map_err(to_status)?;
        tracing::debug!(
            rpc = "Watch",
            context_id = r.context_id,
            from = r.from_sequence,
            heads = trail.is_some(),
            "started"
        );
        // A resumed stream starts with the head of what the watcher already has, so it can
        // check its saved state against the node's before taking more.
        let queued = trail
            .as_mut()
            .filter(|_| r.from_sequence > 0)
            .map(HeadTrail::event);
        let every = std::time::Duration::from_millis(every_ms);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let state = WatchState {
            context_id: r.context_id,
            _permit: permit,
            metrics: Arc::clone(&self.metrics),
            fallbacks_seen: 0,
            stream,
            cap,
            held: std::collections::VecDeque::new(),
            trail,
            tick,
            queued,
            ended: false,
        };
        // The response body polls the ledger's watch stream directly (no task and channel in
        // between): one hop less per delivered entry. A client that stops reading stops the
        // polling; the watcher's ring then overflows and it catches up from storage later,
        // without ever holding back appends.
        Ok(Response::new(Box::pin(futures::stream::unfold(
            state,
            WatchState::next_event,
        ))))
    }
}

/// One Watch stream: the ledger's watch stream, the head trail, and an event waiting to go out.
/// In a cluster, entries past the commit index wait in `held` until they are committed (or
/// the stream ends because they were cut off).
struct WatchState {
    context_id: String,
    /// This stream's place under the watcher limits.
    _permit: WatchPermit,
    metrics: Arc<Metrics>,
    /// Fallbacks of `stream` already counted in the metrics.
    fallbacks_seen: u64,
    stream: ledger_embedded::WatchStream,
    cap: Option<ReadCap>,
    held: std::collections::VecDeque<Arc<Entry>>,
    trail: Option<HeadTrail>,
    tick: tokio::time::Interval,
    queued: Option<pb::WatchEvent>,
    ended: bool,
}

type WatchItem = Result<pb::WatchEvent, Status>;

/// Completes when the commit index changes (false: its context task is gone); never
/// without a cap.
async fn cap_changed(cap: &mut Option<ReadCap>) -> bool {
    match cap {
        Some(c) => c.changed().await,
        None => std::future::pending().await,
    }
}

/// What a watch may send of the entries it holds back.
enum Release {
    Entry(Arc<Entry>),
    /// The ledger's stream ended (the held entries were cut off): end with this.
    Cut(Status),
    Wait,
}

/// Entries a watch holds back while they are not committed; beyond this it stops reading
/// (the ledger's watcher then catches up from storage later, like a slow client).
const MAX_HELD: usize = 65_536;

impl WatchState {
    async fn next_event(mut self) -> Option<(WatchItem, Self)> {
        if let Some(ev) = self.queued.take() {
            return Some((Ok(ev), self));
        }
        if self.ended {
            tracing::debug!(
                rpc = "Watch",
                context_id = self.context_id,
                position = self.stream.position(),
                "ended"
            );
            return None;
        }
        loop {
            match self.releasable() {
                Release::Entry(e) => return Some(self.deliver(&e)),
                Release::Cut(status) => return Some(self.end(status)),
                Release::Wait => {}
            }
            let committed = self.cap.as_ref().map(ReadCap::committed);
            let room = self.held.len() < MAX_HELD;
            tokio::select! {
                _ = self.tick.tick(), if self.trail.is_some() => {
                    if let Some(ev) = self.trail.as_mut().and_then(HeadTrail::tick) {
                        return Some((Ok(ev), self));
                    }
                }
                changed = cap_changed(&mut self.cap), if !self.held.is_empty() => {
                    if !changed {
                        return Some(self.end(Status::unavailable(
                            "the node is shutting down; reconnect to resume",
                        )));
                    }
                }
                next = self.stream.next(), if room => match self.count_fallbacks(next) {
                    Ok(e) if committed.is_some_and(|c| e.sequence > c) || !self.held.is_empty() => {
                        self.held.push_back(e);
                    }
                    Ok(e) => return Some(self.deliver(&e)),
                    Err(e) => return Some(self.end(to_status(e))),
                },
            }
        }
    }

    /// The oldest held entry once it is committed. Before releasing it, everything the
    /// ledger's stream already has is taken: if the entries were cut off (quarantined), the
    /// stream has ended with that error, and the held entries are dropped, never sent.
    fn releasable(&mut self) -> Release {
        let Some(committed) = self.cap.as_ref().map(ReadCap::committed) else {
            return Release::Wait;
        };
        if self.held.front().is_none_or(|e| e.sequence > committed) {
            return Release::Wait;
        }
        while self.held.len() < MAX_HELD {
            match futures::FutureExt::now_or_never(self.stream.next()) {
                Some(Ok(e)) => self.held.push_back(e),
                Some(Err(e)) => {
                    self.held.clear();
                    return Release::Cut(to_status(e));
                }
                None => break,
            }
        }
        self.held.pop_front().map_or(Release::Wait, Release::Entry)
    }

    /// Counts the ledger watcher's slow-watcher fallbacks in the metrics as they happen.
    fn count_fallbacks<T>(&mut self, next: T) -> T {
        let fallbacks = self.stream.fallbacks();
        if fallbacks > self.fallbacks_seen {
            self.metrics
                .watch_fallbacks(fallbacks - self.fallbacks_seen);
            self.fallbacks_seen = fallbacks;
        }
        next
    }

    fn deliver(mut self, e: &Entry) -> (WatchItem, Self) {
        self.queued = self.trail.as_mut().and_then(|t| t.entry(e));
        let ev = pb::WatchEvent {
            entry: Some(entry_to_pb(e)),
            tree_head: None,
        };
        (Ok(ev), self)
    }

    fn end(mut self, status: Status) -> (WatchItem, Self) {
        self.ended = true;
        (Err(status), self)
    }
}
