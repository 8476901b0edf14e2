//! Pipelined appends (`converge.ledger.v1.AppendPipeline/AppendStream`) against the real binary:
//! the same entries as unary Append, answers in request order with echoed ids, a refused
//! append does not end the stream, a client that stops reading holds back only itself,
//! acknowledged appends survive SIGKILL, and shutdown answers what it took and then ends the
//! stream with UNAVAILABLE.

mod support;

use ledger_client::ClientError;
use ledger_core::{Entry, Metadata};
use ledger_proto::context::v1 as pb;
use ledger_proto::ledger::v1 as lpb;
use lpb::append_pipeline_client::AppendPipelineClient;
use lpb::append_stream_response::Result as Outcome;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::{Node, append_until_killed, assert_acknowledged_kept, data_dir, free_port};
use tonic::Code;

fn request(id: u64, ctx: &str, key: &str, payload: Vec<u8>) -> lpb::AppendStreamRequest {
    lpb::AppendStreamRequest {
        request_id: id,
        append: Some(pb::AppendRequest {
            context_id: ctx.into(),
            key: key.into(),
            payload,
            metadata: Default::default(),
            received_lamport_clock: None,
            idempotency_key: None,
        }),
        batch: None,
    }
}

#[tokio::test]
async fn concurrent_pipelined_appends_are_stored_like_unary_ones_in_call_order() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    let pipeline = c.pipeline();
    let mut tasks = Vec::new();
    for w in 0..16u32 {
        let p = pipeline.clone();
        tasks.push(tokio::spawn(async move {
            let ctx = format!("p{}", w % 4);
            let mut got = Vec::new();
            for i in 0..150u32 {
                let mut md = Metadata::new();
                md.insert("writer".into(), w.to_string());
                let e = p
                    .append(&ctx, "facts", format!("{w}/{i}").into_bytes(), md, None)
                    .await
                    .unwrap();
                got.push(e);
            }
            (ctx, got)
        }));
    }
    let mut acked: Vec<(String, Entry)> = Vec::new();
    for t in tasks {
        let (ctx, got) = t.await.unwrap();
        // One task's appends to a context land in the order it made them.
        assert!(got.windows(2).all(|w| w[0].sequence < w[1].sequence));
        acked.extend(got.into_iter().map(|e| (ctx.clone(), e)));
    }
    for k in 0..4 {
        let ctx = format!("p{k}");
        let stored = c.get_all(&ctx, "", 0).await.unwrap();
        assert_eq!(stored.len(), 4 * 150);
        assert!(
            stored.iter().map(|e| e.sequence).eq(1..=600),
            "{ctx} gapless"
        );
        assert!(stored.iter().map(|e| e.lamport_clock).eq(1..=600));
        let by_seq: HashMap<u64, &Entry> = stored.iter().map(|e| (e.sequence, e)).collect();
        for (_, e) in acked.iter().filter(|(c, _)| *c == ctx) {
            assert!(e.verify_content_hash());
            assert_eq!(
                by_seq[&e.sequence], e,
                "the acknowledged entry is the stored one"
            );
        }
    }
    // Unary and pipelined appends interleave on one context without gaps.
    let u = c
        .append("p0", "facts", vec![1], Metadata::new(), None)
        .await
        .unwrap();
    let p = pipeline
        .append("p0", "facts", vec![2], Metadata::new(), Some(10_000))
        .await
        .unwrap();
    assert_eq!((u.sequence, p.sequence), (601, 602));
    assert_eq!(p.lamport_clock, 10_001, "received clock honoured");
}

