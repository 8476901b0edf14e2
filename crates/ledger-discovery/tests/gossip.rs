//! Real memberlist nodes on loopback (each test on its own 127.0.0.x addresses, ports picked
//! by the OS) with fast timings. Every wait is bounded by a deadline; nothing sleeps a fixed
//! time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ledger_discovery::{
    Discovery, DiscoveryError, GossipConfig, GossipDiscovery, GossipRole, GossipState,
    GossipTiming, MemberChange, Membership, NodeMeta,
};
use tokio::sync::watch;

/// Generous bound for anything the fast timings should do in about a second.
const DEADLINE: Duration = Duration::from_secs(10);

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn meta(id: &str, incarnation: &str, role: GossipRole) -> NodeMeta {
    NodeMeta {
        grpc_addr: format!("{id}.test:50051"),
        public_key: id.bytes().cycle().take(32).collect(),
        version: "0.1.0-test".to_owned(),
        role,
        incarnation: incarnation.to_owned(),
        mirror_prefixes: Vec::new(),
        views_settled: 0,
    }
}

async fn start_at(id: &str, incarnation: &str, bind: SocketAddr) -> GossipDiscovery {
    start_with(id, meta(id, incarnation, GossipRole::Member), bind).await
}

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=memberlist=debug`).
fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

async fn start_with(id: &str, meta: NodeMeta, bind: SocketAddr) -> GossipDiscovery {
    init_logs();
    let config = GossipConfig {
        bind_addr: bind,
        timing: GossipTiming::fast(),
        ..GossipConfig::new(id, meta)
    };
    GossipDiscovery::start(config).await.expect("gossip starts")
}

async fn start(id: &str, ip_last: u8) -> GossipDiscovery {
    start_at(id, &format!("{id}-1"), SocketAddr::new(ip(ip_last), 0)).await
}

fn seed_of(node: &GossipDiscovery) -> Vec<String> {
    vec![node.advertise_addr().to_string()]
}

/// Waits until `pred` holds for the latest snapshot, calling `seen` on every snapshot read
/// (including the first). Panics with the last snapshot at the deadline.
async fn wait_until(
    feed: &mut watch::Receiver<Membership>,
    what: &str,
    mut seen: impl FnMut(&Membership),
    pred: impl Fn(&Membership) -> bool,
) -> Membership {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let view = feed.borrow_and_update().clone();
        seen(&view);
        if pred(&view) {
            return view;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, feed.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("{what}: feed closed; last view {view:#?}"),
            Err(_) => panic!("{what}: not within {DEADLINE:?}; last view {view:#?}"),
        }
    }
}

async fn wait_for(
    node: &GossipDiscovery,
    what: &str,
    pred: impl Fn(&Membership) -> bool,
) -> Membership {
    wait_until(&mut node.subscribe(), what, |_| {}, pred).await
}

fn state_of(view: &Membership, id: &str) -> Option<GossipState> {
    view.get(id).map(|m| m.state)
}

fn all_alive(view: &Membership, ids: &[&str]) -> bool {
    view.members().len() == ids.len()
        && ids
            .iter()
            .all(|id| state_of(view, id) == Some(GossipState::Alive))
}

/// Starts `ids` on 127.0.0.`first_ip`.. and joins every node after the first through the first
/// only; returns once every node sees every node alive.
async fn cluster(ids: &[&str], first_ip: u8) -> Vec<GossipDiscovery> {
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        nodes.push(start(id, first_ip + i as u8).await);
    }
    let report = nodes[0].join(&[]).await.unwrap();
    assert!(!report.joined(), "no seeds: nobody to contact");
    let seeds = seed_of(&nodes[0]);
    for node in &nodes[1..] {
        let report = node.join(&seeds).await.unwrap();
        assert!(report.joined(), "{report:?}");
    }
    for node in &nodes {
        wait_for(node, "every node sees every node alive", |v| {
            all_alive(v, ids)
        })
        .await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_find_each_other_from_one_seed_and_see_each_others_metadata() {
    let started = Instant::now();
    let ids = ["a", "b", "c"];
    let nodes = cluster(&ids, 11).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "convergence took {took:?}");

    for node in &nodes {
        let view = node.membership();
        assert_eq!(view.local_id(), node.local_id());
        assert_eq!(view.local().unwrap().id, node.local_id());
        for (other, id) in nodes.iter().zip(ids) {
            let m = view.get(id).unwrap();
            assert_eq!(m.meta, meta(id, &format!("{id}-1"), GossipRole::Member));
            assert_eq!(m.gossip_addr, other.advertise_addr());
            assert_eq!(m.grpc_addr(), format!("{id}.test:50051"));
            assert_eq!(m.meta.public_key.len(), 32);
        }
    }
    // c only knew the seed a, yet it learnt b through gossip.
    assert_eq!(
        state_of(&nodes[2].membership(), "b"),
        Some(GossipState::Alive)
    );
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_role_its_prefixes_and_a_dns_seed_are_carried_through() {
    // `localhost` resolves to 127.0.0.1 (and maybe ::1, where nothing listens): the join
    // tries every address and succeeds through the one that answers.
    let a = start_at("a", "a-1", SocketAddr::new(ip(1), 0)).await;
    let port = a.advertise_addr().port();
    let mut mirror = meta("m", "m-1", GossipRole::Mirror);
    mirror.mirror_prefixes = vec!["observed-".to_owned(), "tenant-7/".to_owned()];
    let m = start_with("m", mirror, SocketAddr::new(ip(31), 0)).await;
    let report = m.join(&[format!("localhost:{port}")]).await.unwrap();
    assert!(report.joined(), "{report:?}");
    assert!(report.resolved.contains(&format!("127.0.0.1:{port}")));
    let view = wait_for(&a, "a sees the mirror", |v| all_alive(v, &["a", "m"])).await;
    assert_eq!(view.get("m").unwrap().role(), GossipRole::Mirror);
    assert_eq!(
        view.get("m").unwrap().meta.mirror_prefixes,
        ["observed-", "tenant-7/"]
    );
    assert_eq!(view.get("a").unwrap().role(), GossipRole::Member);
    a.shutdown().await;
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_stopped_without_leaving_are_seen_suspect_then_dead() {
    let ids = ["a", "b", "c", "d"];
    let mut nodes = cluster(&ids, 41).await;
    let d = nodes.pop().unwrap();
    let c = nodes.pop().unwrap();
    // Both observers watch from before the crash, concurrently: a watch channel keeps only
    // the latest snapshot, so a feed read later would have skipped the suspect phase.
    let watch_crash = |observer: &GossipDiscovery| {
        let mut feed = observer.subscribe();
        let name = observer.local_id().to_owned();
        async move {
            let mut suspected = Vec::new();
            let view = wait_until(
                &mut feed,
                "c and d declared dead",
                |v| {
                    for id in ["c", "d"] {
                        if state_of(v, id) == Some(GossipState::Suspect) && !suspected.contains(&id)
                        {
                            suspected.push(id);
                        }
                    }
                },
                |v| {
                    state_of(v, "c") == Some(GossipState::Dead)
                        && state_of(v, "d") == Some(GossipState::Dead)
                },
            )
            .await;
            suspected.sort();
            (name, suspected, view)
        }
    };
    let (on_a, on_b) = (watch_crash(&nodes[0]), watch_crash(&nodes[1]));
    let started = Instant::now();
    c.shutdown().await; // stopped explicitly, no leave
    drop(d); // dropped: the handle stops its tasks, no leave
    let (seen_a, seen_b) = tokio::join!(on_a, on_b);
    for (observer, suspected, view) in [seen_a, seen_b] {
        assert_eq!(
            suspected,
            ["c", "d"],
            "{observer} must see each crashed node suspect before dead"
        );
        assert_eq!(view.live().count(), 2);
        // The dead stay in the view, with their metadata, until forgotten.
        assert_eq!(view.get("c").unwrap().incarnation(), "c-1");
    }
    // Well under `gossip_to_the_dead_time` (5 s in the fast timings): memberlist declared them
    // dead; they were not merely reaped from its list.
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "failure detection took {took:?}"
    );

    // An operator removes d on a: it leaves a's view, not b's.
    assert!(!nodes[0].forget("b"), "a live member cannot be forgotten");
    assert!(nodes[0].forget("d"));
    assert!(nodes[0].membership().get("d").is_none());
    assert!(nodes[1].membership().get("d").is_some());
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_seen_as_left() {
    let ids = ["a", "b", "c"];
    let nodes = cluster(&ids, 51).await;
    // Subscribed before the leave, so every snapshot after it is read.
    let mut feeds = [
        (&nodes[0], nodes[0].subscribe()),
        (&nodes[2], nodes[2].subscribe()),
    ];
    nodes[1].leave(Duration::from_secs(2)).await.unwrap();

    for (observer, feed) in &mut feeds {
        let mut states = Vec::new();
        wait_until(
            feed,
            "b seen as left",
            |v| {
                let s = state_of(v, "b");
                if states.last() != Some(&s) {
                    states.push(s);
                }
            },
            |v| state_of(v, "b") == Some(GossipState::Left),
        )
        .await;
        assert!(
            !states.contains(&Some(GossipState::Suspect))
                && !states.contains(&Some(GossipState::Dead)),
            "{} saw {states:?}",
            observer.local_id()
        );
    }
    // The leaver's own last snapshot shows it left, and it cannot rejoin with this handle.
    assert_eq!(
        state_of(&nodes[1].membership(), "b"),
        Some(GossipState::Left)
    );
    assert!(matches!(
        nodes[1].join(&seed_of(&nodes[0])).await,
        Err(DiscoveryError::NotRunning)
    ));
    nodes[0].shutdown().await;
    nodes[2].shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_after_it_was_declared_dead_is_seen_with_its_new_incarnation() {
    let ids = ["a", "b", "c"];
    let mut nodes = cluster(&ids, 61).await;
    let c = nodes.pop().unwrap();
    let c_addr = c.advertise_addr();
    let before = nodes[0].membership();
    c.shutdown().await;
    for node in &nodes {
        wait_for(node, "c declared dead", |v| {
            state_of(v, "c") == Some(GossipState::Dead)
        })
        .await;
    }

    // Same id and address, wiped data dir: a new incarnation id.
    let c2 = start_at("c", "c-2", c_addr).await;
    c2.join(&seed_of(&nodes[0])).await.unwrap();
    for node in &nodes {
        let view = wait_for(node, "c alive again with incarnation c-2", |v| {
            v.get("c")
                .is_some_and(|m| m.state == GossipState::Alive && m.incarnation() == "c-2")
        })
        .await;
        let restarted = view.changes_since(&before).into_iter().any(|ch| {
            matches!(ch, MemberChange::Restarted { ref member, ref previous_incarnation }
                if member.id == "c" && previous_incarnation == "c-1")
        });
        assert!(restarted, "{} did not report a restart", node.local_id());
    }
    wait_for(&c2, "the restarted node sees everyone", |v| {
        all_alive(v, &ids)
    })
    .await;
    for node in nodes.iter().chain([&c2]) {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_before_anyone_noticed_is_seen_with_its_new_incarnation() {
    let ids = ["a", "b", "c"];
    let mut nodes = cluster(&ids, 71).await;
    let c = nodes.pop().unwrap();
    let c_addr = c.advertise_addr();
    c.shutdown().await;
    // Back at once, under the same memberlist incarnation the others hold: memberlist must
    // notice the different metadata and let the new one win.
    let c2 = start_at("c", "c-2", c_addr).await;
    c2.join(&seed_of(&nodes[0])).await.unwrap();
    for node in &nodes {
        wait_for(node, "c alive with incarnation c-2", |v| {
            v.get("c")
                .is_some_and(|m| m.state == GossipState::Alive && m.incarnation() == "c-2")
        })
        .await;
    }
    for node in nodes.iter().chain([&c2]) {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_seeds_are_down_runs_alone_and_joins_when_they_come_up() {
    // Reserve a port for the seed that is not up yet.
    let seed_addr = {
        let probe = std::net::TcpListener::bind(SocketAddr::new(ip(82), 0)).unwrap();
        probe.local_addr().unwrap()
    };
    let a = start("a", 81).await;
    let report = a.join(&[seed_addr.to_string()]).await.unwrap();
    assert!(!report.joined(), "{report:?}");
    assert!(!report.errors.is_empty());
    let view = a.membership();
    assert_eq!(view.members().len(), 1);
    assert_eq!(state_of(&view, "a"), Some(GossipState::Alive));

    // The seed comes up with no seeds of its own; a's background rejoin finds it.
    let s = start_at("s", "s-1", seed_addr).await;
    s.join(&[]).await.unwrap();
    wait_for(&a, "a joined the late seed", |v| all_alive(v, &["a", "s"])).await;
    wait_for(&s, "the seed sees a", |v| all_alive(v, &["a", "s"])).await;
    a.shutdown().await;
    s.shutdown().await;
}

async fn start_keyed(id: &str, ip_last: u8, key: Option<&str>) -> GossipDiscovery {
    init_logs();
    let config = GossipConfig {
        bind_addr: SocketAddr::new(ip(ip_last), 0),
        timing: GossipTiming::fast(),
        key: key.map(|k| k.parse().expect("a valid key")),
        ..GossipConfig::new(id, meta(id, &format!("{id}-1"), GossipRole::Member))
    };
    GossipDiscovery::start(config).await.expect("gossip starts")
}

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const OTHER_KEY: &str = "/wECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_gossip_key_only_nodes_holding_it_join() {
    let a = start_keyed("a", 101, Some(KEY)).await;
    let b = start_keyed("b", 102, Some(KEY)).await;
    a.join(&[]).await.unwrap();
    let report = b.join(&seed_of(&a)).await.unwrap();
    assert!(report.joined(), "{report:?}");
    for n in [&a, &b] {
        wait_for(n, "both keyed nodes alive", |v| all_alive(v, &["a", "b"])).await;
    }
    // Neither a node without a key nor one with another key gets in, either way round.
    let clear = start_keyed("clear", 103, None).await;
    let other = start_keyed("other", 104, Some(OTHER_KEY)).await;
    for outsider in [&clear, &other] {
        let report = outsider.join(&seed_of(&a)).await.unwrap();
        assert!(!report.joined(), "{report:?}");
    }
    let report = a
        .join(&[
            clear.advertise_addr().to_string(),
            other.advertise_addr().to_string(),
        ])
        .await
        .unwrap();
    assert!(!report.joined(), "{report:?}");
    // Several probe and gossip rounds later, still nobody new on either side.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        for n in [&a, &b] {
            assert!(
                all_alive(&n.membership(), &["a", "b"]),
                "{:?}",
                n.membership()
            );
        }
        for n in [&clear, &other] {
            assert_eq!(n.membership().members().len(), 1, "{:?}", n.membership());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A malformed key is refused with what to use instead.
    let e = "c2hvcnQ="
        .parse::<ledger_discovery::GossipKey>()
        .unwrap_err();
    assert!(matches!(e, DiscoveryError::InvalidGossipKey(_)), "{e}");
    assert!(e.to_string().contains("base64"), "{e}");
    assert!(!format!("{:?}", KEY.parse::<ledger_discovery::GossipKey>().unwrap()).contains(KEY));
    for n in [a, b, clear, other] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_refused() {
    let bind = SocketAddr::new(ip(91), 0);
    let empty_id = GossipDiscovery::start(GossipConfig {
        bind_addr: bind,
        ..GossipConfig::new("", meta("x", "x-1", GossipRole::Member))
    })
    .await;
    assert!(matches!(empty_id, Err(DiscoveryError::EmptyNodeId)));

    let mut big = meta("x", "x-1", GossipRole::Member);
    big.grpc_addr = "h".repeat(600);
    let too_big = GossipDiscovery::start(GossipConfig {
        bind_addr: bind,
        ..GossipConfig::new("x", big)
    })
    .await;
    assert!(matches!(too_big, Err(DiscoveryError::MetaTooLarge { .. })));

    let x = start("x", 91).await;
    let taken = GossipDiscovery::start(GossipConfig {
        bind_addr: x.advertise_addr(),
        ..GossipConfig::new("y", meta("y", "y-1", GossipRole::Member))
    })
    .await;
    assert!(matches!(taken, Err(DiscoveryError::Start { .. })));
    assert!(matches!(
        x.join(&["no-port".to_owned()]).await,
        Err(DiscoveryError::InvalidSeed { .. })
    ));
    x.shutdown().await;
    assert!(matches!(x.join(&[]).await, Err(DiscoveryError::NotRunning)));
}
