//! converge-core's `ExperienceStore` over the ledger.
//!
//! Events live in one ledger context per tenant and correlation id,
//! `<ns><tenant or ~>/<correlation or ~>` (`~` is not a valid id character, so "no tenant"
//! cannot collide with a tenant), keyed `event/<kind>` (`event/fact_promoted`, …: the labels of
//! `converge_experience::event_kind_label`), so a query by kind reads the ledger's key index.
//! User events are keyed `user/<type>`. A catalog context `<ns>catalog` lists every event
//! context once (written before the first event goes into it), so a query without a tenant or
//! correlation id finds them all. Trace links are also indexed in `<ns>traces` under
//! `trace/<hash of the id>`.
//!
//! Order: every append carries the highest Lamport clock this process has seen
//! (`received_lamport_clock`), so events appended one after another by one store get
//! increasing clocks even across contexts; a query merges contexts by (Lamport clock,
//! context, sequence) and returns them in append order, as the in-memory store does.
//!
//! The trait is synchronous; the ledger client is async. [`LedgerExperienceStore`] owns a small
//! tokio runtime (one worker thread) and blocks the caller on it: call it from plain threads or
//! `spawn_blocking`, not from inside a current-thread runtime you need to keep running. The
//! async core, [`ExperienceLedger`], is public for async callers.

use crate::Error;
use crate::mapping::content_idempotency_key;
use crate::writer::{Ledger, RetrySettings};
use converge_core::{
    ArtifactId, ArtifactKind, EventQuery, ExperienceEvent, ExperienceEventEnvelope,
    ExperienceRecord, ExperienceStore, ExperienceStoreError, ExperienceStoreResult, LifecycleEvent,
    ReplayTrace, TimeRange, TraceLinkId, UserExperienceEventEnvelope,
};
use ledger_core::{Metadata, NewEntry};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Default namespace (context id prefix) of experience contexts.
pub const DEFAULT_NAMESPACE: &str = "converge/experience/";
const NONE: &str = "~";
const CATALOG_KEY: &str = "context";
const META_TENANT: &str = "converge.tenant";
const META_CORRELATION: &str = "converge.correlation";
const META_EVENT_ID: &str = "converge.event_id";
const META_OCCURRED_AT: &str = "converge.occurred_at";
const META_CHAIN_ID: &str = "converge.chain_id";
const META_TRACE_LINK_ID: &str = "converge.trace_link_id";

/// The async core: appends and queries experience events in ledger contexts.
#[derive(Debug)]
pub struct ExperienceLedger {
    ledger: Ledger,
    ns: String,
    catalogued: Mutex<HashSet<String>>,
}

/// One decoded event row with its place in the ledger.
struct Row<T> {
    lamport: u64,
    context: String,
    sequence: u64,
    value: T,
}

impl ExperienceLedger {
    /// Over `ledger`, with contexts named under `ns` (e.g. [`DEFAULT_NAMESPACE`]).
    pub fn new(ledger: Ledger, ns: &str) -> ExperienceLedger {
        ExperienceLedger {
            ledger,
            ns: ns.to_owned(),
            catalogued: Mutex::default(),
        }
    }

    /// The ledger handle.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The context holding events of `tenant` and `correlation`.
    pub fn context_for(&self, tenant: Option<&str>, correlation: Option<&str>) -> String {
        format!(
            "{}{}/{}",
            self.ns,
            tenant.unwrap_or(NONE),
            correlation.unwrap_or(NONE)
        )
    }

    fn catalog(&self) -> String {
        format!("{}catalog", self.ns)
    }

    fn traces(&self) -> String {
        format!("{}traces", self.ns)
    }

    fn trace_key(id: &str) -> String {
        content_idempotency_key("trace", id.as_bytes()).replacen(':', "/", 1)
    }

    async fn keyed_append(&self, mut e: NewEntry, key: String) -> Result<(), Error> {
        e.idempotency_key = Some(key);
        self.ledger.append(e).await.map(|_| ())
    }

    /// The context of `tenant` and `correlation`, listed in the catalog (once, before anything
    /// is written into it).
    async fn catalogued_context(
        &self,
        tenant: Option<&str>,
        correlation: Option<&str>,
    ) -> Result<String, Error> {
        let context = self.context_for(tenant, correlation);
        self.ensure_catalogued(&context, tenant, correlation)
            .await?;
        Ok(context)
    }

