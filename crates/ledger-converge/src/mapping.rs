//! How converge-core's values become ledger entries and back. Pure: no I/O, no tokio.
//!
//! One ledger context per scope ([`context_id`]). In it:
//!
//! | ledger key | payload | metadata | idempotency key |
//! |---|---|---|---|
//! | the fact's `ContextKey` (`seeds`, `hypotheses`, … `proposals`, `diagnostic`) | `WireContextFact` JSON | `converge.fact_id`, `converge.position` | `cf1:` + SHA-256(key, fact id) |
//! | `staged/<key>` (a pending proposal) | `WireProposedFact` JSON | `converge.proposal_id` | `cp1:` + SHA-256(key, id, payload) |
//! | `checkpoint` | [`Checkpoint`] JSON | `converge.version`, `converge.merkle_root` | `ck1:` + SHA-256(payload) |
//! | `hitl/pause`, `hitl/decision` | see [`crate::hitl`] | `converge.gate_id` | `hp1:` / `hd1:` + SHA-256 |
//!
//! `converge.position` is the fact's index among the facts of its key in the engine's context:
//! converge-core's Merkle root hashes facts by key, then by position, so a load orders facts
//! by it (not by ledger sequence, which retried pipelined appends may permute).

use converge_core::integrity::{ContentHash, MerkleRoot};
use converge_core::{ContextFact, ContextKey, ContextSnapshot, ContextState};
use converge_pack::{PayloadRegistry, WireContextFact};
use ledger_core::{Entry, Metadata};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Ledger key of checkpoint entries.
pub const CHECKPOINT_KEY: &str = "checkpoint";
/// Prefix of the ledger keys of staged (pending) proposals.
pub const STAGED_PREFIX: &str = "staged/";
/// Metadata: the fact's id.
pub const META_FACT_ID: &str = "converge.fact_id";
/// Metadata: the fact's index among its key's facts.
pub const META_POSITION: &str = "converge.position";
/// Metadata: a staged proposal's id.
pub const META_PROPOSAL_ID: &str = "converge.proposal_id";
/// Metadata of a checkpoint: the context version.
pub const META_VERSION: &str = "converge.version";
/// Metadata of a checkpoint: converge-core's Merkle root, lowercase hex.
pub const META_ROOT: &str = "converge.merkle_root";

/// Every `ContextKey`, in converge-core's order (the order its Merkle root hashes keys in).
pub const ALL_KEYS: [ContextKey; 12] = [
    ContextKey::Seeds,
    ContextKey::Hypotheses,
    ContextKey::Strategies,
    ContextKey::Constraints,
    ContextKey::Signals,
    ContextKey::Competitors,
    ContextKey::Evaluations,
    ContextKey::Proposals,
    ContextKey::Diagnostic,
    ContextKey::Votes,
    ContextKey::Disagreements,
    ContextKey::ConsensusOutcomes,
];

/// The ledger key of facts under `key`: the engine's own key, in snake case.
pub fn ledger_key(key: ContextKey) -> &'static str {
    match key {
        ContextKey::Seeds => "seeds",
        ContextKey::Hypotheses => "hypotheses",
        ContextKey::Strategies => "strategies",
        ContextKey::Constraints => "constraints",
        ContextKey::Signals => "signals",
        ContextKey::Competitors => "competitors",
        ContextKey::Evaluations => "evaluations",
        ContextKey::Proposals => "proposals",
        ContextKey::Diagnostic => "diagnostic",
        ContextKey::Votes => "votes",
        ContextKey::Disagreements => "disagreements",
        ContextKey::ConsensusOutcomes => "consensus_outcomes",
    }
}

/// The `ContextKey` whose facts are stored under ledger key `key`.
pub fn context_key(key: &str) -> Option<ContextKey> {
    ALL_KEYS.into_iter().find(|k| ledger_key(*k) == key)
}

/// The ledger context holding scope `scope` under `prefix` (default `converge/`).
pub fn context_id(prefix: &str, scope: &str) -> String {
    format!("{prefix}{scope}")
}

fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..20])
}

/// Idempotency key of a fact: derived from its key and id, so a retried save or a resumed run
/// appending the same fact again is answered with the stored entry.
pub fn fact_idempotency_key(key: ContextKey, id: &str) -> String {
    format!(
        "cf1:{}",
        digest(&[ledger_key(key).as_bytes(), id.as_bytes()])
    )
}

/// Idempotency key of a staged proposal (its content included: a proposal id may come back
/// with other content after the first was promoted or dropped).
pub fn staged_idempotency_key(key: ContextKey, id: &str, payload: &[u8]) -> String {
    format!(
        "cp1:{}",
        digest(&[ledger_key(key).as_bytes(), id.as_bytes(), payload])
    )
}

/// Idempotency key of any other entry this crate writes: its content.
pub fn content_idempotency_key(tag: &str, payload: &[u8]) -> String {
    format!("{tag}:{}", digest(&[payload]))
}

/// The ledger entry of a fact (payload, metadata); the caller adds the context and key.
pub fn fact_entry(fact: &ContextFact, position: u64) -> Result<(Vec<u8>, Metadata), String> {
    let wire = fact.to_wire().map_err(|e| e.to_string())?;
    let payload = serde_json::to_vec(&wire).map_err(|e| e.to_string())?;
    let mut m = Metadata::new();
    m.insert(META_FACT_ID.into(), fact.id().to_string());
    m.insert(META_POSITION.into(), position.to_string());
    Ok((payload, m))
}

/// A checkpoint: what the context was when it was saved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Encoding version of this record (1).
    pub format: u32,
    /// `ContextState::version()`.
    pub version: u64,
    /// converge-core's Merkle root (`MerkleRoot::to_hex`).
    pub merkle_root: String,
    /// Facts per ledger key covered by this checkpoint (the first N by position).
    pub facts: BTreeMap<String, u64>,
    /// Pending proposals at the save: (ledger key of the fact key, proposal id).
    pub staged: Vec<(String, String)>,
    /// Keys whose facts in the ledger do not stand at their positions (a fact the engine added
    /// without telling the streaming callback, then streamed facts after it): the ids in order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub order: BTreeMap<String, Vec<String>>,
}

impl Checkpoint {
    pub const FORMAT: u32 = 1;

    /// Total facts covered.
    pub fn fact_count(&self) -> u64 {
        self.facts.values().sum()
    }
}

/// One fact row as read from the ledger.
#[derive(Clone, Debug)]
pub struct FactRow {
    pub id: String,
    pub position: u64,
    pub sequence: u64,
    pub wire: serde_json::Value,
}

/// What a scope's ledger context holds, decoded but not yet rebuilt.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Fact rows per key, by (position, sequence), one per id (the first stored).
    pub facts: BTreeMap<ContextKey, Vec<FactRow>>,
    /// Staged proposals by (key, id): the latest stored.
    pub staged: HashMap<(ContextKey, String), serde_json::Value>,
    /// The latest checkpoint and its sequence.
    pub checkpoint: Option<(Checkpoint, u64)>,
    /// Entries under other keys (HITL records), in sequence order.
    pub other: Vec<Entry>,
    /// Fact ids per key with the positions they were stored at (every row, duplicates too).
    pub known: HashMap<(ContextKey, String), u64>,
    /// Idempotency-relevant keys of staged proposals already stored.
    pub staged_known: BTreeSet<String>,
    /// Entries read.
    pub entries: u64,
    /// Highest Lamport clock read.
    pub max_lamport: u64,
}

