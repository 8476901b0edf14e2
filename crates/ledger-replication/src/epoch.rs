//! Epochs and epoch histories: the fencing tokens of the cluster and Kafka's leader-epoch
//! checkpoint (KIP-101).
//!
//! An [`Epoch`] is `(number, writer)`, ordered by number then writer id, so two claimants that
//! pick the same number are still ordered. Every replica keeps an [`EpochHistory`]: the list of
//! `(epoch, first sequence)` records of the epochs its log went through, like Kafka's
//! `leader-epoch-checkpoint`. A record `(e, s)` in a replica's history says: *my entries
//! `1..s-1` are exactly the log the writer of `e` started from, and my entries from `s` on (up to
//! the next record) were written by the writer of `e`*. A record may cover no entries at all (the
//! writer of `e` established itself but wrote nothing yet); the record still counts, it plays the
//! part of Raft's no-op entry.
//!
//! # Log matching
//! The writer of an epoch assigns each sequence at most once, never reuses its epoch after a
//! restart, and a replica accepts entries of epoch `e` only in order, after making its log a
//! prefix of that writer's. Hence: **if two logs give the same epoch to sequence `p`, they hold the
//! same entries at `1..=p`.** Comparing histories therefore finds where two logs part without
//! reading a single entry: [`common_prefix`]. Merkle roots are checked on top of that by whoever
//! applies entries (the runtime, with `ledger_core::tail::TailVerifier`), so a bug or a corrupted
//! store is caught rather than copied.
//!
//! # Truncation (KIP-101)
//! A follower must truncate to where its history parts from the writer's, not to a high
//! watermark: [`end_of_epoch`] is the writer's end of the follower's last epoch (KIP-101's
//! `OffsetsForLeaderEpoch`, with KIP-279's "largest epoch not above the one asked"), and
//! [`common_prefix`] is the general form the protocol uses (it also handles a follower whose
//! history holds epochs the writer never saw). The part beyond is *quarantined* by the runtime,
//! never merged and never served as committed.

use crate::identity::{NodeId, Voter};
use crate::quorum::Quorum;
use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// A writer's term of office for one context: `(number, writer)`, ordered by number, then by
/// writer. A replica that promised an epoch refuses every lower one: that is the fence.
///
/// The writer is a [`Voter`] (node id *and* incarnation), not just a node id: a node that lost its
/// data and claims again must never reuse the epoch its previous incarnation wrote in (it could
/// not know which entries that incarnation gave out under it). Ordering is by number, node id,
/// incarnation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch {
    pub number: u64,
    pub writer: Voter,
}

impl Epoch {
    pub fn new(number: u64, writer: Voter) -> Self {
        Epoch { number, writer }
    }

    /// The writer's node id.
    pub fn node(&self) -> &NodeId {
        &self.writer.node
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.number, self.writer)
    }
}

/// One line of an epoch history: the epoch, the first sequence it wrote (or would write), the
/// quorum it was established with, and whether its establishment is known to be complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: Epoch,
    /// First sequence of the epoch; the writer's log had `start - 1` entries when it began.
    pub start: u64,
    /// The replica sets whose majorities established the epoch (target first). Entries of the
    /// epoch are acknowledged at level `quorum` only with majorities of all of them.
    pub quorum: Quorum,
    /// The record is durable on a majority of every set of `quorum`: a later claim can rely on
    /// finding it and no longer needs the older sets (see [`crate::claim`]). Only ever goes from
    /// `false` to `true`.
    pub committed: bool,
}

/// Why a list of records is not a history.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HistoryError {
    #[error("epoch {next} does not follow epoch {previous}: epochs must increase")]
    EpochNotIncreasing { previous: Epoch, next: Epoch },
    #[error(
        "epoch {epoch} starts at sequence {start}, before the previous epoch's start {previous}"
    )]
    StartGoesBack {
        epoch: Epoch,
        start: u64,
        previous: u64,
    },
    #[error("epoch {epoch} starts at sequence 0; sequences start at 1")]
    ZeroStart { epoch: Epoch },
}