    /// Lists `context` in the catalog once (before anything is written into it).
    async fn ensure_catalogued(
        &self,
        context: &str,
        tenant: Option<&str>,
        correlation: Option<&str>,
    ) -> Result<(), Error> {
        if self.catalogued.lock().expect("lock").contains(context) {
            return Ok(());
        }
        let mut m = Metadata::new();
        m.insert(META_TENANT.into(), tenant.unwrap_or(NONE).to_owned());
        m.insert(
            META_CORRELATION.into(),
            correlation.unwrap_or(NONE).to_owned(),
        );
        let payload = context.as_bytes().to_vec();
        let idem = content_idempotency_key("cat1", &payload);
        self.keyed_append(
            NewEntry::new(&self.catalog(), CATALOG_KEY, payload, m, None),
            idem,
        )
        .await?;
        self.catalogued
            .lock()
            .expect("lock")
            .insert(context.to_owned());
        Ok(())
    }

    /// Appends an engine event (validated as converge-experience validates it).
    pub async fn append_event(&self, env: &ExperienceEventEnvelope) -> Result<(), Error> {
        let context = self
            .catalogued_context(env.tenant_id.as_deref(), env.correlation_id.as_deref())
            .await?;
        let payload = crate::error::encode_json("experience event", env)?;
        let mut m = Metadata::new();
        m.insert(META_EVENT_ID.into(), env.event_id.to_string());
        m.insert(META_OCCURRED_AT.into(), env.occurred_at.to_string());
        if let Some(chain) = event_chain_id(&env.event) {
            m.insert(META_CHAIN_ID.into(), chain.to_owned());
        }
        let key = format!(
            "event/{}",
            converge_experience::event_kind_label(env.event.kind())
        );
        // One fresh key per call, the same for every retry of it: stored once, however many
        // attempts (two calls with equal envelopes are two events, as in memory).
        let idem = ledger_client::retry::new_idempotency_key();
        if let ExperienceEvent::ReplayTraceRecorded {
            trace_link_id,
            trace_link,
        } = &env.event
        {
            let payload = crate::error::encode_json("trace link", trace_link)?;
            let mut tm = Metadata::new();
            tm.insert(META_TRACE_LINK_ID.into(), trace_link_id.to_string());
            self.keyed_append(
                NewEntry::new(
                    &self.traces(),
                    &Self::trace_key(trace_link_id.as_str()),
                    payload,
                    tm,
                    None,
                ),
                format!("{idem}-t"),
            )
            .await?;
        }
        self.keyed_append(NewEntry::new(&context, &key, payload, m, None), idem)
            .await
    }

