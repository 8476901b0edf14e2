//! Crash durability: a child process appends with `sync` durability and prints every
//! acknowledged entry; it is killed with SIGKILL mid-stream; after reopening, every acknowledged
//! entry is present and byte-identical, there are no gaps, and the stored root equals the root
//! recomputed from the stored entries, and a read filtered by each entry key (served from the
//! key index) returns exactly the entries of that key. Repeated several times on the same data
//! dir. Run with 16 concurrent writers (groups through the committer and syncer threads, and
//! small ones the sequencer commits itself) and with one writer waiting for each answer (every
//! commit written by the sequencer itself).

mod common;

use ledger_core::Hash;
use ledger_core::merkle::reference;
use ledger_embedded::{Ledger, LedgerConfig, Metadata};
use std::collections::HashMap;

const CHILD_ENV: &str = "LEDGER_CRASH_CHILD_DIR";
const LONE_CHILD_ENV: &str = "LEDGER_CRASH_LONE_CHILD_DIR";
const CONTEXTS: usize = 4;
/// Entry keys the writers cycle through.
const KEYS: [&str; 3] = ["facts", "traces", "audit"];

/// One writer's loop: appends forever to its context, printing each acknowledgement.
async fn write_forever(w: usize, ledger: Ledger, tx: tokio::sync::mpsc::UnboundedSender<String>) {
    let ctx = format!("crash-{}", w % CONTEXTS);
    for i in 0u64.. {
        let mut md = Metadata::new();
        md.insert("writer".into(), w.to_string());
        let payload = format!("w{w}-i{i}-{}", "x".repeat((i % 300) as usize));
        let e = ledger
            .append(&ctx, KEYS[(i % 3) as usize], payload.into_bytes(), md, None)
            .await
            .unwrap();
        tx.send(format!("ACK {ctx} {} {}\n", e.sequence, e.content_hash))
            .unwrap();
    }
}

/// The child: appends forever from several concurrent writers, printing each acknowledgement.
/// Only runs when the parent test starts this binary with the environment variable set.
#[test]
#[ignore = "child process of sigkill_during_appends_loses_no_acknowledged_entry"]
fn crash_child_process() {
    common::run_child(CHILD_ENV, 16, write_forever);
}

/// The child with one writer: every append is committed by the sequencer itself.
#[test]
#[ignore = "child process of sigkill_during_a_lone_writers_appends_loses_no_acknowledged_entry"]
fn crash_lone_child_process() {
    common::run_child(LONE_CHILD_ENV, 1, write_forever);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_appends_loses_no_acknowledged_entry() {
    kill_and_check("crash_child_process", CHILD_ENV, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_lone_writers_appends_loses_no_acknowledged_entry() {
    kill_and_check("crash_lone_child_process", LONE_CHILD_ENV, 3).await;
}

/// Runs `child` `rounds` times on one data dir, SIGKILLed after more acknowledgements each
/// round, and checks after each that every acknowledged entry is stored, intact, gapless and
/// indexed, with the root of what is stored.
async fn kill_and_check(child: &str, env: &str, rounds: u32) {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<(String, u64), Hash> = HashMap::new();
    for round in 0..rounds {
        let kill_after = 300 + 400 * round as usize;
        let lines = common::run_child_until_acks(child, env, dir.path(), kill_after);
        assert_eq!(
            lines.len(),
            kill_after,
            "child acknowledged appends before it was killed"
        );
        for line in lines {
            let parts: Vec<&str> = line.split(' ').collect();
            let seq: u64 = parts[2].parse().unwrap();
            acked.insert(
                (parts[1].to_owned(), seq),
                Hash::from_hex(parts[3]).unwrap(),
            );
        }

        let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        for c in 0..CONTEXTS {
            let ctx = format!("crash-{c}");
            let r = ledger.get(&ctx, None, 0, None).await.unwrap();
            assert!(
                r.entries
                    .iter()
                    .map(|e| e.sequence)
                    .eq(1..=r.latest_sequence),
                "{ctx} has no gaps"
            );
            for e in &r.entries {
                assert!(e.verify_content_hash(), "{ctx}/{} is intact", e.sequence);
            }
            let leaves: Vec<Hash> = r.entries.iter().map(|e| e.content_hash).collect();
            match ledger.head(&ctx).await.unwrap() {
                Some(head) => assert_eq!(
                    head.root(),
                    reference::root(&leaves),
                    "{ctx} root matches its entries"
                ),
                None => assert!(leaves.is_empty(), "{ctx} has entries but no head"),
            }
            for key in KEYS {
                let mut keyed = Vec::new();
                let mut after = 0;
                loop {
                    let page = ledger.get(&ctx, Some(key), after, Some(500)).await.unwrap();
                    keyed.extend(page.entries.iter().map(|e| e.sequence));
                    if !page.has_more {
                        break;
                    }
                    after = page.next_after_sequence;
                }
                let want: Vec<u64> = r
                    .entries
                    .iter()
                    .filter(|e| e.key == key)
                    .map(|e| e.sequence)
                    .collect();
                assert_eq!(
                    keyed, want,
                    "{ctx}: the key index of {key:?} matches its entries"
                );
            }
            let by_seq: HashMap<u64, Hash> = r
                .entries
                .iter()
                .map(|e| (e.sequence, e.content_hash))
                .collect();
            for ((actx, seq), hash) in &acked {
                if *actx == ctx {
                    assert_eq!(
                        by_seq.get(seq),
                        Some(hash),
                        "acknowledged {ctx}/{seq} survived round {round}"
                    );
                }
            }
        }
        ledger.close().await;
    }
}
