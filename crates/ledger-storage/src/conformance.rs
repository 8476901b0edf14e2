//! The conformance suite: one set of checks that every [`LogStore`] backend must pass. Each
//! backend's tests call [`run_all`] with a [`Harness`] that can (re)open its store.

use crate::{
    ContextCommit, ContextHead, IdempotencyRecord, LogStore, QuarantineInfo, ReadQuery,
    StorageError,
};
use ledger_core::merkle::{self, reference};
use ledger_core::{Entry, Hash, Metadata};
use std::sync::Arc;

/// Opens a backend's store, again and again over the same data.
pub trait Harness {
    type Store: LogStore;
    /// Opens the store. Called again after the previous store was dropped, it must see every
    /// commit the previous one acknowledged.
    fn open(&mut self) -> Self::Store;
}

/// An entry as the ledger would make it.
pub fn make_entry(sequence: u64, key: &str, payload: &[u8]) -> Arc<Entry> {
    let mut md = Metadata::new();
    md.insert("n".into(), sequence.to_string());
    Arc::new(Entry::new(
        format!("id-{sequence}"),
        key.into(),
        payload.to_vec(),
        sequence,
        1_000 + sequence,
        md,
        sequence,
    ))
}

/// Appends `count` entries to `context_id` in one commit, after reading its head.
pub fn append_n<S: LogStore>(store: &S, context_id: &str, count: u64, key: &str) -> ContextCommit {
    let head = store
        .head(context_id)
        .expect("read head")
        .unwrap_or_else(|| ContextHead::empty(context_id));
    let base = head.size();
    let entries = (1..=count)
        .map(|i| {
            make_entry(
                base + i,
                key,
                format!("{context_id}/{}", base + i).as_bytes(),
            )
        })
        .collect();
    let commit = head.extend(entries).expect("extend head");
    store.commit(std::slice::from_ref(&commit)).expect("commit");
    commit
}

/// Runs every check, in a fresh context namespace each.
pub fn run_all<H: Harness>(h: &mut H) {
    empty_context_reads_as_empty(h);
    appended_entries_read_back_exactly(h);
    reads_filter_by_key_and_respect_limits(h);
    byte_budget_cuts_reads_with_has_more(h);
    commits_that_are_not_gapless_are_refused_atomically(h);
    concurrent_commits_on_different_contexts_stay_gapless(h);
    reopen_keeps_everything(h);
    proofs_from_store_match_reference_tree(h);
    list_contexts_pages_through_all(h);
    multi_context_batch_is_atomic(h);
    staged_rows_are_invisible_until_committed(h);
    uncommitted_staged_rows_leave_the_context_as_it_was(h);
    idempotency_records_are_stored_with_their_entries(h);
    replication_state_round_trips_and_survives_reopen(h);
    quarantine_cuts_back_to_exactly_the_prefix(h);
    quarantine_survives_reopen_and_appends_continue_at_the_cut(h);
    quarantine_forgets_idempotency_keys_of_moved_entries(h);
    quarantine_of_everything_empties_the_context(h);
    quarantine_beyond_the_size_or_from_zero_changes_nothing(h);
    quarantines_are_listed_per_context_and_overall(h);
    keyed_reads_match_a_filter_over_all_entries(h);
    keyed_reads_see_loaded_entries_and_skip_abandoned_staged_rows(h);
    keyed_reads_after_quarantine_see_the_prefix_and_the_new_entries(h);
}

/// What a read of `query` over a context whose committed entries are `all` must answer,
/// computed the naive way: filter every entry, then cut at `limit` / `max_bytes`.
pub fn expected_read(all: &[Entry], query: &ReadQuery) -> crate::ReadResult {
    let latest = all.len() as u64;
    let upper = query.up_to.map_or(latest, |u| u.min(latest));
    let matching: Vec<&Entry> = all
        .iter()
        .filter(|e| e.sequence > query.after_sequence && e.sequence <= upper)
        .filter(|e| query.key.as_deref().is_none_or(|k| k == e.key))
        .collect();
    let mut entries = Vec::new();
    let mut bytes = 0;
    for e in &matching {
        let over_limit = query.limit.is_some_and(|l| entries.len() >= l);
        let over_bytes = query
            .max_bytes
            .is_some_and(|m| !entries.is_empty() && bytes + e.encoded_len() > m);
        if over_limit || over_bytes {
            break;
        }
        bytes += e.encoded_len();
        entries.push(Entry::clone(e));
    }
    let has_more = entries.len() < matching.len();
    let next_after_sequence = if has_more {
        entries.last().map_or(query.after_sequence, |e| e.sequence)
    } else {
        query.after_sequence.max(upper)
    };
    crate::ReadResult {
        entries,
        latest_sequence: latest,
        has_more,
        next_after_sequence,
    }
}

/// Checks a keyed read against [`expected_read`] over the context's entries, and that paging
/// through it with `next_after_sequence` yields every matching entry once.
fn keyed_read_matches<S: LogStore>(s: &S, context_id: &str, query: &ReadQuery) {
    let all = s.read(context_id, &ReadQuery::default()).unwrap().entries;
    assert!(all.iter().map(|e| e.sequence).eq(1..=all.len() as u64));
    let got = s.read(context_id, query).unwrap();
    assert_eq!(got, expected_read(&all, query), "{context_id}: {query:?}");
    let mut paged = Vec::new();
    let mut q = query.clone();
    loop {
        let r = s.read(context_id, &q).unwrap();
        paged.extend(r.entries);
        if !r.has_more {
            break;
        }
        q.after_sequence = r.next_after_sequence;
    }
    let whole = ReadQuery {
        limit: None,
        max_bytes: None,
        ..query.clone()
    };
    assert_eq!(
        paged,
        expected_read(&all, &whole).entries,
        "paged {query:?}"
    );
}

