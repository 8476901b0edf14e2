//! Property test of keyed reads: random appends (random keys, random commit sizes), abandoned
//! staged rows, quarantines and reopens, applied to RocksDB and to the in-memory reference;
//! every keyed read then answers exactly what a filter over all entries answers.

use ledger_storage::conformance::{expected_read, make_entry};
use ledger_storage::{ContextHead, LogStore, MemoryStore, ReadQuery, RocksConfig, RocksStore};
use proptest::prelude::*;

const KEYS: [&str; 4] = ["a", "b", "c", ""];
const CTX: &str = "props";

#[derive(Clone, Debug)]
enum Op {
    /// One commit of entries with these keys.
    Append(Vec<usize>),
    /// Stages entries with these keys after the head and never commits them.
    AbandonedStage(Vec<usize>),
    /// Quarantines from this fraction (per mille) of the size.
    Quarantine(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(0..KEYS.len(), 1..40).prop_map(Op::Append),
        1 => prop::collection::vec(0..KEYS.len(), 1..20).prop_map(Op::AbandonedStage),
        1 => (0u64..1000).prop_map(Op::Quarantine),
        1 => Just(Op::Reopen),
    ]
}

fn apply<S: LogStore>(s: &S, op: &Op, n: &mut u64) {
    let head = s
        .head(CTX)
        .unwrap()
        .unwrap_or_else(|| ContextHead::empty(CTX));
    let entries = |keys: &[usize], n: &mut u64| {
        keys.iter()
            .enumerate()
            .map(|(i, k)| {
                *n += 1;
                make_entry(
                    head.size() + 1 + i as u64,
                    KEYS[*k],
                    format!("{n}").as_bytes(),
                )
            })
            .collect::<Vec<_>>()
    };
    match op {
        Op::Append(keys) => s.commit(&[head.extend(entries(keys, n)).unwrap()]).unwrap(),
        Op::AbandonedStage(keys) => s.stage(&head.extend(entries(keys, n)).unwrap()).unwrap(),
        Op::Quarantine(per_mille) => {
            let from = 1 + head.size() * per_mille / 1000;
            s.quarantine(CTX, from, "prop", 1).unwrap();
        }
        Op::Reopen => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn keyed_reads_equal_a_filter_over_all_entries(
        ops in prop::collection::vec(op(), 1..25),
        queries in prop::collection::vec((0..KEYS.len() + 1, 0u64..300, prop::option::of(1usize..20), prop::option::of(0u64..300)), 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = RocksConfig::default();
        let mut rocks = RocksStore::open(dir.path(), &config).unwrap();
        let memory = MemoryStore::new();
        let (mut n_rocks, mut n_memory) = (0, 0);
        for op in &ops {
            if matches!(op, Op::Reopen) {
                drop(rocks);
                rocks = RocksStore::open(dir.path(), &config).unwrap();
            }
            apply(&rocks, op, &mut n_rocks);
            apply(&memory, op, &mut n_memory);
        }
        let all = memory.read(CTX, &ReadQuery::default()).unwrap().entries;
        prop_assert_eq!(&rocks.read(CTX, &ReadQuery::default()).unwrap().entries, &all);
        for (key, after, limit, up_to) in queries {
            let q = ReadQuery {
                after_sequence: after,
                key: Some(KEYS.get(key).copied().unwrap_or("absent").to_owned()),
                limit,
                max_bytes: None,
                up_to,
            };
            let want = expected_read(&all, &q);
            prop_assert_eq!(&rocks.read(CTX, &q).unwrap(), &want, "rocks {:?}", q);
            prop_assert_eq!(&memory.read(CTX, &q).unwrap(), &want, "memory {:?}", q);
        }
    }
}
