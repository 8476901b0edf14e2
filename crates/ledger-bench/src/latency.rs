//! One writer waiting for each acknowledgement (issue 12): where an append's time goes, step by
//! step, each step measured in the same run and interleaved with the others (rounds of every
//! step in turn), so the machine's noise falls on all of them alike.
//!
//! Steps, from the floor up:
//! 1. `write` + `fdatasync` of one entry's bytes at the end of a preallocated file: the disk;
//! 2. a raw RocksDB put with `sync = true`: the store;
//! 3. an embedded `Ledger::append` (sequencing, hashing, group commit, fsync, answer): the
//!    ledger without the network;
//! 4. an empty gRPC round trip (health check) to the node: the network and gRPC;
//! 5. unary `Append` and 6. an append on the `AppendPipeline` stream, to the node (a separate
//!    process, the real binary): everything.
//!
//! The node's own cost is roughly (5 or 6) − 4 − (3 − the ledger's in-process hand-offs).

use crate::node::NodeProcess;
use crate::report::{header, histogram, p50_p99, row};
use hdrhistogram::Histogram;
use ledger_client::LedgerClient;
use ledger_core::Metadata;
use ledger_embedded::{Durability, Ledger, LedgerConfig, RocksConfig};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shorter runs.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    bin: crate::node::NodeBin,
    /// Measure the fast setting (`durability = buffered`, no fsync) instead of `sync`.
    #[arg(long)]
    buffered: bool,
    /// Only these steps (numbers 1-6), e.g. `--steps 5,6` to profile the node alone.
    #[arg(long, value_delimiter = ',')]
    steps: Vec<usize>,
    /// Appends per step and round (default 1,000; 300 with --quick).
    #[arg(long)]
    per_round: Option<usize>,
}

const PAYLOAD: usize = 256;
/// Bytes of one stored entry (payload, hash, ids, key, head row): what the disk step writes.
const ENTRY_BYTES: usize = 400;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Fdatasync,
    RocksPut,
    Embedded,
    EmptyRpc,
    Unary,
    Pipelined,
}

impl Step {
    const ALL: [Step; 6] = [
        Step::Fdatasync,
        Step::RocksPut,
        Step::Embedded,
        Step::EmptyRpc,
        Step::Unary,
        Step::Pipelined,
    ];

    fn name(self, sync: bool) -> &'static str {
        match (self, sync) {
            (Step::Fdatasync, _) => "1. write + fdatasync, preallocated file",
            (Step::RocksPut, true) => "2. raw RocksDB put, sync = true",
            (Step::RocksPut, false) => "2. raw RocksDB put, sync = false",
            (Step::Embedded, _) => "3. embedded Ledger::append",
            (Step::EmptyRpc, _) => "4. empty gRPC round trip (health check)",
            (Step::Unary, _) => "5. node: unary Append",
            (Step::Pipelined, _) => "6. node: AppendPipeline stream",
        }
    }
}

/// The raw disk step: entry-sized writes appended into a file preallocated (written with zeros
/// and synced) beforehand, each followed by `fdatasync`, as a WAL that overwrites its space.
struct RawFile {
    file: std::fs::File,
    offset: u64,
}

const RAW_FILE_BYTES: u64 = 64 << 20;

impl RawFile {
    fn new(dir: &std::path::Path) -> RawFile {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("raw.log"))
            .expect("create the raw file");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(RAW_FILE_BYTES >> 20) {
            file.write_all(&zeros).expect("preallocate");
        }
        file.sync_all().expect("sync the preallocated file");
        RawFile { file, offset: 0 }
    }

    fn append(&mut self) {
        let bytes = [5u8; ENTRY_BYTES];
        if self.offset + ENTRY_BYTES as u64 > RAW_FILE_BYTES {
            self.offset = 0;
        }
        self.file
            .write_all_at(&bytes, self.offset)
            .expect("raw write");
        self.file.sync_data().expect("fdatasync");
        self.offset += ENTRY_BYTES as u64;
    }
}

