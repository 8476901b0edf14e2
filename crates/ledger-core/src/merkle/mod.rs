//! Per-context Merkle tree with RFC 9162 (RFC 6962) hashing.
//!
//! Layout:
//! - [`compact`]: the frontier (compact range) that gives the current root in O(log n) and
//!   reports the complete subtrees each append creates, so a store can keep them.
//! - [`proof`]: inclusion and consistency proofs. Generation is planned as a list of complete
//!   subtrees to fetch ([`ProofPlan`]), then assembled from their hashes: O(log n) lookups.
//!   Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 exactly.
//! - [`reference`]: a naive recursive tree straight from the RFC's definitions, the oracle for
//!   tests of everything above.

pub mod compact;
pub mod proof;
pub mod reference;

pub use compact::Frontier;
pub use proof::{
    ProofError, ProofPlan, consistency_plan, inclusion_plan, root_from_leaves, root_plan,
    verify_consistency, verify_inclusion,
};

/// A complete (perfect) subtree: the `2^level` leaves `[index·2^level, (index+1)·2^level)`.
/// Level 0 nodes are leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreeNodeId {
    pub level: u8,
    pub index: u64,
}

impl TreeNodeId {
    pub fn new(level: u8, index: u64) -> Self {
        TreeNodeId { level, index }
    }

    /// The leaf `index` (level 0).
    pub fn leaf(index: u64) -> Self {
        TreeNodeId { level: 0, index }
    }

    /// First leaf index covered.
    pub fn start(self) -> u64 {
        self.index << self.level
    }

    /// Number of leaves covered.
    pub fn width(self) -> u64 {
        1u64 << self.level
    }
}

/// The complete subtrees whose right fold is the RFC 9162 hash of leaves `[start, end)`, largest
/// first. Valid for the ranges that occur in the RFC's recursion, whose start is a multiple of a
/// power of two at least as large as the range.
pub fn range_decomposition(start: u64, end: u64, out: &mut Vec<TreeNodeId>) {
    let mut lo = start;
    while lo < end {
        let remaining = end - lo;
        let max_by_size = 63 - remaining.leading_zeros();
        let max_by_alignment = if lo == 0 { 63 } else { lo.trailing_zeros() };
        let level = max_by_size.min(max_by_alignment);
        out.push(TreeNodeId::new(level as u8, lo >> level));
        lo += 1u64 << level;
    }
}

/// Largest power of two strictly below `n` (n ≥ 2).
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn decomposition_follows_set_bits() {
        let mut v = Vec::new();
        range_decomposition(0, 13, &mut v);
        assert_eq!(
            v,
            vec![
                TreeNodeId::new(3, 0),
                TreeNodeId::new(2, 2),
                TreeNodeId::new(0, 12)
            ]
        );
        v.clear();
        range_decomposition(8, 11, &mut v);
        assert_eq!(v, vec![TreeNodeId::new(1, 4), TreeNodeId::new(0, 10)]);
        v.clear();
        range_decomposition(5, 5, &mut v);
        assert!(v.is_empty());
    }
}