/// The epochs a log went through, oldest first: epochs strictly increase, starts never go back.
///
/// Sequences before the first record's start (entries written in single-node mode, before the
/// context had a writer epoch) belong to no epoch; they are taken as the same on every replica, as
/// a cluster starts from one node's data (Merkle roots catch the case where they are not).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EpochHistory {
    records: Vec<EpochRecord>,
}

impl EpochHistory {
    /// The empty history.
    pub fn new() -> Self {
        EpochHistory::default()
    }

    /// Checks and wraps a list of records.
    pub fn from_records(records: Vec<EpochRecord>) -> Result<Self, HistoryError> {
        let mut h = EpochHistory::new();
        for r in records {
            h.push(r)?;
        }
        Ok(h)
    }

    /// Appends a record after checking it follows the last one.
    pub fn push(&mut self, record: EpochRecord) -> Result<(), HistoryError> {
        if record.start == 0 {
            return Err(HistoryError::ZeroStart {
                epoch: record.epoch,
            });
        }
        if let Some(last) = self.records.last() {
            if record.epoch <= last.epoch {
                return Err(HistoryError::EpochNotIncreasing {
                    previous: last.epoch.clone(),
                    next: record.epoch,
                });
            }
            if record.start < last.start {
                return Err(HistoryError::StartGoesBack {
                    epoch: record.epoch,
                    start: record.start,
                    previous: last.start,
                });
            }
        }
        self.records.push(record);
        Ok(())
    }

    pub fn records(&self) -> &[EpochRecord] {
        &self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// The latest record.
    pub fn last(&self) -> Option<&EpochRecord> {
        self.records.last()
    }

    /// The latest epoch (the one "highest last epoch" compares).
    pub fn last_epoch(&self) -> Option<&Epoch> {
        self.records.last().map(|r| &r.epoch)
    }

    /// The record of `epoch`, if the history has one.
    pub fn record(&self, epoch: &Epoch) -> Option<&EpochRecord> {
        self.records
            .binary_search_by(|r| r.epoch.cmp(epoch))
            .ok()
            .map(|i| &self.records[i])
    }

    /// The record covering sequence `seq` (the last record starting at or before it), `None` for
    /// sequences before the first record. Does not look at the log size.
    pub fn record_at(&self, seq: u64) -> Option<&EpochRecord> {
        let i = self.records.partition_point(|r| r.start <= seq);
        i.checked_sub(1).map(|i| &self.records[i])
    }

    /// The epoch of sequence `seq` (see [`Self::record_at`]).
    pub fn epoch_at(&self, seq: u64) -> Option<&Epoch> {
        self.record_at(seq).map(|r| &r.epoch)
    }

    /// The records that describe a log of `size` entries: those starting at or before `size + 1`
    /// (a record starting at `size + 1` is an epoch that began right after the log and wrote
    /// nothing yet). Used after truncation and on restore, where a history may have been saved
    /// ahead of the entries it describes.
    pub fn clipped(&self, size: u64) -> EpochHistory {
        EpochHistory {
            records: self
                .records
                .iter()
                .filter(|r| r.start <= size.saturating_add(1))
                .cloned()
                .collect(),
        }
    }

    /// Marks the record of `epoch` committed. Returns whether anything changed.
    pub fn mark_committed(&mut self, epoch: &Epoch) -> bool {
        match self.records.iter_mut().find(|r| &r.epoch == epoch) {
            Some(r) if !r.committed => {
                r.committed = true;
                true
            }
            _ => false,
        }
    }

    /// Takes the `committed` flags of identical records of `other` (same epoch and start).
    pub fn merge_committed(&mut self, other: &EpochHistory) {
        for r in &mut self.records {
            if !r.committed
                && let Some(o) = other.record(&r.epoch)
                && o.start == r.start
                && o.committed
            {
                r.committed = true;
            }
        }
    }

    /// The latest record known to be committed.
    pub fn last_committed(&self) -> Option<&EpochRecord> {
        self.records.iter().rev().find(|r| r.committed)
    }

    /// Drops the records that cover no entries (a later record starts at the same sequence),
    /// except the newest committed one. Every start and every `epoch_at` stays the same, so log
    /// matching, truncation and the best-history rank (the last record is never dropped) do not
    /// change; of the records that cover nothing, claims need only the newest committed one (its
    /// target set) — an epoch that wrote nothing acknowledged nothing, and the record after it
    /// was established with its sets among the required ones. So a writer that stops and starts
    /// again and again leaves at most two records besides those covering entries. Returns
    /// whether anything was dropped.
    pub fn compact(&mut self) -> bool {
        let newest_committed = self.records.iter().rposition(|r| r.committed);
        let n = self.records.len();
        let empty: Vec<bool> = (0..n)
            .map(|i| i + 1 < n && self.records[i + 1].start == self.records[i].start)
            .collect();
        if !empty
            .iter()
            .enumerate()
            .any(|(i, &e)| e && Some(i) != newest_committed)
        {
            return false;
        }
        let records = std::mem::take(&mut self.records);
        self.records = records
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !empty[*i] || Some(*i) == newest_committed)
            .map(|(_, r)| r)
            .collect();
        true
    }
}

