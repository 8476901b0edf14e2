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
