//! A checker in the style of Jepsen's append-only log workload, shared by the cluster of
//! processes (`e2e_checker`) and the cluster in containers (`e2e_containers`). It knows nothing
//! of the implementation: it talks gRPC to node addresses and reads `cluster status`.
//!
//! [`Workload::start`] runs appenders (unique payloads to random contexts through random nodes)
//! and one watcher per context (reconnecting to a random node from its last sequence every
//! 1.5 s) and records a [`History`], while the caller's nemesis acts; [`Running::stop`] ends it.
//! [`final_logs`] waits until every replica of every context agrees and reads each replica's
//! own log; [`check`] compares the history with them and gives one table [`Row`]:
//! - **lost**: acknowledged appends that are not at their acknowledged sequence on every replica;
//! - **duplicated**: payloads stored twice in a log;
//! - **divergent served**: entries a watcher saw, or a replica holds, that are not the agreed log;
//! - **watchers with gaps**: watchers that saw a sequence other than the next one;
//! - the **longest window without an acknowledged append** while the workload ran.
//!
//! An append that failed or timed out is "failed/unknown": neither lost nor acknowledged (it may
//! or may not be in the log). Choices come from a seed, so a run can be repeated.

use super::cluster::status_at;
use ledger_proto::context::v1 as pb;
use ledger_proto::context::v1::context_service_client::ContextServiceClient;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// xorshift64: deterministic choices from a seed.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// A generator for stream `stream` of `seed` (distinct streams never share a state).
    pub fn new(seed: u64, stream: u64) -> Rng {
        Rng((seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ stream.wrapping_add(1)).max(1))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    /// A duration in `min..min + spread`.
    pub fn millis(&mut self, min: u64, spread: u64) -> Duration {
        Duration::from_millis(min + self.below(spread))
    }
}

/// A channel that connects on first use and gives up on a request after `timeout`.
pub fn lazy_channel(url: &str, timeout: Duration) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        .connect_lazy()
}

/// What the workload does.
#[derive(Clone, Debug)]
pub struct Workload {
    /// gRPC URLs of the nodes the clients use.
    pub urls: Vec<String>,
    pub contexts: Vec<String>,
    pub appenders: usize,
    pub seed: u64,
    /// Deadline of one append (then it is "unknown").
    pub timeout: Duration,
}

/// What the watcher of one context saw.
#[derive(Clone, Debug, Default)]
pub struct Watched {
    pub context: usize,
    /// (sequence, payload) in the order received.
    pub seen: Vec<(u64, String)>,
    /// The URL of the node that served each of `seen`.
    pub served_by: Vec<String>,
    /// (last sequence, the sequence that came next) where it was not last + 1.
    pub gaps: Vec<(u64, u64)>,
}

/// Everything the clients did and were told.
#[derive(Debug, Default)]
pub struct History {
    /// (context index, sequence) → payloads acknowledged at it (two is already a violation).
    pub acked: BTreeMap<(usize, u64), Vec<String>>,
    pub attempts: u64,
    /// Appends that failed or timed out: unknown outcome.
    pub failed: u64,
    /// When each acknowledgement arrived.
    pub ack_times: Vec<Instant>,
    pub started: Option<Instant>,
    pub ended: Option<Instant>,
    pub watched: Vec<Watched>,
}

impl History {
    fn record(&mut self, context: usize, payload: String, sequence: Option<u64>) {
        self.attempts += 1;
        match sequence {
            Some(seq) => {
                self.acked.entry((context, seq)).or_default().push(payload);
                self.ack_times.push(Instant::now());
            }
            None => self.failed += 1,
        }
    }

    /// The highest acknowledged sequence of `context` (0 if none).
    pub fn max_acked(&self, context: usize) -> u64 {
        self.acked
            .keys()
            .filter(|(c, _)| *c == context)
            .map(|(_, s)| *s)
            .max()
            .unwrap_or(0)
    }

    /// Acknowledged appends (a sequence acknowledged to two payloads counts twice).
    pub fn acknowledged(&self) -> usize {
        self.acked.values().map(Vec::len).sum()
    }
}

