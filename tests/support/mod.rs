//! Test support: run the real `converge-ledger` binary as a user would and talk gRPC to it.
#![allow(dead_code)]

use ledger_client::LedgerClient;
pub mod admin;
pub mod checker;
pub mod cluster;
pub mod containers;

pub use ledger_launcher::{Launch, NodeProcess};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_converge-ledger");

/// A running node process (the shared launcher's), with a gRPC client at hand.
pub struct Node(pub NodeProcess);

impl std::ops::Deref for Node {
    type Target = NodeProcess;
    fn deref(&self) -> &NodeProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut NodeProcess {
        &mut self.0
    }
}

impl Node {
    /// Starts a node on 127.0.0.1, any free port, data in `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Node {
        Self::start_with_env(dir, args, &[])
    }

    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Node {
        Self::launch(Launch::new(BIN, dir).args(args).envs(env))
    }

    /// Starts `converge-ledger serve` with exactly these arguments and environment.
    pub fn start_bare(args: &[&str], env: &[(&str, &str)]) -> Node {
        Self::launch(Launch::bare(BIN).args(args).envs(env))
    }

    pub fn launch(launch: Launch) -> Node {
        Node(NodeProcess::start(launch).unwrap_or_else(|e| panic!("{e}")))
    }

    /// A plain gRPC channel to the node (for generated clients of other services).
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.url.clone())
            .expect("node url")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn client(&self) -> LedgerClient {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match LedgerClient::connect(&self.url).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("cannot connect: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// A fresh data dir.
/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Environment variables that would leak a developer's settings into a test node or CLI.
fn clean(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("LEDGER_") || k == "GRPC_PORT" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
}

/// Runs the CLI with arguments; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    clean(&mut cmd);
    let out = cmd.args(args).output().expect("run converge-ledger");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

pub fn tmp_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Appends `n` entries with key `facts` and payload `"<ctx>-<i>"`.
pub async fn append_n(c: &LedgerClient, ctx: &str, n: usize) {
    for i in 0..n {
        c.append(
            ctx,
            "facts",
            format!("{ctx}-{i}").into_bytes(),
            ledger_core::Metadata::new(),
            None,
        )
        .await
        .unwrap();
    }
}

/// Acknowledged appends: (context, sequence) → content hash.
pub type Acks = std::collections::HashMap<(String, u64), ledger_core::Hash>;

/// Runs `writers` tasks that append `"<writer>/<i>"` payloads to contexts `k0`, `k1`, …
/// (writer `w` on `k{w % contexts}`) through `append` until an append fails, SIGKILLs `node`
/// once `kill_after` appends are acknowledged, and returns every acknowledgement received.
pub async fn append_until_killed<A, F>(
    node: &mut Node,
    writers: usize,
    contexts: usize,
    kill_after: usize,
    append: A,
) -> Acks
where
    A: Fn(String, Vec<u8>) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = Result<ledger_core::Entry, ledger_client::ClientError>> + Send,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, u64, ledger_core::Hash)>();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (append, tx) = (append.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let ctx = format!("k{}", w % contexts);
            for i in 0u64.. {
                match append(ctx.clone(), format!("{w}/{i}").into_bytes()).await {
                    Ok(e) => {
                        if tx.send((ctx.clone(), e.sequence, e.content_hash)).is_err() {
                            return;
                        }
                    }
                    Err(_) => return, // the node died under us
                }
            }
        }));
    }
    drop(tx);
    let mut acked = Acks::new();
    while acked.len() < kill_after {
        let (ctx, seq, h) = rx.recv().await.unwrap();
        acked.insert((ctx, seq), h);
    }
    node.kill();
    for t in tasks {
        let _ = t.await;
    }
    while let Ok((ctx, seq, h)) = rx.try_recv() {
        acked.insert((ctx, seq), h);
    }
    acked
}

/// Reads `ctx` back and asserts it is gapless and holds every acknowledged entry of it
/// unchanged; returns its entries.
pub async fn assert_acknowledged_kept(
    c: &LedgerClient,
    ctx: &str,
    acked: &Acks,
) -> Vec<ledger_core::Entry> {
    let entries = c.get_all(ctx, "", 0).await.unwrap();
    assert!(
        entries
            .iter()
            .map(|e| e.sequence)
            .eq(1..=entries.len() as u64),
        "{ctx} gapless"
    );
    let stored: std::collections::HashMap<u64, ledger_core::Hash> = entries
        .iter()
        .map(|e| (e.sequence, e.content_hash))
        .collect();
    for ((actx, seq), h) in acked {
        if actx == ctx {
            assert_eq!(
                stored.get(seq),
                Some(h),
                "acknowledged {ctx}/{seq} survived SIGKILL"
            );
        }
    }
    entries
}
