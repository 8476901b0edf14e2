//! converge-core's `ContextStore` over the ledger: one ledger context per scope.
//!
//! A save appends only what the ledger does not hold yet — each fact and staged proposal as its
//! own entry with an idempotency key derived from its id — then a checkpoint (version and
//! converge-core's Merkle root) when the context changed. A load reads every entry, verifies it
//! with the ledger's own proofs (content hashes, gapless sequences, the signed tree head's
//! root), rebuilds the `WireContextSnapshot` and lets converge-core check its root.

use crate::bridge::{BridgeOptions, StreamingBridge};
use crate::mapping::{
    self, CHECKPOINT_KEY, Checkpoint, META_PROPOSAL_ID, META_ROOT, META_VERSION, STAGED_PREFIX,
    Scan,
};
use crate::writer::{Appended, Ledger, RetrySettings};
use crate::{Error, experience::ExperienceLedger};
use converge_core::traits::{ContextStore, StoreError};
use converge_core::{ContextKey, ContextState};
use converge_pack::PayloadRegistry;
use futures::StreamExt;
use ledger_core::checkpoint::VerifyingKey;
use ledger_core::{Entry, Metadata, NewEntry};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// A boxed future, as converge-core's `ContextStore` associated types want one.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Default prefix of the ledger contexts holding scopes: scope `S` is context `converge/S`.
pub const DEFAULT_PREFIX: &str = "converge/";

/// Settings of a [`LedgerContextStore`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Context id prefix (scope `S` → context `prefix + S`).
    pub prefix: String,
    /// Namespace of the experience contexts the bridge writes events to.
    pub experience_namespace: String,
    /// How long to keep retrying an unreachable ledger.
    pub retry: RetrySettings,
    /// The node key to verify signed tree heads with; `None` trusts the key of the node that
    /// serves the read (trust on first use).
    pub trusted_key: Option<VerifyingKey>,
    /// Appends in flight at once during a save (pipelined on one stream per writer node).
    pub window: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            prefix: DEFAULT_PREFIX.into(),
            experience_namespace: crate::experience::DEFAULT_NAMESPACE.into(),
            retry: RetrySettings::default(),
            trusted_key: None,
            window: 256,
        }
    }
}

/// What a load found.
#[derive(Debug)]
pub struct Loaded {
    /// The context, verified by converge-core.
    pub state: ContextState,
    /// Facts loaded.
    pub facts: u64,
    /// Of those, facts no checkpoint covers (streamed while an engine ran, then it stopped).
    pub after_checkpoint: u64,
    /// Ledger entries read.
    pub entries: u64,
}

/// What a save appended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaveReport {
    pub facts_appended: u64,
    pub proposals_appended: u64,
    pub checkpoint_appended: bool,
}

/// What this process knows a scope's ledger context holds.
#[derive(Debug, Default)]
pub(crate) struct ScopeState {
    /// Read from the ledger at least once.
    pub scanned: bool,
    /// Facts stored, with the positions they were stored at.
    pub known: HashMap<(ContextKey, String), u64>,
    /// Idempotency keys of staged proposals stored.
    pub staged_known: BTreeSet<String>,
    pub last_checkpoint: Option<Checkpoint>,
    /// Other entries (HITL records) as last read.
    pub other: Vec<Entry>,
}

/// One scope: its context id, what is known of it, its bridge.
#[derive(Debug)]
pub(crate) struct Scope {
    pub context: String,
    pub state: Mutex<ScopeState>,
    pub bridge: Mutex<Option<std::sync::Weak<StreamingBridge>>>,
    /// Saves of one scope run one at a time.
    pub saving: tokio::sync::Mutex<()>,
}

/// converge-core's `ContextStore` over a ledger cluster.
#[derive(Clone)]
pub struct LedgerContextStore {
    ledger: Ledger,
    options: StoreOptions,
    registry: Arc<PayloadRegistry>,
    scopes: Arc<Mutex<HashMap<String, Arc<Scope>>>>,
    experience: Arc<ExperienceLedger>,
}

impl std::fmt::Debug for LedgerContextStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerContextStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl LedgerContextStore {
    /// Connects through `seeds` (any cluster members; one node's address will do) with
    /// converge-pack's payload types registered.
    pub async fn connect(seeds: &[&str], options: StoreOptions) -> Result<Self, Error> {
        let ledger = Ledger::connect(seeds, options.retry.clone()).await?;
        Ok(Self::new(
            ledger,
            options,
            PayloadRegistry::with_pack_payloads(),
        ))
    }

    /// Over `ledger`, decoding fact payloads with `registry` (register your payload types).
    pub fn new(ledger: Ledger, options: StoreOptions, registry: PayloadRegistry) -> Self {
        let experience = Arc::new(ExperienceLedger::new(
            ledger.clone(),
            &options.experience_namespace,
        ));
        LedgerContextStore {
            ledger,
            options,
            registry: Arc::new(registry),
            scopes: Arc::default(),
            experience,
        }
    }

