//! End-to-end tests of the cluster: real `converge-ledger` processes, each on its own
//! loopback address with its own data dir, found by gossip from one seed.

mod support;

use ledger_client::LedgerClient;
use ledger_proto::context::v1 as pb;
use ledger_proto::context::v1::context_service_client::ContextServiceClient;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::admin::{admin_addr, http_get, sample};
use support::cluster::{TestCluster, node_id, status, wait_converged};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

async fn raw(node: &support::Node) -> ContextServiceClient<Channel> {
    ContextServiceClient::new(node.channel().await)
}

fn request(ctx: &str, payload: String) -> pb::AppendRequest {
    pb::AppendRequest {
        context_id: ctx.into(),
        key: "facts".into(),
        payload: payload.into_bytes(),
        ..Default::default()
    }
}

/// How many entries of `ctx` `node` has stored (committed or not), from its cluster service.
async fn held_size(node: &support::Node, ctx: &str) -> Result<u64, tonic::Status> {
    let mut state = ledger_proto::cluster::v1::cluster_service_client::ClusterServiceClient::new(
        node.channel().await,
    );
    let r = state
        .context_state(ledger_proto::cluster::v1::ContextStateRequest {
            context_id: ctx.into(),
            settle: false,
        })
        .await?;
    Ok(r.into_inner().size)
}

