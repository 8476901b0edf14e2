//! The node's Watch streams: entries as the ledger's watcher yields them (in a cluster, held
//! back until committed), signed tree heads along the way when asked for, each entry event
//! encoded once per context and node however many watchers it goes to ([`FrameCache`]).

use crate::error_status::{heads_need_every_entry, to_status, watch_shutting_down};
use crate::metrics::Metrics;
use crate::signer::Signer;
use crate::stream_limits::WatchPermit;
use ledger_cluster::ReadCap;
use ledger_core::{Entry, Frontier};
use ledger_embedded::Ledger;
use ledger_proto::context::v1 as pb;
use ledger_proto::convert::{entry_to_pb, tree_head_to_pb};
use ledger_proto::frame::WatchFrame;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use tonic::Status;

/// Default tree-head interval of a watch stream, in entries.
const DEFAULT_HEAD_EVERY_ENTRIES: u64 = 100;
/// Default tree-head interval of a watch stream, in milliseconds.
const DEFAULT_HEAD_EVERY_MS: u64 = 1000;

/// A request's entry-key filter: none when empty.
pub(crate) fn key_filter(key: &str) -> Option<&str> {
    (!key.is_empty()).then_some(key)
}

/// What the node's Watch answers with.
pub type FrameStream = std::pin::Pin<Box<dyn futures::Stream<Item = FrameItem> + Send>>;

