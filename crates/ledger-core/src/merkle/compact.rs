//! The frontier of a tree: the roots of the complete subtrees that make up its leaves, one per
//! set bit of the size, largest first. Appending a leaf costs O(log n) hashing in the worst case
//! and one hash on average; the root is a right fold over at most 64 hashes.

use super::TreeNodeId;
use crate::hash::{Hash, empty_root, node_hash};
use thiserror::Error;

/// Compact state of a tree of `size` leaves.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

/// The stored parts of a frontier do not describe a tree.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("frontier of size {size} needs {expected} hashes, got {got}")]
pub struct FrontierShapeError {
    pub size: u64,
    pub expected: u32,
    pub got: usize,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Rebuilds a frontier from its size and hashes (as stored).
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, FrontierShapeError> {
        if hashes.len() != size.count_ones() as usize {
            return Err(FrontierShapeError {
                size,
                expected: size.count_ones(),
                got: hashes.len(),
            });
        }
        Ok(Frontier { size, hashes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Subtree roots, largest subtree first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The complete subtrees the frontier's hashes stand for, largest first.
    pub fn node_ids(&self) -> Vec<TreeNodeId> {
        let mut v = Vec::with_capacity(self.hashes.len());
        super::range_decomposition(0, self.size, &mut v);
        v
    }

    /// Appends a leaf hash. Every complete subtree this creates (the leaf itself, then each merged
    /// parent) is passed to `created`, so a store can persist it for O(log n) proofs.
    pub fn push(&mut self, leaf: Hash, mut created: impl FnMut(TreeNodeId, Hash)) {
        let index = self.size;
        let mut h = leaf;
        created(TreeNodeId::leaf(index), h);
        let mut level = 0u8;
        while (self.size >> level) & 1 == 1 {
            let left = self.hashes.pop().expect("frontier has a hash per set bit");
            h = node_hash(&left, &h);
            level += 1;
            created(TreeNodeId::new(level, index >> level), h);
        }
        self.hashes.push(h);
        self.size += 1;
    }

    /// Appends a leaf, discarding the created subtrees.
    pub fn push_leaf(&mut self, leaf: Hash) {
        self.push(leaf, |_, _| {});
    }

    /// The RFC 9162 root of the tree (SHA-256("") when empty).
    pub fn root(&self) -> Hash {
        let mut iter = self.hashes.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::merkle::reference;

    #[test]
    fn root_matches_reference_for_small_sizes() {
        let leaves: Vec<Hash> = (0..200u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut f = Frontier::new();
        assert_eq!(f.root(), empty_root());
        for (i, l) in leaves.iter().enumerate() {
            f.push_leaf(*l);
            assert_eq!(f.root(), reference::root(&leaves[..=i]), "size {}", i + 1);
            assert_eq!(f.hashes().len(), (i as u64 + 1).count_ones() as usize);
        }
    }

    #[test]
    fn push_reports_each_new_complete_subtree() {
        let leaves: Vec<Hash> = (0..16u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut f = Frontier::new();
        let mut all = Vec::new();
        for l in &leaves {
            f.push(*l, |id, h| all.push((id, h)));
        }
        // 16 leaves + 8 + 4 + 2 + 1 interior nodes
        assert_eq!(all.len(), 31);
        for (id, h) in all {
            let s = id.start() as usize;
            let w = id.width() as usize;
            assert_eq!(h, reference::root(&leaves[s..s + w]), "{id:?}");
        }
    }

    #[test]
    fn from_parts_checks_shape() {
        assert!(Frontier::from_parts(3, vec![Hash::default()]).is_err());
        let mut f = Frontier::new();
        for i in 0..7u8 {
            f.push_leaf(leaf_hash(&[i]));
        }
        let g = Frontier::from_parts(7, f.hashes().to_vec()).unwrap();
        assert_eq!(f, g);
        assert_eq!(
            g.node_ids(),
            vec![
                TreeNodeId::new(2, 0),
                TreeNodeId::new(1, 2),
                TreeNodeId::new(0, 6)
            ]
        );
    }
}
