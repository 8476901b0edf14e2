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
