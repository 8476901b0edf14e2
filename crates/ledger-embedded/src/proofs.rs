//! Proofs and tree states: inclusion and consistency proofs, the tree at a size, and the
//! Merkle frontier for following the tree. Each is a handful of point reads of stored subtree
//! hashes, run on the caller's task.

use crate::{Ledger, LedgerError};
use ledger_core::Hash;
use ledger_core::merkle::{self, TreeNodeId};
use ledger_storage::ReadQuery;

/// Proof that one entry is in a context's tree of some size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    /// `sequence - 1`.
    pub leaf_index: u64,
    pub tree_size: u64,
    /// The entry's content hash.
    pub leaf_hash: Hash,
    /// RFC 9162 audit path, leaf to root.
    pub path: Vec<Hash>,
    /// Root of the tree of `tree_size`.
    pub root: Hash,
}

/// A context's tree at some size: what a tree head states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeState {
    pub size: u64,
    pub root: Hash,
    /// Lamport clock of the entry at `size` (0 for the empty tree).
    pub lamport_clock: u64,
    /// `appended_at_ns` of the entry at `size` (0 for the empty tree).
    pub appended_at_ns: u64,
}

/// Proof that a context's tree of `first` entries is a prefix of its tree of `second`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub first: u64,
    pub second: u64,
    pub path: Vec<Hash>,
    pub first_root: Hash,
    pub second_root: Hash,
}

