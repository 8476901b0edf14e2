//! Settings of an embedded ledger.

use ledger_core::validate::Limits;
use ledger_storage::RocksConfig;

/// Settings of an embedded ledger.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// Input limits (payload size).
    pub limits: Limits,
    /// RocksDB settings, durability included.
    pub rocks: RocksConfig,
    /// Most appends in one commit.
    pub max_batch_entries: usize,
    /// Most payload bytes in one commit.
    pub max_batch_bytes: usize,
    /// Appends that may wait for the sequencer; callers wait (asynchronously) when it is full.
    pub queue_depth: usize,
    /// Live entries buffered per watched context before slow watchers fall back to storage.
    pub watch_buffer: usize,
    /// Default most bytes of entries in one [`crate::Ledger::get`] answer.
    pub max_read_bytes: usize,
    /// An idempotency key is honoured for at least this long after its append (nanoseconds)…
    pub idempotency_window_ns: u64,
    /// …and, however old, while it is among the context's last this many keyed appends.
    pub idempotency_min_keys: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            limits: Limits::default(),
            rocks: RocksConfig::default(),
            max_batch_entries: 8192,
            max_batch_bytes: 64 << 20,
            queue_depth: 65_536,
            watch_buffer: 1024,
            max_read_bytes: 16 << 20,
            idempotency_window_ns: 10 * 60 * 1_000_000_000,
            idempotency_min_keys: 100_000,
        }
    }
}