/// What `node` serves of `ctx` once everything it holds is committed (reads stop at the commit
/// index, which a replica learns a round trip after it stores the entries).
async fn entries_on(node: &support::Node, ctx: &str) -> Vec<ledger_core::Entry> {
    let c = node.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = held_size(node, ctx).await.unwrap_or(0);
        let mut req = tonic::Request::new(pb::GetRequest {
            context_id: ctx.into(),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("x-ledger-forwarded", "1".parse().unwrap());
        let r = c.raw().get(req).await.expect("get").into_inner();
        if r.entries.len() as u64 >= held || Instant::now() > deadline {
            return r
                .entries
                .into_iter()
                .map(|e| ledger_proto::convert::entry_from_pb(e).unwrap())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_appends_made_through_any_node() {
    let cluster = TestCluster::start(21, 3, &[]).await;
    // Each member reports SERVING once it has joined and compared contexts with its peers.
    for n in &cluster.nodes {
        let mut health = tonic_health::pb::health_client::HealthClient::new(n.channel().await);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "converge.context.v1.ContextService".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            if s == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
                break;
            }
            assert!(Instant::now() < deadline, "node never reported SERVING");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut clients = Vec::new();
    for n in &cluster.nodes {
        clients.push(raw(n).await);
    }
    for c in 0..4 {
        let ctx = format!("ctx-{c}");
        for i in 0..15u64 {
            let via = (i as usize) % 3;
            let r = clients[via]
                .append(request(&ctx, format!("{ctx}-{i}")))
                .await
                .unwrap_or_else(|s| panic!("append {i} to {ctx} via node {via}: {s:?}"));
            assert_eq!(r.into_inner().entry.unwrap().sequence, i + 1);
        }
        let root = wait_converged(&cluster.nodes[0], &ctx, 15).await;
        assert_eq!(root.len(), 64);
        // Every node holds the same 15 entries, in order, served from its own storage.
        let first = entries_on(&cluster.nodes[0], &ctx).await;
        let payloads: Vec<String> = first
            .iter()
            .map(|e| String::from_utf8(e.payload.clone()).unwrap())
            .collect();
        assert_eq!(
            payloads,
            (0..15).map(|i| format!("{ctx}-{i}")).collect::<Vec<_>>()
        );
        for n in &cluster.nodes[1..] {
            assert_eq!(entries_on(n, &ctx).await, first);
        }
    }
    let s = status(&cluster.nodes[1], Some("ctx-0")).await;
    let members = s["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for m in members {
        assert_eq!(m["state"], "alive");
        assert_eq!(m["role"], "member");
        assert!(m["addr"].as_str().unwrap().ends_with(":50051"));
    }
    let ctx = &s["contexts"][0];
    assert!(ctx["epoch"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(ctx["replicas"].as_array().unwrap().len(), 3);
    let writer = ctx["writer"]["id"].as_str().unwrap();
    assert!((0..3).any(|i| node_id(i) == writer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_on_a_replica_sees_appends_made_through_another_node() {
    let cluster = TestCluster::start(22, 3, &[]).await;
    let ctx = "watched";
    // Create the context, then find a node that is not its writer to watch on.
    let mut c0 = raw(&cluster.nodes[0]).await;
    c0.append(request(ctx, "first".into())).await.unwrap();
    let w = cluster.writer_index(0, ctx).await.expect("writer");
    let watcher_node = (w + 1) % 3;
    let through = (w + 2) % 3;
    let watcher = cluster.nodes[watcher_node].client().await;
    let mut stream = watcher.watch(ctx, "", 0).await.unwrap();
    let mut appender = raw(&cluster.nodes[through]).await;
    for i in 0..50 {
        appender
            .append(request(ctx, format!("e{i}")))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 51 {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("watch delivers in time")
            .expect("stream open")
            .expect("entry");
        seen.push(e.sequence);
    }
    assert_eq!(seen, (1..=51).collect::<Vec<u64>>(), "gapless, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_found_from_one_seed_place_three_replicas_and_forward_reads() {
    let cluster = TestCluster::start(23, 5, &[]).await;
    let mut clients = Vec::new();
    for n in &cluster.nodes {
        clients.push(raw(n).await);
    }
    for c in 0..5 {
        let ctx = format!("five-{c}");
        for i in 0..10u64 {
            let via = (i as usize + c) % 5;
            let r = clients[via]
                .append(request(&ctx, format!("{i}")))
                .await
                .unwrap_or_else(|s| panic!("append via {via}: {s:?}"));
            assert_eq!(r.into_inner().entry.unwrap().sequence, i + 1);
        }
        wait_converged(&cluster.nodes[0], &ctx, 10).await;
        let s = status(&cluster.nodes[0], Some(&ctx)).await;
        assert_eq!(s["contexts"][0]["replicas"].as_array().unwrap().len(), 3);
        // Any node answers a read, replica or not (non-replicas forward it).
        for n in &cluster.nodes {
            let page = n.client().await.get(&ctx, "", 0, 0).await.unwrap();
            assert_eq!(page.entries.len(), 10);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirect_mode_names_the_writer_and_min_sequence_reads_your_writes() {
    let cluster = TestCluster::start(24, 3, &["--route", "redirect"]).await;
    let ctx = "redirected";
    // Appends through the writer work; others refuse with the writer's address.
    let mut writer = None;
    for (i, n) in cluster.nodes.iter().enumerate() {
        match raw(n).await.append(request(ctx, format!("via {i}"))).await {
            Ok(_) => writer = Some(i),
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
                let addr = s
                    .metadata()
                    .get("x-ledger-writer")
                    .expect("x-ledger-writer");
                let addr = addr.to_str().unwrap();
                let w = cluster
                    .nodes
                    .iter()
                    .position(|n| n.addr.to_string() == addr)
                    .expect("names a node");
                assert_eq!(cluster.writer_index(0, ctx).await, Some(w));
            }
        }
    }
    let w = writer.expect("the writer accepted an append");
    // Read-your-writes on another node with x-ledger-min-sequence.
    let mut wc = raw(&cluster.nodes[w]).await;
    let e = wc
        .append(request(ctx, "ryw".into()))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    let other = (w + 1) % 3;
    let mut req = tonic::Request::new(pb::GetRequest {
        context_id: ctx.into(),
        ..Default::default()
    });
    req.metadata_mut().insert(
        "x-ledger-min-sequence",
        e.sequence.to_string().parse().unwrap(),
    );
    let page = raw(&cluster.nodes[other])
        .await
        .get(req)
        .await
        .unwrap()
        .into_inner();
    assert!(page.latest_sequence >= e.sequence);
    // The cluster-aware client computes each context's writer and goes straight there: with
    // route=redirect every append would be refused anywhere else.
    let seed = cluster.nodes[other].url.clone();
    let cc = ledger_client::cluster::ClusterClient::connect(&[seed.as_str()])
        .await
        .unwrap();
    for k in 0..6 {
        let ctx = format!("routed-{k}");
        for i in 0..3 {
            let e = cc
                .append(&ctx, "facts", vec![i], Default::default())
                .await
                .unwrap_or_else(|e| panic!("cluster client append to {ctx}: {e}"));
            assert_eq!(e.sequence, u64::from(i) + 1);
        }
        let w = cluster.writer_index(0, &ctx).await.unwrap();
        assert_eq!(
            cc.writer_addr(&ctx),
            Some(cluster.nodes[w].addr.to_string())
        );
    }
    // Batches go to the writer too, unary and on the writer's append stream.
    let pipe = cc.pipeline();
    for k in 0..3 {
        let ctx = format!("routed-batch-{k}");
        let items = |n: u8| -> Vec<ledger_core::NewEntry> {
            (0..n)
                .map(|i| {
                    ledger_core::NewEntry::new(&ctx, "facts", vec![i], Default::default(), None)
                })
                .collect()
        };
        let first = cc
            .append_batch(&ctx, items(4))
            .await
            .unwrap_or_else(|e| panic!("cluster client batch to {ctx}: {e}"));
        assert!(first.iter().map(|e| e.sequence).eq(1..=4));
        let second = pipe
            .append_batch(&ctx, items(5))
            .await
            .unwrap_or_else(|e| panic!("cluster pipeline batch to {ctx}: {e}"));
        assert!(second.iter().map(|e| e.sequence).eq(5..=9));
    }
    // Bad metadata is refused with a message naming it.
    let mut req = tonic::Request::new(request(ctx, "bad".into()));
    req.metadata_mut()
        .insert("x-ledger-ack", "most".parse().unwrap());
    let s = wc.append(req).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().contains("x-ledger-ack"), "{}", s.message());
}

/// SIGKILL the writer under 16 concurrent appenders with ack=quorum: a new writer takes over,
/// no acknowledged entry is lost, sequences stay gapless, replicas converge; the old writer
/// rejoins as a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writer_sigkill_under_concurrent_appenders_loses_no_acknowledged_entry() {
    let mut cluster = TestCluster::start(25, 3, &["--ack", "quorum"]).await;
    let ctx = "failover";
    raw(&cluster.nodes[0])
        .await
        .append(request(ctx, "seed".into()))
        .await
        .unwrap();
    let w = cluster.writer_index(0, ctx).await.expect("writer");
    let survivors: Vec<usize> = (0..3).filter(|i| *i != w).collect();
    let mut clients = Vec::new();
    for i in &survivors {
        clients.push(LedgerClient::from_channel(
            cluster.nodes[*i].channel().await,
        ));
    }
    let acked: Arc<parking_lot::Mutex<BTreeMap<u64, String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killed_at: Arc<parking_lot::Mutex<Option<Instant>>> = Arc::default();
    let first_after: Arc<parking_lot::Mutex<Option<Duration>>> = Arc::default();
    let mut tasks = Vec::new();
    for a in 0..16 {
        let client = clients[a % clients.len()].clone();
        let (acked, stop, killed_at, first_after) = (
            Arc::clone(&acked),
            Arc::clone(&stop),
            Arc::clone(&killed_at),
            Arc::clone(&first_after),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let payload = format!("a{a}-{n}");
                n += 1;
                match client
                    .append(
                        ctx,
                        "facts",
                        payload.clone().into_bytes(),
                        Default::default(),
                        None,
                    )
                    .await
                {
                    Ok(e) => {
                        let prev = acked.lock().insert(e.sequence, payload);
                        assert!(
                            prev.is_none(),
                            "two acknowledgements for sequence {}",
                            e.sequence
                        );
                        if let Some(k) = *killed_at.lock() {
                            first_after.lock().get_or_insert(k.elapsed());
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = acked.lock().len();
    assert!(before > 0, "appends went through before the kill");
    cluster.nodes[w].kill();
    *killed_at.lock() = Some(Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let took = first_after
        .lock()
        .expect("a new writer accepted appends after the kill");
    eprintln!("failover: first acknowledged append {took:?} after SIGKILL of the writer");
    assert!(took < Duration::from_secs(10), "failover took {took:?}");
    let acked = acked.lock().clone();
    assert!(acked.len() > before, "appends continued after the kill");
    // Every acknowledged append is on every surviving replica at its sequence; gapless.
    let size = {
        let s = status(&cluster.nodes[survivors[0]], Some(ctx)).await;
        s["contexts"][0]["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["size"].as_u64())
            .max()
            .unwrap()
    };
    for i in &survivors {
        let deadline = Instant::now() + Duration::from_secs(20);
        let entries = loop {
            let e = entries_on(&cluster.nodes[*i], ctx).await;
            if e.len() as u64 >= size || Instant::now() > deadline {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(e.sequence, k as u64 + 1, "gapless on node {i}");
        }
        for (seq, payload) in &acked {
            let e = entries
                .get(*seq as usize - 1)
                .unwrap_or_else(|| panic!("acknowledged sequence {seq} missing on node {i}"));
            assert_eq!(&String::from_utf8(e.payload.clone()).unwrap(), payload);
        }
    }
    // The old writer rejoins as a follower and converges to the same log.
    cluster.nodes[w].restart().expect("restart the old writer");
    cluster.wait_alive(3).await;
    let more = raw(&cluster.nodes[survivors[0]])
        .await
        .append(request(ctx, "after rejoin".into()))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    wait_converged(&cluster.nodes[survivors[0]], ctx, more.sequence).await;
    let rejoined = entries_on(&cluster.nodes[w], ctx).await;
    for (seq, payload) in &acked {
        assert_eq!(
            &String::from_utf8(rejoined[*seq as usize - 1].payload.clone()).unwrap(),
            payload
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_replica_is_restored_from_the_others() {
    let mut cluster = TestCluster::start(26, 3, &[]).await;
    let mut c = raw(&cluster.nodes[0]).await;
    for k in 0..3 {
        for i in 0..20 {
            c.append(request(&format!("wipe-{k}"), format!("{i}")))
                .await
                .unwrap();
        }
    }
    let mut roots = Vec::new();
    for k in 0..3 {
        roots.push(wait_converged(&cluster.nodes[0], &format!("wipe-{k}"), 20).await);
    }
    // Wipe node 3's data dir (a new incarnation under the same id) and restart it.
    cluster.nodes[2].kill();
    let dir = cluster.dirs[2].path().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    cluster.nodes[2].restart().expect("restart");
    cluster.wait_alive(3).await;
    for (k, expected) in roots.iter().enumerate() {
        let ctx = format!("wipe-{k}");
        let root = wait_converged(&cluster.nodes[0], &ctx, 20).await;
        assert_eq!(&root, expected);
        assert_eq!(entries_on(&cluster.nodes[2], &ctx).await.len(), 20);
    }
}

/// A follower that missed appends while it was down, in a cluster where nobody appends
/// afterwards and every node restarted (no replication task running anywhere): anti-entropy
/// finds the lagging contexts and the writers refill it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anti_entropy_repairs_a_lagging_replica_without_new_appends() {
    let mut cluster = TestCluster::start(27, 3, &[]).await;
    let mut c = raw(&cluster.nodes[0]).await;
    for k in 0..4 {
        c.append(request(&format!("ae-{k}"), "first".into()))
            .await
            .unwrap();
    }
    // Node 3 goes down; the others keep acknowledging at quorum. The appends carry
    // idempotency keys: one forwarded to node 3 on a connection that broke as it died is
    // retried by the forwarding node (a keyless one would be answered "outcome unknown").
    cluster.nodes[2].kill();
    for k in 0..4 {
        let mut via = raw(&cluster.nodes[k % 2]).await;
        for i in 0..10 {
            let mut req = request(&format!("ae-{k}"), format!("{i}"));
            req.idempotency_key = Some(format!("ae-{k}-{i}"));
            via.append(req).await.unwrap();
        }
    }
    // Everything restarts; nobody appends.
    cluster.nodes[0].kill();
    cluster.nodes[1].kill();
    for i in 0..3 {
        cluster.nodes[i].restart().expect("restart");
    }
    cluster.wait_alive(3).await;
    for k in 0..4 {
        let ctx = format!("ae-{k}");
        wait_converged(&cluster.nodes[2], &ctx, 11).await;
        assert_eq!(entries_on(&cluster.nodes[2], &ctx).await.len(), 11);
    }
}

/// Context tasks running on `node`, from its metrics (`ledger_cluster_context_tasks`).
async fn context_tasks(node: &support::Node) -> f64 {
    let admin = admin_addr(node);
    let (status, text) = tokio::task::spawn_blocking(move || http_get(admin, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        text.contains("\nledger_cluster_context_tasks "),
        "no context-task gauge in the metrics"
    );
    sample(&text, "ledger_cluster_context_tasks")
}

/// How many entries of `ctx` `node` serves from its own storage right now (no waiting).
async fn local_count(node: &support::Node, ctx: &str) -> usize {
    let mut req = tonic::Request::new(pb::GetRequest {
        context_id: ctx.into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-ledger-forwarded", "1".parse().unwrap());
    raw(node)
        .await
        .get(req)
        .await
        .expect("get")
        .into_inner()
        .entries
        .len()
}

/// Waits until no context task runs on any node.
async fn wait_no_context_tasks(cluster: &TestCluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, n) in cluster.nodes.iter().enumerate() {
        loop {
            let running = context_tasks(n).await;
            if running == 0.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} still runs {running} context tasks long after the contexts went idle"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Idle contexts cost nothing: once nobody appends, each context's task stops on the writer and
/// on its followers (`context_idle_ms`), and they stay stopped (no follower polls a stopped
/// writer back to life). The next append starts them again from storage: the writer claims a
/// new epoch, sequences continue without a gap, and every replica holds the same entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_context_tasks_stop_and_start_again_on_the_next_append() {
    let cluster = TestCluster::start(
        29,
        3,
        &["--context-idle-ms", "300", "--admin-addr", "127.0.0.1:0"],
    )
    .await;
    let contexts: Vec<String> = (0..12).map(|k| format!("idle-{k}")).collect();
    let mut c = raw(&cluster.nodes[0]).await;
    for ctx in &contexts {
        for i in 0..3 {
            c.append(request(ctx, format!("{ctx}-{i}"))).await.unwrap();
        }
    }
    let mut epochs = BTreeMap::new();
    for ctx in &contexts {
        wait_converged(&cluster.nodes[0], ctx, 3).await;
        let s = status(&cluster.nodes[0], Some(ctx)).await;
        epochs.insert(ctx.clone(), s["contexts"][0]["epoch"].as_u64().unwrap());
    }
    let running: f64 = {
        let mut sum = 0.0;
        for n in &cluster.nodes {
            sum += context_tasks(n).await;
        }
        sum
    };
    assert!(
        running >= contexts.len() as f64,
        "tasks were running: {running}"
    );

    wait_no_context_tasks(&cluster).await;
    // Several poll intervals later nothing has started again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, n) in cluster.nodes.iter().enumerate() {
        assert_eq!(context_tasks(n).await, 0.0, "node {i} started tasks again");
    }
    // Every replica still serves all it served, from its own storage, whether its task is
    // stopped or was just started again from storage (a status request starts it).
    for ctx in &contexts {
        for (i, n) in cluster.nodes.iter().enumerate() {
            assert_eq!(
                local_count(n, ctx).await,
                3,
                "{ctx} on node {i}, task stopped"
            );
        }
        status(&cluster.nodes[0], Some(ctx)).await;
        for (i, n) in cluster.nodes.iter().enumerate() {
            assert_eq!(
                local_count(n, ctx).await,
                3,
                "{ctx} on node {i}, task restarted"
            );
        }
    }

    // Appends through another node start them again, and the log goes on where it stopped.
    let mut via = raw(&cluster.nodes[1]).await;
    for ctx in &contexts {
        for i in 3..5u64 {
            let e = via
                .append(request(ctx, format!("{ctx}-{i}")))
                .await
                .unwrap_or_else(|s| panic!("append {i} to {ctx} after idling: {s:?}"))
                .into_inner()
                .entry
                .unwrap();
            assert_eq!(e.sequence, i + 1);
        }
    }
    for ctx in &contexts {
        wait_converged(&cluster.nodes[1], ctx, 5).await;
        let first = entries_on(&cluster.nodes[0], ctx).await;
        let payloads: Vec<String> = first
            .iter()
            .map(|e| String::from_utf8(e.payload.clone()).unwrap())
            .collect();
        assert_eq!(
            payloads,
            (0..5).map(|i| format!("{ctx}-{i}")).collect::<Vec<_>>()
        );
        for n in &cluster.nodes[1..] {
            assert_eq!(entries_on(n, ctx).await, first);
        }
        let s = status(&cluster.nodes[2], Some(ctx)).await;
        let epoch = s["contexts"][0]["epoch"].as_u64().unwrap();
        assert!(
            epoch > epochs[ctx],
            "{ctx}: the restarted writer claims a new epoch ({} then {epoch})",
            epochs[ctx]
        );
    }
}

/// A fourth node joins while appends continue: it takes over writing some contexts (about 1/N),
/// and no acknowledged append is lost or duplicated across the handover.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joining_node_takes_over_contexts_without_losing_or_duplicating_entries() {
    let mut cluster = TestCluster::start(28, 3, &[]).await;
    // Node 4 is named in every seed list from the start (as a deployment would list it).
    cluster.size = 4;
    let contexts: Vec<String> = (0..16).map(|k| format!("join-{k}")).collect();
    let mut c = raw(&cluster.nodes[0]).await;
    for ctx in &contexts {
        c.append(request(ctx, "genesis".into())).await.unwrap();
    }
    let acked: Arc<parking_lot::Mutex<BTreeMap<(String, u64), String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (t, ctx) in contexts.iter().enumerate() {
        let mut client = raw(&cluster.nodes[t % 3]).await;
        let (acked, stop, ctx) = (acked.clone(), stop.clone(), ctx.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let payload = format!("{ctx}-{n}");
                n += 1;
                match client.append(request(&ctx, payload.clone())).await {
                    Ok(r) => {
                        let seq = r.into_inner().entry.unwrap().sequence;
                        assert!(acked.lock().insert((ctx.clone(), seq), payload).is_none());
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let new = cluster.add_node();
    cluster.wait_alive(4).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().clone();
    let mut taken = 0;
    for ctx in &contexts {
        let s = status(&cluster.nodes[new], Some(ctx)).await;
        if s["contexts"][0]["writer"]["id"] == node_id(new) {
            taken += 1;
        }
        let size = s["contexts"][0]["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["size"].as_u64())
            .max()
            .unwrap();
        wait_converged(&cluster.nodes[new], ctx, size).await;
        // Every replica (the new node included where it is one) holds each acknowledged
        // append exactly once, at its sequence.
        let replicas: Vec<String> = s["contexts"][0]["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        for (i, n) in cluster.nodes.iter().enumerate() {
            if !replicas.contains(&node_id(i)) {
                continue;
            }
            let log = entries_on(n, ctx).await;
            let mut seen = std::collections::HashSet::new();
            for e in &log {
                assert!(
                    seen.insert(e.payload.clone()),
                    "duplicate in {ctx} on node {i}"
                );
            }
            for ((c, seq), p) in &acked {
                if c == ctx {
                    assert_eq!(
                        log.get(*seq as usize - 1).map(|e| e.payload.clone()),
                        Some(p.clone().into_bytes()),
                        "acknowledged {p} at {seq} on node {i}"
                    );
                }
            }
        }
    }
    assert!(acked.len() > 100, "appends continued: {}", acked.len());
    assert!(taken > 0, "the new node writes some of the 16 contexts");
    eprintln!("the joining node took over writing {taken} of 16 contexts");
}

/// Replicas serve only what a quorum holds (the commit index): an entry the writer alone
/// stored (`x-ledger-ack: writer`, both followers frozen) is neither read, snapshotted, signed
/// nor watched, even on the writer, until a follower has it; then it is, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_watches_stop_at_what_a_quorum_holds() {
    let cluster = TestCluster::start(31, 3, &[]).await;
    let ctx = "gated";
    raw(&cluster.nodes[0])
        .await
        .append(request(ctx, "first".into()))
        .await
        .expect("first append");
    let w = cluster.writer_index(0, ctx).await.expect("a writer");
    let followers: Vec<usize> = (0..3).filter(|i| *i != w).collect();
    let mut wc = raw(&cluster.nodes[w]).await;
    let mut watch = wc
        .watch(pb::WatchRequest {
            context_id: ctx.into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.unwrap().unwrap().entry.unwrap();
    assert_eq!(first.sequence, 1);

    for &f in &followers {
        cluster.nodes[f].signal(libc::SIGSTOP);
    }
    let mut req = tonic::Request::new(request(ctx, "only on the writer".into()));
    req.metadata_mut()
        .insert("x-ledger-ack", "writer".parse().unwrap());
    let second = wc.append(req).await.expect("acknowledged by the writer");
    assert_eq!(second.into_inner().entry.unwrap().sequence, 2);

    let page = wc
        .get(pb::GetRequest {
            context_id: ctx.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    if page.entries.len() != 1 {
        // Seen once under a loaded full-suite run: say who wrote and held what.
        let s = tokio::time::timeout(Duration::from_secs(5), status(&cluster.nodes[w], Some(ctx)))
            .await
            .map_or_else(|_| "(no answer)".to_owned(), |s| s.to_string());
        panic!(
            "an uncommitted entry was read: {} entries from node {w} (followers {followers:?} stopped); status {s}",
            page.entries.len()
        );
    }
    assert_eq!(page.latest_sequence, 1);
    let snap = wc
        .snapshot(pb::SnapshotRequest {
            context_id: ctx.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(snap.sequence, 1, "an uncommitted entry was snapshotted");
    let mut integrity =
        ledger_proto::ledger::v1::integrity_service_client::IntegrityServiceClient::new(
            cluster.nodes[w].channel().await,
        );
    let head = integrity
        .get_tree_head(ledger_proto::ledger::v1::GetTreeHeadRequest {
            context_id: ctx.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.tree_size, 1, "an uncommitted tree head was signed");
    let refused = integrity
        .get_inclusion_proof(ledger_proto::ledger::v1::GetInclusionProofRequest {
            context_id: ctx.into(),
            sequence: 2,
            tree_size: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), watch.next())
            .await
            .is_err(),
        "an uncommitted entry was watched"
    );

    for &f in &followers {
        cluster.nodes[f].signal(libc::SIGCONT);
    }
    let ev = tokio::time::timeout(Duration::from_secs(15), watch.next())
        .await
        .expect("the entry is watched once committed")
        .unwrap()
        .unwrap();
    let e = ev.entry.expect("an entry");
    assert_eq!(
        (e.sequence, e.payload.as_slice()),
        (2, &b"only on the writer"[..])
    );
    let page = wc
        .get(pb::GetRequest {
            context_id: ctx.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.latest_sequence, 2);
}

/// A snapshot loads through any node: the writer loads it (all or nothing, verified) and ships
/// the loaded entries to its followers like appends; every replica then serves the same
/// entries with the snapshot's root, and appends continue after them. Unary Load through a
/// follower, LoadStream through the third node, `fail_if_exists` through the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_loads_through_any_node_and_replicates() {
    let cluster = TestCluster::start(32, 3, &[]).await;
    let src = "load-src";
    let mut c0 = raw(&cluster.nodes[0]).await;
    for i in 0..300 {
        c0.append(request(src, format!("entry {i}"))).await.unwrap();
    }
    let snap = cluster.nodes[0]
        .client()
        .await
        .snapshot(src)
        .await
        .expect("snapshot");
    assert_eq!(snap.sequence, 300);
    let root = hex::encode(&snap.metadata.as_ref().unwrap().merkle_root);

    // Unary Load through a node that does not write "load-a".
    let w = cluster.writer_index(0, "load-a").await.expect("writer");
    let other = (w + 1) % 3;
    let loaded = cluster.nodes[other]
        .client()
        .await
        .load("load-a", snap.snapshot.clone(), true)
        .await
        .expect("load through a follower");
    assert_eq!(
        (loaded.entries_restored, loaded.latest_sequence),
        (300, 300)
    );
    // The same snapshot again, fail_if_exists: refused, nothing changes.
    let again = cluster.nodes[w]
        .client()
        .await
        .load("load-a", snap.snapshot.clone(), true)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some(tonic::Code::AlreadyExists), "{again}");

    // LoadStream through the third node.
    let third = (w + 2) % 3;
    let bytes = snap.snapshot.clone();
    let streamed = cluster.nodes[third]
        .client()
        .await
        .load_from(
            "load-b",
            false,
            Box::new(std::io::Cursor::new(bytes)),
            |_| {},
        )
        .await
        .expect("LoadStream through any node");
    assert_eq!(streamed.latest_sequence, 300);

    for ctx in ["load-a", "load-b"] {
        let converged = wait_converged(&cluster.nodes[0], ctx, 300).await;
        assert_eq!(
            converged, root,
            "{ctx}: replicas converge to the snapshot's root"
        );
        let first = entries_on(&cluster.nodes[0], ctx).await;
        assert_eq!(first.len(), 300);
        for n in &cluster.nodes[1..] {
            assert_eq!(
                entries_on(n, ctx).await,
                first,
                "{ctx}: replicas serve the same entries"
            );
        }
        // Appends continue after the loaded entries, through any node.
        let e = raw(&cluster.nodes[2])
            .await
            .append(request(ctx, "after the load".into()))
            .await
            .unwrap()
            .into_inner()
            .entry
            .unwrap();
        assert_eq!(e.sequence, 301);
    }
}

/// An engine that lost the answer to an append (its writer died mid-request) retries it with
/// the same idempotency key through another node: the new writer answers with the entry the old
/// writer stored, because the keys travel with the entries they were accepted with.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_failover_is_answered_with_the_entry_already_stored() {
    let mut cluster = TestCluster::start(33, 3, &["--ack", "quorum"]).await;
    let ctx = "retried";
    let keyed = |payload: &str, key: &str| ledger_core::NewEntry {
        context_id: ctx.into(),
        key: "facts".into(),
        payload: payload.as_bytes().to_vec(),
        idempotency_key: Some(key.into()),
        ..Default::default()
    };
    let first = cluster.nodes[0].client().await;
    let mut stored = Vec::new();
    for i in 0..20 {
        stored.push(
            first
                .append_entry(keyed(&format!("p{i}"), &format!("k{i}")))
                .await
                .unwrap(),
        );
    }
    let w = cluster.writer_index(0, ctx).await.expect("writer");
    let survivor = (0..3).find(|i| *i != w).unwrap();
    wait_converged(&cluster.nodes[survivor], ctx, 20).await;
    cluster.nodes[w].kill();
    let client = cluster.nodes[survivor].client().await;
    // Retries of acknowledged appends, through the node that now writes the context.
    let deadline = Instant::now() + Duration::from_secs(30);
    let again = loop {
        match client.append_entry(keyed("p19", "k19")).await {
            Ok(e) => break e,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for a new writer: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no writer took over: {e}"),
        }
    };
    assert_eq!(
        again, stored[19],
        "the retry is answered with the stored entry"
    );
    for i in [0, 7, 18] {
        let e = client
            .append_entry(keyed(&format!("p{i}"), &format!("k{i}")))
            .await
            .unwrap();
        assert_eq!(e, stored[i], "retry of k{i}");
    }
    // A different append under a used key is refused, and stores nothing.
    match client.append_entry(keyed("something else", "k3")).await {
        Err(ledger_client::ClientError::Status(s)) => {
            assert_eq!(s.code(), tonic::Code::AlreadyExists, "{s:?}")
        }
        other => panic!("expected ALREADY_EXISTS, got {other:?}"),
    }
    // A new key is a new entry, right after the retried ones.
    let next = client.append_entry(keyed("p20", "k20")).await.unwrap();
    assert_eq!(next.sequence, 21);
    let held = entries_on(&cluster.nodes[survivor], ctx).await;
    assert_eq!(held.len(), 21, "no retry was stored twice");
}

/// With `gossip_key` set on every node (here through `LEDGER_GOSSIP_KEY`'s flag), the
/// encrypted gossip still finds every member and the cluster replicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_with_an_encrypted_gossip_key_forms_and_replicates() {
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let cluster = TestCluster::start(34, 3, &["--gossip-key", key]).await;
    cluster.wait_alive(3).await;
    let mut c = raw(&cluster.nodes[1]).await;
    for i in 0..5 {
        c.append(request("sealed", format!("e{i}"))).await.unwrap();
    }
    wait_converged(&cluster.nodes[0], "sealed", 5).await;
    for n in &cluster.nodes {
        assert_eq!(entries_on(n, "sealed").await.len(), 5);
    }
}

fn batch(ctx: &str, tag: &str, n: usize) -> pb::AppendBatchRequest {
    pb::AppendBatchRequest {
        context_id: ctx.into(),
        items: (0..n)
            .map(|i| pb::AppendBatchItem {
                key: "facts".into(),
                payload: format!("{tag}-{i}").into_bytes(),
                ..Default::default()
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_through_a_non_writer_is_stored_whole_on_every_replica() {
    let cluster = TestCluster::start(41, 3, &[]).await;
    let ctx = "batched";
    let mut first = raw(&cluster.nodes[0]).await;
    first.append(request(ctx, "single".into())).await.unwrap();
    let w = cluster.writer_index(0, ctx).await.expect("writer");
    let via = (w + 1) % 3;
    let mut c = raw(&cluster.nodes[via]).await;
    let r = c
        .append_batch(batch(ctx, "b", 50))
        .await
        .unwrap_or_else(|s| panic!("batch via non-writer {via}: {s:?}"))
        .into_inner();
    assert_eq!((r.first_sequence, r.last_sequence), (2, 51));
    assert_eq!(r.entries.len(), 50);
    // A bad batch through the writer itself stores nothing, and names the item.
    let mut bad = batch(ctx, "bad", 3);
    bad.items[1].key = String::new();
    let s = raw(&cluster.nodes[w])
        .await
        .append_batch(bad)
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().starts_with("batch item 1"), "{}", s.message());
    let r = c
        .append_batch(batch(ctx, "c", 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.first_sequence, r.last_sequence), (52, 61));
    wait_converged(&cluster.nodes[0], ctx, 61).await;
    let want: Vec<String> = std::iter::once("single".to_owned())
        .chain((0..50).map(|i| format!("b-{i}")))
        .chain((0..10).map(|i| format!("c-{i}")))
        .collect();
    for n in &cluster.nodes {
        let got: Vec<String> = entries_on(n, ctx)
            .await
            .iter()
            .map(|e| String::from_utf8(e.payload.clone()).unwrap())
            .collect();
        assert_eq!(got, want);
    }
}

/// Waits until node `via` lists `expected` as the mirrors of `ctx`, each holding `size` entries
/// under the replicas' root.
async fn wait_mirrored(via: &support::Node, ctx: &str, size: u64, expected: &[String]) {
    let root = wait_converged(via, ctx, size).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(via, Some(ctx)).await;
        let mirrors = s["contexts"][0]["mirrors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ids: Vec<String> = mirrors
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
        let held = mirrors
            .iter()
            .all(|m| m["size"].as_u64() == Some(size) && m["root"] == root.as_str());
        if ids == expected && held {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "mirrors of {ctx} (expected {expected:?} holding {size} entries under {root}): {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Mirrors replicate read-only: one without prefixes holds every context, one started with
/// `--mirror-prefixes obs-,tenant-7/` only the contexts whose id starts with one of them,
/// including a context written before it joined. Neither writes nor counts as a replica; appends
/// through a mirror are forwarded; a read of a context a mirror does not hold is forwarded to a
/// replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirrors_hold_every_context_or_only_those_their_prefixes_start() {
    let mut cluster = TestCluster::start(35, 3, &[]).await;
    let mut c0 = raw(&cluster.nodes[0]).await;
    for i in 0..5 {
        c0.append(request("obs-early", format!("early-{i}")))
            .await
            .unwrap();
    }
    let all = cluster.add_node_with(&["--role", "mirror"]);
    let obs = cluster.add_node_with(&["--role", "mirror", "--mirror-prefixes", "obs-,tenant-7/"]);
    cluster.wait_alive(5).await;
    let (all_id, obs_id) = (node_id(all), node_id(obs));
    let mut clients = Vec::new();
    for n in &cluster.nodes {
        clients.push(raw(n).await);
    }
    // Appends through every node, mirrors included (they forward to the writer).
    for i in 0..10u64 {
        for ctx in ["obs-live", "tenant-7/run", "other-live"] {
            let via = (i as usize) % 5;
            let r = clients[via]
                .append(request(ctx, format!("{ctx}-{i}")))
                .await
                .unwrap_or_else(|s| panic!("append {ctx} via node {via}: {s:?}"));
            assert_eq!(r.into_inner().entry.unwrap().sequence, i + 1);
        }
    }
    let both = vec![all_id.clone(), obs_id.clone()];
    wait_mirrored(&cluster.nodes[0], "obs-early", 5, &both).await;
    wait_mirrored(&cluster.nodes[0], "obs-live", 10, &both).await;
    wait_mirrored(&cluster.nodes[0], "tenant-7/run", 10, &both).await;
    wait_mirrored(
        &cluster.nodes[0],
        "other-live",
        10,
        std::slice::from_ref(&all_id),
    )
    .await;
    for ctx in ["obs-early", "obs-live", "tenant-7/run", "other-live"] {
        let s = status(&cluster.nodes[0], Some(ctx)).await;
        let writer = s["contexts"][0]["writer"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!both.contains(&writer), "{ctx} written by mirror {writer}");
        for r in s["contexts"][0]["replicas"].as_array().unwrap() {
            assert!(!both.contains(&r["id"].as_str().unwrap().to_owned()), "{s}");
        }
    }
    // The prefixed mirror stores nothing of the context outside its prefixes…
    let held = held_size(&cluster.nodes[obs], "other-live").await.unwrap();
    assert_eq!(held, 0, "the obs- mirror stored other-live");
    // …yet answers a read of it (forwarded to a replica: it holds none of it).
    let mut mirror = raw(&cluster.nodes[obs]).await;
    for ctx in ["other-live", "obs-live"] {
        let r = mirror
            .get(pb::GetRequest {
                context_id: ctx.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.entries.len(), 10, "{ctx} through the obs- mirror");
    }
    // Every entry the mirrors serve locally is the writer's, in order.
    for ctx in ["obs-live", "tenant-7/run"] {
        let expected: Vec<Vec<u8>> = (0..10).map(|i| format!("{ctx}-{i}").into_bytes()).collect();
        for m in [all, obs] {
            let got: Vec<Vec<u8>> = entries_on(&cluster.nodes[m], ctx)
                .await
                .into_iter()
                .map(|e| e.payload)
                .collect();
            assert_eq!(got, expected, "{ctx} on mirror node {m}");
        }
    }
    let s = status(&cluster.nodes[0], None).await;
    let listed = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == obs_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["role"], "mirror");
    assert_eq!(
        listed["mirror_prefixes"],
        serde_json::json!(["obs-", "tenant-7/"])
    );

    // A wiped mirror gets back exactly the contexts of its prefixes: wipe it and restart
    // every node (no context task survives; nobody appends), then wait for it to hold them.
    // (Anti-entropy between holders, replicas or mirrors, finds what it lacks; other paths,
    // such as a read on the mirror waking the context's writer, can bring them too, so this
    // does not isolate the digest path: it checks the outcome.)
    cluster.nodes[obs].kill();
    let dir = cluster.dirs[obs].path().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..3 {
        cluster.nodes[i].kill();
        cluster.nodes[i].restart().expect("restart a member");
    }
    cluster.nodes[obs]
        .restart()
        .expect("restart the wiped mirror");
    cluster.wait_alive(5).await;
    for (ctx, size) in [("obs-early", 5), ("obs-live", 10), ("tenant-7/run", 10)] {
        wait_mirrored(&cluster.nodes[0], ctx, size, &both).await;
        let expected: Vec<Vec<u8>> = if ctx == "obs-early" {
            (0..5).map(|i| format!("early-{i}").into_bytes()).collect()
        } else {
            (0..10).map(|i| format!("{ctx}-{i}").into_bytes()).collect()
        };
        let got: Vec<Vec<u8>> = entries_on(&cluster.nodes[obs], ctx)
            .await
            .into_iter()
            .map(|e| e.payload)
            .collect();
        assert_eq!(got, expected, "{ctx} restored on the wiped mirror");
    }
    let held = held_size(&cluster.nodes[obs], "other-live").await.unwrap();
    assert_eq!(
        held, 0,
        "the restored obs- mirror took nothing outside its prefixes"
    );
}

/// A Get of `ctx` through `node` with `x-ledger-min-sequence: min` (and `grpc-timeout`, if
/// given), with how long it took to answer.
async fn get_at_least(
    node: &support::Node,
    ctx: &str,
    min: u64,
    timeout: Option<Duration>,
) -> (Result<pb::GetResponse, tonic::Status>, Duration) {
    let mut req = tonic::Request::new(pb::GetRequest {
        context_id: ctx.into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-ledger-min-sequence", min.to_string().parse().unwrap());
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    let mut client = raw(node).await;
    let started = Instant::now();
    let r = client.get(req).await.map(tonic::Response::into_inner);
    (r, started.elapsed())
}

/// Appends `n` entries to `ctx` through `node`, acknowledged at quorum.
async fn append_at_quorum(node: &support::Node, ctx: &str, tag: &str, n: usize) -> u64 {
    let mut c = raw(node).await;
    let mut last = 0;
    for i in 0..n {
        let mut req = tonic::Request::new(request(ctx, format!("{tag}-{i}")));
        req.metadata_mut()
            .insert("x-ledger-ack", "quorum".parse().unwrap());
        last = c
            .append(req)
            .await
            .unwrap_or_else(|s| panic!("append {tag}-{i} to {ctx}: {s:?}"))
            .into_inner()
            .entry
            .unwrap()
            .sequence;
    }
    last
}

/// Asserts `r` is the refusal of a read below its min-sequence: UNAVAILABLE, naming it and
/// the entries held.
fn assert_refused_below<T: std::fmt::Debug>(r: &Result<T, tonic::Status>, min: u64, held: u64) {
    let s = match r {
        Err(s) => s,
        Ok(r) => panic!("a read with min-sequence {min} was served below it: {r:?}"),
    };
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
    assert!(
        s.message()
            .starts_with(&format!("min-sequence {min} not reached"))
            && s.message()
                .contains(&format!("holds {held} committed entries")),
        "{}",
        s.message()
    );
}

/// Read-your-writes never reads stale: the one node left of three is the context's placement
/// writer but cannot claim it (no majority), and a read asking for more than it holds waits,
/// then is refused naming what it asked and what is held, never served below it — Get,
/// GetTreeHead and Watch alike, with or without a deadline. What it holds it still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_min_sequence_read_on_a_survivor_that_cannot_claim_is_refused_never_served_below_it() {
    let mut cluster = TestCluster::start(71, 3, &[]).await;
    let ctx = "ryw-survivor";
    assert_eq!(append_at_quorum(&cluster.nodes[0], ctx, "e", 3).await, 3);
    let w = cluster.writer_index(0, ctx).await.expect("a writer");
    let survivor = (w + 1) % 3;
    // The survivor knows all three committed (it serves them at min-sequence 3).
    let (r, _) = get_at_least(&cluster.nodes[survivor], ctx, 3, None).await;
    assert_eq!(r.expect("served at min-sequence 3").latest_sequence, 3);
    for i in (0..3).filter(|i| *i != survivor) {
        cluster.nodes[i].kill();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.writer_index(survivor, ctx).await != Some(survivor) {
        assert!(
            Instant::now() < deadline,
            "the survivor never became the placement writer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = status(&cluster.nodes[survivor], Some(ctx)).await;
    let state = s["contexts"][0]["replicas"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == node_id(survivor)).cloned());
    let node = &cluster.nodes[survivor];

    // No deadline: the default wait, then UNAVAILABLE naming 10 and the 3 held.
    let (r, took) = get_at_least(node, ctx, 10, None).await;
    assert_refused_below(&r, 10, 3);
    assert!(
        r.as_ref().unwrap_err().message().contains(&format!(
            "node {} holds 3 committed entries of context \"{ctx}\" (writer: {}",
            node_id(survivor),
            node_id(survivor)
        )),
        "names the node and the writer: {r:?}"
    );
    assert!(
        took >= Duration::from_millis(1500),
        "it waited for the entries first ({took:?}); replica state {state:?}"
    );
    // A deadline: refused before it, not DEADLINE_EXCEEDED.
    let (r, took) = get_at_least(node, ctx, 10, Some(Duration::from_millis(800))).await;
    assert_refused_below(&r, 10, 3);
    assert!(
        took < Duration::from_millis(800),
        "answered within the deadline: {took:?}"
    );
    // Every read RPC honours the header the same way.
    let mut integrity =
        ledger_proto::ledger::v1::integrity_service_client::IntegrityServiceClient::new(
            node.channel().await,
        );
    let mut head = tonic::Request::new(ledger_proto::ledger::v1::GetTreeHeadRequest {
        context_id: ctx.into(),
    });
    head.metadata_mut()
        .insert("x-ledger-min-sequence", "10".parse().unwrap());
    head.set_timeout(Duration::from_millis(600));
    assert_refused_below(&integrity.get_tree_head(head).await, 10, 3);
    let mut watch = tonic::Request::new(pb::WatchRequest {
        context_id: ctx.into(),
        ..Default::default()
    });
    watch
        .metadata_mut()
        .insert("x-ledger-min-sequence", "10".parse().unwrap());
    let watched = raw(node).await.watch(watch).await.map(|_| ());
    assert_refused_below(&watched, 10, 3);
    // At or below what it holds: served.
    let (r, _) = get_at_least(node, ctx, 3, Some(Duration::from_secs(2))).await;
    let page = r.expect("served at min-sequence 3");
    assert_eq!((page.latest_sequence, page.entries.len()), (3, 3));
}

/// A read with a min-sequence through a follower waits, then asks the writer (the header, the
/// rest of its wait and the caller's deadline go along): above the head the writer refuses it
/// naming what it holds, never served below; at or below the head, or once an append reaches
/// it while the read waits, it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_min_sequence_read_through_a_follower_waits_for_the_writer_and_is_refused_above_the_head()
{
    let cluster = TestCluster::start(72, 3, &[]).await;
    let ctx = "ryw-forward";
    assert_eq!(append_at_quorum(&cluster.nodes[0], ctx, "e", 5).await, 5);
    let w = cluster.writer_index(0, ctx).await.expect("a writer");
    let f = (w + 1) % 3;
    let follower = &cluster.nodes[f];
    let writer_named = format!("node {} holds 5 committed entries", node_id(w));

    let (r, _) = get_at_least(follower, ctx, 5, None).await;
    assert!(r.expect("served at the head").latest_sequence >= 5);

    // Above the head, no deadline: the follower's half, then the writer's rest, then refused
    // by the writer (the read went on to it).
    let (r, took) = get_at_least(follower, ctx, 9, None).await;
    assert_refused_below(&r, 9, 5);
    let message = r.unwrap_err().message().to_owned();
    assert!(
        message.contains(&writer_named)
            && message.contains(&format!("(writer: {}, writing)", node_id(w))),
        "the writer answered: {message}"
    );
    assert!(took >= Duration::from_millis(1500), "it waited ({took:?})");
    assert!(
        took < Duration::from_secs(4),
        "within the default wait ({took:?})"
    );
    // With a deadline: refused before it, by the writer.
    let (r, took) = get_at_least(follower, ctx, 9, Some(Duration::from_secs(1))).await;
    assert_refused_below(&r, 9, 5);
    assert!(r.unwrap_err().message().contains(&writer_named));
    assert!(
        took < Duration::from_secs(1),
        "answered within the deadline: {took:?}"
    );

    // An append that reaches the sequence while the read waits: served.
    let waiting = {
        let url = follower.url.clone();
        tokio::spawn(async move {
            let mut c = ContextServiceClient::connect(url).await.unwrap();
            let mut req = tonic::Request::new(pb::GetRequest {
                context_id: "ryw-forward".into(),
                ..Default::default()
            });
            req.metadata_mut()
                .insert("x-ledger-min-sequence", "6".parse().unwrap());
            req.set_timeout(Duration::from_secs(3));
            c.get(req).await.map(tonic::Response::into_inner)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(append_at_quorum(&cluster.nodes[w], ctx, "late", 1).await, 6);
    let page = waiting
        .await
        .unwrap()
        .expect("served once the sequence is committed");
    assert!(page.latest_sequence >= 6, "{page:?}");
    assert_eq!(page.entries.len() as u64, page.latest_sequence);
}

/// Appends one entry to `ctx` through `node` at quorum, retried while a load still holds the
/// context (it runs to its end even after its caller left); any other refusal is returned.
async fn append_after_load(
    node: &support::Node,
    ctx: &str,
    tag: &str,
) -> Result<u64, tonic::Status> {
    let mut c = raw(node).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut req = tonic::Request::new(request(ctx, tag.to_owned()));
        req.metadata_mut()
            .insert("x-ledger-ack", "quorum".parse().unwrap());
        match c.append(req).await {
            Ok(r) => return Ok(r.into_inner().entry.unwrap().sequence),
            Err(s) if s.message().contains("load into context") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => return Err(s),
        }
    }
}

/// Loads whose caller goes away around their end — a `grpc-timeout` firing on the writer, or
/// the client dropping the call, at deadlines spread across the load's own duration, unary
/// `Load` and `LoadStream` — leave every context's task in step with storage: later appends
/// through another node are acknowledged at quorum at the next sequence, and every replica
/// ends with the same entries and root.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loads_cut_off_at_their_end_leave_the_context_writable_and_replicated() {
    let cluster = TestCluster::start(73, 3, &[]).await;
    let src = "cut-src";
    let mut c0 = raw(&cluster.nodes[0]).await;
    for b in 0..8 {
        c0.append_batch(batch(src, &format!("b{b}"), 250))
            .await
            .unwrap();
    }
    let snap = cluster.nodes[0].client().await.snapshot(src).await.unwrap();
    assert_eq!(snap.sequence, 2_000);
    let bytes = snap.snapshot;

    // How long a whole load takes through its writer.
    let w = cluster
        .writer_index(0, "cut-probe")
        .await
        .expect("a writer");
    let started = Instant::now();
    cluster.nodes[w]
        .client()
        .await
        .load("cut-probe", bytes.clone(), true)
        .await
        .expect("a whole load");
    let whole = started.elapsed();

    let mut contexts = Vec::new();
    for k in 0..16u32 {
        let ctx = format!("cut-{k}");
        let w = cluster.writer_index(0, &ctx).await.expect("a writer");
        // From half the load's duration to half as long again, in steps.
        let cut = whole / 2 + whole * k / 16;
        let writer = &cluster.nodes[w];
        let outcome = if k % 2 == 0 {
            // The writer's own deadline fires (grpc-timeout): unary Load.
            let mut req = tonic::Request::new(pb::LoadRequest {
                context_id: ctx.clone(),
                snapshot: bytes.clone(),
                fail_if_exists: true,
            });
            req.set_timeout(cut);
            raw(writer).await.load(req).await.map(|_| ())
        } else {
            // The client drops a LoadStream once it sent everything.
            let pieces: Vec<ledger_proto::ledger::v1::LoadStreamRequest> = bytes
                .chunks(16 << 10)
                .enumerate()
                .map(|(i, data)| ledger_proto::ledger::v1::LoadStreamRequest {
                    context_id: if i == 0 { ctx.clone() } else { String::new() },
                    fail_if_exists: true,
                    data: data.to_vec(),
                })
                .collect();
            let mut snapshots =
                ledger_proto::ledger::v1::snapshot_service_client::SnapshotServiceClient::new(
                    writer.channel().await,
                );
            let call = snapshots.load_stream(futures::stream::iter(pieces));
            match tokio::time::timeout(cut, call).await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err(tonic::Status::cancelled("dropped by the client")),
            }
        };
        contexts.push((ctx, w, outcome));
    }
    let mut cut_off = 0;
    for (ctx, w, outcome) in &contexts {
        cut_off += usize::from(outcome.is_err());
        // What the load left: all of it or nothing.
        let held = held_size(&cluster.nodes[*w], ctx).await.unwrap();
        assert!(
            held == 0 || held == 2_000,
            "{ctx}: a load is all or nothing ({held})"
        );
        let via = (*w + 1) % 3;
        let first = append_after_load(&cluster.nodes[via], ctx, "after")
            .await
            .unwrap_or_else(|s| panic!("{ctx} ({outcome:?}): an append after the load: {s:?}"));
        let stored = held_size(&cluster.nodes[*w], ctx).await.unwrap();
        assert_eq!(
            first, stored,
            "{ctx}: the append follows what the writer stores"
        );
        assert!(first == 1 || first == 2_001, "{ctx}: {first}");
        let second = append_after_load(&cluster.nodes[(*w + 2) % 3], ctx, "again")
            .await
            .unwrap_or_else(|s| panic!("{ctx}: a second append: {s:?}"));
        assert_eq!(second, first + 1);
        let root = wait_converged(&cluster.nodes[0], ctx, second).await;
        let heads: Vec<_> = {
            let mut heads = Vec::new();
            for n in &cluster.nodes {
                let mut integrity =
                    ledger_proto::ledger::v1::integrity_service_client::IntegrityServiceClient::new(
                        n.channel().await,
                    );
                let mut req = tonic::Request::new(ledger_proto::ledger::v1::GetTreeHeadRequest {
                    context_id: ctx.clone(),
                });
                req.metadata_mut()
                    .insert("x-ledger-min-sequence", second.to_string().parse().unwrap());
                req.metadata_mut()
                    .insert("x-ledger-forwarded", "1".parse().unwrap());
                let h = integrity.get_tree_head(req).await.unwrap().into_inner();
                heads.push((h.tree_size, hex::encode(h.root_hash)));
            }
            heads
        };
        assert!(
            heads.iter().all(|h| *h == (second, root.clone())),
            "{ctx}: every replica's signed head is the writer's: {heads:?} vs {root}"
        );
    }
    eprintln!(
        "{cut_off} of {} loads cut off by their caller (whole load {whole:?})",
        contexts.len()
    );
}
