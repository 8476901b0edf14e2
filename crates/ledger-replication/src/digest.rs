//! Anti-entropy digests: two nodes find the contexts on which they disagree by exchanging a few
//! hashes, as a sans-IO conversation ([`DigestSession`]).
//!
//! Periodically each pair of nodes compares what it holds of the contexts they should share
//! (one [`DigestItem`] per context: size, Merkle root, last epoch). The [`Difference`]s found
//! schedule catch-up (one side lags), promises (a replica is missing after a membership change)
//! or quarantine (the two diverged). This heals what live streams missed: restarts, a wiped data
//! directory, a new node, a node that was partitioned away. Deciding which of these a difference
//! calls for is the runtime's business; this module only finds them.
//!
//! # The tree: fixed ranges of a token space (sorted by token of the context id)
//! Two nodes rarely hold exactly the same set of contexts, so the tree is not built over the
//! items' positions in a sorted list (one extra context would shift every position and make every
//! node differ) but over **fixed ranges of a 64-bit token space**, Cassandra-style:
//!
//! - The **token** of a context is the first 8 bytes, big-endian, of `SHA-256(context id)`
//!   ([`token`]). Items are kept sorted by `(token, context id)`; the context id only orders the
//!   (astronomically rare) items whose tokens are equal.
//! - A **range** ([`RangeId`]) at depth `d` (0 to [`MAX_DEPTH`] = 16) is the set of tokens whose
//!   first `4·d` bits equal its prefix: depth 0 is the whole space, each range has
//!   [`FAN_OUT`] = 16 children (one more hex digit of the token), a range at depth 16 is one token.
//!   The same range holds the same contexts on every node, whatever else the nodes hold.
//! - The **hash of a range** is `SHA-256(0x11 ‖ leaf_1 ‖ … ‖ leaf_k)` over the leaf hashes of the
//!   items in it, in `(token, context id)` order; an empty range hashes to `SHA-256(0x11)`
//!   ([`empty_range_hash`]). It depends only on the items in the range, so two nodes agree on a
//!   range exactly when they hold the same items in it. Range hashes are computed on demand from
//!   the sorted items (two binary searches and one pass over the range), so building a
//!   [`Digest`] is a sort: `O(n log n)`, no tree is stored.
//! - The **leaf hash** of an item ([`DigestItem::leaf_hash`]) is SHA-256 over a length-prefixed
//!   encoding (all integers big-endian):
//!
//!   ```text
//!   0x10 ‖ u64 len(context) ‖ context (UTF-8) ‖ u64 size ‖ root (32 bytes)
//!        ‖ 0x00                                                            (no epoch)
//!        | 0x01 ‖ u64 number ‖ u64 len(node id) ‖ node id (UTF-8) ‖ u64 incarnation
//!   ```
//!
//!   The prefixes `0x10` (leaf) and `0x11` (range) keep digest hashes apart from each other and
//!   from the ledger's RFC 9162 Merkle hashes (`0x00`, `0x01`).
//!
//! # The conversation
//! The initiator sends the hash and item count of the root range. On a [`DigestPart::Range`]
//! `(range, hash, count)` from the peer, a node compares its own hash of that range:
//!
//! 1. equal: nothing to do (no answer at all);
//! 2. the peer holds nothing there: every own item in it is a difference; send them
//!    ([`DigestPart::Resolved`]);
//! 3. it holds at most [`DigestSettings::leaf_items`] items there (or the range is one token):
//!    send them ([`DigestPart::Items`]);
//! 4. the peer holds at most `leaf_items` there: send back the own hash and count (the peer then
//!    takes step 3);
//! 5. otherwise descend: send the hash and count of each of the 16 children.
//!
//! On the items of a range, a node compares them with its own (a merge by context), records the
//! differences and sends its side of them back ([`DigestPart::Resolved`]: its items that differ
//! or that the peer lacks, and the ids of the peer's contexts it lacks), from which the peer
//! records the same differences. Both sides end with the same differences, mirrored (`local` and
//! `remote` swapped). Every range is settled once (equal, by items, or by its children), and
//! descent stops at depth 16, so the conversation always ends.
//!
//! Two nodes with `n` equal contexts exchange one hash and a `Done`. One differing context costs
//! 16 hashes per level on the way down (`log16 n` levels before a range holds at most
//! `leaf_items`), then the items of one small range and the differing item: `O(log n)`. A range
//! where one side holds few items and the other many is settled by items at once (steps 2-4), so
//! a new or wiped node receives the other side's items without a descent. `d` scattered
//! differences cost about `16 · d · log16(n / d)` hashes.
//!
//! Measured (`measure_100k_contexts` in `tests/digest.rs`, release, 100,000 contexts, default
//! settings): equal sets 41 bytes in 2 messages; one lagging or one missing context about
//! 2.7 KB in 8 messages (4 levels of 16 hashes), found in about 10 ms; 100 scattered
//! differences about 140 KB (1.4 KB each). Building a digest of 100,000 items takes about 50 ms.
//!
//! # Turns, bounded messages, termination
//! The nodes speak in turns ([`DigestMessage`]): each answer is one message; what does not fit in
//! it waits in a queue for the next turn. A message carries at most
//! [`DigestSettings::max_ranges`] range hashes and [`DigestSettings::max_items`] items (items of
//! one range are split over several messages when needed, the last piece says so). A message says whether its sender has more queued; a node that receives "no more" and
//! has nothing queued answers [`DigestMessage::Done`] and both are finished. Settings need not
//! match between the two nodes.
//!
//! Messages derive serde; [`DigestMessage::encode`] is also a documented compact encoding (see
//! there) and [`DigestMessage::wire_len`] its length, which is how exchanges are measured.

