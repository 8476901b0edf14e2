//! Watch end to end: gapless catch-up + live delivery under concurrent appends, a stalled
//! watcher that recovers without a gap while appends continue, resume after a dropped stream,
//! key filters, waiting on an empty context, and thousands of concurrent watchers.

mod support;

use ledger_client::LedgerClient;
use ledger_core::Metadata;
use std::time::Duration;
use support::{Node, append_n, data_dir};
use tokio_stream::StreamExt;

#[tokio::test]
async fn catch_up_then_live_with_concurrent_appenders_is_exactly_once_in_order() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    append_n(&c, "w", 100).await;
    let mut stream = c.watch("w", "", 0).await.unwrap();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { append_n(&c, "w", 250).await })
        })
        .collect();
    for want in 1..=1100u64 {
        let e = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.sequence, want);
        assert!(e.verify_content_hash());
        assert!(e.lamport_clock >= want);
    }
    for w in writers {
        w.await.unwrap();
    }
}

#[tokio::test]
async fn stalled_watcher_recovers_without_gap_while_appends_continue() {
    let dir = data_dir();
    // A tiny live buffer forces the slow watcher onto the storage fallback.
    let node = Node::start_with_env(dir.path(), &[], &[("LEDGER_WATCH_BUFFER", "16")]);
    let c = node.client().await;
    // The stalled watcher has its own connection, as a separate observer process would: HTTP/2
    // flow control would otherwise hold up this test's own appends on a shared connection.
    let observer = LedgerClient::connect(&node.url).await.unwrap();
    let mut stalled = observer.watch("s", "", 0).await.unwrap();
    // Read one entry so the stream is established, then stop reading.
    append_n(&c, "s", 1).await;
    assert_eq!(stalled.next().await.unwrap().unwrap().sequence, 1);
    // A healthy watcher on its own connection keeps up meanwhile.
    let other = LedgerClient::connect(&node.url).await.unwrap();
    let mut healthy = other.watch("s", "", 1).await.unwrap();
    let total = 5000u64;
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { append_n(&c, "s", (total as usize - 1) / 8 + 1).await })
        })
        .collect();
    for w in writers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("appends are not held up by a stalled watcher")
            .unwrap();
    }
    let last = c.get("s", "", 0, 1).await.unwrap().latest_sequence;
    for want in 2..=last {
        assert_eq!(healthy.next().await.unwrap().unwrap().sequence, want);
    }
    // Now the stalled watcher reads everything: no gap, no duplicate.
    for want in 2..=last {
        let e = tokio::time::timeout(Duration::from_secs(30), stalled.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.sequence, want);
    }
    // And it is live again.
    append_n(&c, "s", 1).await;
    assert_eq!(stalled.next().await.unwrap().unwrap().sequence, last + 1);
}

#[tokio::test]
async fn resume_after_a_dropped_stream_from_the_last_seen_sequence() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    append_n(&c, "r", 30).await;
    let mut seen = Vec::new();
    {
        let mut s = c.watch("r", "", 0).await.unwrap();
        while seen.len() < 20 {
            seen.push(s.next().await.unwrap().unwrap().sequence);
        }
    }
    append_n(&c, "r", 10).await;
    let mut s = c.watch("r", "", *seen.last().unwrap()).await.unwrap();
    while seen.len() < 40 {
        seen.push(s.next().await.unwrap().unwrap().sequence);
    }
    assert!(seen.iter().copied().eq(1..=40));
}

#[tokio::test]
async fn watch_on_an_empty_context_waits_for_the_first_entry_and_filters_keys() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    let mut evals = c.watch("fresh", "evals", 0).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(300), evals.next()).await;
    assert!(waiting.is_err(), "nothing to deliver yet");
    c.append("fresh", "facts", b"f".to_vec(), Metadata::new(), None)
        .await
        .unwrap();
    c.append("fresh", "evals", b"e".to_vec(), Metadata::new(), None)
        .await
        .unwrap();
    let e = evals.next().await.unwrap().unwrap();
    assert_eq!((e.sequence, e.key.as_str()), (2, "evals"));
}

#[tokio::test]
async fn two_thousand_concurrent_watchers_each_see_every_entry() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    let watchers_per_conn = 200;
    let conns = 10;
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(conns * watchers_per_conn);
    for _ in 0..conns {
        let client = LedgerClient::connect(&node.url).await.unwrap();
        for _ in 0..watchers_per_conn {
            let client = client.clone();
            let ready = ready_tx.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = client.watch("many", "", 0).await.unwrap();
                ready.send(()).await.unwrap();
                let mut got = Vec::new();
                while got.len() < 20 {
                    got.push(s.next().await.unwrap().unwrap().sequence);
                }
                got
            }));
        }
    }
    for _ in 0..conns * watchers_per_conn {
        ready_rx.recv().await.unwrap();
    }
    append_n(&c, "many", 20).await;
    for t in tasks {
        let got = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .unwrap()
            .unwrap();
        assert!(got.into_iter().eq(1..=20));
    }
}
