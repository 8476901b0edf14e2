//! `--replicated`: replicated durable appends, a 3-node Converge Ledger cluster (R=3,
//! `ack=quorum`, each node on its own 127.0.201.x address) against a 3-server NATS JetStream
//! cluster with an R3 file stream and `sync_interval: always`, in one run on this machine.
//! Workloads: 64 writers on 64 contexts (throughput, latency) and 1 writer going round the 64
//! contexts (append-to-ack latency). Results in `<out>/replicated.md`.

use crate::systems::{LedgerCluster, Nats, System};
use crate::{Args, append_run, procs, start_deadline, until_ok, us};
use anyhow::Result;
use std::fmt::Write as _;
use std::time::Duration;

const NET: u8 = 201;

pub async fn run(args: &Args) -> Result<()> {
    let secs = if args.quick { 3.0 } else { 8.0 };
    let tmp = tempfile::tempdir()?;
    // The ledger cluster.
    let mut nodes = Vec::new();
    for i in 0..3 {
        let d = tmp.path().join(format!("ledger-{i}"));
        std::fs::create_dir_all(&d)?;
        let launch = ledger_launcher::cluster_node(&args.ledger_bin, &d, NET, i, 3)
            .args(&["--log-level", "error"]);
        nodes
            .push(ledger_launcher::NodeProcess::start(launch).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let seeds: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let seed_refs: Vec<&str> = seeds.iter().map(String::as_str).collect();
    // Wait until every node sees three members.
    let deadline = start_deadline();
    let client = loop {
        let c = ledger_client::cluster::ClusterClient::connect(&seed_refs).await;
        if let Ok(c) = c {
            if (0..64).all(|k| c.writer_addr(&format!("r-{k}")).is_some()) && c.member_count() == 3
            {
                break c;
            }
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the ledger cluster did not form"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ledger = LedgerCluster { client, nodes: 3 };
    // The NATS cluster.
    let nats_bin = args
        .nats_bin
        .clone()
        .unwrap_or_else(procs::default_nats_bin);
    let (major, minor) = procs::nats_version(&nats_bin)?;
    anyhow::ensure!(
        (major, minor) >= (2, 10),
        "nats-server {major}.{minor} cannot fsync every message; give --nats-bin 2.10 or later"
    );
    let dirs: Vec<_> = (0..3)
        .map(|i| {
            let d = tmp.path().join(format!("nats-{i}"));
            std::fs::create_dir_all(&d).map(|_| d)
        })
        .collect::<std::io::Result<_>>()?;
    let ports: Vec<u16> = (0..3).map(|_| procs::free_port()).collect();
    let routes: Vec<u16> = (0..3).map(|_| procs::free_port()).collect();
    let _nats_procs = procs::start_nats_cluster(&nats_bin, &dirs, &ports, &routes)?;
    let nats = Nats {
        port: ports[0],
        version: format!("{major}.{minor}"),
        sync_always: true,
        replicas: 3,
    };
    until_ok("NATS R3 stream", start_deadline(), || nats.create_stream()).await?;
    // Contexts exist before measuring (a new ledger context needs its whole replica set).
    for k in 0..64 {
        let mut w = ledger.writer(false).await?;
        w.append(&format!("r-{k}"), b"create").await?;
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Replicated durable appends, 256 B, {} cores, {} mode. Ledger: 3 nodes, R=3, ack=quorum, sync; client: `ClusterClient` (to each context's writer). NATS {}.{}: 3 servers, R3 file stream, `sync_interval: always`; client: async-nats, publish and await the ack.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if args.quick { "quick" } else { "full" },
        major,
        minor
    );
    let _ = writeln!(
        md,
        "| workload | system | appends/s | p50 | p99 |\n|---|---|---|---|---|"
    );
    let mut rates = Vec::new();
    for (writers, name) in [(64, "64 writers on 64 contexts"), (1, "1 writer")] {
        for sys in [&ledger as &dyn System, &nats as &dyn System] {
            let (rate, h) = append_run(sys, "r", writers, secs).await?;
            let line = format!(
                "| {name} | {} | {rate:.0} | {} | {} |",
                sys.label(),
                us(h.value_at_quantile(0.5)),
                us(h.value_at_quantile(0.99))
            );
            println!("{line}");
            let _ = writeln!(md, "{line}");
            rates.push((writers, rate, h.value_at_quantile(0.5)));
        }
    }
    let ratio = rates[0].1 / rates[1].1;
    let p50 = rates[2].2 as f64 / rates[3].2 as f64;
    let _ = writeln!(
        md,
        "\nLedger / JetStream R3: throughput at 64 writers **{ratio:.2}×** (target ≥ 3×); 1-writer p50 **{p50:.2}×** JetStream's (target ≤ 1×)."
    );
    println!("ledger/R3: throughput {ratio:.2}×, 1-writer p50 {p50:.2}×");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("replicated.md"), md)?;
    Ok(())
}