/// A workload in progress.
#[derive(Debug)]
pub struct Running {
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    appenders: Vec<JoinHandle<()>>,
    watchers: Vec<JoinHandle<Watched>>,
}

impl Workload {
    /// Appends one `genesis` entry to every context through the first node, retrying for up to
    /// 30 s (the cluster may still be settling).
    pub async fn create_contexts(&self) -> Result<(), String> {
        let mut client = ContextServiceClient::new(lazy_channel(&self.urls[0], self.timeout));
        let deadline = Instant::now() + Duration::from_secs(30);
        for ctx in &self.contexts {
            loop {
                let r = client
                    .append(pb::AppendRequest {
                        context_id: ctx.clone(),
                        key: "facts".into(),
                        payload: b"genesis".to_vec(),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("create context {ctx}: {e}"));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        Ok(())
    }

    /// Starts the appenders and watchers.
    pub fn start(&self) -> Running {
        let history = Arc::new(Mutex::new(History {
            started: Some(Instant::now()),
            ..History::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let appenders = (0..self.appenders)
            .map(|a| self.appender(a, history.clone(), stop.clone()))
            .collect();
        let watchers = (0..self.contexts.len())
            .map(|c| self.watcher(c, stop.clone()))
            .collect();
        Running {
            history,
            stop,
            appenders,
            watchers,
        }
    }

    fn appender(
        &self,
        a: usize,
        history: Arc<Mutex<History>>,
        stop: Arc<AtomicBool>,
    ) -> JoinHandle<()> {
        let mut rng = Rng::new(self.seed, a as u64);
        let clients: Vec<_> = self
            .urls
            .iter()
            .map(|u| ContextServiceClient::new(lazy_channel(u, self.timeout)))
            .collect();
        let contexts = self.contexts.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let c = rng.below(contexts.len() as u64) as usize;
                let via = rng.below(clients.len() as u64) as usize;
                let payload = format!("a{a}-{n}");
                n += 1;
                let r = clients[via]
                    .clone()
                    .append(pb::AppendRequest {
                        context_id: contexts[c].clone(),
                        key: "facts".into(),
                        payload: payload.clone().into_bytes(),
                        ..Default::default()
                    })
                    .await;
                let seq = r
                    .ok()
                    .and_then(|r| r.into_inner().entry)
                    .map(|e| e.sequence);
                history.lock().record(c, payload, seq);
                if seq.is_none() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    }

    fn watcher(&self, c: usize, stop: Arc<AtomicBool>) -> JoinHandle<Watched> {
        let mut rng = Rng::new(self.seed, 0x5151 + c as u64);
        let (urls, ctx, timeout) = (self.urls.clone(), self.contexts[c].clone(), self.timeout);
        tokio::spawn(async move {
            let mut w = Watched {
                context: c,
                ..Watched::default()
            };
            while !stop.load(Ordering::Relaxed) {
                let via = rng.below(urls.len() as u64) as usize;
                let from = w.seen.last().map_or(0, |(s, _)| *s);
                // No request timeout on the stream itself: it is read for 1.5 s below.
                let channel = tonic::transport::Endpoint::from_shared(urls[via].clone())
                    .expect("url")
                    .connect_timeout(Duration::from_millis(500))
                    .connect_lazy();
                let mut client = ContextServiceClient::new(channel);
                let opened = tokio::time::timeout(
                    timeout,
                    client.watch(pb::WatchRequest {
                        context_id: ctx.clone(),
                        from_sequence: from,
                        ..Default::default()
                    }),
                )
                .await;
                let Ok(Ok(resp)) = opened else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let mut stream = resp.into_inner();
                let until = Instant::now() + Duration::from_millis(1500);
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
                        Ok(Ok(Some(ev))) => {
                            if let Some(e) = ev.entry {
                                let last = w.seen.last().map_or(0, |(s, _)| *s);
                                if e.sequence != last + 1 {
                                    w.gaps.push((last, e.sequence));
                                }
                                w.seen.push((
                                    e.sequence,
                                    String::from_utf8_lossy(&e.payload).into_owned(),
                                ));
                                w.served_by.push(urls[via].clone());
                            }
                        }
                        Ok(_) => break,
                        Err(_) => {}
                    }
                }
            }
            w
        })
    }
}

impl Running {
    /// Records an append made outside the workload (e.g. on a node the nemesis cut off):
    /// `Some(sequence)` if it was acknowledged.
    pub fn record(&self, context: usize, payload: String, sequence: Option<u64>) {
        self.history.lock().record(context, payload, sequence);
    }

    /// Appends acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.history.lock().acknowledged()
    }

    /// Waits until at least `n` more appends are acknowledged (at most `limit`); false if not.
    pub async fn wait_for_acks(&self, n: usize, limit: Duration) -> bool {
        let target = self.acknowledged() + n;
        let deadline = Instant::now() + limit;
        while self.acknowledged() < target {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops the appenders and watchers and returns the history.
    pub async fn stop(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.appenders {
            t.await.expect("appender");
        }
        let mut watched = Vec::new();
        for w in self.watchers {
            watched.push(w.await.expect("watcher"));
        }
        let mut h = std::mem::take(&mut *self.history.lock());
        h.ended = Some(Instant::now());
        h.watched = watched;
        h
    }
}

/// Per context: (replica id, the replica's own log of (sequence, payload)).
pub type FinalLogs = Vec<Vec<(String, Vec<(u64, String)>)>>;

/// Waits (up to `limit`) until `cluster status` on `status_url` shows every replica of every
/// context at one size and root, at least the highest acknowledged sequence, then reads each
/// replica's own log (`url_of` gives the URL of a replica from its status entry). An error
/// names the context that did not converge and its last status.
pub async fn final_logs(
    status_url: &str,
    contexts: &[String],
    history: &History,
    url_of: impl Fn(&serde_json::Value) -> String,
    limit: Duration,
) -> Result<FinalLogs, String> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    for (c, ctx) in contexts.iter().enumerate() {
        let min = history.max_acked(c);
        let replicas = loop {
            let s = status_at(status_url, Some(ctx)).await;
            let replicas = s
                .as_ref()
                .ok()
                .and_then(|s| s["contexts"][0]["replicas"].as_array().cloned())
                .unwrap_or_default();
            let first = replicas.first();
            let settled = first.is_some_and(|f| {
                f["size"].as_u64().is_some_and(|n| n >= min)
                    && replicas
                        .iter()
                        .all(|r| r["size"] == f["size"] && r["root"] == f["root"])
            });
            if settled {
                break replicas;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{ctx} did not converge (at least {min} entries): {s:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut logs = Vec::new();
        for r in &replicas {
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            let log = read_local(&url_of(r), ctx)
                .await
                .map_err(|e| format!("read {ctx} on {id}: {e}"))?;
            logs.push((id, log));
        }
        out.push(logs);
    }
    Ok(out)
}

/// The log of `ctx` as the node at `url` holds it (not forwarded to another replica).
pub async fn read_local(url: &str, ctx: &str) -> Result<Vec<(u64, String)>, tonic::Status> {
    let mut client = ContextServiceClient::new(lazy_channel(url, Duration::from_secs(10)));
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let mut req = tonic::Request::new(pb::GetRequest {
            context_id: ctx.into(),
            after_sequence: after,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("x-ledger-forwarded", "1".parse().expect("ascii"));
        let page = client.get(req).await?.into_inner();
        for e in page.entries {
            out.push((e.sequence, String::from_utf8_lossy(&e.payload).into_owned()));
        }
        if !page.has_more {
            return Ok(out);
        }
        after = page.next_after_sequence;
    }
}

/// One line of the checker's table.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub scenario: String,
    pub seed: u64,
    pub operations: u64,
    pub acknowledged: usize,
    pub failed: u64,
    pub lost: usize,
    pub duplicated: usize,
    pub divergent: usize,
    pub watchers_with_gaps: usize,
    pub longest_without_ack: Duration,
    /// Free text: the faults injected, quarantines seen.
    pub notes: String,
    /// Details of every violation (and of anything that kept the check from running).
    pub problems: Vec<String>,
}

impl Row {
    pub const HEADER: &'static str = "| scenario | seed | operations | acknowledged | failed/unknown | lost | duplicated | divergent served | watchers with gaps | longest without ack | notes |\n|---|---|---|---|---|---|---|---|---|---|---|";

    /// A row that could not be checked (the scenario broke before the check).
    pub fn broken(scenario: &str, seed: u64, why: String) -> Row {
        Row {
            scenario: scenario.into(),
            seed,
            problems: vec![why],
            ..Row::default()
        }
    }

    pub fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} |",
            self.scenario,
            self.seed,
            self.operations,
            self.acknowledged,
            self.failed,
            self.lost,
            self.duplicated,
            self.divergent,
            self.watchers_with_gaps,
            self.longest_without_ack.as_secs_f64(),
            self.notes
        )
    }

    /// Whether every must-be-zero column is zero and nothing kept the check from running.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Compares `history` with the replicas' `logs` (from [`final_logs`]).
pub fn check(scenario: &str, seed: u64, history: &History, logs: &FinalLogs) -> Row {
    let mut row = Row {
        scenario: scenario.into(),
        seed,
        operations: history.attempts,
        acknowledged: history.acknowledged(),
        failed: history.failed,
        ..Row::default()
    };
    let empty = Vec::new();
    let agreed = |c: usize| logs[c].first().map_or(&empty, |(_, l)| l);
    // 1. Every acknowledged append, at its sequence, on every replica.
    for ((c, seq), payloads) in &history.acked {
        for p in payloads {
            let missing: Vec<&str> = logs[*c]
                .iter()
                .filter(|(_, log)| {
                    log.get((*seq as usize).wrapping_sub(1)) != Some(&(*seq, p.clone()))
                })
                .map(|(id, _)| id.as_str())
                .collect();
            if !missing.is_empty() {
                row.lost += 1;
                row.problems.push(format!(
                    "lost: {p} acknowledged at {c}/{seq}, not there on {missing:?}"
                ));
            }
        }
    }
    // 2. No payload twice; every replica holds the agreed log, gapless.
    for (c, replicas) in logs.iter().enumerate() {
        let reference = agreed(c);
        let mut twice = HashSet::new();
        for (id, log) in replicas {
            let mut payloads = HashSet::new();
            for (i, (s, p)) in log.iter().enumerate() {
                if !payloads.insert(p) && twice.insert(p.clone()) {
                    row.duplicated += 1;
                    row.problems
                        .push(format!("duplicated: {p} twice in {c} on {id}"));
                }
                if *s != i as u64 + 1 || reference.get(i) != Some(&(*s, p.clone())) {
                    row.divergent += 1;
                    row.problems.push(format!(
                        "divergent: {id} holds {c}/{s} = {p}, agreed {:?}",
                        reference.get(i)
                    ));
                }
            }
            if log.len() < reference.len() {
                row.divergent += reference.len() - log.len();
                row.problems.push(format!(
                    "divergent: {id} holds {} entries of {c}, agreed {}",
                    log.len(),
                    reference.len()
                ));
            }
        }
    }
    // 3. Watchers: gapless, and only entries of the agreed log.
    for w in &history.watched {
        if !w.gaps.is_empty() {
            row.watchers_with_gaps += 1;
            row.problems
                .push(format!("watcher of {} saw gaps {:?}", w.context, w.gaps));
        }
        for ((s, p), by) in w.seen.iter().zip(&w.served_by) {
            let agreed = agreed(w.context).get((*s as usize).wrapping_sub(1));
            if agreed != Some(&(*s, p.clone())) {
                row.divergent += 1;
                row.problems.push(format!(
                    "divergent: a watcher was served {}/{s} = {p} by {by}; the agreed log has {:?}",
                    w.context,
                    agreed.map(|(_, p)| p)
                ));
            }
        }
    }
    // 4. The longest stretch without an acknowledgement.
    if let (Some(start), Some(end)) = (history.started, history.ended) {
        let mut times = history.ack_times.clone();
        times.sort();
        let mut last = start;
        for t in times.into_iter().chain([end]) {
            row.longest_without_ack = row
                .longest_without_ack
                .max(t.saturating_duration_since(last));
            last = last.max(t);
        }
    }
    if row.acknowledged == 0 {
        row.problems.push("no append was acknowledged".into());
    }
    // Keep the report readable: the counts say how many.
    row.problems.truncate(20);
    row
}