impl Scan {
    /// Decodes `entries` (sequence order) of context `context`.
    pub fn from_entries(context: &str, entries: &[Entry]) -> Result<Scan, crate::Error> {
        let mut s = Scan::default();
        let bad = |e: &Entry, reason: String| crate::Error::Decode {
            context: context.to_owned(),
            sequence: e.sequence,
            reason,
        };
        for e in entries {
            s.entries += 1;
            s.max_lamport = s.max_lamport.max(e.lamport_clock);
            if let Some(key) = context_key(&e.key) {
                let id = e
                    .metadata
                    .get(META_FACT_ID)
                    .cloned()
                    .ok_or_else(|| bad(e, format!("fact entry without {META_FACT_ID}")))?;
                let position: u64 = e
                    .metadata
                    .get(META_POSITION)
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| bad(e, format!("fact entry without {META_POSITION}")))?;
                let wire: serde_json::Value = serde_json::from_slice(&e.payload)
                    .map_err(|err| bad(e, format!("fact payload is not JSON: {err}")))?;
                if s.known.insert((key, id.clone()), position).is_some() {
                    continue; // stored twice (outside the idempotency window): first wins
                }
                s.facts.entry(key).or_default().push(FactRow {
                    id,
                    position,
                    sequence: e.sequence,
                    wire,
                });
            } else if let Some(k) = e.key.strip_prefix(STAGED_PREFIX) {
                let key = context_key(k).ok_or_else(|| bad(e, format!("unknown key {k:?}")))?;
                let id =
                    e.metadata.get(META_PROPOSAL_ID).cloned().ok_or_else(|| {
                        bad(e, format!("staged entry without {META_PROPOSAL_ID}"))
                    })?;
                let wire: serde_json::Value = serde_json::from_slice(&e.payload)
                    .map_err(|err| bad(e, format!("proposal payload is not JSON: {err}")))?;
                s.staged_known
                    .insert(staged_idempotency_key(key, &id, &e.payload));
                s.staged.insert((key, id), wire);
            } else if e.key == CHECKPOINT_KEY {
                let c: Checkpoint = serde_json::from_slice(&e.payload)
                    .map_err(|err| bad(e, format!("checkpoint: {err}")))?;
                if c.format != Checkpoint::FORMAT {
                    return Err(bad(e, format!("checkpoint format {} unknown", c.format)));
                }
                s.checkpoint = Some((c, e.sequence));
            } else {
                s.other.push(e.clone());
            }
        }
        for rows in s.facts.values_mut() {
            rows.sort_by_key(|r| (r.position, r.sequence));
        }
        Ok(s)
    }

    /// The fact rows of the context as converge-core had it, per key: a checkpoint's explicit
    /// order first, then by position while positions are contiguous (a gap — a fact lost by the
    /// streaming bridge before a later one was stored — ends the key: the engine derives the
    /// rest again, and the stored later ones are found by id and not appended twice).
    fn ordered(&self, context: &str) -> Result<BTreeMap<ContextKey, Vec<&FactRow>>, crate::Error> {
        let order = self
            .checkpoint
            .as_ref()
            .map(|(c, _)| c.order.clone())
            .unwrap_or_default();
        let mut out = BTreeMap::new();
        for (key, rows) in &self.facts {
            let mut list: Vec<&FactRow> = Vec::new();
            let mut taken = BTreeSet::new();
            if let Some(ids) = order.get(ledger_key(*key)) {
                for id in ids {
                    let row = rows.iter().find(|r| &r.id == id).ok_or_else(|| {
                        crate::Error::Rehydration {
                            context: context.to_owned(),
                            reason: format!(
                                "the checkpoint orders fact {id:?} of {key:?}, the ledger lacks it"
                            ),
                        }
                    })?;
                    list.push(row);
                    taken.insert(id.as_str());
                }
            }
            let prefix = list.len() as u64;
            let mut next = prefix;
            for r in rows.iter().filter(|r| !taken.contains(r.id.as_str())) {
                if r.position < prefix {
                    continue;
                }
                if r.position != next {
                    break;
                }
                list.push(r);
                next += 1;
            }
            if !list.is_empty() {
                out.insert(*key, list);
            }
        }
        Ok(out)
    }
}

/// A context rebuilt from the ledger, verified by converge-core.
#[derive(Debug)]
pub struct Rebuilt {
    pub state: ContextState,
    /// Facts loaded.
    pub facts: u64,
    /// Facts loaded that no checkpoint covers (streamed while the engine ran).
    pub after_checkpoint: u64,
}

