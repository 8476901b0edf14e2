//! Benchmarks of the verifiable ledger (issue: signed tree heads and proofs): proofs served over
//! gRPC from a 1,000,000-entry context, the cost of signing a tree head, and the client's cost
//! to verify a proof.

use crate::node::NodeProcess;
use crate::report::{header, histogram, median_of, p50_p99, row, us_from_ns};
use ledger_client::LedgerClient;
use ledger_client::verify;
use ledger_core::checkpoint::{self, SigningKey};
use ledger_core::hash::sha256;
use ledger_core::{Entry, Metadata};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A smaller context (200,000 entries) and fewer samples.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    bin: crate::node::NodeBin,
}

pub fn run(args: Args) {
    let n: u64 = if args.quick { 200_000 } else { 1_000_000 };
    let samples = if args.quick { 2_000 } else { 10_000 };
    println!(
        "machine: {} cores; mode: {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if args.quick { "quick" } else { "full" }
    );
    header();
    sign_and_verify_costs();
    let rt = crate::report::runtime();
    let bin = args.bin.path();
    rt.block_on(served_proofs(&bin, n, samples));
}

fn sign_and_verify_costs() {
    let key = SigningKey::from_bytes(&[1; 32]);
    let root = sha256(b"root");
    let base = median_of(20_001, || sha256(b"converge-ledger/ctx\n1000000\nAAAA\n"));
    let sign = median_of(5_001, || {
        checkpoint::sign_tree_head(&key, "converge-ledger", "ctx", 1_000_000, root, 7, 9)
    });
    let head = checkpoint::sign_tree_head(&key, "converge-ledger", "ctx", 1_000_000, root, 7, 9);
    let vk = key.verifying_key();
    let verify_head = median_of(5_001, || head.verify(&vk).is_ok());
    let baseline = format!(
        "one SHA-256 of the checkpoint: {}",
        us_from_ns(base.as_nanos() as u64)
    );
    row(
        "sign a tree head (checkpoint text + Ed25519)",
        &us_from_ns(sign.as_nanos() as u64),
        "—",
        &baseline,
        &format!("{:.0}×", sign.as_secs_f64() / base.as_secs_f64()),
    );
    row(
        "verify a tree head (checkpoint rebuilt + Ed25519)",
        &us_from_ns(verify_head.as_nanos() as u64),
        "—",
        &baseline,
        &format!("{:.0}×", verify_head.as_secs_f64() / base.as_secs_f64()),
    );

    // An inclusion proof in a 1,000,000-leaf tree: 20 hashes.
    let n = 1_000_000u64;
    let leaves: Vec<_> = (0..n).map(|i| sha256(&i.to_be_bytes())).collect();
    let mut nodes = std::collections::HashMap::new();
    let mut f = ledger_core::Frontier::new();
    for l in &leaves {
        f.push(*l, |id, h| {
            nodes.insert(id, h);
        });
    }
    let idx = 123_456u64;
    let plan = ledger_core::merkle::inclusion_plan(idx, n).expect("plan");
    let path = plan.assemble(&plan.nodes().iter().map(|id| nodes[id]).collect::<Vec<_>>());
    let head = checkpoint::sign_tree_head(&key, "converge-ledger", "ctx", n, f.root(), 0, 0);
    let entry_free = median_of(20_001, || {
        verify::verify_inclusion(idx + 1, &leaves[idx as usize], &path, &head).is_ok()
    });
    let with_head = median_of(5_001, || {
        verify::verify_tree_head(&head, &vk).is_ok()
            && verify::verify_inclusion(idx + 1, &leaves[idx as usize], &path, &head).is_ok()
    });
    let e = Entry::new(
        "id".into(),
        "facts".into(),
        vec![0; 256],
        1,
        1,
        Metadata::new(),
        1,
    );
    let content = median_of(20_001, || e.compute_content_hash());
    row(
        &format!(
            "client: verify an inclusion proof in a {n}-entry tree ({} hashes)",
            path.len()
        ),
        &us_from_ns(entry_free.as_nanos() as u64),
        "old ledger: ~10 µs",
        &baseline,
        &format!("{:.0}×", entry_free.as_secs_f64() / base.as_secs_f64()),
    );
    row(
        "client: verify inclusion + the signed head",
        &us_from_ns(with_head.as_nanos() as u64),
        "—",
        &baseline,
        &format!("{:.0}×", with_head.as_secs_f64() / base.as_secs_f64()),
    );
    row(
        "client: recompute one entry's content hash (256 B payload)",
        &us_from_ns(content.as_nanos() as u64),
        "—",
        &baseline,
        &format!("{:.0}×", content.as_secs_f64() / base.as_secs_f64()),
    );
}

