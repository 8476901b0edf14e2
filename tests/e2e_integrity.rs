//! The verifiable ledger end to end against the real binary: signed heads, consistency from an
//! old head to a new one, offline snapshot verification, on-disk tampering caught by
//! `verify context`, watch streams with tree heads verified across a reconnect, the node key,
//! and the integrity API's error codes.

mod support;

use ledger_client::WatchItem;
use ledger_client::verify::{self, VerifyError, WatchVerifier};
use ledger_core::checkpoint::{self, SignedTreeHead};
use std::time::Duration;
use support::{Node, append_n, cli, data_dir, path_str};
use tokio_stream::StreamExt;
use tonic::Code;

fn public_key(node: &Node) -> String {
    node.listening["public_key"]
        .as_str()
        .expect("public key in the listening line")
        .to_owned()
}

#[tokio::test]
async fn heads_proofs_and_consistency_from_an_old_head_verify() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    let key = ledger_node::cli::verify::parse_public_key(&public_key(&node)).unwrap();
    let (name, served) = c.public_key().await.unwrap();
    assert_eq!(served, key, "the key printed at start is the key served");
    assert_eq!(name, "converge-ledger");

    append_n(&c, "ctx", 10).await;
    let old = c.tree_head("ctx").await.unwrap();
    verify::verify_tree_head(&old, &key).unwrap();
    assert_eq!(old.tree_size, 10);
    assert_eq!(
        old.checkpoint,
        format!(
            "converge-ledger/ctx\n10\n{}\n",
            checkpoint::base64(old.root.as_bytes())
        )
    );
    append_n(&c, "ctx", 23).await;
    let new = c.tree_head("ctx").await.unwrap();
    assert_eq!(new.tree_size, 33);

    let p = c.consistency_proof("ctx", old.tree_size, 0).await.unwrap();
    assert_eq!(p.first, old, "the proof's first head is the head we held");
    verify::verify_consistency(&old, &p.second, &p.path, &key).unwrap();
    verify::verify_consistency(&old, &new, &p.path, &key).unwrap();

    let entries = c.get_all("ctx", "", 0).await.unwrap();
    for seq in [1u64, 7, 10, 33] {
        let p = c.inclusion_proof("ctx", seq, 0).await.unwrap();
        verify::verify_entry(
            &entries[seq as usize - 1],
            &p.leaf_hash,
            &p.path,
            &p.tree_head,
            &key,
        )
        .unwrap();
        // And in the old tree, for entries it holds.
        if seq <= 10 {
            let p = c.inclusion_proof("ctx", seq, 10).await.unwrap();
            assert_eq!(p.tree_head.root, old.root);
            verify::verify_entry(
                &entries[seq as usize - 1],
                &p.leaf_hash,
                &p.path,
                &p.tree_head,
                &key,
            )
            .unwrap();
        }
    }
    // The CLI agrees.
    let (code, out, err) = cli(&[
        "verify",
        "entry",
        "--addr",
        &node.url,
        "--context",
        "ctx",
        "--sequence",
        "7",
        "--public-key",
        &public_key(&node),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("OK: entry 7"), "{out}");
    let (code, out, err) = cli(&[
        "verify",
        "context",
        "--addr",
        &node.url,
        "ctx",
        "--public-key",
        &public_key(&node),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("all 33 entries"), "{out}");
}

#[tokio::test]
async fn integrity_errors_have_their_codes() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    append_n(&c, "e", 5).await;
    let code = |r: Result<_, ledger_client::ClientError>| match r {
        Ok::<_, _>(_) => panic!("expected an error"),
        Err(e) => e.code().expect("a status"),
    };
    assert_eq!(
        code(c.tree_head("unknown").await.map(|_| ())),
        Code::NotFound
    );
    assert_eq!(
        code(c.inclusion_proof("unknown", 1, 0).await.map(|_| ())),
        Code::NotFound
    );
    assert_eq!(
        code(c.inclusion_proof("e", 6, 0).await.map(|_| ())),
        Code::OutOfRange
    );
    assert_eq!(
        code(c.inclusion_proof("e", 1, 6).await.map(|_| ())),
        Code::OutOfRange
    );
    assert_eq!(
        code(c.inclusion_proof("e", 4, 3).await.map(|_| ())),
        Code::OutOfRange
    );
    assert_eq!(
        code(c.inclusion_proof("e", 0, 0).await.map(|_| ())),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.consistency_proof("e", 4, 3).await.map(|_| ())),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.consistency_proof("e", 1, 9).await.map(|_| ())),
        Code::OutOfRange
    );
    assert_eq!(
        code(c.tree_head("").await.map(|_| ())),
        Code::InvalidArgument
    );
    // Tree heads in a watch need every entry: no key filter.
    let r = c
        .raw()
        .watch(ledger_client::ledger_proto::context::v1::WatchRequest {
            context_id: "e".into(),
            key: "facts".into(),
            include_tree_heads: true,
            ..Default::default()
        })
        .await;
    assert_eq!(r.err().map(|s| s.code()), Some(Code::InvalidArgument));
}