fn snapshot_json(
    version: u64,
    root: &MerkleRoot,
    facts: &BTreeMap<ContextKey, Vec<serde_json::Value>>,
    proposals: &BTreeMap<ContextKey, Vec<serde_json::Value>>,
) -> Result<serde_json::Value, String> {
    let key_map = |m: &BTreeMap<ContextKey, Vec<serde_json::Value>>| -> Result<_, String> {
        let mut o = serde_json::Map::new();
        for (k, v) in m {
            let name = serde_json::to_value(k).map_err(|e| e.to_string())?;
            let name = name
                .as_str()
                .ok_or("a ContextKey is not a string")?
                .to_owned();
            o.insert(name, serde_json::Value::Array(v.clone()));
        }
        Ok(serde_json::Value::Object(o))
    };
    Ok(serde_json::json!({
        "version": version,
        "merkle_root": serde_json::to_value(root).map_err(|e| e.to_string())?,
        "facts": key_map(facts)?,
        "proposals": key_map(proposals)?,
    }))
}

/// Rebuilds `WireContextSnapshot` JSON and hands it to converge-core
/// (`ContextSnapshot::from_wire` → `ContextState::from_snapshot`), which checks the root.
fn rehydrate(
    context: &str,
    json: serde_json::Value,
    registry: &PayloadRegistry,
) -> Result<ContextState, crate::Error> {
    let err = |reason: String| crate::Error::Rehydration {
        context: context.to_owned(),
        reason,
    };
    let wire: converge_core::WireContextSnapshot =
        serde_json::from_value(json).map_err(|e| err(format!("wire snapshot: {e}")))?;
    let snapshot =
        ContextSnapshot::from_wire(wire, registry).map_err(|e| err(format!("payload: {e}")))?;
    ContextState::from_snapshot(snapshot).map_err(|e| err(e.to_string()))
}

/// converge-core's root over `facts` (by key, then position), as `MerkleRoot::from_context`
/// computes it.
fn root_of(
    context: &str,
    facts: &BTreeMap<ContextKey, Vec<serde_json::Value>>,
    registry: &PayloadRegistry,
) -> Result<MerkleRoot, crate::Error> {
    let mut hashes = Vec::new();
    for wires in facts.values() {
        for w in wires {
            let wire: WireContextFact =
                serde_json::from_value(w.clone()).map_err(|e| crate::Error::Rehydration {
                    context: context.to_owned(),
                    reason: format!("fact: {e}"),
                })?;
            let fact =
                ContextFact::from_wire(wire, registry).map_err(|e| crate::Error::Rehydration {
                    context: context.to_owned(),
                    reason: format!("fact payload: {e}"),
                })?;
            hashes.push(ContentHash::compute_fact(&fact));
        }
    }
    Ok(MerkleRoot::compute(&hashes))
}