use crate::epoch::Epoch;
use crate::identity::{Incarnation, NodeId, Voter};
use ledger_core::Hash;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use thiserror::Error;

/// Children of a range: one more hex digit of the token.
pub const FAN_OUT: usize = 16;
/// Depth of a range that is a single token (64 bits, 4 bits per level).
pub const MAX_DEPTH: u8 = 16;
/// Domain-separation prefix of a digest leaf hash.
pub const LEAF_PREFIX: u8 = 0x10;
/// Domain-separation prefix of a digest range hash.
pub const RANGE_PREFIX: u8 = 0x11;

/// The token of a context: the first 8 bytes, big-endian, of `SHA-256(context id)`.
pub fn token(context: &str) -> u64 {
    let h = Sha256::digest(context.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    u64::from_be_bytes(first)
}

/// The hash of a range without items: `SHA-256(0x11)`.
pub fn empty_range_hash() -> Hash {
    Hash(Sha256::digest([RANGE_PREFIX]).into())
}

fn update_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

/// What a node holds of one context, as far as anti-entropy compares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestItem {
    /// The context id.
    pub context: String,
    /// Entries stored.
    pub size: u64,
    /// Merkle root of the stored entries.
    #[serde(with = "hash_serde")]
    pub root: Hash,
    /// The last epoch of the context's history (`None` before the context had a writer epoch).
    pub epoch: Option<Epoch>,
}

impl DigestItem {
    pub fn new(context: impl Into<String>, size: u64, root: Hash, epoch: Option<Epoch>) -> Self {
        DigestItem {
            context: context.into(),
            size,
            root,
            epoch,
        }
    }

    /// The token of the item's context ([`token`]).
    pub fn token(&self) -> u64 {
        token(&self.context)
    }

    /// The canonical leaf hash (encoding in the module docs).
    pub fn leaf_hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update([LEAF_PREFIX]);
        update_str(&mut h, &self.context);
        h.update(self.size.to_be_bytes());
        h.update(self.root.0);
        match &self.epoch {
            None => h.update([0]),
            Some(e) => {
                h.update([1]);
                h.update(e.number.to_be_bytes());
                update_str(&mut h, e.writer.node.as_str());
                h.update(e.writer.incarnation.0.to_be_bytes());
            }
        }
        Hash(h.finalize().into())
    }
}

/// A range of the token space: the tokens whose first `4 · depth` bits are `prefix`.
///
/// Serialized as is; a range received from a peer is checked ([`RangeId::new`]'s conditions)
/// before use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RangeId {
    depth: u8,
    prefix: u64,
}

impl RangeId {
    /// The whole token space.
    pub const ROOT: RangeId = RangeId {
        depth: 0,
        prefix: 0,
    };

    /// The range at `depth` (at most [`MAX_DEPTH`]) with this prefix (below `16^depth`).
    pub fn new(depth: u8, prefix: u64) -> Option<RangeId> {
        let r = RangeId { depth, prefix };
        r.is_valid().then_some(r)
    }

    /// The range at `depth` that holds `token`.
    pub fn of_token(token: u64, depth: u8) -> RangeId {
        let depth = depth.min(MAX_DEPTH);
        let prefix = if depth == 0 {
            0
        } else {
            token >> (64 - 4 * u32::from(depth))
        };
        RangeId { depth, prefix }
    }

    pub fn depth(self) -> u8 {
        self.depth
    }

    pub fn prefix(self) -> u64 {
        self.prefix
    }

    /// Depth at most 16 and the prefix fits in `4 · depth` bits.
    pub fn is_valid(self) -> bool {
        match self.depth {
            0 => self.prefix == 0,
            MAX_DEPTH => true,
            d if d < MAX_DEPTH => self.prefix >> (4 * u32::from(d)) == 0,
            _ => false,
        }
    }

    /// The smallest token in the range.
    pub fn first(self) -> u64 {
        if self.depth == 0 {
            0
        } else {
            self.prefix << (64 - 4 * u32::from(self.depth))
        }
    }

    /// The largest token in the range.
    pub fn last(self) -> u64 {
        let free = if self.depth == 0 {
            u64::MAX
        } else {
            u64::MAX.checked_shr(4 * u32::from(self.depth)).unwrap_or(0)
        };
        self.first() | free
    }

    pub fn contains(self, token: u64) -> bool {
        (self.first()..=self.last()).contains(&token)
    }

    /// The 16 children in token order (none for a single-token range).
    pub fn children(self) -> impl Iterator<Item = RangeId> {
        let n = if self.depth < MAX_DEPTH { FAN_OUT } else { 0 };
        (0..n as u64).map(move |i| RangeId {
            depth: self.depth + 1,
            prefix: (self.prefix << 4) | i,
        })
    }
}

/// A range's hash and number of items on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeSummary {
    pub hash: Hash,
    pub count: u64,
}

#[derive(Clone, Debug)]
struct Leaf {
    token: u64,
    hash: Hash,
    item: DigestItem,
}