/// KIP-101 / KIP-279: the end (last sequence) of `epoch` in a log of `size` entries with this
/// history, taking the largest epoch of the history not above `epoch`: the start of the first
/// later epoch minus one, or `size` when no later epoch exists. A follower whose last epoch is
/// `epoch` keeps at most this many entries. Returns 0 when the history has no epoch at or below
/// `epoch` (everything the follower wrote in `epoch` is unknown to this log) except for the
/// epoch-less prefix before the first record.
pub fn end_of_epoch(history: &EpochHistory, epoch: &Epoch, size: u64) -> u64 {
    let records = history.records();
    let after = records.partition_point(|r| &r.epoch <= epoch);
    match records.get(after) {
        Some(next) => next.start.saturating_sub(1).min(size),
        None => size,
    }
}

/// A log as the protocol sees it: its epoch history and its size, plus, for a writer, the epoch it
/// is writing in (`tail`): the writer's own later entries all carry that epoch, so a follower
/// that already holds some of them (they arrived after this view was taken) still agrees with it.
#[derive(Clone, Copy, Debug)]
pub struct LogView<'a> {
    pub history: &'a EpochHistory,
    pub size: u64,
    pub tail: Option<&'a Epoch>,
}

impl<'a> LogView<'a> {
    /// A log that does not extend past its size.
    pub fn new(history: &'a EpochHistory, size: u64) -> Self {
        LogView {
            history,
            size,
            tail: None,
        }
    }

    /// A writer's log: sequences past `size` belong to `tail`.
    pub fn writer(history: &'a EpochHistory, size: u64, tail: &'a Epoch) -> Self {
        LogView {
            history,
            size,
            tail: Some(tail),
        }
    }

    /// What the view says about sequence `seq`: its epoch (`None` before the first record), or
    /// nothing at all past the end.
    fn at(&self, seq: u64) -> Option<Option<&'a Epoch>> {
        if seq <= self.size {
            Some(self.history.epoch_at(seq))
        } else {
            self.tail.map(Some)
        }
    }
}