    /// The ledger handle (cluster client, Lamport clock seen).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The experience contexts this store's bridges write events to.
    pub fn experience(&self) -> &Arc<ExperienceLedger> {
        &self.experience
    }

    /// The ledger context holding `scope`.
    pub fn context_id(&self, scope: &str) -> String {
        mapping::context_id(&self.options.prefix, scope)
    }

    pub(crate) fn scope(&self, scope: &str) -> Arc<Scope> {
        let mut scopes = self.scopes.lock().expect("scopes lock");
        Arc::clone(scopes.entry(scope.to_owned()).or_insert_with(|| {
            Arc::new(Scope {
                context: mapping::context_id(&self.options.prefix, scope),
                state: Mutex::default(),
                bridge: Mutex::default(),
                saving: tokio::sync::Mutex::new(()),
            })
        }))
    }

    /// Reads and decodes the scope's context, and records what it holds.
    async fn scan(&self, scope: &Scope) -> Result<Scan, Error> {
        let entries = self
            .ledger
            .read_verified(&scope.context, self.options.trusted_key.as_ref())
            .await?;
        let scan = Scan::from_entries(&scope.context, &entries)?;
        let mut st = scope.state.lock().expect("scope lock");
        st.scanned = true;
        st.known
            .extend(scan.known.iter().map(|(k, v)| (k.clone(), *v)));
        st.staged_known.extend(scan.staged_known.iter().cloned());
        st.last_checkpoint = scan.checkpoint.as_ref().map(|(c, _)| c.clone());
        st.other = scan.other.clone();
        Ok(scan)
    }

    /// Loads `scope`: `None` when the ledger holds nothing for it.
    pub async fn load(&self, scope: &str) -> Result<Option<Loaded>, Error> {
        self.load_excluding(scope, &[]).await
    }

    /// Loads `scope` without the staged proposals `exclude` names (HITL: the gated proposal,
    /// which the engine proposes again when it replays to the gate).
    pub async fn load_excluding(
        &self,
        scope: &str,
        exclude: &[(ContextKey, String)],
    ) -> Result<Option<Loaded>, Error> {
        let s = self.scope(scope);
        let scan = self.scan(&s).await?;
        Ok(
            mapping::rebuild(&s.context, &scan, &self.registry, exclude)?.map(|r| Loaded {
                state: r.state,
                facts: r.facts,
                after_checkpoint: r.after_checkpoint,
                entries: scan.entries,
            }),
        )
    }

    /// Entries under keys this crate does not map to facts, proposals or checkpoints (HITL
    /// records), as of the last read of `scope`.
    pub(crate) async fn other_entries(&self, scope: &str) -> Result<Vec<Entry>, Error> {
        let s = self.scope(scope);
        self.scan(&s).await?;
        Ok(s.state.lock().expect("scope lock").other.clone())
    }

    /// Appends one keyed record to `scope`'s context.
    pub(crate) async fn append_record(
        &self,
        scope: &str,
        key: &str,
        payload: Vec<u8>,
        metadata: Metadata,
        idempotency_key: String,
    ) -> Result<(), Error> {
        let s = self.scope(scope);
        let mut e = NewEntry::new(&s.context, key, payload, metadata, None);
        e.idempotency_key = Some(idempotency_key);
        self.ledger.append(e).await.map(|_| ())
    }

    /// A streaming bridge for an engine run on `scope` that starts from `start` (the context
    /// loaded, or `None` for a new one): pass it to `Engine::set_streaming` (and
    /// `set_event_observer`). [`Self::save`] of the scope flushes it first.
    pub fn streaming(
        &self,
        scope: &str,
        start: Option<&ContextState>,
        options: BridgeOptions,
    ) -> Arc<StreamingBridge> {
        let s = self.scope(scope);
        let bridge = StreamingBridge::start(
            self.ledger.clone(),
            Arc::clone(&s),
            Arc::clone(&self.experience),
            start,
            options,
        );
        *s.bridge.lock().expect("bridge lock") = Some(Arc::downgrade(&bridge));
        bridge
    }

