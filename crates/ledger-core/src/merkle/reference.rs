//! A naive Merkle tree written straight from RFC 9162 §2.1: recursive, O(n) per call.
//! It is the oracle that the incremental tree, the proof planner and stores are checked against.

use super::split_point;
use crate::hash::{Hash, empty_root, node_hash};

/// MTH(D[n]) over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]): the inclusion proof of leaf `m`.
pub fn inclusion_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    assert!(m < n, "leaf index out of range");
    if n == 1 {
        return Vec::new();
    }
    let k = split_point(n as u64) as usize;
    if m < k {
        let mut p = inclusion_path(m, &leaves[..k]);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = inclusion_path(m - k, &leaves[k..]);
        p.push(root(&leaves[..k]));
        p
    }
}

/// PROOF(m, D[n]): the consistency proof from size `m` to `leaves.len()` (0 < m ≤ n).
pub fn consistency_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    assert!(m <= leaves.len());
    if m == 0 {
        return Vec::new();
    }
    subproof(m, leaves, true)
}

fn subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if whole {
            Vec::new()
        } else {
            vec![root(leaves)]
        };
    }
    let k = split_point(n as u64) as usize;
    if m <= k {
        let mut p = subproof(m, &leaves[..k], whole);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = subproof(m - k, &leaves[k..], false);
        p.push(root(&leaves[..k]));
        p
    }
}