impl Leaf {
    fn new(item: DigestItem) -> Leaf {
        Leaf {
            token: item.token(),
            hash: item.leaf_hash(),
            item,
        }
    }

    fn key(&self) -> (u64, &str) {
        (self.token, &self.item.context)
    }
}

/// A node's items for the contexts it shares with one peer, sorted by `(token, context id)`.
#[derive(Clone, Debug, Default)]
pub struct Digest {
    leaves: Vec<Leaf>,
}

impl Digest {
    /// Builds a digest from items in any order: two SHA-256 per item and a sort, `O(n log n)`.
    /// Refuses two items of the same context.
    pub fn new(items: impl IntoIterator<Item = DigestItem>) -> Result<Digest, DigestError> {
        let mut leaves: Vec<Leaf> = items.into_iter().map(Leaf::new).collect();
        leaves.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
        if let Some(w) = leaves.windows(2).find(|w| w[0].key() == w[1].key()) {
            return Err(DigestError::DuplicateContext(w[0].item.context.clone()));
        }
        Ok(Digest { leaves })
    }

    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The items in `(token, context id)` order.
    pub fn items(&self) -> impl ExactSizeIterator<Item = &DigestItem> {
        self.leaves.iter().map(|l| &l.item)
    }

    /// The item of `context`, if the digest has one.
    pub fn get(&self, context: &str) -> Option<&DigestItem> {
        let key = (token(context), context);
        self.leaves
            .binary_search_by(|l| l.key().cmp(&key))
            .ok()
            .map(|i| &self.leaves[i].item)
    }

    fn slice(&self, range: RangeId) -> &[Leaf] {
        let (first, last) = (range.first(), range.last());
        let start = self.leaves.partition_point(|l| l.token < first);
        let end = start + self.leaves[start..].partition_point(|l| l.token <= last);
        &self.leaves[start..end]
    }

    /// The hash and item count of `range` (one pass over its items).
    pub fn range(&self, range: RangeId) -> RangeSummary {
        let leaves = self.slice(range);
        let mut h = Sha256::new();
        h.update([RANGE_PREFIX]);
        for l in leaves {
            h.update(l.hash.0);
        }
        RangeSummary {
            hash: Hash(h.finalize().into()),
            count: leaves.len() as u64,
        }
    }

    /// The summary of the whole digest.
    pub fn root(&self) -> RangeSummary {
        self.range(RangeId::ROOT)
    }
}

/// A context on which the two nodes differ: its item on each side (`None`: not held there).
/// Never both `None`, never two equal items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub context: String,
    pub local: Option<DigestItem>,
    pub remote: Option<DigestItem>,
}

/// The shape of a [`Difference`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DifferenceKind {
    /// Only the peer holds the context.
    MissingLocally,
    /// Only this node holds the context.
    MissingRemotely,
    /// Both hold it with different size, root or epoch.
    Differs,
}

impl Difference {
    pub fn kind(&self) -> DifferenceKind {
        match (&self.local, &self.remote) {
            (None, _) => DifferenceKind::MissingLocally,
            (_, None) => DifferenceKind::MissingRemotely,
            _ => DifferenceKind::Differs,
        }
    }
}

/// One piece of a [`DigestMessage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DigestPart {
    /// The sender's hash and item count of a range: compare with yours.
    Range {
        range: RangeId,
        #[serde(with = "hash_serde")]
        hash: Hash,
        count: u64,
    },
    /// All the sender's items in a range, in `(token, context id)` order, possibly over several
    /// messages (`last` on the final piece): compare them with yours and send back
    /// [`DigestPart::Resolved`].
    Items {
        range: RangeId,
        items: Vec<DigestItem>,
        last: bool,
    },
    /// The sender's side of differences it found: its items that differ from yours or that you
    /// lack, and the contexts of yours it lacks. Nothing to answer.
    Resolved {
        items: Vec<DigestItem>,
        absent: Vec<String>,
    },
}

/// One turn of the conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DigestMessage {
    /// Parts to handle. `more`: the sender has further parts queued for its next turn. An empty
    /// list hands the turn back.
    Parts { parts: Vec<DigestPart>, more: bool },
    /// Neither side has anything left: the conversation is over.
    Done,
}

/// Limits of one side of a conversation. They need not match the peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSettings {
    /// A differing range in which one side holds at most this many items is settled by sending
    /// items instead of descending.
    pub leaf_items: usize,
    /// Most range hashes in one message (at least 1).
    pub max_ranges: usize,
    /// Most items (and absent context ids) in one message (at least 1).
    pub max_items: usize,
}

impl Default for DigestSettings {
    /// 8 items per leaf range; per message 256 range hashes (at most 52 bytes each) and 128 items
    /// (about 100 bytes each with short context and node ids; at most 319 bytes plus the node
    /// id's length with 256-byte context ids).
    fn default() -> Self {
        DigestSettings {
            leaf_items: 8,
            max_ranges: 256,
            max_items: 128,
        }
    }
}

/// Counters of one side of a conversation (bytes by [`DigestMessage::wire_len`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DigestStats {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Range hashes sent.
    pub ranges_sent: u64,
    /// Items and absent context ids sent.
    pub items_sent: u64,
    /// The largest message sent, in bytes.
    pub largest_message: u64,
}