/// How many leading entries two logs share, from their histories alone (log matching): the
/// largest `p` such that both logs give every sequence `1..=p` the same epoch. Never more than
/// the larger size. With `a` a follower and `b` the writer, `common_prefix(a, b) + 1` is where the
/// follower's log parts from the writer's, and the follower keeps `min(common, a.size)` entries.
pub fn common_prefix(a: LogView<'_>, b: LogView<'_>) -> u64 {
    let limit = a.size.max(b.size);
    if limit == 0 {
        return 0;
    }
    // Both views are constant between these points.
    let mut points: Vec<u64> = Vec::with_capacity(a.history.len() + b.history.len() + 3);
    points.push(1);
    points.extend(a.history.records().iter().map(|r| r.start));
    points.extend(b.history.records().iter().map(|r| r.start));
    points.push(a.size.saturating_add(1));
    points.push(b.size.saturating_add(1));
    points.retain(|&p| p >= 1 && p <= limit);
    points.sort_unstable();
    points.dedup();
    for p in points {
        match (a.at(p), b.at(p)) {
            (Some(x), Some(y)) if x == y => {}
            _ => return p - 1,
        }
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Voter;
    use proptest::prelude::*;

    fn ep(n: u64, w: &str) -> Epoch {
        Epoch::new(n, Voter::new(w, 0))
    }

    fn rec(n: u64, w: &str, start: u64) -> EpochRecord {
        EpochRecord {
            epoch: ep(n, w),
            start,
            quorum: Quorum::new([Voter::new("a", 0), Voter::new("b", 0), Voter::new("c", 0)]),
            committed: false,
        }
    }

    fn hist(rs: &[(u64, &str, u64)]) -> EpochHistory {
        EpochHistory::from_records(rs.iter().map(|&(n, w, s)| rec(n, w, s)).collect()).unwrap()
    }

    #[test]
    fn epochs_order_by_number_then_writer() {
        assert!(ep(2, "a") > ep(1, "z"));
        assert!(ep(2, "b") > ep(2, "a"));
        assert_eq!(ep(3, "n1").to_string(), "3@n1#0000000000000000");
        assert!(Epoch::new(2, Voter::new("a", 2)) > Epoch::new(2, Voter::new("a", 1)));
    }

    #[test]
    fn history_refuses_decreasing_epochs_and_starts() {
        let mut h = hist(&[(1, "a", 1), (2, "b", 5)]);
        assert!(matches!(
            h.push(rec(2, "a", 6)),
            Err(HistoryError::EpochNotIncreasing { .. })
        ));
        assert!(matches!(
            h.push(rec(3, "a", 4)),
            Err(HistoryError::StartGoesBack { .. })
        ));
        assert!(matches!(
            h.push(rec(3, "a", 0)),
            Err(HistoryError::ZeroStart { .. })
        ));
        // An epoch that wrote nothing: the next one starts at the same sequence.
        h.push(rec(3, "a", 5)).unwrap();
        assert_eq!(h.epoch_at(5), Some(&ep(3, "a")));
        assert_eq!(h.epoch_at(4), Some(&ep(1, "a")));
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn epoch_at_and_record_lookups() {
        let h = hist(&[(1, "a", 3), (4, "b", 7)]);
        assert_eq!(h.epoch_at(1), None, "before the first record");
        assert_eq!(h.epoch_at(3), Some(&ep(1, "a")));
        assert_eq!(h.epoch_at(6), Some(&ep(1, "a")));
        assert_eq!(h.epoch_at(7), Some(&ep(4, "b")));
        assert_eq!(h.epoch_at(1000), Some(&ep(4, "b")));
        assert_eq!(h.record(&ep(4, "b")).unwrap().start, 7);
        assert!(h.record(&ep(2, "b")).is_none());
        assert_eq!(h.last_epoch(), Some(&ep(4, "b")));
    }

    #[test]
    fn clipped_keeps_records_up_to_one_past_the_size() {
        let h = hist(&[(1, "a", 1), (2, "b", 5), (3, "c", 9)]);
        assert_eq!(h.clipped(8).len(), 3, "epoch 3 begins right after entry 8");
        assert_eq!(h.clipped(7).len(), 2);
        assert_eq!(h.clipped(0).len(), 1);
        assert_eq!(EpochHistory::new().clipped(5).len(), 0);
    }

    #[test]
    fn committed_flags_only_grow_and_merge_by_identity() {
        let mut h = hist(&[(1, "a", 1), (2, "b", 5)]);
        assert!(h.last_committed().is_none());
        assert!(h.mark_committed(&ep(1, "a")));
        assert!(!h.mark_committed(&ep(1, "a")));
        assert!(!h.mark_committed(&ep(9, "a")));
        assert_eq!(h.last_committed().unwrap().epoch, ep(1, "a"));
        let mut other = hist(&[(1, "a", 1), (2, "b", 6)]);
        other.mark_committed(&ep(2, "b"));
        h.merge_committed(&other);
        assert!(
            !h.records()[1].committed,
            "different start: not the same record"
        );
        let mut same = hist(&[(2, "b", 5)]);
        same.mark_committed(&ep(2, "b"));
        h.merge_committed(&same);
        assert!(h.records()[1].committed);
    }

    #[test]
    fn compaction_keeps_covering_records_the_newest_committed_and_the_last() {
        let mut h = hist(&[
            (1, "a", 1),
            (2, "b", 4),
            (3, "c", 4),
            (4, "a", 4),
            (5, "b", 9),
        ]);
        h.mark_committed(&ep(1, "a"));
        h.mark_committed(&ep(3, "c"));
        let before: Vec<Option<Epoch>> = (1..=12).map(|s| h.epoch_at(s).cloned()).collect();
        assert!(h.compact());
        let kept: Vec<u64> = h.records().iter().map(|r| r.epoch.number).collect();
        // 2 and 3 cover nothing (4 starts where they do); 3 is the newest committed.
        assert_eq!(kept, [1, 3, 4, 5]);
        let after: Vec<Option<Epoch>> = (1..=12).map(|s| h.epoch_at(s).cloned()).collect();
        assert_eq!(before, after, "every sequence keeps its epoch");
        assert_eq!(h.last_committed().unwrap().epoch, ep(3, "c"));
        assert!(!h.compact(), "nothing more to drop");
        // The last record covers the log's end: never dropped, even when it wrote nothing.
        let mut idle = hist(&[(1, "a", 1), (2, "b", 3)]);
        assert!(!idle.compact());
        assert_eq!(idle.len(), 2);
    }

    #[test]
    fn ten_thousand_idle_claims_leave_at_most_three_records() {
        // A log of 5 entries written in epoch 1, then 10,000 epochs that wrote nothing, each
        // committed some time after it was established (as a writer's claim does).
        let mut h = hist(&[(1, "a", 1)]);
        h.mark_committed(&ep(1, "a"));
        let mut longest = 0;
        for n in 2..10_002u64 {
            h.push(rec(n, if n % 2 == 0 { "b" } else { "a" }, 6))
                .unwrap();
            h.compact();
            longest = longest.max(h.len());
            if n % 3 != 0 {
                h.mark_committed(&Epoch::new(
                    n,
                    Voter::new(if n % 2 == 0 { "b" } else { "a" }, 0),
                ));
                h.compact();
            }
            longest = longest.max(h.len());
            assert_eq!(h.epoch_at(3), Some(&ep(1, "a")));
        }
        assert!(longest <= 3, "{longest} records");
        assert_eq!(h.last_epoch().unwrap().number, 10_001);
    }

    #[test]
    fn end_of_epoch_follows_kip_101_and_279() {
        // Leader: epoch 1 wrote 1..=4, epoch 3 wrote 5..=9, epoch 5 from 10.
        let leader = hist(&[(1, "a", 1), (3, "a", 5), (5, "b", 10)]);
        let size = 12;
        assert_eq!(end_of_epoch(&leader, &ep(1, "a"), size), 4);
        assert_eq!(end_of_epoch(&leader, &ep(3, "a"), size), 9);
        assert_eq!(end_of_epoch(&leader, &ep(5, "b"), size), 12);
        // An epoch the leader never had: the largest one below it (KIP-279).
        assert_eq!(end_of_epoch(&leader, &ep(2, "z"), size), 4);
        assert_eq!(end_of_epoch(&leader, &ep(4, "a"), size), 9);
        // Below everything: nothing of it survives.
        assert_eq!(end_of_epoch(&leader, &ep(0, "a"), size), 0);
        // Capped at the size.
        assert_eq!(end_of_epoch(&leader, &ep(3, "a"), 7), 7);
    }

    #[test]
    fn common_prefix_finds_the_divergence_point() {
        let writer = hist(&[(1, "a", 1), (2, "b", 6), (4, "c", 9)]);
        let w = LogView::new(&writer, 12);
        // Same history, shorter: a prefix (all of it is shared).
        assert_eq!(common_prefix(LogView::new(&writer, 7), w), 7);
        // A follower that kept writing in epoch 1 after the writer of epoch 2 took over.
        let stale = hist(&[(1, "a", 1)]);
        assert_eq!(common_prefix(LogView::new(&stale, 8), w), 5);
        // A follower with an epoch the writer never saw (its epoch 1 ran on to 6).
        let other = hist(&[(1, "a", 1), (3, "z", 7)]);
        assert_eq!(common_prefix(LogView::new(&other, 10), w), 5);
        // Empty logs share nothing and everything.
        let empty = EpochHistory::new();
        assert_eq!(
            common_prefix(LogView::new(&empty, 0), LogView::new(&empty, 0)),
            0
        );
        assert_eq!(common_prefix(LogView::new(&empty, 0), w), 0);
    }

    #[test]
    fn writer_tail_covers_entries_the_view_did_not_have_yet() {
        let writer = hist(&[(1, "a", 1), (2, "b", 4)]);
        let epoch = ep(2, "b");
        // The follower already holds entries 4..=9 of epoch 2; the view is older (size 5).
        let follower = hist(&[(1, "a", 1), (2, "b", 4)]);
        let f = LogView::new(&follower, 9);
        assert_eq!(common_prefix(f, LogView::writer(&writer, 5, &epoch)), 9);
        assert_eq!(common_prefix(f, LogView::new(&writer, 5)), 5);
        // Stale epoch-1 entries past the writer's end are divergent even with a tail.
        let stale = hist(&[(1, "a", 1)]);
        assert_eq!(
            common_prefix(LogView::new(&stale, 9), LogView::writer(&writer, 5, &epoch)),
            3
        );
    }

    #[test]
    fn an_empty_epoch_marker_is_part_of_the_comparison() {
        // The follower recorded epoch 2 (which wrote nothing) and then epoch 3.
        let a = hist(&[(1, "a", 1), (2, "b", 5), (3, "c", 5)]);
        let b = hist(&[(1, "a", 1), (3, "c", 5)]);
        assert_eq!(common_prefix(LogView::new(&a, 8), LogView::new(&b, 8)), 8);
    }

    /// Reference: per-sequence epoch lists.
    fn expand(h: &EpochHistory, size: u64) -> Vec<Option<Epoch>> {
        (1..=size).map(|s| h.epoch_at(s).cloned()).collect()
    }

    fn arb_history() -> impl Strategy<Value = (EpochHistory, u64)> {
        (
            proptest::collection::vec((1u64..4, 0u64..4), 0..5),
            0u64..12,
        )
            .prop_map(|(steps, extra)| {
                let mut h = EpochHistory::new();
                let mut number = 0;
                let mut start = 1;
                for (dn, ds) in steps {
                    number += dn;
                    start += ds;
                    h.push(rec(number, "w", start)).unwrap();
                }
                let size = start - 1 + extra;
                (h, size)
            })
    }

    proptest! {
        #[test]
        fn common_prefix_matches_a_per_sequence_comparison(
            (ha, sa) in arb_history(), (hb, sb) in arb_history()
        ) {
            let ea = expand(&ha, sa);
            let eb = expand(&hb, sb);
            let mut expected = 0u64;
            for i in 0..sa.max(sb) as usize {
                match (ea.get(i), eb.get(i)) {
                    (Some(x), Some(y)) if x == y => expected += 1,
                    _ => break,
                }
            }
            prop_assert_eq!(common_prefix(LogView::new(&ha, sa), LogView::new(&hb, sb)), expected);
            prop_assert_eq!(common_prefix(LogView::new(&hb, sb), LogView::new(&ha, sa)), expected);
        }

        #[test]
        fn end_of_epoch_of_the_followers_last_epoch_is_the_truncation_point(
            (hw, sw) in arb_history(), k in 0u64..20
        ) {
            // A follower that took the writer's history up to some point and may have kept
            // writing in its last epoch past the writer's end of it: KIP-101 truncation
            // (the writer's end of the follower's last epoch) is exactly the common prefix.
            let hf = hw.clipped(k);
            if let Some(last) = hf.last_epoch() {
                let end = end_of_epoch(&hw, last, sw).min(k);
                let common = common_prefix(LogView::new(&hf, k), LogView::new(&hw, sw)).min(k);
                prop_assert_eq!(end, common);
            }
        }
    }
}
