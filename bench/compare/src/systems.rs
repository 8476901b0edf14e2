//! The systems compared, each through its ordinary Rust client, behind one interface.

use anyhow::{Context, Result, anyhow};
use async_trait::async_trait;
use futures::StreamExt;
use ledger_client::{AppendPipeline, LedgerClient};
use ledger_core::Metadata;
use std::collections::HashMap;

/// Appends to contexts; one per concurrent writer.
#[async_trait]
pub trait Writer: Send {
    async fn append(&mut self, ctx: &str, payload: &[u8]) -> Result<()>;
}

/// Receives the payloads appended to one context after it subscribed.
#[async_trait]
pub trait Subscriber: Send {
    async fn next(&mut self) -> Result<Vec<u8>>;
}

#[async_trait]
pub trait System: Send + Sync {
    /// How this system is set up, for the results table.
    fn label(&self) -> String;
    /// How appends are sent, when a system has more than one way.
    fn append_how(&self) -> &'static str {
        ""
    }
    /// A writer; `notify` when subscribers must be told (only PostgreSQL needs it explicitly).
    async fn writer(&self, notify: bool) -> Result<Box<dyn Writer>>;
    /// Fills `ctx` with `n` entries of `payload` quickly (set-up only, not measured).
    async fn fill(&self, ctx: &str, n: u64, payload: &[u8]) -> Result<()>;
    /// Reads every entry of `ctx` from the start; returns how many.
    async fn read_all(&self, ctx: &str) -> Result<u64>;
    /// Reads the first entries of `ctx` (the restart probe).
    async fn read_first(&self, ctx: &str) -> Result<u64>;
    /// Subscribes to entries appended to `ctx` from now on.
    async fn subscriber(&self, ctx: &str) -> Result<Box<dyn Subscriber>>;
}

// ---------------------------------------------------------------------------------------------
// Converge Ledger over gRPC

pub struct Ledger {
    pub url: String,
    pub durability: String,
    /// Appends on the pipelined stream (`converge.ledger.v1.AppendPipeline`) instead of one
    /// unary `ContextService/Append` call each.
    pub pipelined: bool,
    /// Writers share these HTTP/2 connections (gRPC multiplexes calls), as an engine does;
    /// pipelined writers also share one append stream per connection.
    pub pool: tokio::sync::OnceCell<Vec<(LedgerClient, AppendPipeline)>>,
    pub next: std::sync::atomic::AtomicUsize,
}

impl Ledger {
    pub fn new(url: String, durability: &str, pipelined: bool) -> Self {
        Ledger {
            url,
            durability: durability.to_owned(),
            pipelined,
            pool: Default::default(),
            next: Default::default(),
        }
    }
}

enum LedgerWriter {
    Unary(Box<LedgerClient>),
    Pipelined(AppendPipeline),
}

#[async_trait]
impl Writer for LedgerWriter {
    async fn append(&mut self, ctx: &str, payload: &[u8]) -> Result<()> {
        match self {
            LedgerWriter::Unary(c) => {
                c.append(ctx, "facts", payload.to_vec(), Metadata::new(), None)
                    .await?;
            }
            LedgerWriter::Pipelined(p) => {
                p.append(ctx, "facts", payload.to_vec(), Metadata::new(), None)
                    .await?;
            }
        }
        Ok(())
    }
}

struct LedgerSub(
    std::pin::Pin<
        Box<
            dyn futures::Stream<Item = Result<ledger_core::Entry, ledger_client::ClientError>>
                + Send,
        >,
    >,
);

#[async_trait]
impl Subscriber for LedgerSub {
    async fn next(&mut self) -> Result<Vec<u8>> {
        let e = self
            .0
            .next()
            .await
            .ok_or_else(|| anyhow!("watch ended"))??;
        Ok(e.payload)
    }
}