    /// Saves `state` under `scope`: flushes the scope's bridge, appends every fact and staged
    /// proposal the ledger does not hold (idempotently), then a checkpoint if the context
    /// changed since the last one. Fails when some could not be stored within the retry budget
    /// (saying how many); a later save appends them.
    pub async fn save(&self, scope: &str, state: &ContextState) -> Result<SaveReport, Error> {
        let s = self.scope(scope);
        let _one_at_a_time = s.saving.lock().await;
        let bridge = s
            .bridge
            .lock()
            .expect("bridge lock")
            .as_ref()
            .and_then(|w| w.upgrade());
        if let Some(b) = bridge {
            b.flush().await;
        }
        if !s.state.lock().expect("scope lock").scanned {
            self.scan(&s).await?;
        }
        let snap = state.snapshot();
        enum Item {
            Fact(ContextKey, String, u64),
            Staged(String),
        }
        let mut to_append: Vec<(Item, NewEntry)> = Vec::new();
        {
            let st = s.state.lock().expect("scope lock");
            for (key, facts) in snap.facts() {
                for (i, f) in facts.iter().enumerate() {
                    let id = f.id().to_string();
                    if st.known.contains_key(&(*key, id.clone())) {
                        continue;
                    }
                    let (payload, metadata) =
                        mapping::fact_entry(f, i as u64).map_err(|reason| Error::Encode {
                            what: "fact",
                            reason,
                        })?;
                    let mut e = NewEntry::new(
                        &s.context,
                        mapping::ledger_key(*key),
                        payload,
                        metadata,
                        None,
                    );
                    e.idempotency_key = Some(mapping::fact_idempotency_key(*key, &id));
                    to_append.push((Item::Fact(*key, id, i as u64), e));
                }
            }
            for (key, proposals) in snap.proposals() {
                for p in proposals {
                    let wire = p.to_wire().map_err(|e| Error::Encode {
                        what: "proposal",
                        reason: e.to_string(),
                    })?;
                    let payload = crate::error::encode_json("proposal", &wire)?;
                    let idem = mapping::staged_idempotency_key(*key, p.id().as_str(), &payload);
                    if st.staged_known.contains(&idem) {
                        continue;
                    }
                    let mut m = Metadata::new();
                    m.insert(META_PROPOSAL_ID.into(), p.id().to_string());
                    let mut e = NewEntry::new(
                        &s.context,
                        &format!("{STAGED_PREFIX}{}", mapping::ledger_key(*key)),
                        payload,
                        m,
                        None,
                    );
                    e.idempotency_key = Some(idem.clone());
                    to_append.push((Item::Staged(idem), e));
                }
            }
        }
        let mut report = SaveReport::default();
        let mut failed = 0u64;
        let mut first_error = None;
        let window = self.options.window.max(1);
        let mut results = futures::stream::iter(
            to_append
                .into_iter()
                .map(|(item, e)| async move { (item, self.ledger.append(e).await) }),
        )
        .buffered(window);
        while let Some((item, r)) = results.next().await {
            match r {
                Ok(Appended::Stored(_)) | Ok(Appended::AlreadyThere) => {
                    let mut st = s.state.lock().expect("scope lock");
                    match item {
                        Item::Fact(key, id, pos) => {
                            st.known.entry((key, id)).or_insert(pos);
                            report.facts_appended += 1;
                        }
                        Item::Staged(idem) => {
                            st.staged_known.insert(idem);
                            report.proposals_appended += 1;
                        }
                    }
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        drop(results);
        if let Some(e) = first_error {
            return Err(Error::Incomplete {
                context: s.context.clone(),
                not_persisted: failed,
                first: e.to_string(),
            });
        }
        let checkpoint = {
            let st = s.state.lock().expect("scope lock");
            let c = mapping::checkpoint_of(state, &st.known).map_err(|reason| Error::Encode {
                what: "checkpoint",
                reason,
            })?;
            (st.last_checkpoint.as_ref() != Some(&c)).then_some(c)
        };
        if let Some(c) = checkpoint {
            let payload = crate::error::encode_json("checkpoint", &c)?;
            let mut m = Metadata::new();
            m.insert(META_VERSION.into(), c.version.to_string());
            m.insert(META_ROOT.into(), c.merkle_root.clone());
            let mut e = NewEntry::new(&s.context, CHECKPOINT_KEY, payload.clone(), m, None);
            e.idempotency_key = Some(mapping::content_idempotency_key("ck1", &payload));
            self.ledger.append(e).await?;
            s.state.lock().expect("scope lock").last_checkpoint = Some(c);
            report.checkpoint_appended = true;
        }
        Ok(report)
    }
}

impl ContextStore for LedgerContextStore {
    type LoadFut<'a> = BoxFuture<'a, Result<Option<ContextState>, StoreError>>;
    type SaveFut<'a> = BoxFuture<'a, Result<(), StoreError>>;

    fn load_context<'a>(&'a self, scope_id: &'a str) -> Self::LoadFut<'a> {
        Box::pin(async move {
            self.load(scope_id)
                .await
                .map(|l| l.map(|l| l.state))
                .map_err(StoreError::from)
        })
    }

    fn save_context<'a>(
        &'a self,
        scope_id: &'a str,
        context: &'a ContextState,
    ) -> Self::SaveFut<'a> {
        Box::pin(async move {
            self.save(scope_id, context)
                .await
                .map(|_| ())
                .map_err(StoreError::from)
        })
    }
}
