//! Known-answer vectors from RFC 6962's reference implementation (as published with
//! certificate-transparency and transparency-dev/merkle).

use ledger_core::hash::{Hash, empty_root, leaf_hash};
use ledger_core::merkle::{
    Frontier, consistency_plan, inclusion_plan, reference, verify_consistency, verify_inclusion,
};

fn h(s: &str) -> Hash {
    Hash::from_hex(s).expect("hex")
}

fn leaves() -> Vec<Hash> {
    let inputs: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    inputs.iter().map(|i| leaf_hash(i)).collect()
}

const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn proof_from_tree(plan: &ledger_core::merkle::ProofPlan, leaves: &[Hash]) -> Vec<Hash> {
    plan.assemble_with::<()>(|id| {
        let s = id.start() as usize;
        Ok(reference::root(&leaves[s..s + id.width() as usize]))
    })
    .unwrap()
}

#[test]
fn roots_match_rfc6962_vectors() {
    let leaves = leaves();
    assert_eq!(
        reference::root(&[]),
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(empty_root(), reference::root(&[]));
    let mut f = Frontier::new();
    for (i, leaf) in leaves.iter().enumerate() {
        f.push_leaf(*leaf);
        assert_eq!(f.root(), h(ROOTS[i]), "root of size {}", i + 1);
        assert_eq!(reference::root(&leaves[..=i]), h(ROOTS[i]));
    }
}

#[test]
fn inclusion_proofs_match_rfc6962_vectors() {
    let leaves = leaves();
    // (leaf index, tree size, path)
    let cases: Vec<(u64, u64, Vec<&str>)> = vec![
        (0, 1, vec![]),
        (
            0,
            8,
            vec![
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            vec![
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            vec!["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            vec![
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (index, size, path) in cases {
        let want: Vec<Hash> = path.iter().map(|s| h(s)).collect();
        let plan = inclusion_plan(index, size).unwrap();
        let got = proof_from_tree(&plan, &leaves[..size as usize]);
        assert_eq!(got, want, "inclusion({index}, {size})");
        assert_eq!(
            reference::inclusion_path(index as usize, &leaves[..size as usize]),
            want
        );
        verify_inclusion(
            index,
            size,
            &leaves[index as usize],
            &got,
            &h(ROOTS[size as usize - 1]),
        )
        .unwrap();
    }
}

#[test]
fn consistency_proofs_match_rfc6962_vectors() {
    let leaves = leaves();
    let cases: Vec<(u64, u64, Vec<&str>)> = vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            vec![
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            vec![
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (m, n, path) in cases {
        let want: Vec<Hash> = path.iter().map(|s| h(s)).collect();
        let plan = consistency_plan(m, n).unwrap();
        let got = proof_from_tree(&plan, &leaves[..n as usize]);
        assert_eq!(got, want, "consistency({m}, {n})");
        assert_eq!(
            reference::consistency_path(m as usize, &leaves[..n as usize]),
            want
        );
        verify_consistency(
            m,
            n,
            &h(ROOTS[m as usize - 1]),
            &h(ROOTS[n as usize - 1]),
            &got,
        )
        .unwrap();
    }
}
