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
    iso8601(d.as_secs() as i64, d.subsec_millis())
}

/// `secs` since the Unix epoch as ISO 8601 UTC (days to civil date: H. Hinnant's algorithm).
fn iso8601(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso8601_known_answers() {
        assert_eq!(super::iso8601(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::iso8601(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(
            super::iso8601(1_767_225_599, 999),
            "2025-12-31T23:59:59.999Z"
        );
    }
}