/// Rebuilds the context of `scan`, or `None` when it holds no fact, proposal or checkpoint.
/// The facts a checkpoint covers must give converge-core exactly the checkpoint's root (a
/// mismatch is an error, never a different context); facts streamed after it are added on top
/// and the whole is verified by converge-core again. Staged proposals are those of the last
/// checkpoint, less those of keys that got facts since (converge-core drops a key's proposals
/// when a fact of that key is added) and less `exclude`.
pub fn rebuild(
    context: &str,
    scan: &Scan,
    registry: &PayloadRegistry,
    exclude: &[(ContextKey, String)],
) -> Result<Option<Rebuilt>, crate::Error> {
    let ordered = scan.ordered(context)?;
    if ordered.is_empty() && scan.checkpoint.is_none() && scan.staged.is_empty() {
        return Ok(None);
    }
    let all: BTreeMap<ContextKey, Vec<serde_json::Value>> = ordered
        .iter()
        .map(|(k, rows)| (*k, rows.iter().map(|r| r.wire.clone()).collect()))
        .collect();
    let total: u64 = all.values().map(|v| v.len() as u64).sum();
    let empty = BTreeMap::new();
    let (version, covered) = match &scan.checkpoint {
        Some((c, _)) => {
            // The checkpoint's prefix, verified by converge-core against the checkpoint root.
            let mut prefix = BTreeMap::new();
            for (lk, n) in &c.facts {
                let key = context_key(lk).ok_or_else(|| crate::Error::Rehydration {
                    context: context.to_owned(),
                    reason: format!("checkpoint names unknown key {lk:?}"),
                })?;
                let have = all.get(&key).map_or(0, Vec::len) as u64;
                if have < *n {
                    return Err(crate::Error::Rehydration {
                        context: context.to_owned(),
                        reason: format!(
                            "the checkpoint covers {n} facts of {key:?}, the ledger holds {have} in order"
                        ),
                    });
                }
                if *n > 0 {
                    prefix.insert(key, all[&key][..*n as usize].to_vec());
                }
            }
            let root_bytes = hex::decode(&c.merkle_root)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok());
            let root = root_bytes
                .map(|b| MerkleRoot(ContentHash(b)))
                .ok_or_else(|| crate::Error::Rehydration {
                    context: context.to_owned(),
                    reason: format!("checkpoint root {:?} is not 32 bytes of hex", c.merkle_root),
                })?;
            let json = snapshot_json(c.version, &root, &prefix, &empty).map_err(|reason| {
                crate::Error::Encode {
                    what: "snapshot",
                    reason,
                }
            })?;
            rehydrate(context, json, registry).map_err(|e| crate::Error::Rehydration {
                context: context.to_owned(),
                reason: format!("checkpoint at its root {}: {e}", c.merkle_root),
            })?;
            (c.version + (total - c.fact_count()), c.fact_count())
        }
        None => (total, 0),
    };
    // Staged proposals.
    let mut proposals: BTreeMap<ContextKey, Vec<serde_json::Value>> = BTreeMap::new();
    if let Some((c, _)) = &scan.checkpoint {
        for (lk, id) in &c.staged {
            let Some(key) = context_key(lk) else { continue };
            let grew =
                all.get(&key).map_or(0, Vec::len) as u64 > c.facts.get(lk).copied().unwrap_or(0);
            if grew || exclude.iter().any(|(k, i)| *k == key && i == id) {
                continue;
            }
            if let Some(w) = scan.staged.get(&(key, id.clone())) {
                proposals.entry(key).or_default().push(w.clone());
            }
        }
    }
    let root = root_of(context, &all, registry)?;
    let json =
        snapshot_json(version, &root, &all, &proposals).map_err(|reason| crate::Error::Encode {
            what: "snapshot",
            reason,
        })?;
    let state = rehydrate(context, json, registry)?;
    Ok(Some(Rebuilt {
        state,
        facts: total,
        after_checkpoint: total - covered,
    }))
}

/// The checkpoint of `state`, with explicit orders for keys whose stored positions differ from
/// the context's (`known`: positions facts were stored at).
pub fn checkpoint_of(
    state: &ContextState,
    known: &HashMap<(ContextKey, String), u64>,
) -> Result<Checkpoint, String> {
    let snap = state.snapshot();
    let mut c = Checkpoint {
        format: Checkpoint::FORMAT,
        version: snap.version(),
        merkle_root: snap.merkle_root().to_hex(),
        ..Checkpoint::default()
    };
    for (key, facts) in snap.facts() {
        if facts.is_empty() {
            continue;
        }
        c.facts
            .insert(ledger_key(*key).to_owned(), facts.len() as u64);
        let misplaced = facts.iter().enumerate().any(|(i, f)| {
            known
                .get(&(*key, f.id().to_string()))
                .is_some_and(|p| *p != i as u64)
        });
        if misplaced {
            c.order.insert(
                ledger_key(*key).to_owned(),
                facts.iter().map(|f| f.id().to_string()).collect(),
            );
        }
    }
    for (key, ps) in snap.proposals() {
        for p in ps {
            c.staged
                .push((ledger_key(*key).to_owned(), p.id().to_string()));
        }
    }
    Ok(c)
}

