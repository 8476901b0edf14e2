//! Appends and reads against a cluster, retried through failovers: every append carries an
//! idempotency key (so a retry after a timeout or a writer's death is stored once) and the
//! highest Lamport clock this process has read or written anywhere (`received_lamport_clock`,
//! so the ledger's Lamport order follows causality across contexts).

use crate::Error;
use ledger_client::cluster::{ClusterClient, ClusterPipeline};
use ledger_client::{AppendPipeline, ClientError, LedgerClient, retry::is_retryable};
use ledger_core::{Entry, NewEntry};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long appends and reads keep retrying a ledger that does not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySettings {
    /// Deadline of one attempt.
    pub attempt_timeout: Duration,
    /// Give up after this long in all (a writer failover takes a few seconds).
    pub give_up_after: Duration,
    /// First wait between attempts (doubled up to 1 s).
    pub initial_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            attempt_timeout: Duration::from_secs(5),
            give_up_after: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(50),
        }
    }
}

/// What a keyed append ended as.
#[derive(Debug)]
pub enum Appended {
    /// Stored now, or stored before under the same idempotency key (answered with that entry).
    Stored(Entry),
    /// The key was used before with other content (`ALREADY_EXISTS`): an entry with this
    /// identity is in the ledger already.
    AlreadyThere,
}

/// Where requests go: a cluster (appends to each context's writer), or one node that serves
/// no cluster API (a node started without gossip).
#[derive(Clone, Debug)]
enum Target {
    Cluster(Box<(ClusterClient, ClusterPipeline)>),
    Single(Box<(LedgerClient, AppendPipeline)>),
}

/// A cluster client (or a single node's), its pipelined streams, the Lamport clock seen, the
/// retry settings.
#[derive(Clone, Debug)]
pub struct Ledger {
    target: Target,
    lamport: Arc<AtomicU64>,
    retry: RetrySettings,
}

fn timeout_error() -> ClientError {
    ClientError::Status(tonic_status_deadline())
}

fn tonic_status_deadline() -> tonic::Status {
    tonic::Status::deadline_exceeded("attempt timed out")
}

impl Ledger {
    /// Connects through `seeds` (any cluster members, or one node that is not in a cluster).
    pub async fn connect(seeds: &[&str], retry: RetrySettings) -> Result<Ledger, Error> {
        let deadline = Instant::now() + retry.give_up_after;
        let mut backoff = retry.initial_backoff;
        loop {
            match ClusterClient::connect(seeds).await {
                Ok(cluster) => return Ok(Ledger::from_cluster(cluster, retry)),
                // A node outside any cluster serves no ClusterService: talk to it directly.
                Err(e) if e.code() == Some(tonic::Code::Unimplemented) => {
                    let addr = seeds.first().copied().unwrap_or_default();
                    let client = LedgerClient::connect(addr)
                        .await
                        .map_err(|e| Error::client(addr, e))?;
                    return Ok(Ledger {
                        target: Target::Single(Box::new((client.clone(), client.pipeline()))),
                        lamport: Arc::default(),
                        retry,
                    });
                }
                Err(e) if is_retryable(&e) && Instant::now() + backoff < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(Error::client(&seeds.join(","), e)),
            }
        }
    }

    /// Over an existing cluster client.
    pub fn from_cluster(cluster: ClusterClient, retry: RetrySettings) -> Ledger {
        Ledger {
            target: Target::Cluster(Box::new((cluster.clone(), cluster.pipeline()))),
            lamport: Arc::default(),
            retry,
        }
    }

    /// The cluster client (`None` for a single node outside any cluster).
    pub fn cluster(&self) -> Option<&ClusterClient> {
        match &self.target {
            Target::Cluster(c) => Some(&c.0),
            Target::Single(_) => None,
        }
    }

    async fn reader(&self, context: &str) -> Result<LedgerClient, ClientError> {
        match &self.target {
            Target::Cluster(c) => c.0.reader(context).await,
            Target::Single(s) => Ok(s.0.clone()),
        }
    }

    async fn send(&self, entry: NewEntry) -> Result<Entry, ClientError> {
        match &self.target {
            Target::Cluster(c) => c.1.append_entry(entry).await,
            Target::Single(s) => s.1.append_entry(entry).await,
        }
    }

    /// The highest Lamport clock this handle (and its clones) has read or written.
    pub fn lamport_seen(&self) -> u64 {
        self.lamport.load(Ordering::Relaxed)
    }

    /// Records a Lamport clock learnt elsewhere (a fact taken from another context).
    pub fn observe_lamport(&self, clock: u64) {
        self.lamport.fetch_max(clock, Ordering::Relaxed);
    }

