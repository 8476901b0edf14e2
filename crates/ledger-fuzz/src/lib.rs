//! Fuzz targets for everything that decodes bytes a peer or client sent: snapshots (whole, and
//! streamed as Load and LoadStream take them), the canonical leaf encoding, checkpoint text and
//! signed tree heads, every public request message (decoded, converted and validated as the
//! node does), and the cluster's anti-entropy digest messages.
//!
//! Each target takes arbitrary bytes and must not panic; where a decoder accepts its input, the
//! target checks it round-trips. The same bodies run three ways:
//! - coverage-guided, under libFuzzer: `fuzz/` (outside the workspace; `cargo +nightly fuzz run
//!   <target>`, see fuzz/README.md), seeded from [`seeds`];
//! - in the test suite, a bounded run over the seeds and deterministic mutations of them
//!   (`tests/mutations.rs`), so a regression shows without nightly;
//! - by hand, on a crash file: `cargo test -p ledger-fuzz -- --ignored replay` with
//!   `LEDGER_FUZZ_INPUT=<file>`.
//!
//! # Layout
//! - [`targets`]: the target bodies, by name ([`TARGETS`]).
//! - [`seeds`]: valid inputs per target.

pub mod seeds;
pub mod targets;

pub use targets::{TARGETS, run};
