//! Valid inputs for every target, the starting corpus of a fuzz run and of the test suite's
//! mutation run.

use ledger_core::{Entry, Metadata, checkpoint, encoding, snapshot};
use ledger_proto::context::v1 as pb;
use ledger_proto::ledger::v1 as lpb;
use prost::Message;

fn entries(n: u64) -> Vec<Entry> {
    (1..=n)
        .map(|i| {
            let mut md = Metadata::new();
            if i % 2 == 0 {
                md.insert("agent".into(), format!("a{i}"));
            }
            Entry::new(
                format!("0190000{i:09}"),
                if i % 3 == 0 {
                    "traces".into()
                } else {
                    "facts".into()
                },
                format!("{{\"n\":{i}}}").into_bytes(),
                i,
                1_700_000_000_000_000_000 + i,
                md,
                i * 2,
            )
        })
        .collect()
}

/// Seed inputs of target `name`.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "snapshot_decode" => [0, 1, 3, 8]
            .iter()
            .map(|n| snapshot::encode("ctx", 42, &entries(*n)).expect("encode"))
            .collect(),
        "snapshot_stream" => [0u8, 7, 63]
            .iter()
            .zip([1u64, 3, 8])
            .map(|(piece, n)| {
                let mut v = vec![*piece];
                v.extend(snapshot::encode("ctx/stream", 7, &entries(n)).expect("encode"));
                v
            })
            .collect(),
        "leaf_decode" => entries(3).iter().map(encoding::encode_leaf_input).collect(),
        "checkpoint_parse" => vec![
            checkpoint::checkpoint_text("converge-ledger/ctx", 0, &ledger_core::hash::empty_root())
                .into_bytes(),
            checkpoint::checkpoint_text(
                "converge-ledger/tenant-a/run 7",
                123_456,
                &ledger_core::hash::sha256(b"root"),
            )
            .into_bytes(),
        ],
        "request_decode" => {
            let tagged = |tag: u8, body: Vec<u8>| {
                let mut v = vec![tag];
                v.extend(body);
                v
            };
            let append = pb::AppendRequest {
                context_id: "ctx".into(),
                key: "facts".into(),
                payload: b"{\"x\":1}".to_vec(),
                metadata: [("agent".to_owned(), "a1".to_owned())].into(),
                received_lamport_clock: Some(5),
                idempotency_key: Some("k-1".into()),
            };
            vec![
                tagged(0, append.encode_to_vec()),
                tagged(
                    1,
                    pb::GetRequest {
                        context_id: "ctx".into(),
                        key: "facts".into(),
                        after_sequence: 3,
                        limit: 10,
                    }
                    .encode_to_vec(),
                ),
                tagged(
                    2,
                    pb::WatchRequest {
                        context_id: "ctx".into(),
                        from_sequence: 1,
                        include_tree_heads: true,
                        ..Default::default()
                    }
                    .encode_to_vec(),
                ),
                tagged(
                    3,
                    pb::LoadRequest {
                        context_id: "ctx".into(),
                        snapshot: snapshot::encode("ctx", 1, &entries(2)).expect("encode"),
                        fail_if_exists: true,
                    }
                    .encode_to_vec(),
                ),
                tagged(
                    4,
                    lpb::AppendStreamRequest {
                        request_id: 9,
                        append: Some(append),
                        batch: None,
                    }
                    .encode_to_vec(),
                ),
                tagged(
                    5,
                    lpb::LoadStreamRequest {
                        context_id: "ctx".into(),
                        data: vec![1, 2, 3],
                        fail_if_exists: false,
                    }
                    .encode_to_vec(),
                ),
                tagged(
                    8,
                    ledger_proto::convert::entry_to_pb(&entries(1)[0]).encode_to_vec(),
                ),
            ]
        }
        "digest_decode" => {
            use ledger_replication::digest::{DigestItem, DigestMessage, DigestPart, RangeId};
            let item = |c: &str, n: u64| DigestItem {
                context: c.into(),
                size: n,
                root: ledger_core::hash::sha256(c.as_bytes()),
                epoch: None,
            };
            vec![
                DigestMessage::Done.encode(),
                DigestMessage::Parts {
                    parts: vec![DigestPart::Range {
                        range: RangeId::ROOT,
                        hash: ledger_core::hash::sha256(b"range"),
                        count: 3,
                    }],
                    more: true,
                }
                .encode(),
                DigestMessage::Parts {
                    parts: vec![DigestPart::Items {
                        range: RangeId::new(2, 7).expect("a valid range"),
                        items: vec![item("a", 1), item("b/c", 20)],
                        last: true,
                    }],
                    more: false,
                }
                .encode(),
            ]
        }
        other => panic!("no fuzz target {other:?}"),
    }
}
