//! The Converge engine on the ledger: converge-core's storage boundaries implemented over
//! ledger contexts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ledger_converge::{BridgeOptions, LedgerContextStore, StoreOptions};
//! let store = LedgerContextStore::connect(&["http://127.0.0.1:50051"], StoreOptions::default()).await?;
//! let loaded = store.load("run-1").await?;                      // None for a new scope
//! let mut engine = ledger_converge::demo::engine(10, 0, false);
//! let bridge = store.streaming("run-1", loaded.as_ref().map(|l| &l.state), BridgeOptions::default());
//! engine.set_streaming(bridge.clone());                            // every fact, as it is merged
//! engine.set_event_observer(bridge.clone());                       // every experience event
//! let result = engine.run(loaded.map(|l| l.state).unwrap_or_default()).await?;
//! store.save("run-1", &result.context).await?;                     // the rest, and a checkpoint
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`mapping`]: pure. ContextState / facts / proposals ↔ ledger entries, keys, metadata,
//!   idempotency keys, checkpoints; the rebuild that converge-core verifies.
//! - [`writer`]: [`Ledger`], retried keyed appends and verified reads through a cluster,
//!   `received_lamport_clock` for causality across contexts.
//! - [`context_store`]: [`LedgerContextStore`], converge-core's `ContextStore`.
//! - [`bridge`]: [`StreamingBridge`], a non-blocking `StreamingCallback` and
//!   `ExperienceEventObserver` with a bounded buffer.
//! - [`experience`]: [`LedgerExperienceStore`], converge-core's `ExperienceStore`.
//! - [`hitl`]: HITL pauses persisted and resumed by another process.
//! - [`demo`]: the deterministic engine of `examples/engine_run` and the tests.
//! - [`error`]: [`Error`], mapped to converge-core's `StoreError` / `ExperienceStoreError`.

pub mod bridge;
pub mod context_store;
pub mod demo;
pub mod error;
pub mod experience;
pub mod hitl;
pub mod mapping;
pub mod writer;

pub use bridge::{BridgeOptions, BridgeReport, StreamingBridge};
pub use context_store::{LedgerContextStore, Loaded, SaveReport, StoreOptions};
pub use error::Error;
pub use experience::{ExperienceLedger, LedgerExperienceStore};
pub use hitl::PauseRecord;
pub use writer::{Ledger, RetrySettings};

/// The current UTC time as ISO 8601 with milliseconds (`2026-05-01T12:00:00.123Z`): what the
/// bridge stamps event envelopes with (converge-core leaves wall time to its host).
pub fn now_iso8601() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ledger_core::time::utc_millis(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
