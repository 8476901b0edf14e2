//! The replica state machine: one context's log as a member of its replica set sees it.
//!
//! Persistent part ([`PersistentState`], saved with [`Command::SaveState`]): the promised epoch,
//! the epoch history, a commit index; plus the entries themselves (the size is their number).
//! Volatile part: which writer it currently follows and when it last heard from it.
//!
//! Rules, each one line of the safety argument:
//! - **Promise** `e` iff `e` is not below the promise held; the promise is saved before the
//!   answer is sent, and the answer carries the head (size, history), so a claimant learns every
//!   entry this replica accepted before promising.
//! - **View fencing**: a claim made under an older placement view than the replica has seen
//!   (promised under, saved as `promised_view`, or learned from its own node's view) is refused
//!   with [`PromiseAnswer::StaleView`]; granting a claim of a newer view saves that view with
//!   the promise.
//! - **Fence**: entries of an epoch below the promise are refused; the answer is a cursor that
//!   shows the higher promise, which makes the stale writer step down.
//! - **Accepting** entries of epoch `e` promises `e` (saved before the entries), so an entry
//!   acknowledged to writer `e` can no longer be taken back by a writer below `e`.
//! - **Truncate, never merge**: before appending, the replica compares its history with the
//!   writer's ([`common_prefix`]); the part that parts from the writer's log is quarantined
//!   ([`Command::Quarantine`]), then the batch's new entries are appended and the writer's history
//!   adopted for the entries held. Duplicates are skipped, a gap is refused.
//! - **Durable acks only**: the cursor that acknowledges a batch follows the `Append` in the
//!   command list, so it leaves only once the entries are on disk.

use crate::epoch::{Epoch, EpochHistory, LogView, common_prefix};
use crate::identity::{NodeId, Voter};
use crate::protocol::{
    Command, Entries, EntriesHeader, EntriesKind, Head, LogEntry, Message, PersistentState,
    PromiseAnswer,
};

/// One context's replica on this node.
#[derive(Clone, Debug)]
pub struct Replica {
    me: Voter,
    state: PersistentState,
    size: u64,
    /// The writer followed (volatile): where cursors go.
    writer: Option<Epoch>,
    /// The placement view version this node is at (volatile; `promised_view` is the saved
    /// bound).
    view: u64,
    last_heard: u64,
    last_poll: u64,
}

impl Replica {
    /// A replica restored from storage: its saved protocol state and the number of entries
    /// stored. A history saved ahead of its entries (a crash between the two writes) is clipped
    /// to the entries actually there.
    pub fn restore(me: Voter, mut state: PersistentState, size: u64) -> Self {
        state.history = state.history.clipped(size);
        state.commit_index = state.commit_index.min(size);
        Replica {
            me,
            state,
            size,
            writer: None,
            view: 0,
            last_heard: 0,
            last_poll: 0,
        }
    }

    /// A replica with no entries and no promise (a new context, or a new incarnation).
    pub fn empty(me: Voter) -> Self {
        Replica::restore(me, PersistentState::default(), 0)
    }

    pub fn me(&self) -> &Voter {
        &self.me
    }