#[tokio::test]
async fn answers_come_in_request_order_and_a_refused_append_does_not_end_the_stream() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &["--max-payload-bytes", "1024"]);
    let mut raw = AppendPipelineClient::connect(node.url.clone())
        .await
        .unwrap();
    let mut missing = request(13, "", "", vec![]);
    missing.append = None;
    let requests = vec![
        request(10, "r", "facts", vec![1]),
        request(11, "r", "", vec![2]),            // empty key
        request(12, "r", "facts", vec![0; 2048]), // over --max-payload-bytes
        missing,
        request(14, "", "facts", vec![3]), // empty context id
        request(15, "r", "facts", vec![4]),
    ];
    let mut answers = raw
        .append_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(a) = answers.message().await.unwrap() {
        got.push(a);
    }
    let ids: Vec<u64> = got.iter().map(|a| a.request_id).collect();
    assert_eq!(
        ids,
        vec![10, 11, 12, 13, 14, 15],
        "one answer each, in order"
    );
    let entry = |i: usize| match &got[i].result {
        Some(Outcome::Entry(e)) => e.clone(),
        other => panic!("answer {i}: expected an entry, got {other:?}"),
    };
    let error = |i: usize| match &got[i].result {
        Some(Outcome::Error(e)) => e.clone(),
        other => panic!("answer {i}: expected an error, got {other:?}"),
    };
    assert_eq!(entry(0).sequence, 1);
    assert_eq!(entry(0).payload, vec![1]);
    assert_eq!(error(1).code, Code::InvalidArgument as i32);
    assert!(error(1).message.contains("key"), "{}", error(1).message);
    assert_eq!(error(2).code, Code::ResourceExhausted as i32);
    assert!(error(2).message.contains("1024"), "{}", error(2).message);
    assert_eq!(error(3).code, Code::InvalidArgument as i32);
    assert!(error(3).message.contains("append"), "{}", error(3).message);
    assert_eq!(error(4).code, Code::InvalidArgument as i32);
    // Refused appends take no sequence: the next one is 2.
    assert_eq!(entry(5).sequence, 2);
    assert_eq!(entry(5).payload, vec![4]);

    // Nothing refused was stored.
    let c = node.client().await;
    let stored = c.get_all("r", "", 0).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        vec![vec![1], vec![4]]
    );

    // The client handle reports a refusal as that append's status and carries on.
    let p = c.pipeline();
    let err = p
        .append("r", "", vec![5], Metadata::new(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    let e = p
        .append("r", "facts", vec![6], Metadata::new(), None)
        .await
        .unwrap();
    assert_eq!(e.sequence, 3);
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_back_only_itself() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let mut raw = AppendPipelineClient::connect(node.url.clone())
        .await
        .unwrap();
    // 5,000 requests and not one answer read while they go out.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let sender = tokio::spawn(async move {
        for i in 1..=5_000u64 {
            if tx
                .send(request(i, "slow", "facts", vec![7; 512]))
                .await
                .is_err()
            {
                return i;
            }
        }
        0
    });
    let mut answers = raw
        .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Meanwhile other writers are served promptly.
    let c = node.client().await;
    let start = Instant::now();
    for i in 0..20u8 {
        c.append("other", "facts", vec![i], Metadata::new(), None)
            .await
            .unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "other writers waited {:?}",
        start.elapsed()
    );

    // Then every answer arrives, in order, and the context is complete.
    let mut next = 1u64;
    while next <= 5_000 {
        let a = answers.message().await.unwrap().expect("an answer");
        assert_eq!(a.request_id, next);
        match a.result {
            Some(Outcome::Entry(e)) => assert_eq!(e.sequence, next),
            other => panic!("request {next}: {other:?}"),
        }
        next += 1;
    }
    assert_eq!(sender.await.unwrap(), 0);
    assert_eq!(c.get_all("slow", "", 0).await.unwrap().len(), 5_000);
}

#[tokio::test]
async fn acknowledged_pipelined_appends_survive_sigkill() {
    let dir = data_dir();
    for round in 0..2 {
        let mut node = Node::start(dir.path(), &[]);
        let pipeline = node.client().await.pipeline();
        let append = move |ctx: String, payload: Vec<u8>| {
            let p = pipeline.clone();
            async move {
                p.append(&ctx, "facts", payload, Metadata::new(), None)
                    .await
            }
        };
        let acked = append_until_killed(&mut node, 32, 8, 2_000 * (round + 1), append).await;

        let node = Node::start(dir.path(), &[]);
        let c = node.client().await;
        for k in 0..8 {
            assert_acknowledged_kept(&c, &format!("k{k}"), &acked).await;
        }
    }
}

