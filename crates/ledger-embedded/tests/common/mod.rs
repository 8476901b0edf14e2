//! Helpers shared by the embedded ledger's test files.
#![allow(dead_code)]

use ledger_core::Metadata;
use ledger_embedded::{Ledger, LedgerConfig};
use ledger_storage::MemoryStore;
use std::sync::Arc;

/// A ledger on the in-memory reference store.
pub fn memory_ledger() -> Ledger {
    Ledger::with_store(Arc::new(MemoryStore::new()), LedgerConfig::default())
}

/// Appends `n` entries with key `facts` and payload `"<ctx>-<i>"`.
pub async fn append_n(l: &Ledger, ctx: &str, n: u64) {
    for i in 0..n {
        append_one(l, ctx, i).await;
    }
}

/// Appends one entry with key `facts` and payload `"<ctx>-<i>"`; returns it as stored.
pub async fn append_one(l: &Ledger, ctx: &str, i: u64) -> Arc<ledger_core::Entry> {
    l.append(
        ctx,
        "facts",
        format!("{ctx}-{i}").into_bytes(),
        Metadata::new(),
        None,
    )
    .await
    .unwrap()
}

/// A ledger on RocksDB in `dir` with default settings.
pub fn rocks_ledger(dir: &std::path::Path) -> Ledger {
    Ledger::open(dir, LedgerConfig::default()).unwrap()
}

/// A memory store whose quarantines and replication-state writes fail on demand (everything
/// else works), and which tracks what would be durable on a disk: a `commit` is durable when it
/// returns, a `commit_deferred` once a later `sync` returns.
#[derive(Debug, Default)]
pub struct FaultyStore {
    pub inner: MemoryStore,
    pub fail_quarantine: std::sync::atomic::AtomicBool,
    pub fail_replication: std::sync::atomic::AtomicBool,
    /// Each context's durable size.
    durable: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Sizes written by deferred commits, durable at the next sync.
    deferred: std::sync::Mutex<Vec<(String, u64)>>,
}

impl FaultyStore {
    /// The size of `context_id` that a crash of the machine would keep.
    pub fn durable_size(&self, context_id: &str) -> u64 {
        self.durable
            .lock()
            .unwrap()
            .get(context_id)
            .copied()
            .unwrap_or(0)
    }

    fn made_durable(&self, sizes: impl IntoIterator<Item = (String, u64)>) {
        let mut durable = self.durable.lock().unwrap();
        for (ctx, size) in sizes {
            let d = durable.entry(ctx).or_default();
            *d = (*d).max(size);
        }
    }
}

fn sizes_of(b: &[ledger_storage::ContextCommit]) -> Vec<(String, u64)> {
    b.iter()
        .map(|c| (c.head.context_id.clone(), c.head.size()))
        .collect()
}

fn injected() -> ledger_storage::StorageError {
    ledger_storage::StorageError::Io(std::io::Error::other("injected disk failure"))
}

impl ledger_storage::LogStore for FaultyStore {
    fn commit(
        &self,
        b: &[ledger_storage::ContextCommit],
    ) -> Result<(), ledger_storage::StorageError> {
        self.inner.commit(b)?;
        self.made_durable(sizes_of(b));
        Ok(())
    }
    fn commit_deferred(
        &self,
        b: &[ledger_storage::ContextCommit],
    ) -> Result<(), ledger_storage::StorageError> {
        self.inner.commit(b)?;
        self.deferred.lock().unwrap().extend(sizes_of(b));
        Ok(())
    }
    fn stage(&self, c: &ledger_storage::ContextCommit) -> Result<(), ledger_storage::StorageError> {
        self.inner.stage(c)
    }
    fn idempotency(
        &self,
        c: &str,
        k: &str,
    ) -> Result<Option<ledger_storage::IdempotencyRecord>, ledger_storage::StorageError> {
        self.inner.idempotency(c, k)
    }
    fn idempotency_count(&self, c: &str) -> Result<u64, ledger_storage::StorageError> {
        self.inner.idempotency_count(c)
    }
    fn head(
        &self,
        c: &str,
    ) -> Result<Option<ledger_storage::ContextHead>, ledger_storage::StorageError> {
        self.inner.head(c)
    }
    fn read(
        &self,
        c: &str,
        q: &ledger_storage::ReadQuery,
    ) -> Result<ledger_storage::ReadResult, ledger_storage::StorageError> {
        self.inner.read(c, q)
    }
    fn nodes(
        &self,
        c: &str,
        ids: &[ledger_core::TreeNodeId],
    ) -> Result<Vec<ledger_core::Hash>, ledger_storage::StorageError> {
        self.inner.nodes(c, ids)
    }
    fn list_contexts(
        &self,
        a: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, ledger_storage::StorageError> {
        self.inner.list_contexts(a, n)
    }
    fn sync(&self) -> Result<(), ledger_storage::StorageError> {
        let written = std::mem::take(&mut *self.deferred.lock().unwrap());
        self.inner.sync()?;
        self.made_durable(written);
        Ok(())
    }
    fn replication_state(&self, c: &str) -> Result<Option<Vec<u8>>, ledger_storage::StorageError> {
        self.inner.replication_state(c)
    }
    fn save_replication_state(
        &self,
        c: &str,
        s: &[u8],
    ) -> Result<(), ledger_storage::StorageError> {
        if self
            .fail_replication
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(injected());
        }
        self.inner.save_replication_state(c, s)
    }
    fn quarantine(
        &self,
        c: &str,
        from: u64,
        reason: &str,
        at: u64,
    ) -> Result<Option<ledger_storage::Quarantined>, ledger_storage::StorageError> {
        if self
            .fail_quarantine
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(injected());
        }
        self.inner.quarantine(c, from, reason, at)
    }
    fn quarantines(
        &self,
        c: Option<&str>,
    ) -> Result<Vec<ledger_storage::QuarantineInfo>, ledger_storage::StorageError> {
        self.inner.quarantines(c)
    }
    fn quarantined_entries(
        &self,
        c: &str,
        id: u64,
    ) -> Result<Option<Vec<ledger_core::Entry>>, ledger_storage::StorageError> {
        self.inner.quarantined_entries(c, id)
    }
}

/// Runs this test binary's ignored test `child_test` as a child process, with `env` set to
/// `dir`, reads its standard output until it has printed `acks` lines starting with `ACK `,
/// then SIGKILLs it. Returns those lines (fewer only if the child ended first).
pub fn run_child_until_acks(
    child_test: &str,
    env: &str,
    dir: &std::path::Path,
    acks: usize,
) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            child_test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("ACK ") {
                lines.push(line);
                if lines.len() == acks {
                    break;
                }
            }
        }
        lines
    });
    let lines = reader.join().unwrap();
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    lines
}

/// The child side of [`run_child_until_acks`]: when `env` names a data dir (the parent set
/// it), opens a ledger there, runs `writers` tasks, each made by `writer(index, ledger,
/// sender)`, and prints every line they send on standard output, flushed at once (the parent
/// kills this process mid-stream). In an ordinary test run (`env` unset) it does nothing.
pub fn run_child<F, Fut>(env: &str, writers: usize, writer: F)
where
    F: Fn(usize, Ledger, tokio::sync::mpsc::UnboundedSender<String>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use std::io::Write;
    let Ok(dir) = std::env::var(env) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let ledger = Ledger::open(&dir, LedgerConfig::default()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for w in 0..writers {
            tokio::spawn(writer(w, ledger.clone(), tx.clone()));
        }
        drop(tx);
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            out.write_all(line.as_bytes()).unwrap();
            out.flush().unwrap();
        }
    });
}