pub fn run(args: Args) {
    let rt = crate::report::runtime();
    let bin = args.bin.path();
    let sync = !args.buffered;
    let (rounds, per_round) = if args.quick { (5, 300) } else { (10, 1000) };
    let per_round = args.per_round.unwrap_or(per_round);
    let chosen = |i: usize| args.steps.is_empty() || args.steps.contains(&(i + 1));
    println!(
        "machine: {} cores; node: {}; durability: {}; {rounds} rounds × {per_round} appends per step\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bin.display(),
        if sync { "sync" } else { "buffered" },
    );
    rt.block_on(async {
        let durability = if sync { "sync" } else { "buffered" };
        let node = NodeProcess::start(&bin, &["--durability", durability]);
        let client = LedgerClient::connect(&node.url).await.expect("connect");
        let pipeline = client.pipeline();
        let mut health = {
            let channel = tonic::transport::Endpoint::from_shared(node.url.clone())
                .expect("url")
                .connect()
                .await
                .expect("connect");
            tonic_health::pb::health_client::HealthClient::new(channel)
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let mut raw = RawFile::new(dir.path());
        let rocks = rocksdb::DB::open_default(dir.path().join("rocks")).expect("open raw RocksDB");
        let mut rocks_wo = rocksdb::WriteOptions::default();
        rocks_wo.set_sync(sync);
        let ledger = Ledger::open(
            dir.path().join("ledger"),
            LedgerConfig {
                rocks: RocksConfig {
                    durability: if sync {
                        Durability::Sync
                    } else {
                        Durability::Buffered
                    },
                    ..RocksConfig::default()
                },
                ..LedgerConfig::default()
            },
        )
        .expect("open the embedded ledger");

        let mut hists: Vec<Histogram<u64>> = Step::ALL.iter().map(|_| histogram()).collect();
        let mut n = 0u64;
        // Round 0 warms every path up and is not recorded.
        for round in 0..=rounds {
            for (i, step) in Step::ALL.iter().enumerate().filter(|(i, _)| chosen(*i)) {
                for _ in 0..per_round {
                    n += 1;
                    let payload = vec![(n % 251) as u8; PAYLOAD];
                    let t = Instant::now();
                    match step {
                        Step::Fdatasync => raw.append(),
                        Step::RocksPut => rocks
                            .put_opt(n.to_be_bytes(), &payload, &rocks_wo)
                            .expect("raw put"),
                        Step::Embedded => {
                            ledger
                                .append("latency", "facts", payload, Metadata::new(), None)
                                .await
                                .expect("embedded append");
                        }
                        Step::EmptyRpc => {
                            health
                                .check(tonic_health::pb::HealthCheckRequest {
                                    service: String::new(),
                                })
                                .await
                                .expect("health check");
                        }
                        Step::Unary => {
                            client
                                .append("latency-u", "facts", payload, Metadata::new(), None)
                                .await
                                .expect("unary append");
                        }
                        Step::Pipelined => {
                            pipeline
                                .append("latency-p", "facts", payload, Metadata::new(), None)
                                .await
                                .expect("pipelined append");
                        }
                    }
                    if round > 0 {
                        hists[i].record(t.elapsed().as_nanos() as u64).ok();
                    }
                }
            }
        }
        ledger.close().await;
        header();
        let floor = hists[0].value_at_quantile(0.5) as f64;
        for (i, step) in Step::ALL.iter().enumerate().filter(|(i, _)| chosen(*i)) {
            let p50 = hists[i].value_at_quantile(0.5) as f64;
            let (baseline, ratio) = if chosen(0) && floor > 0.0 {
                (
                    Step::Fdatasync.name(sync),
                    format!("{:.2}× step 1 (p50)", p50 / floor),
                )
            } else {
                ("step 1 not measured", "—".to_owned())
            };
            row(step.name(sync), &p50_p99(&hists[i]), "—", baseline, &ratio);
        }
    });
}
