//! `ledger-bench`: the benchmarks behind `docs/BENCHMARKS.md`.
//!
//! Every figure is printed with a baseline measured in the same run on the same machine (these
//! machines are shared and noisy), so the ratio is the number to compare across runs.
//!
//! ```text
//! ledger-bench embedded [--quick] [--only NAME]   # store, Merkle, snapshot, reopen
//! ledger-bench node [--quick] [--watchers 1,100,1000] [--rate 10000]   # a node over gRPC
//! ledger-bench integrity [--quick]               # proofs over gRPC, signing, verification
//! ledger-bench cluster [--quick]                 # 3 nodes: throughput by ack level, lag, catch-up, failover
//! ledger-bench latency [--quick] [--buffered]    # one writer's append, step by step
//! ```
//!
//! # Layout
//! One module per benchmark (`embedded`, `node`, `integrity`, `cluster`, `latency`) and
//! `report` (the helpers they share: timing, the runtime, Markdown rows).

mod cluster;
mod embedded;
mod integrity;
mod latency;
mod node;
mod report;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "ledger-bench", about = "Converge Ledger benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The embedded ledger: appends, root recomputation, proofs, snapshots, reopen.
    Embedded(embedded::Args),
    /// A node over gRPC: Get of 10,000 entries, watch delivery latency.
    Node(node::Args),
    /// Signed tree heads and proofs: served over gRPC, signing and verification costs.
    Integrity(integrity::Args),
    /// A 3-node cluster: throughput by ack level, replication lag, catch-up, failover.
    Cluster(cluster::Args),
    /// One writer waiting for each append: the disk, the store, the embedded ledger, gRPC, the node.
    Latency(latency::Args),
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Embedded(args) => embedded::run(args),
        Cmd::Node(args) => node::run(args),
        Cmd::Integrity(args) => integrity::run(args),
        Cmd::Cluster(args) => cluster::run(args),
        Cmd::Latency(args) => latency::run(args),
    }
}