    /// Appends `entry` (which must carry an idempotency key) through its context's writer,
    /// retrying transient failures with the same key until the retry budget is spent.
    pub async fn append(&self, mut entry: NewEntry) -> Result<Appended, Error> {
        debug_assert!(entry.idempotency_key.is_some());
        let seen = self.lamport_seen();
        if seen > 0 {
            entry.received_lamport_clock =
                Some(entry.received_lamport_clock.unwrap_or(0).max(seen));
        }
        let context = entry.context_id.clone();
        let r = self
            .retrying(&context, || {
                let e = entry.clone();
                async move { self.send(e).await }
            })
            .await;
        match r {
            Ok(e) => {
                self.observe_lamport(e.lamport_clock);
                Ok(Appended::Stored(e))
            }
            Err(Error::Refused { source, .. })
                if source.code() == Some(tonic::Code::AlreadyExists) =>
            {
                Ok(Appended::AlreadyThere)
            }
            Err(e) => Err(e),
        }
    }

    /// Every entry of `context` (all keys, or `key`), verified: the content hashes recomputed,
    /// gapless, and the prefix covered by the node's signed tree head equal to its root under
    /// the node's key (pinned by the caller, or the serving node's own when `None`). A context
    /// that does not exist reads as empty.
    pub async fn read_verified(
        &self,
        context: &str,
        trusted: Option<&ledger_core::checkpoint::VerifyingKey>,
    ) -> Result<Vec<Entry>, Error> {
        let (head, key, entries) = self
            .retrying(context, || async move {
                let c = self.reader(context).await?;
                let head = match c.tree_head(context).await {
                    Ok(h) => Some(h),
                    Err(ClientError::Status(s)) if s.code() == tonic::Code::NotFound => None,
                    Err(e) => return Err(e),
                };
                let key = match (&head, trusted) {
                    (Some(_), None) => Some(c.public_key().await?.1),
                    _ => None,
                };
                let entries = match c.get_all(context, "", 0).await {
                    Ok(e) => e,
                    Err(ClientError::Status(s)) if s.code() == tonic::Code::NotFound => Vec::new(),
                    Err(e) => return Err(e),
                };
                Ok((head, key, entries))
            })
            .await?;
        let fail = |reason: String| Error::LedgerVerification {
            context: context.to_owned(),
            reason,
        };
        if let Some(head) = head.filter(|h| h.tree_size > 0) {
            let key = trusted
                .or(key.as_ref())
                .expect("a key when there is a head");
            ledger_client::verify::verify_tree_head(&head, key).map_err(|e| fail(e.to_string()))?;
            let n = usize::try_from(head.tree_size).unwrap_or(usize::MAX);
            if entries.len() < n {
                return Err(fail(format!(
                    "the signed head covers {} entries, the read returned {}",
                    head.tree_size,
                    entries.len()
                )));
            }
            let root = ledger_client::verify::root_of_entries(&entries[..n])
                .map_err(|e| fail(e.to_string()))?;
            if root != head.root {
                return Err(fail(format!(
                    "root of the entries {} differs from the signed head's {}",
                    root.to_hex(),
                    head.root.to_hex()
                )));
            }
        }
        // Every entry (beyond the head too): content hashes and sequence continuity.
        ledger_client::verify::root_of_entries(&entries).map_err(|e| fail(e.to_string()))?;
        if let Some(last) = entries.iter().map(|e| e.lamport_clock).max() {
            self.observe_lamport(last);
        }
        Ok(entries)
    }

    /// Entries of `context` under `key` (its key index), unverified, after `after`.
    pub async fn read_key(&self, context: &str, key: &str) -> Result<Vec<Entry>, Error> {
        let entries = self
            .retrying(context, || async move {
                let c = self.reader(context).await?;
                match c.get_all(context, key, 0).await {
                    Ok(e) => Ok(e),
                    Err(ClientError::Status(s)) if s.code() == tonic::Code::NotFound => {
                        Ok(Vec::new())
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        for e in &entries {
            let computed = e.compute_content_hash();
            if computed != e.content_hash {
                return Err(Error::LedgerVerification {
                    context: context.to_owned(),
                    reason: format!("entry {}: content hash does not match", e.sequence),
                });
            }
        }
        if let Some(last) = entries.iter().map(|e| e.lamport_clock).max() {
            self.observe_lamport(last);
        }
        Ok(entries)
    }

    async fn retrying<T, F, Fut>(&self, context: &str, op: F) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + self.retry.give_up_after;
        let mut backoff = self.retry.initial_backoff;
        loop {
            let r = match tokio::time::timeout(self.retry.attempt_timeout, op()).await {
                Ok(r) => r,
                Err(_) => Err(timeout_error()),
            };
            match r {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) && Instant::now() + backoff < deadline => {
                    // The writer may have died: re-read the membership before the next try.
                    if let Target::Cluster(c) = &self.target {
                        let _ =
                            tokio::time::timeout(self.retry.attempt_timeout, c.0.refresh()).await;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(Error::client(context, e)),
            }
        }
    }
}

/// Failures worth another try: the retryable ones, and a writer not (yet) chosen or fenced.
fn transient(e: &ClientError) -> bool {
    use tonic::Code;
    is_retryable(e)
        || matches!(
            e.code(),
            Some(Code::FailedPrecondition) | Some(Code::ResourceExhausted)
        )
}
