//! Property tests of the IntegrityService as served (in process, the real service code over
//! the embedded ledger): every proof it serves for random sizes and indices verifies with the
//! independent client verifier, and every single-bit change of a proof, leaf, size or head fails.

use ledger_client::verify;
use ledger_core::checkpoint::SignedTreeHead;
use ledger_core::{Hash, Metadata};
use ledger_embedded::{Ledger, LedgerConfig};
use ledger_proto::convert::{hashes_from_pb, tree_head_from_pb};
use ledger_proto::ledger::v1 as lpb;
use ledger_server::grpc::integrity_service::IntegrityApi;
use ledger_server::signer::Signer;
use lpb::integrity_service_server::IntegrityService;
use proptest::prelude::*;
use std::sync::Arc;
use tonic::Request;

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut b = h.0;
    b[(bit / 8) % 32] ^= 1 << (bit % 8);
    Hash(b)
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    api: IntegrityApi,
    key: ledger_core::checkpoint::VerifyingKey,
}

fn fixture(n: u64) -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ledger = Ledger::with_store(
        Arc::new(ledger_storage::MemoryStore::new()),
        LedgerConfig::default(),
    );
    let signer = Arc::new(Signer::from_seed([3u8; 32], "test-ledger", "test".into()));
    let key = signer.public_key();
    rt.block_on(async {
        for i in 0..n {
            ledger
                .append(
                    "p",
                    "facts",
                    i.to_be_bytes().to_vec(),
                    Metadata::new(),
                    None,
                )
                .await
                .unwrap();
        }
    });
    Fixture {
        rt,
        api: IntegrityApi::new(
            ledger.clone(),
            signer,
            None,
            ledger_server::metrics::Metrics::new(ledger),
        ),
        key,
    }
}

impl Fixture {
    fn inclusion(&self, seq: u64, size: u64) -> (Hash, Vec<Hash>, SignedTreeHead) {
        let p =
            self.rt
                .block_on(self.api.get_inclusion_proof(Request::new(
                    lpb::GetInclusionProofRequest {
                        context_id: "p".into(),
                        sequence: seq,
                        tree_size: size,
                    },
                )))
                .unwrap()
                .into_inner();
        (
            Hash::from_slice(&p.leaf_hash).unwrap(),
            hashes_from_pb(p.audit_path, "path").unwrap(),
            tree_head_from_pb(p.tree_head.unwrap()).unwrap(),
        )
    }

    fn consistency(&self, first: u64, second: u64) -> (Vec<Hash>, SignedTreeHead, SignedTreeHead) {
        let p = self
            .rt
            .block_on(self.api.get_consistency_proof(Request::new(
                lpb::GetConsistencyProofRequest {
                    context_id: "p".into(),
                    first_size: first,
                    second_size: second,
                },
            )))
            .unwrap()
            .into_inner();
        (
            hashes_from_pb(p.path, "path").unwrap(),
            tree_head_from_pb(p.first_tree_head.unwrap()).unwrap(),
            tree_head_from_pb(p.second_tree_head.unwrap()).unwrap(),
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn served_proofs_verify_and_every_bit_flip_fails(
        n in 1u64..400,
        picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 4),
        bit in 0usize..256,
    ) {
        let f = fixture(n);
        for (a, b) in &picks {
            let size = 1 + b.index(n as usize) as u64;
            let seq = 1 + a.index(size as usize) as u64;
            let (leaf, path, head) = f.inclusion(seq, size);
            prop_assert_eq!(head.tree_size, size);
            verify::verify_tree_head(&head, &f.key).unwrap();
            verify::verify_inclusion(seq, &leaf, &path, &head).unwrap();
            // A flipped bit in any path element, in the leaf, or in the head's root fails.
            for k in 0..path.len() {
                let mut p = path.clone();
                p[k] = flip(&p[k], bit);
                prop_assert!(verify::verify_inclusion(seq, &leaf, &p, &head).is_err());
            }
            prop_assert!(verify::verify_inclusion(seq, &flip(&leaf, bit), &path, &head).is_err());
            let mut h = head.clone();
            h.root = flip(&h.root, bit);
            prop_assert!(verify::verify_tree_head(&h, &f.key).is_err());
            // A different size claimed in a head: the signature no longer matches.
            let mut h = head.clone();
            h.tree_size ^= 1 << (bit % 8);
            prop_assert!(verify::verify_tree_head(&h, &f.key).is_err());
            let mut h = head.clone();
            h.signature[bit % 64] ^= 1 << (bit % 8);
            prop_assert!(verify::verify_tree_head(&h, &f.key).is_err());

            let first = a.index(size as usize + 1) as u64; // 0..=size
            let (cpath, h1, h2) = f.consistency(first, size);
            verify::verify_consistency(&h1, &h2, &cpath, &f.key).unwrap();
            for k in 0..cpath.len() {
                let mut p = cpath.clone();
                p[k] = flip(&p[k], bit);
                prop_assert!(verify::verify_consistency(&h1, &h2, &p, &f.key).is_err());
            }
            if first > 0 && first < size {
                // Heads with a flipped root are refused whatever their signature.
                let mut bad = h1.clone();
                bad.root = flip(&bad.root, bit);
                prop_assert!(verify::verify_consistency(&bad, &h2, &cpath, &f.key).is_err());
                prop_assert!(verify::verify_consistency(&h1, &h2, &cpath[..cpath.len() - 1], &f.key).is_err());
            }
        }
    }
}

#[test]
fn heads_are_signed_over_the_documented_checkpoint() {
    let f = fixture(3);
    let h =
        f.rt.block_on(f.api.get_tree_head(Request::new(lpb::GetTreeHeadRequest {
            context_id: "p".into(),
        })))
        .unwrap()
        .into_inner();
    let head = tree_head_from_pb(h.clone()).unwrap();
    let root_b64 = ledger_core::checkpoint::base64(&h.root_hash);
    assert_eq!(h.checkpoint, format!("test-ledger/p\n3\n{root_b64}\n"));
    assert_eq!(h.tree_size, 3);
    assert_eq!(h.lamport_clock, 3);
    assert!(h.note.starts_with(&h.checkpoint));
    verify::verify_tree_head(&head, &f.key).unwrap();
    // An independent check of the signature with ed25519-dalek directly.
    use ed25519_dalek::Verifier;
    let sig = ed25519_dalek::Signature::from_bytes(&h.signature.try_into().unwrap());
    f.key.verify(h.checkpoint.as_bytes(), &sig).unwrap();
}
