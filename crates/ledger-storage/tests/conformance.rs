//! The conformance suite against both backends.

use ledger_storage::conformance::{Harness, run_all};
use ledger_storage::{Durability, MemoryStore, RocksConfig, RocksStore};

struct Memory(MemoryStore);

impl Harness for Memory {
    type Store = MemoryStore;
    fn open(&mut self) -> MemoryStore {
        self.0.clone()
    }
}

struct Rocks {
    dir: tempfile::TempDir,
    config: RocksConfig,
}

impl Harness for Rocks {
    type Store = RocksStore;
    fn open(&mut self) -> RocksStore {
        RocksStore::open(self.dir.path(), &self.config).expect("open RocksDB store")
    }
}

#[test]
fn memory_store_conforms() {
    run_all(&mut Memory(MemoryStore::new()));
}

#[test]
fn rocks_store_conforms_in_sync_mode() {
    run_all(&mut Rocks {
        dir: tempfile::tempdir().unwrap(),
        config: RocksConfig::default(),
    });
}

#[test]
fn rocks_store_conforms_in_buffered_mode() {
    run_all(&mut Rocks {
        dir: tempfile::tempdir().unwrap(),
        config: RocksConfig {
            durability: Durability::Buffered,
            ..RocksConfig::default()
        },
    });
}

/// A data directory written before the `replication` and `quarantine` column families existed
/// opens: the missing families are created, the data is intact, and both features work.
#[test]
fn rocks_store_adds_missing_column_families_to_an_existing_database() {
    use ledger_storage::LogStore;
    use ledger_storage::conformance::append_n;
    let dir = tempfile::tempdir().unwrap();
    let config = RocksConfig::default();
    let head = {
        let s = RocksStore::open(dir.path(), &config).unwrap();
        append_n(&s, "old", 10, "facts");
        s.flush().unwrap();
        s.head("old").unwrap().unwrap()
    };
    // Make it an older directory: drop the two newer families.
    {
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
        assert!(names.iter().any(|n| n == "replication"));
        assert!(names.iter().any(|n| n == "quarantine"));
        let mut db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), &names).unwrap();
        db.drop_cf("replication").unwrap();
        db.drop_cf("quarantine").unwrap();
    }
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    assert!(
        !names
            .iter()
            .any(|n| n == "replication" || n == "quarantine")
    );

    let s = RocksStore::open(dir.path(), &config).unwrap();
    assert_eq!(s.head("old").unwrap().unwrap(), head);
    assert_eq!(s.replication_state("old").unwrap(), None);
    s.save_replication_state("old", b"state").unwrap();
    assert!(s.quarantines(None).unwrap().is_empty());
    let q = s.quarantine("old", 8, "r", 1).unwrap().unwrap();
    assert_eq!(q.info.count, 3);
    drop(s);
    let s = RocksStore::open(dir.path(), &config).unwrap();
    assert_eq!(s.replication_state("old").unwrap().unwrap(), b"state");
    assert_eq!(s.size("old").unwrap(), 7);
    assert_eq!(s.quarantined_entries("old", 1).unwrap().unwrap().len(), 3);
}

/// Reads of every key of `context_id` match a filter over all its entries.
fn keyed_reads_match_entries(s: &RocksStore, context_id: &str, keys: &[&str]) {
    use ledger_storage::conformance::expected_read;
    use ledger_storage::{LogStore, ReadQuery};
    let all = s.read(context_id, &ReadQuery::default()).unwrap().entries;
    for key in keys {
        for (after, limit) in [(0, None), (0, Some(7)), (13, Some(3)), (40, None)] {
            let q = ReadQuery {
                after_sequence: after,
                key: Some((*key).to_owned()),
                limit,
                ..ReadQuery::default()
            };
            assert_eq!(
                s.read(context_id, &q).unwrap(),
                expected_read(&all, &q),
                "{q:?}"
            );
        }
    }
}