impl Ledger {
    /// Proof that entry `sequence` is in the context's tree of `tree_size` entries
    /// (0 = the current size). One size read and one batched read of O(log n) stored subtree
    /// hashes.
    pub async fn inclusion_proof(
        &self,
        context_id: &str,
        sequence: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, LedgerError> {
        let current = self.require_size(context_id)?;
        let size = resolve_size(tree_size, current)?;
        if sequence == 0 {
            return Err(LedgerError::InvalidArgument(
                "sequence must be at least 1 (sequences start at 1)".into(),
            ));
        }
        if sequence > size {
            return Err(LedgerError::OutOfRange(format!(
                "sequence {sequence} is beyond the tree of size {size}"
            )));
        }
        let index = sequence - 1;
        let plan = merkle::inclusion_plan(index, size)?;
        let root_plan = merkle::root_plan(size);
        let n = plan.nodes().len();
        let mut ids: Vec<TreeNodeId> = Vec::with_capacity(n + 1 + root_plan.nodes().len());
        ids.extend_from_slice(plan.nodes());
        ids.push(TreeNodeId::leaf(index));
        ids.extend_from_slice(root_plan.nodes());
        let hashes = self.inner.store.nodes(context_id, &ids)?;
        Ok(InclusionProof {
            leaf_index: index,
            tree_size: size,
            leaf_hash: hashes[n],
            path: plan.assemble(&hashes[..n]),
            root: root_plan.assemble(&hashes[n + 1..])[0],
        })
    }

    /// Proof that the context's tree of `first` entries is a prefix of its tree of `second`
    /// (0 = the current size), with both roots.
    pub async fn consistency_proof(
        &self,
        context_id: &str,
        first: u64,
        second: u64,
    ) -> Result<ConsistencyProof, LedgerError> {
        let current = self.require_size(context_id)?;
        let second = resolve_size(second, current)?;
        if first > second {
            return Err(LedgerError::InvalidArgument(format!(
                "first size {first} is larger than second size {second}"
            )));
        }
        let plan = merkle::consistency_plan(first, second)?;
        let (first_plan, second_plan) = (merkle::root_plan(first), merkle::root_plan(second));
        let mut ids = plan.nodes().to_vec();
        ids.extend_from_slice(first_plan.nodes());
        ids.extend_from_slice(second_plan.nodes());
        let hashes = self.inner.store.nodes(context_id, &ids)?;
        let (a, b) = (
            plan.nodes().len(),
            plan.nodes().len() + first_plan.nodes().len(),
        );
        let root_of = |p: &merkle::ProofPlan, hs: &[Hash]| {
            p.assemble(hs)
                .first()
                .copied()
                .unwrap_or_else(ledger_core::hash::empty_root)
        };
        Ok(ConsistencyProof {
            first,
            second,
            path: plan.assemble(&hashes[..a]),
            first_root: root_of(&first_plan, &hashes[a..b]),
            second_root: root_of(&second_plan, &hashes[b..]),
        })
    }

    /// The context's tree at `size` (0 = the current durable size): root, and the Lamport
    /// clock and time of the entry at that size. `NotFound` for a context without entries.
    pub async fn tree_state(&self, context_id: &str, size: u64) -> Result<TreeState, LedgerError> {
        let current = self.require_size(context_id)?;
        let size = resolve_size(size, current)?;
        if let Some(h) = self
            .inner
            .durable
            .head(context_id)
            .filter(|h| h.size() == size)
        {
            return Ok(TreeState {
                size,
                root: h.root(),
                lamport_clock: h.lamport_clock,
                appended_at_ns: h.last_appended_at_ns,
            });
        }
        let plan = merkle::root_plan(size);
        let root = plan
            .assemble(&self.inner.store.nodes(context_id, plan.nodes())?)
            .first()
            .copied()
            .unwrap_or_else(ledger_core::hash::empty_root);
        let (lamport_clock, appended_at_ns) = if size == 0 {
            (0, 0)
        } else {
            let page = self
                .read(
                    context_id,
                    ReadQuery {
                        after_sequence: size - 1,
                        limit: Some(1),
                        up_to: Some(size),
                        ..ReadQuery::default()
                    },
                )
                .await?;
            let e = page.entries.first().ok_or_else(|| {
                LedgerError::Storage(ledger_storage::StorageError::Corrupt(format!(
                    "entry {size} of {context_id:?} is missing"
                )))
            })?;
            (e.lamport_clock, e.appended_at_ns)
        };
        Ok(TreeState {
            size,
            root,
            lamport_clock,
            appended_at_ns,
        })
    }

    /// The Lamport clock and append time of entry `size` (both 0 for size 0), without
    /// touching the tree: what a tree head of that size states besides its root.
    pub async fn clock_at(&self, context_id: &str, size: u64) -> Result<(u64, u64), LedgerError> {
        if size == 0 {
            return Ok((0, 0));
        }
        if let Some(h) = self
            .inner
            .durable
            .head(context_id)
            .filter(|h| h.size() == size)
        {
            return Ok((h.lamport_clock, h.last_appended_at_ns));
        }
        // One entry: read on the caller's task, like the other point reads.
        let mut query = ReadQuery {
            after_sequence: size - 1,
            limit: Some(1),
            up_to: Some(size),
            ..ReadQuery::default()
        };
        self.cap_at_durable(context_id, &mut query);
        let page = self.inner.store.read(context_id, &query)?;
        let e = page.entries.first().ok_or_else(|| {
            LedgerError::OutOfRange(format!("entry {size} of {context_id:?} does not exist"))
        })?;
        Ok((e.lamport_clock, e.appended_at_ns))
    }

    /// The Merkle frontier of the context's first `size` entries (for following the tree as
    /// entries arrive, e.g. to sign heads along a watch stream).
    pub async fn frontier_at(
        &self,
        context_id: &str,
        size: u64,
    ) -> Result<ledger_core::Frontier, LedgerError> {
        let current = self.durable_size(context_id)?;
        if size > current {
            return Err(LedgerError::OutOfRange(format!(
                "size {size} is beyond the context's current size {current}"
            )));
        }
        let mut ids = Vec::new();
        merkle::range_decomposition(0, size, &mut ids);
        let hashes = if ids.is_empty() {
            Vec::new()
        } else {
            self.inner.store.nodes(context_id, &ids)?
        };
        ledger_core::Frontier::from_parts(size, hashes)
            .map_err(|e| LedgerError::Storage(ledger_storage::StorageError::Corrupt(e.to_string())))
    }
}

fn resolve_size(requested: u64, current: u64) -> Result<u64, LedgerError> {
    match requested {
        0 => Ok(current),
        n if n > current => Err(LedgerError::OutOfRange(format!(
            "tree size {n} is beyond the context's current size {current}"
        ))),
        n => Ok(n),
    }
}
