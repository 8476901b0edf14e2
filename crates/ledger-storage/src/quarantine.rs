//! Quarantine: a context's divergent suffix moved aside, never deleted, never served, never
//! merged. The types every backend shares; the contract is [`crate::LogStore::quarantine`].

use crate::ContextHead;

/// One quarantine: which entries of which context were moved aside, when and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineInfo {
    pub context_id: String,
    /// 1, 2, 3, … per context, in the order the context's quarantines happened.
    pub id: u64,
    /// The first sequence moved aside; the context kept `1 ..= from_sequence - 1`.
    pub from_sequence: u64,
    /// Entries moved aside: sequences `from_sequence ..= from_sequence + count - 1`.
    pub count: u64,
    /// When the quarantine happened (Unix time, nanoseconds), as the caller stated it.
    pub quarantined_at_ns: u64,
    /// Why, as the caller stated it.
    pub reason: String,
}

/// What [`crate::LogStore::quarantine`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    pub info: QuarantineInfo,
    /// The context's head afterwards: exactly its head at size `info.from_sequence - 1` (the
    /// empty head when that is 0).
    pub head: ContextHead,
}