pub fn keyed_reads_match_a_filter_over_all_entries<H: Harness>(h: &mut H) {
    let keys = ["a", "b", "", "a-much-longer-key/with/parts", "c"];
    {
        let s = h.open();
        // Several commits of mixed keys, and a second context with the same keys.
        let mut n = 0u64;
        for chunk in [1u64, 7, 3, 40, 2, 17] {
            let head = s
                .head("keyed")
                .unwrap()
                .unwrap_or_else(|| ContextHead::empty("keyed"));
            let entries = (1..=chunk)
                .map(|i| {
                    n += 1;
                    let key = keys[(n * n % 7 % 5) as usize];
                    make_entry(
                        head.size() + i,
                        key,
                        format!("p{n}").repeat(1 + (n % 4) as usize).as_bytes(),
                    )
                })
                .collect();
            s.commit(&[head.extend(entries).unwrap()]).unwrap();
        }
        append_n(&s, "keyed-other", 9, "a");
    }
    let s = h.open();
    let size = s.size("keyed").unwrap();
    assert_eq!(size, 70);
    let one = s
        .read(
            "keyed",
            &ReadQuery {
                limit: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    let entry_len = one.entries[0].encoded_len();
    for key in keys.iter().chain(&["absent"]) {
        for after in [0, 1, 5, 33, 69, 70, 80] {
            for limit in [None, Some(1), Some(3)] {
                for up_to in [None, Some(0), Some(10), Some(70), Some(500)] {
                    for max_bytes in [None, Some(1), Some(3 * entry_len)] {
                        keyed_read_matches(
                            &s,
                            "keyed",
                            &ReadQuery {
                                after_sequence: after,
                                key: Some((*key).to_owned()),
                                limit,
                                max_bytes,
                                up_to,
                            },
                        );
                    }
                }
            }
        }
    }
    // The other context's entries under the same key are not mixed in.
    let r = s
        .read(
            "keyed-other",
            &ReadQuery {
                key: Some("a".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(r.entries.iter().map(|e| e.sequence).eq(1..=9));
    let r = s
        .read(
            "keyed-none",
            &ReadQuery {
                key: Some("a".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(r.entries.is_empty() && !r.has_more && r.latest_sequence == 0);
}

pub fn keyed_reads_see_loaded_entries_and_skip_abandoned_staged_rows<H: Harness>(h: &mut H) {
    let facts = |after| ReadQuery {
        after_sequence: after,
        key: Some("facts".into()),
        ..Default::default()
    };
    {
        let s = h.open();
        // A load of 40 "facts" entries after 3 "x" entries, applied.
        append_n(&s, "keyed-load", 3, "x");
        let head = s.head("keyed-load").unwrap().unwrap();
        let commit = stage_all(&s, &head, 40, 9);
        // Staged rows answer no keyed read before the apply.
        assert!(s.read("keyed-load", &facts(0)).unwrap().entries.is_empty());
        s.commit(std::slice::from_ref(&commit)).unwrap();
        let r = s.read("keyed-load", &facts(0)).unwrap();
        assert!(r.entries.iter().map(|e| e.sequence).eq(4..=43));
        // A load of 30 "facts" entries after 2 "x" entries that never applies.
        append_n(&s, "keyed-abandoned", 2, "x");
        let head = s.head("keyed-abandoned").unwrap().unwrap();
        drop(stage_all(&s, &head, 30, 10));
    }
    let s = h.open();
    for after in [0, 10, 43] {
        keyed_read_matches(&s, "keyed-load", &facts(after));
    }
    keyed_read_matches(
        &s,
        "keyed-load",
        &ReadQuery {
            key: Some("x".into()),
            ..Default::default()
        },
    );
    // Appends overwrite the abandoned rows at 3..=22 with other keys, and a few "facts".
    append_n(&s, "keyed-abandoned", 20, "other");
    append_n(&s, "keyed-abandoned", 2, "facts");
    let r = s.read("keyed-abandoned", &facts(0)).unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![23, 24]
    );
    assert_eq!(
        (r.latest_sequence, r.next_after_sequence, r.has_more),
        (24, 24, false)
    );
    // Cut by a limit, the read has more only if another entry of the key exists.
    let r = s
        .read(
            "keyed-abandoned",
            &ReadQuery {
                limit: Some(2),
                ..facts(0)
            },
        )
        .unwrap();
    assert!(!r.has_more);
    for key in ["facts", "other", "x"] {
        keyed_read_matches(
            &s,
            "keyed-abandoned",
            &ReadQuery {
                key: Some(key.into()),
                limit: Some(1),
                ..Default::default()
            },
        );
    }
}

pub fn keyed_reads_after_quarantine_see_the_prefix_and_the_new_entries<H: Harness>(h: &mut H) {
    let s = h.open();
    let entries: Vec<Arc<Entry>> = (1..=30)
        .map(|i| make_entry(i, if i % 2 == 0 { "even" } else { "odd" }, b"before"))
        .collect();
    commit_in_chunks(&s, "keyed-q", &entries, &[10, 20]);
    s.quarantine("keyed-q", 12, "diverged", 1).unwrap().unwrap();
    let even = ReadQuery {
        key: Some("even".into()),
        ..Default::default()
    };
    let r = s.read("keyed-q", &even).unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![2, 4, 6, 8, 10]
    );
    assert_eq!((r.latest_sequence, r.next_after_sequence), (11, 11));
    // Even with a cap beyond the cut, nothing moved aside is read.
    let r = s
        .read(
            "keyed-q",
            &ReadQuery {
                up_to: Some(30),
                ..even.clone()
            },
        )
        .unwrap();
    assert_eq!(r.entries.len(), 5);
    // New entries at the moved sequences, under the other key and under the same one.
    append_n(&s, "keyed-q", 3, "odd");
    append_n(&s, "keyed-q", 2, "even");
    drop(s);
    let s = h.open();
    let r = s.read("keyed-q", &even).unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![2, 4, 6, 8, 10, 15, 16]
    );
    assert!(r.entries[5..].iter().all(|e| e.payload != b"before"));
    for key in ["even", "odd"] {
        keyed_read_matches(
            &s,
            "keyed-q",
            &ReadQuery {
                key: Some(key.into()),
                limit: Some(2),
                ..Default::default()
            },
        );
    }
    assert_eq!(
        s.quarantined_entries("keyed-q", 1).unwrap().unwrap().len(),
        19
    );
}

pub fn empty_context_reads_as_empty<H: Harness>(h: &mut H) {
    let s = h.open();
    assert!(s.head("empty").unwrap().is_none());
    let r = s.read("empty", &ReadQuery::default()).unwrap();
    assert!(r.entries.is_empty());
    assert_eq!(r.latest_sequence, 0);
    assert!(!r.has_more);
}

pub fn appended_entries_read_back_exactly<H: Harness>(h: &mut H) {
    let s = h.open();
    let c1 = append_n(&s, "rb", 3, "facts");
    let c2 = append_n(&s, "rb", 2, "evals");
    let r = s.read("rb", &ReadQuery::default()).unwrap();
    let want: Vec<Entry> = c1
        .entries
        .iter()
        .chain(&c2.entries)
        .map(|e| Entry::clone(e))
        .collect();
    assert_eq!(r.entries, want);
    assert_eq!(r.latest_sequence, 5);
    assert_eq!(r.next_after_sequence, 5);
    let head = s.head("rb").unwrap().unwrap();
    assert_eq!(head, c2.head);
    assert_eq!(head.size(), 5);
    assert_eq!(head.lamport_clock, 5);
    let leaves: Vec<Hash> = want.iter().map(|e| e.content_hash).collect();
    assert_eq!(head.root(), reference::root(&leaves));
    // after_sequence and up_to
    let r = s
        .read(
            "rb",
            &ReadQuery {
                after_sequence: 2,
                up_to: Some(4),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(r.latest_sequence, 5);
    let r = s
        .read(
            "rb",
            &ReadQuery {
                after_sequence: 5,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(r.entries.is_empty());
    let r = s
        .read(
            "rb",
            &ReadQuery {
                after_sequence: 99,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(r.entries.is_empty());
    assert_eq!(r.latest_sequence, 5);
}

pub fn reads_filter_by_key_and_respect_limits<H: Harness>(h: &mut H) {
    let s = h.open();
    for i in 0..10 {
        append_n(&s, "kf", 1, if i % 3 == 0 { "facts" } else { "traces" });
    }
    let facts = ReadQuery {
        key: Some("facts".into()),
        ..Default::default()
    };
    let r = s.read("kf", &facts).unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 4, 7, 10]
    );
    assert!(!r.has_more);
    let r = s
        .read(
            "kf",
            &ReadQuery {
                limit: Some(2),
                ..facts.clone()
            },
        )
        .unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 4]
    );
    assert!(r.has_more);
    assert_eq!(r.next_after_sequence, 4);
    let r = s
        .read(
            "kf",
            &ReadQuery {
                limit: Some(2),
                after_sequence: 4,
                ..facts.clone()
            },
        )
        .unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![7, 10]
    );
    assert!(!r.has_more, "no further facts after 10");
    let r = s
        .read(
            "kf",
            &ReadQuery {
                limit: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.entries.len(), 3);
    assert!(r.has_more);
    let r = s
        .read(
            "kf",
            &ReadQuery {
                key: Some("none".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(r.entries.is_empty());
    assert!(!r.has_more);
}

pub fn byte_budget_cuts_reads_with_has_more<H: Harness>(h: &mut H) {
    let s = h.open();
    append_n(&s, "bb", 10, "facts");
    let one = s
        .read(
            "bb",
            &ReadQuery {
                limit: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    let size = one.entries[0].encoded_len();
    let r = s
        .read(
            "bb",
            &ReadQuery {
                max_bytes: Some(size * 3 + size / 2),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.entries.len(), 3);
    assert!(r.has_more);
    assert_eq!(r.next_after_sequence, 3);
    // At least one entry even when it alone is over budget.
    let r = s
        .read(
            "bb",
            &ReadQuery {
                max_bytes: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.entries.len(), 1);
    assert!(r.has_more);
}

pub fn commits_that_are_not_gapless_are_refused_atomically<H: Harness>(h: &mut H) {
    let s = h.open();
    append_n(&s, "gap", 2, "facts");
    let head = s.head("gap").unwrap().unwrap();
    // Stale base: built from an older head.
    let stale = ContextHead::empty("gap")
        .extend(vec![make_entry(1, "facts", b"x")])
        .unwrap();
    assert!(matches!(
        s.commit(&[stale]),
        Err(StorageError::SizeConflict {
            expected: 0,
            actual: 2,
            ..
        })
    ));
    // A gap in the sequences.
    let mut bad = head.extend(vec![make_entry(3, "facts", b"x")]).unwrap();
    bad.entries = vec![make_entry(4, "facts", b"x")];
    assert!(matches!(
        s.commit(&[bad]),
        Err(StorageError::NotGapless { .. })
    ));
    // Nothing changed.
    assert_eq!(s.head("gap").unwrap().unwrap(), head);
    assert_eq!(
        s.read("gap", &ReadQuery::default()).unwrap().entries.len(),
        2
    );
    // Two commits of one context in one batch chain correctly.
    let c3 = head.extend(vec![make_entry(3, "facts", b"3")]).unwrap();
    let c4 = c3.head.extend(vec![make_entry(4, "facts", b"4")]).unwrap();
    s.commit(&[c3, c4]).unwrap();
    assert_eq!(s.head("gap").unwrap().unwrap().size(), 4);
}

pub fn concurrent_commits_on_different_contexts_stay_gapless<H: Harness>(h: &mut H) {
    let s = Arc::new(h.open());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let ctx = format!("conc-{t}");
                for _ in 0..50 {
                    append_n(&*s, &ctx, 1 + (t % 3), "facts");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("appender thread");
    }
    for t in 0..8u64 {
        let ctx = format!("conc-{t}");
        let r = s.read(&ctx, &ReadQuery::default()).unwrap();
        let n = 50 * (1 + (t % 3));
        assert_eq!(r.latest_sequence, n);
        assert!(
            r.entries.iter().map(|e| e.sequence).eq(1..=n),
            "{ctx} is gapless"
        );
        let leaves: Vec<Hash> = r.entries.iter().map(|e| e.content_hash).collect();
        assert_eq!(
            s.head(&ctx).unwrap().unwrap().root(),
            reference::root(&leaves)
        );
    }
}

pub fn reopen_keeps_everything<H: Harness>(h: &mut H) {
    let (before_entries, before_head, before_nodes) = {
        let s = h.open();
        append_n(&s, "reopen", 37, "facts");
        let plan = merkle::inclusion_plan(5, 37).unwrap();
        (
            s.read("reopen", &ReadQuery::default()).unwrap().entries,
            s.head("reopen").unwrap().unwrap(),
            s.nodes("reopen", plan.nodes()).unwrap(),
        )
    };
    let s = h.open();
    assert_eq!(
        s.read("reopen", &ReadQuery::default()).unwrap().entries,
        before_entries
    );
    assert_eq!(s.head("reopen").unwrap().unwrap(), before_head);
    let plan = merkle::inclusion_plan(5, 37).unwrap();
    assert_eq!(s.nodes("reopen", plan.nodes()).unwrap(), before_nodes);
    // Sequences continue after reopening.
    let c = append_n(&s, "reopen", 1, "facts");
    assert_eq!(c.entries[0].sequence, 38);
}

pub fn proofs_from_store_match_reference_tree<H: Harness>(h: &mut H) {
    let s = h.open();
    // Several commits of odd sizes so subtrees span commit boundaries.
    for n in [1, 2, 5, 13, 1, 33, 8] {
        append_n(&s, "proofs", n, "facts");
    }
    let entries = s.read("proofs", &ReadQuery::default()).unwrap().entries;
    let leaves: Vec<Hash> = entries.iter().map(|e| e.content_hash).collect();
    let size = leaves.len() as u64;
    for n in 1..=size {
        let prefix = &leaves[..n as usize];
        let root = s.nodes("proofs", merkle::root_plan(n).nodes()).unwrap();
        assert_eq!(
            merkle::root_plan(n).assemble(&root),
            vec![reference::root(prefix)]
        );
        for i in 0..n {
            let plan = merkle::inclusion_plan(i, n).unwrap();
            let proof = plan.assemble(&s.nodes("proofs", plan.nodes()).unwrap());
            assert_eq!(
                proof,
                reference::inclusion_path(i as usize, prefix),
                "incl {i}/{n}"
            );
        }
        for m in 0..=n {
            let plan = merkle::consistency_plan(m, n).unwrap();
            let proof = plan.assemble(&s.nodes("proofs", plan.nodes()).unwrap());
            assert_eq!(
                proof,
                reference::consistency_path(m as usize, prefix),
                "cons {m}/{n}"
            );
        }
    }
}

pub fn list_contexts_pages_through_all<H: Harness>(h: &mut H) {
    let s = h.open();
    let mut want: Vec<String> = (0..25).map(|i| format!("list-{i}")).collect();
    for c in &want {
        append_n(&s, c, 1, "facts");
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.list_contexts(after.as_deref(), 7).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = page.last().cloned();
        seen.extend(page);
    }
    seen.retain(|c| c.starts_with("list-"));
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
}

pub fn multi_context_batch_is_atomic<H: Harness>(h: &mut H) {
    let s = h.open();
    append_n(&s, "atom-b", 1, "facts");
    let a = ContextHead::empty("atom-a")
        .extend(vec![make_entry(1, "facts", b"a")])
        .unwrap();
    let stale_b = ContextHead::empty("atom-b")
        .extend(vec![make_entry(1, "facts", b"b")])
        .unwrap();
    assert!(s.commit(&[a.clone(), stale_b]).is_err());
    assert!(
        s.head("atom-a").unwrap().is_none(),
        "nothing of a refused batch is written"
    );
    s.commit(&[a]).unwrap();
    assert_eq!(s.head("atom-a").unwrap().unwrap().size(), 1);
}

/// Stages `count` entries after `head` in chunks of `chunk`; returns the commit that makes all
/// of them visible (its own entries are the last chunk).
fn stage_all<S: LogStore>(s: &S, head: &ContextHead, count: u64, chunk: u64) -> ContextCommit {
    let base = head.size();
    let mut tip = head.clone();
    let mut staged = 0;
    loop {
        let n = chunk.min(count - staged);
        let entries = (1..=n)
            .map(|i| make_entry(base + staged + i, "facts", b"loaded"))
            .collect();
        let mut c = tip.extend(entries).unwrap();
        if staged + n == count {
            c.base_size = base;
            c.staged = staged;
            return c;
        }
        s.stage(&c).unwrap();
        tip = c.head;
        staged += n;
    }
}

pub fn staged_rows_are_invisible_until_committed<H: Harness>(h: &mut H) {
    let s = h.open();
    append_n(&s, "stage", 3, "facts");
    let head = s.head("stage").unwrap().unwrap();
    let commit = stage_all(&s, &head, 100, 7);
    // Nothing staged is visible: size, head, reads, listing.
    assert_eq!(s.size("stage").unwrap(), 3);
    assert_eq!(s.head("stage").unwrap().unwrap(), head);
    let r = s.read("stage", &ReadQuery::default()).unwrap();
    assert_eq!((r.entries.len(), r.latest_sequence), (3, 3));
    // Staging below the committed size is refused.
    let under = ContextHead::empty("stage")
        .extend(vec![make_entry(1, "facts", b"x")])
        .unwrap();
    assert!(matches!(
        s.stage(&under),
        Err(StorageError::SizeConflict { .. })
    ));
    // One commit makes all of them visible, with a root over every entry.
    s.commit(std::slice::from_ref(&commit)).unwrap();
    let r = s.read("stage", &ReadQuery::default()).unwrap();
    assert!(r.entries.iter().map(|e| e.sequence).eq(1..=103));
    let leaves: Vec<Hash> = r.entries.iter().map(|e| e.content_hash).collect();
    let after = s.head("stage").unwrap().unwrap();
    assert_eq!(after.root(), reference::root(&leaves));
    let plan = merkle::inclusion_plan(50, 103).unwrap();
    let path = plan.assemble(&s.nodes("stage", plan.nodes()).unwrap());
    assert_eq!(path, reference::inclusion_path(50, &leaves));
    drop(s);
    let s = h.open();
    assert_eq!(s.head("stage").unwrap().unwrap(), after);
}

pub fn uncommitted_staged_rows_leave_the_context_as_it_was<H: Harness>(h: &mut H) {
    let head = {
        let s = h.open();
        append_n(&s, "abandoned", 2, "facts");
        let head = s.head("abandoned").unwrap().unwrap();
        let commit = stage_all(&s, &head, 50, 10);
        // The final commit never happens (a crash, a refused load).
        drop(commit);
        head
    };
    let s = h.open();
    assert_eq!(s.head("abandoned").unwrap().unwrap(), head);
    assert_eq!(
        s.read("abandoned", &ReadQuery::default())
            .unwrap()
            .latest_sequence,
        2
    );
    // Appends continue at 3 and overwrite the abandoned rows; reads and proofs see the appends.
    let c = append_n(&s, "abandoned", 20, "other");
    let r = s.read("abandoned", &ReadQuery::default()).unwrap();
    assert!(r.entries.iter().map(|e| e.sequence).eq(1..=22));
    assert!(r.entries[2..].iter().all(|e| e.key == "other"));
    let leaves: Vec<Hash> = r.entries.iter().map(|e| e.content_hash).collect();
    assert_eq!(c.head.root(), reference::root(&leaves));
    let plan = merkle::inclusion_plan(10, 22).unwrap();
    let path = plan.assemble(&s.nodes("abandoned", plan.nodes()).unwrap());
    assert_eq!(path, reference::inclusion_path(10, &leaves));
    // A brand-new context whose only rows were staged does not exist.
    let fresh = stage_all(&s, &ContextHead::empty("never-loaded"), 30, 10);
    drop(fresh);
    assert!(s.head("never-loaded").unwrap().is_none());
    assert!(
        !s.list_contexts(None, 1000)
            .unwrap()
            .contains(&"never-loaded".to_owned())
    );
}

pub fn idempotency_records_are_stored_with_their_entries<H: Harness>(h: &mut H) {
    {
        let s = h.open();
        assert_eq!(s.idempotency_count("idem").unwrap(), 0);
        assert!(s.idempotency("idem", "k1").unwrap().is_none());
        let mut c = ContextHead::empty("idem")
            .extend(vec![
                make_entry(1, "facts", b"a"),
                make_entry(2, "facts", b"b"),
            ])
            .unwrap();
        let record = |key: &str, sequence, ordinal| IdempotencyRecord {
            key: key.into(),
            sequence,
            appended_at_ns: 1_000 + sequence,
            fingerprint: Hash([sequence as u8; 32]),
            ordinal,
        };
        c.idempotency = vec![record("k1", 1, 1), record("k2", 2, 2)];
        // A record outside the commit's entries is refused, with nothing written.
        let mut bad = c.clone();
        bad.idempotency.push(record("k3", 3, 3));
        assert!(s.commit(&[bad]).is_err());
        assert!(s.idempotency("idem", "k1").unwrap().is_none());
        s.commit(&[c]).unwrap();
    }
    let s = h.open();
    let r = s.idempotency("idem", "k2").unwrap().unwrap();
    assert_eq!(
        (r.sequence, r.ordinal, r.fingerprint),
        (2, 2, Hash([2; 32]))
    );
    assert_eq!(s.idempotency_count("idem").unwrap(), 2);
    assert!(s.idempotency("idem", "k3").unwrap().is_none());
    assert!(s.idempotency("other", "k1").unwrap().is_none());
}

pub fn replication_state_round_trips_and_survives_reopen<H: Harness>(h: &mut H) {
    {
        let s = h.open();
        assert_eq!(s.replication_state("repl").unwrap(), None);
        s.save_replication_state("repl", b"epoch 1").unwrap();
        assert_eq!(
            s.replication_state("repl").unwrap().as_deref(),
            Some(&b"epoch 1"[..])
        );
        // Replaced, not merged; binary and empty states are kept as given.
        s.save_replication_state("repl", &[0, 255, 7]).unwrap();
        s.save_replication_state("repl-empty", &[]).unwrap();
        // Independent of entries: state without entries, entries without state.
        append_n(&s, "repl-entries", 2, "facts");
    }
    let s = h.open();
    assert_eq!(
        s.replication_state("repl").unwrap().as_deref(),
        Some(&[0, 255, 7][..])
    );
    assert_eq!(
        s.replication_state("repl-empty").unwrap().as_deref(),
        Some(&[][..])
    );
    assert_eq!(s.replication_state("repl-entries").unwrap(), None);
    assert!(s.head("repl").unwrap().is_none());
    assert!(
        !s.list_contexts(None, 10_000)
            .unwrap()
            .contains(&"repl".to_owned()),
        "replication state alone does not make a context"
    );
}

/// Commits `entries` to `context_id` in commits of the given sizes, after its current head.
fn commit_in_chunks<S: LogStore>(
    s: &S,
    context_id: &str,
    entries: &[Arc<Entry>],
    chunks: &[usize],
) {
    let mut rest = entries;
    for n in chunks {
        let (now, later) = rest.split_at(*n);
        let head = s
            .head(context_id)
            .unwrap()
            .unwrap_or_else(|| ContextHead::empty(context_id));
        s.commit(&[head.extend(now.to_vec()).unwrap()]).unwrap();
        rest = later;
    }
    assert!(rest.is_empty());
}

/// The head `context_id` would have after exactly `entries` (no context id compared).
fn same_head(a: &ContextHead, b: &ContextHead) {
    assert_eq!(a.size(), b.size());
    assert_eq!(a.root(), b.root());
    assert_eq!(a.frontier, b.frontier);
    assert_eq!(a.lamport_clock, b.lamport_clock);
    assert_eq!(a.last_appended_at_ns, b.last_appended_at_ns);
}

/// Checks every inclusion proof of the context and consistency proofs from every size against
/// the reference tree of `leaves`.
fn proofs_match(s: &impl LogStore, context_id: &str, leaves: &[Hash]) {
    let n = leaves.len() as u64;
    for i in 0..n {
        let plan = merkle::inclusion_plan(i, n).unwrap();
        let path = plan.assemble(&s.nodes(context_id, plan.nodes()).unwrap());
        assert_eq!(
            path,
            reference::inclusion_path(i as usize, leaves),
            "incl {i}/{n}"
        );
    }
    for m in 0..=n {
        let plan = merkle::consistency_plan(m, n).unwrap();
        let path = plan.assemble(&s.nodes(context_id, plan.nodes()).unwrap());
        assert_eq!(
            path,
            reference::consistency_path(m as usize, leaves),
            "cons {m}/{n}"
        );
    }
    let root = merkle::root_plan(n);
    assert_eq!(
        root.assemble(&s.nodes(context_id, root.nodes()).unwrap()),
        vec![reference::root(leaves)]
    );
}

fn numbered(from: u64, to: u64, key: &str) -> Vec<Arc<Entry>> {
    (from..=to)
        .map(|i| make_entry(i, key, format!("{key}/{i}").as_bytes()))
        .collect()
}

pub fn quarantine_cuts_back_to_exactly_the_prefix<H: Harness>(h: &mut H) {
    let s = h.open();
    // 20 entries in commits that straddle the cut at 13 and the subtrees around it.
    let all = numbered(1, 20, "facts");
    commit_in_chunks(&s, "q-cut", &all, &[3, 9, 5, 3]);
    // The same first 12 entries in a context that never had more.
    commit_in_chunks(&s, "q-cut-ref", &all[..12], &[12]);
    let before = s.read("q-cut", &ReadQuery::default()).unwrap().entries;

    let q = s
        .quarantine("q-cut", 13, "diverged from the writer", 77)
        .unwrap()
        .expect("a suffix to move");
    assert_eq!(
        q.info,
        QuarantineInfo {
            context_id: "q-cut".into(),
            id: 1,
            from_sequence: 13,
            count: 8,
            quarantined_at_ns: 77,
            reason: "diverged from the writer".into(),
        }
    );
    let reference_head = s.head("q-cut-ref").unwrap().unwrap();
    let head = s.head("q-cut").unwrap().unwrap();
    same_head(&head, &reference_head);
    assert_eq!(head, q.head);
    assert_eq!(head.context_id, "q-cut");
    assert_eq!(s.size("q-cut").unwrap(), 12);

    // Reads see the prefix only, whatever they ask for.
    let r = s.read("q-cut", &ReadQuery::default()).unwrap();
    assert_eq!(r.entries, before[..12]);
    assert_eq!((r.latest_sequence, r.next_after_sequence), (12, 12));
    let r = s
        .read(
            "q-cut",
            &ReadQuery {
                after_sequence: 12,
                up_to: Some(20),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(r.entries.is_empty());
    let leaves: Vec<Hash> = before[..12].iter().map(|e| e.content_hash).collect();
    proofs_match(&s, "q-cut", &leaves);

    // The moved entries, exactly as stored.
    assert_eq!(
        s.quarantined_entries("q-cut", 1).unwrap().unwrap(),
        before[12..]
    );
    assert_eq!(s.quarantines(Some("q-cut")).unwrap(), vec![q.info.clone()]);
    assert_eq!(s.quarantined_entries("q-cut", 2).unwrap(), None);
    assert_eq!(s.quarantined_entries("q-cut-ref", 1).unwrap(), None);
    assert!(s.quarantines(Some("q-cut-ref")).unwrap().is_empty());

    // The same store goes on at the cut (no reopen: nothing cached may still say 20).
    let c = append_n(&s, "q-cut", 2, "new");
    assert_eq!((c.base_size, c.entries[0].sequence), (12, 13));
    let r = s.read("q-cut", &ReadQuery::default()).unwrap();
    assert_eq!(r.entries[..12], before[..12]);
    assert!(r.entries.iter().map(|e| e.sequence).eq(1..=14));
    let leaves: Vec<Hash> = r.entries.iter().map(|e| e.content_hash).collect();
    assert_eq!(c.head.root(), reference::root(&leaves));
    proofs_match(&s, "q-cut", &leaves);
}

pub fn quarantine_survives_reopen_and_appends_continue_at_the_cut<H: Harness>(h: &mut H) {
    let (moved, kept_head) = {
        let s = h.open();
        commit_in_chunks(&s, "q-reopen", &numbered(1, 16, "facts"), &[16]);
        let moved = s.read("q-reopen", &ReadQuery::default()).unwrap().entries[8..].to_vec();
        // Cut at a power of two: the kept prefix is one complete subtree.
        let q = s.quarantine("q-reopen", 9, "r", 5).unwrap().unwrap();
        (moved, q.head)
    };
    let s = h.open();
    assert_eq!(s.head("q-reopen").unwrap().unwrap(), kept_head);
    assert_eq!(
        s.read("q-reopen", &ReadQuery::default())
            .unwrap()
            .latest_sequence,
        8
    );
    assert_eq!(
        s.quarantined_entries("q-reopen", 1).unwrap().unwrap(),
        moved
    );
    // A commit from a stale head (the old size) is refused; from the kept head it continues
    // at the cut, with new entries whose rows replace the moved ones.
    let stale = ContextHead::empty("q-reopen");
    assert!(matches!(
        s.commit(&[stale.extend(vec![make_entry(1, "x", b"x")]).unwrap()]),
        Err(StorageError::SizeConflict { actual: 8, .. })
    ));
    let c = append_n(&s, "q-reopen", 3, "new");
    assert_eq!(c.base_size, 8);
    assert_eq!(c.entries[0].sequence, 9);
    let r = s.read("q-reopen", &ReadQuery::default()).unwrap();
    assert!(r.entries.iter().map(|e| e.sequence).eq(1..=11));
    assert!(r.entries[8..].iter().all(|e| e.key == "new"));
    let leaves: Vec<Hash> = r.entries.iter().map(|e| e.content_hash).collect();
    assert_eq!(c.head.root(), reference::root(&leaves));
    proofs_match(&s, "q-reopen", &leaves);
    drop(s);
    // And past the old size, across another reopen (heads reload from the rows).
    let s = h.open();
    append_n(&s, "q-reopen", 30, "more");
    let r = s.read("q-reopen", &ReadQuery::default()).unwrap();
    assert!(r.entries.iter().map(|e| e.sequence).eq(1..=41));
    let leaves: Vec<Hash> = r.entries.iter().map(|e| e.content_hash).collect();
    assert_eq!(
        s.head("q-reopen").unwrap().unwrap().root(),
        reference::root(&leaves)
    );
    proofs_match(&s, "q-reopen", &leaves);
    // The quarantine is still there, untouched by the appends at its sequences.
    assert_eq!(
        s.quarantined_entries("q-reopen", 1).unwrap().unwrap(),
        moved
    );
}

pub fn quarantine_forgets_idempotency_keys_of_moved_entries<H: Harness>(h: &mut H) {
    let record = |key: &str, e: &Entry, ordinal| IdempotencyRecord {
        key: key.into(),
        sequence: e.sequence,
        appended_at_ns: e.appended_at_ns,
        fingerprint: Hash([ordinal as u8; 32]),
        ordinal,
    };
    {
        let s = h.open();
        let entries = numbered(1, 10, "facts");
        let mut c = ContextHead::empty("q-idem")
            .extend(entries.clone())
            .unwrap();
        c.idempotency = vec![
            record("kept-1", &entries[1], 1),
            record("kept-2", &entries[5], 2),
            record("moved-1", &entries[6], 3),
            record("moved-2", &entries[9], 4),
        ];
        s.commit(&[c]).unwrap();
        assert_eq!(s.idempotency_count("q-idem").unwrap(), 4);
        s.quarantine("q-idem", 7, "r", 1).unwrap().unwrap();
        assert!(s.idempotency("q-idem", "moved-1").unwrap().is_none());
        assert!(s.idempotency("q-idem", "moved-2").unwrap().is_none());
        assert_eq!(
            s.idempotency("q-idem", "kept-2").unwrap().unwrap().sequence,
            6
        );
        assert_eq!(s.idempotency_count("q-idem").unwrap(), 2);
    }
    let s = h.open();
    assert!(s.idempotency("q-idem", "moved-1").unwrap().is_none());
    assert_eq!(
        s.idempotency("q-idem", "kept-1").unwrap().unwrap().sequence,
        2
    );
    assert_eq!(s.idempotency_count("q-idem").unwrap(), 2);
    // The key of a moved entry can be stored again, for the entry now at that sequence.
    let head = s.head("q-idem").unwrap().unwrap();
    let again = make_entry(7, "facts", b"again");
    let mut c = head.extend(vec![Arc::clone(&again)]).unwrap();
    c.idempotency = vec![record("moved-1", &again, 3)];
    s.commit(&[c]).unwrap();
    let r = s.idempotency("q-idem", "moved-1").unwrap().unwrap();
    assert_eq!((r.sequence, r.ordinal), (7, 3));
    assert_eq!(s.idempotency_count("q-idem").unwrap(), 3);
    // Cutting every keyed entry leaves no ordinal behind.
    s.quarantine("q-idem", 1, "all", 2).unwrap().unwrap();
    assert_eq!(s.idempotency_count("q-idem").unwrap(), 0);
    assert!(s.idempotency("q-idem", "kept-1").unwrap().is_none());
}

pub fn quarantine_of_everything_empties_the_context<H: Harness>(h: &mut H) {
    let s = h.open();
    append_n(&s, "q-all", 5, "facts");
    let before = s.read("q-all", &ReadQuery::default()).unwrap().entries;
    let q = s
        .quarantine("q-all", 1, "nothing agreed", 3)
        .unwrap()
        .unwrap();
    assert_eq!((q.info.from_sequence, q.info.count), (1, 5));
    assert_eq!(q.head, ContextHead::empty("q-all"));
    assert!(s.head("q-all").unwrap().is_none());
    assert_eq!(s.size("q-all").unwrap(), 0);
    let r = s.read("q-all", &ReadQuery::default()).unwrap();
    assert!(r.entries.is_empty());
    assert_eq!(r.latest_sequence, 0);
    assert!(
        !s.list_contexts(None, 10_000)
            .unwrap()
            .contains(&"q-all".to_owned())
    );
    // Quarantining an empty context does nothing.
    assert!(s.quarantine("q-all", 1, "again", 4).unwrap().is_none());
    drop(s);
    let s = h.open();
    assert!(s.head("q-all").unwrap().is_none());
    assert_eq!(s.quarantined_entries("q-all", 1).unwrap().unwrap(), before);
    // Appends start again at 1, and the next quarantine gets the next id.
    let c = append_n(&s, "q-all", 2, "fresh");
    assert_eq!(c.entries[0].sequence, 1);
    let q = s.quarantine("q-all", 2, "again", 5).unwrap().unwrap();
    assert_eq!((q.info.id, q.info.count), (2, 1));
    assert_eq!(s.head("q-all").unwrap().unwrap().size(), 1);
}

pub fn quarantine_beyond_the_size_or_from_zero_changes_nothing<H: Harness>(h: &mut H) {
    let s = h.open();
    append_n(&s, "q-none", 4, "facts");
    let head = s.head("q-none").unwrap().unwrap();
    assert!(s.quarantine("q-none", 5, "r", 1).unwrap().is_none());
    assert!(s.quarantine("q-none", u64::MAX, "r", 1).unwrap().is_none());
    assert!(s.quarantine("q-none-unknown", 1, "r", 1).unwrap().is_none());
    assert!(matches!(
        s.quarantine("q-none", 0, "r", 1),
        Err(StorageError::InvalidRequest(_))
    ));
    assert_eq!(s.head("q-none").unwrap().unwrap(), head);
    assert!(s.quarantines(Some("q-none")).unwrap().is_empty());
    assert_eq!(
        s.read("q-none", &ReadQuery::default())
            .unwrap()
            .entries
            .len(),
        4
    );
    // The last entry alone can be moved.
    let q = s.quarantine("q-none", 4, "r", 1).unwrap().unwrap();
    assert_eq!(q.info.count, 1);
    assert_eq!(q.head.size(), 3);
}

pub fn quarantines_are_listed_per_context_and_overall<H: Harness>(h: &mut H) {
    let s = h.open();
    let ids = ["q-list-a", "q-list-b", "q-list-c"];
    for c in ids {
        append_n(&s, c, 6, "facts");
    }
    s.quarantine("q-list-a", 5, "first", 10).unwrap().unwrap();
    s.quarantine("q-list-b", 2, "b", 11).unwrap().unwrap();
    s.quarantine("q-list-a", 3, "second", 12).unwrap().unwrap();
    let a = s.quarantines(Some("q-list-a")).unwrap();
    assert_eq!(
        a.iter()
            .map(|q| (q.id, q.from_sequence, q.count, q.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, 5, 2, "first"), (2, 3, 2, "second")]
    );
    assert!(s.quarantines(Some("q-list-c")).unwrap().is_empty());
    let all: Vec<QuarantineInfo> = s
        .quarantines(None)
        .unwrap()
        .into_iter()
        .filter(|q| q.context_id.starts_with("q-list-"))
        .collect();
    assert_eq!(all.len(), 3);
    // Storage order: by context key, then id.
    let mut sorted = all.clone();
    sorted.sort_by_key(|q| (crate::keys::context_key(&q.context_id), q.id));
    assert_eq!(all, sorted);
    assert_eq!(s.head("q-list-a").unwrap().unwrap().size(), 2);
}