    /// Appends a user event.
    pub async fn append_user_event(&self, env: &UserExperienceEventEnvelope) -> Result<(), Error> {
        let context = self
            .catalogued_context(env.tenant_id.as_deref(), env.correlation_id.as_deref())
            .await?;
        let value = serde_json::to_value(env).map_err(|e| Error::Encode {
            what: "user event",
            reason: e.to_string(),
        })?;
        let kind = value["event"]["type"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        let payload = crate::error::encode_json("user event", &value)?;
        let mut m = Metadata::new();
        m.insert(META_EVENT_ID.into(), env.event_id.to_string());
        m.insert(META_OCCURRED_AT.into(), env.occurred_at.to_string());
        self.keyed_append(
            NewEntry::new(&context, &format!("user/{kind}"), payload, m, None),
            ledger_client::retry::new_idempotency_key(),
        )
        .await
    }

    /// The event contexts a query can match.
    async fn contexts(
        &self,
        tenant: Option<&str>,
        correlation: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        if let (Some(_), Some(_)) = (tenant, correlation) {
            return Ok(vec![self.context_for(tenant, correlation)]);
        }
        let catalog = self.catalog();
        let mut out = Vec::new();
        for e in self.ledger.read_key(&catalog, CATALOG_KEY).await? {
            let t = e.metadata.get(META_TENANT).map(String::as_str);
            let c = e.metadata.get(META_CORRELATION).map(String::as_str);
            if tenant.is_some_and(|x| Some(x) != t) || correlation.is_some_and(|x| Some(x) != c) {
                continue;
            }
            let name = String::from_utf8_lossy(&e.payload).into_owned();
            if !out.contains(&name) {
                out.push(name);
            }
        }
        Ok(out)
    }

    async fn rows<T: serde::de::DeserializeOwned>(
        &self,
        contexts: &[String],
        keys: &[String],
        prefix: &str,
    ) -> Result<Vec<Row<T>>, Error> {
        let mut rows = Vec::new();
        for context in contexts {
            for key in keys {
                for e in self.ledger.read_key(context, key).await? {
                    if !e.key.starts_with(prefix) {
                        continue;
                    }
                    let value =
                        serde_json::from_slice(&e.payload).map_err(|err| Error::Decode {
                            context: context.clone(),
                            sequence: e.sequence,
                            reason: format!("event: {err}"),
                        })?;
                    rows.push(Row {
                        lamport: e.lamport_clock,
                        context: context.clone(),
                        sequence: e.sequence,
                        value,
                    });
                }
            }
        }
        rows.sort_by(|a, b| {
            (a.lamport, &a.context, a.sequence).cmp(&(b.lamport, &b.context, b.sequence))
        });
        Ok(rows)
    }

    /// Engine events matching `q`, in append order, at most `q.limit`.
    pub async fn query_events(
        &self,
        q: &EventQuery,
    ) -> Result<Vec<ExperienceEventEnvelope>, Error> {
        let contexts = self
            .contexts(q.tenant_id.as_deref(), q.correlation_id.as_deref())
            .await?;
        let keys: Vec<String> = if q.kinds.is_empty() {
            vec![String::new()]
        } else {
            let mut k: Vec<String> = q
                .kinds
                .iter()
                .map(|k| format!("event/{}", converge_experience::event_kind_label(*k)))
                .collect();
            k.dedup();
            k
        };
        let rows: Vec<Row<ExperienceEventEnvelope>> = self.rows(&contexts, &keys, "event/").await?;
        let it = rows
            .into_iter()
            .map(|r| r.value)
            .filter(|e| event_matches(e, q));
        Ok(match q.limit {
            Some(n) => it.take(n).collect(),
            None => it.collect(),
        })
    }

    /// Engine and user records, as `InMemoryExperienceStore::query_records` merges them.
    pub async fn query_records(&self, q: &EventQuery) -> Result<Vec<ExperienceRecord>, Error> {
        let engine = self.query_events(q).await?;
        let contexts = self
            .contexts(q.tenant_id.as_deref(), q.correlation_id.as_deref())
            .await?;
        let user: Vec<Row<UserExperienceEventEnvelope>> =
            self.rows(&contexts, &[String::new()], "user/").await?;
        let mut records: Vec<ExperienceRecord> = engine
            .into_iter()
            .map(ExperienceRecord::Engine)
            .chain(
                user.into_iter()
                    .map(|r| r.value)
                    .filter(|e| user_matches(e, q))
                    .map(ExperienceRecord::User),
            )
            .collect();
        records.sort_by(|a, b| a.occurred_at().as_str().cmp(b.occurred_at().as_str()));
        if let Some(n) = q.limit {
            records.truncate(n);
        }
        Ok(records)
    }

    /// The trace link recorded last under `id`.
    pub async fn get_trace_link(&self, id: &TraceLinkId) -> Result<Option<ReplayTrace>, Error> {
        let traces = self.traces();
        let entries = self
            .ledger
            .read_key(&traces, &Self::trace_key(id.as_str()))
            .await?;
        let Some(e) = entries
            .iter()
            .rev()
            .find(|e| e.metadata.get(META_TRACE_LINK_ID).map(String::as_str) == Some(id.as_str()))
        else {
            return Ok(None);
        };
        serde_json::from_slice(&e.payload)
            .map(Some)
            .map_err(|err| Error::Decode {
                context: traces,
                sequence: e.sequence,
                reason: format!("trace link: {err}"),
            })
    }
}

fn event_chain_id(event: &ExperienceEvent) -> Option<&str> {
    match event {
        ExperienceEvent::ProposalCreated { chain_id, .. }
        | ExperienceEvent::ProposalValidated { chain_id, .. }
        | ExperienceEvent::OutcomeRecorded { chain_id, .. }
        | ExperienceEvent::BudgetExceeded { chain_id, .. } => Some(chain_id.as_str()),
        _ => None,
    }
}

fn in_range(ts: &str, range: &TimeRange) -> bool {
    range.start.as_deref().is_none_or(|s| ts >= s) && range.end.as_deref().is_none_or(|e| ts <= e)
}

/// The in-memory store's filter (converge-experience keeps it private; same rules).
fn event_matches(e: &ExperienceEventEnvelope, q: &EventQuery) -> bool {
    q.tenant_id
        .as_deref()
        .is_none_or(|t| e.tenant_id.as_deref() == Some(t))
        && q.correlation_id
            .as_deref()
            .is_none_or(|c| e.correlation_id.as_deref() == Some(c))
        && (q.kinds.is_empty() || q.kinds.contains(&e.event.kind()))
        && q.chain_id
            .as_deref()
            .is_none_or(|c| event_chain_id(&e.event) == Some(c))
        && q.time_range
            .as_ref()
            .is_none_or(|r| in_range(e.occurred_at.as_str(), r))
}

fn user_matches(e: &UserExperienceEventEnvelope, q: &EventQuery) -> bool {
    q.tenant_id
        .as_deref()
        .is_none_or(|t| e.tenant_id.as_deref() == Some(t))
        && q.correlation_id
            .as_deref()
            .is_none_or(|c| e.correlation_id.as_deref() == Some(c))
        && q.time_range
            .as_ref()
            .is_none_or(|r| in_range(e.occurred_at.as_str(), r))
}

/// converge-core's synchronous `ExperienceStore` over [`ExperienceLedger`], on its own runtime.
#[derive(Debug)]
pub struct LedgerExperienceStore {
    inner: Arc<ExperienceLedger>,
    runtime: Option<tokio::runtime::Runtime>,
    next_id: std::sync::atomic::AtomicU64,
    id_prefix: String,
}

impl LedgerExperienceStore {
    /// Connects through `seeds` (any cluster members), contexts under `ns`.
    pub fn connect(seeds: &[&str], ns: &str, retry: RetrySettings) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ledger-experience")
            .enable_all()
            .build()
            .map_err(|e| Error::Encode {
                what: "experience store runtime",
                reason: e.to_string(),
            })?;
        let seeds: Vec<String> = seeds.iter().map(|s| (*s).to_owned()).collect();
        let ledger = runtime.block_on(async move {
            let s: Vec<&str> = seeds.iter().map(String::as_str).collect();
            Ledger::connect(&s, retry).await
        })?;
        Ok(Self::with_runtime(
            ExperienceLedger::new(ledger, ns),
            runtime,
        ))
    }

