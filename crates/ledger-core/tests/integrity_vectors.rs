//! The test vectors published in docs/INTEGRITY.md, also produced by the independent Python
//! implementation in scripts/integrity_vectors.py.

use ledger_core::encoding::encode_leaf_input;
use ledger_core::hash::{Hash, empty_root};
use ledger_core::merkle::{Frontier, consistency_plan, inclusion_plan, reference};
use ledger_core::{Entry, Metadata, sha256_hex};

fn entries() -> Vec<Entry> {
    let md = |pairs: &[(&str, &str)]| -> Metadata {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    vec![
        Entry::new(
            "0190c2a0-0000-7000-8000-000000000001".into(),
            "facts".into(),
            br#"{"goal":"ship"}"#.to_vec(),
            1,
            1_700_000_000_000_000_000,
            Metadata::new(),
            1,
        ),
        Entry::new(
            "0190c2a0-0000-7000-8000-000000000002".into(),
            "proposals".into(),
            vec![0x00, 0xff],
            2,
            1_700_000_000_000_000_500,
            md(&[("zeta", "z"), ("alpha", "a"), ("agent", "planner")]),
            7,
        ),
        Entry::new(
            "0190c2a0-0000-7000-8000-000000000003".into(),
            "evals".into(),
            Vec::new(),
            3,
            1_700_000_000_000_001_000,
            md(&[("\u{e9}", "\u{fc}")]),
            8,
        ),
    ]
}

fn hex(h: &Hash) -> String {
    h.to_hex()
}

#[test]
fn leaf_inputs_and_content_hashes() {
    let e = entries();
    assert_eq!(
        ledger_core::hash::sha256(&[]).to_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let want_inputs = [
        "01000000000000000117979cfe362a000000000000000000010000002430313930633261302d303030302d373030302d383030302d3030303030303030303030310000000566616374730000000f7b22676f616c223a2273686970227d00000000",
        "01000000000000000217979cfe362a01f400000000000000070000002430313930633261302d303030302d373030302d383030302d3030303030303030303030320000000970726f706f73616c730000000200ff00000003000000056167656e7400000007706c616e6e657200000005616c7068610000000161000000047a657461000000017a",
        "01000000000000000317979cfe362a03e800000000000000080000002430313930633261302d303030302d373030302d383030302d303030303030303030303033000000056576616c73000000000000000100000002c3a900000002c3bc",
    ];
    let want_hashes = [
        "4ca6fb842bc4135bbe69e6d370dc6443ea8e0fbe1e81ed3208ab547ef28678ba",
        "4e97d19c1a1fbfc0c2623dce5899f22434c8c8d63d07015266388649f0c3a491",
        "c40446e9b030661ebafdb75629abd8d2032d10754f2665db317b0ef07f342190",
    ];
    for i in 0..3 {
        let input: String = encode_leaf_input(&e[i])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(input, want_inputs[i], "leaf input of entry {}", i + 1);
        assert_eq!(
            hex(&e[i].content_hash),
            want_hashes[i],
            "content hash of entry {}",
            i + 1
        );
    }
}

#[test]
fn roots_and_proofs() {
    let leaves: Vec<Hash> = entries().iter().map(|e| e.content_hash).collect();
    let roots = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "4ca6fb842bc4135bbe69e6d370dc6443ea8e0fbe1e81ed3208ab547ef28678ba",
        "bbf5299cad4e008d0257964e45ab22b2d9a70ccf261ff7f2ac2530acf1d26c32",
        "4870ab0bd0d0a96165042e3ed4865bd0ab56ebf36fcb87b6c00d0c921c76dee2",
    ];
    let mut f = Frontier::new();
    assert_eq!(hex(&f.root()), roots[0]);
    assert_eq!(f.root(), empty_root());
    for (i, l) in leaves.iter().enumerate() {
        f.push_leaf(*l);
        assert_eq!(hex(&f.root()), roots[i + 1]);
    }
    let proof = |plan: ledger_core::merkle::ProofPlan| -> Vec<String> {
        plan.assemble_with::<()>(|id| {
            let s = id.start() as usize;
            Ok(reference::root(&leaves[s..s + id.width() as usize]))
        })
        .unwrap()
        .iter()
        .map(hex)
        .collect()
    };
    assert_eq!(
        proof(inclusion_plan(0, 3).unwrap()),
        vec![
            "4e97d19c1a1fbfc0c2623dce5899f22434c8c8d63d07015266388649f0c3a491",
            "c40446e9b030661ebafdb75629abd8d2032d10754f2665db317b0ef07f342190"
        ]
    );
    assert_eq!(
        proof(inclusion_plan(2, 3).unwrap()),
        vec!["bbf5299cad4e008d0257964e45ab22b2d9a70ccf261ff7f2ac2530acf1d26c32"]
    );
    assert_eq!(
        proof(consistency_plan(1, 3).unwrap()),
        vec![
            "4e97d19c1a1fbfc0c2623dce5899f22434c8c8d63d07015266388649f0c3a491",
            "c40446e9b030661ebafdb75629abd8d2032d10754f2665db317b0ef07f342190"
        ]
    );
    assert_eq!(
        proof(consistency_plan(2, 3).unwrap()),
        vec!["c40446e9b030661ebafdb75629abd8d2032d10754f2665db317b0ef07f342190"]
    );
}

#[test]
fn snapshot_of_the_three_entries() {
    let blob = ledger_core::snapshot::encode("ctx-vectors", 42, &entries()).unwrap();
    assert_eq!(blob.len(), 453);
    assert_eq!(
        sha256_hex(&blob),
        "87730e7856632fbead004bf3bae581924496434e092b33bae63ab7d16275d137"
    );
}

#[test]
fn signed_checkpoint_vector() {
    use ledger_core::checkpoint::{self, SigningKey};
    let key = SigningKey::from_bytes(&[0x42; 32]);
    let root =
        Hash::from_hex("4870ab0bd0d0a96165042e3ed4865bd0ab56ebf36fcb87b6c00d0c921c76dee2").unwrap();
    let h = checkpoint::sign_tree_head(
        &key,
        "converge-ledger",
        "ctx-vectors",
        3,
        root,
        8,
        1_700_000_000_000_001_000,
    );
    assert_eq!(
        checkpoint::base64(key.verifying_key().as_bytes()),
        "IVL40Zt5HSRFMkLhXy6rbLfP+ntqXtMAl5YOBpiB2xI="
    );
    assert_eq!(checkpoint::hex4(&h.key_id), "d153b944");
    assert_eq!(
        checkpoint::base64(&h.signature),
        "WU17BEDGiag2iFoHzYkvfmJZnoDuZ7WuBoWYTQ8pBPhO1gbznF9KF8CQJKTU6/6zZFAb7cIYtETmbtKoGvfFBw=="
    );
    assert_eq!(
        h.note(),
        "converge-ledger/ctx-vectors\n3\nSHCrC9DQqWFlBC4+1IZb0KtW6/Nvy4e2wA0Mkhx23uI=\n\n\u{2014} converge-ledger 0VO5RFlNewRAxomoNohaB82JL35iWZ6A7me1rgaFmE0PKQT4TtYG85xfShfAkCSk1Ov+s2RQG+3CGLRE5m7SqBr3xQc=\n"
    );
    assert_eq!(
        h.checkpoint,
        "converge-ledger/ctx-vectors\n3\nSHCrC9DQqWFlBC4+1IZb0KtW6/Nvy4e2wA0Mkhx23uI=\n"
    );
    h.verify(&key.verifying_key()).unwrap();
}