#[async_trait]
impl System for Ledger {
    fn label(&self) -> String {
        format!("Converge Ledger (durability {})", self.durability)
    }
    fn append_how(&self) -> &'static str {
        if self.pipelined {
            ", AppendPipeline stream"
        } else {
            ", unary Append"
        }
    }
    async fn writer(&self, _notify: bool) -> Result<Box<dyn Writer>> {
        let conns: usize = std::env::var("LEDGER_CONNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        let pool = self
            .pool
            .get_or_try_init(|| async {
                let mut v = Vec::new();
                for _ in 0..conns {
                    let c = LedgerClient::connect(&self.url).await?;
                    let p = c.pipeline();
                    v.push((c, p));
                }
                anyhow::Ok(v)
            })
            .await?;
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (client, pipeline) = &pool[i % pool.len()];
        Ok(Box::new(if self.pipelined {
            LedgerWriter::Pipelined(pipeline.clone())
        } else {
            LedgerWriter::Unary(Box::new(client.clone()))
        }))
    }
    async fn fill(&self, ctx: &str, n: u64, payload: &[u8]) -> Result<()> {
        let c = LedgerClient::connect(&self.url).await?;
        let mut start = 1u64;
        while start <= n {
            let end = (start + 200_000 - 1).min(n);
            // Build a snapshot of the next chunk (extending what is there) and load it.
            let existing = if start > 1 {
                c.get_all(ctx, "", 0).await?
            } else {
                Vec::new()
            };
            let mut entries = existing;
            for s in start..=end {
                entries.push(ledger_core::Entry::new(
                    format!("fill-{s}"),
                    "facts".into(),
                    payload.to_vec(),
                    s,
                    1_700_000_000_000_000_000 + s,
                    Metadata::new(),
                    s,
                ));
            }
            let blob = ledger_core::snapshot::encode(ctx, 0, &entries)?;
            c.load(ctx, blob, false).await?;
            start = end + 1;
        }
        Ok(())
    }
    async fn read_all(&self, ctx: &str) -> Result<u64> {
        let c = LedgerClient::connect(&self.url).await?;
        Ok(c.get_all(ctx, "", 0).await?.len() as u64)
    }
    async fn read_first(&self, ctx: &str) -> Result<u64> {
        let c = LedgerClient::connect(&self.url).await?;
        Ok(c.get(ctx, "", 0, 100).await?.entries.len() as u64)
    }
    async fn subscriber(&self, ctx: &str) -> Result<Box<dyn Subscriber>> {
        let c = LedgerClient::connect(&self.url).await?;
        let from = c.get(ctx, "", 0, 1).await?.latest_sequence;
        let s = c.watch(ctx, "", from).await?;
        Ok(Box::new(LedgerSub(Box::pin(s))))
    }
}

// ---------------------------------------------------------------------------------------------
// A Converge Ledger cluster: the cluster-aware client sends each append to its context's
// writer, which acknowledges at `ack=quorum` (the nodes' default).

pub struct LedgerCluster {
    pub client: ledger_client::cluster::ClusterClient,
    pub nodes: usize,
}

struct ClusterWriter(ledger_client::cluster::ClusterClient);

#[async_trait]
impl Writer for ClusterWriter {
    async fn append(&mut self, ctx: &str, payload: &[u8]) -> Result<()> {
        self.0
            .append(ctx, "facts", payload.to_vec(), Metadata::new())
            .await?;
        Ok(())
    }
}

#[async_trait]
impl System for LedgerCluster {
    fn label(&self) -> String {
        format!(
            "Converge Ledger, {} nodes, R=3, ack=quorum (durability sync)",
            self.nodes
        )
    }
    async fn writer(&self, _notify: bool) -> Result<Box<dyn Writer>> {
        Ok(Box::new(ClusterWriter(self.client.clone())))
    }
    async fn fill(&self, ctx: &str, n: u64, payload: &[u8]) -> Result<()> {
        // Load is refused on cluster members: fill through appends.
        for _ in 0..n {
            self.client
                .append(ctx, "facts", payload.to_vec(), Metadata::new())
                .await?;
        }
        Ok(())
    }
    async fn read_all(&self, ctx: &str) -> Result<u64> {
        let c = self.client.reader(ctx).await?;
        Ok(c.get_all(ctx, "", 0).await?.len() as u64)
    }
    async fn read_first(&self, ctx: &str) -> Result<u64> {
        let c = self.client.reader(ctx).await?;
        Ok(c.get(ctx, "", 0, 100).await?.entries.len() as u64)
    }
    async fn subscriber(&self, ctx: &str) -> Result<Box<dyn Subscriber>> {
        let c = self.client.reader(ctx).await?;
        let from = c.get(ctx, "", 0, 1).await?.latest_sequence;
        let s = c.watch(ctx, "", from).await?;
        Ok(Box::new(LedgerSub(Box::pin(s))))
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: a table with (context_id, seq) primary key; "just use Postgres".

pub struct Postgres {
    pub port: u16,
    pub synchronous_commit: bool,
}

impl Postgres {
    pub async fn connect(&self) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        let h = tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .batch_execute(&format!(
                "SET synchronous_commit = {}",
                if self.synchronous_commit { "on" } else { "off" }
            ))
            .await?;
        Ok((client, h))
    }

    pub async fn create_schema(&self) -> Result<()> {
        let (c, _h) = self.connect().await?;
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS entries (
                context_id text NOT NULL,
                seq bigint NOT NULL,
                key text NOT NULL,
                payload bytea NOT NULL,
                appended_at_ns bigint NOT NULL,
                PRIMARY KEY (context_id, seq))",
        )
        .await?;
        Ok(())
    }
}

