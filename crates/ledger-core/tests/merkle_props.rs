//! Property tests: the incremental tree and the proof planner agree with the naive reference
//! tree for every index of random sizes, and tampered proofs never verify.

use ledger_core::hash::{Hash, empty_root, leaf_hash};
use ledger_core::merkle::{
    Frontier, ProofError, TreeNodeId, consistency_plan, inclusion_plan, reference, root_plan,
    verify_consistency, verify_inclusion,
};
use proptest::prelude::*;
use std::collections::HashMap;

/// A tree with every complete subtree stored, as a store keeps them.
struct StoredTree {
    leaves: Vec<Hash>,
    nodes: HashMap<TreeNodeId, Hash>,
    roots: Vec<Hash>,
}

impl StoredTree {
    fn new(n: usize, seed: u64) -> Self {
        let mut f = Frontier::new();
        let mut nodes = HashMap::new();
        let mut leaves = Vec::with_capacity(n);
        let mut roots = vec![empty_root()];
        for i in 0..n as u64 {
            let leaf = leaf_hash(&(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
            leaves.push(leaf);
            f.push(leaf, |id, h| {
                nodes.insert(id, h);
            });
            roots.push(f.root());
        }
        StoredTree {
            leaves,
            nodes,
            roots,
        }
    }

    fn fetch(&self, plan: &ledger_core::merkle::ProofPlan) -> Vec<Hash> {
        let hashes: Vec<Hash> = plan.nodes().iter().map(|id| self.nodes[id]).collect();
        plan.assemble(&hashes)
    }
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut b = h.0;
    b[bit / 8 % 32] ^= 1 << (bit % 8);
    Hash(b)
}

#[test]
fn every_index_of_every_small_tree_matches_reference() {
    for n in 1..=130usize {
        let t = StoredTree::new(n, n as u64);
        assert_eq!(t.roots[n], reference::root(&t.leaves));
        assert_eq!(t.fetch(&root_plan(n as u64)), vec![t.roots[n]]);
        for i in 0..n {
            let plan = inclusion_plan(i as u64, n as u64).unwrap();
            let proof = t.fetch(&plan);
            assert_eq!(
                proof,
                reference::inclusion_path(i, &t.leaves),
                "incl {i}/{n}"
            );
            verify_inclusion(i as u64, n as u64, &t.leaves[i], &proof, &t.roots[n]).unwrap();
        }
        for m in 0..=n {
            let plan = consistency_plan(m as u64, n as u64).unwrap();
            let proof = t.fetch(&plan);
            assert_eq!(
                proof,
                reference::consistency_path(m, &t.leaves),
                "cons {m}/{n}"
            );
            verify_consistency(m as u64, n as u64, &t.roots[m], &t.roots[n], &proof).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn inclusion_proofs_verify_at_every_index(n in 1usize..3000, seed: u64) {
        let t = StoredTree::new(n, seed);
        prop_assert_eq!(t.roots[n], reference::root(&t.leaves));
        for i in 0..n {
            let proof = t.fetch(&inclusion_plan(i as u64, n as u64).unwrap());
            prop_assert!(verify_inclusion(i as u64, n as u64, &t.leaves[i], &proof, &t.roots[n]).is_ok());
        }
        // Spot-check against the O(n) reference at a few indices.
        for i in [0, n / 3, n / 2, n - 1] {
            let proof = t.fetch(&inclusion_plan(i as u64, n as u64).unwrap());
            prop_assert_eq!(proof, reference::inclusion_path(i, &t.leaves));
        }
    }

    #[test]
    fn consistency_proofs_verify_for_every_prefix(n in 1usize..3000, seed: u64) {
        let t = StoredTree::new(n, seed);
        for m in 0..=n {
            let proof = t.fetch(&consistency_plan(m as u64, n as u64).unwrap());
            prop_assert!(verify_consistency(m as u64, n as u64, &t.roots[m], &t.roots[n], &proof).is_ok());
        }
        for m in [1, n / 3, n / 2, n] {
            if m == 0 { continue; }
            let proof = t.fetch(&consistency_plan(m as u64, n as u64).unwrap());
            prop_assert_eq!(proof, reference::consistency_path(m, &t.leaves));
        }
    }

    #[test]
    fn tampered_inclusion_proofs_are_rejected(n in 2usize..600, idx in any::<prop::sample::Index>(), bit in 0usize..256, seed: u64) {
        // One leaf more than the tree under test, so the root of size n + 1 is known too.
        let t = StoredTree::new(n + 1, seed);
        let i = idx.index(n);
        let (size, root, leaf) = (n as u64, t.roots[n], t.leaves[i]);
        let proof = t.fetch(&inclusion_plan(i as u64, size).unwrap());
        // Flip one bit of each proof element in turn.
        for k in 0..proof.len() {
            let mut p = proof.clone();
            p[k] = flip(&p[k], bit);
            prop_assert!(verify_inclusion(i as u64, size, &leaf, &p, &root).is_err());
        }
        // Wrong leaf, wrong root.
        prop_assert!(verify_inclusion(i as u64, size, &flip(&leaf, bit), &proof, &root).is_err());
        prop_assert!(verify_inclusion(i as u64, size, &leaf, &proof, &flip(&root, bit)).is_err());
        // Wrong index: another leaf position with the same path never verifies.
        for j in [0, i.saturating_sub(1), i + 1, n - 1, n, n + 7] {
            if j != i {
                prop_assert!(verify_inclusion(j as u64, size, &leaf, &proof, &root).is_err(), "index {} for {}", j, i);
            }
        }
        // Wrong size: the proof does not lead to the root of any other size. (Against the *same*
        // root a different size can verify when the path has the same shape: RFC 9162 binds the
        // size through the signed tree head, not the hash.)
        for s in [size - 1, size + 1] {
            if s > i as u64 {
                prop_assert!(verify_inclusion(i as u64, s, &leaf, &proof, &t.roots[s as usize]).is_err());
            }
        }
        // Truncated and extended paths.
        if !proof.is_empty() {
            prop_assert!(verify_inclusion(i as u64, size, &leaf, &proof[..proof.len() - 1], &root).is_err());
            prop_assert!(verify_inclusion(i as u64, size, &leaf, &proof[1..], &root).is_err());
        }
        let mut longer = proof.clone();
        longer.push(root);
        prop_assert!(verify_inclusion(i as u64, size, &leaf, &longer, &root).is_err());
        let mut front = vec![leaf];
        front.extend_from_slice(&proof);
        prop_assert!(verify_inclusion(i as u64, size, &leaf, &front, &root).is_err());
    }

    #[test]
    fn tampered_consistency_proofs_are_rejected(n in 2usize..600, mi in any::<prop::sample::Index>(), bit in 0usize..256, seed: u64) {
        let t = StoredTree::new(n + 1, seed);
        let m = 1 + mi.index(n - 1); // 1..n-1: a proper prefix, non-empty proof
        let (m64, n64) = (m as u64, n as u64);
        let proof = t.fetch(&consistency_plan(m64, n64).unwrap());
        prop_assert!(!proof.is_empty());
        for k in 0..proof.len() {
            let mut p = proof.clone();
            p[k] = flip(&p[k], bit);
            prop_assert!(verify_consistency(m64, n64, &t.roots[m], &t.roots[n], &p).is_err());
        }
        prop_assert!(verify_consistency(m64, n64, &flip(&t.roots[m], bit), &t.roots[n], &proof).is_err());
        prop_assert!(verify_consistency(m64, n64, &t.roots[m], &flip(&t.roots[n], bit), &proof).is_err());
        prop_assert!(verify_consistency(m64, n64, &t.roots[m], &t.roots[n], &proof[..proof.len() - 1]).is_err());
        let mut longer = proof.clone();
        longer.push(t.roots[n]);
        prop_assert!(verify_consistency(m64, n64, &t.roots[m], &t.roots[n], &longer).is_err());
        // The proof does not connect the true roots of any other pair of sizes.
        for (a, b) in [(m64 + 1, n64), (m64, n64 + 1), (m64 - 1, n64), (m64, n64 - 1)] {
            if (a, b) != (m64, n64) && a < b && a > 0 {
                prop_assert!(verify_consistency(a, b, &t.roots[a as usize], &t.roots[b as usize], &proof).is_err(), "sizes {} {}", a, b);
            }
        }
        // A root of a different history at size m is rejected.
        let other = StoredTree::new(m, seed.wrapping_add(1));
        if other.roots[m] != t.roots[m] {
            prop_assert!(verify_consistency(m64, n64, &other.roots[m], &t.roots[n], &proof).is_err());
        }
    }
}

#[test]
fn out_of_range_requests_are_errors() {
    assert_eq!(
        inclusion_plan(5, 5).unwrap_err(),
        ProofError::IndexOutOfRange { index: 5, size: 5 }
    );
    assert!(consistency_plan(6, 5).is_err());
    assert!(consistency_plan(0, 5).unwrap().is_empty());
    assert!(consistency_plan(5, 5).unwrap().is_empty());
    let e = empty_root();
    assert!(verify_consistency(0, 5, &e, &leaf_hash(b"x"), &[]).is_ok());
    assert!(verify_consistency(0, 5, &leaf_hash(b"x"), &leaf_hash(b"x"), &[]).is_err());
    assert!(verify_consistency(3, 3, &e, &e, &[e]).is_err());
}

#[test]
fn large_trees_plan_logarithmic_proofs() {
    let n = 1_000_000u64;
    for i in [0, 1, 499_999, 999_999] {
        let plan = inclusion_plan(i, n).unwrap();
        assert!(plan.len() <= 20, "{}", plan.len());
        assert!(plan.nodes().len() <= 40);
    }
    let plan = consistency_plan(333_333, n).unwrap();
    assert!(plan.nodes().len() <= 60);
}