#[tokio::test]
async fn snapshots_verify_offline_against_a_saved_head() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    append_n(&c, "s", 20).await;
    let snap = dir.path().join("s.snap");
    let head = dir.path().join("s.head.json");
    let (code, _, err) = cli(&[
        "snapshot",
        "--addr",
        &node.url,
        "s",
        "--out",
        &path_str(&snap),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&[
        "head",
        "--addr",
        &node.url,
        "s",
        "--out",
        &path_str(&head),
        "--public-key",
        &public_key(&node),
    ]);
    assert_eq!(code, 0, "{err}");
    let saved: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(saved["tree_size"], 20);
    drop(node); // offline from here on

    let (code, out, err) = cli(&[
        "verify",
        "snapshot",
        &path_str(&snap),
        "--head",
        &path_str(&head),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("OK: snapshot of s with 20 entries"),
        "{out}"
    );
    let root = saved["root"].as_str().unwrap();
    let (code, _, err) = cli(&["verify", "snapshot", &path_str(&snap), "--root", root]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&[
        "verify",
        "snapshot",
        &path_str(&snap),
        "--root",
        &"0".repeat(64),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("snapshot root"), "{err}");
    // One changed byte anywhere is caught.
    let mut blob = std::fs::read(&snap).unwrap();
    blob[200] ^= 1;
    std::fs::write(&snap, &blob).unwrap();
    let (code, _, err) = cli(&[
        "verify",
        "snapshot",
        &path_str(&snap),
        "--head",
        &path_str(&head),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("verification FAILED"), "{err}");
    // A head signed by another key is refused.
    let other = checkpoint::base64(
        checkpoint::SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .as_bytes(),
    );
    blob[200] ^= 1;
    std::fs::write(&snap, &blob).unwrap();
    let (code, _, err) = cli(&[
        "verify",
        "snapshot",
        &path_str(&snap),
        "--head",
        &path_str(&head),
        "--public-key",
        &other,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("signed by key"), "{err}");
}

#[tokio::test]
async fn tampering_with_a_stored_entry_is_caught_by_verify_context() {
    let dir = data_dir();
    let mut node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    append_n(&c, "t", 12).await;
    let pk = public_key(&node);
    assert!(node.terminate().success());

    // Change one byte of entry 5's payload on disk, through the storage layer.
    {
        let store =
            ledger_storage::RocksStore::open(dir.path(), &ledger_storage::RocksConfig::default())
                .unwrap();
        let mut v = store.raw_entry_for_tests("t", 5).unwrap().unwrap();
        let last = v.len() - 5; // inside the payload, before the metadata count
        v[last] ^= 0x20;
        store.tamper_entry_for_tests("t", 5, &v).unwrap();
    }
    let node = Node::start(dir.path(), &[]);
    let (code, out, err) = cli(&[
        "verify",
        "context",
        "--addr",
        &node.url,
        "t",
        "--public-key",
        &pk,
    ]);
    assert_ne!(code, 0, "tampering must be caught: {out}");
    assert!(
        err.contains("verification FAILED") && err.contains("entry 5"),
        "{err}"
    );
    let (code, _, err) = cli(&[
        "verify",
        "entry",
        "--addr",
        &node.url,
        "--context",
        "t",
        "--sequence",
        "5",
        "--public-key",
        &pk,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("entry 5"), "{err}");
    // Untouched entries still verify.
    let (code, _, err) = cli(&[
        "verify",
        "entry",
        "--addr",
        &node.url,
        "--context",
        "t",
        "--sequence",
        "4",
        "--public-key",
        &pk,
    ]);
    assert_eq!(code, 0, "{err}");
}

async fn next_item(
    s: &mut (impl tokio_stream::Stream<Item = Result<WatchItem, ledger_client::ClientError>> + Unpin),
) -> WatchItem {
    tokio::time::timeout(Duration::from_secs(30), s.next())
        .await
        .expect("event in time")
        .expect("open")
        .expect("ok")
}

#[tokio::test]
async fn watch_with_tree_heads_verifies_across_a_reconnect_and_catches_gaps() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    let key = ledger_node::cli::verify::parse_public_key(&public_key(&node)).unwrap();
    append_n(&c, "w", 25).await;
    let mut v = WatchVerifier::new("w", key);
    let mut seen_entries = Vec::new();
    let mut seen_heads: Vec<SignedTreeHead> = Vec::new();
    {
        let mut s = Box::pin(c.watch_with_tree_heads("w", 0, 10, 50).await.unwrap());
        while v.position() < 25 || v.verified_heads() < 3 {
            match next_item(&mut s).await {
                WatchItem::Entry(e) => {
                    v.entry(&e).unwrap();
                    seen_entries.push(e);
                }
                WatchItem::TreeHead(h) => {
                    v.tree_head(&h).unwrap();
                    seen_heads.push(h);
                }
            }
        }
    } // dropped: a reconnect follows
    append_n(&c, "w", 17).await;
    let mut s = Box::pin(
        c.watch_with_tree_heads("w", v.position(), 10, 50)
            .await
            .unwrap(),
    );
    // The resumed stream opens with the head of what we already hold.
    match next_item(&mut s).await {
        WatchItem::TreeHead(h) => {
            assert_eq!(h.tree_size, 25);
            v.tree_head(&h).unwrap();
        }
        other => panic!("expected the anchoring head, got {other:?}"),
    }
    while v.position() < 42 || seen_heads.last().is_none_or(|h| h.tree_size < 42) {
        match next_item(&mut s).await {
            WatchItem::Entry(e) => {
                v.entry(&e).unwrap();
                seen_entries.push(e);
            }
            WatchItem::TreeHead(h) => {
                v.tree_head(&h).unwrap();
                seen_heads.push(h);
            }
        }
    }
    assert!(seen_entries.iter().map(|e| e.sequence).eq(1..=42));
    assert_eq!(v.position(), 42);

    // Replaying what was seen through a fresh verifier, with one entry missing, fails.
    let mut bad = WatchVerifier::new("w", key);
    let mut r = Ok(());
    for e in seen_entries.iter().filter(|e| e.sequence != 13) {
        r = bad.entry(e);
        if r.is_err() {
            break;
        }
    }
    assert!(
        matches!(
            r,
            Err(VerifyError::Gap {
                position: 12,
                found: 14
            })
        ),
        "{r:?}"
    );
    // Two entries swapped fail.
    let mut bad = WatchVerifier::new("w", key);
    let mut swapped = seen_entries.clone();
    swapped.swap(4, 5);
    let r = swapped.iter().try_for_each(|e| bad.entry(e));
    assert!(
        matches!(
            r,
            Err(VerifyError::Gap { .. }) | Err(VerifyError::Reordered { .. })
        ),
        "{r:?}"
    );
    // A rewritten entry with a recomputed hash fails at the next head.
    let mut bad = WatchVerifier::new("w", key);
    let mut forged = seen_entries[..10].to_vec();
    forged[3].payload = b"rewritten".to_vec();
    forged[3].content_hash = forged[3].compute_content_hash();
    forged.iter().try_for_each(|e| bad.entry(e)).unwrap();
    let head10 = seen_heads
        .iter()
        .find(|h| h.tree_size == 10)
        .expect("a head at 10");
    assert!(matches!(
        bad.tree_head(head10),
        Err(VerifyError::Mismatch { .. })
    ));
}

#[test]
fn signing_key_is_created_private_and_kept_across_restarts() {
    let dir = data_dir();
    let first = {
        let node = Node::start(dir.path(), &[]);
        public_key(&node)
    };
    let key_file = dir.path().join("signing.key");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600);
    let node = Node::start(dir.path(), &[]);
    assert_eq!(public_key(&node), first, "the same key after a restart");
    // A key given by configuration is used instead.
    let seed = checkpoint::base64(&[5u8; 32]);
    let other = data_dir();
    let node = Node::start_with_env(other.path(), &[], &[("LEDGER_SIGNING_KEY", &seed)]);
    let expected = checkpoint::base64(
        checkpoint::SigningKey::from_bytes(&[5; 32])
            .verifying_key()
            .as_bytes(),
    );
    assert_eq!(public_key(&node), expected);
    assert!(!other.path().join("signing.key").exists());
}