#[tokio::test]
async fn shutdown_answers_taken_appends_then_ends_the_stream_with_unavailable() {
    let dir = data_dir();
    // A long grace period: the node must not need it, open streams end on their own.
    let mut node = Node::start_with_env(dir.path(), &[], &[("LEDGER_SHUTDOWN_GRACE_MS", "60000")]);
    let c = node.client().await;
    let pipeline = c.pipeline();
    let mut writers = Vec::new();
    for w in 0..8 {
        let p = pipeline.clone();
        writers.push(tokio::spawn(async move {
            let ctx = format!("s{w}");
            let mut acked = 0u64;
            loop {
                match p
                    .append(&ctx, "facts", vec![1; 64], Metadata::new(), None)
                    .await
                {
                    Ok(e) => {
                        acked += 1;
                        assert_eq!(e.sequence, acked, "{ctx}: acknowledged in order");
                    }
                    Err(e) => return (ctx, acked, e),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let start = Instant::now();
    let status = tokio::task::spawn_blocking(move || node.terminate())
        .await
        .unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "open append streams held shutdown for {:?}",
        start.elapsed()
    );
    let mut ends = Vec::new();
    for w in writers {
        ends.push(w.await.unwrap());
    }
    for (_, _, e) in &ends {
        // UNAVAILABLE from the node, or the connection going away after it.
        assert!(
            matches!(
                e.code(),
                Some(Code::Unavailable) | Some(Code::Unknown) | Some(Code::Cancelled)
            ) || matches!(e, ClientError::InvalidResponse(_)),
            "writer ended with {e}"
        );
    }
    assert!(
        ends.iter()
            .any(|(_, _, e)| e.code() == Some(Code::Unavailable)),
        "at least one writer saw UNAVAILABLE: {:?}",
        ends.iter()
            .map(|(_, _, e)| e.to_string())
            .collect::<Vec<_>>()
    );

    // Every acknowledged append is there after restart, and the pipeline of a new client works.
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    for (ctx, acked, _) in &ends {
        let stored = c.get_all(ctx, "", 0).await.unwrap().len() as u64;
        assert!(
            stored >= *acked,
            "{ctx}: {stored} stored < {acked} acknowledged"
        );
    }
    let e = c
        .pipeline()
        .append("s0", "facts", vec![], Metadata::new(), None)
        .await
        .unwrap();
    assert!(e.sequence > ends.iter().find(|x| x.0 == "s0").unwrap().1);
}

#[tokio::test]
async fn a_pipeline_opens_a_new_stream_after_the_node_restarts() {
    let dir = data_dir();
    let port = free_port().to_string();
    let mut node = Node::start(dir.path(), &["--port", &port]);
    let c = node.client().await;
    let pipeline = c.pipeline();
    let first = pipeline
        .append("r", "facts", vec![1], Metadata::new(), None)
        .await
        .unwrap();
    assert_eq!(first.sequence, 1);
    // Off the runtime thread, so the client's connection takes the node's GOAWAY.
    let status = tokio::task::spawn_blocking(move || node.terminate())
        .await
        .unwrap();
    assert!(status.success());

    // While the node is down, an append fails promptly instead of hanging.
    let down = tokio::time::timeout(
        Duration::from_secs(20),
        pipeline.append("r", "facts", vec![2], Metadata::new(), None),
    )
    .await
    .expect("an append to a stopped node fails, it does not hang");
    assert!(down.is_err());

    let _node = Node::start(dir.path(), &["--port", &port]);
    // The same handle opens a new stream on the restarted node (the channel reconnects).
    let deadline = Instant::now() + Duration::from_secs(20);
    let e = loop {
        match pipeline
            .append("r", "facts", vec![3], Metadata::new(), None)
            .await
        {
            Ok(e) => break e,
            Err(e) if Instant::now() < deadline => {
                assert!(
                    matches!(e.code(), Some(Code::Unavailable) | Some(Code::Unknown)),
                    "while reconnecting: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no new stream after restart: {e}"),
        }
    };
    assert_eq!(
        e.sequence, 2,
        "the failed append was not stored; sequences continue"
    );
    assert_eq!(e.payload, vec![3]);
}

#[tokio::test]
async fn appends_of_one_stream_are_applied_in_stream_order_under_load() {
    // Several streams push requests as fast as HTTP/2 takes them, so the ledger's queue fills
    // and submissions wait for room: the case where concurrently pending appends could
    // overtake each other. Each stream owns a context, so sequence must equal request id.
    let dir = data_dir();
    // A short queue makes submissions wait for room all the time.
    let node = Node::start_with_env(dir.path(), &[], &[("LEDGER_QUEUE_DEPTH", "8")]);
    let mut streams = Vec::new();
    for s in 0..4u64 {
        let mut raw = AppendPipelineClient::connect(node.url.clone())
            .await
            .unwrap();
        streams.push(tokio::spawn(async move {
            let ctx = format!("order-{s}");
            let requests = (1..=10_000u64)
                .map(move |i| request(i, &ctx, "facts", vec![i as u8; 64 + (i % 300) as usize]));
            let mut answers = raw
                .append_stream(tokio_stream::iter(requests))
                .await
                .unwrap()
                .into_inner();
            let mut n = 0u64;
            while let Some(a) = answers.message().await.unwrap() {
                n += 1;
                assert_eq!(a.request_id, n);
                match a.result {
                    Some(Outcome::Entry(e)) => {
                        assert_eq!(
                            e.sequence, n,
                            "stream {s}: request {n} applied out of order"
                        )
                    }
                    other => panic!("stream {s} request {n}: {other:?}"),
                }
            }
            n
        }));
    }
    for s in streams {
        assert_eq!(s.await.unwrap(), 10_000);
    }
}
