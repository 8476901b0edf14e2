//! Operating a node: Prometheus metrics scraped while appends run, the limits that answer
//! RESOURCE_EXHAUSTED instead of growing, deadlines, and the observer's API (signed heads that
//! verify, a live tail that resumes without a gap).

mod support;

use ledger_client::{ClientError, LedgerClient};
use ledger_core::Metadata;
use ledger_proto::context::v1 as pb;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::admin::{admin_addr, http_get, sample};
use support::{Node, data_dir};
use tokio_stream::StreamExt;
use tonic::Code;

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Code {
    match r {
        Err(ClientError::Status(s)) => s.code(),
        other => panic!("expected a status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_while_appends_run() {
    let dir = data_dir();
    let node = Node::start(
        dir.path(),
        &[
            "--admin-addr",
            "127.0.0.1:0",
            "--max-watchers-per-context",
            "1",
        ],
    );
    let admin = admin_addr(&node);
    let c = node.client().await;
    let (status, before) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(sample(&before, "ledger_appends_total{code=\"OK\"}"), 0.0);

    // Appends in the background, scraped while they run.
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                c.append(
                    "m",
                    "facts",
                    format!("{i}").into_bytes(),
                    Metadata::new(),
                    None,
                )
                .await
                .unwrap();
            }
            let p = c.pipeline();
            for i in 0..50 {
                p.append(
                    "m",
                    "facts",
                    format!("p{i}").into_bytes(),
                    Metadata::new(),
                    None,
                )
                .await
                .unwrap();
            }
        })
    };
    let mut seen_moving = false;
    let mut last = 0.0;
    while !writer.is_finished() {
        let (_, text) = tokio::task::spawn_blocking(move || http_get(admin, "/metrics"))
            .await
            .unwrap();
        let now = sample(&text, "ledger_appends_total{code=\"OK\"}");
        assert!(now >= last, "counters never go back: {now} < {last}");
        if now > last && last > 0.0 {
            seen_moving = true;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await.unwrap();
    let _ = c.get("m", "", 0, 0).await.unwrap();
    let _ = c.inclusion_proof("m", 3, 0).await.unwrap();
    let _ = c.tree_head("m").await.unwrap();
    let _w = c.watch("m", "", 0).await.unwrap();
    assert!(
        c.watch("m", "", 0).await.is_err(),
        "a second watcher is refused"
    );
    let (_, text) = http_get(admin, "/metrics");
    assert!(seen_moving, "the append counter moved between scrapes");
    for (series, at_least) in [
        ("ledger_appends_total{code=\"OK\"}", 250.0),
        (
            "ledger_grpc_requests_total{method=\"Append\",code=\"OK\"}",
            200.0,
        ),
        (
            "ledger_grpc_requests_total{method=\"Get\",code=\"OK\"}",
            1.0,
        ),
        ("ledger_append_duration_seconds_count", 250.0),
        ("ledger_entries_stored_total", 250.0),
        ("ledger_payload_bytes_stored_total", 250.0),
        ("ledger_commits_total", 1.0),
        // The test's writers wait for each answer: their commits are written by the sequencer.
        ("ledger_inline_commits_total", 1.0),
        ("ledger_fsyncs_total", 1.0),
        ("ledger_group_commit_entries_count", 1.0),
        ("ledger_fsync_entries_count", 1.0),
        ("ledger_proofs_served_total{kind=\"inclusion\"}", 1.0),
        ("ledger_tree_heads_served_total", 1.0),
        ("ledger_watchers", 1.0),
        (
            "ledger_limit_refusals_total{limit=\"max_watchers_per_context\"}",
            1.0,
        ),
    ] {
        let v = sample(&text, series);
        assert!(
            v >= at_least,
            "{series} = {v}, expected at least {at_least}\n{text}"
        );
    }
    assert!(
        text.contains("# TYPE ledger_append_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("# UNIT ledger_append_duration_seconds seconds"),
        "{text}"
    );
    // The Grafana dashboard only charts metrics the node serves (cluster ones need a cluster).
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/grafana/converge-ledger.json"),
    )
    .unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with("ledger_")
            || word.starts_with("ledger_cluster_")
            || word.starts_with("ledger_replication_")
        {
            continue;
        }
        let base = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| word.strip_suffix(s))
            .unwrap_or(word);
        assert!(
            text.contains(&format!("# TYPE {base} ")),
            "the dashboard charts {word}, which /metrics does not serve"
        );
    }
    // A refused request is counted with its code.
    let e = c.append("", "facts", vec![], Metadata::new(), None).await;
    assert_eq!(code(e), Code::InvalidArgument);
    let (_, text) = http_get(admin, "/metrics");
    assert_eq!(
        sample(&text, "ledger_appends_total{code=\"INVALID_ARGUMENT\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_resource_exhausted_and_give_places_back() {
    let dir = data_dir();
    let node = Node::start(
        dir.path(),
        &[
            "--max-watchers-per-context",
            "2",
            "--max-watchers",
            "3",
            "--max-append-streams",
            "1",
            "--max-load-bytes",
            "1000",
            "--max-concurrent-streams",
            "5",
        ],
    );
    let c = node.client().await;
    c.append("w", "facts", b"x".to_vec(), Metadata::new(), None)
        .await
        .unwrap();

    // Watchers per context, then per node; a closed stream gives its place back.
    let w1 = c.watch("w", "", 0).await.unwrap();
    let _w2 = c.watch("w", "", 0).await.unwrap();
    let s = c.watch("w", "", 0).await.err().expect("third watcher on w");
    assert_eq!(s.code(), Some(Code::ResourceExhausted), "{s}");
    assert!(s.to_string().contains("max_watchers_per_context"), "{s}");
    let _w3 = c.watch("v", "", 0).await.unwrap();
    let s = c.watch("u", "", 0).await.err().expect("fourth watcher");
    assert!(s.to_string().contains("max_watchers"), "{s}");
    drop(w1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let _w4 = loop {
        match c.watch("w", "", 0).await {
            Ok(w) => break w,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("the closed watcher's place came back: {e}"),
        }
    };

    // Requests per connection: 3 watches are open on this connection; two more requests fit.
    let other = node.client().await;
    let p1 = other.pipeline();
    p1.append("a", "facts", b"1".to_vec(), Metadata::new(), None)
        .await
        .unwrap();
    // AppendStream streams per node.
    let p2 = other.pipeline();
    let e = p2
        .append("a", "facts", b"2".to_vec(), Metadata::new(), None)
        .await;
    assert_eq!(code(e), Code::ResourceExhausted);
    // This connection has 3 watch streams open (and the node allows 5 per connection).
    let e = c.get("w", "", 0, 0).await;
    assert!(e.is_ok(), "4th request fits: {e:?}");
    let _p3 = c.pipeline();
    let (mut r1, mut r2) = (c.raw(), c.raw());
    let e1 = r1.watch(pb::WatchRequest {
        context_id: "x".into(),
        ..Default::default()
    });
    let e2 = r2.watch(pb::WatchRequest {
        context_id: "y".into(),
        ..Default::default()
    });
    let (a, b) = tokio::join!(e1, e2);
    let codes: Vec<Code> = [a.err(), b.err()]
        .into_iter()
        .flatten()
        .map(|s| s.code())
        .collect();
    assert!(
        codes.contains(&Code::ResourceExhausted),
        "the 6th request on one connection is refused: {codes:?}"
    );

    // Load size.
    let entries: Vec<ledger_core::Entry> = (1..=50)
        .map(|i| {
            ledger_core::Entry::new(
                format!("id{i}"),
                "facts".into(),
                vec![7u8; 100],
                i,
                1,
                Metadata::new(),
                i,
            )
        })
        .collect();
    let snapshot = ledger_core::snapshot::encode("big", 1, &entries).unwrap();
    assert!(snapshot.len() > 1000);
    let e = c.load("big", snapshot.clone(), false).await;
    assert_eq!(code(e), Code::ResourceExhausted);
    let e = other
        .load_from(
            "big",
            false,
            Box::new(std::io::Cursor::new(snapshot.clone())),
            |_| {},
        )
        .await;
    assert_eq!(code(e), Code::ResourceExhausted);
    let page = other.get("big", "", 0, 0).await.unwrap();
    assert!(
        page.entries.is_empty() && page.latest_sequence == 0,
        "nothing stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_end_streams_with_deadline_exceeded() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    let mut req = tonic::Request::new(pb::WatchRequest {
        context_id: "d".into(),
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let mut stream = c.raw().watch(req).await.unwrap().into_inner();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream ends at its deadline");
    let status = end.expect("an item").expect_err("a status");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

/// Reads server-sent events from `/api/tail` until `n` entry events arrived; their ids.
fn read_tail(admin: SocketAddr, path: &str, last_event_id: Option<u64>, n: usize) -> Vec<u64> {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let resume = last_event_id
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nAccept: text/event-stream\r\n{resume}\r\n"
    )
    .unwrap();
    let mut ids = Vec::new();
    let mut event = String::new();
    for line in BufReader::new(s).lines() {
        let line = line.unwrap();
        if let Some(e) = line.strip_prefix("event:") {
            event = e.trim().to_owned();
        }
        if let Some(id) = line.strip_prefix("id:")
            && event == "entry"
        {
            ids.push(id.trim().parse().unwrap());
            if ids.len() == n {
                break;
            }
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_api_serves_verifiable_heads_and_a_gapless_tail() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &["--admin-addr", "127.0.0.1:0"]);
    let admin = admin_addr(&node);
    let c = node.client().await;
    for i in 0..5 {
        c.append(
            "obs/1",
            "facts",
            format!("{{\"n\":{i}}}").into_bytes(),
            Metadata::new(),
            None,
        )
        .await
        .unwrap();
    }
    let (status, page) = http_get(admin, "/");
    assert_eq!(status, 200);
    assert!(page.contains("/observer.js"), "{page}");
    let (status, js) = http_get(admin, "/observer.js");
    assert_eq!(status, 200);
    assert!(js.contains("Ed25519"));

    let (_, node_json) = http_get(admin, "/api/node");
    let node_json: serde_json::Value = serde_json::from_str(&node_json).unwrap();
    assert_eq!(node_json["public_key"], node.listening["public_key"]);
    let (_, ctxs) = http_get(admin, "/api/contexts");
    let ctxs: serde_json::Value = serde_json::from_str(&ctxs).unwrap();
    assert_eq!(ctxs["contexts"][0]["id"], "obs/1");
    assert_eq!(ctxs["contexts"][0]["size"], 5);
    let (_, entries) = http_get(admin, "/api/entries?context=obs%2F1&after=2&limit=2");
    let entries: serde_json::Value = serde_json::from_str(&entries).unwrap();
    assert_eq!(entries["entries"][0]["sequence"], 3);
    assert_eq!(entries["has_more"], true);
    let (_, filtered) = http_get(admin, "/api/entries?context=obs%2F1&key=nope");
    assert!(filtered.contains("\"entries\":[]"), "{filtered}");

    // The head the page verifies is a real signed head under the node's key.
    let (_, head) = http_get(admin, "/api/head?context=obs%2F1");
    let head: serde_json::Value = serde_json::from_str(&head).unwrap();
    let key =
        ledger_core::checkpoint::from_base64(node_json["public_key"].as_str().unwrap()).unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key.try_into().unwrap()).unwrap();
    let sig = ledger_core::checkpoint::from_base64(head["signature"].as_str().unwrap()).unwrap();
    let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
    use ed25519_dalek::Verifier;
    key.verify(head["checkpoint"].as_str().unwrap().as_bytes(), &sig)
        .unwrap();
    assert_eq!(head["tree_size"], 5);
    let (_, proof) = http_get(admin, "/api/proof?context=obs%2F1&sequence=2");
    let proof: serde_json::Value = serde_json::from_str(&proof).unwrap();
    assert_eq!(proof["tree_size"], 5);
    assert_eq!(proof["path"].as_array().unwrap().len(), 3);

    // The live tail: from the start, then resumed after event 3 by Last-Event-ID (what a
    // reconnecting EventSource sends): no gap, no repeat.
    let ids = tokio::task::spawn_blocking(move || {
        read_tail(admin, "/api/tail?context=obs%2F1&from=0", None, 3)
    })
    .await
    .unwrap();
    assert_eq!(ids, [1, 2, 3]);
    let resumed = tokio::spawn(async move {
        tokio::task::spawn_blocking(move || {
            read_tail(admin, "/api/tail?context=obs%2F1&from=0", Some(3), 3)
        })
        .await
        .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.append("obs/1", "facts", b"live".to_vec(), Metadata::new(), None)
        .await
        .unwrap();
    assert_eq!(resumed.await.unwrap(), [4, 5, 6]);

    // Unknown routes and bad arguments are plain HTTP errors.
    let (status, _) = http_get(admin, "/api/entries");
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_api_needs_a_reader_token_when_auth_is_on() {
    let dir = data_dir();
    let reader = "cl_reader-token-for-the-observer";
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        ledger_server::auth::token_table(
            reader,
            ledger_server::auth::TokenRole::Reader,
            Some("t/"),
        ),
    )
    .unwrap();
    let node = Node::start(
        &dir.path().join("d"),
        &[
            "--admin-addr",
            "127.0.0.1:0",
            "--auth-file",
            auth.to_str().unwrap(),
        ],
    );
    let admin = admin_addr(&node);
    let (status, _) = http_get(admin, "/api/contexts");
    assert_eq!(status, 401);
    let (status, _) = http_get(admin, &format!("/api/contexts?token={reader}"));
    assert_eq!(status, 200);
    let (status, _) = http_get(admin, &format!("/api/head?context=u%2F1&token={reader}"));
    assert_eq!(status, 403);
    // The page itself and the metrics need no token.
    assert_eq!(http_get(admin, "/").0, 200);
    assert_eq!(http_get(admin, "/metrics").0, 200);
    let _ = LedgerClient::connect(&node.url).await.unwrap();
}