    fn with_runtime(inner: ExperienceLedger, runtime: tokio::runtime::Runtime) -> Self {
        LedgerExperienceStore {
            inner: Arc::new(inner),
            runtime: Some(runtime),
            next_id: Default::default(),
            id_prefix: uuid::Uuid::now_v7().simple().to_string(),
        }
    }

    /// The async core.
    pub fn ledger(&self) -> &Arc<ExperienceLedger> {
        &self.inner
    }

    fn block<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(Arc<ExperienceLedger>) -> Fut,
        Fut: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(Arc::clone(&self.inner));
        self.runtime
            .as_ref()
            .expect("runtime until drop")
            .spawn(async move {
                let _ = tx.send(fut.await);
            });
        rx.recv().expect("the experience store's runtime stopped")
    }
}

impl Drop for LedgerExperienceStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl ExperienceStore for LedgerExperienceStore {
    fn append_event(&self, event: ExperienceEventEnvelope) -> ExperienceStoreResult<()> {
        converge_experience::validate_envelope(&event)?;
        self.block(|s| async move { s.append_event(&event).await })
            .map_err(ExperienceStoreError::from)
    }

    fn query_events(
        &self,
        query: &EventQuery,
    ) -> ExperienceStoreResult<Vec<ExperienceEventEnvelope>> {
        let q = query.clone();
        self.block(|s| async move { s.query_events(&q).await })
            .map_err(ExperienceStoreError::from)
    }

    fn write_artifact_state_transition(
        &self,
        artifact_id: &ArtifactId,
        artifact_kind: ArtifactKind,
        event: LifecycleEvent,
    ) -> ExperienceStoreResult<()> {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let envelope = ExperienceEventEnvelope::new(
            format!("evt-{}-{n}", self.id_prefix),
            ExperienceEvent::ArtifactStateTransitioned {
                artifact_id: artifact_id.clone(),
                artifact_kind,
                event,
            },
        );
        self.append_event(envelope)
    }

    fn get_trace_link(
        &self,
        trace_link_id: &TraceLinkId,
    ) -> ExperienceStoreResult<Option<ReplayTrace>> {
        let id = trace_link_id.clone();
        self.block(|s| async move { s.get_trace_link(&id).await })
            .map_err(ExperienceStoreError::from)
    }

    fn append_user_event(&self, event: UserExperienceEventEnvelope) -> ExperienceStoreResult<()> {
        converge_experience::validate_user_envelope(&event)?;
        self.block(|s| async move { s.append_user_event(&event).await })
            .map_err(ExperienceStoreError::from)
    }

    fn query_records(&self, query: &EventQuery) -> ExperienceStoreResult<Vec<ExperienceRecord>> {
        let q = query.clone();
        self.block(|s| async move { s.query_records(&q).await })
            .map_err(ExperienceStoreError::from)
    }
}