/// Why a conversation or a decoding failed. After an error the session is unusable (drop it and
/// try again later).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DigestError {
    #[error("two items of context {0:?}")]
    DuplicateContext(String),
    #[error("invalid range (depth {depth}, prefix {prefix:#x})")]
    InvalidRange { depth: u8, prefix: u64 },
    #[error("item of context {context:?} is not in range {range:?}")]
    ItemOutsideRange { context: String, range: RangeId },
    #[error("items of range {got:?} arrived while those of {pending:?} were incomplete")]
    InterleavedItems { pending: RangeId, got: RangeId },
    #[error("the peer said it lacks context {0:?}, which this node does not hold")]
    UnknownContext(String),
    #[error("the peer ended the conversation while this node had {queued} parts to send")]
    UnexpectedDone { queued: usize },
    #[error("the peer has nothing more to send but the items of range {0:?} are incomplete")]
    IncompleteItems(RangeId),
    #[error("the conversation is already finished")]
    Finished,
    #[error("malformed digest message: {0}")]
    Decode(&'static str),
}

/// One side of an anti-entropy conversation with one peer: a pure state machine. The initiator
/// sends the first message ([`DigestSession::initiator`]); after that both sides are alike: pass
/// each message from the peer to [`DigestSession::on_message`] and send back what it returns,
/// until it returns `None` (or [`DigestSession::is_finished`]). Then
/// [`DigestSession::differences`] holds the contexts on which the two digests differ.
///
/// The digest is a snapshot: changes made while the conversation runs are found next time.
#[derive(Debug)]
pub struct DigestSession {
    digest: Digest,
    settings: DigestSettings,
    queue: VecDeque<DigestPart>,
    /// Pieces of a peer's [`DigestPart::Items`] until the last one.
    incoming: Option<(RangeId, Vec<DigestItem>)>,
    differences: BTreeMap<String, Difference>,
    finished: bool,
    stats: DigestStats,
}

impl DigestSession {
    /// The side that speaks first, and its first message (the root range).
    pub fn initiator(digest: Digest, settings: DigestSettings) -> (DigestSession, DigestMessage) {
        let mut session = DigestSession::responder(digest, settings);
        let root = session.digest.root();
        session.queue.push_back(DigestPart::Range {
            range: RangeId::ROOT,
            hash: root.hash,
            count: root.count,
        });
        let first = session.next_message();
        (session, first)
    }

    /// The side that answers.
    pub fn responder(digest: Digest, settings: DigestSettings) -> DigestSession {
        DigestSession {
            digest,
            settings: DigestSettings {
                leaf_items: settings.leaf_items,
                max_ranges: settings.max_ranges.max(1),
                max_items: settings.max_items.max(1),
            },
            queue: VecDeque::new(),
            incoming: None,
            differences: BTreeMap::new(),
            finished: false,
            stats: DigestStats::default(),
        }
    }