async fn served_proofs(bin: &std::path::Path, n: u64, samples: usize) {
    let node = NodeProcess::start(bin, &["--max-message-bytes", "1073741824"]);
    let client = LedgerClient::connect(&node.url).await.expect("connect");
    // Fill one context through Load of a generated snapshot (much faster than n appends).
    let t = Instant::now();
    let entries: Vec<Entry> = (1..=n)
        .map(|s| {
            Entry::new(
                format!("0190c2a0-0000-7000-8000-{s:012}"),
                "facts".into(),
                vec![(s % 251) as u8; 64],
                s,
                1_700_000_000_000_000_000 + s,
                Metadata::new(),
                s,
            )
        })
        .collect();
    let blob = ledger_core::snapshot::encode("big", 0, &entries).expect("encode");
    drop(entries);
    let loaded = client.load("big", blob, true).await.expect("load");
    assert_eq!(loaded.latest_sequence, n);
    let fill = t.elapsed();
    let (_, key) = client.public_key().await.expect("key");

    let channel = tonic::transport::Endpoint::from_shared(node.url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut base = histogram();
    for _ in 0..samples {
        let t = Instant::now();
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health");
        base.record(t.elapsed().as_nanos() as u64).ok();
    }
    let mut rng = crate::report::XorShift::new(0x9e37_79b9_7f4a_7c15);
    let mut next = move |m: u64| rng.next_in(m);
    let (mut incl, mut cons, mut head) = (histogram(), histogram(), histogram());
    for i in 0..samples {
        let seq = next(n);
        let t = Instant::now();
        let p = client
            .inclusion_proof("big", seq, 0)
            .await
            .expect("inclusion");
        incl.record(t.elapsed().as_nanos() as u64).ok();
        if i % 100 == 0 {
            verify::verify_inclusion(seq, &p.leaf_hash, &p.path, &p.tree_head).expect("verifies");
            verify::verify_tree_head(&p.tree_head, &key).expect("signed");
        }
        let first = next(n);
        let t = Instant::now();
        let c = client
            .consistency_proof("big", first, 0)
            .await
            .expect("consistency");
        cons.record(t.elapsed().as_nanos() as u64).ok();
        if i % 100 == 0 {
            verify::verify_consistency(&c.first, &c.second, &c.path, &key).expect("verifies");
        }
        let t = Instant::now();
        client.tree_head("big").await.expect("head");
        head.record(t.elapsed().as_nanos() as u64).ok();
    }
    let baseline = format!("empty gRPC round trip (health check): {}", p50_p99(&base));
    let label = format!("{n}-entry context (loaded in {:.1} s)", fill.as_secs_f64());
    for (name, h) in [
        (
            format!("GetInclusionProof over gRPC (proof + signed head), {label}"),
            &incl,
        ),
        (
            format!("GetConsistencyProof over gRPC (proof + two signed heads), {label}"),
            &cons,
        ),
        (format!("GetTreeHead over gRPC, {label}"), &head),
    ] {
        row(
            &name,
            &crate::report::p50_p99(h),
            "p99 ≤ 1 ms",
            &baseline,
            &format!(
                "{:.1}× empty round trip (p99)",
                h.value_at_quantile(0.99) as f64 / base.value_at_quantile(0.99) as f64
            ),
        );
    }
}
