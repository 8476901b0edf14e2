//! Whether a context can get a writer, and what blocks it: what `cluster status` reports per
//! context, and what an operator's "accept the loss" acts on.
//!
//! Every set whose majority a claim (or a writer's acknowledgements) needs is classified by its
//! voters: those that answered or are live, those that are down but still members of the
//! current placement view (they may come back with their data), and those that are gone (left
//! the view, or the view names another incarnation: their data is gone). A set whose majority
//! needs down voters is *waiting* for them; a set whose majority needs gone voters has *lost
//! its quorum* for good, until an operator accepts the loss
//! ([`crate::Participant::accept_loss`]).

use crate::identity::{NodeId, Voter};
use std::collections::BTreeSet;
use thiserror::Error;

/// Whether a context can get (or keep) a writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Every required majority is live (or answered).
    Ok,
    /// A required majority lacks only members that are down but still in the view.
    Waiting { blocked: Vec<NodeId> },
    /// A required majority can never be reached: these members left the view (or lost their
    /// data). Only an operator's accepted loss makes the context writable again.
    LostQuorum { blocked: Vec<NodeId> },
}

/// Where a voter is, for [`assess`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoterState {
    /// Answered, or live.
    Reachable,
    /// Down, still a member of the current view in that incarnation.
    Down,
    /// Not a member of the current view in that incarnation.
    Gone,
}

/// Classifies `sets` (each needs a majority) by `state`.
pub fn assess(sets: &[Vec<Voter>], state: impl Fn(&Voter) -> VoterState) -> Availability {
    let mut waiting = BTreeSet::new();
    let mut lost = BTreeSet::new();
    for set in sets {
        let mut reachable = 0usize;
        let mut down = Vec::new();
        let mut gone = Vec::new();
        for v in set {
            match state(v) {
                VoterState::Reachable => reachable += 1,
                VoterState::Down => down.push(v.node.clone()),
                VoterState::Gone => gone.push(v.node.clone()),
            }
        }
        let n = set.len();
        if reachable * 2 > n {
            continue;
        }
        if (reachable + down.len()) * 2 > n {
            waiting.extend(down);
        } else {
            lost.extend(gone);
        }
    }
    if !lost.is_empty() {
        Availability::LostQuorum {
            blocked: lost.into_iter().collect(),
        }
    } else if !waiting.is_empty() {
        Availability::Waiting {
            blocked: waiting.into_iter().collect(),
        }
    } else {
        Availability::Ok
    }
}

/// Why an operator's accepted loss was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AcceptLossError {
    #[error(
        "this node is not the placement writer of the context (writer: {})",
        writer.as_ref().map_or_else(|| "unknown".to_owned(), NodeId::to_string)
    )]
    NotWriter { writer: Option<NodeId> },
    #[error(
        "every replica set of the context has a reachable majority: there is no loss to accept"
    )]
    Available,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> Vec<Voter> {
        names.iter().map(|n| Voter::new(*n, 1)).collect()
    }

    fn by(
        down: &'static [&'static str],
        gone: &'static [&'static str],
    ) -> impl Fn(&Voter) -> VoterState {
        move |v: &Voter| {
            if down.contains(&v.node.as_str()) {
                VoterState::Down
            } else if gone.contains(&v.node.as_str()) {
                VoterState::Gone
            } else {
                VoterState::Reachable
            }
        }
    }

    #[test]
    fn a_reachable_majority_of_every_set_is_ok() {
        let sets = [set(&["a", "b", "c"]), set(&["b", "c", "d"])];
        assert_eq!(assess(&sets, by(&["a"], &["d"])), Availability::Ok);
    }

    #[test]
    fn a_majority_that_needs_down_members_waits_for_them() {
        let sets = [set(&["a", "b", "c"])];
        assert_eq!(
            assess(&sets, by(&["a", "b"], &[])),
            Availability::Waiting {
                blocked: vec![NodeId::from("a"), NodeId::from("b")]
            }
        );
        // One down and one gone: the down one may still come back and make the majority.
        assert_eq!(
            assess(&sets, by(&["a"], &["b"])),
            Availability::Waiting {
                blocked: vec![NodeId::from("a")]
            }
        );
    }

    #[test]
    fn a_majority_that_needs_members_that_left_is_lost() {
        let sets = [set(&["a", "b", "c"]), set(&["c", "d", "e"])];
        assert_eq!(
            assess(&sets, by(&["e"], &["a", "b"])),
            Availability::LostQuorum {
                blocked: vec![NodeId::from("a"), NodeId::from("b")]
            }
        );
        assert_eq!(
            assess(&[set(&["b", "c"])], by(&[], &["b"])),
            Availability::LostQuorum {
                blocked: vec![NodeId::from("b")]
            }
        );
    }
}