    /// Handles the peer's message; returns the answer to send, or `None` when the conversation
    /// is over (after the peer's [`DigestMessage::Done`]). Answering `Done` also ends it.
    pub fn on_message(
        &mut self,
        message: DigestMessage,
    ) -> Result<Option<DigestMessage>, DigestError> {
        if self.finished {
            return Err(DigestError::Finished);
        }
        self.stats.messages_received += 1;
        self.stats.bytes_received += message.wire_len() as u64;
        match message {
            DigestMessage::Done => {
                if !self.queue.is_empty() || self.incoming.is_some() {
                    return Err(DigestError::UnexpectedDone {
                        queued: self.queue.len(),
                    });
                }
                self.finished = true;
                Ok(None)
            }
            DigestMessage::Parts { parts, more } => {
                for part in parts {
                    self.handle(part)?;
                }
                if !more {
                    if let Some((range, _)) = &self.incoming {
                        return Err(DigestError::IncompleteItems(*range));
                    }
                    if self.queue.is_empty() {
                        self.finished = true;
                        let done = DigestMessage::Done;
                        self.count_sent(&done);
                        return Ok(Some(done));
                    }
                }
                Ok(Some(self.next_message()))
            }
        }
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The differences found so far (all of them once finished), by context id.
    pub fn differences(&self) -> impl ExactSizeIterator<Item = &Difference> {
        self.differences.values()
    }

    /// The differences, by context id.
    pub fn into_differences(self) -> Vec<Difference> {
        self.differences.into_values().collect()
    }

    pub fn stats(&self) -> DigestStats {
        self.stats
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    fn handle(&mut self, part: DigestPart) -> Result<(), DigestError> {
        match part {
            DigestPart::Range { range, hash, count } => {
                check_range(range)?;
                let own = self.digest.range(range);
                if own.hash == hash {
                    return Ok(());
                }
                if count == 0 {
                    self.resolve(range, Vec::new())
                } else if own.count <= self.settings.leaf_items as u64 || range.depth >= MAX_DEPTH {
                    let items = self.digest.slice(range).iter();
                    self.queue.push_back(DigestPart::Items {
                        range,
                        items: items.map(|l| l.item.clone()).collect(),
                        last: true,
                    });
                    Ok(())
                } else if count <= self.settings.leaf_items as u64 {
                    self.queue.push_back(DigestPart::Range {
                        range,
                        hash: own.hash,
                        count: own.count,
                    });
                    Ok(())
                } else {
                    for child in range.children() {
                        let s = self.digest.range(child);
                        self.queue.push_back(DigestPart::Range {
                            range: child,
                            hash: s.hash,
                            count: s.count,
                        });
                    }
                    Ok(())
                }
            }
            DigestPart::Items { range, items, last } => {
                check_range(range)?;
                if let Some(item) = items.iter().find(|i| !range.contains(i.token())) {
                    return Err(DigestError::ItemOutsideRange {
                        context: item.context.clone(),
                        range,
                    });
                }
                let received = match self.incoming.take() {
                    None => items,
                    Some((pending, mut earlier)) if pending == range => {
                        earlier.extend(items);
                        earlier
                    }
                    Some((pending, _)) => {
                        return Err(DigestError::InterleavedItems {
                            pending,
                            got: range,
                        });
                    }
                };
                if last {
                    self.resolve(range, received)
                } else {
                    self.incoming = Some((range, received));
                    Ok(())
                }
            }
            DigestPart::Resolved { items, absent } => {
                for item in items {
                    let local = self.digest.get(&item.context);
                    if local != Some(&item) {
                        self.record(local.cloned(), Some(item));
                    }
                }
                for context in absent {
                    match self.digest.get(&context) {
                        Some(local) => {
                            let local = local.clone();
                            self.record(Some(local), None);
                        }
                        None => return Err(DigestError::UnknownContext(context)),
                    }
                }
                Ok(())
            }
        }
    }

    /// Compares the peer's items of `range` with the own ones, records the differences and
    /// queues the own side of them.
    fn resolve(&mut self, range: RangeId, theirs: Vec<DigestItem>) -> Result<(), DigestError> {
        let mut theirs: Vec<(u64, DigestItem)> =
            theirs.into_iter().map(|i| (i.token(), i)).collect();
        theirs.sort_unstable_by(|a, b| (a.0, &a.1.context).cmp(&(b.0, &b.1.context)));
        if let Some(w) = theirs
            .windows(2)
            .find(|w| (w[0].0, &w[0].1.context) == (w[1].0, &w[1].1.context))
        {
            return Err(DigestError::DuplicateContext(w[0].1.context.clone()));
        }
        let mine = self.digest.slice(range);
        let mut differing: Vec<DigestItem> = Vec::new();
        let mut absent: Vec<String> = Vec::new();
        let mut found: Vec<Difference> = Vec::new();
        let (mut i, mut theirs) = (0, theirs.into_iter().peekable());
        loop {
            let order = match (mine.get(i), theirs.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(m), Some((t, item))) => m.key().cmp(&(*t, item.context.as_str())),
            };
            match order {
                Ordering::Less => {
                    let m = &mine[i].item;
                    differing.push(m.clone());
                    found.push(difference(Some(m.clone()), None));
                    i += 1;
                }
                Ordering::Greater => {
                    if let Some((_, t)) = theirs.next() {
                        absent.push(t.context.clone());
                        found.push(difference(None, Some(t)));
                    }
                }
                Ordering::Equal => {
                    let m = &mine[i].item;
                    if let Some((_, t)) = theirs.next()
                        && *m != t
                    {
                        differing.push(m.clone());
                        found.push(difference(Some(m.clone()), Some(t)));
                    }
                    i += 1;
                }
            }
        }
        for d in found {
            self.differences.insert(d.context.clone(), d);
        }
        if !differing.is_empty() || !absent.is_empty() {
            self.queue.push_back(DigestPart::Resolved {
                items: differing,
                absent,
            });
        }
        Ok(())
    }

    fn record(&mut self, local: Option<DigestItem>, remote: Option<DigestItem>) {
        let d = difference(local, remote);
        self.differences.insert(d.context.clone(), d);
    }

    /// Takes what fits in one message from the queue.
    fn next_message(&mut self) -> DigestMessage {
        let mut ranges_left = self.settings.max_ranges;
        let mut items_left = self.settings.max_items;
        let mut parts = Vec::new();
        while let Some(front) = self.queue.front_mut() {
            match front {
                DigestPart::Range { .. } => {
                    if ranges_left == 0 {
                        break;
                    }
                    ranges_left -= 1;
                    self.stats.ranges_sent += 1;
                }
                DigestPart::Items { range, items, .. } => {
                    if items_left == 0 {
                        break;
                    }
                    if items.len() > items_left {
                        let rest = items.split_off(items_left);
                        let piece = std::mem::replace(items, rest);
                        self.stats.items_sent += piece.len() as u64;
                        parts.push(DigestPart::Items {
                            range: *range,
                            items: piece,
                            last: false,
                        });
                        break;
                    }
                    items_left -= items.len().max(1);
                    self.stats.items_sent += items.len() as u64;
                }
                DigestPart::Resolved { items, absent } => {
                    if items_left == 0 {
                        break;
                    }
                    let weight = items.len() + absent.len();
                    if weight > items_left {
                        let take_items = items.len().min(items_left);
                        let rest = items.split_off(take_items);
                        let piece_items = std::mem::replace(items, rest);
                        let take_absent = items_left - take_items;
                        let rest = absent.split_off(take_absent);
                        let piece_absent = std::mem::replace(absent, rest);
                        self.stats.items_sent += items_left as u64;
                        parts.push(DigestPart::Resolved {
                            items: piece_items,
                            absent: piece_absent,
                        });
                        break;
                    }
                    items_left -= weight;
                    self.stats.items_sent += weight as u64;
                }
            }
            if let Some(part) = self.queue.pop_front() {
                parts.push(part);
            }
        }
        let message = DigestMessage::Parts {
            parts,
            more: !self.queue.is_empty(),
        };
        self.count_sent(&message);
        message
    }

    fn count_sent(&mut self, message: &DigestMessage) {
        let len = message.wire_len() as u64;
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += len;
        self.stats.largest_message = self.stats.largest_message.max(len);
    }
}

fn check_range(range: RangeId) -> Result<(), DigestError> {
    if range.is_valid() {
        Ok(())
    } else {
        Err(DigestError::InvalidRange {
            depth: range.depth,
            prefix: range.prefix,
        })
    }
}

fn difference(local: Option<DigestItem>, remote: Option<DigestItem>) -> Difference {
    let context = local
        .as_ref()
        .or(remote.as_ref())
        .map(|i| i.context.clone())
        .unwrap_or_default();
    Difference {
        context,
        local,
        remote,
    }
}

// ---------------------------------------------------------------------------------------------
// Compact encoding.

/// Where encoded bytes go: a buffer, or a counter for [`DigestMessage::wire_len`].
trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn byte(&mut self, b: u8) {
        self.put(&[b]);
    }