/// A Watch served from this node's ledger, from `r.from_sequence` on.
pub(crate) async fn local(
    ledger: &Ledger,
    signer: &Arc<Signer>,
    frames: &FrameCache,
    metrics: &Arc<Metrics>,
    r: pb::WatchRequest,
    cap: Option<ReadCap>,
    permit: WatchPermit,
) -> Result<FrameStream, Status> {
    let mut trail = if r.include_tree_heads {
        if !r.key.is_empty() {
            return Err(heads_need_every_entry());
        }
        let frontier = ledger
            .frontier_at(&r.context_id, r.from_sequence)
            .await
            .map_err(to_status)?;
        let t = if r.from_sequence > 0 {
            Some(
                ledger
                    .tree_state(&r.context_id, r.from_sequence)
                    .await
                    .map_err(to_status)?,
            )
        } else {
            None
        };
        Some(HeadTrail {
            signer: Arc::clone(signer),
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
    let stream = ledger
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
    let frames = frames.of(&r.context_id);
    let state = WatchState {
        context_id: r.context_id,
        _permit: permit,
        metrics: Arc::clone(metrics),
        fallbacks_seen: 0,
        stream,
        cap,
        held: std::collections::VecDeque::new(),
        trail,
        tick,
        queued,
        frames,
        ended: false,
    };
    // The response body polls the ledger's watch stream directly (no task and channel in
    // between): one hop less per delivered entry. A client that stops reading stops the
    // polling; the watcher's ring then overflows and it catches up from storage later,
    // without ever holding back appends.
    // The state is boxed: `unfold` moves it into each step's future and back out, and moving
    // a pointer instead of the whole state (timer, ledger stream, trail) took that copying out
    // of the per-event cost (it was ~15 % of the node's CPU at 1,000 watchers).
    Ok(Box::pin(futures::stream::unfold(
        Box::new(state),
        WatchState::next_event,
    )))
}

/// Encoded entry events by context: one [`ContextFrames`] per context with watchers on this
/// node, dropped with its last watcher.
#[derive(Debug, Default)]
pub struct FrameCache {
    contexts: Mutex<HashMap<String, Weak<ContextFrames>>>,
}

impl FrameCache {
    /// The frames of `context_id`, shared by its watchers.
    pub fn of(&self, context_id: &str) -> Arc<ContextFrames> {
        let mut contexts = self.contexts.lock();
        if let Some(f) = contexts.get(context_id).and_then(Weak::upgrade) {
            return f;
        }
        // Contexts whose watchers have all gone leave dead entries; sweep them now and then.
        if contexts.len() >= 64 && contexts.len().is_power_of_two() {
            contexts.retain(|_, f| f.strong_count() > 0);
        }
        let f = Arc::new(ContextFrames::default());
        contexts.insert(context_id.to_owned(), Arc::downgrade(&f));
        f
    }
}

/// Most recent entry events kept encoded per context: watchers within this many entries of
/// each other share one encoding. (A watcher further behind, catching up from storage, encodes
/// its own.)
const FRAMES_PER_CONTEXT: usize = 256;

/// The latest entry events of one context, encoded, by sequence.
#[derive(Debug, Default)]
pub struct ContextFrames {
    recent: Mutex<BTreeMap<u64, (Arc<Entry>, WatchFrame)>>,
}

impl ContextFrames {
    /// `e` as an encoded entry event: the one already made for it if it is recent, otherwise a
    /// new one (kept if it is among the latest). A cached frame is used only for the very same
    /// entry (a cut can reuse a sequence for another entry).
    pub fn frame(&self, e: &Arc<Entry>) -> WatchFrame {
        if let Some((cached, f)) = self.recent.lock().get(&e.sequence)
            && (Arc::ptr_eq(cached, e) || **cached == **e)
        {
            return f.clone();
        }
        let frame = WatchFrame::encode(&pb::WatchEvent {
            entry: Some(entry_to_pb(e)),
            tree_head: None,
        });
        let mut recent = self.recent.lock();
        let oldest = recent.first_key_value().map(|(s, _)| *s);
        if recent.len() < FRAMES_PER_CONTEXT || oldest.is_some_and(|o| e.sequence > o) {
            recent.insert(e.sequence, (Arc::clone(e), frame.clone()));
            if recent.len() > FRAMES_PER_CONTEXT {
                recent.pop_first();
            }
        }
        frame
    }
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
    /// Encoded entry events of the context, shared with its other watchers on this node.
    frames: Arc<ContextFrames>,
    ended: bool,
}

pub type FrameItem = Result<WatchFrame, Status>;

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
    async fn next_event(mut self: Box<Self>) -> Option<(FrameItem, Box<Self>)> {
        if let Some(ev) = self.queued.take() {
            return Some((Ok(WatchFrame::encode(&ev)), self));
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
            // Biased: no random branch order (a thread-local RNG call per event); the tick and
            // the cap are cheap to poll first and cannot starve the stream.
            tokio::select! {
                biased;
                _ = self.tick.tick(), if self.trail.is_some() => {
                    if let Some(ev) = self.trail.as_mut().and_then(HeadTrail::tick) {
                        return Some((Ok(WatchFrame::encode(&ev)), self));
                    }
                }
                changed = cap_changed(&mut self.cap), if !self.held.is_empty() => {
                    if !changed {
                        return Some(self.end(watch_shutting_down()));
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

    fn deliver(mut self: Box<Self>, e: &Arc<Entry>) -> (FrameItem, Box<Self>) {
        self.queued = self.trail.as_mut().and_then(|t| t.entry(e));
        let frame = self.frames.frame(e);
        (Ok(frame), self)
    }

    fn end(mut self: Box<Self>, status: Status) -> (FrameItem, Box<Self>) {
        self.ended = true;
        (Err(status), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn entry(seq: u64, payload: &[u8]) -> Arc<Entry> {
        Arc::new(Entry::new(
            format!("id-{seq}"),
            "facts".into(),
            payload.to_vec(),
            seq,
            1_700_000_000_000_000_000 + seq,
            Default::default(),
            seq,
        ))
    }

    #[test]
    fn one_encoding_per_entry_is_shared_and_equals_a_fresh_one() {
        let cache = FrameCache::default();
        let (a, b) = (cache.of("ctx"), cache.of("ctx"));
        assert!(
            Arc::ptr_eq(&a, &b),
            "watchers of one context share its frames"
        );
        let e = entry(1, b"payload");
        let first = a.frame(&e);
        let second = b.frame(&e);
        // The same bytes, not a second encoding.
        assert_eq!(first.as_bytes().as_ptr(), second.as_bytes().as_ptr());
        let fresh = pb::WatchEvent {
            entry: Some(entry_to_pb(&e)),
            tree_head: None,
        };
        assert_eq!(first.as_bytes(), fresh.encode_to_vec().as_slice());
        // An equal entry read again from storage (another Arc) shares it too.
        assert_eq!(
            a.frame(&Arc::new((*e).clone())).as_bytes().as_ptr(),
            first.as_bytes().as_ptr()
        );
    }

    #[test]
    fn another_entry_at_a_cached_sequence_gets_its_own_frame() {
        let frames = FrameCache::default().of("ctx");
        let old = frames.frame(&entry(5, b"before the cut"));
        let new = frames.frame(&entry(5, b"after the cut"));
        assert_ne!(old.as_bytes(), new.as_bytes());
        let decoded = new.event().unwrap().entry.unwrap();
        assert_eq!(decoded.payload, b"after the cut");
    }

    #[test]
    fn only_the_latest_entries_stay_encoded_and_unwatched_contexts_go() {
        let cache = FrameCache::default();
        let frames = cache.of("ctx");
        for s in 1..=(FRAMES_PER_CONTEXT as u64 + 10) {
            frames.frame(&entry(s, b"x"));
        }
        let recent = frames.recent.lock();
        assert_eq!(recent.len(), FRAMES_PER_CONTEXT);
        assert_eq!(recent.first_key_value().map(|(s, _)| *s), Some(11));
        drop(recent);
        // A watcher far behind does not push the latest out.
        frames.frame(&entry(2, b"x"));
        assert!(!frames.recent.lock().contains_key(&2));
        drop(frames);
        let again = cache.of("ctx");
        assert!(
            again.recent.lock().is_empty(),
            "a context without watchers was dropped"
        );
    }
}
