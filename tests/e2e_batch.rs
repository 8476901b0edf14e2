//! Batch appends against the real binary: `ContextService/AppendBatch` (all or nothing,
//! consecutive, limits), a batch request on an `AppendStream`, and `append --from-file`.
//! Batches through a cluster: `e2e_cluster`.

mod support;

use ledger_core::{Metadata, NewEntry};
use ledger_proto::context::v1 as pb;
use ledger_proto::ledger::v1 as lpb;
use lpb::append_pipeline_client::AppendPipelineClient;
use lpb::append_stream_response::Result as Outcome;
use std::io::Write;
use support::{Node, cli, data_dir, path_str, tmp_file};
use tonic::Code;

fn item(key: &str, payload: &str) -> NewEntry {
    NewEntry::new("", key, payload.as_bytes().to_vec(), Metadata::new(), None)
}

fn pb_item(key: &str, payload: &str) -> pb::AppendBatchItem {
    pb::AppendBatchItem {
        key: key.into(),
        payload: payload.as_bytes().to_vec(),
        metadata: Default::default(),
        received_lamport_clock: None,
    }
}

#[tokio::test]
async fn append_batch_stores_all_items_consecutively_and_answers_once() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    c.append("ctx", "facts", b"first".to_vec(), Metadata::new(), None)
        .await
        .unwrap();
    let mut items: Vec<NewEntry> = (0..100).map(|i| item("facts", &format!("b{i}"))).collect();
    items[7].metadata.insert("agent".into(), "a1".into());
    items[9].received_lamport_clock = Some(500);
    let stored = c.append_batch("ctx", items).await.unwrap();
    assert_eq!(stored.len(), 100);
    assert!(stored.iter().map(|e| e.sequence).eq(2..=101));
    assert!(stored.iter().all(|e| e.verify_content_hash()));
    assert_eq!(
        stored[7].metadata.get("agent").map(String::as_str),
        Some("a1")
    );
    assert_eq!(stored[9].lamport_clock, 501);
    let page = c.get("ctx", "", 1, 0).await.unwrap();
    assert_eq!(
        page.entries, stored,
        "what was acknowledged is what is stored"
    );

    // The raw response names the first and last sequence.
    let mut raw = pb::context_service_client::ContextServiceClient::new(node.channel().await);
    let r = raw
        .append_batch(pb::AppendBatchRequest {
            context_id: "ctx".into(),
            items: vec![pb_item("facts", "x"), pb_item("evals", "y")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.first_sequence, r.last_sequence), (102, 103));
    assert_eq!(r.entries.len(), 2);
}

/// The Rust client's pipeline carries batches on its shared stream, in order with single
/// appends from other tasks; a refused batch fails only its caller and the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_pipeline_sends_batches_on_its_shared_stream() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    let pipe = c.pipeline();
    let singles = {
        let pipe = pipe.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..30 {
                let e = pipe
                    .append(
                        "mixed",
                        "facts",
                        format!("s{i}").into_bytes(),
                        Metadata::new(),
                        None,
                    )
                    .await
                    .unwrap();
                seqs.push(e.sequence);
            }
            seqs
        })
    };
    let mut batches = Vec::new();
    for b in 0..6 {
        let items: Vec<NewEntry> = (0..10)
            .map(|i| item("evals", &format!("b{b}-{i}")))
            .collect();
        let stored = pipe.append_batch("mixed", items).await.unwrap();
        assert_eq!(stored.len(), 10);
        let first = stored[0].sequence;
        assert!(
            stored.iter().map(|e| e.sequence).eq(first..first + 10),
            "a batch is consecutive even between other appends"
        );
        assert!(stored.iter().all(|e| e.verify_content_hash()));
        batches.push(stored);
    }
    let singles = singles.await.unwrap();
    assert!(
        singles.windows(2).all(|w| w[0] < w[1]),
        "one task's appends in call order"
    );
    // A refused batch (an empty key) fails alone; the stream keeps serving.
    let e = pipe
        .append_batch("mixed", vec![item("facts", "ok"), item("", "bad")])
        .await
        .unwrap_err();
    match e {
        ledger_client::ClientError::Status(s) => {
            assert_eq!(s.code(), Code::InvalidArgument);
            assert!(s.message().contains("item 1"), "{}", s.message());
        }
        other => panic!("expected INVALID_ARGUMENT, got {other}"),
    }
    // Items with idempotency keys are refused before anything is sent.
    let mut keyed = item("facts", "k");
    keyed.idempotency_key = Some("key-1".into());
    assert!(pipe.append_batch("mixed", vec![keyed]).await.is_err());
    let after = pipe
        .append_batch("mixed", vec![item("facts", "after")])
        .await
        .unwrap();
    assert_eq!(
        after[0].sequence, 91,
        "30 singles + 60 in batches, nothing of the refused"
    );
    let page = c.get("mixed", "evals", 0, 0).await.unwrap();
    let stored: Vec<_> = batches.into_iter().flatten().collect();
    assert_eq!(
        page.entries, stored,
        "what was acknowledged is what is stored"
    );
}

