//! Inclusion and consistency proofs (RFC 9162 §2.1.3 and §2.1.4).
//!
//! Generation is split in two so a store can answer with O(log n) point reads: a *plan* lists the
//! complete subtrees whose hashes are needed, the store fetches them in one batch, and the plan
//! *assembles* the proof. Each proof element is the right fold of one or more complete subtrees
//! (an incomplete right edge is made of several).

use super::{TreeNodeId, range_decomposition, split_point};
use crate::hash::{Hash, node_hash};
use thiserror::Error;

/// Why a proof could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {first} is larger than tree size {second}")]
    SizesOutOfOrder { first: u64, second: u64 },
    #[error("proof has {got} hashes, a valid one has {expected}")]
    WrongPathLength { expected: usize, got: usize },
    #[error("proof does not lead to the expected root")]
    RootMismatch,
    #[error("proof does not lead to the expected first-tree root")]
    FirstRootMismatch,
}

/// Which complete subtrees a proof needs, and how they combine into proof elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofPlan {
    nodes: Vec<TreeNodeId>,
    /// `elements[i]` is the half-open range of `nodes` whose right fold is proof element `i`.
    elements: Vec<(usize, usize)>,
}

impl ProofPlan {
    fn new() -> Self {
        ProofPlan {
            nodes: Vec::new(),
            elements: Vec::new(),
        }
    }

    fn push_range(&mut self, start: u64, end: u64) {
        let from = self.nodes.len();
        range_decomposition(start, end, &mut self.nodes);
        self.elements.push((from, self.nodes.len()));
    }

    /// The complete subtrees to fetch, in the order `assemble` expects their hashes.
    pub fn nodes(&self) -> &[TreeNodeId] {
        &self.nodes
    }

    /// Number of hashes in the finished proof.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Builds the proof from the hashes of [`Self::nodes`], in the same order.
    ///
    /// # Panics
    /// If `hashes` is not one hash per planned node.
    pub fn assemble(&self, hashes: &[Hash]) -> Vec<Hash> {
        assert_eq!(hashes.len(), self.nodes.len(), "one hash per planned node");
        self.elements
            .iter()
            .map(|&(from, to)| {
                let part = &hashes[from..to];
                let (last, rest) = part.split_last().expect("proof element covers leaves");
                rest.iter()
                    .rev()
                    .fold(*last, |acc, left| node_hash(left, &acc))
            })
            .collect()
    }

    /// Builds the proof by looking each node up with `lookup`.
    pub fn assemble_with<E>(
        &self,
        mut lookup: impl FnMut(TreeNodeId) -> Result<Hash, E>,
    ) -> Result<Vec<Hash>, E> {
        let hashes = self
            .nodes
            .iter()
            .map(|id| lookup(*id))
            .collect::<Result<Vec<_>, E>>()?;
        Ok(self.assemble(&hashes))
    }
}

/// The plan for the root of the first `size` leaves (one element; none for the empty tree).
pub fn root_plan(size: u64) -> ProofPlan {
    let mut plan = ProofPlan::new();
    if size > 0 {
        plan.push_range(0, size);
    }
    plan
}

/// The plan for PATH(index, D[size]): the inclusion proof of leaf `index` (0-based).
pub fn inclusion_plan(index: u64, size: u64) -> Result<ProofPlan, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // Walk from the root down; siblings come out root-first, the proof lists them leaf-first.
    let mut siblings = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            siblings.push((lo + k, hi));
            hi = lo + k;
        } else {
            siblings.push((lo, lo + k));
            lo += k;
        }
    }
    let mut plan = ProofPlan::new();
    for (s, e) in siblings.into_iter().rev() {
        plan.push_range(s, e);
    }
    Ok(plan)
}