fn format_marker(dir: &std::path::Path) -> Vec<u8> {
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).unwrap();
    let db = rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), dir, &names, false)
        .unwrap();
    db.get(b"converge-ledger/format").unwrap().unwrap()
}

/// A format-1 data directory (written before the key index existed) is upgraded on open: the
/// index is built for every stored entry, the directory is marked format 2, and keyed reads,
/// appends and quarantines work on it.
#[test]
fn rocks_store_builds_the_key_index_of_a_format_1_directory_on_open() {
    use ledger_storage::LogStore;
    use ledger_storage::conformance::append_n;
    let dir = tempfile::tempdir().unwrap();
    let config = RocksConfig::default();
    {
        let s = RocksStore::open(dir.path(), &config).unwrap();
        for i in 0..30 {
            append_n(&s, "old-a", 1 + i % 4, ["x", "y", "z"][(i % 3) as usize]);
        }
        append_n(&s, "old-b", 25, "x");
        s.flush().unwrap();
    }
    assert_eq!(format_marker(dir.path()), b"2");
    RocksStore::downgrade_to_format_1_for_tests(dir.path()).unwrap();
    assert_eq!(format_marker(dir.path()), b"1");
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    assert!(!names.iter().any(|n| n == "key_index"));

    let s = RocksStore::open(dir.path(), &config).unwrap();
    keyed_reads_match_entries(&s, "old-a", &["x", "y", "z", "w"]);
    keyed_reads_match_entries(&s, "old-b", &["x", "y"]);
    append_n(&s, "old-a", 5, "w");
    s.quarantine("old-b", 20, "r", 1).unwrap().unwrap();
    keyed_reads_match_entries(&s, "old-a", &["x", "w"]);
    keyed_reads_match_entries(&s, "old-b", &["x"]);
    drop(s);
    assert_eq!(format_marker(dir.path()), b"2");
    let s = RocksStore::open(dir.path(), &config).unwrap();
    keyed_reads_match_entries(&s, "old-a", &["x", "y", "z", "w"]);
}

/// An upgrade interrupted after writing part of the index (the marker still says format 1) is
/// run again in full at the next open.
#[test]
fn rocks_store_finishes_an_interrupted_key_index_upgrade() {
    use ledger_storage::LogStore;
    use ledger_storage::conformance::append_n;
    let dir = tempfile::tempdir().unwrap();
    let config = RocksConfig::default();
    {
        let s = RocksStore::open(dir.path(), &config).unwrap();
        for i in 0..20 {
            append_n(&s, "half", 3, ["x", "y"][i % 2]);
        }
        s.flush().unwrap();
    }
    // Keep a third of the index rows and mark the directory format 1 again, as an upgrade
    // killed midway leaves it.
    {
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), &names).unwrap();
        let cf = db.cf_handle("key_index").unwrap();
        let keys: Vec<Box<[u8]>> = db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|kv| kv.unwrap().0)
            .collect();
        assert_eq!(keys.len(), 60);
        for (i, k) in keys.iter().enumerate() {
            if i % 3 != 0 {
                db.delete_cf(cf, k).unwrap();
            }
        }
        db.put(b"converge-ledger/format", b"1").unwrap();
        db.flush().unwrap();
    }
    let s = RocksStore::open(dir.path(), &config).unwrap();
    keyed_reads_match_entries(&s, "half", &["x", "y"]);
    assert_eq!(format_marker(dir.path()), b"2");
}

/// A directory of an unknown, newer format is refused with a message naming both formats.
#[test]
fn rocks_store_refuses_an_unknown_format() {
    let dir = tempfile::tempdir().unwrap();
    drop(RocksStore::open(dir.path(), &RocksConfig::default()).unwrap());
    {
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), &names).unwrap();
        db.put(b"converge-ledger/format", b"3").unwrap();
    }
    let err = RocksStore::open(dir.path(), &RocksConfig::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("\"3\"") && msg.contains("formats 1"), "{msg}");
}
