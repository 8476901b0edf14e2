//! Quorums: majorities of one replica set, or of several during a reconfiguration.
//!
//! An epoch is established with promises from a majority of *every* set of its [`Quorum`], and
//! an entry of that epoch is acknowledged at level `quorum` once a majority of every set has it
//! durably. The first set is the *target*: the replica set placement computed when the epoch was
//! claimed. Further sets come from earlier epochs whose establishment is not known to be complete
//! (see [`crate::claim`]): while a context moves from set `A` to set `B`, any two quorums share a
//! member of `A` or of `B`, which is what makes a promise majority meet every acknowledgement
//! majority.
//!
//! Sets hold [`Voter`]s (node id *and* incarnation): a replica that lost its data is a new voter,
//! so the sets recorded before the loss still name the old incarnation, which never answers again.

use crate::identity::Voter;
use serde::{Deserialize, Serialize};

/// The replica sets whose majorities an epoch needs, target first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Quorum {
    sets: Vec<Vec<Voter>>,
}

impl Quorum {
    /// A quorum of one set (sorted and deduplicated).
    pub fn new(target: impl IntoIterator<Item = Voter>) -> Self {
        Quorum {
            sets: vec![normalize(target)],
        }
    }

    /// Adds a set whose majority is also needed, unless the same set is already there.
    pub fn require(&mut self, set: impl IntoIterator<Item = Voter>) {
        let set = normalize(set);
        if set.is_empty() || self.sets.contains(&set) {
            return;
        }
        self.sets.push(set);
    }

    /// The target set (the replica set the epoch was claimed for).
    pub fn target(&self) -> &[Voter] {
        &self.sets[0]
    }

    /// Every set, target first.
    pub fn sets(&self) -> &[Vec<Voter>] {
        &self.sets
    }

    /// More than one set: a reconfiguration (joint) quorum.
    pub fn is_joint(&self) -> bool {
        self.sets.len() > 1
    }

    /// Every voter of every set, once, sorted.
    pub fn voters(&self) -> Vec<Voter> {
        let mut all: Vec<Voter> = self.sets.iter().flatten().cloned().collect();
        all.sort();
        all.dedup();
        all
    }

    /// True when `voter` belongs to some set.
    pub fn contains(&self, voter: &Voter) -> bool {
        self.sets.iter().any(|s| s.contains(voter))
    }

    /// True when the voters for which `has` holds form a majority of every set.
    pub fn is_reached(&self, mut has: impl FnMut(&Voter) -> bool) -> bool {
        self.sets.iter().all(|set| {
            let yes = set.iter().filter(|v| has(v)).count();
            yes * 2 > set.len()
        })
    }

    /// The highest value `p` such that voters with `value(v) >= p` form a majority of every set
    /// (0 when no set has a majority at all). With `value` = durable size this is the quorum-
    /// durable position.
    pub fn agreed_value(&self, mut value: impl FnMut(&Voter) -> u64) -> u64 {
        self.sets
            .iter()
            .map(|set| {
                let mut values: Vec<u64> = set.iter().map(&mut value).collect();
                values.sort_unstable_by(|a, b| b.cmp(a));
                // The majority-th highest value: that many voters have at least it.
                values.get(set.len() / 2).copied().unwrap_or(0)
            })
            .min()
            .unwrap_or(0)
    }
}

fn normalize(set: impl IntoIterator<Item = Voter>) -> Vec<Voter> {
    let mut v: Vec<Voter> = set.into_iter().collect();
    v.sort();
    v.dedup();
    v
}

/// Majority size of a set of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: &str, i: u64) -> Voter {
        Voter::new(n, i)
    }

    #[test]
    fn majority_of_one_set() {
        let q = Quorum::new([v("a", 1), v("b", 1), v("c", 1)]);
        assert!(!q.is_joint());
        assert!(q.is_reached(|x| x.node.as_str() != "c"));
        assert!(!q.is_reached(|x| x.node.as_str() == "a"));
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn incarnation_matters() {
        let q = Quorum::new([v("a", 1), v("b", 1), v("c", 1)]);
        // "a" in a new incarnation is not the voter the set names.
        assert!(!q.is_reached(|x| *x == v("a", 2) || *x == v("b", 1)));
        assert!(!q.contains(&v("a", 2)));
        assert!(q.contains(&v("a", 1)));
    }

    #[test]
    fn joint_quorum_needs_every_set() {
        let mut q = Quorum::new([v("a", 2), v("b", 1), v("c", 1)]);
        q.require([v("a", 1), v("b", 1), v("c", 1)]);
        q.require([v("c", 1), v("b", 1), v("a", 1)]); // same set, ignored
        assert_eq!(q.sets().len(), 2);
        assert!(q.is_joint());
        // a#2 and b form a majority of the new set but not of the old one (a#1 is gone).
        assert!(!q.is_reached(|x| *x == v("a", 2) || *x == v("b", 1)));
        assert!(q.is_reached(|x| x.node.as_str() != "a"));
        assert_eq!(q.voters().len(), 4);
        assert_eq!(q.target()[0], v("a", 2));
    }

    #[test]
    fn agreed_value_is_the_majority_position_of_the_weakest_set() {
        let mut q = Quorum::new([v("a", 1), v("b", 1), v("c", 1)]);
        let sizes = |x: &Voter| match x.node.as_str() {
            "a" => 10,
            "b" => 7,
            "c" => 3,
            "d" => 5,
            _ => 0,
        };
        assert_eq!(q.agreed_value(sizes), 7);
        q.require([v("b", 1), v("c", 1), v("d", 1)]);
        assert_eq!(q.agreed_value(sizes), 5);
        let five = Quorum::new((0..5).map(|i| v(&format!("n{i}"), 0)));
        let vals = [9u64, 1, 8, 2, 5];
        assert_eq!(
            five.agreed_value(|x| vals[x.node.as_str()[1..].parse::<usize>().unwrap()]),
            5
        );
    }
}