#[tokio::test]
async fn an_invalid_item_refuses_the_whole_batch_and_limits_are_resource_exhausted() {
    let dir = data_dir();
    let node = Node::start(
        dir.path(),
        &["--max-batch-items", "5", "--max-batch-bytes", "100"],
    );
    let c = node.client().await;
    let mut raw = pb::context_service_client::ContextServiceClient::new(node.channel().await);
    let s = raw
        .append_batch(pb::AppendBatchRequest {
            context_id: "ctx".into(),
            items: vec![
                pb_item("facts", "a"),
                pb_item("facts", "b"),
                pb_item("", "c"),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().starts_with("batch item 2: key"),
        "{}",
        s.message()
    );
    let s = raw
        .append_batch(pb::AppendBatchRequest {
            context_id: "ctx".into(),
            items: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = raw
        .append_batch(pb::AppendBatchRequest {
            context_id: "ctx".into(),
            items: (0..6).map(|_| pb_item("facts", "a")).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(s.message().contains("max_batch_items"), "{}", s.message());
    let big = "x".repeat(60);
    let s = raw
        .append_batch(pb::AppendBatchRequest {
            context_id: "ctx".into(),
            items: vec![pb_item("facts", &big), pb_item("facts", &big)],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(s.message().contains("max_batch_bytes"), "{}", s.message());
    // The client refuses idempotency keys on items before sending.
    let mut keyed = vec![item("facts", "a")];
    keyed[0].idempotency_key = Some("k".into());
    let e = c.append_batch("ctx", keyed).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument));
    assert_eq!(c.get("ctx", "", 0, 0).await.unwrap().latest_sequence, 0);
}

#[tokio::test]
async fn a_batch_request_on_an_append_stream_is_answered_in_order() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let mut client = AppendPipelineClient::new(node.channel().await);
    let single = |id: u64| lpb::AppendStreamRequest {
        request_id: id,
        append: Some(pb::AppendRequest {
            context_id: "ctx".into(),
            key: "facts".into(),
            payload: b"one".to_vec(),
            ..Default::default()
        }),
        batch: None,
    };
    let requests = vec![
        single(1),
        lpb::AppendStreamRequest {
            request_id: 2,
            append: None,
            batch: Some(pb::AppendBatchRequest {
                context_id: "ctx".into(),
                items: vec![pb_item("facts", "b0"), pb_item("facts", "b1")],
            }),
        },
        lpb::AppendStreamRequest {
            request_id: 3,
            append: None,
            batch: Some(pb::AppendBatchRequest {
                context_id: "ctx".into(),
                items: vec![pb_item("facts", "ok"), pb_item("", "bad")],
            }),
        },
        single(4),
    ];
    let mut answers = client
        .append_stream(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(a) = answers.message().await.unwrap() {
        got.push(a);
    }
    assert_eq!(
        got.iter().map(|a| a.request_id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    match &got[1].result {
        Some(Outcome::Batch(b)) => {
            assert_eq!((b.first_sequence, b.last_sequence), (2, 3));
            assert_eq!(b.entries[1].payload, b"b1");
        }
        other => panic!("batch answer expected, got {other:?}"),
    }
    match &got[2].result {
        Some(Outcome::Error(e)) => {
            assert_eq!(e.code, Code::InvalidArgument as i32);
            assert!(e.message.starts_with("batch item 1"), "{}", e.message);
        }
        other => panic!("error expected, got {other:?}"),
    }
    match &got[3].result {
        Some(Outcome::Entry(e)) => assert_eq!(e.sequence, 4, "the refused batch stored nothing"),
        other => panic!("entry expected, got {other:?}"),
    }
}

#[test]
fn append_from_file_sends_json_lines_in_batches() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let addr = node.url.as_str();
    let file = tmp_file(dir.path(), "entries.jsonl");
    let mut f = std::fs::File::create(&file).unwrap();
    for i in 0..25 {
        writeln!(
            f,
            r#"{{"key":"facts","payload":"line {i}","metadata":{{"n":"{i}"}}}}"#
        )
        .unwrap();
    }
    writeln!(f).unwrap();
    writeln!(
        f,
        r#"{{"key":"bin","payload":"AAH/","payload_encoding":"base64"}}"#
    )
    .unwrap();
    drop(f);
    let (code, out, err) = cli(&[
        "append",
        "--addr",
        addr,
        "ctx",
        "--from-file",
        &path_str(&file),
        "--batch-size",
        "10",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let stored: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(stored.len(), 26);
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(e["sequence"], i as u64 + 1);
    }
    assert_eq!(stored[3]["payload"], "line 3");
    assert_eq!(stored[3]["metadata"]["n"], "3");
    assert_eq!(stored[25]["payload"], "AAH/");
    assert_eq!(stored[25]["payload_encoding"], "base64");

    // `get --json` output appends as is (to another context).
    let (code, out, _) = cli(&["get", "--addr", addr, "ctx", "--json"]);
    assert_eq!(code, 0);
    let copy = tmp_file(dir.path(), "copy.jsonl");
    std::fs::write(&copy, out).unwrap();
    let (code, out, err) = cli(&[
        "append",
        "--addr",
        addr,
        "copy",
        "--from-file",
        &path_str(&copy),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 26);

    // A bad line stops before its batch is sent; the error names it.
    let bad = tmp_file(dir.path(), "bad.jsonl");
    std::fs::write(
        &bad,
        "{\"key\":\"facts\",\"payload\":\"ok\"}\n{\"payload\":\"no key\"}\n",
    )
    .unwrap();
    let (code, _, err) = cli(&[
        "append",
        "--addr",
        addr,
        "bad",
        "--from-file",
        &path_str(&bad),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("line 2"), "{err}");
    // An invalid entry refuses its batch: nothing of it is stored.
    let invalid = tmp_file(dir.path(), "invalid.jsonl");
    std::fs::write(
        &invalid,
        "{\"key\":\"facts\",\"payload\":\"ok\"}\n{\"key\":\"\"}\n",
    )
    .unwrap();
    let (code, _, err) = cli(&[
        "append",
        "--addr",
        addr,
        "bad",
        "--from-file",
        &path_str(&invalid),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("batch item 1"), "{err}");
    let (code, out, _) = cli(&["get", "--addr", addr, "bad"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().count(),
        0,
        "nothing of a refused batch is stored: {out}"
    );
}