/// Number of facts in `state`.
pub fn fact_count(state: &ContextState) -> u64 {
    state
        .snapshot()
        .facts()
        .values()
        .map(|v| v.len() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo engine's converged context, in memory.
    async fn run(steps: u64) -> ContextState {
        crate::demo::engine(steps, 0, false)
            .run(ContextState::new())
            .await
            .expect("converges")
            .context
    }

    /// The entries a save of `state` would append (facts by key, then a checkpoint).
    fn entries_of(state: &ContextState, with_checkpoint: bool) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut push = |key: &str, payload: Vec<u8>, metadata: Metadata| {
            let seq = out.len() as u64 + 1;
            out.push(Entry::new(
                format!("id-{seq}"),
                key.into(),
                payload,
                seq,
                seq,
                metadata,
                seq,
            ));
        };
        for (key, facts) in state.snapshot().facts() {
            for (i, f) in facts.iter().enumerate() {
                let (p, m) = fact_entry(f, i as u64).unwrap();
                push(ledger_key(*key), p, m);
            }
        }
        if with_checkpoint {
            let c = checkpoint_of(state, &HashMap::new()).unwrap();
            push(
                CHECKPOINT_KEY,
                serde_json::to_vec(&c).unwrap(),
                Metadata::new(),
            );
        }
        out
    }

    fn rebuilt(entries: &[Entry]) -> Result<Option<Rebuilt>, crate::Error> {
        let scan = Scan::from_entries("ctx", entries)?;
        rebuild("ctx", &scan, &PayloadRegistry::with_pack_payloads(), &[])
    }

    fn root(state: &ContextState) -> String {
        state.snapshot().merkle_root().to_hex()
    }

    #[test]
    fn every_context_key_has_its_own_ledger_key_and_back() {
        let names: BTreeSet<&str> = ALL_KEYS.iter().map(|k| ledger_key(*k)).collect();
        assert_eq!(names.len(), ALL_KEYS.len());
        for k in ALL_KEYS {
            assert_eq!(context_key(ledger_key(k)), Some(k));
            assert!(!ledger_key(k).starts_with(STAGED_PREFIX) && ledger_key(k) != CHECKPOINT_KEY);
        }
        assert_eq!(context_key("checkpoint"), None);
    }

    #[test]
    fn idempotency_keys_depend_on_key_and_id_only_and_fit_the_ledger_limit() {
        let a = fact_idempotency_key(ContextKey::Seeds, "x");
        assert_eq!(a, fact_idempotency_key(ContextKey::Seeds, "x"));
        assert_ne!(a, fact_idempotency_key(ContextKey::Hypotheses, "x"));
        assert_ne!(a, fact_idempotency_key(ContextKey::Seeds, "y"));
        let long = "z".repeat(10_000);
        assert!(fact_idempotency_key(ContextKey::Seeds, &long).len() <= 128);
        assert!(staged_idempotency_key(ContextKey::Seeds, &long, b"p").len() <= 128);
    }

    #[tokio::test]
    async fn a_saved_context_rebuilds_with_converge_cores_own_root() {
        let state = run(5).await;
        let r = rebuilt(&entries_of(&state, true))
            .unwrap()
            .expect("a context");
        assert_eq!(root(&r.state), root(&state));
        assert_eq!(r.state.version(), state.version());
        assert_eq!(r.facts, fact_count(&state));
        assert_eq!(r.after_checkpoint, 0);
    }

    #[tokio::test]
    async fn facts_streamed_after_the_last_checkpoint_are_loaded_on_top_of_it() {
        let state = run(4).await;
        let mut entries = entries_of(&state, true);
        // The checkpoint first, then the facts (as a bridge streams them before the save).
        let cp = entries.pop().unwrap();
        let early = run(0).await; // seed and hypothesis only
        let c = checkpoint_of(&early, &HashMap::new()).unwrap();
        let mut all = vec![];
        let mut seq = 0;
        let mut put = |e: &Entry, all: &mut Vec<Entry>| {
            seq += 1;
            all.push(Entry::new(
                e.id.clone(),
                e.key.clone(),
                e.payload.clone(),
                seq,
                seq,
                e.metadata.clone(),
                seq,
            ));
        };
        let ck = Entry::new(
            "c".into(),
            CHECKPOINT_KEY.into(),
            serde_json::to_vec(&c).unwrap(),
            0,
            0,
            Metadata::new(),
            0,
        );
        for e in &entries[..2] {
            put(e, &mut all);
        }
        put(&ck, &mut all);
        for e in &entries[2..] {
            put(e, &mut all);
        }
        drop(cp);
        let r = rebuilt(&all).unwrap().unwrap();
        assert_eq!(root(&r.state), root(&state));
        assert_eq!(r.state.version(), state.version());
        assert_eq!(r.after_checkpoint, 4);
    }

    #[tokio::test]
    async fn a_checkpoint_whose_root_differs_from_the_facts_is_refused() {
        let state = run(3).await;
        let mut entries = entries_of(&state, false);
        let mut c = checkpoint_of(&state, &HashMap::new()).unwrap();
        c.merkle_root = "00".repeat(32);
        let n = entries.len() as u64 + 1;
        entries.push(Entry::new(
            "c".into(),
            CHECKPOINT_KEY.into(),
            serde_json::to_vec(&c).unwrap(),
            n,
            n,
            Metadata::new(),
            n,
        ));
        let err = rebuilt(&entries).unwrap_err();
        assert!(matches!(err, crate::Error::Rehydration { .. }), "{err}");
        assert!(err.to_string().contains("merkle root"), "{err}");
    }

    #[tokio::test]
    async fn a_fact_changed_in_the_ledger_is_refused_by_the_checkpoint() {
        let state = run(3).await;
        let mut entries = entries_of(&state, true);
        let i = entries.iter().position(|e| e.key == "strategies").unwrap();
        let text = String::from_utf8(entries[i].payload.clone())
            .unwrap()
            .replace("step 1 of 3", "step 1 of 9");
        let e = &entries[i];
        entries[i] = Entry::new(
            e.id.clone(),
            e.key.clone(),
            text.into_bytes(),
            e.sequence,
            0,
            e.metadata.clone(),
            0,
        );
        assert!(matches!(
            rebuilt(&entries),
            Err(crate::Error::Rehydration { .. })
        ));
    }

    #[tokio::test]
    async fn a_gap_in_positions_ends_the_key_there() {
        let state = run(4).await;
        let entries: Vec<Entry> = entries_of(&state, false)
            .into_iter()
            .filter(|e| e.metadata.get(META_FACT_ID).map(String::as_str) != Some("step-000002"))
            .collect();
        let r = rebuilt(&entries).unwrap().unwrap();
        let ids: Vec<String> = r
            .state
            .get(ContextKey::Strategies)
            .iter()
            .map(|f| f.id().to_string())
            .collect();
        assert_eq!(ids, ["step-000001"]);
        // …but the scan knows step 3 and 4 are stored, so they are not appended again.
        let scan = Scan::from_entries("ctx", &entries).unwrap();
        assert!(
            scan.known
                .contains_key(&(ContextKey::Strategies, "step-000003".into()))
        );
    }

    #[tokio::test]
    async fn facts_stored_out_of_sequence_order_load_by_position_and_duplicates_once() {
        let state = run(4).await;
        let mut entries = entries_of(&state, true);
        let last = entries.pop().unwrap();
        entries.reverse();
        let dup = entries[0].clone();
        entries.push(dup);
        entries.push(last);
        let renumbered: Vec<Entry> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                Entry::new(
                    e.id.clone(),
                    e.key.clone(),
                    e.payload.clone(),
                    i as u64 + 1,
                    0,
                    e.metadata.clone(),
                    i as u64 + 1,
                )
            })
            .collect();
        let r = rebuilt(&renumbered).unwrap().unwrap();
        assert_eq!(root(&r.state), root(&state));
        assert_eq!(r.facts, fact_count(&state));
    }

    #[test]
    fn an_empty_context_loads_as_none() {
        assert!(rebuilt(&[]).unwrap().is_none());
    }
}