/// The plan for PROOF(first, D[second]): the consistency proof between two sizes.
/// Empty when `first` is 0 or equal to `second`.
pub fn consistency_plan(first: u64, second: u64) -> Result<ProofPlan, ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    let mut plan = ProofPlan::new();
    if first == 0 || first == second {
        return Ok(plan);
    }
    let mut outer = Vec::new();
    let mut inner = None;
    let (mut lo, mut hi, mut m, mut whole) = (0u64, second, first, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !whole {
                inner = Some((lo, hi));
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            outer.push((lo + k, hi));
            hi = lo + k;
        } else {
            outer.push((lo, lo + k));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    if let Some((s, e)) = inner {
        plan.push_range(s, e);
    }
    for (s, e) in outer.into_iter().rev() {
        plan.push_range(s, e);
    }
    Ok(plan)
}

/// Computes the root of a whole list of leaf hashes (iteratively, via a frontier).
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    let mut f = super::Frontier::new();
    for l in leaves {
        f.push_leaf(*l);
    }
    f.root()
}

fn lsb(x: u64) -> bool {
    x & 1 == 1
}

/// Root implied by an inclusion proof (RFC 9162 §2.1.3.2, steps 1–4).
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &Hash,
    path: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_path_len(index, size);
    if path.len() != expected {
        return Err(ProofError::WrongPathLength {
            expected,
            got: path.len(),
        });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return Err(ProofError::WrongPathLength {
                expected,
                got: path.len(),
            });
        }
        if lsb(fnode) || fnode == snode {
            r = node_hash(p, &r);
            if !lsb(fnode) {
                while !lsb(fnode) && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongPathLength {
            expected,
            got: path.len(),
        });
    }
    Ok(r)
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion_proof(index, size, leaf, path)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Length of PATH(index, D[size]).
pub fn inclusion_path_len(index: u64, size: u64) -> usize {
    // Number of levels above the leaf: the bits where index and size-1 differ, plus the levels
    // where the leaf sits on the right edge with a left sibling.
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Verifies that the tree of `first` leaves with root `first_root` is a prefix of the tree of
/// `second` leaves with root `second_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    path: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    if first == second {
        if !path.is_empty() {
            return Err(ProofError::WrongPathLength {
                expected: 0,
                got: path.len(),
            });
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if first == 0 {
        // Every tree extends the empty tree.
        if !path.is_empty() {
            return Err(ProofError::WrongPathLength {
                expected: 0,
                got: path.len(),
            });
        }
        return if *first_root == crate::hash::empty_root() {
            Ok(())
        } else {
            Err(ProofError::FirstRootMismatch)
        };
    }
    let expected = consistency_path_len(first, second);
    if path.len() != expected {
        return Err(ProofError::WrongPathLength {
            expected,
            got: path.len(),
        });
    }
    // Step 2: if first is a power of two, the first-tree root is itself the first element.
    let mut elements: Vec<&Hash> = Vec::with_capacity(path.len() + 1);
    if first.is_power_of_two() {
        elements.push(first_root);
    }
    elements.extend(path.iter());
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while lsb(fnode) {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = *elements[0];
    let mut sr = *elements[0];
    for c in &elements[1..] {
        if snode == 0 {
            return Err(ProofError::WrongPathLength {
                expected,
                got: path.len(),
            });
        }
        if lsb(fnode) || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if !lsb(fnode) {
                while !lsb(fnode) && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongPathLength {
            expected,
            got: path.len(),
        });
    }
    if fr != *first_root {
        return Err(ProofError::FirstRootMismatch);
    }
    if sr != *second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Length of PROOF(first, D[second]) for 0 < first < second.
pub fn consistency_path_len(first: u64, second: u64) -> usize {
    // Skip the levels where the first tree's last leaf is a right child that is complete.
    let shift = (first - 1).trailing_ones().min(63);
    let (f, s) = ((first - 1) >> shift, (second - 1) >> shift);
    let inner = 64 - (f ^ s).leading_zeros();
    let border = f.checked_shr(inner).unwrap_or(0).count_ones();
    let base = (inner + border) as usize;
    if first.is_power_of_two() {
        base
    } else {
        base + 1
    }
}