    fn varint(&mut self, mut v: u64) {
        let mut buf = [0u8; 10];
        let mut n = 0;
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                buf[n] = low;
                n += 1;
                break;
            }
            buf[n] = low | 0x80;
            n += 1;
        }
        self.put(&buf[..n]);
    }

    fn string(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.put(s.as_bytes());
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

const MESSAGE_DONE: u8 = 0;
const MESSAGE_PARTS: u8 = 1;
const PART_RANGE: u8 = 1;
const PART_ITEMS: u8 = 2;
const PART_RESOLVED: u8 = 3;

fn put_range(s: &mut impl Sink, r: RangeId) {
    s.byte(r.depth);
    let n = usize::from(r.depth).div_ceil(2);
    s.put(&r.prefix.to_be_bytes()[8 - n..]);
}

fn put_item(s: &mut impl Sink, item: &DigestItem) {
    s.string(&item.context);
    s.varint(item.size);
    s.put(&item.root.0);
    match &item.epoch {
        None => s.byte(0),
        Some(e) => {
            s.byte(1);
            s.varint(e.number);
            s.string(e.writer.node.as_str());
            s.put(&e.writer.incarnation.0.to_be_bytes());
        }
    }
}

impl DigestMessage {
    /// The compact encoding (integers are unsigned LEB128 varints unless sized):
    ///
    /// ```text
    /// message  = 0x00                                   Done
    ///          | 0x01 more:u8 varint(#parts) part*      Parts
    /// part     = 0x01 range hash:32 varint(count)       Range
    ///          | 0x02 range last:u8 varint(#items) item*  Items
    ///          | 0x03 varint(#items) item* varint(#absent) string*   Resolved
    /// range    = depth:u8 prefix (big-endian, ceil(depth / 2) bytes)
    /// item     = string(context) varint(size) root:32
    ///            (0x00 | 0x01 varint(epoch number) string(node id) incarnation:u64 big-endian)
    /// string   = varint(length) UTF-8 bytes
    /// ```
    ///
    /// A range hash costs at most 52 bytes (36 to 39 at the depths of a typical exchange).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len());
        self.encode_into(&mut out);
        out
    }

    /// The length of [`Self::encode`], without encoding.
    pub fn wire_len(&self) -> usize {
        let mut c = Counter(0);
        self.encode_into(&mut c);
        c.0
    }

    fn encode_into(&self, s: &mut impl Sink) {
        match self {
            DigestMessage::Done => s.byte(MESSAGE_DONE),
            DigestMessage::Parts { parts, more } => {
                s.byte(MESSAGE_PARTS);
                s.byte(u8::from(*more));
                s.varint(parts.len() as u64);
                for part in parts {
                    match part {
                        DigestPart::Range { range, hash, count } => {
                            s.byte(PART_RANGE);
                            put_range(s, *range);
                            s.put(&hash.0);
                            s.varint(*count);
                        }
                        DigestPart::Items { range, items, last } => {
                            s.byte(PART_ITEMS);
                            put_range(s, *range);
                            s.byte(u8::from(*last));
                            s.varint(items.len() as u64);
                            for item in items {
                                put_item(s, item);
                            }
                        }
                        DigestPart::Resolved { items, absent } => {
                            s.byte(PART_RESOLVED);
                            s.varint(items.len() as u64);
                            for item in items {
                                put_item(s, item);
                            }
                            s.varint(absent.len() as u64);
                            for context in absent {
                                s.string(context);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Decodes [`Self::encode`]'s output; refuses truncated input, trailing bytes, unknown tags
    /// and invalid ranges.
    pub fn decode(bytes: &[u8]) -> Result<DigestMessage, DigestError> {
        let mut r = Reader { bytes, pos: 0 };
        let message = match r.byte()? {
            MESSAGE_DONE => DigestMessage::Done,
            MESSAGE_PARTS => {
                let more = r.flag()?;
                let n = r.count()?;
                let mut parts = Vec::with_capacity(n);
                for _ in 0..n {
                    parts.push(r.part()?);
                }
                DigestMessage::Parts { parts, more }
            }
            _ => return Err(DigestError::Decode("unknown message tag")),
        };
        if r.pos != bytes.len() {
            return Err(DigestError::Decode("trailing bytes"));
        }
        Ok(message)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DigestError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(DigestError::Decode("truncated"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, DigestError> {
        Ok(self.take(1)?[0])
    }

    fn flag(&mut self) -> Result<bool, DigestError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DigestError::Decode("flag is neither 0 nor 1")),
        }
    }

    fn varint(&mut self) -> Result<u64, DigestError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            let low = u64::from(b & 0x7f);
            if i == 9 && low > 1 {
                return Err(DigestError::Decode("varint overflows 64 bits"));
            }
            v |= low << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DigestError::Decode("varint longer than 10 bytes"))
    }

    /// A number of elements; each takes at least one byte, so it cannot exceed what is left.
    fn count(&mut self) -> Result<usize, DigestError> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len() - self.pos)
            .ok_or(DigestError::Decode("count exceeds the message"))
    }

    fn hash(&mut self) -> Result<Hash, DigestError> {
        Hash::from_slice(self.take(32)?).ok_or(DigestError::Decode("hash"))
    }

    fn u64(&mut self) -> Result<u64, DigestError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn string(&mut self) -> Result<String, DigestError> {
        let n = self.count()?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DigestError::Decode("string is not UTF-8"))
    }

    fn range(&mut self) -> Result<RangeId, DigestError> {
        let depth = self.byte()?;
        if depth > MAX_DEPTH {
            return Err(DigestError::Decode("range depth above 16"));
        }
        let n = usize::from(depth).div_ceil(2);
        let mut b = [0u8; 8];
        b[8 - n..].copy_from_slice(self.take(n)?);
        RangeId::new(depth, u64::from_be_bytes(b))
            .ok_or(DigestError::Decode("range prefix longer than its depth"))
    }

    fn item(&mut self) -> Result<DigestItem, DigestError> {
        let context = self.string()?;
        let size = self.varint()?;
        let root = self.hash()?;
        let epoch = match self.byte()? {
            0 => None,
            1 => {
                let number = self.varint()?;
                let node = self.string()?;
                let incarnation = self.u64()?;
                Some(Epoch::new(
                    number,
                    Voter {
                        node: NodeId(node),
                        incarnation: Incarnation(incarnation),
                    },
                ))
            }
            _ => return Err(DigestError::Decode("unknown epoch tag")),
        };
        Ok(DigestItem {
            context,
            size,
            root,
            epoch,
        })
    }

    fn items(&mut self) -> Result<Vec<DigestItem>, DigestError> {
        let n = self.count()?;
        (0..n).map(|_| self.item()).collect()
    }

    fn part(&mut self) -> Result<DigestPart, DigestError> {
        match self.byte()? {
            PART_RANGE => Ok(DigestPart::Range {
                range: self.range()?,
                hash: self.hash()?,
                count: self.varint()?,
            }),
            PART_ITEMS => Ok(DigestPart::Items {
                range: self.range()?,
                last: self.flag()?,
                items: self.items()?,
            }),
            PART_RESOLVED => {
                let items = self.items()?;
                let n = self.count()?;
                let absent = (0..n)
                    .map(|_| self.string())
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(DigestPart::Resolved { items, absent })
            }
            _ => Err(DigestError::Decode("unknown part tag")),
        }
    }
}

/// Serde for [`Hash`] (which `ledger-core` keeps free of serde): its 32 bytes.
mod hash_serde {
    use ledger_core::Hash;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(hash: &Hash, s: S) -> Result<S::Ok, S::Error> {
        hash.0.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        <[u8; 32]>::deserialize(d).map(Hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::hash::sha256;

    fn item(c: &str, size: u64) -> DigestItem {
        DigestItem::new(c, size, sha256(c.as_bytes()), None)
    }

    #[test]
    fn token_is_the_first_eight_bytes_of_sha256() {
        // SHA-256("a") = ca978112ca1bbdca fac231b3...
        assert_eq!(token("a"), 0xca97_8112_ca1b_bdca);
    }

    #[test]
    fn leaf_hash_follows_the_documented_encoding() {
        let root = sha256(b"r");
        let mut input = vec![LEAF_PREFIX];
        input.extend_from_slice(&3u64.to_be_bytes());
        input.extend_from_slice(b"ctx");
        input.extend_from_slice(&7u64.to_be_bytes());
        input.extend_from_slice(&root.0);
        let mut without = input.clone();
        without.push(0);
        assert_eq!(
            DigestItem::new("ctx", 7, root, None).leaf_hash(),
            sha256(&without)
        );
        input.push(1);
        input.extend_from_slice(&5u64.to_be_bytes());
        input.extend_from_slice(&2u64.to_be_bytes());
        input.extend_from_slice(b"n1");
        input.extend_from_slice(&9u64.to_be_bytes());
        let e = Epoch::new(5, Voter::new("n1", 9));
        assert_eq!(
            DigestItem::new("ctx", 7, root, Some(e)).leaf_hash(),
            sha256(&input)
        );
        assert_eq!(empty_range_hash(), sha256(&[RANGE_PREFIX]));
        assert_eq!(Digest::default().root().hash, empty_range_hash());
    }

    #[test]
    fn ranges_partition_the_token_space() {
        assert_eq!(RangeId::ROOT.first(), 0);
        assert_eq!(RangeId::ROOT.last(), u64::MAX);
        let children: Vec<_> = RangeId::ROOT.children().collect();
        assert_eq!(children.len(), 16);
        assert_eq!(children[0xa].first(), 0xa000_0000_0000_0000);
        assert_eq!(children[0xa].last(), 0xafff_ffff_ffff_ffff);
        let t = 0x1234_5678_9abc_def0;
        for d in 0..=MAX_DEPTH {
            let r = RangeId::of_token(t, d);
            assert!(r.is_valid() && r.contains(t), "depth {d}");
            if d < MAX_DEPTH {
                let inside: Vec<_> = r.children().filter(|c| c.contains(t)).collect();
                assert_eq!(inside, vec![RangeId::of_token(t, d + 1)]);
                let c: Vec<_> = r.children().collect();
                assert_eq!(c[0].first(), r.first());
                assert_eq!(c[15].last(), r.last());
                for w in c.windows(2) {
                    assert_eq!(w[0].last() + 1, w[1].first());
                }
            }
        }
        let leaf = RangeId::of_token(t, MAX_DEPTH);
        assert_eq!((leaf.first(), leaf.last()), (t, t));
        assert_eq!(leaf.children().count(), 0);
        assert!(RangeId::new(1, 16).is_none());
        assert!(RangeId::new(0, 1).is_none());
        assert!(RangeId::new(17, 0).is_none());
        assert!(RangeId::new(16, u64::MAX).is_some());
    }

    #[test]
    fn digest_sorts_and_refuses_duplicates() {
        let items: Vec<_> = (0..100).map(|i| item(&format!("c{i}"), i)).collect();
        let mut reversed = items.clone();
        reversed.reverse();
        let a = Digest::new(items.clone()).unwrap();
        let b = Digest::new(reversed).unwrap();
        assert_eq!(a.root(), b.root());
        assert_eq!(a.root().count, 100);
        let tokens: Vec<u64> = a.items().map(DigestItem::token).collect();
        assert!(tokens.is_sorted());
        assert_eq!(a.get("c42"), Some(&items[42]));
        assert_eq!(a.get("nope"), None);
        let sum: u64 = RangeId::ROOT.children().map(|c| a.range(c).count).sum();
        assert_eq!(sum, 100);
        let mut dup = items;
        dup.push(item("c7", 1));
        assert_eq!(
            Digest::new(dup).unwrap_err(),
            DigestError::DuplicateContext("c7".into())
        );
    }

    #[test]
    fn encoding_round_trips_and_refuses_garbage() {
        let e = Epoch::new(3, Voter::new("node-1", u64::MAX));
        let m = DigestMessage::Parts {
            parts: vec![
                DigestPart::Range {
                    range: RangeId::new(3, 0xabc).unwrap(),
                    hash: sha256(b"h"),
                    count: 300,
                },
                DigestPart::Items {
                    range: RangeId::new(16, u64::MAX).unwrap(),
                    items: vec![item("x", 1), DigestItem::new("y", 0, sha256(b""), Some(e))],
                    last: false,
                },
                DigestPart::Resolved {
                    items: vec![item("z", u64::MAX)],
                    absent: vec!["w".into(), String::new()],
                },
            ],
            more: true,
        };
        let bytes = m.encode();
        assert_eq!(bytes.len(), m.wire_len());
        assert_eq!(DigestMessage::decode(&bytes), Ok(m));
        assert_eq!(DigestMessage::Done.encode(), vec![0]);
        for cut in 0..bytes.len() {
            assert!(DigestMessage::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(DigestMessage::decode(&trailing).is_err());
        // A range byte claiming depth 1 with prefix 0x10 (does not fit in 4 bits).
        let bad = [1, 0, 1, PART_RANGE, 1, 0x10];
        assert!(DigestMessage::decode(&bad).is_err());
        assert!(DigestMessage::decode(&[9]).is_err());
    }

    #[test]
    fn malformed_peer_messages_are_refused() {
        let digest = Digest::new((0..20).map(|i| item(&format!("c{i}"), i))).unwrap();
        let mut s = DigestSession::responder(digest.clone(), DigestSettings::default());
        let bad = DigestMessage::Parts {
            parts: vec![DigestPart::Range {
                range: RangeId {
                    depth: 1,
                    prefix: 99,
                },
                hash: sha256(b""),
                count: 1,
            }],
            more: false,
        };
        assert!(matches!(
            s.on_message(bad),
            Err(DigestError::InvalidRange { .. })
        ));

        let mut s = DigestSession::responder(digest.clone(), DigestSettings::default());
        let c = item("c3", 3);
        let elsewhere = RangeId::ROOT
            .children()
            .find(|r| !r.contains(c.token()))
            .unwrap();
        let outside = DigestMessage::Parts {
            parts: vec![DigestPart::Items {
                range: elsewhere,
                items: vec![c],
                last: true,
            }],
            more: false,
        };
        assert!(matches!(
            s.on_message(outside),
            Err(DigestError::ItemOutsideRange { .. })
        ));

        let mut s = DigestSession::responder(digest, DigestSettings::default());
        let unknown = DigestMessage::Parts {
            parts: vec![DigestPart::Resolved {
                items: vec![],
                absent: vec!["not-here".into()],
            }],
            more: false,
        };
        assert!(matches!(
            s.on_message(unknown),
            Err(DigestError::UnknownContext(_))
        ));
    }
}