struct PgWriter {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
    seqs: HashMap<String, i64>,
    _conn: tokio::task::JoinHandle<()>,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[async_trait]
impl Writer for PgWriter {
    async fn append(&mut self, ctx: &str, payload: &[u8]) -> Result<()> {
        let seq = match self.seqs.get_mut(ctx) {
            Some(s) => {
                *s += 1;
                *s
            }
            None => {
                let row = self
                    .client
                    .query_one(
                        "SELECT COALESCE(MAX(seq), 0) FROM entries WHERE context_id = $1",
                        &[&ctx],
                    )
                    .await?;
                let s: i64 = row.get::<_, i64>(0) + 1;
                self.seqs.insert(ctx.to_owned(), s);
                s
            }
        };
        self.client
            .execute(&self.insert, &[&ctx, &seq, &"facts", &payload, &now_ns()])
            .await?;
        Ok(())
    }
}

struct PgSub {
    rx: tokio::sync::mpsc::UnboundedReceiver<i64>,
    client: tokio_postgres::Client,
    select: tokio_postgres::Statement,
    ctx: String,
}

#[async_trait]
impl Subscriber for PgSub {
    async fn next(&mut self) -> Result<Vec<u8>> {
        let seq = self
            .rx
            .recv()
            .await
            .ok_or_else(|| anyhow!("listen connection closed"))?;
        let row = self
            .client
            .query_one(&self.select, &[&self.ctx, &seq])
            .await?;
        Ok(row.get(0))
    }
}

fn channel_of(ctx: &str) -> String {
    format!(
        "ch_{}",
        ctx.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

#[async_trait]
impl System for Postgres {
    fn label(&self) -> String {
        format!(
            "PostgreSQL 15 (synchronous_commit={})",
            if self.synchronous_commit { "on" } else { "off" }
        )
    }
    async fn writer(&self, notify: bool) -> Result<Box<dyn Writer>> {
        let (client, conn) = self.connect().await?;
        let sql = if notify {
            // The new row and its notification commit together.
            "WITH ins AS (INSERT INTO entries VALUES ($1, $2, $3, $4, $5) RETURNING seq) \
             SELECT pg_notify('ch_' || regexp_replace($1, '[^a-zA-Z0-9]', '_', 'g'), (SELECT seq FROM ins)::text)"
        } else {
            "INSERT INTO entries VALUES ($1, $2, $3, $4, $5)"
        };
        let insert = client.prepare(sql).await?;
        Ok(Box::new(PgWriter {
            client,
            insert,
            seqs: HashMap::new(),
            _conn: conn,
        }))
    }
    async fn fill(&self, ctx: &str, n: u64, payload: &[u8]) -> Result<()> {
        let (c, _h) = self.connect().await?;
        c.execute(
            "INSERT INTO entries SELECT $1, g, 'facts', $2, 0 FROM generate_series(1, $3) g",
            &[&ctx, &payload, &(n as i32)],
        )
        .await?;
        Ok(())
    }
    async fn read_all(&self, ctx: &str) -> Result<u64> {
        let (c, _h) = self.connect().await?;
        let rows = c.query("SELECT seq, key, payload, appended_at_ns FROM entries WHERE context_id = $1 ORDER BY seq", &[&ctx]).await?;
        Ok(rows.len() as u64)
    }
    async fn read_first(&self, ctx: &str) -> Result<u64> {
        let (c, _h) = self.connect().await?;
        let rows = c.query("SELECT seq, key, payload FROM entries WHERE context_id = $1 ORDER BY seq LIMIT 100", &[&ctx]).await?;
        Ok(rows.len() as u64)
    }
    async fn subscriber(&self, ctx: &str) -> Result<Box<dyn Subscriber>> {
        let (client, mut conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(msg)) = stream.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = msg
                    && let Ok(seq) = n.payload().parse::<i64>()
                    && tx.send(seq).is_err()
                {
                    break;
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {}", channel_of(ctx)))
            .await?;
        let select = client
            .prepare("SELECT payload FROM entries WHERE context_id = $1 AND seq = $2")
            .await?;
        Ok(Box::new(PgSub {
            rx,
            client,
            select,
            ctx: ctx.to_owned(),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Redis Streams: one stream per context.

pub struct Redis {
    pub port: u16,
    pub appendfsync: String,
}

impl Redis {
    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
        Ok(client.get_multiplexed_async_connection().await?)
    }
    pub async fn configure(&self) -> Result<()> {
        let mut c = self.conn().await?;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendfsync")
            .arg(&self.appendfsync)
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }
}

struct RedisWriter(redis::aio::MultiplexedConnection);

#[async_trait]
impl Writer for RedisWriter {
    async fn append(&mut self, ctx: &str, payload: &[u8]) -> Result<()> {
        redis::cmd("XADD")
            .arg(ctx)
            .arg("*")
            .arg("key")
            .arg("facts")
            .arg("payload")
            .arg(payload)
            .query_async::<String>(&mut self.0)
            .await?;
        Ok(())
    }
}

struct RedisSub {
    conn: redis::aio::MultiplexedConnection,
    ctx: String,
    last: String,
    buffer: std::collections::VecDeque<Vec<u8>>,
}

#[async_trait]
impl Subscriber for RedisSub {
    async fn next(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(p) = self.buffer.pop_front() {
                return Ok(p);
            }
            let opts = redis::streams::StreamReadOptions::default()
                .block(0)
                .count(1000);
            let reply: redis::streams::StreamReadReply = redis::AsyncCommands::xread_options(
                &mut self.conn,
                &[&self.ctx],
                &[&self.last],
                &opts,
            )
            .await?;
            for key in reply.keys {
                for id in key.ids {
                    self.last = id.id.clone();
                    if let Some(redis::Value::BulkString(b)) = id.map.get("payload") {
                        self.buffer.push_back(b.clone());
                    }
                }
            }
        }
    }
}

#[async_trait]
impl System for Redis {
    fn label(&self) -> String {
        format!(
            "Redis 7 Streams (appendonly yes, appendfsync {})",
            self.appendfsync
        )
    }
    async fn writer(&self, _notify: bool) -> Result<Box<dyn Writer>> {
        // A connection of its own per writer, as separate engine processes would have.
        Ok(Box::new(RedisWriter(self.conn().await?)))
    }
    async fn fill(&self, ctx: &str, n: u64, payload: &[u8]) -> Result<()> {
        let mut c = self.conn().await?;
        let mut done = 0u64;
        while done < n {
            let batch = (n - done).min(5_000);
            let mut pipe = redis::pipe();
            for _ in 0..batch {
                pipe.cmd("XADD")
                    .arg(ctx)
                    .arg("*")
                    .arg("key")
                    .arg("facts")
                    .arg("payload")
                    .arg(payload)
                    .ignore();
            }
            pipe.query_async::<()>(&mut c).await?;
            done += batch;
        }
        Ok(())
    }
    async fn read_all(&self, ctx: &str) -> Result<u64> {
        let mut c = self.conn().await?;
        let r: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut c, ctx).await?;
        Ok(r.ids.len() as u64)
    }
    async fn read_first(&self, ctx: &str) -> Result<u64> {
        let mut c = self.conn().await?;
        let r: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_count(&mut c, ctx, "-", "+", 100).await?;
        Ok(r.ids.len() as u64)
    }
    async fn subscriber(&self, ctx: &str) -> Result<Box<dyn Subscriber>> {
        Ok(Box::new(RedisSub {
            conn: self.conn().await?,
            ctx: ctx.to_owned(),
            last: "$".into(),
            buffer: Default::default(),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// NATS JetStream: one stream, a subject per context.

/// The one JetStream stream; a subject per context.
const STREAM: &str = "LEDGER";

pub struct Nats {
    pub port: u16,
    /// e.g. "2.15"
    pub version: String,
    /// `sync_interval: always`: every message fsynced before its acknowledgement.
    pub sync_always: bool,
    /// Stream replicas (3 on a 3-server cluster: R3).
    pub replicas: usize,
}

impl Nats {
    async fn js(&self) -> Result<(async_nats::Client, async_nats::jetstream::Context)> {
        let client = async_nats::connect(format!("nats://127.0.0.1:{}", self.port)).await?;
        let js = async_nats::jetstream::new(client.clone());
        Ok((client, js))
    }
    /// A connection and the ledger's stream on it.
    async fn stream(&self) -> Result<(async_nats::Client, async_nats::jetstream::stream::Stream)> {
        let (c, js) = self.js().await?;
        let stream = js
            .get_stream(STREAM)
            .await
            .map_err(|e| anyhow!("get stream: {e}"))?;
        Ok((c, stream))
    }
    pub async fn create_stream(&self) -> Result<()> {
        let (_c, js) = self.js().await?;
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["ctx.>".into()],
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: self.replicas.max(1),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("create stream: {e}"))?;
        Ok(())
    }
}

fn subject(ctx: &str) -> String {
    format!(
        "ctx.{}",
        ctx.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
    )
}

/// The client is kept so its connection lives as long as the writer.
struct NatsWriter(
    async_nats::jetstream::Context,
    #[allow(dead_code)] async_nats::Client,
);

#[async_trait]
impl Writer for NatsWriter {
    async fn append(&mut self, ctx: &str, payload: &[u8]) -> Result<()> {
        let ack = self
            .0
            .publish(subject(ctx), payload.to_vec().into())
            .await
            .map_err(|e| anyhow!("publish: {e}"))?;
        ack.await.map_err(|e| anyhow!("publish ack: {e}"))?;
        Ok(())
    }
}

struct NatsSub {
    messages: std::pin::Pin<Box<dyn futures::Stream<Item = Result<Vec<u8>>> + Send>>,
    _client: async_nats::Client,
}

#[async_trait]
impl Subscriber for NatsSub {
    async fn next(&mut self) -> Result<Vec<u8>> {
        self.messages
            .next()
            .await
            .ok_or_else(|| anyhow!("consumer ended"))?
    }
}

#[async_trait]
impl System for Nats {
    fn label(&self) -> String {
        format!(
            "NATS {} JetStream ({}file storage, {})",
            self.version,
            if self.replicas > 1 {
                format!("{} servers, R{}, ", self.replicas, self.replicas)
            } else {
                String::new()
            },
            if self.sync_always {
                "sync_interval always"
            } else {
                "default sync: every 2 min"
            }
        )
    }
    async fn writer(&self, _notify: bool) -> Result<Box<dyn Writer>> {
        let (c, js) = self.js().await?;
        Ok(Box::new(NatsWriter(js, c)))
    }
    async fn fill(&self, ctx: &str, n: u64, payload: &[u8]) -> Result<()> {
        let (_c, js) = self.js().await?;
        let mut pending = Vec::with_capacity(2048);
        for _ in 0..n {
            pending.push(
                js.publish(subject(ctx), payload.to_vec().into())
                    .await
                    .map_err(|e| anyhow!("publish: {e}"))?,
            );
            if pending.len() >= 2048 {
                for a in pending.drain(..) {
                    a.await.map_err(|e| anyhow!("ack: {e}"))?;
                }
            }
        }
        for a in pending {
            a.await.map_err(|e| anyhow!("ack: {e}"))?;
        }
        Ok(())
    }
    async fn read_all(&self, ctx: &str) -> Result<u64> {
        self.read_n(ctx, None).await
    }
    async fn read_first(&self, ctx: &str) -> Result<u64> {
        self.read_n(ctx, Some(100)).await
    }
    async fn subscriber(&self, ctx: &str) -> Result<Box<dyn Subscriber>> {
        use async_nats::jetstream::consumer;
        let (c, stream) = self.stream().await?;
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: c.new_inbox(),
                filter_subject: subject(ctx),
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("create consumer: {e}"))?;
        let msgs = consumer
            .messages()
            .await
            .map_err(|e| anyhow!("messages: {e}"))?;
        let messages = msgs.map(|m| {
            m.map(|m| m.payload.to_vec())
                .map_err(|e| anyhow!("message: {e}"))
        });
        Ok(Box::new(NatsSub {
            messages: Box::pin(messages),
            _client: c,
        }))
    }
}

impl Nats {
    /// Replays `ctx` from its first message with an ordered pull consumer, until the consumer
    /// reports nothing pending (or `limit` messages).
    async fn read_n(&self, ctx: &str, limit: Option<u64>) -> Result<u64> {
        use async_nats::jetstream::consumer;
        let (_c, stream) = self.stream().await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject(ctx),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("create consumer: {e}"))?;
        let mut msgs = consumer
            .messages()
            .await
            .map_err(|e| anyhow!("messages: {e}"))?;
        let mut n = 0;
        loop {
            let m = msgs
                .next()
                .await
                .context("consumer ended")?
                .map_err(|e| anyhow!("message: {e}"))?;
            n += 1;
            let pending = m.info().map_err(|e| anyhow!("message info: {e}"))?.pending;
            if pending == 0 || limit.is_some_and(|l| n >= l) {
                return Ok(n);
            }
        }
    }
}