    /// Number of entries held.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn promised(&self) -> Option<&Epoch> {
        self.state.promised.as_ref()
    }

    pub fn history(&self) -> &EpochHistory {
        &self.state.history
    }

    /// Entries up to here are known to be acknowledged by a quorum: the part of the log that may
    /// be served as committed.
    pub fn commit_index(&self) -> u64 {
        self.state.commit_index
    }

    /// The persisted protocol state as it should be on disk.
    pub fn state(&self) -> &PersistentState {
        &self.state
    }

    /// The node learned placement view `version` (views only go forward).
    pub fn set_view(&mut self, version: u64) {
        self.view = self.view.max(version);
    }

    /// The newest placement view this replica knows of: claims under older ones are refused.
    pub fn known_view(&self) -> u64 {
        self.view.max(self.state.promised_view)
    }

    /// The writer this replica follows (learned from its batches; volatile).
    pub fn writer(&self) -> Option<&Epoch> {
        self.writer.as_ref()
    }

    /// The head reported in answers and cursors.
    pub fn head(&self) -> Head {
        Head {
            promised: self.state.promised.clone(),
            size: self.size,
            history: self.state.history.clone(),
            commit_index: self.state.commit_index,
        }
    }

    fn view(&self) -> LogView<'_> {
        LogView::new(&self.state.history, self.size)
    }

    fn save(&self) -> PersistentState {
        self.state.clone()
    }

    /// A claimant asks for a promise of `epoch`, claimed under placement view `view`.
    pub fn on_promise_request<E>(
        &mut self,
        from: &Voter,
        epoch: Epoch,
        view: u64,
    ) -> Vec<Command<E>> {
        if &epoch.writer != from {
            return Vec::new(); // only the claimant itself asks for its epoch
        }
        let mut out = Vec::new();
        let known = self.known_view();
        #[cfg(ledger_mutant = "no_view_fencing")]
        let known = {
            // Broken on purpose: claims of any view are answered.
            let _ = known;
            0
        };
        if view < known {
            out.push(Command::Send {
                to: from.node.clone(),
                message: Message::PromiseReply {
                    epoch,
                    answer: PromiseAnswer::StaleView { view: known },
                },
            });
            return out;
        }
        match &self.state.promised {
            Some(p) if *p > epoch => {
                out.push(Command::Send {
                    to: from.node.clone(),
                    message: Message::PromiseReply {
                        epoch,
                        answer: PromiseAnswer::Refused {
                            promised: p.clone(),
                        },
                    },
                });
            }
            held => {
                // Equal: the same claimant asking again (its answer was lost, or it claims again
                // under a newer view); answer again.
                let newer_view = view > self.state.promised_view;
                if held.as_ref() != Some(&epoch) || newer_view {
                    self.state.promised = Some(epoch.clone());
                    self.state.promised_view = self.state.promised_view.max(view);
                    out.push(Command::SaveState(self.save()));
                }
                out.push(Command::Send {
                    to: from.node.clone(),
                    message: Message::PromiseReply {
                        epoch,
                        answer: PromiseAnswer::Granted(self.head()),
                    },
                });
            }
        }
        out
    }

    /// A batch from the writer of `batch.header.epoch` (or, through the claim, entries fetched
    /// for a claim of this node). Returns the commands to quarantine, save, append and answer.
    pub fn on_entries<E: LogEntry>(
        &mut self,
        from: &Voter,
        batch: Entries<E>,
        now: u64,
    ) -> Vec<Command<E>> {
        let Entries {
            header,
            prev,
            entries,
            root,
        } = batch;
        let EntriesHeader {
            kind,
            epoch,
            head: writer,
            commit_index,
        } = header;
        if kind != EntriesKind::Replicate || &epoch.writer != from {
            return Vec::new();
        }
        let reply_to = from.node.clone();
        if let Some(p) = &self.state.promised
            && *p > epoch
        {
            // Fenced: the cursor shows the higher promise.
            return vec![self.cursor_to(reply_to)];
        }
        let mut out = Vec::new();
        let mut dirty = false;
        if self.state.promised.as_ref() != Some(&epoch) {
            self.state.promised = Some(epoch.clone());
            dirty = true;
        }
        self.writer = Some(epoch.clone());
        self.last_heard = now;

        // 1. Part of my log that is not the writer's: quarantine it.
        let common = common_prefix(
            self.view(),
            LogView::writer(&writer.history, writer.size, &epoch),
        )
        .min(self.size);
        if common < self.size {
            out.push(Command::Quarantine {
                from_sequence: common + 1,
            });
            self.size = common;
            self.state.history = self.state.history.clipped(common);
            self.state.commit_index = self.state.commit_index.min(common);
            dirty = true;
        }

        // 2. New entries: consecutive from prev + 1, skipping those already held.
        let consecutive = entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.sequence() == prev + 1 + i as u64);
        let mut append = Vec::new();
        let mut expected_root = None;
        if consecutive && prev <= self.size {
            let skip = (self.size - prev) as usize;
            if skip < entries.len() {
                append = entries.into_iter().skip(skip).collect::<Vec<E>>();
                expected_root = root;
            }
        }
        let new_size = self.size + append.len() as u64;

        // 3. My log is now a prefix of the writer's: take its history for what I hold.
        let mut history = writer.history.clipped(new_size);
        history.merge_committed(&self.state.history);
        if history != self.state.history {
            self.state.history = history;
            dirty = true;
        }
        let known_committed = commit_index.min(new_size);
        if known_committed > self.state.commit_index {
            self.state.commit_index = known_committed;
        }
        if dirty {
            // Saved before the entries: a history ahead of its entries is clipped on restore,
            // entries without their history would be misattributed.
            out.push(Command::SaveState(self.save()));
        }
        if !append.is_empty() {
            self.size = new_size;
            out.push(Command::Append {
                entries: append,
                expected_root,
            });
        }
        out.push(self.cursor_to(reply_to));
        out
    }

    /// A claimant asks for entries `after + 1 ..= upto` to catch up to this replica's log.
    pub fn on_fetch_request<E>(
        &mut self,
        from: &Voter,
        epoch: Epoch,
        after: u64,
        upto: u64,
    ) -> Vec<Command<E>> {
        if &epoch.writer != from {
            return Vec::new();
        }
        if let Some(p) = &self.state.promised
            && *p > epoch
        {
            return vec![Command::Send {
                to: from.node.clone(),
                message: Message::PromiseReply {
                    epoch,
                    answer: PromiseAnswer::Refused {
                        promised: p.clone(),
                    },
                },
            }];
        }
        let upto = upto.min(self.size);
        let after = after.min(upto);
        vec![Command::SendEntries {
            to: from.node.clone(),
            header: EntriesHeader {
                kind: EntriesKind::Fetched,
                epoch,
                head: self.head(),
                commit_index: 0,
            },
            after,
            upto,
        }]
    }

    /// Time passes: a follower that heard nothing from its writer for `poll_ms` sends it a
    /// cursor (which also asks for anything missed).
    pub fn poll<E>(&mut self, now: u64, poll_ms: u64) -> Vec<Command<E>> {
        let Some(writer) = &self.writer else {
            return Vec::new();
        };
        if writer.writer == self.me
            || now.saturating_sub(self.last_heard) < poll_ms
            || now.saturating_sub(self.last_poll) < poll_ms
        {
            return Vec::new();
        }
        self.last_poll = now;
        let to = writer.writer.node.clone();
        vec![self.cursor_to(to)]
    }

    /// A follower that knows no writer (just restarted, or its writer stepped down) sends its
    /// cursor to the node placement names writer, at most every `poll_ms`: that node then
    /// takes up the context (claims it or answers as its writer), so this replica learns what
    /// is committed even if nobody appends.
    pub fn poll_placement<E>(&mut self, writer: NodeId, now: u64, poll_ms: u64) -> Vec<Command<E>> {
        if self.writer.is_some()
            || writer == self.me.node
            || now.saturating_sub(self.last_poll) < poll_ms
        {
            return Vec::new();
        }
        self.last_poll = now;
        vec![self.cursor_to(writer)]
    }

    /// Forgets the writer followed (it stepped down or another one took over).
    pub fn forget_writer(&mut self) {
        self.writer = None;
    }

    fn cursor_to<E>(&self, to: NodeId) -> Command<E> {
        Command::Send {
            to,
            message: Message::Cursor(self.head()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epoch::EpochRecord;
    use crate::quorum::Quorum;
    use ledger_core::Hash;

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct E(u64, u8);

    impl LogEntry for E {
        fn sequence(&self) -> u64 {
            self.0
        }
    }

    fn v(n: &str) -> Voter {
        Voter::new(n, 1)
    }

    fn ep(n: u64, w: &str) -> Epoch {
        Epoch::new(n, v(w))
    }

    fn rec(n: u64, w: &str, start: u64) -> EpochRecord {
        EpochRecord {
            epoch: ep(n, w),
            start,
            quorum: Quorum::new([v("a"), v("b"), v("c")]),
            committed: false,
        }
    }

    fn hist(rs: &[(u64, &str, u64)]) -> EpochHistory {
        EpochHistory::from_records(rs.iter().map(|&(n, w, s)| rec(n, w, s)).collect()).unwrap()
    }

    fn writer_head(epoch: &Epoch, history: EpochHistory, size: u64) -> Head {
        Head {
            promised: Some(epoch.clone()),
            size,
            history,
            commit_index: 0,
        }
    }

    fn batch(epoch: &Epoch, head: Head, prev: u64, n: u64, tag: u8) -> Entries<E> {
        Entries {
            header: EntriesHeader {
                kind: EntriesKind::Replicate,
                epoch: epoch.clone(),
                head,
                commit_index: 0,
            },
            prev,
            entries: (prev + 1..=prev + n).map(|s| E(s, tag)).collect(),
            root: Some(Hash([tag; 32])),
        }
    }

    fn replica_with(history: EpochHistory, size: u64, promised: Option<Epoch>) -> Replica {
        Replica::restore(
            v("b"),
            PersistentState {
                promised,
                history,
                commit_index: 0,
                promised_view: 0,
            },
            size,
        )
    }

    fn kinds(cmds: &[Command<E>]) -> Vec<&'static str> {
        cmds.iter()
            .map(|c| match c {
                Command::Send {
                    message: Message::Cursor(_),
                    ..
                } => "cursor",
                Command::Send {
                    message: Message::PromiseReply { .. },
                    ..
                } => "promise-reply",
                Command::Send { .. } => "send",
                Command::SendEntries { .. } => "send-entries",
                Command::Quarantine { .. } => "quarantine",
                Command::SaveState(_) => "save",
                Command::Append { .. } => "append",
                _ => "other",
            })
            .collect()
    }

    fn cursor(cmds: &[Command<E>]) -> &Head {
        match cmds.last() {
            Some(Command::Send {
                message: Message::Cursor(h),
                ..
            }) => h,
            other => panic!("expected a cursor last, got {other:?}"),
        }
    }

    #[test]
    fn grants_a_higher_promise_and_saves_it_before_answering() {
        let mut r = replica_with(hist(&[(1, "a", 1)]), 4, Some(ep(1, "a")));
        let cmds: Vec<Command<E>> = r.on_promise_request(&v("c"), ep(2, "c"), 0);
        assert_eq!(kinds(&cmds), ["save", "promise-reply"]);
        match &cmds[1] {
            Command::Send {
                to,
                message:
                    Message::PromiseReply {
                        answer: PromiseAnswer::Granted(head),
                        ..
                    },
            } => {
                assert_eq!(to, &NodeId::from("c"));
                assert_eq!(head.size, 4);
                assert_eq!(head.history, hist(&[(1, "a", 1)]));
                assert_eq!(head.promised, Some(ep(2, "c")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.promised(), Some(&ep(2, "c")));
    }

    #[test]
    fn refuses_a_claim_under_an_older_view_and_saves_the_view_it_promised_under() {
        let mut r = replica_with(EpochHistory::new(), 0, None);
        let cmds: Vec<Command<E>> = r.on_promise_request(&v("c"), ep(1, "c"), 5);
        assert_eq!(kinds(&cmds), ["save", "promise-reply"]);
        assert_eq!(r.state().promised_view, 5);
        // The same claimant again under a newer view: saved again.
        let cmds: Vec<Command<E>> = r.on_promise_request(&v("c"), ep(1, "c"), 6);
        assert_eq!(kinds(&cmds), ["save", "promise-reply"]);
        // A higher epoch under an older view: refused, whatever its number.
        let cmds: Vec<Command<E>> = r.on_promise_request(&v("a"), ep(9, "a"), 5);
        assert!(matches!(
            &cmds[..],
            [Command::Send {
                message: Message::PromiseReply {
                    answer: PromiseAnswer::StaleView { view: 6 },
                    ..
                },
                ..
            }]
        ));
        assert_eq!(r.promised(), Some(&ep(1, "c")));
        // The node's own view counts too, before any promise was saved under it.
        let mut fresh = replica_with(EpochHistory::new(), 0, None);
        fresh.set_view(3);
        let cmds: Vec<Command<E>> = fresh.on_promise_request(&v("a"), ep(1, "a"), 2);
        assert!(matches!(
            &cmds[..],
            [Command::Send {
                message: Message::PromiseReply {
                    answer: PromiseAnswer::StaleView { view: 3 },
                    ..
                },
                ..
            }]
        ));
        // Restored, the saved view still fences.
        let again = Replica::restore(v("b"), r.state().clone(), 0);
        assert_eq!(again.known_view(), 6);
    }

    #[test]
    fn state_saved_without_views_decodes_and_encodes_as_before() {
        let json = r#"{"promised":null,"history":{"records":[]},"commit_index":3}"#;
        let s: PersistentState = serde_json::from_str(json).unwrap();
        assert_eq!(s.promised_view, 0);
        assert_eq!(serde_json::to_string(&s).unwrap(), json);
    }

    #[test]
    fn refuses_a_lower_promise_and_re_grants_the_same_one() {
        let mut r = replica_with(EpochHistory::new(), 0, Some(ep(5, "a")));
        let cmds: Vec<Command<E>> = r.on_promise_request(&v("c"), ep(4, "c"), 0);
        assert!(matches!(
            &cmds[..],
            [Command::Send {
                message: Message::PromiseReply {
                    answer: PromiseAnswer::Refused { promised },
                    ..
                },
                ..
            }]
                if *promised == ep(5, "a")
        ));
        // Same epoch again (the answer was lost): granted, nothing to save.
        let cmds: Vec<Command<E>> = r.on_promise_request(&v("a"), ep(5, "a"), 0);
        assert_eq!(kinds(&cmds), ["promise-reply"]);
        // Writer id breaks ties between equal numbers.
        let cmds: Vec<Command<E>> = r.on_promise_request(&v("b"), ep(5, "b"), 0);
        assert_eq!(kinds(&cmds), ["save", "promise-reply"]);
    }

    #[test]
    fn a_new_incarnation_cannot_reuse_its_old_epoch() {
        let old = Epoch::new(3, Voter::new("a", 1));
        let mut r = replica_with(EpochHistory::new(), 0, Some(old));
        // Node "a" came back with lost data under incarnation 0 and picked the same number.
        let again = Epoch::new(3, Voter::new("a", 0));
        let cmds: Vec<Command<E>> = r.on_promise_request(&Voter::new("a", 0), again, 0);
        assert!(matches!(
            &cmds[..],
            [Command::Send {
                message: Message::PromiseReply {
                    answer: PromiseAnswer::Refused { .. },
                    ..
                },
                ..
            }]
        ));
    }

    #[test]
    fn ignores_requests_not_sent_by_the_epochs_writer() {
        let mut r = Replica::empty(v("b"));
        let cmds: Vec<Command<E>> = r.on_promise_request(&v("c"), ep(1, "a"), 0);
        assert!(cmds.is_empty());
        let cmds = r.on_entries(
            &v("c"),
            batch(
                &ep(1, "a"),
                writer_head(&ep(1, "a"), hist(&[(1, "a", 1)]), 1),
                0,
                1,
                1,
            ),
            0,
        );
        assert!(cmds.is_empty());
        assert_eq!(r.promised(), None);
    }

    #[test]
    fn appends_a_continuing_batch_then_acknowledges_it() {
        let e = ep(1, "a");
        let mut r = Replica::empty(v("b"));
        let h = hist(&[(1, "a", 1)]);
        let cmds = r.on_entries(
            &v("a"),
            batch(&e, writer_head(&e, h.clone(), 3), 0, 3, 7),
            10,
        );
        assert_eq!(kinds(&cmds), ["save", "append", "cursor"]);
        match &cmds[1] {
            Command::Append {
                entries,
                expected_root,
            } => {
                assert_eq!(entries.len(), 3);
                assert_eq!(*expected_root, Some(Hash([7; 32])));
            }
            other => panic!("{other:?}"),
        }
        let head = cursor(&cmds);
        assert_eq!((head.size, &head.history), (3, &h));
        assert_eq!(r.writer(), Some(&e));
        // The next batch needs no save: nothing in the protocol state changed.
        let cmds = r.on_entries(
            &v("a"),
            batch(&e, writer_head(&e, h.clone(), 5), 3, 2, 7),
            11,
        );
        assert_eq!(kinds(&cmds), ["append", "cursor"]);
        assert_eq!(r.size(), 5);
    }

    #[test]
    fn skips_entries_already_held_and_refuses_gaps() {
        let e = ep(1, "a");
        let h = hist(&[(1, "a", 1)]);
        let mut r = replica_with(h.clone(), 4, Some(e.clone()));
        // A duplicate of 2..=5: only 5 is new.
        let cmds = r.on_entries(
            &v("a"),
            batch(&e, writer_head(&e, h.clone(), 5), 1, 4, 1),
            0,
        );
        match &cmds[0] {
            Command::Append { entries, .. } => assert_eq!(entries, &vec![E(5, 1)]),
            other => panic!("{other:?}"),
        }
        // Entirely old: nothing to do but answer.
        let cmds = r.on_entries(
            &v("a"),
            batch(&e, writer_head(&e, h.clone(), 5), 0, 3, 1),
            0,
        );
        assert_eq!(kinds(&cmds), ["cursor"]);
        // A gap: refused, the cursor says where to resume.
        let cmds = r.on_entries(
            &v("a"),
            batch(&e, writer_head(&e, h.clone(), 9), 7, 2, 1),
            0,
        );
        assert_eq!(kinds(&cmds), ["cursor"]);
        assert_eq!(cursor(&cmds).size, 5);
        // Out-of-order sequences inside a batch: refused too.
        let mut bad = batch(&e, writer_head(&e, h, 9), 5, 2, 1);
        bad.entries.swap(0, 1);
        let cmds = r.on_entries(&v("a"), bad, 0);
        assert_eq!(kinds(&cmds), ["cursor"]);
        assert_eq!(r.size(), 5);
    }

    #[test]
    fn fences_a_stale_writer_with_a_cursor_showing_the_higher_promise() {
        let mut r = replica_with(hist(&[(1, "a", 1)]), 3, Some(ep(2, "c")));
        let old = ep(1, "a");
        let cmds = r.on_entries(
            &v("a"),
            batch(&old, writer_head(&old, hist(&[(1, "a", 1)]), 4), 3, 1, 1),
            0,
        );
        assert_eq!(kinds(&cmds), ["cursor"]);
        assert_eq!(cursor(&cmds).promised, Some(ep(2, "c")));
        assert_eq!(r.size(), 3, "nothing appended");
    }

    #[test]
    fn accepting_a_newer_writer_promises_its_epoch() {
        let mut r = replica_with(hist(&[(1, "a", 1)]), 2, Some(ep(1, "a")));
        let e = ep(2, "c");
        let cmds = r.on_entries(
            &v("c"),
            batch(
                &e,
                writer_head(&e, hist(&[(1, "a", 1), (2, "c", 3)]), 3),
                2,
                1,
                2,
            ),
            0,
        );
        assert_eq!(kinds(&cmds), ["save", "append", "cursor"]);
        match &cmds[0] {
            Command::SaveState(s) => {
                assert_eq!(s.promised, Some(e.clone()));
                assert_eq!(s.history, hist(&[(1, "a", 1), (2, "c", 3)]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn quarantines_a_divergent_suffix_before_appending() {
        // This replica kept entries 5..=8 from epoch 1 after epoch 2 took over at 5.
        let mut r = replica_with(hist(&[(1, "a", 1)]), 8, Some(ep(1, "a")));
        let e = ep(2, "c");
        let wh = hist(&[(1, "a", 1), (2, "c", 5)]);
        let cmds = r.on_entries(
            &v("c"),
            batch(&e, writer_head(&e, wh.clone(), 6), 4, 2, 9),
            0,
        );
        assert_eq!(kinds(&cmds), ["quarantine", "save", "append", "cursor"]);
        assert!(matches!(cmds[0], Command::Quarantine { from_sequence: 5 }));
        match &cmds[2] {
            Command::Append { entries, .. } => assert_eq!(entries, &vec![E(5, 9), E(6, 9)]),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.size(), 6);
        assert_eq!(r.history(), &wh);
    }

    #[test]
    fn an_empty_batch_truncates_a_stale_tail_past_the_writers_end() {
        // A heartbeat from the new writer: the follower's epoch-1 entries 4..=6 are not the
        // writer's (its epoch 1 ended at 3).
        let mut r = replica_with(hist(&[(1, "a", 1)]), 6, Some(ep(1, "a")));
        let e = ep(2, "c");
        let wh = hist(&[(1, "a", 1), (2, "c", 4)]);
        let cmds = r.on_entries(
            &v("c"),
            batch(&e, writer_head(&e, wh.clone(), 3), 3, 0, 0),
            0,
        );
        assert_eq!(kinds(&cmds), ["quarantine", "save", "cursor"]);
        assert_eq!(r.size(), 3);
        assert_eq!(
            r.history(),
            &wh,
            "caught up to the start of epoch 2: record adopted"
        );
    }

    #[test]
    fn a_late_batch_of_the_same_writer_never_truncates_its_newer_entries() {
        let e = ep(2, "c");
        let wh = hist(&[(1, "a", 1), (2, "c", 3)]);
        let mut r = replica_with(wh.clone(), 9, Some(e.clone()));
        // Sent when the writer had 4 entries; we already hold 9 of its epoch.
        let cmds = r.on_entries(&v("c"), batch(&e, writer_head(&e, wh, 4), 2, 2, 1), 0);
        assert_eq!(kinds(&cmds), ["cursor"]);
        assert_eq!(r.size(), 9);
    }

    #[test]
    fn adopts_an_epoch_record_only_once_caught_up_to_its_start() {
        let mut r = Replica::empty(v("b"));
        let e = ep(3, "c");
        let wh = hist(&[(1, "a", 1), (3, "c", 6)]);
        let cmds = r.on_entries(
            &v("c"),
            batch(&e, writer_head(&e, wh.clone(), 7), 0, 2, 1),
            0,
        );
        assert_eq!(kinds(&cmds), ["save", "append", "cursor"]);
        assert_eq!(r.history(), &hist(&[(1, "a", 1)]));
        let cmds = r.on_entries(
            &v("c"),
            batch(&e, writer_head(&e, wh.clone(), 7), 2, 3, 1),
            0,
        );
        assert_eq!(kinds(&cmds), ["save", "append", "cursor"]);
        assert_eq!(r.history(), &wh, "size 5: epoch 3 begins right after");
    }

    #[test]
    fn learns_the_commit_index_only_for_entries_it_holds() {
        let e = ep(1, "a");
        let h = hist(&[(1, "a", 1)]);
        let mut r = Replica::empty(v("b"));
        let mut b = batch(&e, writer_head(&e, h, 10), 0, 4, 1);
        b.header.commit_index = 9;
        r.on_entries(&v("a"), b, 0);
        assert_eq!(r.commit_index(), 4);
    }

    #[test]
    fn keeps_committed_flags_when_adopting_a_history() {
        let mut mine = hist(&[(1, "a", 1)]);
        mine.mark_committed(&ep(1, "a"));
        let mut r = replica_with(mine, 2, Some(ep(1, "a")));
        let e = ep(2, "c");
        r.on_entries(
            &v("c"),
            batch(
                &e,
                writer_head(&e, hist(&[(1, "a", 1), (2, "c", 3)]), 2),
                2,
                0,
                0,
            ),
            0,
        );
        assert!(r.history().records()[0].committed);
        assert_eq!(r.history().len(), 2);
    }

    #[test]
    fn restore_clips_a_history_saved_ahead_of_its_entries() {
        let r = Replica::restore(
            v("b"),
            PersistentState {
                promised: Some(ep(3, "c")),
                history: hist(&[(1, "a", 1), (2, "b", 5), (3, "c", 9)]),
                commit_index: 8,
                promised_view: 0,
            },
            6,
        );
        assert_eq!(r.history(), &hist(&[(1, "a", 1), (2, "b", 5)]));
        assert_eq!(r.commit_index(), 6);
    }

    #[test]
    fn serves_fetches_up_to_its_size_unless_it_promised_higher() {
        let mut r = replica_with(hist(&[(1, "a", 1)]), 5, Some(ep(2, "c")));
        let cmds: Vec<Command<E>> = r.on_fetch_request(&v("c"), ep(2, "c"), 2, 9);
        match &cmds[..] {
            [
                Command::SendEntries {
                    to,
                    header,
                    after,
                    upto,
                },
            ] => {
                assert_eq!(to, &NodeId::from("c"));
                assert_eq!((*after, *upto), (2, 5));
                assert_eq!(header.kind, EntriesKind::Fetched);
                assert_eq!(header.head.size, 5);
            }
            other => panic!("{other:?}"),
        }
        let cmds: Vec<Command<E>> = r.on_fetch_request(&v("a"), ep(1, "a"), 0, 3);
        assert_eq!(kinds(&cmds), ["promise-reply"]);
    }

    #[test]
    fn polls_a_quiet_writer() {
        let e = ep(1, "a");
        let mut r = Replica::empty(v("b"));
        assert!(r.poll::<E>(1_000, 100).is_empty(), "no writer known yet");
        r.on_entries(
            &v("a"),
            batch(&e, writer_head(&e, hist(&[(1, "a", 1)]), 0), 0, 0, 0),
            1_000,
        );
        assert!(r.poll::<E>(1_050, 100).is_empty());
        let cmds = r.poll::<E>(1_100, 100);
        assert_eq!(kinds(&cmds), ["cursor"]);
        assert!(
            r.poll::<E>(1_150, 100).is_empty(),
            "not twice in a poll interval"
        );
        r.forget_writer();
        assert!(r.poll::<E>(5_000, 100).is_empty());
    }
}
